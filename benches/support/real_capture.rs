//! The benchmarks' large capture, recorded for real by `pm2-trace record` from a pm2 7.0.4
//! daemon's own traffic (issue #16 asks for "a capture of at least 500 MB made by the
//! recorder from a real daemon's traffic").
//!
//! How it is made, once, then cached under `target/bench-captures/`:
//!
//! 1. a throw-away pm2 7.0.4 daemon (tests/support/pm2.rs: own PM2_HOME, every process killed
//!    afterwards) starts 20 apps (`tests/apps/well-behaved.js`, one HTTP server each) from an
//!    ecosystem file;
//! 2. `pm2-trace record --pm2-home H -o FILE` (the release binary) interposes on its rpc.sock;
//! 3. through the proxy, two pollers send `getMonitorData` back to back, each on its own
//!    connection kept open (as `pm2 monit`, dashboards and agents do; the reply is the 20
//!    apps' full `pm2_env`), while one client restarts an app (`restartProcessId`, the next
//!    app each time) every 500 ms, so the capture also holds restarts, the daemon's bus
//!    events, app output and the process watcher's events;
//! 4. when the capture file holds the size asked for, the recorder is stopped with SIGINT
//!    (it finishes the file) and the daemon and apps are killed.
//!
//! The file is reused while it exists and is at least as large as asked; delete
//! `target/bench-captures/` to record a new one.

#![allow(dead_code)]

#[path = "../../tests/support/pm2.rs"]
mod pm2;

use serde_json::json;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Apps the daemon runs while the capture is recorded.
pub const APPS: usize = 20;
/// The pm2 version recorded.
pub const VERSION: &str = "7.0.4";

/// Where the cached capture lives.
pub fn cached_path() -> PathBuf {
    pm2::repo_root()
        .join("target/bench-captures")
        .join(format!("real-{VERSION}-{APPS}apps-poller.bin"))
}

/// The real capture, at least `min_bytes` long: the cached one, else recorded now (takes
/// about as many seconds as the daemon needs to answer that many bytes of getMonitorData).
pub fn real_capture(min_bytes: u64) -> PathBuf {
    let path = cached_path();
    if std::fs::metadata(&path).is_ok_and(|m| m.len() >= min_bytes) {
        return path;
    }
    std::fs::create_dir_all(path.parent().unwrap()).expect("create target/bench-captures");
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    record(&partial, min_bytes);
    std::fs::rename(&partial, &path).expect("move the recorded capture into place");
    path
}

/// Send `getMonitorData` on one connection, back to back, until `done`; the number of replies.
fn poll(sock: &Path, done: &AtomicBool) -> u64 {
    use std::io::Write;
    let mut s = UnixStream::connect(sock).expect("connect the poller through the proxy");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = json!({"type": "call", "method": "getMonitorData", "args": [{}]});
    let mut n = 0u64;
    while !done.load(Ordering::Relaxed) {
        let id = format!("s:{}:poll{n}", std::process::id());
        let msg = pm2::encode_msg(&[format!("j:{req}").into_bytes(), id.clone().into_bytes()]);
        s.write_all(&msg).expect("send getMonitorData");
        loop {
            let m = pm2::read_msg(&mut s).expect("getMonitorData reply");
            if m.get(1).is_some_and(|a| a.as_slice() == id.as_bytes()) {
                break;
            }
        }
        n += 1;
    }
    n
}

fn record(out: &Path, min_bytes: u64) {
    let started = Instant::now();
    eprintln!(
        "recording a {} MB capture from a real pm2 {VERSION} daemon ({APPS} apps, 2 getMonitorData pollers, a restart every 500 ms) into {}",
        min_bytes / 1_000_000,
        out.display()
    );
    let daemon = pm2::Pm2::start(VERSION);
    let apps: Vec<_> = (0..APPS)
        .map(|i| {
            json!({
                "name": format!("app{i}"),
                "script": pm2::app_path("well-behaved.js"),
                "env": {"PORT": pm2::free_port().to_string()},
            })
        })
        .collect();
    let eco = daemon.home().join("apps.json");
    std::fs::write(&eco, json!({ "apps": apps }).to_string()).unwrap();
    let st = daemon.cmd(&["start", eco.to_str().unwrap()]);
    assert!(st.status.success(), "pm2 start apps.json failed");
    for i in 0..APPS {
        daemon
            .wait_for_status(&format!("app{i}"), "online", Duration::from_secs(30))
            .expect("app online");
    }
    let err = std::fs::File::create(out.with_extension("stderr")).unwrap();
    let mut rec = Command::new(env!("CARGO_BIN_EXE_pm2-trace"))
        .arg("record")
        .arg("--pm2-home")
        .arg(daemon.home())
        .arg("-o")
        .arg(out)
        .arg("--force")
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("start pm2-trace record");
    let aside = daemon.home().join("rpc.sock.pm2-trace-daemon");
    let end = Instant::now() + Duration::from_secs(15);
    while !aside.exists() {
        assert!(Instant::now() < end, "the recorder did not interpose");
        std::thread::sleep(Duration::from_millis(10));
    }
    let sock = daemon.rpc_sock();
    let done = AtomicBool::new(false);
    let restarts = AtomicU64::new(0);
    let polls = std::thread::scope(|s| {
        let pollers: Vec<_> = (0..2).map(|_| s.spawn(|| poll(&sock, &done))).collect();
        s.spawn(|| {
            let mut i = 0u64;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                let id = i % APPS as u64;
                pm2::rpc_call(
                    &sock,
                    "restartProcessId",
                    json!([{"id": id}]),
                    Duration::from_secs(30),
                )
                .expect("restartProcessId through the proxy");
                i += 1;
                restarts.store(i, Ordering::Relaxed);
            }
        });
        let mut last = Instant::now();
        loop {
            let size = std::fs::metadata(out).map_or(0, |m| m.len());
            if size >= min_bytes {
                break;
            }
            if last.elapsed() >= Duration::from_secs(10) {
                eprintln!(
                    "  {:.0} MB after {:.0} s",
                    size as f64 / 1e6,
                    started.elapsed().as_secs_f64()
                );
                last = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        done.store(true, Ordering::Relaxed);
        pollers.into_iter().map(|p| p.join().unwrap()).sum::<u64>()
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(rec.id() as i32, libc::SIGINT) };
    let status = rec.wait().expect("wait for the recorder");
    assert!(status.success(), "the recorder failed: {status}");
    assert!(
        daemon.cmd(&["ls"]).status.success(),
        "pm2 ls after recording"
    );
    eprintln!(
        "recorded {:.0} MB in {:.0} s: {polls} getMonitorData replies, {} restarts",
        std::fs::metadata(out).map_or(0, |m| m.len()) as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        restarts.load(Ordering::Relaxed)
    );
}
