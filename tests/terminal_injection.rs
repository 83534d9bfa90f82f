//! Untrusted text is shown, never obeyed (issue #10): a real recording of an app whose name
//! carries a U+202E override and whose output carries OSC 0 (window title), OSC 52
//! (clipboard), OSC 8 (hyperlink), CSI (clear screen, colour), BEL and U+202E
//! (`tests/apps/terminal-injection.js`), on pm2 7.0.4.
//!
//! - The live view (`record`'s stdout) and `replay` write no ESC and no BEL at all when not
//!   on a terminal; on a terminal (`script`), every ESC they write is one of pm2-trace's own
//!   colour sequences. The hostile text stays readable, with `\e`, `^G` and `<U+202E>` in
//!   place of what a terminal would act on.
//! - `replay --json` keeps the exact text.
//! - Under tmux, with the clipboard open to applications (`set-clipboard on`), neither
//!   replay nor the TUI changes the pane title or writes a paste buffer; a control run that
//!   prints the same bytes raw does both, so the check can fail.

#[path = "support/pm2.rs"]
mod pm2;
#[path = "support/recorder.rs"]
mod recorder;
#[path = "tui_support/tmux.rs"]
mod tmux;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tmux::Tmux;

const APP_NAME: &str = "invoice\u{202e}gnp.js";

/// Record the app on a real daemon; returns the capture and the live view's stdout.
fn record_hostile_app(dir: &Path) -> (PathBuf, Vec<u8>) {
    let pm2 = pm2::Pm2::start("7.0.4");
    let cap = dir.join("hostile.bin");
    let rec = recorder::Recorder::start(pm2.home(), &cap, &[]);
    let port = pm2::free_port();
    pm2.start_app(APP_NAME, "terminal-injection.js", port, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    pm2.cmd_ok(&["restart", APP_NAME]);
    std::thread::sleep(Duration::from_millis(1500));
    let stdout_path = rec.stdout_path.clone();
    let status = rec.stop();
    assert!(status.success(), "record ended with {status}");
    let live = std::fs::read(stdout_path).unwrap();
    (cap, live)
}

/// The hostile text, made visible, is there to read.
fn assert_readable(what: &str, text: &str) {
    for shown in [
        "\\e]0;PWNED^Gtitle",
        "\\e]52;c;cHduZWQ=^Gclipboard",
        "\\e]8;;https://evil.example/\\e\\click",
        "\\e[2J\\e[31mred\\e[0m csi",
        "bell^G^G",
        "invoice<U+202E>txt.exe override",
        "invoice<U+202E>gnp.js",
    ] {
        assert!(
            text.contains(shown),
            "{what} does not show {shown:?}:\n{text}"
        );
    }
}

/// Bytes a terminal would act on, other than pm2-trace's own colour (`ESC [ digits ; m`):
/// the first ten found.
fn foreign_controls(bytes: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut i = 0;
    // The first ten are enough to say what went wrong.
    while i < bytes.len() && found.len() < 10 {
        match bytes[i] {
            0x1b => {
                let mut j = i + 1;
                if bytes.get(j) == Some(&b'[') {
                    j += 1;
                    while bytes
                        .get(j)
                        .is_some_and(|b| b.is_ascii_digit() || *b == b';')
                    {
                        j += 1;
                    }
                    if bytes.get(j) == Some(&b'm') {
                        i = j + 1;
                        continue;
                    }
                }
                let end = (i + 16).min(bytes.len());
                found.push(format!(
                    "ESC at {i}: {:?}",
                    String::from_utf8_lossy(&bytes[i..end])
                ));
            }
            0x07 => found.push(format!("BEL at {i}")),
            0x9b => found.push(format!("C1 CSI byte at {i}")),
            _ => {}
        }
        i += 1;
    }
    // U+202E and the other bidirectional controls, raw.
    let text = String::from_utf8_lossy(bytes);
    for c in [
        '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}',
        '\u{2068}', '\u{2069}',
    ] {
        if text.contains(c) {
            found.push(format!("raw U+{:04X}", c as u32));
        }
    }
    found
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Run `cmd` in a fresh tmux with the clipboard open to applications; return the pane title
/// and the paste buffers once `ready` holds.
fn in_tmux(cmd: &str, ready: impl Fn(&str) -> bool) -> (String, String, String) {
    // The command waits a moment so that `set-clipboard on` is in force before it prints.
    let t = Tmux::start(&format!("sleep 0.5; {cmd}; sleep 60"), 160, 48);
    t.query(&["set-option", "-g", "set-clipboard", "on"]);
    let screen = t.wait_for("the output", Duration::from_secs(30), ready);
    std::thread::sleep(Duration::from_millis(300));
    let title = t.query(&["display-message", "-p", "-t", "0", "#{pane_title}"]);
    let buffers = t.query(&["list-buffers"]);
    (title.trim().to_owned(), buffers, screen)
}

#[test]
fn hostile_output_is_shown_never_obeyed() {
    let dir = tempfile::tempdir().unwrap();
    let (cap, live) = record_hostile_app(dir.path());
    let capq = quote(&cap);
    let bin = quote(&recorder::bin());

    // The live view (stdout not a terminal: no colour).
    assert_eq!(foreign_controls(&live), Vec::<String>::new(), "live view");
    assert!(
        !live.contains(&0x1b),
        "live view without a terminal has no ESC at all"
    );
    assert_readable("the live view", &String::from_utf8_lossy(&live));

    // Replay, piped.
    let out = recorder::run(&["replay", cap.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(!out.stdout.contains(&0x1b) && !out.stdout.contains(&0x07));
    assert_eq!(
        foreign_controls(&out.stdout),
        Vec::<String>::new(),
        "replay"
    );
    assert_readable("replay", &String::from_utf8_lossy(&out.stdout));

    // Replay on a terminal (script's pty): colour, and only pm2-trace's own.
    let tty = Command::new("script")
        .args(["-qec", &format!("{bin} replay {capq}"), "/dev/null"])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .output()
        .expect("script (util-linux) runs replay on a pty");
    assert!(
        tty.status.success(),
        "{}",
        String::from_utf8_lossy(&tty.stderr)
    );
    assert!(
        tty.stdout.windows(2).any(|w| w == b"\x1b["),
        "replay on a terminal is coloured"
    );
    assert_eq!(
        foreign_controls(&tty.stdout),
        Vec::<String>::new(),
        "replay on a pty"
    );
    assert_readable("replay on a pty", &String::from_utf8_lossy(&tty.stdout));

    // --json keeps the exact text.
    let json = recorder::replay_json(&cap).to_string();
    assert!(
        json.contains("\\u001b]0;PWNED\\u0007title"),
        "exact text in --json"
    );
    assert!(json.contains("invoice\u{202e}txt.exe override"));
    assert!(json.contains(APP_NAME));

    // Control: the same bytes printed raw do change the title and write the clipboard.
    let (title, buffers, _) = in_tmux(
        "printf '\\033]0;PWNED\\007\\033]52;c;cHduZWQ=\\007raw-done\\n'",
        |s| s.contains("raw-done"),
    );
    assert_eq!(title, "PWNED", "control: raw OSC 0 sets the pane title");
    assert!(
        buffers.contains("pwned"),
        "control: raw OSC 52 writes a buffer: {buffers:?}"
    );

    // Replay in a real terminal.
    let (title, buffers, screen) = in_tmux(&format!("{bin} replay {capq}"), |s| {
        s.contains("Findings") || s.contains("No findings")
    });
    assert_ne!(title, "PWNED", "replay set the pane title");
    assert!(
        !title.contains("PWNED"),
        "replay set the pane title: {title}"
    );
    assert_eq!(buffers, "", "replay wrote the clipboard");
    assert!(screen.contains("<U+202E>"), "{screen}");

    // The TUI in a real terminal: find the hostile output and open its details.
    let t = Tmux::start(&format!("sleep 0.5; {bin} tui {capq}; sleep 60"), 160, 48);
    t.query(&["set-option", "-g", "set-clipboard", "on"]);
    t.wait_for("the capture to load", Duration::from_secs(30), |s| {
        s.contains("events ·") && !s.contains("reading ")
    });
    t.keys(&["/"]);
    t.type_text("PWNED^Gtitle");
    t.keys(&["Enter", "Enter"]);
    let screen = t.wait_for(
        "the hostile line and its details",
        Duration::from_secs(10),
        |s| s.contains("\\e]0;PWNED^Gtitle") && s.contains("Detail · event"),
    );
    assert!(
        screen.contains("<U+202E>"),
        "the app's name, made visible: {screen}"
    );
    let title = t.query(&["display-message", "-p", "-t", "0", "#{pane_title}"]);
    assert!(
        !title.contains("PWNED"),
        "the TUI set the pane title: {title}"
    );
    assert_eq!(
        t.query(&["list-buffers"]),
        "",
        "the TUI wrote the clipboard"
    );
    t.keys(&["q"]);
}
