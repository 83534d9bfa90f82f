//! Cluster-mode and wait_ready scenarios on real pm2 daemons, recorded with the real
//! `pm2-trace record`: reloads of a 2-instance cluster app (a release that crashes at start,
//! a clean one, one that says `ready`) and restarts of an app under `--wait-ready` that never
//! says `ready` (alive, or crashing at start). Shared by tests/cluster_live.rs and the
//! capture maker (tests/findings_captures.rs, `make_captures`).
//!
//! Include after the harness and scenarios.rs:
//! ```ignore
//! #[path = "support/pm2.rs"] mod pm2;
//! #[path = "support/recorder.rs"] mod recorder;
//! #[path = "findings_support/scenarios.rs"] mod scenarios;
//! #[path = "findings_support/cluster.rs"] mod cluster;
//! ```
//!
//! The app is tests/apps/release.js: it serves on PORT unless the file named by RELEASE_FILE
//! says `broken` (then it exits 1 at start); with READY=send it sends `ready` once listening.
//! Waiting polls the daemon's own socket (set aside by the recorder): not in the capture.
#![allow(dead_code)]

use super::pm2::{self, Pm2};
use super::recorder::{self, Recorder};
use super::scenarios::Run;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// min_uptime of the scenarios' app (ms).
pub const MIN_UPTIME_MS: u64 = 5000;

/// Every cluster/wait_ready scenario, by name.
pub const ALL: &[&str] = &[
    "reload-crash-cluster",
    "reload-clean-cluster",
    "reload-ready-cluster",
    "graceful-reload-cluster",
    "wait-ready-timeout",
    "wait-ready-dead",
];

/// What a scenario does, in words (for captures/README.md). The app is started from an
/// ecosystem file with `min_uptime: 5000` and the settings named here.
pub fn describe(name: &str) -> &'static str {
    match name {
        "reload-crash-cluster" => {
            "release.js as web, 2 instances in cluster mode, online 1.5 s; write `broken` into \
             its RELEASE_FILE (the next release crashes at start), then `pm2 reload web`"
        }
        "reload-clean-cluster" => {
            "release.js as web, 2 instances in cluster mode, online 1.5 s, then `pm2 reload web`"
        }
        "reload-ready-cluster" => {
            "release.js as web with READY=send, 2 instances in cluster mode, wait_ready, \
             listen_timeout 3000, online 1.5 s, then `pm2 reload web` (each new worker sends \
             `ready`)"
        }
        "graceful-reload-cluster" => {
            "release.js as web, 2 instances in cluster mode, online 1.5 s, then \
             `softReloadProcessId` for each instance through pm2's own node module (the CLI has \
             no graceful reload); the old worker leaves on pm2's `shutdown` message"
        }
        "wait-ready-timeout" => {
            "release.js as web (fork mode), wait_ready, listen_timeout 3000 (it never sends \
             `ready`), online 1.5 s, then `pm2 restart web`"
        }
        "wait-ready-dead" => {
            "release.js as web (fork mode), wait_ready, listen_timeout 3000, online 1.5 s; write \
             `broken` into its RELEASE_FILE, then `pm2 restart web`"
        }
        _ => "",
    }
}

/// The daemon's view of every instance of app `name`, asked on the daemon's own socket.
fn instances(p: &Pm2, name: &str) -> Vec<Value> {
    let aside = recorder::aside(p.home());
    let sock = if aside.exists() { aside } else { p.rpc_sock() };
    let Ok(r) = pm2::rpc_call(
        &sock,
        "getMonitorData",
        json!([{}]),
        Duration::from_secs(10),
    ) else {
        return Vec::new();
    };
    r.get(0)
        .and_then(Value::as_array)
        .map(|l| l.iter().filter(|x| x["name"] == name).cloned().collect())
        .unwrap_or_default()
}

fn status(v: &Value) -> &str {
    v["pm2_env"]["status"].as_str().unwrap_or("?")
}

fn restart_time(v: &Value) -> u64 {
    v["pm2_env"]["restart_time"].as_u64().unwrap_or(0)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Online, and spawned (`pm_uptime`) more than 1.3 s ago.
fn up(v: &Value) -> bool {
    status(v) == "online"
        && now_ms() - v["pm2_env"]["pm_uptime"].as_i64().unwrap_or(i64::MAX) > 1300
}

/// Whether every instance of `web` (`n` of them) satisfies `pred` within `timeout`.
fn try_wait_all(p: &Pm2, n: usize, timeout: Duration, pred: impl Fn(&Value) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let all = instances(p, "web");
        if all.len() == n && all.iter().all(&pred) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until every instance of `web` satisfies `pred` (and there are `n` of them).
fn wait_all(p: &Pm2, what: &str, n: usize, timeout: Duration, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let all = instances(p, "web");
        if all.len() == n && all.iter().all(&pred) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "pm2 {}: web not {what} within {timeout:?}: {:?}\n{}",
                p.version(),
                all.iter()
                    .map(|a| (status(a).to_owned(), restart_time(a)))
                    .collect::<Vec<_>>(),
                p.log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `softReloadProcessId` for instances `0..n`, one after the other, through the pm2 node
/// module of the daemon's version (what `pm2 reload` does with reloadProcessId).
fn soft_reload(p: &Pm2, n: u64) -> std::process::Output {
    let module = p
        .bin()
        .parent()
        .and_then(Path::parent)
        .expect("node_modules/pm2 of the pm2 CLI")
        .to_owned();
    let script = format!(
        "const pm2 = require({module:?});\n\
         pm2.connect((err) => {{\n\
           if (err) {{ console.error(err); process.exit(2); }}\n\
           const next = (id) => {{\n\
             if (id >= {n}) {{ pm2.disconnect(); console.log('reloaded'); return; }}\n\
             pm2.Client.executeRemote('softReloadProcessId', {{ id, env: {{}} }}, (e) => {{\n\
               if (e) {{ console.error(e.message || e); process.exit(1); }}\n\
               next(id + 1);\n\
             }});\n\
           }};\n\
           next(0);\n\
         }});\n",
        module = module.to_str().expect("utf-8 path")
    );
    let file = p.user_home().join("soft-reload.js");
    std::fs::write(&file, script).expect("script");
    let mut c = std::process::Command::new(p.node());
    c.arg(&file)
        .env("PM2_HOME", p.home())
        .env("HOME", p.user_home())
        .env("PM2_DISCRETE_MODE", "true");
    pm2::run_with_timeout(&mut c, Duration::from_secs(60))
}

/// Run cluster/wait_ready scenario `name` on pm2 `version`, recording into `capture`, or
/// `None` when `name` is not one of these. `fast` lowers max_restarts (same behaviour,
/// shorter crash loops).
pub fn run(name: &str, version: &str, capture: &Path, fast: bool) -> Option<Run> {
    run_with(name, version, Some(capture), fast, |_| Value::Null)
}

/// [`run`], recording into `capture` when given (else nothing records), calling
/// `settled(&daemon)` once the outcome has settled, before the daemon is killed. Without a
/// capture, [`Run::doc`] is what `settled` returned.
pub fn run_with(
    name: &str,
    version: &str,
    capture: Option<&Path>,
    fast: bool,
    settled_hook: impl FnOnce(&Pm2) -> Value,
) -> Option<Run> {
    if !ALL.contains(&name) {
        return None;
    }
    let p = Pm2::start(version);
    let port = pm2::free_port();
    let release = p.user_home().join("release");
    std::fs::write(&release, b"good\n").expect("release file");
    let cluster = name.contains("cluster");
    let waits = name.starts_with("wait-ready") || name == "reload-ready-cluster";
    let n = if cluster { 2 } else { 1 };
    // An ecosystem file, for min_uptime (no CLI flag): 5 s, so that a crash at start counts
    // as unstable even when a loaded machine takes over a second to start node.
    let mut app = json!({
        "name": "web",
        "script": pm2::app_path("release.js"),
        "min_uptime": MIN_UPTIME_MS,
        "env": {"PORT": port.to_string(), "RELEASE_FILE": release},
    });
    if fast {
        app["max_restarts"] = json!(5);
    }
    if cluster {
        app["instances"] = json!(2);
        app["exec_mode"] = json!("cluster");
    }
    if waits {
        app["wait_ready"] = json!(true);
        app["listen_timeout"] = json!(3000);
    }
    if name == "reload-ready-cluster" {
        app["env"]["READY"] = json!("send");
    }
    let eco = p.user_home().join("ecosystem.json");
    std::fs::write(&eco, json!({"apps": [app]}).to_string()).expect("ecosystem file");
    let out = p.cmd(&["start", eco.to_str().expect("utf-8 path")]);
    pm2::assert_ok(&out, &["start", "ecosystem.json"]);
    wait_all(&p, "online", n, Duration::from_secs(20), up);
    if waits {
        // `pm_uptime` is the spawn, and under wait_ready pm2 declares the app online only
        // when `ready` comes or listen_timeout runs out: `up` can hold at the very moment
        // it goes online. Let the recorder start well after that `online`, as the scenario
        // says (a recorder starting with it is a unit test of the timeline).
        std::thread::sleep(Duration::from_millis(1500));
    }
    let mut notes = Vec::new();
    let rec = capture.map(|c| Recorder::start(p.home(), c, &["--quiet"]));
    // Let the recorder's first snapshot and bus subscription settle.
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let broken = matches!(name, "reload-crash-cluster" | "wait-ready-dead");
    if broken {
        std::fs::write(&release, b"broken\n").expect("release file");
    }
    if name == "graceful-reload-cluster" {
        let out = soft_reload(&p, 2);
        notes.push(format!(
            "softReloadProcessId x2: {} after {} ms",
            String::from_utf8_lossy(&out.stdout).trim(),
            t0.elapsed().as_millis()
        ));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        let verb = if cluster { "reload" } else { "restart" };
        let out = p.cmd(&[verb, "web"]);
        notes.push(format!(
            "`pm2 {verb} web` exit {:?} after {} ms",
            out.status.code(),
            t0.elapsed().as_millis()
        ));
    }
    if broken {
        // Errored once max_restarts starts died within min_uptime. Under heavy load (node
        // taking over a second to reach the crash) pm2 counts none as unstable and restarts
        // for ever: then record 20 s of it and say so.
        let errored = try_wait_all(&p, n, Duration::from_secs(40), |a| status(a) == "errored");
        if !errored {
            notes.push("not errored within 40 s: starts outlived min_uptime (machine load)".into());
        }
        // The app stays down: record a little of the outage after the reload's last stop.
        std::thread::sleep(Duration::from_millis(1500));
        if name == "wait-ready-dead" {
            // pm2 5.x/6.x declare dead generations online when their ready timer runs out,
            // listen_timeout after each start: record those too.
            std::thread::sleep(Duration::from_millis(3500));
        }
    } else {
        wait_all(&p, "reloaded and up", n, Duration::from_secs(40), |a| {
            up(a) && restart_time(a) > 0
        });
    }
    notes.push(format!(
        "settled after {} ms: {:?}",
        t0.elapsed().as_millis(),
        instances(&p, "web")
            .iter()
            .map(|a| format!(
                "{}:{} {}",
                a["name"].as_str().unwrap_or("?"),
                a["pm_id"],
                status(a)
            ))
            .collect::<Vec<_>>()
    ));
    let hooked = settled_hook(&p);
    std::thread::sleep(Duration::from_millis(300));
    if let Some(rec) = rec {
        let code = rec.stop();
        assert!(code.success(), "pm2-trace record ended with {code}");
    }
    let end_status = instances(&p, "web")
        .first()
        .map(|a| status(a).to_owned())
        .unwrap_or_default();
    notes.push(format!("daemon log tail:\n{}", p.log_tail(12)));
    drop(p);
    let doc = match capture {
        Some(c) => recorder::replay_json(c),
        None => hooked,
    };
    Some(Run {
        name: name.to_owned(),
        version: version.to_owned(),
        capture: capture.map(Path::to_owned).unwrap_or_default(),
        doc,
        status: end_status,
        notes,
    })
}
