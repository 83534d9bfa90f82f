//! The process watcher on a process tree of our own (no pm2): a stand-in "daemon" shell
//! runs a scenario (a background child left as a zombie by a parent that execs, a process
//! killed with SIGKILL, one exiting with code 3, one double-forked out of the tree, a TCP
//! listener), while a netlink watcher and a pidfd watcher watch it at the same time.
//!
//! The netlink watcher must report every exit with the kernel's status and timestamp; the
//! pidfd watcher must report the same exits at an instant no earlier than the kernel's and
//! close to it, with the status it could learn, or `Unknown` with the reason when it could
//! not (forced by disabling PIDFD_INFO_EXIT and zombie reads, as on an older kernel or for
//! another user's processes).

use pm2_trace::event::proc::{
    ActiveMode, ExitStatus, ProcEvent, Proto, SnapshotReason, StatusFrom, Timing, Via,
};
use pm2_trace::event::{Event, EventReceiver, EventSink, Stamped};
use pm2_trace::sources::procwatch::{no_redaction, ProcWatcher, Tuning, WatchConfig, WatchMode};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCENARIO: &str = r#"
read go
echo started
sh -c 'sleep 0.25 & exec sleep 0.6' &
sh -c 'sleep 0.3; kill -9 $$' &
sh -c 'sleep 0.3; exit 3' &
sh -c 'sh -c "sleep 0.5; exit 5" & exit 0' &
node -e "const s=require('net').createServer().listen(+process.env.PORT,'127.0.0.1',()=>console.log('listening'));setTimeout(()=>process.exit(0),1200)" &
wait
echo scenario-done
read done
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daemon {
    child: Child,
    out: std::sync::mpsc::Receiver<String>,
}

impl Daemon {
    fn start(home: &std::path::Path, port: u16) -> Daemon {
        let mut child = Command::new("sh")
            .args(["-c", SCENARIO])
            .env("PM2_HOME", home)
            .env("pm_id", "0")
            .env("name", "web")
            .env("restart_time", "1")
            .env("unique_id", "u-1")
            .env("PORT", port.to_string())
            .env("SECRET_TOKEN", "hunter2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Daemon { child, out: rx }
    }

    fn say(&mut self, s: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(s.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn expect_line(&self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(l) if l == want => return,
                Ok(_) => {}
                Err(_) => panic!("the scenario shell did not print {want:?} within {timeout:?}"),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(rx: &mut EventReceiver, into: &mut Vec<Stamped>, for_: Duration) {
    let deadline = Instant::now() + for_;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(e) => into.push(e),
            Err(true) => break,
            Err(false) => break,
        }
    }
}

fn proc_events(v: &[Stamped]) -> Vec<(u64, &ProcEvent)> {
    v.iter()
        .filter_map(|s| match &s.event {
            Event::Proc(p) => Some((s.t, &**p)),
            _ => None,
        })
        .collect()
}

/// (t, status, status_from, timing, cmd, in_tree, held)
type ExitRec = (
    u64,
    ExitStatus,
    Option<StatusFrom>,
    Timing,
    String,
    Option<bool>,
    Vec<String>,
);
/// pid -> its exit
type Exits = HashMap<i32, ExitRec>;

fn exits(v: &[Stamped]) -> Exits {
    let mut m = HashMap::new();
    for (t, e) in proc_events(v) {
        if let ProcEvent::Exit {
            who,
            status,
            status_from,
            timing,
            in_tree,
            held,
            ..
        } = e
        {
            if who.daemon {
                continue;
            }
            let prev = m.insert(
                who.pid,
                (
                    t,
                    status.clone(),
                    *status_from,
                    *timing,
                    who.cmd.clone().unwrap_or_default(),
                    *in_tree,
                    held.clone(),
                ),
            );
            assert!(prev.is_none(), "two exits for pid {}", who.pid);
        }
    }
    m
}

fn find<'a>(ex: &'a Exits, cmd_has: &str) -> (i32, &'a ExitRec) {
    let hits: Vec<_> = ex.iter().filter(|(_, v)| v.4.contains(cmd_has)).collect();
    assert_eq!(
        hits.len(),
        1,
        "exactly one exit whose command contains {cmd_has:?}: {:#?}",
        ex
    );
    (*hits[0].0, hits[0].1)
}

struct Run {
    nl: Vec<Stamped>,
    pf: Vec<Stamped>,
    daemon_pid: i32,
    port: u16,
}

fn run(pidfd_tuning: Tuning) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let port = free_port();
    let mut d = Daemon::start(&home, port);
    let daemon_pid = d.child.id() as i32;

    let (nl_sink, mut nl_rx) = EventSink::channel(100_000);
    let (pf_sink, mut pf_rx) = EventSink::channel(100_000);
    let mut cfg = WatchConfig::new(&home);
    cfg.daemon_pid = Some(daemon_pid);
    cfg.mode = WatchMode::Netlink;
    let nl = ProcWatcher::start(cfg.clone(), nl_sink, no_redaction())
        .expect("netlink mode works as root here");
    assert_eq!(nl.mode().mode, ActiveMode::Netlink, "{}", nl.mode());
    cfg.mode = WatchMode::Pidfd;
    cfg.tuning = pidfd_tuning;
    let pf = ProcWatcher::start(cfg, pf_sink, no_redaction()).expect("pidfd mode");
    assert_eq!(pf.mode().mode, ActiveMode::Pidfd, "{}", pf.mode());
    eprintln!("netlink: {}\npidfd: {}", nl.mode(), pf.mode());

    let mut nl_ev = Vec::new();
    let mut pf_ev = Vec::new();
    // What a restart request does in the recorder: snapshot (and, in pidfd mode, scan fast).
    for w in [&nl, &pf] {
        w.request_snapshot(SnapshotReason::Requested {
            why: "scenario start".into(),
            pm_id: None,
        });
    }
    collect(&mut nl_rx, &mut nl_ev, Duration::from_millis(200));
    collect(&mut pf_rx, &mut pf_ev, Duration::from_millis(10));
    d.say("go\n");
    d.expect_line("started", Duration::from_secs(5));
    d.expect_line("listening", Duration::from_secs(10));
    for w in [&nl, &pf] {
        w.request_snapshot(SnapshotReason::RestartRequested { pm_id: Some(0) });
    }
    d.expect_line("scenario-done", Duration::from_secs(10));
    // The double-forked process lives 0.5 s and exits after its parent; give every
    // status a chance (pid 1 here reaps orphans late).
    let t_end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < t_end {
        collect(&mut nl_rx, &mut nl_ev, Duration::from_millis(50));
        collect(&mut pf_rx, &mut pf_ev, Duration::from_millis(50));
    }
    d.say("done\n");
    let _ = d.child.wait();
    collect(&mut nl_rx, &mut nl_ev, Duration::from_millis(300));
    collect(&mut pf_rx, &mut pf_ev, Duration::from_millis(300));
    nl.stop();
    pf.stop();
    collect(&mut nl_rx, &mut nl_ev, Duration::from_millis(10));
    collect(&mut pf_rx, &mut pf_ev, Duration::from_millis(10));
    Run {
        nl: nl_ev,
        pf: pf_ev,
        daemon_pid,
        port,
    }
}

fn code(c: i32) -> ExitStatus {
    ExitStatus::Code { code: c }
}

/// The exits every run must show from the kernel, with their statuses.
fn check_netlink(r: &Run) -> Exits {
    let ex = exits(&r.nl);
    for (t, e) in proc_events(&r.nl) {
        eprintln!("nl {t} {}", e.summary());
    }
    let (_, k) = find(&ex, "kill -9");
    assert!(
        matches!(
            &k.1,
            ExitStatus::Signal {
                sig: 9,
                core: false,
                ..
            }
        ),
        "{:?}",
        k.1
    );
    assert_eq!(k.2, Some(StatusFrom::Netlink));
    assert!(matches!(k.3, Timing::Kernel { .. }));
    let (_, e3) = find(&ex, "exit 3");
    assert_eq!(e3.1, code(3));
    let (_, s25) = find(&ex, "sleep 0.25");
    assert_eq!(s25.1, code(0));
    let (_, s4) = find(&ex, "sleep 0.6");
    assert_eq!(s4.1, code(0));
    // The double-forked process: its parent exited first, it ends outside the tree.
    let (_, df) = find(&ex, "-c sleep 0.5; exit 5");
    assert_eq!(df.1, code(5));
    assert_eq!(
        df.5,
        Some(false),
        "double-forked process exits outside the daemon's tree"
    );
    assert_eq!(
        k.5,
        Some(true),
        "the SIGKILLed shell is a child of the daemon"
    );
    let (_, node) = find(&ex, "node -e");
    assert_eq!(node.1, code(0));
    let addr = format!("127.0.0.1:{}", r.port);
    assert!(
        node.6.contains(&addr),
        "node held {addr} at its last snapshot: {:?}",
        node.6
    );
    // Kernel instants are ordered as the scenario: sleep 0.25 before sleep 0.6.
    assert!(s25.0 < s4.0);
    ex
}

fn check_snapshots(v: &[Stamped], port: u16, daemon_pid: i32) {
    let mut saw_listener = false;
    let mut saw_env = false;
    for (_, e) in proc_events(v) {
        if let ProcEvent::Snapshot(s) = e {
            assert!(
                s.processes.iter().any(|p| p.pid == daemon_pid && p.daemon),
                "daemon in every snapshot"
            );
            if let Some(h) = s.sockets.iter().find(|h| h.port == Some(port)) {
                assert_eq!(h.proto, Proto::Tcp);
                assert_eq!(h.addr, format!("127.0.0.1:{port}"));
                let app = h.app.as_ref().expect("listener attributed");
                assert_eq!(
                    (app.pm_id, app.name.as_str(), app.generation),
                    (0, "web", Some(1))
                );
                assert!(h.in_tree);
                assert!(
                    e.summary()
                        .contains(&format!("port 127.0.0.1:{port} held by pid {}", h.pid)),
                    "{}",
                    e.summary()
                );
                saw_listener = true;
            }
            for env in &s.env {
                if env
                    .vars
                    .iter()
                    .any(|v| v.key == "SECRET_TOKEN" && v.value == "hunter2")
                {
                    saw_env = true;
                }
            }
        }
    }
    assert!(saw_listener, "a snapshot shows the TCP listener on {port}");
    assert!(
        saw_env,
        "the restart-requested snapshot records the environment (identity redaction)"
    );
}

#[test]
fn netlink_and_pidfd_see_the_same_exits() {
    let r = run(Tuning::default());
    let nl = check_netlink(&r);
    check_snapshots(&r.nl, r.port, r.daemon_pid);
    check_snapshots(&r.pf, r.port, r.daemon_pid);
    for (t, e) in proc_events(&r.pf) {
        eprintln!("pf {t} {}", e.summary());
    }
    let pf = exits(&r.pf);
    // Everything that lived long enough for a scan: each exit seen by both.
    for needle in [
        "kill -9",
        "exit 3",
        "sleep 0.25",
        "sleep 0.6",
        "-c sleep 0.5; exit 5",
        "node -e",
    ] {
        let (pid, k) = find(&nl, needle);
        let p = pf
            .get(&pid)
            .unwrap_or_else(|| panic!("pidfd watcher saw the exit of pid {pid} ({needle})"));
        let Timing::Kernel { kernel_ns, .. } = k.3 else {
            panic!()
        };
        pidfd_exit_instant_ok(needle, kernel_ns, &p.3);
        // With PIDFD_INFO_EXIT (6.15+) or a readable zombie, the status is known and equal.
        assert_eq!(p.1, k.1, "{needle}: pidfd status {:?} ({:?})", p.1, p.2);
        assert!(
            matches!(
                p.2,
                Some(StatusFrom::PidfdInfo) | Some(StatusFrom::ZombieStat)
            ),
            "{:?}",
            p.2
        );
        assert_eq!(p.5, k.5, "{needle}: in_tree");
    }
    // `sleep 0.25` stays a zombie for 350 ms under a parent that exec'd and never waits:
    // its status comes from /proc stat while it is a zombie (the others from
    // PIDFD_INFO_EXIT, or from the zombie if the watcher woke before the reaping).
    let (pid, _) = find(&nl, "sleep 0.25");
    assert_eq!(pf[&pid].2, Some(StatusFrom::ZombieStat));
    // pidfd events are marked as such. A process one scan saw and that was reaped before
    // its pidfd could be opened (the scenario's `sh -c "sh -c ... & exit 0"` lives a few ms)
    // is marked as found gone by a scan: status unknown, its exit known to an interval.
    for (_, e) in proc_events(&r.pf) {
        if let ProcEvent::Exit {
            via,
            status,
            timing,
            ..
        } = e
        {
            let gone_before_pidfd = *via == Via::ProcScan
                && matches!(status, ExitStatus::Unknown { .. })
                && matches!(timing, Timing::Between { .. });
            assert!(*via == Via::Pidfd || gone_before_pidfd, "{}", e.summary());
        }
    }
}

/// The pidfd watcher's exit instant is right: woken no earlier than the kernel's exit
/// (and within 250 ms of it), or, for a process that had already exited when it was
/// found, an interval containing the kernel's instant. Returns when it was observed.
fn pidfd_exit_instant_ok(needle: &str, kernel_ns: u64, t: &Timing) -> u64 {
    match *t {
        Timing::Wakeup { observed_ns } => {
            assert!(
                observed_ns >= kernel_ns,
                "{needle}: pidfd saw the exit before the kernel stamped it"
            );
            let lag = observed_ns - kernel_ns;
            eprintln!(
                "{needle}: pidfd wake-up {} µs after the kernel's exit",
                lag / 1000
            );
            assert!(
                lag < 250_000_000,
                "{needle}: pidfd exit {lag} ns after the kernel's"
            );
            observed_ns
        }
        Timing::Between {
            not_before_ns,
            observed_ns,
        } => {
            eprintln!(
                "{needle}: already gone when found; interval {} µs",
                (observed_ns - not_before_ns) / 1000
            );
            assert!(
                not_before_ns <= kernel_ns && kernel_ns <= observed_ns,
                "{needle}: {t:?} vs {kernel_ns}"
            );
            observed_ns
        }
        other => panic!("{needle}: pidfd exit timing {other:?}"),
    }
}

/// The exits as the pidfd watcher saw them, checked against the kernel's: same pids,
/// instants no earlier than the kernel's and within 250 ms of them.
fn pidfd_matches_kernel<'a>(
    r: &Run,
    nl: &Exits,
    pf: &'a Exits,
) -> Vec<(&'static str, &'a ExitRec, ExitStatus)> {
    for (t, e) in proc_events(&r.pf) {
        eprintln!("pf {t} {}", e.summary());
    }
    let mut out = Vec::new();
    for needle in [
        "kill -9",
        "exit 3",
        "sleep 0.25",
        "sleep 0.6",
        "-c sleep 0.5; exit 5",
        "node -e",
    ] {
        let (pid, k) = find(nl, needle);
        let p = pf
            .get(&pid)
            .unwrap_or_else(|| panic!("pidfd watcher saw the exit of pid {pid} ({needle})"));
        let Timing::Kernel { kernel_ns, .. } = k.3 else {
            panic!()
        };
        pidfd_exit_instant_ok(needle, kernel_ns, &p.3);
        out.push((needle, p, k.1.clone()));
    }
    out
}

/// As on a kernel before 6.15 (or reading another user's zombies): no PIDFD_INFO_EXIT, no
/// zombie status. Every status is unknown, and says why.
#[test]
fn pidfd_without_exit_info_says_unknown() {
    let r = run(Tuning {
        pidfd_exit_info: false,
        zombie_stat: false,
        ..Tuning::default()
    });
    let nl = check_netlink(&r);
    let pf = exits(&r.pf);
    for (needle, p, _) in pidfd_matches_kernel(&r, &nl, &pf) {
        match &p.1 {
            ExitStatus::Unknown { why } => {
                assert!(why.contains("not its parent") && why.contains("PIDFD_INFO_EXIT"), "{why}")
            }
            other => panic!("{needle}: status must be unknown without PIDFD_INFO_EXIT and zombie reads, got {other:?}"),
        }
        assert_eq!(p.2, None);
    }
    let summary = proc_events(&r.pf)
        .iter()
        .find_map(|(_, e)| match e {
            ProcEvent::Exit {
                status: ExitStatus::Unknown { .. },
                ..
            } => Some(e.summary()),
            _ => None,
        })
        .unwrap();
    assert!(summary.contains("status unknown ("), "{summary}");
}

/// PIDFD_INFO_EXIT only (no zombie reads): known once the parent reaps; a process whose
/// parent does not reap it within the grace period (`sleep 0.25` under a parent that
/// exec'd `sleep 0.6`) is unknown, and the record says that its parent had not reaped it.
#[test]
fn pidfd_exit_info_needs_the_parent_to_reap() {
    let r = run(Tuning {
        zombie_stat: false,
        ..Tuning::default()
    });
    let nl = check_netlink(&r);
    let pf = exits(&r.pf);
    for (needle, p, kernel_status) in pidfd_matches_kernel(&r, &nl, &pf) {
        match (&p.1, needle) {
            (ExitStatus::Unknown { why }, "sleep 0.25") => {
                assert!(why.contains("had not reaped it"), "{why}")
            }
            (_, "sleep 0.25") => panic!(
                "sleep 0.25 was not reaped within the grace period: {:?}",
                p.1
            ),
            // Orphans are reaped by init (or a subreaper): promptly on most systems, late on
            // some (this project's VMs reap orphans every ~2 s).
            (ExitStatus::Unknown { why }, "-c sleep 0.5; exit 5") => {
                assert!(why.contains("had not reaped it"), "{why}")
            }
            (st, _) => {
                assert_eq!(*st, kernel_status, "{needle}");
                assert_eq!(p.2, Some(StatusFrom::PidfdInfo), "{needle}");
            }
        }
    }
}
