//! A real terminal for the TUI tests: a private tmux server (its own socket, no user
//! config) running one command in a session of a fixed size; killed on drop.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub struct Tmux {
    socket: String,
}

fn tmux_bin() -> &'static str {
    if Path::new("/usr/bin/tmux").exists() {
        "/usr/bin/tmux"
    } else if Command::new("tmux").arg("-V").output().is_ok() {
        "tmux"
    } else {
        panic!("tmux is missing: these tests run the TUI in a real terminal; apt-get install tmux");
    }
}

impl Tmux {
    /// Start `command` (a shell command line) in a `w`x`h` terminal.
    pub fn start(command: &str, w: u16, h: u16) -> Tmux {
        let t = Tmux {
            socket: format!(
                "pm2-trace-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
        };
        let out = t.run(&[
            "new-session",
            "-d",
            "-x",
            &w.to_string(),
            "-y",
            &h.to_string(),
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(tmux_bin())
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env("TERM", "xterm-256color")
            .output()
            .expect("run tmux")
    }

    /// What the terminal shows now.
    pub fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "0"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the terminal shows now, with its colour and attribute escapes.
    pub fn screen_escaped(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-e", "-t", "0"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Send keys (tmux key names: `Enter`, `Tab`, `q`, ...). Each argument is one key
    /// or a literal string.
    pub fn keys(&self, keys: &[&str]) {
        for k in keys {
            let out = self.run(&["send-keys", "-t", "0", k]);
            assert!(
                out.status.success(),
                "send-keys {k}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    /// Type a literal string.
    pub fn type_text(&self, s: &str) {
        let out = self.run(&["send-keys", "-t", "0", "-l", s]);
        assert!(out.status.success());
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Wait until the screen satisfies `pred`; panics with the last screen after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; the screen shows:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run a tmux command on this server and return what it printed (e.g.
    /// `display-message -p '#{pane_title}'`, `list-buffers`).
    pub fn query(&self, args: &[&str]) -> String {
        let out = self.run(args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether the session (the command) is still running.
    pub fn alive(&self) -> bool {
        self.run(&["has-session", "-t", "0"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
        // The server's socket file can stay behind.
        let dir = std::env::var("TMUX_TMPDIR").unwrap_or_else(|_| "/tmp".into());
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let _ = std::fs::remove_file(format!("{dir}/tmux-{uid}/{}", self.socket));
    }
}
