//! Issue 2 end to end: record a real `pm2 restart` through the real binary, replay it, and
//! find the restart in the replay; the live output and the replay tell the same story.

#[path = "support/pm2.rs"]
mod pm2;
#[path = "support/recorder.rs"]
mod recorder;

use pm2::Pm2;
use recorder::Recorder;
use serde_json::Value;
use std::time::Duration;

fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

fn record_and_replay_a_restart(version: &str) {
    let pm2 = Pm2::start(version);
    pm2.start_app("web", "well-behaved.js", pm2::free_port(), &[]);
    pm2.wait_for_status("web", "online", Duration::from_secs(15))
        .unwrap();
    // A restart within min_uptime of the start counts as unstable; let the app settle.
    std::thread::sleep(Duration::from_millis(1200));
    let cap = pm2.home().join("restart.bin");
    let rec = Recorder::start(pm2.home(), &cap, &[]);
    let out = pm2.cmd_ok(&["restart", "web"]);
    assert!(out.status.success());
    pm2.wait_for_status("web", "online", Duration::from_secs(15))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let live = {
        let r = rec;
        let path = r.stdout_path.clone();
        assert!(r.stop().success());
        std::fs::read_to_string(path).unwrap()
    };
    let new_pid = pm2
        .jlist()
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "web")
        .unwrap()["pid"]
        .as_i64()
        .unwrap();

    let doc = recorder::replay_json(&cap);
    assert_eq!(doc["capture"]["pm2_version"], version);
    assert_eq!(
        doc["findings"].as_array().map(Vec::len),
        Some(0),
        "a clean restart has no findings: {}",
        doc["findings"]
    );
    let events = doc["events"].as_array().unwrap();
    let asked = of_type(events, "request_asked");
    let answered = of_type(events, "request_answered");
    let restart = asked
        .iter()
        .find(|e| e["call"]["call"] == "restartProcessId")
        .expect("restartProcessId asked");
    assert_eq!(restart["app"]["name"], "web");
    let reply = answered
        .iter()
        .find(|e| e["method"] == "restartProcessId" && e["id"] == restart["id"])
        .expect("restartProcessId answered");
    assert_eq!(
        reply["new_pid"].as_i64(),
        Some(new_pid),
        "the reply names the new pid"
    );
    assert!(reply["latency_ns"].as_u64().unwrap() > 0);
    assert!(
        asked
            .iter()
            .any(|e| e["call"]["call"] == "notifyByProcessId"),
        "notifyByProcessId asked"
    );
    let bus: Vec<_> = of_type(events, "bus");
    assert!(
        bus.iter()
            .any(|e| e["description"].as_str().unwrap().contains("online")),
        "bus online event"
    );
    let daemon: Vec<String> = of_type(events, "daemon")
        .iter()
        .map(|e| e["log"]["line"].as_str().unwrap_or("").to_owned())
        .collect();
    for line in ["stopping", "exited", "starting", "online"] {
        assert!(
            daemon.iter().any(|l| l == line),
            "daemon log line {line} in {daemon:?}"
        );
    }
    let procs: Vec<&str> = of_type(events, "proc")
        .iter()
        .map(|e| e["description"].as_str().unwrap())
        .collect();
    assert!(
        procs
            .iter()
            .any(|d| d.starts_with("exit pid") && d.contains("web:0")),
        "the old process's exit from the OS: {procs:?}"
    );

    // The live run and the replay print the same timeline and findings.
    let replayed = recorder::replay_text(&cap);
    assert_eq!(live, replayed, "live output and replay differ");
}

#[test]
fn record_and_replay_a_restart_7() {
    record_and_replay_a_restart("7.0.4");
}

#[test]
fn record_and_replay_a_restart_5() {
    record_and_replay_a_restart("5.4.3");
}

#[test]
fn listen_mode_leaves_the_daemon_socket_alone() {
    let pm2 = Pm2::start("7.0.4");
    let before = std::fs::metadata(pm2.rpc_sock())
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    let listen = pm2.home().join("trace.sock");
    let cap = pm2.home().join("listen.bin");
    let rec = Recorder::start(
        pm2.home(),
        &cap,
        &["--quiet", "--listen", listen.to_str().unwrap()],
    );
    assert!(
        !recorder::aside(pm2.home()).exists(),
        "rpc.sock is not touched in --listen mode"
    );
    let out = pm2.cmd_env(
        &[("PM2_DAEMON_RPC_PORT", listen.to_str().unwrap())],
        &["ls"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(rec.stop().success());
    assert!(!listen.exists(), "the listen socket is removed");
    let after = std::fs::metadata(pm2.rpc_sock())
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    assert_eq!(before, after);
    let doc = recorder::replay_json(&cap);
    let events = doc["events"].as_array().unwrap();
    assert!(of_type(events, "request_asked")
        .iter()
        .any(|e| e["call"]["call"] == "getMonitorData"));
    assert_eq!(pm2.god_daemons_for_home().len(), 1);
}

#[test]
fn the_pidfd_fallback_records_the_same_exit_and_says_how_it_knows() {
    let pm2 = Pm2::start("7.0.4");
    pm2.start_app("web", "well-behaved.js", pm2::free_port(), &[]);
    pm2.wait_for_status("web", "online", Duration::from_secs(15))
        .unwrap();
    let old_pid = pm2.jlist()[0]["pid"].as_i64().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let cap = pm2.home().join("pidfd.bin");
    let rec = Recorder::start(pm2.home(), &cap, &["--quiet", "--proc", "pidfd"]);
    pm2.cmd_ok(&["restart", "web"]);
    pm2.wait_for_status("web", "online", Duration::from_secs(15))
        .unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    assert!(rec.stop().success());
    let doc = recorder::replay_json(&cap);
    let mode = doc["capture"]["proc_mode"].as_str().unwrap();
    assert!(mode.starts_with("pidfd"), "{mode}");
    assert!(
        mode.contains("not seen") || mode.contains("unknown"),
        "the mode says what it cannot know: {mode}"
    );
    let events = doc["events"].as_array().unwrap();
    let exit = of_type(events, "proc")
        .into_iter()
        .find(|e| {
            e["event"]["kind"] == "exit" && e["event"]["who"]["pid"].as_i64() == Some(old_pid)
        })
        .unwrap_or_else(|| panic!("no exit of the old pid {old_pid}"));
    assert_eq!(exit["event"]["via"], "pidfd");
    // well-behaved.js exits 0 on SIGINT. The daemon reaps its child, so PIDFD_INFO_EXIT
    // (Linux 6.15+) gives that status; on older kernels it is `unknown`, with the reason.
    let status = &exit["event"]["status"];
    assert!(
        (status["kind"] == "code" && status["code"] == 0)
            || (status["kind"] == "unknown" && status["why"].is_string()),
        "{status}"
    );
}
