//! OpenTelemetry export, checked by a receiver that decodes every request with the official
//! OTLP protobuf definitions (tests/otlp/receiver.py, Python's `opentelemetry-proto` from
//! PyPI; .ci/run installs it): the spans, span events and finding logs of shipped captures
//! (`replay --otlp`) and of real recordings on pm2 5.4.3 and 7.0.4 (`record --otlp`), and
//! a collector that is down, slow or answers 500 leaving the recording intact and pm2
//! working.

#[path = "support/pm2.rs"]
mod pm2;
#[path = "support/recorder.rs"]
mod recorder;

use pm2::Pm2;
use recorder::Recorder;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pm2_trace::views::otlp::build::ACTIONS;

/// tests/otlp/receiver.py on a free port; killed on drop.
struct Receiver {
    child: Child,
    out: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start(mode: &str) -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("received.jsonl");
        let portfile = dir.path().join("port");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otlp/receiver.py");
        let mut child = match Command::new("python3")
            .arg(&script)
            .arg(&out)
            .arg(&portfile)
            .arg(mode)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("cannot run python3 (needed for the OTLP receiver): {e}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(p) = std::fs::read_to_string(&portfile) {
                let port = p.trim().parse().unwrap();
                return Receiver {
                    child,
                    out,
                    port,
                    _dir: dir,
                };
            }
            if let Ok(Some(st)) = child.try_wait() {
                let mut err = String::new();
                use std::io::Read;
                child.stderr.take().unwrap().read_to_string(&mut err).ok();
                panic!("the OTLP receiver exited ({st}): {err}");
            }
            assert!(Instant::now() < deadline, "the OTLP receiver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request received so far.
    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn clear(&self) {
        let _ = std::fs::remove_file(&self.out);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn attr<'a>(attrs: &'a Value, key: &str) -> Option<&'a Value> {
    attrs
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

fn attr_str(attrs: &Value, key: &str) -> Option<String> {
    attr(attrs, key).and_then(|v| v["stringValue"].as_str().map(str::to_owned))
}

fn attr_int(attrs: &Value, key: &str) -> Option<i64> {
    // protobuf's JSON writes int64 as a string.
    attr(attrs, key).and_then(|v| v["intValue"].as_str().and_then(|s| s.parse().ok()))
}

/// (service.name, item) for every item received on `path`: `keys` names the resource list,
/// the scope list and the item list (`resourceSpans`, `scopeSpans`, `spans`).
fn items(received: &[Value], path: &str, keys: [&str; 3]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for r in received.iter().filter(|r| r["path"] == path) {
        assert_eq!(r["content_type"], "application/x-protobuf");
        for res in r["body"][keys[0]].as_array().unwrap() {
            let svc = attr_str(&res["resource"]["attributes"], "service.name").unwrap();
            for scope in res[keys[1]].as_array().unwrap() {
                for it in scope[keys[2]].as_array().unwrap() {
                    out.push((svc.clone(), it.clone()));
                }
            }
        }
    }
    out
}

fn spans(received: &[Value]) -> Vec<(String, Value)> {
    items(
        received,
        "/v1/traces",
        ["resourceSpans", "scopeSpans", "spans"],
    )
}

fn logs(received: &[Value]) -> Vec<(String, Value)> {
    items(
        received,
        "/v1/logs",
        ["resourceLogs", "scopeLogs", "logRecords"],
    )
}

fn replay_json(cap: &Path) -> Value {
    let out = Command::new(recorder::bin())
        .args(["replay", "--json"])
        .arg(cap)
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Checks what the receiver got for one capture against its replay; returns the number of
/// (child spans, span events) seen.
/// `live`: findings were sent while recording, when their story may not have ended: the
/// summary may be an earlier wording, so logs are matched by kind only.
fn check_export(doc: &Value, received: &[Value], what: &str, live: bool) -> (usize, usize) {
    let events = doc["events"].as_array().unwrap();
    let findings = doc["findings"].as_array().unwrap();
    // One root span per request acting on an app, named `method app:id`.
    let asked: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "request_asked" && e["app"]["pm_id"].is_u64())
        .filter(|e| ACTIONS.contains(&e["call"]["call"].as_str().unwrap_or("")))
        .collect();
    let sp = spans(received);
    let roots: Vec<&(String, Value)> = sp
        .iter()
        .filter(|(_, s)| s["parentSpanId"].as_str().unwrap_or("").is_empty())
        .collect();
    let mut want_names: BTreeSet<String> = asked
        .iter()
        .map(|e| {
            let app = &e["app"];
            let label = match app["name"].as_str() {
                Some(n) => format!("{n}:{}", app["pm_id"]),
                None => format!("#{}", app["pm_id"]),
            };
            format!("{} {label}", e["call"]["call"].as_str().unwrap())
                .replace("reloadProcessId", "RELOAD")
        })
        .collect();
    // `pm2 start app.js` (prepare): one trace per app its reply names.
    let mut prepared = 0;
    for e in events
        .iter()
        .filter(|e| e["type"] == "request_answered" && e["method"] == "prepare")
    {
        for p in e["procs"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            prepared += 1;
            want_names.insert(format!(
                "prepare {}:{}",
                p["name"].as_str().unwrap_or("?"),
                p["pm_id"]
            ));
        }
    }
    let got_names: BTreeSet<String> = roots
        .iter()
        .map(|(_, s)| {
            s["name"]
                .as_str()
                .unwrap()
                .replace("softReloadProcessId", "RELOAD")
                .replace("reloadProcessId", "RELOAD")
        })
        .collect();
    // The names first: a missing trace is named.
    assert_eq!(got_names, want_names, "{what}");
    assert_eq!(
        roots.len(),
        asked.len() + prepared,
        "{what}: one trace per action request"
    );
    let trace_ids: BTreeSet<&str> = roots
        .iter()
        .map(|(_, s)| s["traceId"].as_str().unwrap())
        .collect();
    assert_eq!(
        trace_ids.len(),
        roots.len(),
        "{what}: one trace id per request"
    );
    let mut children = 0;
    let mut span_events = 0;
    let mut pids = 0;
    for (svc, s) in &sp {
        // service.name is the app's name; every span is in one of the request traces.
        assert!(trace_ids.contains(s["traceId"].as_str().unwrap()), "{what}");
        let start: u64 = s["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
        let end: u64 = s["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
        assert!(
            start <= end && start > 1_600_000_000_000_000_000,
            "{what}: {s}"
        );
        if let Some(p) = s["parentSpanId"].as_str().filter(|p| !p.is_empty()) {
            children += 1;
            let root = roots
                .iter()
                .find(|(_, r)| r["spanId"] == *p)
                .expect("parent");
            assert_eq!(&root.0, svc);
            if attr_int(&s["attributes"], "process.pid").is_some() {
                pids += 1;
            }
            assert!(
                attr_int(&s["attributes"], "pm2.generation").is_some(),
                "{s}"
            );
        } else {
            assert!(attr_int(&s["attributes"], "pm2.pm_id").is_some(), "{s}");
            assert!(svc.as_str() != "pm2");
        }
        for ev in s["events"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            span_events += 1;
            assert!(ev["name"].as_str().is_some_and(|n| !n.is_empty()));
            // Every span event is a line of replay's timeline.
            let name = ev["name"].as_str().unwrap();
            assert!(
                events.iter().any(|e| e["description"] == name),
                "{what}: span event {name:?} is not in the replay"
            );
        }
    }
    // One log record per finding, severity mapped, body = summary, linked to a trace.
    let lg = logs(received);
    assert_eq!(lg.len(), findings.len(), "{what}: one log per finding");
    for f in findings {
        let (svc, lr) = lg
            .iter()
            .find(|(_, l)| {
                attr_str(&l["attributes"], "pm2.finding.kind").as_deref() == f["kind"].as_str()
                    && (live || l["body"]["stringValue"] == f["summary"])
                    && l["body"]["stringValue"]
                        .as_str()
                        .is_some_and(|b| !b.is_empty())
            })
            .unwrap_or_else(|| panic!("{what}: no log for {}", f["kind"]));
        let sev = match f["severity"].as_str().unwrap() {
            "error" => "SEVERITY_NUMBER_ERROR",
            "warning" => "SEVERITY_NUMBER_WARN",
            _ => "SEVERITY_NUMBER_INFO",
        };
        assert_eq!(lr["severityNumber"], sev, "{what}");
        assert_eq!(
            attr_str(&lr["attributes"], "pm2.finding.remedy").as_deref(),
            f["remedy"].as_str()
        );
        if let Some(app) = f["app"].as_str() {
            assert_eq!(svc, app);
            assert_eq!(
                attr_str(&lr["attributes"], "pm2.app.name").as_deref(),
                Some(app)
            );
        }
        if let Some(id) = f["pm_id"].as_i64() {
            assert_eq!(attr_int(&lr["attributes"], "pm2.pm_id"), Some(id));
            if !roots.is_empty() && f["evidence"].as_array().is_some_and(|e| !e.is_empty()) {
                let tid = lr["traceId"].as_str().expect("linked to a trace");
                assert!(
                    trace_ids.contains(tid),
                    "{what}: log linked to an exported trace"
                );
                assert!(roots.iter().any(|(_, r)| r["spanId"] == lr["spanId"]));
            }
        }
    }
    assert!(
        children == 0 || pids > 0,
        "{what}: no generation span names its pid"
    );
    (children, span_events)
}

#[test]
fn replay_exports_every_shipped_capture() {
    let rx = Receiver::start("ok");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures");
    let mut caps: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    caps.sort();
    let (mut children, mut events, mut logs_seen) = (0, 0, 0);
    for (n, cap) in caps.iter().enumerate() {
        rx.clear();
        let mut cmd = Command::new(recorder::bin());
        cmd.arg("replay")
            .arg(cap)
            .env("OTEL_EXPORTER_OTLP_HEADERS", "x-fleet=web%20tier");
        // Half the runs give the URL, half take it from OTEL_EXPORTER_OTLP_ENDPOINT.
        if n % 2 == 0 {
            cmd.arg("--otlp").arg(rx.url());
        } else {
            cmd.arg("--otlp")
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", rx.url());
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", cap.display());
        assert!(stderr.contains("OpenTelemetry export to"), "{stderr}");
        let received = rx.received();
        assert!(received
            .iter()
            .all(|r| r["headers"]["x-fleet"] == "web tier"));
        let (c, e) = check_export(
            &replay_json(cap),
            &received,
            &cap.display().to_string(),
            false,
        );
        children += c;
        events += e;
        logs_seen += logs(&received).len();
    }
    assert!(
        children > 20 && events > 100 && logs_seen > 10,
        "{children} {events} {logs_seen}"
    );
}

#[test]
fn replay_with_an_unreachable_collector_is_a_clear_error() {
    let port = pm2::free_port();
    let cap = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/crash-once-restart-7.0.4.bin");
    let out = Command::new(recorder::bin())
        .arg("replay")
        .arg(&cap)
        .arg("--otlp")
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("OpenTelemetry export failed") && stderr.contains("/v1/traces"),
        "{stderr}"
    );
    // The replay itself was printed.
    assert!(String::from_utf8_lossy(&out.stdout).contains("restartProcessId web:0"));
}

/// Record `pm2 restart web` of an app that crashes once after the restart, exporting to
/// `url`; returns the capture, the recorder's stderr and whether pm2 brought the app back.
fn record_crash_once(version: &str, url: &str) -> (Pm2, PathBuf, String) {
    let p = Pm2::start(version);
    let marker = p.user_home().join("stale.lock");
    p.start_app_env(
        "web",
        "crash-once.js",
        pm2::free_port(),
        &[("CRASH_MARKER", marker.to_str().unwrap())],
        &[],
    );
    p.wait_for_status("web", "online", Duration::from_secs(15))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let cap = p.home().join("otlp.bin");
    let rec = Recorder::start(p.home(), &cap, &["--quiet", "--otlp", url]);
    std::fs::write(&marker, "lock").unwrap();
    let t0 = Instant::now();
    let out = p.cmd(&["restart", "web"]);
    let took = t0.elapsed();
    pm2::assert_ok(&out, &["restart", "web"]);
    p.wait_for_status("web", "online", Duration::from_secs(15))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // `pm2 start` of a second app: a prepare request, traced too.
    p.start_app("api", "well-behaved.js", pm2::free_port(), &[]);
    p.wait_for_status("api", "online", Duration::from_secs(15))
        .unwrap();
    // pm2 keeps answering while the exporter deals with the collector.
    let list = p.cmd(&["jlist"]);
    assert!(list.status.success());
    eprintln!("{version} {url}: pm2 restart took {took:?} while recording with --otlp");
    let stderr_path = rec.stderr_path.clone();
    assert!(rec.stop().success());
    let stderr = std::fs::read_to_string(stderr_path).unwrap();
    (p, cap, stderr)
}

fn live(version: &str) {
    let rx = Receiver::start("ok");
    let (_p, cap, stderr) = record_crash_once(version, &rx.url());
    // The recorder's own account of the export (sent, or not delivered by the deadline), for
    // a failure below to be read against.
    eprintln!("{version}: recorder stderr:\n{stderr}");
    assert!(stderr.contains("trace(s) and"), "{stderr}");
    let doc = replay_json(&cap);
    let kinds: Vec<&str> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"early-exit-after-restart"), "{kinds:?}");
    let received = rx.received();
    let (children, events) = check_export(&doc, &received, version, true);
    assert!(children >= 2 && events >= 3, "{children} {events}");
    let sp = spans(&received);
    let root = sp
        .iter()
        .find(|(_, s)| s["name"] == "restartProcessId web:0")
        .expect("the restart's trace");
    assert_eq!(root.0, "web");
    assert!(
        sp.iter()
            .any(|(svc, s)| svc == "api" && s["name"] == "prepare api:1"),
        "the pm2 start of api"
    );
    let kids: Vec<&Value> = sp
        .iter()
        .filter(|(_, s)| s["parentSpanId"] == root.1["spanId"])
        .map(|(_, s)| s)
        .collect();
    // The generation that crashed: its exit code and an exit event.
    assert!(
        kids.iter()
            .any(|k| attr_int(&k["attributes"], "process.exit.code") == Some(2)),
        "{kids:?}"
    );
    let all_events: Vec<String> = std::iter::once(&root.1)
        .chain(kids.iter().copied())
        .flat_map(|s| s["events"].as_array().cloned().unwrap_or_default())
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        all_events
            .iter()
            .any(|e| e.contains("exit pid") && e.contains("code 2")),
        "{all_events:?}"
    );
    assert!(
        all_events.iter().any(|e| e.contains("stopping")),
        "{all_events:?}"
    );
    let lg = logs(&received);
    let early = lg
        .iter()
        .find(|(_, l)| {
            attr_str(&l["attributes"], "pm2.finding.kind").as_deref()
                == Some("early-exit-after-restart")
        })
        .expect("the finding's log");
    assert_eq!(early.1["traceId"], root.1["traceId"]);
    let res = received.iter().find(|r| r["path"] == "/v1/traces").unwrap();
    let attrs = &res["body"]["resourceSpans"][0]["resource"]["attributes"];
    assert_eq!(attr_str(attrs, "pm2.version").as_deref(), Some(version));
    assert!(attr_str(attrs, "host.name").is_some() && attr_str(attrs, "pm2.home").is_some());
}

#[test]
fn record_exports_live_543() {
    live("5.4.3");
}

#[test]
fn record_exports_live_704() {
    live("7.0.4");
}

/// A collector that is down, answers 500, or takes 30 s to answer: pm2 works, the
/// recording is complete, and the capture notes what was not delivered.
#[test]
fn a_failing_collector_leaves_the_recording_intact() {
    let down = format!("http://127.0.0.1:{}", pm2::free_port());
    let failing = Receiver::start("fail500");
    let slow = Receiver::start("slow");
    for (what, url) in [("down", down), ("500", failing.url()), ("slow", slow.url())] {
        let (_p, cap, stderr) = record_crash_once("7.0.4", &url);
        assert!(stderr.contains("not delivered"), "{what}: {stderr}");
        let doc = replay_json(&cap);
        let events = doc["events"].as_array().unwrap();
        // The whole story is in the capture: the restart answered, the crash, the recovery.
        assert!(events.iter().any(|e| e["type"] == "request_answered"
            && e["method"] == "restartProcessId"
            && e["new_pid"].is_i64()));
        let kinds: Vec<&str> = doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["kind"].as_str())
            .collect();
        assert!(
            kinds.contains(&"early-exit-after-restart"),
            "{what}: {kinds:?}"
        );
        let note = events
            .iter()
            .find(|e| {
                e["type"] == "note"
                    && e["text"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("OpenTelemetry export to"))
            })
            .unwrap_or_else(|| panic!("{what}: no note of the loss in the capture"));
        assert!(note["text"].as_str().unwrap().contains("not delivered"));
        assert!(events.last().unwrap()["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("recording stopped")));
    }
    // The 500 collector did receive (and reject) the export.
    assert!(!failing.received().is_empty());
}
