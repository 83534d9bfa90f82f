//! Findings on live recordings of real pm2 daemons (5.4.3 and 7.0.4): each scenario of
//! tests/findings_support/scenarios.rs is recorded with the real `pm2-trace record` and
//! replayed with `pm2-trace replay --json`; the test checks which findings it names (and what
//! the key ones say), that they come most severe first, and that a well-behaved app restarted
//! many times yields no warning or error.
//!
//! Scenarios run with `fast` settings (`--max-restarts 5`, 6 s drains) that keep the
//! behaviour and shorten the wait. No wall-clock timing is asserted.

#[path = "support/pm2.rs"]
mod pm2;
#[path = "support/recorder.rs"]
mod recorder;
#[path = "findings_support/scenarios.rs"]
mod scenarios;

use scenarios::Run;
use serde_json::Value;

const V5: &str = "5.4.3";
const V7: &str = "7.0.4";

fn run(name: &str, version: &str) -> (scenarios::RunDir, Run) {
    scenarios::run_live(name, version)
}

fn summary(f: &Value) -> &str {
    f["summary"].as_str().unwrap_or_default()
}

fn chain(f: &Value) -> String {
    f["chain"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The holder's pid and address from an address-held finding's summary.
fn holder(f: &Value) -> (String, String) {
    let s = summary(f);
    let pid = s
        .strip_prefix("pid ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_default()
        .to_owned();
    let addr = s
        .split("still held port ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_default()
        .to_owned();
    (pid, addr)
}

fn address_held_errored(r: &Run, outside_tree: bool) {
    assert_eq!(r.status, "errored", "{}", r.lines());
    r.expect_kinds(&[
        "address-held-by-previous-generation",
        "crash-loop-errored",
        "descendant-outlived-stop",
    ]);
    let f = r.finding("address-held-by-previous-generation");
    assert_eq!(f["severity"], "error");
    let (pid, addr) = holder(f);
    assert!(
        pid.parse::<i32>().is_ok() && addr.starts_with("127.0.0.1:"),
        "{}",
        summary(f)
    );
    // The recording waited for the holder to let go: until when is known.
    assert!(summary(f).contains("was free only at"), "{}", summary(f));
    assert!(summary(f).contains("EADDRINUSE"), "{}", summary(f));
    let c = chain(f);
    if outside_tree {
        assert!(c.contains("outside pm2's process tree"), "{c}");
    } else {
        assert!(c.contains("orphaned when its parent exited"), "{c}");
        assert!(
            c.contains("pm2 before 7 waits only for the main pid"),
            "{c}"
        );
    }
    // The crash loop names the same cause; the descendant is the same process.
    let cl = r.finding("crash-loop-errored");
    assert!(
        summary(cl).contains(&format!(
            "pid {pid} of an earlier generation still held {addr}"
        )),
        "{}",
        summary(cl)
    );
    assert!(
        summary(cl).contains("reaching max_restarts (5)"),
        "{}",
        summary(cl)
    );
    let d = r.finding("descendant-outlived-stop");
    assert_eq!(d["severity"], "warning");
    assert!(
        summary(d).contains(&format!("pid {pid} ")),
        "{}",
        summary(d)
    );
    // Error findings come first: the cause, then the crash loop.
    assert_eq!(
        &r.kinds()[..2],
        ["address-held-by-previous-generation", "crash-loop-errored"]
    );
}

#[test]
fn drain_child_restart_543_errored_port_held_by_orphaned_child() {
    let (_d, r) = run("drain-child-restart", V5);
    address_held_errored(&r, false);
}

#[test]
fn drain_child_restart_704_online_but_drain_killed() {
    let (_d, r) = run("drain-child-restart", V7);
    assert_eq!(r.status, "online");
    r.expect_kinds(&["graceful-shutdown-killed"]);
    r.expect_quiet_except(&["graceful-shutdown-killed"]);
    let f = r.finding("graceful-shutdown-killed");
    assert!(
        summary(f).contains("slow-drain-child.js --child"),
        "{}",
        summary(f)
    );
    assert!(
        summary(f).contains("kill_timeout 1600 ms"),
        "{}",
        summary(f)
    );
    assert!(chain(f).contains("killed by SIGKILL"), "{}", chain(f));
}

#[test]
fn double_fork_restart_543_errored_port_held_outside_tree() {
    let (_d, r) = run("double-fork-restart", V5);
    address_held_errored(&r, true);
}

#[test]
fn double_fork_restart_704_errored_port_held_outside_tree() {
    let (_d, r) = run("double-fork-restart", V7);
    address_held_errored(&r, true);
}

fn graceful(version: &str) {
    let (_d, r) = run("slow-graceful-restart", version);
    assert_eq!(r.status, "online");
    r.expect_kinds(&["graceful-shutdown-killed"]);
    r.expect_quiet_except(&["graceful-shutdown-killed"]);
    let f = r.finding("graceful-shutdown-killed");
    assert_eq!(f["severity"], "warning");
    assert!(summary(f).contains("slow-graceful.js"), "{}", summary(f));
}

#[test]
fn slow_graceful_restart_543_shutdown_killed() {
    graceful(V5);
}

#[test]
fn slow_graceful_restart_704_shutdown_killed() {
    graceful(V7);
}

fn env_broken(version: &str) {
    let (_d, r) = run("env-broken-restart", version);
    assert_eq!(r.status, "errored");
    r.expect_kinds(&["restart-env-changed", "crash-loop-errored"]);
    let f = r.finding("restart-env-changed");
    assert_eq!(f["severity"], "error");
    assert!(
        summary(f).starts_with("`pm2 restart web --update-env` at ")
            && summary(f).contains("(added FEATURE_MODE)"),
        "{}",
        summary(f)
    );
    let cl = r.finding("crash-loop-errored");
    assert!(summary(cl).contains("FEATURE_MODE"), "{}", summary(cl));
}

#[test]
fn env_broken_restart_543_env_changed() {
    env_broken(V5);
}

#[test]
fn env_broken_restart_704_env_changed() {
    env_broken(V7);
}

fn overlapping(version: &str) {
    let (_d, r) = run("overlapping-restart", version);
    assert_eq!(r.status, "online");
    r.expect_kinds(&["overlapping-restart", "graceful-shutdown-killed"]);
    let f = r.finding("overlapping-restart");
    assert_eq!(f["severity"], "warning");
    assert!(
        summary(f).contains("the second one got the error \"Process with pid ")
            && summary(f).contains("already exists"),
        "{}",
        summary(f)
    );
}

#[test]
fn overlapping_restart_543() {
    overlapping(V5);
}

#[test]
fn overlapping_restart_704() {
    overlapping(V7);
}

fn crash_on_start(version: &str) {
    let (_d, r) = run("crash-on-start-restart", version);
    assert_eq!(r.status, "errored");
    r.expect_kinds(&["crash-loop-errored"]);
    assert_eq!(r.kinds(), ["crash-loop-errored"], "{}", r.lines());
    let f = r.finding("crash-loop-errored");
    assert!(
        summary(f).contains("exited with code 3")
            && summary(f).contains("configuration missing")
            && summary(f).contains("after `pm2 restart` at"),
        "{}",
        summary(f)
    );
}

#[test]
fn crash_on_start_restart_543_crash_loop() {
    crash_on_start(V5);
}

#[test]
fn crash_on_start_restart_704_crash_loop() {
    crash_on_start(V7);
}

fn crash_once(version: &str) {
    let (_d, r) = run("crash-once-restart", version);
    assert_eq!(r.status, "online");
    assert_eq!(r.kinds(), ["early-exit-after-restart"], "{}", r.lines());
    let f = r.finding("early-exit-after-restart");
    assert!(
        summary(f).contains("exited with code 2") && summary(f).contains("was up again at"),
        "{}",
        summary(f)
    );
}

#[test]
fn crash_once_restart_543_early_exit() {
    crash_once(V5);
}

#[test]
fn crash_once_restart_704_early_exit() {
    crash_once(V7);
}

#[test]
fn stop_timeout_704_errored_by_unreaped_zombie() {
    let (_d, r) = run("stop-timeout", V7);
    assert_eq!(r.status, "errored");
    r.expect_kinds(&["stop-timeout-errored"]);
    let f = r.finding("stop-timeout-errored");
    assert_eq!(f["severity"], "error");
    assert!(
        summary(f).contains("unreaped zombie")
            && summary(f).contains("slow-drain-child.js --child"),
        "{}",
        summary(f)
    );
}

/// pm2 5.4.3 waits only for the main pid: the stop never times out, the child outlives it.
#[test]
fn stop_timeout_543_child_outlives_stop_instead() {
    let (_d, r) = run("stop-timeout", V5);
    assert_eq!(r.status, "stopped");
    assert_eq!(r.kinds(), ["descendant-outlived-stop"], "{}", r.lines());
    assert!(
        summary(r.finding("descendant-outlived-stop")).starts_with("pm2 reported web:0 stopped")
    );
}

fn while_waiting(version: &str) {
    let (_d, r) = run("restart-while-waiting", version);
    assert_eq!(r.status, "online");
    r.expect_kinds(&["overlapping-restart", "early-exit-after-restart"]);
    let f = r.finding("overlapping-restart");
    assert!(
        summary(f).contains("while pm2 was waiting to restart it after a crash")
            && summary(f).contains("already exists")
            && summary(f).contains("pm2 started the app itself at"),
        "{}",
        summary(f)
    );
}

/// `pm2 restart` while pm2 waits out restart_delay after a crash: refused (the dead pid is
/// still on record), then the delayed restart goes ahead.
#[test]
fn restart_while_waiting_543() {
    while_waiting(V5);
}

#[test]
fn restart_while_waiting_704() {
    while_waiting(V7);
}

#[test]
fn well_behaved_restarted_many_times_543_no_findings() {
    let (_d, r) = run("well-behaved-restarts", V5);
    assert_eq!(r.status, "online");
    r.expect_quiet();
    assert!(r.findings().is_empty(), "{}", r.lines());
}

#[test]
fn well_behaved_restarted_many_times_704_no_findings() {
    let (_d, r) = run("well-behaved-restarts", V7);
    assert_eq!(r.status, "online");
    r.expect_quiet();
    assert!(r.findings().is_empty(), "{}", r.lines());
}
