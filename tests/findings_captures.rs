//! The captures in captures/ replayed against their golden findings.
//!
//! Each `captures/<name>.bin` was recorded once from a real pm2 daemon by `make_captures`
//! (ignored; see captures/README.md) and has `captures/<name>.findings.json`: the findings
//! `pm2-trace replay --json` gives for it (kind, severity, app, pm_id, summary). Captures are
//! fixed files, so replay is deterministic and the comparison is exact. When the rules'
//! wording changes on purpose, rewrite the golden files with
//! `UPDATE_GOLDEN=1 cargo test --test findings_captures`, and review the diff.
//!
//! Re-recording (real pm2 5.4.3, 6.0.14 and 7.0.4, about seven minutes):
//! `cargo test --test findings_captures -- --ignored make_captures` (all scenarios), or with
//! `CAPTURES=drain-child-restart-5.4.3,stop-timeout-7.0.4` for some.

#[path = "findings_support/cluster.rs"]
mod cluster;
#[path = "support/pm2.rs"]
mod pm2;
#[path = "support/recorder.rs"]
mod recorder;
#[path = "findings_support/scenarios.rs"]
mod scenarios;

use pm2_trace::capture::CaptureReader;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures")
}

/// The captures that must exist (scenario-version), with what each must show.
const EXPECTED: &[(&str, &[&str])] = &[
    (
        "drain-child-restart-5.4.3",
        &[
            "address-held-by-previous-generation",
            "crash-loop-errored",
            "descendant-outlived-stop",
        ],
    ),
    (
        "drain-child-restart-6.0.14",
        &[
            "address-held-by-previous-generation",
            "crash-loop-errored",
            "descendant-outlived-stop",
        ],
    ),
    ("drain-child-restart-7.0.4", &["graceful-shutdown-killed"]),
    (
        "double-fork-restart-5.4.3",
        &[
            "address-held-by-previous-generation",
            "crash-loop-errored",
            "descendant-outlived-stop",
        ],
    ),
    (
        "double-fork-restart-6.0.14",
        &[
            "address-held-by-previous-generation",
            "crash-loop-errored",
            "descendant-outlived-stop",
        ],
    ),
    (
        "double-fork-restart-7.0.4",
        &[
            "address-held-by-previous-generation",
            "crash-loop-errored",
            "descendant-outlived-stop",
        ],
    ),
    ("slow-graceful-restart-5.4.3", &["graceful-shutdown-killed"]),
    (
        "slow-graceful-restart-6.0.14",
        &["graceful-shutdown-killed"],
    ),
    ("slow-graceful-restart-7.0.4", &["graceful-shutdown-killed"]),
    (
        "env-broken-restart-5.4.3",
        &["restart-env-changed", "crash-loop-errored"],
    ),
    (
        "env-broken-restart-6.0.14",
        &["restart-env-changed", "crash-loop-errored"],
    ),
    (
        "env-broken-restart-7.0.4",
        &["restart-env-changed", "crash-loop-errored"],
    ),
    (
        "overlapping-restart-5.4.3",
        &["overlapping-restart", "graceful-shutdown-killed"],
    ),
    (
        "overlapping-restart-6.0.14",
        &["overlapping-restart", "graceful-shutdown-killed"],
    ),
    (
        "overlapping-restart-7.0.4",
        &["overlapping-restart", "graceful-shutdown-killed"],
    ),
    ("crash-on-start-restart-5.4.3", &["crash-loop-errored"]),
    ("crash-on-start-restart-6.0.14", &["crash-loop-errored"]),
    ("crash-on-start-restart-7.0.4", &["crash-loop-errored"]),
    ("crash-once-restart-5.4.3", &["early-exit-after-restart"]),
    ("crash-once-restart-6.0.14", &["early-exit-after-restart"]),
    ("crash-once-restart-7.0.4", &["early-exit-after-restart"]),
    ("stop-timeout-5.4.3", &["descendant-outlived-stop"]),
    ("stop-timeout-6.0.14", &["descendant-outlived-stop"]),
    (
        "stop-timeout-7.0.4",
        &["stop-timeout-errored", "graceful-shutdown-killed"],
    ),
    (
        "restart-while-waiting-5.4.3",
        &["overlapping-restart", "early-exit-after-restart"],
    ),
    (
        "restart-while-waiting-6.0.14",
        &["overlapping-restart", "early-exit-after-restart"],
    ),
    (
        "restart-while-waiting-7.0.4",
        &["overlapping-restart", "early-exit-after-restart"],
    ),
    ("well-behaved-restarts-5.4.3", &[]),
    ("well-behaved-restarts-6.0.14", &[]),
    ("well-behaved-restarts-7.0.4", &[]),
    ("symlink-deploy-restart-5.4.3", &["start-path-missing"]),
    ("symlink-deploy-restart-6.0.14", &["start-path-missing"]),
    ("symlink-deploy-restart-7.0.4", &["start-path-missing"]),
    ("symlink-keep-restart-7.0.4", &[]),
    (
        "port-other-daemon-restart-5.4.3",
        &[
            "address-held-by-other-process",
            "restart-env-changed",
            "crash-loop-errored",
        ],
    ),
    (
        "port-other-daemon-restart-6.0.14",
        &[
            "address-held-by-other-process",
            "restart-env-changed",
            "crash-loop-errored",
        ],
    ),
    (
        "port-other-daemon-restart-7.0.4",
        &[
            "address-held-by-other-process",
            "restart-env-changed",
            "crash-loop-errored",
        ],
    ),
    ("port-moved-restart-7.0.4", &[]),
    ("restart-delay-loop-5.4.3", &["restart-loop"]),
    ("restart-delay-loop-6.0.14", &["restart-loop"]),
    ("restart-delay-loop-7.0.4", &["restart-loop"]),
    ("memory-restart-loop-5.4.3", &["restart-loop"]),
    ("memory-restart-loop-6.0.14", &["restart-loop"]),
    ("memory-restart-loop-7.0.4", &["restart-loop"]),
    ("watch-restart-loop-5.4.3", &["restart-loop"]),
    ("watch-restart-loop-6.0.14", &["restart-loop"]),
    ("watch-restart-loop-7.0.4", &["restart-loop"]),
    (
        "unix-double-fork-restart-6.0.14",
        &[
            "address-held-by-previous-generation",
            "crash-loop-errored",
            "descendant-outlived-stop",
        ],
    ),
    (
        "unix-double-fork-restart-7.0.4",
        &[
            "address-held-by-previous-generation",
            "crash-loop-errored",
            "descendant-outlived-stop",
        ],
    ),
    (
        "stop-gave-up-restart-7.0.4",
        &["stop-timeout-errored", "graceful-shutdown-killed"],
    ),
    // Cluster mode (`-i 2`) and wait_ready: tests/findings_support/cluster.rs.
    (
        "reload-crash-cluster-5.4.3",
        &["reload-without-ready", "crash-loop-errored"],
    ),
    (
        "reload-crash-cluster-6.0.14",
        &["reload-without-ready", "crash-loop-errored"],
    ),
    (
        "reload-crash-cluster-7.0.4",
        &["reload-without-ready", "crash-loop-errored"],
    ),
    ("reload-clean-cluster-5.4.3", &[]),
    ("reload-clean-cluster-6.0.14", &[]),
    ("reload-clean-cluster-7.0.4", &[]),
    ("reload-ready-cluster-7.0.4", &[]),
    ("graceful-reload-cluster-7.0.4", &[]),
    ("wait-ready-timeout-5.4.3", &["ready-timeout"]),
    ("wait-ready-timeout-6.0.14", &["ready-timeout"]),
    ("wait-ready-timeout-7.0.4", &["ready-timeout"]),
    (
        "wait-ready-dead-5.4.3",
        &["ready-timeout", "crash-loop-errored"],
    ),
    (
        "wait-ready-dead-6.0.14",
        &["ready-timeout", "crash-loop-errored"],
    ),
    // pm2 7 concludes a generation that dies before `ready` at its exit: no timeout.
    ("wait-ready-dead-7.0.4", &["crash-loop-errored"]),
];

/// What the golden file keeps of a finding.
fn essentials(findings: &Value) -> Value {
    Value::Array(
        findings
            .as_array()
            .expect("findings array")
            .iter()
            .map(|f| {
                json!({
                    "kind": f["kind"],
                    "severity": f["severity"],
                    "app": f["app"],
                    "pm_id": f["pm_id"],
                    "summary": f["summary"],
                })
            })
            .collect(),
    )
}

#[test]
fn captures_match_their_golden_findings() {
    let dir = captures_dir();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for (name, kinds) in EXPECTED {
        let bin = dir.join(format!("{name}.bin"));
        assert!(
            bin.exists(),
            "{} is missing (see captures/README.md)",
            bin.display()
        );
        let size = std::fs::metadata(&bin).expect("capture").len();
        assert!(
            size < 1_200_000,
            "{name}: {size} bytes, keep captures under ~1 MB"
        );
        let doc = recorder::replay_json(&bin);
        let got = essentials(&doc["findings"]);
        let have: Vec<&str> = got
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["kind"].as_str())
            .collect();
        for k in *kinds {
            assert!(have.contains(k), "{name}: no {k} finding; got {have:?}");
        }
        if kinds.is_empty() {
            assert!(
                !got.as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f["severity"] != "info"),
                "{name}: a clean restart must not warn: {got:#}"
            );
        }
        let golden = dir.join(format!("{name}.findings.json"));
        let pretty = serde_json::to_string_pretty(&got).unwrap() + "\n";
        if update {
            std::fs::write(&golden, &pretty).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
                golden.display()
            )
        });
        if want != pretty {
            failures.push(format!(
                "{name}: findings differ from {}\n--- golden\n{want}\n--- replay\n{pretty}",
                golden.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(rewrite with UPDATE_GOLDEN=1 if the change is intended)",
        failures.join("\n")
    );
}

/// The same captures without their process-watcher events (a `--proc off` recording): the
/// rules that need the watcher stay silent, the others still name the crash loop.
#[test]
fn without_process_events_the_crash_loop_is_still_named() {
    let bin = captures_dir().join("drain-child-restart-5.4.3.bin");
    let mut reader = CaptureReader::open(&bin).expect("capture");
    let info = reader.info().clone();
    let mut events = Vec::new();
    for ev in reader.by_ref() {
        let ev = ev.expect("readable capture");
        if !matches!(ev.event, pm2_trace::event::Event::Proc(_)) {
            events.push(ev);
        }
    }
    let tl = pm2_trace::timeline::replay(&info, events, |_| Ok::<(), ()>(())).unwrap();
    let kinds: Vec<String> = pm2_trace::rules::analyze(&tl)
        .into_iter()
        .map(|f| f.kind)
        .collect();
    assert!(
        kinds.contains(&"crash-loop-errored".to_string()),
        "{kinds:?}"
    );
    assert!(
        !kinds.contains(&"address-held-by-previous-generation".to_string()),
        "no holder can be named without the watcher: {kinds:?}"
    );
}

/// pm2 6.0.14 stops like 5.4.3 (lib/God/Methods.js polls the main pid only; 7.x polls the
/// tree it signalled): the drain-child restart ends errored on both, and the findings say
/// which versions wait for the tree.
#[test]
fn pm2_6_waits_for_the_main_pid_only() {
    for v in ["5.4.3", "6.0.14"] {
        let findings = analyze_with_output(&format!("drain-child-restart-{v}"), str::to_owned);
        let text = |kind: &str| {
            let f = findings
                .iter()
                .find(|f| f.kind == kind)
                .unwrap_or_else(|| panic!("{v}: no {kind}"));
            serde_json::to_string(f).expect("a finding as JSON")
        };
        let d = text("descendant-outlived-stop");
        assert!(
            d.contains("pm2 before 7 signals the tree but waits only for the main pid"),
            "{v}: {d}"
        );
        assert!(
            d.contains("pm2 7+ waits for the whole process tree"),
            "{v}: {d}"
        );
        let a = text("address-held-by-previous-generation");
        assert!(
            a.contains("pm2 before 7 waits only for the main pid"),
            "{v}: {a}"
        );
        assert!(!a.contains("pm2 6+") && !d.contains("pm2 6+"), "{v}");
    }
}

/// Replay a capture, rewriting each app output line with `f` before the model sees it.
fn analyze_with_output(name: &str, f: impl Fn(&str) -> String) -> Vec<pm2_trace::rules::Finding> {
    use pm2_trace::timeline::{EntryKind, Interpreter, Timeline};
    let bin = captures_dir().join(format!("{name}.bin"));
    let mut reader = CaptureReader::open(&bin).expect("capture");
    let info = reader.info().clone();
    let mut interp = Interpreter::new(&info);
    let mut tl = Timeline::new(&info);
    for ev in reader.by_ref() {
        for mut e in interp.push(&ev.expect("readable capture")) {
            if let EntryKind::AppLog { line, .. } = &mut e.kind {
                *line = f(line);
            }
            tl.apply(&e);
        }
    }
    pm2_trace::rules::analyze(&tl)
}

/// With app output hashed (`--redact all`) the stderr cannot say EADDRINUSE: the holder in
/// the snapshots is still named, and the summary does not claim what the stderr said.
#[test]
fn with_app_output_hashed_the_holder_is_still_named() {
    let found = analyze_with_output("double-fork-restart-7.0.4", |_| {
        "<redacted:0123456789abcdef>".into()
    });
    let f = found
        .iter()
        .find(|f| f.kind == "address-held-by-previous-generation")
        .unwrap_or_else(|| panic!("{found:#?}"));
    assert!(!f.summary.contains("EADDRINUSE"), "{}", f.summary);
    assert!(
        f.summary.contains("still held port 127.0.0.1:"),
        "{}",
        f.summary
    );
}

/// When the new generation's stderr says something else went wrong, an old process holding
/// a port is no cause: no address-held finding, and the crash loop quotes the real error.
#[test]
fn a_different_startup_error_is_not_blamed_on_the_holder() {
    let found = analyze_with_output("drain-child-restart-5.4.3", |l| {
        if l.contains("EADDRINUSE") {
            "Error: Cannot find module './config.json'".into()
        } else {
            l.to_owned()
        }
    });
    let kinds: Vec<&str> = found.iter().map(|f| f.kind.as_str()).collect();
    assert!(
        !kinds.contains(&"address-held-by-previous-generation"),
        "{kinds:?}"
    );
    let cl = found
        .iter()
        .find(|f| f.kind == "crash-loop-errored")
        .expect("crash loop");
    assert!(cl.summary.contains("Cannot find module"), "{}", cl.summary);
    assert!(!cl.summary.contains("Cause:"), "{}", cl.summary);
    // The child still outlived the stop.
    assert!(kinds.contains(&"descendant-outlived-stop"), "{kinds:?}");
}

/// The model ties each generation of a crash loop to its main pid and kernel exit, from the
/// watcher's `new generation` snapshots (no reply names those pids), and keeps the holder's
/// exit with the address it held.
#[test]
fn the_model_knows_every_generation_of_the_loop() {
    let bin = captures_dir().join("drain-child-restart-5.4.3.bin");
    let mut reader = CaptureReader::open(&bin).expect("capture");
    let info = reader.info().clone();
    let events: Vec<_> = reader.by_ref().map(|e| e.expect("readable")).collect();
    let tl = pm2_trace::timeline::replay(&info, events, |_| Ok::<(), ()>(())).unwrap();
    let web = tl.app(0).expect("web");
    assert_eq!(web.generations.len(), 17, "{:#?}", web.generations);
    for g in &web.generations[1..] {
        assert!(g.pid.is_some() && g.os_exit.is_some(), "{g:#?}");
        assert_eq!(g.early_exit, Some(true), "{g:#?}");
        assert!(
            g.stderr_tail.iter().any(|l| l.contains("EADDRINUSE")),
            "{g:#?}"
        );
    }
    let holder = web
        .processes
        .iter()
        .find(|p| p.generation == Some(0) && !p.held.is_empty())
        .expect("the old child with its port");
    assert!(holder.exit.is_some() && holder.in_tree_at_exit == Some(false));
    assert!(web.snapshots.len() >= 30, "{}", web.snapshots.len());
    assert_eq!(tl.pm2_version.as_deref(), Some("5.4.3"));
    assert!(tl.proc_watched);
}

/// Re-record the captures from real daemons (slow: minutes). Writes captures/<name>.bin and
/// its golden findings.
#[test]
#[ignore]
fn make_captures() {
    let only: Option<Vec<String>> = std::env::var("CAPTURES")
        .ok()
        .map(|s| s.split(',').map(str::to_owned).collect());
    let dir = captures_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, kinds) in EXPECTED {
        if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == name)) {
            continue;
        }
        let (scenario, version) = name.rsplit_once('-').unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("capture.bin");
        let run = cluster::run(scenario, version, &path, false)
            .unwrap_or_else(|| scenarios::run(scenario, version, &path, false));
        eprintln!(
            "{name}: status {}; {}\n{}",
            run.status,
            run.notes.join("; "),
            run.lines()
        );
        run.expect_kinds(kinds);
        let out = dir.join(format!("{name}.bin"));
        std::fs::copy(&path, &out).unwrap();
        let got = essentials(&run.doc["findings"]);
        std::fs::write(
            dir.join(format!("{name}.findings.json")),
            serde_json::to_string_pretty(&got).unwrap() + "\n",
        )
        .unwrap();
    }
}
