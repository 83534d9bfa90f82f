//! Faults while recording: the daemon goes away, the disk fills up, secrets in the
//! environment. pm2 keeps working in every case and nothing secret reaches the capture.

#[path = "support/pm2.rs"]
mod pm2;
#[path = "support/recorder.rs"]
mod recorder;

use pm2::Pm2;
use recorder::Recorder;
use std::time::{Duration, Instant};

#[test]
fn pm2_kill_while_recording_stops_the_recorder_cleanly() {
    let pm2 = Pm2::start("7.0.4");
    pm2.start_app("web", "well-behaved.js", pm2::free_port(), &[]);
    let cap = pm2.home().join("kill.bin");
    let mut rec = Recorder::start(pm2.home(), &cap, &["--quiet"]);
    let killed = Instant::now();
    let out = pm2.cmd(&["kill"]);
    assert!(
        out.status.success(),
        "pm2 kill through the proxy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = rec.wait(Duration::from_secs(10));
    let noticed = killed.elapsed();
    eprintln!("recorder stopped {noticed:?} after `pm2 kill` began");
    assert!(status.success(), "{}", rec.stderr());
    assert!(
        rec.stderr().contains("exited"),
        "says why it stopped: {}",
        rec.stderr()
    );
    assert!(!recorder::aside(pm2.home()).exists());
    // pm2 works again (it starts a fresh daemon, as it would after any `pm2 kill`).
    assert!(pm2.cmd(&["ls"]).status.success());
    assert_eq!(pm2.god_daemons_for_home().len(), 1, "one daemon, not two");
    let text = recorder::replay_text(&cap);
    assert!(
        text.contains("killMe"),
        "the kill request is on the record:\n{text}"
    );
}

#[test]
fn a_full_disk_stops_the_capture_not_the_traffic() {
    let pm2 = Pm2::start("7.0.4");
    pm2.start_app("web", "well-behaved.js", pm2::free_port(), &[]);
    let cap = pm2.home().join("full.bin");
    // 64 KiB: a few getMonitorData replies fill it.
    let rec = Recorder::start_limited(
        pm2.home(),
        &cap,
        &["--quiet", "--proc", "off"],
        Some(64 * 1024),
    );
    for _ in 0..15 {
        assert!(
            pm2.cmd(&["jlist"]).status.success(),
            "pm2 works while the capture cannot be written"
        );
    }
    let stderr_path = rec.stderr_path.clone();
    assert!(rec.stop().success());
    let err = std::fs::read_to_string(stderr_path).unwrap();
    assert!(
        err.contains("stopped early") || err.contains("recording stopped"),
        "the user is told: {err}"
    );
    assert!(std::fs::metadata(&cap).unwrap().len() <= 64 * 1024);
    let doc = recorder::replay_json(&cap);
    let events = doc["events"].as_array().unwrap();
    let last = events.last().expect("events before the marker");
    assert_eq!(
        last["type"], "recording_stopped",
        "the capture ends with the stop marker: {last}"
    );
    assert!(
        events.iter().any(|e| e["type"] == "request_asked"),
        "what came before the marker is there"
    );
    assert!(pm2.cmd(&["ls"]).status.success());
}

#[test]
fn secrets_never_reach_the_capture() {
    let pm2 = Pm2::start("7.0.4");
    let app_secret = "app-secret-Zx81kq-in-the-apps-env";
    let caller_secret = "caller-secret-Pq03mv-in-the-cli-env";
    let port = pm2::free_port().to_string();
    let out = pm2.cmd_env(
        &[
            ("DB_PASSWORD", app_secret),
            ("FEATURE_MODE", "ok"),
            ("PORT", &port),
        ],
        &[
            "start",
            pm2::app_path("env-sensitive.js").to_str().unwrap(),
            "--name",
            "web",
        ],
    );
    assert!(out.status.success());
    pm2.wait_for_status("web", "online", Duration::from_secs(15))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let cap = pm2.home().join("secrets.bin");
    let rec = Recorder::start(pm2.home(), &cap, &["--quiet"]);
    let out = pm2.cmd_env(
        &[
            ("DB_PASSWORD", app_secret),
            ("API_TOKEN", caller_secret),
            ("FEATURE_MODE", "broken"),
            ("PORT", &port),
        ],
        &["restart", "web", "--update-env"],
    );
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(2500));
    assert!(rec.stop().success());
    let bytes = std::fs::read(&cap).unwrap();
    for secret in [app_secret, caller_secret] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} appears in the capture"
        );
    }
    let has = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        has("API_TOKEN") && has("DB_PASSWORD"),
        "keys stay visible in the capture"
    );
    assert!(has("<redacted:"), "values are replaced by keyed hashes");
    let doc = recorder::replay_json(&cap);
    assert!(
        doc.to_string().contains("API_TOKEN"),
        "the replay names the keys of the restart's env"
    );
}

#[test]
fn a_daemon_crash_while_recording_stops_the_recorder_and_pm2_recovers() {
    let pm2 = Pm2::start("7.0.4");
    pm2.start_app("web", "well-behaved.js", pm2::free_port(), &[]);
    let cap = pm2.home().join("crash.bin");
    let mut rec = Recorder::start(pm2.home(), &cap, &["--quiet"]);
    let daemon = pm2.daemon_pid().expect("daemon pid");
    let crashed = Instant::now();
    // SAFETY: killing the test's own throw-away daemon.
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    let status = rec.wait(Duration::from_secs(10));
    eprintln!(
        "recorder stopped {:?} after the daemon was SIGKILLed",
        crashed.elapsed()
    );
    assert!(status.success(), "{}", rec.stderr());
    assert!(rec.stderr().contains("exited"), "{}", rec.stderr());
    assert!(!recorder::aside(pm2.home()).exists());
    // pm2 recovers as it would from any daemon crash: one new daemon.
    assert!(pm2.cmd(&["ls"]).status.success());
    assert_eq!(pm2.god_daemons_for_home().len(), 1);
    let text = recorder::replay_text(&cap);
    assert!(text.contains("exited"), "the crash is on the record");
}
