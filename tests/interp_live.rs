//! The interpretation layer on live recordings of real pm2 daemons (5.4.3 and 7.0.4):
//! finds the daemon (pm2::home), records a `pm2 restart` with the in-process recorder, and
//! checks that the timeline shows the request and its reply with the new pid, the notify,
//! the bus events and the daemon log lines of that restart, and models the generations.

#[path = "support/pm2.rs"]
mod pm2;

use pm2_trace::event::{CaptureInfo, Event, Stamped};
use pm2_trace::pm2::home;
use pm2_trace::record::{record, Observer, Stopper};
use pm2_trace::timeline::{self, Entry, EntryKind};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn live_restart(version: &str) {
    let pm2 = pm2::Pm2::start(version);
    let port = pm2::free_port();
    pm2.start_app("web", "well-behaved.js", port, &[]);
    pm2.wait_for_status("web", "online", Duration::from_secs(10))
        .expect("web online");
    // Past min_uptime (1 s): a stop of a younger process counts as an unstable restart.
    std::thread::sleep(Duration::from_millis(1200));

    // Finding the daemon.
    let daemons = home::list_daemons();
    let d = daemons
        .iter()
        .find(|d| d.home == pm2.home())
        .unwrap_or_else(|| panic!("{daemons:?}"));
    assert_eq!(d.version, version);
    assert_eq!(Some(d.pid), pm2.daemon_pid());
    let loc = home::locate(Some(pm2.home()), |k| std::env::var_os(k), &daemons).expect("locate");
    assert_eq!((loc.pid, loc.version.as_deref()), (d.pid, Some(version)));
    assert_eq!(
        (loc.sockets.rpc.clone(), loc.sockets.origin),
        (pm2.rpc_sock(), "default")
    );
    assert_eq!(loc.sockets.pub_, pm2.pub_sock());
    assert!(home::is_alive(loc.pid));

    // Recording a restart.
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = pm2.record_options(&loc, dir.path().join("capture.bin"), "interp_live", true);
    let stop = Stopper::new();
    let (tx, rx) = mpsc::channel::<Stamped>();
    let (late_tx, late_rx) = mpsc::channel::<String>();
    let recorder = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut on_event = Watcher {
                tx,
                closing: false,
                late: late_tx,
            };
            record(&opts, stop, &mut on_event)
        }
    });
    let aside = pm2.home().join("rpc.sock.pm2-trace-daemon");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !aside.exists() {
        assert!(
            Instant::now() < deadline,
            "the recorder did not interpose within 10 s"
        );
        assert!(!recorder.is_finished(), "the recorder ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = pm2.app("web").expect("web")["pid"].as_i64().expect("pid");
    pm2.cmd_ok(&["restart", "web"]);
    pm2.wait_for_status("web", "online", Duration::from_secs(10))
        .expect("web online again");
    std::thread::sleep(Duration::from_millis(800));
    let after = pm2.app("web").expect("web")["pid"].as_i64().expect("pid");
    assert_ne!(before, after);
    // Stopped right after a command: its connection's close is still inside the recorder's
    // reorder window, and must reach the watchers before they are asked to close.
    pm2.cmd_ok(&["jlist"]);
    stop.stop("test done");
    let outcome = recorder
        .join()
        .expect("recorder thread")
        .expect("recording");
    let events: Vec<Stamped> = rx.try_iter().collect();
    let late: Vec<String> = late_rx.try_iter().collect();
    assert!(
        late.is_empty(),
        "{version}: events handed to the watchers after their closing notes: {late:?}"
    );

    // Interpreting it.
    let mut all: Vec<Entry> = Vec::new();
    let tl = timeline::replay(&outcome.info, events, |e| {
        all.push(e.clone());
        Ok::<(), ()>(())
    })
    .unwrap();
    let text: Vec<String> = all
        .iter()
        .map(|e| {
            format!(
                "{} | {}",
                e.app.as_ref().map(|a| a.to_string()).unwrap_or_default(),
                e.describe()
            )
        })
        .collect();
    let text = text.join("\n");
    for want in [
        "web:0 | restartProcessId web:0".to_string(),
        format!("web:0 | restartProcessId web:0 -> new pid {after} after "),
        "web:0 | notifyByProcessId web:0 restart (manually)".into(),
        "web:0 | web:0 stopping (daemon sends the kill signal)".into(),
        "web:0 | web:0 exited code 0 via SIGINT (daemon says)".into(),
        "web:0 | web:0 exit event (code 0, status stopping)".into(),
        "web:0 | web:0 starting (fork mode)".into(),
        "web:0 | web:0 online".into(),
        "web:0 | web:0 online (daemon log)".into(),
        "web:0 | web:0 restart (manually), status online".into(),
        format!("getMonitorData -> 1 app: web:0 online pid {before} after"),
        format!("getMonitorData -> 1 app: web:0 online pid {after} after"),
    ] {
        assert!(text.contains(&want), "{version}: {want:?} not in\n{text}");
    }
    let killed = if version.starts_with('7') {
        format!("web:0 | web:0 pid {before}: process tree killed")
    } else {
        format!("web:0 | web:0 pid {before}: process killed (main pid only)")
    };
    assert!(
        text.contains(&killed),
        "{version}: {killed:?} not in\n{text}"
    );
    assert!(
        !all.iter().any(|e| matches!(
            e.kind,
            EntryKind::RpcOther { .. } | EntryKind::Undecodable { .. }
        )),
        "{text}"
    );

    let web = tl.app(0).expect("web in the model");
    assert_eq!(web.name.as_deref(), Some("web"));
    let old = web
        .generations
        .iter()
        .find(|g| g.pid == Some(before))
        .expect("old generation");
    let new = web
        .generations
        .iter()
        .find(|g| g.pid == Some(after))
        .expect("new generation");
    assert!(old.before_capture);
    let r = &tl.requests[new.started_by.expect("started by the restart")];
    assert_eq!(
        (r.method.as_str(), r.new_pid, r.error.as_deref()),
        ("restartProcessId", Some(after), None)
    );
    assert!(r.notified.is_some());
    assert!(r.env_changes.is_empty(), "{:?}", r.env_changes);
    let stop = old.stop.as_ref().expect("stop of the old generation");
    assert_eq!(stop.by_request, new.started_by);
    assert!(stop.confirmed.is_some() && stop.sigkill.is_none());
    assert_eq!(old.exit.as_ref().and_then(|x| x.code), Some(0));
    assert_eq!(old.early_exit, Some(false));
    assert!(new.starting.is_some() && new.online.is_some() && new.exit.is_none());
    assert_eq!(web.status(), Some("online"));
}

/// The daemon of `pm2`'s home, as `record` finds it.
fn locate(pm2: &pm2::Pm2) -> home::Located {
    let daemons = home::list_daemons();
    home::locate(Some(pm2.home()), |k| std::env::var_os(k), &daemons).expect("locate")
}

/// A watcher of the recording (as the live exporter is): every event, and those that came
/// after it was asked for its closing notes, when it can no longer act on them.
struct Watcher {
    tx: mpsc::Sender<Stamped>,
    closing: bool,
    late: mpsc::Sender<String>,
}

impl Observer for Watcher {
    fn event(&mut self, _: &CaptureInfo, ev: &Stamped, _: &[Entry]) {
        // The recorder's own closing notes come after, by design.
        if self.closing && !matches!(ev.event, Event::Note { .. }) {
            let _ = self
                .late
                .send(format!("{:?}", ev.event).chars().take(200).collect());
        }
        let _ = self.tx.send(ev.clone());
    }

    fn closing_notes(&mut self) -> Vec<String> {
        self.closing = true;
        Vec::new()
    }
}

#[test]
fn live_restart_704() {
    live_restart("7.0.4");
}

#[test]
fn live_restart_543() {
    live_restart("5.4.3");
}

/// A program that does not guard (here `/bin/true`; before, the test binary itself, which
/// took `__guard` for a test filter) is refused before any traffic goes through the proxy,
/// and the daemon keeps its socket.
#[test]
fn a_guardian_that_does_not_start_is_refused() {
    let pm2 = pm2::Pm2::start("7.0.4");
    let loc = locate(&pm2);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = pm2.record_options(&loc, dir.path().join("capture.bin"), "interp_live", false);
    opts.guardian = Some("/bin/true".into());
    let mut on_event = |_: &CaptureInfo, _: &Stamped, _: &[Entry]| {};
    let err =
        record(&opts, Stopper::new(), &mut on_event).expect_err("a recording without a guardian");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("cannot start the guardian process")
            && msg.contains("/bin/true __guard did not start guarding"),
        "{msg}"
    );
    assert!(!pm2.home().join("rpc.sock.pm2-trace-daemon").exists());
    pm2.cmd_ok(&["ping"]);
    assert_eq!(pm2.daemon_pid(), Some(loc.pid), "the same daemon answers");
}

/// A store that cannot begin (a disk that filled between the check of the output and the
/// session's start).
struct FullDisk;

impl pm2_trace::record::Store for FullDisk {
    fn begin(&mut self, _: &CaptureInfo) -> Result<(), pm2_trace::capture::CaptureError> {
        Err(pm2_trace::capture::CaptureError::Io {
            path: "/full/capture.bin".into(),
            offset: 0,
            op: "cannot write the header",
            error: std::io::Error::from_raw_os_error(libc::ENOSPC),
        })
    }
    fn write(&mut self, _: &Stamped, _: &str) -> Result<(), pm2_trace::capture::CaptureError> {
        Ok(())
    }
    fn flush(&mut self) {}
    fn end(
        &mut self,
    ) -> Result<pm2_trace::capture::CaptureSummary, pm2_trace::capture::CaptureError> {
        unreachable!("a session that did not begin is not ended")
    }
    fn describe(&self) -> String {
        "/full/capture.bin".into()
    }
}

/// A session that fails as it starts (here its store cannot begin) gives the daemon its
/// socket back before the proxy stops listening: a pm2 command at that moment reaches the
/// daemon or the proxy, never a socket that refuses it (seen under load with `record --dir`
/// on a disk that filled as the recorder started).
#[test]
fn a_session_that_fails_to_start_never_leaves_a_refusing_socket() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let pm2 = pm2::Pm2::start("7.0.4");
    let loc = locate(&pm2);
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = pm2.record_options(&loc, dir.path().join("capture.bin"), "interp_live", false);
    let done = Arc::new(AtomicBool::new(false));
    let (refused, connected) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // One client, gently (the other tests of this binary run meanwhile).
    let clients: Vec<_> = (0..1)
        .map(|_| {
            let (done, refused, connected) = (done.clone(), refused.clone(), connected.clone());
            let sock = pm2.rpc_sock();
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    match std::os::unix::net::UnixStream::connect(&sock) {
                        Ok(_) => connected.fetch_add(1, Ordering::Relaxed),
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => panic!("connect: {e}"),
                    };
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        })
        .collect();
    for _ in 0..10 {
        // The lock of the session before is free once its guardian has exited, and a
        // child another test forks meanwhile holds it until its exec: a moment between.
        std::thread::sleep(Duration::from_millis(100));
        let mut on_event = |_: &CaptureInfo, _: &Stamped, _: &[Entry]| {};
        let err = pm2_trace::record::record_to(&opts, Stopper::new(), &mut on_event, &mut FullDisk)
            .expect_err("a session whose store cannot begin");
        assert!(
            format!("{err:#}").contains("cannot write the header"),
            "{err:#}"
        );
        assert!(!pm2.home().join("rpc.sock.pm2-trace-daemon").exists());
    }
    done.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    assert_eq!(
        refused.load(Ordering::Relaxed),
        0,
        "connections refused by rpc.sock ({} made)",
        connected.load(Ordering::Relaxed)
    );
    pm2.cmd_ok(&["ping"]);
    assert_eq!(pm2.daemon_pid(), Some(loc.pid), "the same daemon answers");
}
