//! Mode selection and hints.
//!
//! - Auto picks netlink here (root, initial namespaces) and says it was verified.
//! - From inside a new user + pid namespace (`unshare`), the kernel accepts the connector
//!   subscription but sends nothing; Auto must notice (no event for its test child) and
//!   fall back to pidfd, saying why, and the fallback must still record an exit. The test
//!   re-runs this test binary inside the namespace.
//! - A pid named by the recorder (`hint_pid`) is tracked and attributed even without
//!   pm2's environment; its exit is recorded, in both modes.

use pm2_trace::event::proc::{ActiveMode, AttrHow, ExitStatus, ProcEvent, Via};
use pm2_trace::event::{Event, EventReceiver, EventSink, Stamped};
use pm2_trace::sources::procwatch::{no_redaction, ProcWatcher, WatchConfig, WatchMode};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IN_NS: &str = "PROCWATCH_TEST_IN_NAMESPACE";

fn wait_event(
    rx: &mut EventReceiver,
    seen: &mut Vec<Stamped>,
    timeout: Duration,
    f: impl Fn(&ProcEvent) -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if seen
            .iter()
            .any(|s| matches!(&s.event, Event::Proc(p) if f(p)))
        {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) => seen.push(e),
            Err(_) => {
                for s in seen.iter() {
                    if let Event::Proc(p) = &s.event {
                        eprintln!("{}", p.summary());
                    }
                }
                panic!("expected event not seen within {timeout:?}");
            }
        }
    }
}

#[test]
fn auto_picks_verified_netlink_here() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, _rx) = EventSink::channel(1000);
    let w = ProcWatcher::start(WatchConfig::new(dir.path()), sink, no_redaction()).unwrap();
    let r = w.mode().clone();
    w.stop();
    assert_eq!(r.mode, ActiveMode::Netlink, "{r}");
    assert!(r.why.contains("verified"), "{r}");
    // No pm2.pid in this home: said so, and apps are tracked by environment only.
    assert!(r.why.contains("pm2.pid"), "{r}");
    assert!(r.limits.is_empty(), "{r}");
}

#[test]
fn auto_falls_back_to_pidfd_inside_a_user_and_pid_namespace() {
    if std::env::var_os(IN_NS).is_some() {
        // Inside the namespace (we are pid 1's child there).
        let dir = tempfile::tempdir().unwrap();
        let (sink, mut rx) = EventSink::channel(10_000);
        let mut child = Command::new("sh")
            .args(["-c", "read x; exit 7"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let mut cfg = WatchConfig::new(dir.path());
        cfg.daemon_pid = Some(child.id() as i32);
        let w = ProcWatcher::start(cfg, sink, no_redaction()).unwrap();
        println!("MODE-REPORT {}", w.mode());
        assert_eq!(w.mode().mode, ActiveMode::Pidfd, "{}", w.mode());
        assert!(w.mode().why.contains("namespace"), "{}", w.mode());
        let mut seen = Vec::new();
        wait_event(&mut rx, &mut seen, Duration::from_secs(5), |p| {
            matches!(p, ProcEvent::Snapshot(_))
        });
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let pid = child.id() as i32;
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(7));
        wait_event(
            &mut rx,
            &mut seen,
            Duration::from_secs(5),
            |p| matches!(p, ProcEvent::Exit { who, via: Via::Pidfd, status: ExitStatus::Code { code: 7 }, .. } if who.pid == pid),
        );
        w.stop();
        println!("NAMESPACE-CHECK-OK");
        return;
    }
    let me = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--pid",
            "--fork",
            "--mount-proc",
        ])
        .arg(&me)
        .args([
            "--exact",
            "auto_falls_back_to_pidfd_inside_a_user_and_pid_namespace",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(IN_NS, "1")
        .output()
        .expect(
            "`unshare` (util-linux) is needed to run the watcher in a new user and pid namespace",
        );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- in namespace, stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(
        out.status.success(),
        "the in-namespace run failed: {}",
        out.status
    );
    assert!(
        stdout.contains("NAMESPACE-CHECK-OK"),
        "the in-namespace check did not run"
    );
}

fn hint(mode: WatchMode) {
    let dir = tempfile::tempdir().unwrap();
    let (sink, mut rx) = EventSink::channel(10_000);
    // A stand-in daemon with no children, and a process outside its tree without pm2's env.
    let mut daemon = Command::new("sleep").arg("30").spawn().unwrap();
    let mut stranger = Command::new("sh")
        .args(["-c", "read x; kill -TERM $$"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut cfg = WatchConfig::new(dir.path());
    cfg.daemon_pid = Some(daemon.id() as i32);
    cfg.mode = mode;
    let w = ProcWatcher::start(cfg, sink, no_redaction()).unwrap();
    let pid = stranger.id() as i32;
    w.hint_pid(pid, 3, "api");
    let mut seen = Vec::new();
    wait_event(&mut rx, &mut seen, Duration::from_secs(5), |p| {
        matches!(p, ProcEvent::Tracked { who, via: Via::Hint, .. }
            if who.pid == pid && who.app.as_ref().is_some_and(|a| a.pm_id == 3 && a.name == "api" && a.generation.is_none())
               && matches!(who.how, Some(AttrHow::Hint { .. })))
    });
    use std::io::Write;
    stranger.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let _ = stranger.wait();
    wait_event(&mut rx, &mut seen, Duration::from_secs(5), |p| {
        matches!(p, ProcEvent::Exit { who, status: ExitStatus::Signal { sig: 15, .. }, .. }
            if who.pid == pid && who.app.as_ref().is_some_and(|a| a.pm_id == 3))
    });
    let exit = seen
        .iter()
        .find_map(|s| match &s.event {
            Event::Proc(p) => match &**p {
                ProcEvent::Exit { who, .. } if who.pid == pid => Some(p.summary()),
                _ => None,
            },
            _ => None,
        })
        .unwrap();
    assert!(
        exit.starts_with(&format!("exit pid {pid} api:3 signal SIGTERM")),
        "{exit}"
    );
    w.stop();
    let _ = daemon.kill();
    let _ = daemon.wait();
}

#[test]
fn hinted_pid_is_tracked_netlink() {
    hint(WatchMode::Netlink);
}

#[test]
fn hinted_pid_is_tracked_pidfd() {
    hint(WatchMode::Pidfd);
}
