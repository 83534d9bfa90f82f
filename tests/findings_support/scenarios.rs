//! Real pm2 scenarios recorded with the real `pm2-trace record`, shared by the live findings
//! tests (tests/findings_live.rs) and the capture maker (tests/findings_captures.rs,
//! `make_captures`, ignored).
//!
//! Include after the harness:
//! ```ignore
//! #[path = "support/pm2.rs"] mod pm2;
//! #[path = "support/recorder.rs"] mod recorder;
//! #[path = "findings_support/scenarios.rs"] mod scenarios;
//! ```
//!
//! Each scenario starts a throw-away daemon, brings the app online, starts the recorder,
//! does what an operator would do (`pm2 restart web`, ...), waits until the outcome is
//! settled (errored, or online and past min_uptime, and any process of the old generation
//! that still held the port has exited), then stops the recorder. Waiting polls the daemon's
//! own socket (set aside by the recorder), so the polling is not in the capture.
#![allow(dead_code)]

use super::pm2::{self, Pm2};
use super::recorder::{self, Recorder};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every scenario, by name.
pub const ALL: &[&str] = &[
    "drain-child-restart",
    "double-fork-restart",
    "slow-graceful-restart",
    "env-broken-restart",
    "overlapping-restart",
    "crash-on-start-restart",
    "crash-once-restart",
    "stop-timeout",
    "well-behaved-restarts",
    "restart-while-waiting",
    "symlink-deploy-restart",
    "symlink-keep-restart",
    "port-other-daemon-restart",
    "port-moved-restart",
    "restart-delay-loop",
    "memory-restart-loop",
    "watch-restart-loop",
    "watch-ignored",
    "unix-double-fork-restart",
    "stop-gave-up-restart",
    "plain-restart",
];

/// min_uptime (ms) of the fast runs of the scenarios whose new generation crashes at start
/// and must end errored ([`min_uptime_ms`]).
pub const CRASH_MIN_UPTIME_MS: u64 = 5000;

/// pm2's default min_uptime (ms).
pub const DEFAULT_MIN_UPTIME_MS: u64 = 1000;

/// The scenarios whose outcome is `errored` by a crash loop at start (each start failing
/// within min_uptime, max_restarts times).
const CRASH_LOOPS: &[&str] = &[
    "drain-child-restart",
    "double-fork-restart",
    "env-broken-restart",
    "crash-on-start-restart",
    "port-other-daemon-restart",
    "unix-double-fork-restart",
];

/// The app's min_uptime in scenario `name`. The fast runs (the live tests) of the crash
/// loops start the app from an ecosystem file with `min_uptime: 5000` (pm2 5.4.3, 6.0.14
/// and 7.0.4 have no CLI flag for it): on a loaded machine node can take more than the
/// default second to fail at start, and pm2 then never counts the restart unstable and
/// never sets errored. Every other run, the shipped captures' recipe included, keeps pm2's
/// default.
pub fn min_uptime_ms(name: &str, fast: bool) -> u64 {
    if fast && CRASH_LOOPS.contains(&name) {
        CRASH_MIN_UPTIME_MS
    } else {
        DEFAULT_MIN_UPTIME_MS
    }
}

/// Whether the old generation's drain (`DRAIN_MS`) of scenario `name` ends when the test
/// says so: the fast runs give the drain a bound of 20 s and `DRAIN_UNTIL=<file>`, which the
/// test creates once the outcome has settled (errored, after max_restarts failed starts).
/// A fixed 6 s drain raced the crash loop: on a loaded machine the failed starts took
/// longer than the drain, the port came free first and the app ended online.
fn drain_until_settled(name: &str, fast: bool) -> bool {
    fast && matches!(
        name,
        "drain-child-restart" | "double-fork-restart" | "unix-double-fork-restart"
    )
}

/// What a scenario does, in words (for captures/README.md).
pub fn describe(name: &str, fast: bool) -> String {
    let (drain, mr) = if fast && drain_until_settled(name, fast) {
        ("DRAIN_MS=20000 DRAIN_UNTIL=f", " --max-restarts 5")
    } else if fast {
        ("DRAIN_MS=6000", " --max-restarts 5")
    } else {
        ("DRAIN_MS=12000", "")
    };
    let mut text = describe_recipe(name, drain, mr);
    if min_uptime_ms(name, fast) != DEFAULT_MIN_UPTIME_MS {
        text.push_str(&format!(
            " (from an ecosystem file with min_uptime {} and the same settings, online past \
             min_uptime before the restart)",
            min_uptime_ms(name, fast)
        ));
    }
    if drain_until_settled(name, fast) {
        text.push_str("; the drain ends when the test creates f, once the app has settled");
    }
    text
}

fn describe_recipe(name: &str, drain: &str, mr: &str) -> String {
    match name {
        "drain-child-restart" => format!(
            "`PORT=p {drain} pm2 start slow-drain-child.js --name web{mr}`, online 1.5 s, then \
             `pm2 restart web`"
        ),
        "double-fork-restart" => format!(
            "`PORT=p {drain} pm2 start double-fork-server.js --name web{mr}`, online 1.5 s, then \
             `pm2 restart web`"
        ),
        "slow-graceful-restart" => {
            "`PORT=p SHUTDOWN_MS=3000 pm2 start slow-graceful.js --name web`, \
             online 1.5 s, then `pm2 restart web`"
                .into()
        }
        "env-broken-restart" => format!(
            "`PORT=p pm2 start env-sensitive.js --name web{mr}`, online 1.5 s, then \
             `FEATURE_MODE=broken pm2 restart web --update-env`"
        ),
        "overlapping-restart" => {
            "`PORT=p SHUTDOWN_MS=3000 pm2 start slow-graceful.js --name web`, \
             online 1.5 s, then `pm2 restart web` twice, the second 400 ms after the first"
                .into()
        }
        "crash-on-start-restart" => format!(
            "`PORT=p pm2 start crash-on-start.js --name web{mr}` (errored by itself), then \
             `pm2 restart web`"
        ),
        "crash-once-restart" => {
            "`PORT=p CRASH_MARKER=f pm2 start crash-once.js --name web`, online \
             1.5 s, create the file f, then `pm2 restart web`"
                .into()
        }
        "stop-timeout" => {
            "`PORT=p DRAIN_MS=6000 pm2 start slow-drain-child.js --name web`, online \
             1.5 s, freeze the harness's subreaper (SIGSTOP: the SIGKILLed, reparented child \
             stays a zombie), then `pm2 stop web`"
                .into()
        }
        "well-behaved-restarts" => {
            "`PORT=p pm2 start well-behaved.js --name web`, online 1.5 s, then \
             `pm2 restart web` 8 times back to back, then once more after 1.5 s"
                .into()
        }
        "symlink-deploy-restart" => {
            "releases `srv/releases/1` and `2` (well-behaved.js as app.js), `srv/current -> \
             releases/1`; `cd srv/current && PORT=p pm2 start app.js --name web`, online 1.5 s; \
             then `current` re-pointed to `releases/2`, `releases/1` deleted, `pm2 restart web`"
                .into()
        }
        "symlink-keep-restart" => "as symlink-deploy-restart, but `releases/1` is kept".into(),
        "port-other-daemon-restart" => format!(
            "a second daemon (its own PM2_HOME) runs `PORT=q pm2 start well-behaved.js --name \
             other`; `PORT=p pm2 start well-behaved.js --name web{mr}`, online 1.5 s, then \
             `PORT=q pm2 restart web --update-env`"
        ),
        "port-moved-restart" => {
            "`PORT=p pm2 start well-behaved.js --name web`, online 1.5 s, then `PORT=q pm2 \
             restart web --update-env` with q free"
                .into()
        }
        "restart-delay-loop" => {
            "`PORT=p pm2 start crash-on-start.js --name web --restart-delay 1500 \
             --max-restarts 3` (unstable window 3 s), recorded while it restarts 4 times by itself"
                .into()
        }
        "memory-restart-loop" => {
            "daemon started with `PM2_WORKER_INTERVAL=1000` (its memory check every second \
             instead of 30 s); `PORT=p pm2 start memory-grower.js --name web \
             --max-memory-restart 50M` (the app holds 80 MB within a second), online, recorded \
             while the daemon restarts it 6 times by itself"
                .into()
        }
        "watch-restart-loop" => {
            "watch-self-writer.js copied to `site/app.js`; `cd site && PORT=p pm2 start app.js \
             --name web --watch` (the app appends to `site/logs/app.log` 200 ms after it \
             starts), online, recorded while the daemon restarts it 6 times by itself"
                .into()
        }
        "watch-ignored" => {
            "as watch-restart-loop, started with `--watch --ignore-watch=logs` (the remedy); \
             recorded 3 s, nobody asks anything"
                .into()
        }
        "unix-double-fork-restart" => format!(
            "`SOCKET_PATH=s {drain} pm2 start unix-double-fork.py --interpreter python3 --name \
             web{mr}`, online 1.5 s, then `pm2 restart web`"
        ),
        "stop-gave-up-restart" => {
            "`PORT=p DRAIN_MS=6000 pm2 start slow-drain-child.js --name web`, online 1.5 s, \
             freeze the harness's subreaper (the SIGKILLed child stays a zombie), then \
             `pm2 restart web`"
                .into()
        }
        "plain-restart" => {
            "`PORT=p pm2 start well-behaved.js --name web`, online 1.5 s, then `pm2 restart web`"
                .into()
        }
        other => panic!("no scenario {other}"),
    }
}

/// Releases `srv/releases/{1,2}` with `app.js` (well-behaved.js) under the user's home, and
/// `srv/current -> releases/1`. Returns `srv`.
fn make_releases(p: &Pm2) -> PathBuf {
    let srv = p.user_home().join("srv");
    for r in ["1", "2"] {
        let d = srv.join("releases").join(r);
        std::fs::create_dir_all(&d).expect("release dir");
        std::fs::copy(pm2::app_path("well-behaved.js"), d.join("app.js")).expect("app.js");
    }
    std::os::unix::fs::symlink("releases/1", srv.join("current")).expect("current");
    srv
}

/// Re-point `srv/current` to `releases/2` atomically, as deploy tools do.
fn switch_release(srv: &Path) {
    let tmp = srv.join("current.new");
    std::os::unix::fs::symlink("releases/2", &tmp).expect("current.new");
    std::fs::rename(&tmp, srv.join("current")).expect("switch current");
}

/// The real python3 executable (not a version manager's shim, whose wrapper scripts would
/// fill the capture with their own processes at every start).
fn python3() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed for unix-double-fork.py: {e}"));
    assert!(out.status.success(), "python3 -c failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A recorded scenario.
pub struct Run {
    pub name: String,
    pub version: String,
    pub capture: PathBuf,
    /// `pm2-trace replay --json` of the capture.
    pub doc: Value,
    /// The app's status at the end.
    pub status: String,
    /// Measurements in words (for the report).
    pub notes: Vec<String>,
}

impl Run {
    pub fn findings(&self) -> &Vec<Value> {
        self.doc["findings"].as_array().expect("findings array")
    }

    /// The kinds of the findings, in their order.
    pub fn kinds(&self) -> Vec<String> {
        self.findings()
            .iter()
            .map(|f| f["kind"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    /// Findings as `severity kind: summary` lines.
    pub fn lines(&self) -> String {
        self.findings()
            .iter()
            .map(|f| {
                format!(
                    "{} {}: {}",
                    f["severity"].as_str().unwrap_or("?"),
                    f["kind"].as_str().unwrap_or("?"),
                    f["summary"].as_str().unwrap_or("?")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn finding(&self, kind: &str) -> &Value {
        self.findings()
            .iter()
            .find(|f| f["kind"] == kind)
            .unwrap_or_else(|| {
                panic!(
                    "{} on pm2 {}: no {kind} finding; findings:\n{}\ntimeline:\n{}",
                    self.name,
                    self.version,
                    self.lines(),
                    recorder::replay_text(&self.capture)
                )
            })
    }

    /// Panic (with the findings and the timeline) unless every kind in `want` is found.
    pub fn expect_kinds(&self, want: &[&str]) {
        let kinds = self.kinds();
        for k in want {
            if !kinds.iter().any(|x| x == k) {
                panic!(
                    "{} on pm2 {} (status {}): no {k} finding; findings:\n{}\ntimeline:\n{}",
                    self.name,
                    self.version,
                    self.status,
                    self.lines(),
                    recorder::replay_text(&self.capture)
                );
            }
        }
    }

    /// Panic unless no finding is at least a warning.
    pub fn expect_quiet(&self) {
        let loud: Vec<&Value> = self
            .findings()
            .iter()
            .filter(|f| f["severity"] == "warning" || f["severity"] == "error")
            .collect();
        assert!(
            loud.is_empty(),
            "{} on pm2 {}: unexpected findings:\n{}\ntimeline:\n{}",
            self.name,
            self.version,
            self.lines(),
            recorder::replay_text(&self.capture)
        );
    }

    /// Panic unless every finding of severity warning or error is of one of `kinds`.
    pub fn expect_quiet_except(&self, kinds: &[&str]) {
        let loud: Vec<&Value> = self
            .findings()
            .iter()
            .filter(|f| f["severity"] == "warning" || f["severity"] == "error")
            .filter(|f| !kinds.iter().any(|k| f["kind"] == *k))
            .collect();
        assert!(
            loud.is_empty(),
            "{} on pm2 {}: unexpected findings:\n{}\ntimeline:\n{}",
            self.name,
            self.version,
            self.lines(),
            recorder::replay_text(&self.capture)
        );
    }

    /// Print what was recorded, then check that findings come most severe first and that
    /// each is well formed: a sentence naming the app, no value shown, evidence, a remedy.
    pub fn report_and_check(&self) {
        eprintln!(
            "{} on pm2 {}: status {}; {}\n{}",
            self.name,
            self.version,
            self.status,
            self.notes.join("; "),
            self.lines()
        );
        self.expect_sorted();
        let name = &self.name;
        for f in self.findings() {
            let s = f["summary"].as_str().unwrap_or_default();
            assert!(
                s.ends_with('.') && s.contains("web"),
                "{name}: a summary must be a sentence naming the app: {s}"
            );
            assert!(
                !s.contains("<redacted"),
                "{name}: a summary shows a value: {s}"
            );
            assert!(
                !f["evidence"].as_array().unwrap().is_empty(),
                "{name}: {} has no evidence",
                f["kind"]
            );
            assert!(
                f["severity"] == "info" || !f["remedy"].as_str().unwrap_or_default().is_empty(),
                "{name}: {} has no remedy",
                f["kind"]
            );
        }
    }

    /// Kinds of findings must come most severe first.
    pub fn expect_sorted(&self) {
        let rank = |f: &Value| match f["severity"].as_str() {
            Some("error") => 0,
            Some("warning") => 1,
            _ => 2,
        };
        let ranks: Vec<i32> = self.findings().iter().map(rank).collect();
        let mut sorted = ranks.clone();
        sorted.sort();
        assert_eq!(
            ranks,
            sorted,
            "{}: not most severe first:\n{}",
            self.name,
            self.lines()
        );
    }
}

/// The daemon's view of app `name`, asked on the daemon's own socket (not recorded).
fn daemon_app(p: &Pm2, name: &str) -> Option<Value> {
    let aside = recorder::aside(p.home());
    let sock = if aside.exists() { aside } else { p.rpc_sock() };
    let r = pm2::rpc_call(
        &sock,
        "getMonitorData",
        json!([{}]),
        Duration::from_secs(10),
    )
    .ok()?;
    r.get(0)?
        .as_array()?
        .iter()
        .find(|x| x["name"] == name)
        .cloned()
}

fn status_of(v: &Value) -> String {
    v["pm2_env"]["status"].as_str().unwrap_or("?").to_owned()
}

/// Wait until `pred` holds for app `web` (polling the daemon's own socket every 50 ms).
fn wait_app(p: &Pm2, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    wait_named(p, "web", what, timeout, pred)
}

/// Wait until `pred` holds for app `app` of daemon `p`.
fn wait_named(
    p: &Pm2,
    app: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    loop {
        if let Some(a) = daemon_app(p, app) {
            if pred(&a) {
                return a;
            }
            last = a;
        }
        if Instant::now() > deadline {
            panic!(
                "pm2 {}: {app} not {what} within {timeout:?}: last status {} restart_time {}\n{}",
                p.version(),
                last["pm2_env"]["status"],
                last["pm2_env"]["restart_time"],
                p.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long (ms) the current generation of `a` has been up (since pm2 spawned it).
fn up_ms(a: &Value) -> i64 {
    let up = a["pm2_env"]["pm_uptime"].as_i64().unwrap_or(i64::MAX);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    now - up
}

/// Errored, or online for longer than min_uptime (`min_uptime` ms, and 300 ms more).
fn settled(a: &Value, min_uptime: u64) -> bool {
    match a["pm2_env"]["status"].as_str() {
        Some("errored") => true,
        Some("online") => up_ms(a) > min_uptime as i64 + 300,
        _ => false,
    }
}

/// `[env] pm2 start <app> --name web [--<setting> <value>...]`, or, when `min_uptime` is not
/// pm2's default, the same app and settings from an ecosystem file that also sets
/// min_uptime (no CLI flag for it). Either way the app's environment is the CLI's.
fn start_web(
    p: &Pm2,
    app: &Path,
    env: &[(&str, &str)],
    settings: &[(&str, Value)],
    min_uptime: u64,
) {
    let script = app.to_str().expect("utf-8 app path");
    let out = if min_uptime == DEFAULT_MIN_UPTIME_MS {
        let flags: Vec<String> = settings
            .iter()
            .flat_map(|(k, v)| {
                let v = v
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string());
                [format!("--{}", k.replace('_', "-")), v]
            })
            .collect();
        let mut args = vec!["start", script, "--name", "web"];
        args.extend(flags.iter().map(String::as_str));
        p.cmd_env(env, &args)
    } else {
        let mut conf = json!({"name": "web", "script": script, "min_uptime": min_uptime});
        for (k, v) in settings {
            conf[*k] = v.clone();
        }
        let eco = p.user_home().join("ecosystem.json");
        std::fs::write(&eco, json!({ "apps": [conf] }).to_string()).expect("ecosystem file");
        p.cmd_env(env, &["start", eco.to_str().expect("utf-8 path")])
    };
    must(&out, &format!("start {script}"));
}

/// Wait until nothing listens on `port` any more (the old generation's holder drained).
fn wait_port_free(port: u16, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    while pm2::port_open(port) {
        assert!(
            t0.elapsed() < timeout,
            "port {port} still held after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

fn must(out: &std::process::Output, what: &str) {
    pm2::assert_ok(out, &[what]);
}

/// Run scenario `name` on pm2 `version`, recording into `capture`. `fast` shortens what
/// does not change the behaviour (fewer max_restarts, shorter drains).
pub fn run(name: &str, version: &str, capture: &Path, fast: bool) -> Run {
    run_with(name, version, Some(capture), fast, |_| Value::Null)
}

/// [`run`], recording into `capture` when given (else nothing records), calling
/// `settled(&daemon)` once the outcome has settled, before the daemon is killed and before
/// waiting for an old holder of the port to let go. Without a capture, [`Run::doc`] is
/// what `settled` returned.
pub fn run_with(
    name: &str,
    version: &str,
    capture: Option<&Path>,
    fast: bool,
    settled_hook: impl FnOnce(&Pm2) -> Value,
) -> Run {
    let p = if name == "memory-restart-loop" {
        // The daemon checks max_memory_restart every PM2_WORKER_INTERVAL ms (constants.js of
        // 5.4.3, 6.0.14 and 7.0.4), 30 s by default.
        Pm2::start_with_daemon_env(version, &[("PM2_WORKER_INTERVAL", "1000")])
    } else {
        Pm2::start(version)
    };
    let port = pm2::free_port();
    let port_s = port.to_string();
    let min_up = min_uptime_ms(name, fast);
    let until = drain_until_settled(name, fast);
    let drain = if until {
        "20000"
    } else if fast {
        "6000"
    } else {
        "12000"
    };
    let drain_ms: u64 = drain.parse().unwrap();
    let drained = p.user_home().join("drained");
    let drained_s = drained.to_str().unwrap().to_owned();
    let mut drain_env = vec![("DRAIN_MS", drain)];
    if until {
        drain_env.push(("DRAIN_UNTIL", &drained_s));
    }
    let mr: &[&str] = if fast { &["--max-restarts", "5"] } else { &[] };
    let mr_set: Vec<(&str, Value)> = if fast {
        vec![("max_restarts", json!(5))]
    } else {
        vec![]
    };
    let mut notes = Vec::new();
    let marker = p.user_home().join("stale.lock");
    let marker_s = marker.to_str().unwrap().to_owned();
    // Bring the app up.
    let crash_app = name == "crash-on-start-restart";
    let mut srv = None;
    let mut other: Option<Pm2> = None;
    let other_port = pm2::free_port();
    let other_port_s = other_port.to_string();
    let sock = p.user_home().join("app.sock");
    let sock_s = sock.to_str().unwrap().to_owned();
    match name {
        "symlink-deploy-restart" | "symlink-keep-restart" => {
            let dir = make_releases(&p);
            let out = p.cmd_in(
                &dir.join("current"),
                &[("PORT", &port_s)],
                &["start", "app.js", "--name", "web"],
            );
            must(&out, "start app.js (in srv/current)");
            srv = Some(dir);
        }
        "port-other-daemon-restart" => {
            let o = Pm2::start(version);
            o.start_app("other", "well-behaved.js", other_port, &[]);
            wait_named(&o, "other", "online", Duration::from_secs(15), |a| {
                status_of(a) == "online"
            });
            other = Some(o);
            let app = pm2::app_path("well-behaved.js");
            start_web(&p, &app, &[("PORT", &port_s)], &mr_set, min_up);
        }
        "port-moved-restart" | "plain-restart" => {
            p.start_app("web", "well-behaved.js", port, &[]);
        }
        "restart-delay-loop" => {
            p.start_app(
                "web",
                "crash-on-start.js",
                port,
                &["--restart-delay", "1500", "--max-restarts", "3"],
            );
        }
        "memory-restart-loop" => {
            p.start_app(
                "web",
                "memory-grower.js",
                port,
                &["--max-memory-restart", "50M"],
            );
        }
        "watch-restart-loop" | "watch-ignored" => {
            // pm2 watches the app's working directory (pm_cwd) with `--watch`.
            let site = p.user_home().join("site");
            std::fs::create_dir_all(&site).expect("site dir");
            std::fs::copy(pm2::app_path("watch-self-writer.js"), site.join("app.js"))
                .expect("app.js");
            let mut args = vec!["start", "app.js", "--name", "web", "--watch"];
            if name == "watch-ignored" {
                args.push("--ignore-watch=logs");
            }
            let out = p.cmd_in(&site, &[("PORT", &port_s)], &args);
            must(&out, "start app.js --watch (in site)");
        }
        "unix-double-fork-restart" => {
            let path = pm2::app_path("unix-double-fork.py");
            let mut settings = vec![("interpreter", json!(python3()))];
            settings.extend(mr_set.iter().cloned());
            let mut env = vec![("SOCKET_PATH", sock_s.as_str())];
            env.extend(drain_env.iter().copied());
            start_web(&p, &path, &env, &settings, min_up);
        }
        "stop-gave-up-restart" => {
            p.start_app_env(
                "web",
                "slow-drain-child.js",
                port,
                &[("DRAIN_MS", "6000")],
                &[],
            );
        }
        "stop-timeout" => {
            p.start_app_env(
                "web",
                "slow-drain-child.js",
                port,
                &[("DRAIN_MS", "6000")],
                mr,
            );
        }
        "drain-child-restart" | "double-fork-restart" => {
            let app = if name == "drain-child-restart" {
                "slow-drain-child.js"
            } else {
                "double-fork-server.js"
            };
            let mut env = vec![("PORT", port_s.as_str())];
            env.extend(drain_env.iter().copied());
            start_web(&p, &pm2::app_path(app), &env, &mr_set, min_up);
        }
        "slow-graceful-restart" | "overlapping-restart" => {
            p.start_app_env(
                "web",
                "slow-graceful.js",
                port,
                &[("SHUTDOWN_MS", "3000")],
                &[],
            );
        }
        "env-broken-restart" | "crash-on-start-restart" => {
            let app = if name == "env-broken-restart" {
                "env-sensitive.js"
            } else {
                "crash-on-start.js"
            };
            let app = pm2::app_path(app);
            start_web(&p, &app, &[("PORT", &port_s)], &mr_set, min_up);
        }
        "crash-once-restart" => {
            p.start_app_env(
                "web",
                "crash-once.js",
                port,
                &[("CRASH_MARKER", &marker_s)],
                &[],
            );
        }
        "restart-while-waiting" => {
            p.start_app_env(
                "web",
                "crash-once.js",
                port,
                &[("CRASH_MARKER", &marker_s)],
                &["--restart-delay", "3000"],
            );
        }
        "well-behaved-restarts" => {
            p.start_app("web", "well-behaved.js", port, &[]);
        }
        other => panic!("no scenario {other}"),
    }
    if crash_app {
        wait_app(&p, "errored", Duration::from_secs(30), |a| {
            status_of(a) == "errored"
        });
    } else if name == "restart-delay-loop" {
        // It crash-loops from the start: give it a second.
        std::thread::sleep(Duration::from_millis(1000));
    } else if min_up != DEFAULT_MIN_UPTIME_MS {
        // Past min_uptime: the old generation's own exit is not an unstable restart.
        let past = min_up as i64 + 500;
        wait_app(&p, "online past min_uptime", Duration::from_secs(30), |a| {
            status_of(a) == "online" && up_ms(a) > past
        });
    } else {
        wait_app(&p, "online", Duration::from_secs(15), |a| {
            status_of(a) == "online"
        });
        // Past min_uptime: the old generation's own exit is not an unstable restart.
        std::thread::sleep(Duration::from_millis(1500));
    }
    let before = daemon_app(&p, "web").expect("web");
    let restarts_before = before["pm2_env"]["restart_time"].as_u64().unwrap_or(0);
    let rec = capture.map(|c| Recorder::start(p.home(), c, &["--quiet"]));
    let t0 = Instant::now();
    match name {
        "env-broken-restart" => {
            let out = p.cmd_env(
                &[("FEATURE_MODE", "broken")],
                &["restart", "web", "--update-env"],
            );
            must(&out, "restart web --update-env");
        }
        "overlapping-restart" => {
            std::thread::scope(|s| {
                let first = s.spawn(|| p.cmd(&["restart", "web"]));
                std::thread::sleep(Duration::from_millis(400));
                let second = p.cmd(&["restart", "web"]);
                let first = first.join().expect("first restart");
                notes.push(format!(
                    "first CLI exit {:?}, second CLI exit {:?}: {}",
                    first.status.code(),
                    second.status.code(),
                    String::from_utf8_lossy(&second.stderr)
                        .lines()
                        .chain(String::from_utf8_lossy(&second.stdout).lines())
                        .find(|l| l.contains("ERROR"))
                        .unwrap_or("")
                        .trim()
                ));
            });
        }
        "crash-once-restart" => {
            std::fs::write(&marker, b"stale\n").expect("marker");
            p.cmd(&["restart", "web"]);
        }
        "restart-while-waiting" => {
            std::fs::write(&marker, b"stale\n").expect("marker");
            p.cmd(&["restart", "web"]);
            wait_app(&p, "waiting restart", Duration::from_secs(10), |a| {
                status_of(a) == "waiting restart"
            });
            std::thread::sleep(Duration::from_millis(1000));
            let out = p.cmd(&["restart", "web"]);
            notes.push(format!(
                "second restart exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .chain(String::from_utf8_lossy(&out.stdout).lines())
                    .find(|l| l.contains("ERROR"))
                    .unwrap_or("")
                    .trim()
            ));
            // Past the pending delayed restart.
            std::thread::sleep(Duration::from_millis(2500));
        }
        "stop-timeout" => {
            assert!(p.freeze_reaper(), "the harness has no subreaper to freeze");
            let out = p.cmd(&["stop", "web"]);
            notes.push(format!("pm2 stop exit {:?}", out.status.code()));
            let a = wait_app(&p, "stopped or errored", Duration::from_secs(20), |a| {
                matches!(status_of(a).as_str(), "stopped" | "errored")
            });
            p.thaw_reaper();
            notes.push(format!("status after stop: {}", status_of(&a)));
        }
        "symlink-deploy-restart" | "symlink-keep-restart" => {
            let dir = srv.as_ref().expect("releases");
            switch_release(dir);
            if name == "symlink-deploy-restart" {
                std::fs::remove_dir_all(dir.join("releases/1")).expect("delete releases/1");
            }
            let out = p.cmd(&["restart", "web"]);
            notes.push(format!("pm2 restart exit {:?}", out.status.code()));
        }
        "port-other-daemon-restart" | "port-moved-restart" => {
            let q = if name == "port-moved-restart" {
                pm2::free_port().to_string()
            } else {
                other_port_s.clone()
            };
            let out = p.cmd_env(&[("PORT", &q)], &["restart", "web", "--update-env"]);
            must(&out, "restart web --update-env");
        }
        "restart-delay-loop" | "memory-restart-loop" | "watch-restart-loop" => {
            // Nobody asks anything: the daemon restarts it by itself, four times at least
            // (restart-delay-loop: about 8 s on an idle machine, longer under load). The
            // memory and watch loops restart every 0.5-1 s, some of them while the recorder
            // starts: six, so that the recording holds at least three.
            let n = if name == "restart-delay-loop" { 4 } else { 6 };
            wait_app(&p, "restarted by itself", Duration::from_secs(45), |a| {
                a["pm2_env"]["restart_time"].as_u64().unwrap_or(0) >= restarts_before + n
            });
        }
        "watch-ignored" => {
            // The app writes logs/app.log 200 ms after each start; nothing else happens.
            std::thread::sleep(Duration::from_millis(3000));
            let log = p.user_home().join("site/logs/app.log");
            assert!(log.exists(), "{} was never written", log.display());
        }
        "stop-gave-up-restart" => {
            assert!(p.freeze_reaper(), "the harness has no subreaper to freeze");
            let out = p.cmd(&["restart", "web"]);
            notes.push(format!("pm2 restart exit {:?}", out.status.code()));
            wait_app(&p, "online again", Duration::from_secs(20), |a| {
                status_of(a) == "online"
                    && a["pm2_env"]["restart_time"].as_u64().unwrap_or(0) > restarts_before
            });
            p.thaw_reaper();
        }
        "well-behaved-restarts" => {
            for _ in 0..8 {
                must(&p.cmd(&["restart", "web"]), "restart web");
            }
            std::thread::sleep(Duration::from_millis(1500));
            must(&p.cmd(&["restart", "web"]), "restart web");
        }
        _ => {
            p.cmd(&["restart", "web"]);
        }
    }
    let cli = t0.elapsed();
    // The outcome.
    let end = wait_app(&p, "settled", Duration::from_secs(60), |a| {
        let rt = a["pm2_env"]["restart_time"].as_u64().unwrap_or(0);
        name == "stop-timeout"
            || matches!(
                name,
                "restart-delay-loop" | "memory-restart-loop" | "watch-restart-loop" | "watch-ignored"
            )
            || (settled(a, min_up) && rt > restarts_before)
            // Under heavy load a start can take longer than min_uptime to fail: pm2 then
            // loops instead of reaching errored.
            || (name == "port-other-daemon-restart" && rt >= restarts_before + 8)
    });
    let status = status_of(&end);
    let hooked = settled_hook(&p);
    if until {
        // The outcome is settled: the old generation's server may let go now.
        std::fs::write(&drained, b"settled\n").expect("DRAIN_UNTIL file");
    }
    notes.push(format!(
        "CLI done after {} ms; status {status} (restart_time {}) after {} ms",
        cli.as_millis(),
        end["pm2_env"]["restart_time"],
        t0.elapsed().as_millis()
    ));
    notes.push(format!("pid {}", end["pid"]));
    if name == "unix-double-fork-restart" && status == "errored" {
        // The old generation's server still holds the path: record until it lets go.
        let t = Instant::now();
        while sock.exists() {
            assert!(
                t.elapsed() < Duration::from_millis(drain_ms + 15_000),
                "{} still bound",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        notes.push(format!(
            "socket path gone {} ms after errored",
            t.elapsed().as_millis()
        ));
    } else if status == "errored"
        && !crash_app
        && !matches!(
            name,
            "env-broken-restart"
                | "stop-timeout"
                | "port-other-daemon-restart"
                | "symlink-deploy-restart"
                | "unix-double-fork-restart"
        )
    {
        // An old generation's process still holds the port: record until it lets go.
        let held = wait_port_free(port, Duration::from_millis(drain_ms + 15_000));
        notes.push(format!(
            "port {port} free {} ms after errored",
            held.as_millis()
        ));
    }
    std::thread::sleep(Duration::from_millis(300));
    if let Some(rec) = rec {
        let code = rec.stop();
        assert!(code.success(), "pm2-trace record ended with {code}");
    }
    drop(p);
    drop(other);
    let doc = match capture {
        Some(c) => recorder::replay_json(c),
        None => hooked,
    };
    let _ = port_s;
    Run {
        name: name.to_owned(),
        version: version.to_owned(),
        capture: capture.map(Path::to_owned).unwrap_or_default(),
        doc,
        status,
        notes,
    }
}

/// Run scenario `name` on pm2 `version` with `fast` settings into a throw-away directory,
/// print what it found and check what every finding must have ([`Run::report_and_check`]).
pub fn run_live(name: &str, version: &str) -> (RunDir, Run) {
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join(format!("{name}-{version}.bin"));
    let r = run(name, version, &capture, true);
    let dir = RunDir { _dir: dir, capture };
    r.report_and_check();
    (dir, r)
}

/// A live run's directory, removed with it; when the test fails, its capture is first
/// copied to `target/failed-captures/` (a failure seen once under load can only be
/// understood from the recording that shows it).
pub struct RunDir {
    /// Kept until after `drop` has copied the capture out of it.
    _dir: tempfile::TempDir,
    capture: PathBuf,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/failed-captures");
        let Some(stem) = self.capture.file_stem() else {
            return;
        };
        let to = out.join(format!(
            "{}-{}.bin",
            stem.to_string_lossy(),
            std::process::id()
        ));
        match std::fs::create_dir_all(&out).and_then(|()| std::fs::copy(&self.capture, &to)) {
            Ok(_) => eprintln!("the failed run's capture is kept: {}", to.display()),
            Err(e) => eprintln!(
                "the failed run's capture {} could not be kept: {e}",
                self.capture.display()
            ),
        }
    }
}
