//! Production failures in fork mode, recorded live on real pm2 daemons (5.4.3, 6.0.14,
//! 7.0.4, and a smoke test on 4.5.6) with the real `pm2-trace record` and replayed with
//! `pm2-trace replay --json`:
//!
//! - a symlink deploy that deletes the old release (`start-path-missing`), and one that
//!   keeps it (no finding);
//! - a port taken by an app of another PM2 daemon after `pm2 restart --update-env` changed
//!   PORT (`address-held-by-other-process`), and a port moved to a free one (no finding);
//! - restart loops (`restart-loop`) spaced by restart_delay, driven by max_memory_restart
//!   (an app that grows past the limit, with the daemon's worker checking every second), and
//!   driven by watch (an app that writes a log into its own watched directory);
//! - a unix socket path held by a double-forked helper of the previous generation, in a
//!   Python app whose error text does not say EADDRINUSE
//!   (`address-held-by-previous-generation`);
//! - a stop pm2 7.x gives up on and then continues past (`stop-timeout-errored` saying what
//!   followed, with `graceful-shutdown-killed`).
//!
//! Scenarios are in tests/findings_support/scenarios.rs (`fast`: `--max-restarts 5`, 6 s
//! drains). No wall-clock timing is asserted.

#[path = "support/pm2.rs"]
mod pm2;
#[path = "support/recorder.rs"]
mod recorder;
#[path = "findings_support/scenarios.rs"]
mod scenarios;

use scenarios::Run;
use serde_json::Value;

const V4: &str = "4.5.6";
const V5: &str = "5.4.3";
const V6: &str = "6.0.14";
const V7: &str = "7.0.4";

fn run(name: &str, version: &str) -> (scenarios::RunDir, Run) {
    scenarios::run_live(name, version)
}

fn summary(f: &Value) -> &str {
    f["summary"].as_str().unwrap_or_default()
}

fn text(f: &Value) -> String {
    let chain: Vec<&str> = f["chain"]
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    format!(
        "{}\n{}\n{}",
        summary(f),
        chain.join("\n"),
        f["remedy"].as_str().unwrap_or("")
    )
}

fn symlink_deploy(version: &str) {
    let (_d, r) = run("symlink-deploy-restart", version);
    r.expect_kinds(&["start-path-missing"]);
    let f = r.finding("start-path-missing");
    assert_eq!(f["severity"], "error");
    let s = summary(f);
    // From the watcher's facts on the replaced generation, read when it appeared (pm2 7
    // kills it and tries the next before the restart's snapshot can look): its directory
    // is gone, and the symlink it was started through now points elsewhere.
    assert!(
        s.contains("working directory") && s.contains("/srv/releases/1 no longer exists"),
        "{s}"
    );
    assert!(s.contains("/srv/current now points to releases/2"), "{s}");
    // pm2 5.2.2+ shows it online with no pid.
    assert_eq!(r.status, "online", "{}", r.lines());
    assert!(s.contains("online with no pid"), "{s}");
    let all = text(f);
    assert!(all.contains("spawn node ENOENT"), "{all}");
    // The remedy names the path through the symlink.
    assert!(
        all.contains("--cwd ") && all.contains("/srv/current/app.js"),
        "{all}"
    );
}

#[test]
fn symlink_deploy_543_start_path_missing() {
    symlink_deploy(V5);
}

#[test]
fn symlink_deploy_6014_start_path_missing() {
    symlink_deploy(V6);
}

#[test]
fn symlink_deploy_704_start_path_missing() {
    symlink_deploy(V7);
}

#[test]
fn symlink_deploy_keeping_the_old_release_704_no_finding() {
    let (_d, r) = run("symlink-keep-restart", V7);
    assert_eq!(r.status, "online");
    r.expect_quiet();
}

fn port_other_daemon(version: &str) {
    let (_d, r) = run("port-other-daemon-restart", version);
    r.expect_kinds(&["address-held-by-other-process", "restart-env-changed"]);
    let f = r.finding("address-held-by-other-process");
    // Errored as on an idle machine; under heavy load a start can take longer than
    // min_uptime to fail, and pm2 keeps restarting it instead.
    if r.status == "errored" {
        r.expect_kinds(&["crash-loop-errored"]);
        assert_eq!(f["severity"], "error");
    } else {
        assert_eq!(f["severity"], "warning", "{}", r.lines());
    }
    let s = summary(f);
    assert!(
        s.contains("app other:0 of another PM2 daemon (PM2_HOME=/tmp/p2t-")
            && s.contains("/.pm2)")
            && s.contains("changed PORT"),
        "{s}"
    );
    // The holder is not one of the recorded daemon's processes.
    assert!(
        r.finding("address-held-by-other-process")["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["source"] == "proc"
                && e["what"].as_str().unwrap_or("").contains("held by pid")),
        "{f:#}"
    );
    assert!(
        !r.kinds()
            .iter()
            .any(|k| k == "address-held-by-previous-generation"),
        "{}",
        r.lines()
    );
}

#[test]
fn port_of_another_daemons_app_543() {
    port_other_daemon(V5);
}

#[test]
fn port_of_another_daemons_app_6014() {
    port_other_daemon(V6);
}

#[test]
fn port_of_another_daemons_app_704() {
    port_other_daemon(V7);
}

#[test]
fn port_moved_to_a_free_one_704_no_finding() {
    let (_d, r) = run("port-moved-restart", V7);
    assert_eq!(r.status, "online");
    r.expect_quiet();
}

fn restart_delay_loop(version: &str) {
    let (_d, r) = run("restart-delay-loop", version);
    assert_ne!(r.status, "errored", "{}", r.lines());
    r.expect_kinds(&["restart-loop"]);
    let f = r.finding("restart-loop");
    assert_eq!(f["severity"], "warning");
    let s = summary(f);
    assert!(
        s.contains("without reaching errored") && s.contains("restart_delay waits 1500 ms"),
        "{s}"
    );
    assert!(
        text(f).contains("crash-on-start: pid="),
        "the chain quotes the crash: {}",
        text(f)
    );
    assert!(
        !r.kinds().iter().any(|k| k == "crash-loop-errored"),
        "{}",
        r.lines()
    );
}

#[test]
fn restart_delay_loop_543() {
    restart_delay_loop(V5);
}

#[test]
fn restart_delay_loop_6014() {
    restart_delay_loop(V6);
}

#[test]
fn restart_delay_loop_704() {
    restart_delay_loop(V7);
}

/// The evidence lines of a finding (`what`), joined.
fn evidence(f: &Value) -> String {
    f["evidence"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["what"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// A restart loop the daemon drives itself (memory or watch): named as a warning, not as a
/// crash loop, and never errored.
fn daemon_driven_loop(r: &Run) -> &Value {
    assert_ne!(r.status, "errored", "{}", r.lines());
    r.expect_kinds(&["restart-loop"]);
    let f = r.finding("restart-loop");
    assert_eq!(f["severity"], "warning", "{f:#}");
    assert!(summary(f).contains("without reaching errored"), "{f:#}");
    assert!(
        !r.kinds().iter().any(|k| k == "crash-loop-errored"),
        "{}",
        r.lines()
    );
    f
}

fn memory_restart_loop(version: &str) {
    let (_d, r) = run("memory-restart-loop", version);
    let f = daemon_driven_loop(&r);
    let s = summary(f);
    assert!(
        s.contains("max_memory_restart restarts it whenever its memory grows past the limit"),
        "{s}"
    );
    let all = text(f);
    assert!(
        all.contains("because it exceeded max_memory_restart (50 MB)")
            && all.contains("when the daemon's memory check"),
        "{all}"
    );
    assert!(evidence(f).contains("over --max-memory-restart"), "{f:#}");
}

#[test]
fn memory_restart_loop_543() {
    memory_restart_loop(V5);
}

#[test]
fn memory_restart_loop_6014() {
    memory_restart_loop(V6);
}

#[test]
fn memory_restart_loop_704() {
    memory_restart_loop(V7);
}

fn watch_restart_loop(version: &str) {
    let (_d, r) = run("watch-restart-loop", version);
    let f = daemon_driven_loop(&r);
    let s = summary(f);
    // pm2 names the path relative to the app's working directory (site/): the finding
    // names it in full, says the changes follow each start, and what to ignore.
    assert!(
        s.contains("watch restarts it on every change of /tmp/p2t-")
            && s.ends_with("/site/logs/app.log."),
        "{s}"
    );
    let all = text(f);
    assert!(
        all.contains("because a watched file changed: /tmp/p2t-")
            && all.contains("after a start of web:0")
            && all.contains("--ignore-watch=\"logs\""),
        "{all}"
    );
    assert!(
        evidence(f).contains("change detected on /tmp/p2t-"),
        "{f:#}"
    );
}

#[test]
fn watch_restart_loop_543() {
    watch_restart_loop(V5);
}

#[test]
fn watch_restart_loop_6014() {
    watch_restart_loop(V6);
}

#[test]
fn watch_restart_loop_704() {
    watch_restart_loop(V7);
}

/// The remedy, on a real daemon: with `--ignore-watch=logs` the same app writes the same file
/// and pm2 leaves it alone; no finding.
#[test]
fn watch_with_the_log_ignored_704_no_finding() {
    let (_d, r) = run("watch-ignored", V7);
    assert_eq!(r.status, "online");
    r.expect_quiet();
    assert!(
        r.notes.iter().any(|n| n.contains("(restart_time 0)")),
        "pm2 restarted it: {:?}",
        r.notes
    );
}

fn unix_double_fork(version: &str) {
    let (_d, r) = run("unix-double-fork-restart", version);
    assert_eq!(r.status, "errored", "{}", r.lines());
    r.expect_kinds(&["address-held-by-previous-generation", "crash-loop-errored"]);
    let f = r.finding("address-held-by-previous-generation");
    let s = summary(f);
    assert!(
        s.contains("(outside pm2's process tree)")
            && s.contains("still held unix socket /tmp/p2t-"),
        "{s}"
    );
    assert!(
        !s.contains("with EADDRINUSE") && s.contains("did not say EADDRINUSE"),
        "the app never said EADDRINUSE: {s}"
    );
}

#[test]
fn unix_socket_of_a_double_forked_helper_6014() {
    unix_double_fork(V6);
}

#[test]
fn unix_socket_of_a_double_forked_helper_704() {
    unix_double_fork(V7);
}

/// pm2 7.x gives up on a stop whose SIGKILLed child stays a zombie, then goes on with the
/// restart: the finding says so, and the SIGKILL that cut the drain is reported next to it.
#[test]
fn stop_given_up_then_restart_continues_704() {
    let (_d, r) = run("stop-gave-up-restart", V7);
    assert_eq!(r.status, "online");
    r.expect_kinds(&["stop-timeout-errored", "graceful-shutdown-killed"]);
    let f = r.finding("stop-timeout-errored");
    let s = summary(f);
    assert!(
        s.contains("then started the new generation at +") && s.contains("web:0 ended online"),
        "{s}"
    );
    assert!(
        !text(f).contains("is not restarted automatically"),
        "{}",
        text(f)
    );
    assert_eq!(f["severity"], "warning");
}

/// pm2 4.5.6 speaks the same wire format: a plain restart records and replays.
#[test]
fn plain_restart_456_records_and_replays() {
    let (_d, r) = run("plain-restart", V4);
    assert_eq!(r.status, "online");
    r.expect_quiet();
    let text = recorder::replay_text(&r.capture);
    for want in [
        "capture of pm2 4.5.6",
        "restartProcessId web:0 -> new pid ",
        "notifyByProcessId web:0 restart",
        "web:0 starting (fork mode)",
        "exit pid ",
    ] {
        assert!(text.contains(want), "no {want:?} in the replay:\n{text}");
    }
}
