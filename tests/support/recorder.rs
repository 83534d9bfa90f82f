//! Running the real `pm2-trace` binary against a test daemon.
//!
//! Include next to the pm2 harness:
//! ```ignore
//! #[path = "support/pm2.rs"] mod pm2;
//! #[path = "support/recorder.rs"] mod recorder;
//! ```
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pm2-trace"))
}

/// A `pm2-trace record` child process. Killed (SIGKILL) on drop if still running.
pub struct Recorder {
    pub child: Child,
    pub output: PathBuf,
    pub home: PathBuf,
    pub stderr_path: PathBuf,
    pub stdout_path: PathBuf,
}

/// `rpc.sock.pm2-trace-daemon`: present while a recorder is interposed.
pub fn aside(home: &Path) -> PathBuf {
    home.join("rpc.sock.pm2-trace-daemon")
}

impl Recorder {
    /// Start recording the daemon of `home` into `output`, with extra arguments, and wait
    /// until the proxy is in place.
    pub fn start(home: &Path, output: &Path, extra: &[&str]) -> Recorder {
        Self::start_limited(home, output, extra, None)
    }

    /// Like `start`, with a file size limit (RLIMIT_FSIZE, bytes) on the recorder process:
    /// how a full disk looks to a writer.
    pub fn start_limited(
        home: &Path,
        output: &Path,
        extra: &[&str],
        fsize: Option<u64>,
    ) -> Recorder {
        let dir = output.parent().expect("output has a parent");
        let stem = output.file_name().unwrap().to_string_lossy().into_owned();
        let stderr_path = dir.join(format!("{stem}.stderr"));
        let stdout_path = dir.join(format!("{stem}.stdout"));
        let mut cmd = Command::new(bin());
        if let Some(limit) = fsize {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    let l = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd.arg("record")
            .arg("--pm2-home")
            .arg(home)
            .arg("-o")
            .arg(output)
            .arg("--force")
            .args(extra);
        let mut r = spawn(&mut cmd, output, home, stdout_path, stderr_path);
        let listen = extra
            .iter()
            .position(|a| *a == "--listen")
            .map(|i| PathBuf::from(extra[i + 1]));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match &listen {
                Some(p) => p.exists(),
                None => aside(home).exists(),
            };
            // `process watcher:` is said once the bus is subscribed, before the proxy
            // forwards anything; the capture file exists once the recorder's loop (in the
            // idle class: late on a busy machine) has begun writing.
            if ready && r.stderr().contains("pm2-trace: process watcher:") && output.exists() {
                break;
            }
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!("pm2-trace record exited early ({status}): {}", r.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "recorder did not start recording within 30 s: {}",
                r.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Let the bus subscription settle.
        std::thread::sleep(Duration::from_millis(200));
        r
    }

    /// `pm2-trace record --dir DIR --pm2-home H...` (one stream per home), waiting until every
    /// home is interposed. stdout/stderr go to `DIR.stdout` / `DIR.stderr`.
    pub fn start_dir(homes: &[&Path], dir: &Path, extra: &[&str]) -> Recorder {
        let stderr_path = dir.with_extension("stderr");
        let stdout_path = dir.with_extension("stdout");
        let mut cmd = Command::new(bin());
        cmd.arg("record").arg("--dir").arg(dir);
        for h in homes {
            cmd.arg("--pm2-home").arg(h);
        }
        let mut r = spawn(cmd.args(extra), dir, homes[0], stdout_path, stderr_path);
        let deadline = Instant::now() + Duration::from_secs(15);
        // `process watcher:` is said by each home's session once its bus is subscribed.
        while !homes.iter().all(|h| aside(h).exists())
            || r.stderr().matches("pm2-trace: process watcher:").count() < homes.len()
        {
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!(
                    "pm2-trace record --dir exited early ({status}): {}",
                    r.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "recorder did not interpose within 15 s: {}",
                r.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        r
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGINT, then wait (at most 20 s) for a clean exit; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGINT);
        self.wait(Duration::from_secs(20))
    }

    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "pm2-trace record did not stop within {timeout:?}: {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Start `cmd` (a `pm2-trace record ...`) with its output in the given files.
fn spawn(
    cmd: &mut Command,
    output: &Path,
    home: &Path,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
) -> Recorder {
    let child = cmd
        .env_remove("PM2_HOME")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("cannot start pm2-trace record");
    Recorder {
        child,
        output: output.to_owned(),
        home: home.to_owned(),
        stderr_path,
        stdout_path,
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `pm2-trace` with arguments and return its output.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("cannot run pm2-trace")
}

/// `pm2-trace replay FILE --json`, parsed.
pub fn replay_json(file: &Path) -> serde_json::Value {
    let out = run(&["replay", file.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("replay --json prints one JSON document")
}

/// `pm2-trace replay FILE` as text.
pub fn replay_text(file: &Path) -> String {
    let out = run(&["replay", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
