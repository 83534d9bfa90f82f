//! Rules on the recorded fixtures (tests/fixtures: real pm2 traffic without process events).
//! The captures with process events are tested in tests/findings_captures.rs.

use super::*;
use crate::timeline::tests::load_fixture;

fn fixture_findings(name: &str) -> Vec<Finding> {
    let (info, events) = load_fixture(name);
    let tl = crate::timeline::replay(&info, events, |_| Ok::<(), ()>(())).unwrap();
    analyze(&tl)
}

fn kinds(f: &[Finding]) -> Vec<(&str, &str, Severity)> {
    f.iter()
        .map(|x| (x.kind.as_str(), x.app.as_deref().unwrap_or("?"), x.severity))
        .collect()
}

/// The fixtures' scenario: `crash` loops into errored after `pm2 start`, is restarted and
/// deleted mid-loop; `stubborn` ignores SIGINT and is SIGKILLed on restart and on delete;
/// `FOO=bar pm2 restart web --update-env` adds a key and web comes up.
#[test]
fn fixtures() {
    for name in ["pm2-5.4.3", "pm2-7.0.4"] {
        let f = fixture_findings(name);
        assert_eq!(
            kinds(&f),
            [
                ("crash-loop-errored", "crash", Severity::Error),
                ("graceful-shutdown-killed", "stubborn", Severity::Warning),
                ("graceful-shutdown-killed", "stubborn", Severity::Warning),
                ("early-exit-after-restart", "crash", Severity::Warning),
                ("restart-env-changed", "web", Severity::Info),
            ],
            "{name}: {f:#?}"
        );
        let crash = &f[0];
        assert!(
            crash.summary.starts_with("crash:1 went errored at ")
                && crash
                    .summary
                    .contains("16 starts in a row died within min_uptime (1000 ms)")
                && crash.summary.contains("reaching max_restarts (16)")
                && crash.summary.contains("exited with code 3")
                && crash.summary.contains("\"boom: EADDRINUSE (simulated)\""),
            "{}",
            crash.summary
        );
        // No process watcher in the fixtures: the EADDRINUSE line alone names no holder.
        assert!(!f.iter().any(|x| x.kind == address_held::KIND));
        let env = &f[4];
        assert!(
            env.summary.contains("(added FOO)") && !env.summary.contains("bar"),
            "{}",
            env.summary
        );
        assert!(env.remedy.is_empty());
        let kill = &f[1];
        assert!(
            kill.summary.contains("of stubborn:2")
                && kill.summary.contains("kill_timeout 1600 ms, the default"),
            "{}",
            kill.summary
        );
        let early = &f[3];
        assert!(
            early.summary.contains("failed before `pm2 delete` at"),
            "{}",
            early.summary
        );
        for x in &f {
            assert!(x.summary.ends_with('.'), "{}", x.summary);
            assert!(!x.evidence.is_empty() && !x.chain.is_empty(), "{x:#?}");
            assert!(x.evidence.windows(2).all(|w| w[0].t <= w[1].t), "{x:#?}");
        }
    }
}

#[test]
fn an_empty_timeline_has_no_findings() {
    let tl = crate::timeline::Timeline::new(&crate::event::CaptureInfo::default());
    assert!(analyze(&tl).is_empty());
}

#[test]
fn kinds_are_the_issue_names() {
    assert_eq!(KINDS[RELOAD_RANK], reload_without_ready::KIND);
    let mut k = KINDS.to_vec();
    k.sort();
    assert_eq!(
        k,
        [
            "address-held-by-other-process",
            "address-held-by-previous-generation",
            "crash-loop-errored",
            "descendant-outlived-stop",
            "early-exit-after-restart",
            "graceful-shutdown-killed",
            "overlapping-restart",
            "ready-timeout",
            "reload-without-ready",
            "restart-env-changed",
            "restart-loop",
            "start-path-missing",
            "stop-timeout-errored",
        ]
    );
}

/// A capture of days: 20 000 generations in crash loops of 16, each ended by errored and a
/// restart. The rules stay linear enough to answer at once (and report a bounded number).
#[test]
fn a_long_crash_looping_capture_is_analyzed_quickly() {
    use crate::event::Source;
    use crate::pm2::daemon_log::DaemonLogLine;
    use crate::pm2::meaning::Stream;
    use crate::timeline::{AppRef, Entry, EntryKind, Timeline};
    let mut tl = Timeline::new(&crate::event::CaptureInfo::default());
    let app = Some(AppRef {
        pm_id: 0,
        name: Some("web".into()),
    });
    let mut t = 1_000_000_000u64;
    let push = |tl: &mut Timeline, t: u64, kind: EntryKind| {
        tl.apply(&Entry {
            t,
            source: Source::Bus,
            app: app.clone(),
            kind,
        })
    };
    let daemon = |log: DaemonLogLine| EntryKind::Daemon { at: None, log };
    for i in 0..20_000u64 {
        t += 50_000_000;
        push(
            &mut tl,
            t,
            daemon(DaemonLogLine::Starting {
                app: "web".into(),
                id: 0,
                mode: "fork".into(),
            }),
        );
        push(
            &mut tl,
            t + 1_000_000,
            daemon(DaemonLogLine::Online {
                app: "web".into(),
                id: 0,
            }),
        );
        push(
            &mut tl,
            t + 20_000_000,
            EntryKind::AppLog {
                stream: Stream::Err,
                at: None,
                line: format!("boom {i}"),
            },
        );
        push(
            &mut tl,
            t + 30_000_000,
            daemon(DaemonLogLine::Exited {
                app: "web".into(),
                id: 0,
                code: 1,
                signal: "SIGINT".into(),
                old: false,
            }),
        );
        if i % 16 == 15 {
            push(
                &mut tl,
                t + 31_000_000,
                daemon(DaemonLogLine::TooManyUnstableRestarts {
                    script: "/srv/web.js".into(),
                    count: 16,
                }),
            );
            // Something brings it back online (the status moves on).
            push(
                &mut tl,
                t + 40_000_000,
                daemon(DaemonLogLine::Online {
                    app: "web".into(),
                    id: 0,
                }),
            );
        }
    }
    let started = std::time::Instant::now();
    let found = analyze(&tl);
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(20),
        "analyze took {took:?}"
    );
    let loops = found.iter().filter(|f| f.kind == crash_loop::KIND).count();
    assert_eq!(loops, MAX_PER_RULE, "{}", found.len());
    assert!(
        found[0].summary.contains("16 starts in a row died"),
        "{}",
        found[0].summary
    );
}

/// address-held-by-previous-generation judges only the starts the recording saw: the same
/// recording (drain-child-restart on 5.4.3, whose new generations failed on the port an
/// orphaned child of the old one held) read as if it had begun at its last event names no
/// holder, while the crash loop is still named.
#[test]
fn a_start_before_the_recording_is_not_judged_for_a_held_address() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("captures/drain-child-restart-5.4.3.bin");
    let reader = crate::capture::reader::CaptureReader::open(&path).unwrap();
    let mut info = reader.info().clone();
    let events: Vec<crate::event::Stamped> = reader.map(Result::unwrap).collect();
    let kinds_of = |info: &crate::event::CaptureInfo| -> Vec<String> {
        let tl = crate::timeline::replay(info, events.clone(), |_| Ok::<(), ()>(())).unwrap();
        analyze(&tl).into_iter().map(|f| f.kind).collect()
    };
    let held = "address-held-by-previous-generation".to_owned();
    assert!(kinds_of(&info).contains(&held));
    let end = events.iter().map(|e| e.t).max().unwrap();
    info.wall_ref_ns += (end - info.mono_ref_ns) as i128;
    info.mono_ref_ns = end;
    let kinds = kinds_of(&info);
    assert!(!kinds.contains(&held), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "crash-loop-errored"), "{kinds:?}");
}

/// The timeline of shipped capture `name` (recorded on a busy host), after checking that it
/// still shows what it was kept for: an RPC copy filed after a later event that `later`
/// accepts (5 ms and more later).
fn timeline_of_late_rpc(
    name: &str,
    later: impl Fn(&crate::event::Event) -> bool,
) -> crate::timeline::Timeline {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("captures/{name}.bin"));
    let reader = crate::capture::reader::CaptureReader::open(&path).unwrap();
    let info = reader.info().clone();
    let events: Vec<crate::event::Stamped> = reader.map(Result::unwrap).collect();
    let late = events.windows(2).any(|w| {
        later(&w[0].event)
            && matches!(
                w[1].event,
                crate::event::Event::RpcConnect { .. } | crate::event::Event::RpcMessage { .. }
            )
            && w[1].t + 5_000_000 < w[0].t
    });
    assert!(late, "{name} no longer shows RPC copies arriving late");
    crate::timeline::replay(&info, events, |_| Ok::<(), ()>(())).unwrap()
}

/// The pids of app 0's generations, in order.
fn generation_pids(tl: &crate::timeline::Timeline) -> Vec<Option<i64>> {
    tl.app(0)
        .unwrap()
        .generations
        .iter()
        .map(|g| g.pid)
        .collect()
}

/// A cluster reload recorded on a busy host (`captures/reload-ready-cluster-loaded-7.0.4`:
/// the reload of `reload-ready-cluster-7.0.4`, recorded while two busy loops held the
/// machine's cores): the recorder's RPC copies, decoded in the idle class, reached the
/// capture after the kernel's exec and snapshot of the reload's new worker, so the
/// getMonitorData reply naming the old worker came when the new worker's generation already
/// had its pid. That reply's process is the generation before, not a new newest one (which
/// made the old worker's stop the new generation's, and the new worker a descendant that
/// outlived it: a false descendant-outlived-stop). A clean reload: no finding.
#[test]
fn a_reload_whose_rpc_copies_arrive_late_gives_no_finding() {
    // The order that matters: an RPC copy after a later process-watcher event.
    let tl = timeline_of_late_rpc("reload-ready-cluster-loaded-7.0.4", |e| {
        matches!(e, crate::event::Event::Proc(_))
    });
    let found: Vec<String> = analyze(&tl)
        .into_iter()
        .map(|f| format!("{} {}", f.kind, f.summary))
        .collect();
    assert!(found.is_empty(), "{found:#?}");
    // The old worker's generation comes before the new one's.
    let pids = generation_pids(&tl);
    assert_eq!(pids, vec![Some(2889), Some(3209)]);
}

/// A restart recorded on a busy host (`captures/drain-child-loaded-5.4.3`: the
/// drain-child restart of `findings_live`, recorded while two busy loops held the machine's
/// cores): the getMonitorData reply the CLI asked for before `pm2 restart` reached the
/// timeline after the daemon had stopped the running generation (whose pid no event had
/// named yet). The reply's process is that generation's, not a new one after it (which took
/// the old pid into the restart's first generation: "the new generation (pid 23674)", one
/// start too few, and no descendant-outlived-stop).
#[test]
fn a_reply_that_arrives_after_its_generation_ended_is_about_that_generation() {
    // The order that matters: an RPC copy after a later bus event.
    let tl = timeline_of_late_rpc("drain-child-loaded-5.4.3", |e| {
        matches!(e, crate::event::Event::BusMessage { .. })
    });
    let kinds: Vec<String> = analyze(&tl).into_iter().map(|f| f.kind).collect();
    for k in [
        "address-held-by-previous-generation",
        "crash-loop-errored",
        "descendant-outlived-stop",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k}: {kinds:?}");
    }
    let pids = generation_pids(&tl);
    assert_eq!(pids[..2], [Some(23674), Some(23730)], "{pids:?}");
}
