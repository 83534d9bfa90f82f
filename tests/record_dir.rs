//! `record --dir`, the always-on flight recorder, against real pm2 daemons (5.4.3, 7.0.4):
//! incidents from live rules, the disk budget under a flood, following the daemon across
//! `pm2 kill`, stopping and crashing, a full disk, and two daemons at once.

#[path = "support/pm2.rs"]
mod pm2;
#[path = "support/recorder.rs"]
mod recorder;
#[path = "support/tmpfs.rs"]
mod tmpfs;

use pm2::Pm2;
use recorder::Recorder;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tmpfs::Tmpfs;

const V5: &str = "5.4.3";
const V7: &str = "7.0.4";

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(".pcapng")
        })
        .collect();
    v.sort();
    v
}

fn segments_bytes(dir: &Path) -> u64 {
    files(dir, "segment-")
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `replay PATH --json [args]`, parsed; a truncated last record (a segment being written)
/// is allowed, damage is not.
fn replay(path: &Path, args: &[&str]) -> Value {
    let mut a = vec!["replay", path.to_str().unwrap(), "--json"];
    a.extend_from_slice(args);
    let out = recorder::run(&a);
    assert!(
        out.status.success(),
        "replay {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

fn kinds(doc: &Value) -> Vec<String> {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn requests<'a>(doc: &'a Value, method: &str) -> Vec<&'a Value> {
    doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["type"] == "request_asked"
                && e["description"]
                    .as_str()
                    .is_some_and(|d| d.split_whitespace().next() == Some(method))
        })
        .collect()
}

/// A restart that leaves the app errored yields one incident file; its replay names the
/// finding and holds what happened before the restart; the journal line and the command
/// run.
fn failing_restart_incident(version: &str) {
    let pm2 = Pm2::start(version);
    // min_uptime 5 s (an ecosystem file: the CLI has no flag for it), so that a loaded
    // machine, where a failing start takes longer than the default second, still counts
    // every failed start as unstable.
    let eco = pm2.home().parent().unwrap().join("web.json");
    std::fs::write(
        &eco,
        serde_json::json!({"apps": [{
            "name": "web",
            "script": pm2::app_path("env-sensitive.js"),
            "max_restarts": 5,
            "min_uptime": 5000,
            "env": {"PORT": pm2::free_port().to_string()},
        }]})
        .to_string(),
    )
    .unwrap();
    pm2::assert_ok(
        &pm2.cmd(&["start", eco.to_str().unwrap()]),
        &["start", "web.json"],
    );
    pm2.wait_for_status("web", "online", Duration::from_secs(10))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let dir = pm2.home().parent().unwrap().join("flight");
    let hook_out = pm2.home().parent().unwrap().join("hook");
    let hook = format!(
        "cat > {0}.json; printf '%s\\n%s\\n' \"$PM2_TRACE_INCIDENT_FILE\" \"$PM2_TRACE_SUMMARY\" > {0}",
        hook_out.display()
    );
    let rec = Recorder::start_dir(
        &[pm2.home()],
        &dir,
        &["--after", "1s", "--on-incident", &hook],
    );
    // Something before the restart: a listing.
    assert!(pm2.cmd(&["jlist"]).status.success());
    std::thread::sleep(Duration::from_millis(300));
    let out = pm2.cmd_env(
        &[("FEATURE_MODE", "broken")],
        &["restart", "web", "--update-env"],
    );
    assert!(out.status.success());
    pm2.wait_for_status("web", "errored", Duration::from_secs(30))
        .unwrap();
    wait_until("an incident file", Duration::from_secs(40), || {
        !files(&dir, "incident-").is_empty() && hook_out.exists()
    });
    let stdout_path = rec.stdout_path.clone();
    let status = rec.stop();
    assert!(status.success());
    let incidents = files(&dir, "incident-");
    let stdout = std::fs::read_to_string(stdout_path).unwrap();
    eprintln!("{stdout}\n{incidents:?}");
    assert_eq!(
        incidents.len(),
        1,
        "one incident for one failure: {incidents:?}"
    );
    assert!(
        incidents[0].to_string_lossy().ends_with("-web.pcapng"),
        "{incidents:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&incidents[0])
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("pm2-trace: incident: ERROR"))
        .unwrap_or_else(|| panic!("one journal line per incident: {stdout}"));
    assert!(line.contains("app=web"), "{line}");
    let doc = replay(&incidents[0], &[]);
    let k = kinds(&doc);
    assert!(
        k.iter()
            .any(|k| k == "crash-loop-errored" || k == "restart-env-changed"),
        "the incident's replay names the finding: {k:?}"
    );
    // Events from before the restart: the listing, and the restart request itself.
    let restart = requests(&doc, "restartProcessId");
    assert!(!restart.is_empty(), "the restart is in the incident");
    let listing = requests(&doc, "getMonitorData");
    assert!(
        !listing.is_empty(),
        "the listing before the restart is in the incident"
    );
    let (a, b) = (
        listing[0]["t"].as_u64().unwrap(),
        restart[0]["t"].as_u64().unwrap(),
    );
    assert!(a < b, "the listing ({a}) comes before the restart ({b})");
    // The command got the file, the summary and the finding's JSON.
    let hook_text = std::fs::read_to_string(&hook_out).unwrap();
    let mut hl = hook_text.lines();
    assert_eq!(hl.next(), Some(incidents[0].to_str().unwrap()));
    assert!(hl.next().unwrap().contains("web"), "{hook_text}");
    let finding: Value =
        serde_json::from_slice(&std::fs::read(format!("{}.json", hook_out.display())).unwrap())
            .unwrap();
    assert!(finding["kind"].is_string() && finding["evidence"].is_array());
    // The whole directory replays too, and pm2 works.
    let all = replay(&dir, &[]);
    assert!(!requests(&all, "restartProcessId").is_empty());
    assert!(pm2.cmd(&["ls"]).status.success());
    assert_eq!(pm2.god_daemons_for_home().len(), 1);
}

#[test]
fn failing_restart_writes_an_incident_543() {
    failing_restart_incident(V5);
}

#[test]
fn failing_restart_writes_an_incident_704() {
    failing_restart_incident(V7);
}

/// getMonitorData traffic many times --keep: the directory stays within its bound (plus
/// one segment) while it flows, the incident written before is untouched, and every
/// segment left replays.
#[test]
fn a_flood_keeps_the_budget_and_the_incidents() {
    let pm2 = Pm2::start(V7);
    for i in 0..4 {
        pm2.start_app(&format!("w{i}"), "well-behaved.js", pm2::free_port(), &[]);
    }
    pm2.start_app(
        "bad",
        "crash-on-start.js",
        pm2::free_port(),
        &["--max-restarts", "3"],
    );
    let dir = pm2.home().parent().unwrap().join("flight");
    let keep: u64 = 1 << 20;
    let segment = keep / 16;
    let rec = Recorder::start_dir(
        &[pm2.home()],
        &dir,
        &["--keep", "1MB", "--after", "1s", "--proc", "off"],
    );
    pm2.cmd(&["restart", "bad"]);
    pm2.wait_for_status("bad", "errored", Duration::from_secs(30))
        .unwrap();
    wait_until("an incident file", Duration::from_secs(40), || {
        !files(&dir, "incident-").is_empty()
    });
    let kept: Vec<(PathBuf, Vec<u8>)> = files(&dir, "incident-")
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    // The flood: getMonitorData straight through the proxy, as fast as it answers.
    let mut max_seen = 0;
    let start = Instant::now();
    let mut calls = 0;
    let first_seq = files(&dir, "segment-").len();
    loop {
        pm2.monitor_data()
            .expect("getMonitorData through the proxy");
        calls += 1;
        if calls % 20 == 0 {
            max_seen = max_seen.max(segments_bytes(&dir));
            let last = files(&dir, "segment-").last().cloned().unwrap();
            let seq: u64 = last.to_string_lossy().rsplit('-').next().unwrap()[..6]
                .parse()
                .unwrap();
            // Written so far, in segments: many times the budget.
            if seq * segment > 6 * keep || start.elapsed() > Duration::from_secs(120) {
                eprintln!("{calls} calls, {seq} segments started, {first_seq} before the flood");
                assert!(
                    seq * segment > 6 * keep,
                    "the flood did not reach 6x --keep in 120 s"
                );
                break;
            }
        }
    }
    let stderr_path = rec.stderr_path.clone();
    // The recorder writes what it has taken before it exits; in a debug build that backlog
    // takes a while (a hang guard, not a timing check).
    let stopping = Instant::now();
    let mut rec = rec;
    rec.signal(libc::SIGINT);
    assert!(rec.wait(Duration::from_secs(240)).success());
    eprintln!("the recorder stopped {:?} after SIGINT", stopping.elapsed());
    let total = segments_bytes(&dir);
    eprintln!(
        "largest directory seen {max_seen} bytes, at the end {total}; bound {keep} + {segment}"
    );
    // The writer's buffer (256 KiB) and one record may pass a segment's size.
    let slack = segment + (256 << 10) + (64 << 10);
    assert!(max_seen <= keep + slack, "{max_seen} > {keep} + {slack}");
    assert!(total <= keep + slack);
    for (p, b) in &kept {
        assert!(
            std::fs::read(p).ok().as_ref() == Some(b),
            "{} changed or vanished",
            p.display()
        );
    }
    for seg in files(&dir, "segment-") {
        let doc = replay(&seg, &[]);
        assert!(!doc["events"].as_array().unwrap().is_empty());
    }
    let err = std::fs::read_to_string(stderr_path).unwrap();
    eprintln!("{err}");
    assert!(pm2.cmd(&["ls"]).status.success());
}

/// `pm2 kill`, then a new daemon: the recorder lets go, holds nothing while no daemon runs,
/// interposes on the new one, and a later restart is in the same directory. One daemon
/// at a time, pm2 working throughout.
fn follows_the_daemon(version: &str) {
    let pm2 = Pm2::start(version);
    pm2.start_app("web", "well-behaved.js", pm2::free_port(), &[]);
    let dir = pm2.home().parent().unwrap().join("flight");
    let rec = Recorder::start_dir(&[pm2.home()], &dir, &["--proc", "off"]);
    let old_pid = pm2.daemon_pid().unwrap();
    assert!(pm2.cmd(&["kill"]).status.success());
    wait_until("the recorder lets go", Duration::from_secs(10), || {
        rec.stderr().contains("waiting for the next daemon")
    });
    // Nothing of ours is left for a pm2 command to mistake for a daemon.
    assert!(!recorder::aside(pm2.home()).exists());
    assert!(
        !pm2.home().join("rpc.sock").exists(),
        "rpc.sock is gone with its daemon, not held by the recorder"
    );
    assert!(
        pm2.god_daemons_for_home().is_empty(),
        "the recorder started no daemon"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        pm2.god_daemons_for_home().is_empty(),
        "still none after 1.5 s"
    );
    // The next pm2 command starts a new daemon, as always.
    assert!(pm2.cmd(&["ping"]).status.success());
    let appeared = Instant::now();
    wait_until(
        "interposed on the new daemon",
        Duration::from_secs(10),
        || recorder::aside(pm2.home()).exists(),
    );
    eprintln!(
        "interposed again {:?} after `pm2 ping` returned",
        appeared.elapsed()
    );
    let new_pid = pm2.daemon_pid().unwrap();
    assert_ne!(new_pid, old_pid);
    pm2.start_app("web2", "well-behaved.js", pm2::free_port(), &[]);
    assert!(pm2.cmd(&["restart", "web2"]).status.success());
    assert_eq!(pm2.god_daemons_for_home(), vec![new_pid], "one daemon");
    std::thread::sleep(Duration::from_millis(500));
    let stderr_path = rec.stderr_path.clone();
    assert!(rec.stop().success());
    assert!(pm2.cmd(&["ls"]).status.success());
    assert_eq!(pm2.god_daemons_for_home(), vec![new_pid]);
    let doc = replay(&dir, &[]);
    let text = doc["events"].to_string();
    assert!(text.contains("killMe"), "the kill is recorded");
    assert!(
        text.contains("no PM2 daemon was recorded for")
            && text.contains(&format!("pm2 version {version}")),
        "the gap and the new version are noted: {}",
        std::fs::read_to_string(stderr_path).unwrap()
    );
    let restarts = requests(&doc, "restartProcessId");
    assert!(
        !restarts.is_empty(),
        "the restart on the new daemon is recorded"
    );
    // Two sessions: two segments at least.
    assert!(files(&dir, "segment-").len() >= 2);
}

#[test]
fn follows_the_daemon_across_pm2_kill_543() {
    follows_the_daemon(V5);
}

#[test]
fn follows_the_daemon_across_pm2_kill_704() {
    follows_the_daemon(V7);
}

/// Every segment replays up to its last whole record (exit 0, at most a truncation note).
fn all_segments_readable(dir: &Path) {
    let segs = files(dir, "segment-");
    assert!(!segs.is_empty());
    for s in segs {
        let out = recorder::run(&["replay", s.to_str().unwrap(), "--json"]);
        assert!(
            out.status.success(),
            "{}: {}",
            s.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn sigterm_and_sigkill_leave_pm2_working_and_segments_readable() {
    let pm2 = Pm2::start(V7);
    pm2.start_app("web", "well-behaved.js", pm2::free_port(), &[]);
    let dir = pm2.home().parent().unwrap().join("flight");
    // SIGTERM: a clean end.
    let rec = Recorder::start_dir(&[pm2.home()], &dir, &[]);
    assert!(pm2.cmd(&["restart", "web"]).status.success());
    rec.signal(libc::SIGTERM);
    let mut rec = rec;
    assert!(
        rec.wait(Duration::from_secs(20)).success(),
        "{}",
        rec.stderr()
    );
    assert!(!recorder::aside(pm2.home()).exists());
    assert!(pm2.cmd(&["ls"]).status.success());
    all_segments_readable(&dir);
    // SIGKILL: the guardian puts the socket back.
    let mut rec = Recorder::start_dir(&[pm2.home()], &dir, &[]);
    assert!(pm2.cmd(&["restart", "web"]).status.success());
    // What is written before the kill (the recorder flushes every 0.5 s) survives it: the
    // restart is on disk before the kill (the writer is in the idle class: on a busy
    // machine, long after the restart).
    wait_until(
        "the second restart on disk",
        Duration::from_secs(60),
        || requests(&replay(&dir, &[]), "restartProcessId").len() >= 2,
    );
    rec.signal(libc::SIGKILL);
    rec.wait(Duration::from_secs(10));
    wait_until(
        "the guardian restores rpc.sock",
        Duration::from_secs(5),
        || !recorder::aside(pm2.home()).exists(),
    );
    assert!(pm2.cmd(&["ls"]).status.success());
    assert_eq!(pm2.god_daemons_for_home().len(), 1);
    all_segments_readable(&dir);
    // Both runs are in the directory, in one stream.
    let doc = replay(&dir, &[]);
    assert!(requests(&doc, "restartProcessId").len() >= 2);
}

/// A disk that fills up (other files take the space, not the recorder's budget): pm2 keeps
/// working, the recorder says so, and every segment reads up to its last whole record.
#[test]
fn a_full_disk_leaves_pm2_working_and_segments_readable() {
    let pm2 = Pm2::start(V7);
    pm2.start_app("web", "well-behaved.js", pm2::free_port(), &[]);
    let dir = pm2.home().parent().unwrap().join("flight");
    // The recorder's own budget (2 MB, segments of 128 KiB) fits the 8 MB disk many times
    // less than the filler: the space is taken by someone else, not by the recording
    // itself (with a budget larger than the disk, its own segments filled it on a quiet
    // machine and freeing the filler left no room).
    let _fs = Tmpfs::mount(&dir, "8m");
    let rec = Recorder::start_dir(&[pm2.home()], &dir, &["--keep", "2MB", "--proc", "off"]);
    // The recording has begun its first segment (its threads are in the idle class: on a
    // busy machine that comes well after the interposition) before the disk fills.
    wait_until(
        "the first segment's header",
        Duration::from_secs(60),
        || {
            files(&dir, "segment-")
                .iter()
                .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        },
    );
    // Someone else fills the disk.
    let filler = dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    // More traffic than the disk has room for, through the proxy.
    for i in 0..300 {
        pm2.monitor_data().expect("pm2 answers on a full disk");
        if i % 50 == 0 {
            assert!(
                pm2.cmd(&["jlist"]).status.success(),
                "pm2 works on a full disk"
            );
        }
    }
    wait_until(
        "the recorder says the disk is full",
        Duration::from_secs(30),
        || {
            let e = rec.stderr();
            e.contains("No space left") || e.contains("write failed")
        },
    );
    // Space again: a new segment is started within RETRY_AFTER (10 s) and a restart is
    // recorded.
    let _ = std::fs::remove_file(&filler);
    std::thread::sleep(Duration::from_secs(12));
    assert!(pm2.cmd(&["restart", "web"]).status.success());
    std::thread::sleep(Duration::from_millis(1500));
    let stderr_path = rec.stderr_path.clone();
    assert!(rec.stop().success());
    let err = std::fs::read_to_string(stderr_path).unwrap();
    eprintln!("{err}");
    let doc = replay(&dir, &[]);
    assert!(
        !requests(&doc, "restartProcessId").is_empty(),
        "recording went on once there was space"
    );
    assert!(
        doc["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.to_string().contains(" not recorded from ")),
        "the next segment says what could not be recorded"
    );
    all_segments_readable(&dir);
    assert!(pm2.cmd(&["ls"]).status.success());
}

/// Two daemons recorded at once, each its own stream in one directory.
#[test]
fn two_daemons_at_once() {
    let a = Pm2::start(V5);
    let b = Pm2::start(V7);
    a.start_app("alpha", "well-behaved.js", pm2::free_port(), &[]);
    b.start_app("beta", "well-behaved.js", pm2::free_port(), &[]);
    let dir = a.home().parent().unwrap().join("flight");
    let rec = Recorder::start_dir(&[a.home(), b.home()], &dir, &["--proc", "off"]);
    assert!(a.cmd(&["restart", "alpha"]).status.success());
    assert!(b.cmd(&["restart", "beta"]).status.success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(rec.stop().success());
    // Without --stream the directory names its streams.
    let out = recorder::run(&["replay", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--stream"), "{err}");
    for (pm2, app) in [(&a, "alpha"), (&b, "beta")] {
        let stream = pm2_trace::capture::dir::stream_name(pm2.home());
        let doc = replay(&dir, &["--stream", &stream]);
        let restarts = requests(&doc, "restartProcessId");
        assert!(!restarts.is_empty(), "{stream}");
        assert!(doc["events"].to_string().contains(app));
        assert_eq!(doc["capture"]["pm2_version"], pm2.version());
    }
}

/// --since/--until read only the segments of the window.
#[test]
fn a_window_reads_only_its_segments() {
    let pm2 = Pm2::start(V7);
    pm2.start_app("web", "well-behaved.js", pm2::free_port(), &[]);
    let dir = pm2.home().parent().unwrap().join("flight");
    // Tiny segments: every jlist reply starts a new one.
    let rec = Recorder::start_dir(&[pm2.home()], &dir, &["--keep", "1MB", "--proc", "off"]);
    // Before the window: pings (the pm2 CLI itself never sends one for `restart`).
    for _ in 0..30 {
        pm2.rpc("ping", serde_json::json!([{}])).unwrap();
        assert!(pm2.cmd(&["jlist"]).status.success());
    }
    std::thread::sleep(Duration::from_millis(1100));
    let mid = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(1100));
    assert!(pm2.cmd(&["restart", "web"]).status.success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(rec.stop().success());
    let since = mid.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let doc = replay(&dir, &["--since", &since]);
    assert!(!requests(&doc, "restartProcessId").is_empty());
    assert!(
        requests(&doc, "ping").is_empty(),
        "nothing from before --since"
    );
    let doc = replay(&dir, &["--until", &since]);
    assert!(requests(&doc, "restartProcessId").is_empty());
    assert_eq!(requests(&doc, "ping").len(), 30);
}
