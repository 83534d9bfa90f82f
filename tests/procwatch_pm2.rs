//! The process watcher against real pm2 daemons (5.4.3 and 7.0.4): a restart of an app
//! whose child drains slowly after SIGINT, and (7.0.4) an app whose server is double-forked
//! out of pm2's tree. A netlink watcher and a pidfd watcher run side by side; the
//! assertions say what the kernel showed: when each pid of the old tree exited and how,
//! who held the port when the new generation started and when it exited early.
#[path = "support/pm2.rs"]
mod pm2;

use pm2_trace::event::proc::{
    ActiveMode, AttrHow, ExitStatus, ProcEvent, Snapshot, SnapshotReason, StatusFrom, Timing, Who,
};
use pm2_trace::event::{Event, EventReceiver, EventSink, Stamped};
use pm2_trace::sources::procwatch::{no_redaction, ProcWatcher, WatchConfig, WatchMode};
use std::time::{Duration, Instant};

struct Watch {
    w: Option<ProcWatcher>,
    rx: EventReceiver,
    ev: Vec<Stamped>,
    name: &'static str,
}

impl Watch {
    fn start(home: &std::path::Path, mode: WatchMode, name: &'static str) -> Watch {
        let (sink, rx) = EventSink::channel(50_000);
        let mut cfg = WatchConfig::new(home);
        cfg.mode = mode;
        let w = ProcWatcher::start(cfg, sink, no_redaction())
            .unwrap_or_else(|e| panic!("{name} watcher: {e}"));
        eprintln!("{name}: {}", w.mode());
        Watch {
            w: Some(w),
            rx,
            ev: Vec::new(),
            name,
        }
    }

    fn w(&self) -> &ProcWatcher {
        self.w.as_ref().unwrap()
    }

    fn pump(&mut self) {
        while let Some(e) = self.rx.try_recv() {
            self.ev.push(e);
        }
    }

    fn stop(&mut self) {
        if let Some(w) = self.w.take() {
            w.stop();
        }
        self.pump();
    }

    fn procs(&self) -> impl Iterator<Item = (u64, &ProcEvent)> {
        self.ev.iter().filter_map(|s| match &s.event {
            Event::Proc(p) => Some((s.t, &**p)),
            _ => None,
        })
    }

    fn print(&self) {
        let t0 = self.ev.first().map(|s| s.t).unwrap_or(0);
        for (t, e) in self.procs() {
            eprintln!(
                "{} +{:>6} ms {}",
                self.name,
                (t.saturating_sub(t0)) / 1_000_000,
                e.summary()
            );
        }
    }

    /// Exits: (t, who, status, from, timing, in_tree, held).
    fn exits(&self) -> Vec<Exit<'_>> {
        self.procs()
            .filter_map(|(t, e)| match e {
                ProcEvent::Exit {
                    who,
                    status,
                    status_from,
                    timing,
                    in_tree,
                    held,
                    ..
                } => Some(Exit {
                    t,
                    who,
                    status,
                    from: *status_from,
                    timing: *timing,
                    in_tree: *in_tree,
                    held,
                }),
                _ => None,
            })
            .collect()
    }

    fn snapshots(&self) -> Vec<(u64, &Snapshot)> {
        self.procs()
            .filter_map(|(t, e)| match e {
                ProcEvent::Snapshot(s) => Some((t, s)),
                _ => None,
            })
            .collect()
    }

    fn wait_for(&mut self, what: &str, timeout: Duration, mut f: impl FnMut(&Watch) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            self.pump();
            if f(self) {
                return;
            }
            if Instant::now() > deadline {
                self.print();
                panic!("{}: {what} not seen within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Exit<'a> {
    t: u64,
    who: &'a Who,
    status: &'a ExitStatus,
    from: Option<StatusFrom>,
    timing: Timing,
    in_tree: Option<bool>,
    held: &'a Vec<String>,
}

fn gen(w: &Who) -> Option<u64> {
    w.app.as_ref().and_then(|a| a.generation)
}

fn cmd(w: &Who) -> &str {
    w.cmd.as_deref().unwrap_or("")
}

fn wait_port(port: u16) {
    let t = Instant::now();
    while !pm2::port_open(port) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_kernel(t: &Timing) -> bool {
    matches!(t, Timing::Kernel { .. })
}

/// The one exit (non-daemon) of generation `g` whose command line contains `needle`
/// and not `not`.
fn one<'a>(w: &'a Watch, g: u64, needle: &str, not: &str) -> Exit<'a> {
    let mut v: Vec<Exit> = w
        .exits()
        .into_iter()
        .filter(|e| {
            gen(e.who) == Some(g)
                && cmd(e.who).contains(needle)
                && (not.is_empty() || !cmd(e.who).contains(not))
        })
        .collect();
    if v.len() != 1 {
        w.print();
        panic!(
            "{}: expected one exit of gen {g} with {needle:?}, found {}",
            w.name,
            v.len()
        );
    }
    v.remove(0)
}

/// The exit of generation `g`'s main process (the one pm2 started: a child of the daemon).
fn main_of<'a>(w: &'a Watch, g: u64, daemon: i32) -> Exit<'a> {
    let mut v: Vec<Exit> = w
        .exits()
        .into_iter()
        .filter(|e| gen(e.who) == Some(g) && e.who.ppid == daemon && !e.who.daemon)
        .collect();
    if v.len() != 1 {
        w.print();
        panic!(
            "{}: expected one main process exit of gen {g}, found {}",
            w.name,
            v.len()
        );
    }
    v.remove(0)
}

/// The first snapshot with this reason kind whose generation is at least `min_gen`.
fn snapshot_of(w: &Watch, min_gen: u64, early: bool) -> Option<(u64, &Snapshot)> {
    w.snapshots().into_iter().find(|(_, s)| match &s.reason {
        SnapshotReason::NewGeneration {
            generation: Some(g),
            ..
        } if !early => *g >= min_gen,
        SnapshotReason::EarlyExit {
            generation: Some(g),
            ..
        } if early => *g >= min_gen,
        _ => false,
    })
}

/// Restart an app whose child keeps the port for DRAIN_MS after SIGINT.
fn slow_drain(version: &str) {
    let pm2 = pm2::Pm2::start(version);
    let home = pm2.home().to_path_buf();
    let mut nl = Watch::start(&home, WatchMode::Netlink, "netlink");
    let mut pf = Watch::start(&home, WatchMode::Pidfd, "pidfd");
    assert_eq!(nl.w().mode().mode, ActiveMode::Netlink);
    assert_eq!(pf.w().mode().mode, ActiveMode::Pidfd);
    let port = pm2::free_port();
    let addr = format!("127.0.0.1:{port}");
    pm2.start_app_env(
        "web",
        "slow-drain-child.js",
        port,
        &[("DRAIN_MS", "2500")],
        &[],
    );
    pm2.wait_for_status("web", "online", Duration::from_secs(10))
        .unwrap();
    wait_port(port);
    // What the recorder does when it sees restartProcessId: snapshot the app.
    for w in [&nl, &pf] {
        w.w()
            .request_snapshot(SnapshotReason::RestartRequested { pm_id: Some(0) });
    }
    std::thread::sleep(Duration::from_millis(300));
    let out = pm2.cmd(&["restart", "web"]);
    pm2::assert_ok(&out, &["restart", "web"]);
    // Until the old child is gone (drained or killed) and a bit of the aftermath.
    for w in [&mut nl, &mut pf] {
        w.wait_for("exit of the old child", Duration::from_secs(15), |w| {
            w.exits()
                .iter()
                .any(|e| gen(e.who) == Some(0) && cmd(e.who).contains("--child"))
        });
    }
    std::thread::sleep(Duration::from_millis(1000));
    nl.stop();
    pf.stop();
    nl.print();
    pf.print();
    eprintln!("pm2 {version}: web is {:?} at the end", pm2.status("web"));

    // From the kernel: when and how each pid of the old tree exited.
    let daemon = pm2.daemon_pid().expect("daemon pid");
    let parent = main_of(&nl, 0, daemon);
    let child = one(&nl, 0, "--child", "");
    for e in [&parent, &child] {
        assert!(is_kernel(&e.timing), "kernel timestamp: {:?}", e.timing);
        assert_eq!(e.from, Some(StatusFrom::Netlink));
        assert_eq!(e.who.how, Some(AttrHow::Environ));
        assert_eq!(e.who.app.as_ref().unwrap().name, "web");
    }
    assert_eq!(
        *parent.status,
        ExitStatus::Code { code: 0 },
        "the parent exits at once on SIGINT"
    );
    assert!(
        child.held.contains(&addr),
        "the old child held {addr}: {:?}",
        child.held
    );
    assert_eq!(
        child.in_tree,
        Some(false),
        "its parent is gone: it ends outside pm2's tree"
    );
    let gap_ms = (child.t - parent.t) / 1_000_000;
    eprintln!(
        "pm2 {version}: old child exited {gap_ms} ms after the old parent: {}",
        child.status.words()
    );
    // Who held the port when the first new generation started.
    let (_, newgen) = snapshot_of(&nl, 1, false).expect("a new-generation snapshot");
    let holder = newgen.sockets.iter().find(|h| h.port == Some(port));
    if version.starts_with('7') {
        // pm2 7 waits for the whole tree and SIGKILLs the drain after kill_timeout (1600 ms).
        assert!(
            matches!(child.status, ExitStatus::Signal { sig: 9, .. }),
            "pm2 7 SIGKILLs the draining child: {:?}",
            child.status
        );
        assert!(
            (1300..3000).contains(&gap_ms),
            "SIGKILL about kill_timeout after SIGINT: {gap_ms} ms"
        );
        assert!(
            holder.is_none(),
            "port free when gen 1 started: {:?}",
            holder
        );
    } else {
        // pm2 5 waits for the main pid only: the child drains (exit 0 after DRAIN_MS) while
        // new generations start and fail.
        assert_eq!(
            *child.status,
            ExitStatus::Code { code: 0 },
            "the child drained"
        );
        assert!(
            gap_ms >= 2000,
            "drained for DRAIN_MS after SIGINT: {gap_ms} ms"
        );
        let h =
            holder.unwrap_or_else(|| panic!("gen 1 started while {addr} was held: {newgen:#?}"));
        assert_eq!(h.pid, child.who.pid);
        assert_eq!(h.app.as_ref().and_then(|a| a.generation), Some(0));
        assert!(!h.in_tree);
        // The new generation's early exit with its exit code, and who held the port then.
        let early: Vec<Exit> = nl
            .exits()
            .into_iter()
            .filter(|e| {
                gen(e.who).is_some_and(|g| g >= 1)
                    && cmd(e.who).contains("--child")
                    && e.t < child.t
            })
            .collect();
        assert!(
            !early.is_empty(),
            "new-generation children died while the old child drained"
        );
        for e in &early {
            assert_eq!(*e.status, ExitStatus::Code { code: 1 }, "EADDRINUSE exit");
        }
        let (_, ee) = snapshot_of(&nl, 1, true).expect("an early-exit snapshot");
        let h = ee
            .sockets
            .iter()
            .find(|h| h.port == Some(port))
            .expect("port holder at the early exit");
        assert_eq!(h.pid, child.who.pid);
        let line = ProcEvent::Snapshot(ee.clone()).summary();
        assert!(
            line.contains(&format!(
                "port {addr} held by pid {} web:0 gen 0 (outside pm2's tree)",
                child.who.pid
            )),
            "{line}"
        );
    }
    // The fallback sees the same exits: instants no earlier than the kernel's, same status.
    for k in [&parent, &child] {
        let p = pf
            .exits()
            .into_iter()
            .find(|e| e.who.pid == k.who.pid)
            .unwrap_or_else(|| panic!("pidfd watcher saw pid {} exit", k.who.pid));
        let Timing::Wakeup { observed_ns } = p.timing else {
            panic!("{:?}", p.timing)
        };
        let Timing::Kernel { kernel_ns, .. } = k.timing else {
            panic!()
        };
        assert!(observed_ns >= kernel_ns && observed_ns - kernel_ns < 250_000_000);
        assert_eq!(p.status, k.status, "pid {} ({:?})", k.who.pid, p.from);
        assert_eq!(p.who.app.as_ref().and_then(|a| a.generation), Some(0));
    }
}

#[test]
fn slow_drain_child_5_4_3() {
    slow_drain("5.4.3");
}

#[test]
fn slow_drain_child_7_0_4() {
    slow_drain("7.0.4");
}

#[test]
fn double_fork_server_7_0_4() {
    let pm2 = pm2::Pm2::start("7.0.4");
    let home = pm2.home().to_path_buf();
    let mut nl = Watch::start(&home, WatchMode::Netlink, "netlink");
    let mut pf = Watch::start(&home, WatchMode::Pidfd, "pidfd");
    let port = pm2::free_port();
    let addr = format!("127.0.0.1:{port}");
    pm2.start_app_env(
        "web",
        "double-fork-server.js",
        port,
        &[("DRAIN_MS", "3000")],
        &[],
    );
    pm2.wait_for_status("web", "online", Duration::from_secs(10))
        .unwrap();
    wait_port(port);
    for w in [&nl, &pf] {
        w.w()
            .request_snapshot(SnapshotReason::RestartRequested { pm_id: Some(0) });
    }
    std::thread::sleep(Duration::from_millis(300));
    let out = pm2.cmd(&["restart", "web"]);
    pm2::assert_ok(&out, &["restart", "web"]);
    for w in [&mut nl, &mut pf] {
        w.wait_for("exit of the old server", Duration::from_secs(15), |w| {
            w.exits()
                .iter()
                .any(|e| gen(e.who) == Some(0) && cmd(e.who).contains("--server"))
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    nl.stop();
    pf.stop();
    nl.print();
    pf.print();

    // The server was forked by the intermediate (which pm2's owner process forked) and is
    // attributed to web:0 gen 0 by its environment.
    let server = one(&nl, 0, "--server", "");
    let fork_parent = nl
        .procs()
        .find_map(|(_, e)| match e {
            ProcEvent::Fork { parent, who, .. } if who.pid == server.who.pid => Some(*parent),
            _ => None,
        })
        .expect("the server's fork was seen");
    let inter = one(&nl, 0, "--intermediate", "");
    assert_eq!(fork_parent, inter.who.pid, "forked by the intermediate");
    assert_eq!(*inter.status, ExitStatus::Code { code: 0 });
    assert_eq!(server.who.how, Some(AttrHow::Environ));
    // When the restart was requested it held the port, outside pm2's tree.
    let (_, rr) = nl
        .snapshots()
        .into_iter()
        .find(|(_, s)| matches!(s.reason, SnapshotReason::RestartRequested { .. }))
        .unwrap();
    let h = rr
        .sockets
        .iter()
        .find(|h| h.port == Some(port))
        .expect("port held at restart request");
    assert_eq!(h.pid, server.who.pid);
    assert!(!h.in_tree);
    assert_eq!(
        h.app.as_ref().map(|a| (a.pm_id, a.generation)),
        Some((0, Some(0)))
    );
    assert!(
        h.summary()
            == format!(
                "port {addr} held by pid {} web:0 gen 0 (outside pm2's tree)",
                server.who.pid
            ),
        "{}",
        h.summary()
    );
    // The new generation exited early while the old server still held the port.
    let (t_ee, ee) = snapshot_of(&nl, 1, true).expect("an early-exit snapshot of a new generation");
    let h = ee
        .sockets
        .iter()
        .find(|h| h.port == Some(port))
        .expect("port holder at the early exit");
    assert_eq!(h.pid, server.who.pid);
    assert!(t_ee < server.t);
    let failed: Vec<Exit> = nl
        .exits()
        .into_iter()
        .filter(|e| {
            gen(e.who).is_some_and(|g| g >= 1) && cmd(e.who).contains("--server") && e.t < server.t
        })
        .collect();
    assert!(
        !failed.is_empty(),
        "new servers failed while the old one drained"
    );
    assert!(failed
        .iter()
        .all(|e| *e.status == ExitStatus::Code { code: 1 }));
    // The old server's own exit: drained (exit 0), outside the tree, holding the port.
    assert_eq!(*server.status, ExitStatus::Code { code: 0 });
    assert_eq!(server.in_tree, Some(false));
    assert!(server.held.contains(&addr), "{:?}", server.held);
    // The pidfd fallback attributes and sees it too.
    let p = pf
        .exits()
        .into_iter()
        .find(|e| e.who.pid == server.who.pid)
        .expect("pidfd watcher saw the server exit");
    assert_eq!(p.who.app.as_ref().map(|a| a.generation), Some(Some(0)));
    assert_eq!(p.status, server.status);
    assert_eq!(p.in_tree, Some(false));
}
