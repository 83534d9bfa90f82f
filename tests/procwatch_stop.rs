//! The netlink watcher keeps every exit the kernel reported before it was stopped, also one
//! it read ahead from inside a snapshot (`keep_up`) and had not handled yet.
//!
//! Seen under load in `findings_live` (pm2 5.4.3, a drain child): an exit read during an
//! early-exit snapshot waited in the watcher's read-ahead queue, with the socket empty and
//! nothing to wake the loop, until the recording stopped and dropped it; the finding then
//! said the holder "still held the port when the capture ended" after it had exited.
//!
//! Here a shell stands in for the daemon, with two children: a node process holding many
//! open files (so that a snapshot, which walks each process's descriptors, takes a while)
//! and a `sleep`. The test asks for a snapshot, SIGKILLs the `sleep` while it runs (a
//! snapshot step reads its exit ahead), waits until the shell has reaped it, and stops the
//! watcher. The exit must be among the events, with the kernel's status.

use pm2_trace::event::proc::{ActiveMode, ExitStatus, ProcEvent, SnapshotReason};
use pm2_trace::event::{Event, EventSink};
use pm2_trace::sources::procwatch::{no_redaction, ProcWatcher, WatchConfig, WatchMode};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A process with many open files: a snapshot walks them all.
const HEAVY: &str = "const fs = require('fs'); for (let i = 0; i < +process.env.FILES; i++) fs.openSync('/dev/null', 'r'); console.log('ready'); setInterval(() => {}, 1e6);";

/// How many files the node process opens: 15000, or fewer when the hard limit on open
/// files is lower (the shell raises its soft limit to the hard one).
fn files() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
    (l.rlim_max as u64).saturating_sub(100).clamp(1000, 15000)
}

/// Kills the shell's process group (node and sleep with it), also when the test fails.
struct KillGroup(i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test created.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}

#[test]
fn an_exit_read_ahead_during_snapshots_survives_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut daemon = Command::new("sh")
        .args([
            "-c",
            "ulimit -n \"$(ulimit -Hn)\"; node -e \"$HEAVY\" & sleep 1000 & echo $!; wait",
        ])
        .env("HEAVY", HEAVY)
        .env("FILES", files().to_string())
        .env("PM2_HOME", &home)
        .env("pm_id", "0")
        .env("name", "web")
        .env("restart_time", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn sh (and node: the suite needs it)");
    let group = KillGroup(daemon.id() as i32);
    let out = BufReader::new(daemon.stdout.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut child = None;
    let mut heavy_ready = false;
    while child.is_none() || !heavy_ready {
        let l = lines.recv_timeout(Duration::from_secs(20)).expect(
            "the shell printed its child's pid and node `ready` (node opens up to 15000 files)",
        );
        match l.trim() {
            "ready" => heavy_ready = true,
            pid => child = Some(pid.parse::<i32>().expect("the child's pid")),
        }
    }
    let child = child.unwrap();

    let (sink, mut rx) = EventSink::channel(100_000);
    let mut cfg = WatchConfig::new(&home);
    cfg.daemon_pid = Some(daemon.id() as i32);
    cfg.mode = WatchMode::Netlink;
    let w = ProcWatcher::start(cfg, sink, no_redaction()).expect("netlink mode works as root");
    assert_eq!(w.mode().mode, ActiveMode::Netlink, "{}", w.mode());
    // The watcher is running once its start snapshot is out.
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !events.iter().any(|e: &pm2_trace::event::Stamped| {
        matches!(&e.event, Event::Proc(p) if matches!(&**p, ProcEvent::Snapshot { .. }))
    }) {
        assert!(Instant::now() < deadline, "no start snapshot");
        if let Ok(e) = rx.recv_timeout(Duration::from_millis(100)) {
            events.push(e);
        }
    }

    w.request_snapshot(SnapshotReason::RestartRequested { pm_id: Some(0) });
    std::thread::sleep(Duration::from_millis(5));
    // SAFETY: kill(2) on the pid the shell printed for its own child.
    assert_eq!(unsafe { libc::kill(child, libc::SIGKILL) }, 0);
    // The shell's `wait` reaps it (and goes on waiting for node).
    while std::path::Path::new(&format!("/proc/{child}")).exists() {
        std::thread::sleep(Duration::from_millis(1));
    }
    w.stop();
    while let Ok(e) = rx.recv_timeout(Duration::from_millis(10)) {
        events.push(e);
    }
    drop(group);
    let _ = daemon.wait();

    let snapshots = events
        .iter()
        .filter(
            |e| matches!(&e.event, Event::Proc(p) if matches!(&**p, ProcEvent::Snapshot { .. })),
        )
        .count();
    let exit = events.iter().find_map(|e| match &e.event {
        Event::Proc(p) => match &**p {
            ProcEvent::Exit { who, status, .. } if who.pid == child => Some(status.clone()),
            _ => None,
        },
        _ => None,
    });
    assert!(
        matches!(exit, Some(ExitStatus::Signal { sig: 9, .. })),
        "the exit of pid {child} (SIGKILL) is missing or wrong: {exit:?}; {snapshots} snapshots"
    );
}
