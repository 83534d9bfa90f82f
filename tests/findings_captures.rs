//! The captures in captures/ replayed against their golden findings.
//!
//! Each `captures/<name>.bin` was recorded once from a real pm2 daemon by `make_captures`
//! (ignored; see captures/README.md) and has `captures/<name>.findings.json`: the findings
//! `pm2-trace replay --json` gives for it (kind, severity, app, pm_id, summary). Captures are
//! fixed files, so replay is deterministic and the comparison is exact. When the rules'
//! wording changes on purpose, rewrite the golden files with
//! `UPDATE_GOLDEN=1 cargo test --test findings_captures`, and review the diff.
//!
//! Re-recording (real pm2 5.4.3 and 7.0.4, about three minutes):
//! `cargo test --test findings_captures -- --ignored make_captures` (all scenarios), or with
//! `CAPTURES=drain-child-restart-5.4.3,stop-timeout-7.0.4` for some.

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
        "double-fork-restart-7.0.4",
        &[
            "address-held-by-previous-generation",
            "crash-loop-errored",
            "descendant-outlived-stop",
        ],
    ),
    ("slow-graceful-restart-5.4.3", &["graceful-shutdown-killed"]),
    ("slow-graceful-restart-7.0.4", &["graceful-shutdown-killed"]),
    (
        "env-broken-restart-5.4.3",
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
        "overlapping-restart-7.0.4",
        &["overlapping-restart", "graceful-shutdown-killed"],
    ),
    ("crash-on-start-restart-5.4.3", &["crash-loop-errored"]),
    ("crash-on-start-restart-7.0.4", &["crash-loop-errored"]),
    ("crash-once-restart-5.4.3", &["early-exit-after-restart"]),
    ("crash-once-restart-7.0.4", &["early-exit-after-restart"]),
    ("stop-timeout-5.4.3", &["descendant-outlived-stop"]),
    ("stop-timeout-7.0.4", &["stop-timeout-errored"]),
    ("well-behaved-restarts-5.4.3", &[]),
    ("well-behaved-restarts-7.0.4", &[]),
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
        let run = scenarios::run(scenario, version, &path, false);
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
        std::fs::write(
            dir.join(format!("{name}.notes.txt")),
            format!(
                "{}\npm2 {version}: {}\nstatus at the end: {}\n{}\n",
                name,
                scenarios::describe(scenario, false),
                run.status,
                run.notes.join("\n")
            ),
        )
        .unwrap();
    }
}
