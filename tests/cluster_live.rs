//! Cluster mode and wait_ready on real pm2 daemons (5.4.3, 6.0.14, 7.0.4): each scenario of
//! tests/findings_support/cluster.rs is recorded with the real `pm2-trace record` and
//! replayed with `pm2-trace replay --json`; the test checks the findings it names and what
//! they say. Scenarios run with `--max-restarts 5` (same behaviour, shorter crash loops).
//! No wall-clock timing is asserted.

#[path = "findings_support/cluster.rs"]
mod cluster;
#[path = "support/pm2.rs"]
mod pm2;
#[path = "support/recorder.rs"]
mod recorder;
#[path = "findings_support/scenarios.rs"]
mod scenarios;

use scenarios::Run;

fn run(name: &str, version: &str) -> (tempfile::TempDir, Run) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(format!("{name}-{version}.bin"));
    let r = cluster::run(name, version, &path, true).expect("a cluster scenario");
    r.report_and_check();
    (dir, r)
}

fn summary<'a>(r: &'a Run, kind: &str) -> &'a str {
    r.finding(kind)["summary"].as_str().unwrap_or_default()
}

/// A release that crashes at start, reloaded over a healthy 2-instance cluster app: pm2
/// stops each healthy worker at listen_timeout anyway, instance after instance.
fn reload_of_a_crashing_release(version: &str) {
    let (_d, r) = run("reload-crash-cluster", version);
    r.expect_kinds(&["reload-without-ready"]);
    let f = r.finding("reload-without-ready");
    assert_eq!(f["severity"], "error", "no worker left is an outage");
    let s = summary(&r, "reload-without-ready");
    for want in [
        "web:0's worker",
        "web:1's worker",
        "never became ready",
        "none from",
        "outage",
    ] {
        assert!(s.contains(want), "{version}: no {want:?} in {s}");
    }
    assert!(
        f["remedy"].as_str().unwrap().contains("does not roll back"),
        "{}",
        f["remedy"]
    );
    if r.status != "errored" {
        // Under heavy load the crashes outlive min_uptime and pm2 never sets errored
        // (the scenario's notes say so); the reload's outage is named all the same.
        return;
    }
    // Both instances' crash loops are named, each tied to its own instance.
    let ids: Vec<u64> = r
        .findings()
        .iter()
        .filter(|f| f["kind"] == "crash-loop-errored")
        .filter_map(|f| f["pm_id"].as_u64())
        .collect();
    assert!(ids.contains(&0) && ids.contains(&1), "{ids:?}");
}

#[test]
fn reload_of_a_crashing_release_543() {
    reload_of_a_crashing_release("5.4.3");
}
#[test]
fn reload_of_a_crashing_release_6014() {
    reload_of_a_crashing_release("6.0.14");
}
#[test]
fn reload_of_a_crashing_release_704() {
    reload_of_a_crashing_release("7.0.4");
}

/// A clean reload of a healthy 2-instance cluster app gives no finding.
fn clean_reload(version: &str) {
    let (_d, r) = run("reload-clean-cluster", version);
    assert!(r.findings().is_empty(), "{version}: {}", r.lines());
}

#[test]
fn clean_reload_543() {
    clean_reload("5.4.3");
}
#[test]
fn clean_reload_6014() {
    clean_reload("6.0.14");
}
#[test]
fn clean_reload_704() {
    clean_reload("7.0.4");
}

/// A reload under wait_ready whose new workers say `ready`: no finding either (the `ready`
/// message is what makes each replacement ready).
#[test]
fn reload_with_ready_messages_704() {
    let (_d, r) = run("reload-ready-cluster", "7.0.4");
    assert!(r.findings().is_empty(), "{}", r.lines());
}

/// A graceful reload (softReloadProcessId, through pm2's node module): decoded, the old
/// workers tied to their instances, no finding.
fn graceful_reload(version: &str) {
    let (_d, r) = run("graceful-reload-cluster", version);
    assert!(r.findings().is_empty(), "{version}: {}", r.lines());
    let events = r.doc["events"].as_array().expect("events");
    let soft = events
        .iter()
        .filter(|e| e["type"] == "request_asked" && e["call"]["graceful"] == true)
        .count();
    assert_eq!(soft, 2, "{version}: two graceful reload requests");
    let ready = events
        .iter()
        .filter(|e| e["log"]["line"] == "reload_ready" && e["log"]["soft"] == true)
        .count();
    assert_eq!(
        ready, 2,
        "{version}: `-softReload- New worker listening` twice"
    );
    let old_exits: Vec<u64> = events
        .iter()
        .filter(|e| e["log"]["line"] == "exited" && e["log"]["old"] == true)
        .filter_map(|e| e["app"]["pm_id"].as_u64())
        .collect();
    assert_eq!(
        old_exits,
        [0, 1],
        "{version}: each _old_ exit tied to its instance"
    );
}

#[test]
fn graceful_reload_543() {
    graceful_reload("5.4.3");
}
#[test]
fn graceful_reload_6014() {
    graceful_reload("6.0.14");
}
#[test]
fn graceful_reload_704() {
    graceful_reload("7.0.4");
}

/// An app under --wait-ready that never sends `ready`: each restart waits listen_timeout.
fn ready_never_sent(version: &str) {
    let (_d, r) = run("wait-ready-timeout", version);
    r.expect_kinds(&["ready-timeout"]);
    let f = r.finding("ready-timeout");
    assert_eq!(f["severity"], "warning");
    let s = summary(&r, "ready-timeout");
    assert!(
        s.contains("never sent `ready`") && s.contains("listen_timeout (3000 ms)"),
        "{s}"
    );
    assert_eq!(r.kinds(), ["ready-timeout"], "{}", r.lines());
}

#[test]
fn ready_never_sent_543() {
    ready_never_sent("5.4.3");
}
#[test]
fn ready_never_sent_6014() {
    ready_never_sent("6.0.14");
}
#[test]
fn ready_never_sent_704() {
    ready_never_sent("7.0.4");
}

/// Under --wait-ready, a release that crashes at start: pm2 5.x and 6.x declare each dead
/// generation online when its ready timer runs out; pm2 7 concludes at the exit (no
/// ready-timeout there, only the crash loop).
fn ready_never_sent_by_a_dead_generation(version: &str, declared_dead_online: bool) {
    let (_d, r) = run("wait-ready-dead", version);
    if r.status == "errored" {
        r.expect_kinds(&["crash-loop-errored"]);
    }
    if declared_dead_online {
        let f = r.finding("ready-timeout");
        assert_eq!(f["severity"], "error");
        let s = summary(&r, "ready-timeout");
        assert!(s.contains("dead process as online"), "{s}");
    } else {
        assert!(
            !r.kinds().iter().any(|k| k == "ready-timeout"),
            "{}",
            r.lines()
        );
    }
}

#[test]
fn ready_never_sent_by_a_dead_generation_543() {
    ready_never_sent_by_a_dead_generation("5.4.3", true);
}
#[test]
fn ready_never_sent_by_a_dead_generation_6014() {
    ready_never_sent_by_a_dead_generation("6.0.14", true);
}
#[test]
fn ready_never_sent_by_a_dead_generation_704() {
    ready_never_sent_by_a_dead_generation("7.0.4", false);
}
