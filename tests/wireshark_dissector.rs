//! contrib/wireshark/pm2-trace.lua in real tshark, on every shipped capture: no warning on
//! stderr, the Info column says what `pm2-trace replay` says for every record, and each
//! pm2trace.* field selects the records replay ties to that value.
//!
//! Needs Debian's `tshark` package. As root, tshark warns on stderr ("Running as user
//! root"), so tshark runs as `nobody` with the capture on stdin and the script copied to a
//! directory nobody can read (as tests/capture_tshark.rs does).

#[path = "capture_util/mod.rs"]
mod capture_util;
#[path = "support/tshark.rs"]
mod tshark;

use pm2_trace::event::{Asked, Direction, Event, Stamped, WireMessage};
use pm2_trace::wire::amp::{Arg, Message};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The dissector, readable by `nobody`.
struct Script {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn script() -> Script {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("pm2-trace.lua");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/wireshark/pm2-trace.lua"),
        &path,
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    Script { _dir: dir, path }
}

/// tshark with the dissector on `capture`; asserts success and an empty stderr.
fn tshark(script: &Script, capture: &Path, args: &[&str]) -> String {
    let pre = [
        "-X".to_owned(),
        format!("lua_script:{}", script.path.display()),
    ];
    tshark::run(&pre, capture, args, "C.UTF-8")
}

fn shipped_captures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("captures/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    v.sort();
    assert!(v.len() >= 10, "expected the shipped captures in {dir:?}");
    v
}

/// `pm2-trace replay --json FILE`: its entries.
fn replay_entries(capture: &Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_pm2-trace"))
        .arg("replay")
        .arg("--json")
        .arg(capture)
        .output()
        .unwrap();
    assert!(out.status.success(), "replay {}", capture.display());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["events"].as_array().unwrap().clone()
}

/// tshark's fields output escapes tabs, newlines and backslashes inside values.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(o) => {
                out.push('\\');
                out.push(o)
            }
            None => out.push('\\'),
        }
    }
    out
}

/// The `t` of each packet `filter` selects.
fn packets(script: &Script, capture: &Path, filter: Option<&str>) -> Vec<Option<u64>> {
    let mut args = vec!["-T", "fields", "-e", "pm2trace.t"];
    if let Some(f) = filter {
        args.push("-Y");
        args.push(f);
    }
    tshark(script, capture, &args)
        .lines()
        .map(|l| l.parse().ok())
        .collect()
}

/// Consecutive descriptions with the same `t`, joined: `(t, "a | b")`.
fn groups(items: impl IntoIterator<Item = (u64, String)>) -> Vec<(u64, String)> {
    let mut out: Vec<(u64, Vec<String>)> = Vec::new();
    for (t, s) in items {
        if s.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((lt, v)) if *lt == t => v.push(s),
            _ => out.push((t, vec![s])),
        }
    }
    out.into_iter().map(|(t, v)| (t, v.join(" | "))).collect()
}

fn entry_t(e: &Value) -> u64 {
    e["t"].as_u64().unwrap()
}

/// The `t`s of the replay entries `pick` selects.
fn ts_where(entries: &[Value], pick: impl Fn(&Value) -> bool) -> BTreeSet<u64> {
    entries.iter().filter(|e| pick(e)).map(entry_t).collect()
}

fn ts_of(ps: &[Option<u64>]) -> BTreeSet<u64> {
    ps.iter().flatten().copied().collect()
}

/// The fields of the dissector, as tshark extracts them.
const FIELDS: [&str; 11] = [
    "source",
    "type",
    "method",
    "app_name",
    "pm_id",
    "pid",
    "conn",
    "signal",
    "exit_code",
    "event",
    "finding",
];

/// One packet's `t`, Info, Protocol column and every pm2trace field (all occurrences).
struct Row {
    t: Option<u64>,
    info: String,
    protocol: String,
    fields: BTreeMap<&'static str, Vec<String>>,
    comment: String,
    iface: String,
}

/// One tshark run per capture: every field of every packet.
fn dump(script: &Script, capture: &Path) -> Vec<Row> {
    let mut args: Vec<String> = [
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=/s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut cols = vec![
        "pm2trace.t".to_string(),
        "pm2trace.info".into(),
        "_ws.col.Protocol".into(),
        "frame.comment".into(),
        "frame.interface_name".into(),
    ];
    cols.extend(FIELDS.iter().map(|f| format!("pm2trace.{f}")));
    for c in &cols {
        args.push("-e".into());
        args.push(c.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tshark(script, capture, &args)
        .lines()
        .map(|l| {
            let v: Vec<&str> = l.split('\t').collect();
            assert_eq!(v.len(), cols.len(), "{l:?}");
            let mut fields = BTreeMap::new();
            for (i, f) in FIELDS.iter().enumerate() {
                let raw = v[5 + i];
                let vals: Vec<String> = if raw.is_empty() {
                    Vec::new()
                } else if matches!(*f, "pm_id" | "pid" | "conn" | "exit_code") {
                    raw.split(' ').map(str::to_owned).collect()
                } else {
                    vec![unescape(raw)]
                };
                fields.insert(*f, vals);
            }
            Row {
                t: v[0].parse().ok(),
                info: unescape(v[1]),
                protocol: v[2].to_owned(),
                comment: unescape(v[3]),
                iface: v[4].to_owned(),
                fields,
            }
        })
        .collect()
}

fn rows_with(rows: &[Row], field: &str, value: &str) -> BTreeSet<u64> {
    rows.iter()
        .filter(|r| {
            r.fields[field]
                .iter()
                .any(|v| v == value || v.split(' ').any(|x| x == value))
        })
        .filter_map(|r| r.t)
        .collect()
}

/// Info equals replay's description, record by record, on `cap` (dissected into `rows`).
fn assert_info_matches_replay(cap: &Path, rows: &[Row]) {
    let entries = replay_entries(cap);
    let want = groups(entries.iter().map(|e| {
        (
            entry_t(e),
            e["description"]
                .as_str()
                .unwrap()
                .replace(['\n', '\r'], " "),
        )
    }));
    let got = groups(
        rows[1..]
            .iter()
            .filter_map(|r| r.t.map(|t| (t, r.info.clone()))),
    );
    assert_eq!(want, got, "{}: Info differs from replay", cap.display());
}

/// One record of every event type, RPC messages of every shape (raw buffers holding an AMP
/// frame, calls this version does not name), and a record too big for one packet (split into
/// fragments that the dissector reassembles): Info is what replay says.
#[test]
fn every_record_type_and_fragmented_records_match_replay() {
    let s = script();
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("all.bin");
    // Log-file lines are `explain`'s, read from files: `record` never writes them.
    let mut events: Vec<Stamped> = capture_util::all_events()
        .into_iter()
        .filter(|e| !matches!(e.event, Event::LogLine(_)))
        .collect();
    let mut t = events.last().unwrap().t;
    // The request below is the second event pushed.
    let asked_at = t + 2_000_000;
    let mut push = |event: Event| {
        t += 1_000_000;
        events.push(Stamped { t, event });
    };
    // An AMP frame inside a raw buffer: header (version 1, 2 args), then length + bytes.
    let mut frame = vec![0x12];
    for a in [&b"s:hello"[..], &b"j:{\"a\":1}"[..]] {
        frame.extend_from_slice(&(a.len() as u32).to_be_bytes());
        frame.extend_from_slice(a);
    }
    push(Event::RpcMessage {
        conn: 7,
        dir: Direction::ToDaemon,
        msg: WireMessage(Message::new(vec![Arg::Raw(frame), Arg::Str("x".into())])),
        ask: None,
        asked: None,
    });
    push(Event::RpcMessage {
        conn: 7,
        dir: Direction::ToDaemon,
        msg: WireMessage(Message::new(vec![
            Arg::json(
                json!({"type": "call", "method": "sendSignalToProcessName", "args": [{"signal": "SIGUSR2", "process_name": "web"}, 1.5, "ünï\tcode"]}),
            ),
            Arg::Str("7:1".into()),
        ])),
        ask: Some(2),
        asked: None,
    });
    // Paired by the recorder: the dissector reads the request's method and instant here.
    push(Event::RpcMessage {
        conn: 7,
        dir: Direction::ToClient,
        msg: WireMessage(Message::new(vec![
            Arg::json(json!({"error": {"message": "process name not found"}})),
            Arg::Str("7:1".into()),
        ])),
        ask: Some(2),
        asked: Some(Box::new(Asked {
            t: asked_at,
            method: "sendSignalToProcessName".into(),
            pm_id: None,
        })),
    });
    push(Event::BusMessage {
        msg: WireMessage(Message::new(vec![
            Arg::Str("log:PM2".into()),
            Arg::json(
                json!({"at": 1, "data": "2026-01-01T00:00:00: PM2 log: App [web:0] exited with code [1] via signal [SIGTERM]\nPM2 log: Stopping app:web id:0\npid=4243 msg=failed to kill - retrying in 100ms\nsomething else\n"}),
            ),
        ])),
    });
    // 1200 lines of 250 bytes: more than one packet holds, and more lines than one entry
    // list shows.
    let big: String = (0..1200)
        .map(|i| format!("{i:04} {}\n", "x".repeat(244)))
        .collect();
    push(Event::BusMessage {
        msg: WireMessage(Message::new(vec![
            Arg::Str("log:out".into()),
            Arg::json(json!({"at": 2, "process": {"pm_id": 0, "name": "web"}, "data": big})),
        ])),
    });
    push(Event::BusMessage {
        msg: WireMessage(Message::new(vec![
            Arg::Str("custom:event".into()),
            Arg::json(json!({"k": [1, 2.5, null, true, "é"]})),
        ])),
    });
    capture_util::write_capture(&cap, &events);
    std::fs::set_permissions(&cap, std::fs::Permissions::from_mode(0o600)).unwrap();
    let v = tshark(&s, &cap, &["-V"]);
    assert!(
        v.contains("[record part 1/2]") || v.contains("record part 1/"),
        "not fragmented"
    );
    assert!(
        v.contains("AMP message, version 1, 2 argument(s)"),
        "AMP frame in a raw buffer"
    );
    assert_info_matches_replay(&cap, &dump(&s, &cap));
}

#[test]
fn info_column_is_what_replay_says_on_every_shipped_capture() {
    let s = script();
    for cap in shipped_captures() {
        let rows = dump(&s, &cap);
        // The first packet is the capture info (no `t`); every other one is a record.
        assert!(rows[0].t.is_none() && rows[0].info.starts_with("capture of pm2 "));
        assert!(rows[1..].iter().all(|r| r.t.is_some()), "{}", cap.display());
        assert!(
            rows.iter().all(|r| r.protocol == "pm2-trace"),
            "{}",
            cap.display()
        );
        assert_info_matches_replay(&cap, &rows);
    }
}

/// For every shipped capture, the values the dissector gives each record are the ones
/// replay ties to it; on two captures (5.4.3 and 7.0.4), tshark's display filter on each
/// field selects exactly those records.
#[test]
fn every_field_selects_the_records_replay_ties_to_it() {
    let s = script();
    let mut checked: BTreeMap<&str, usize> = BTreeMap::new();
    for cap in shipped_captures() {
        let name = cap.display().to_string();
        let entries = replay_entries(&cap);
        let rows = dump(&s, &cap);
        let mut expect: Vec<(&'static str, String, BTreeSet<u64>)> = Vec::new();
        // source: the interface the record is on; type: rpc messages as the comment says.
        for src in ["rpc", "bus", "proc", "recorder"] {
            let want: BTreeSet<u64> = rows
                .iter()
                .filter(|r| r.iface == src)
                .filter_map(|r| r.t)
                .collect();
            expect.push(("source", src.into(), want));
        }
        let msgs: BTreeSet<u64> = rows
            .iter()
            .filter(|r| {
                r.comment.contains("client->daemon ") || r.comment.contains("daemon->client ")
            })
            .filter_map(|r| r.t)
            .collect();
        expect.push(("type", "rpc_message".into(), msgs));
        // method: every request and reply replay names with that method.
        let method_of = |e: &Value| -> Option<String> {
            match e["call"]["call"].as_str() {
                Some("other") => e["call"]["method"].as_str().map(str::to_owned),
                // The wire method of a graceful reload.
                Some("reloadProcessId") if e["call"]["graceful"] == true => {
                    Some("softReloadProcessId".to_owned())
                }
                Some(c) => Some(c.to_owned()),
                None => e["method"].as_str().map(str::to_owned),
            }
        };
        let methods: BTreeSet<String> = entries.iter().filter_map(method_of).collect();
        for m in methods {
            let want = ts_where(&entries, |e| method_of(e).as_deref() == Some(m.as_str()));
            expect.push(("method", m, want));
        }
        // app_name and pm_id: the records whose entries replay ties to the app.
        for e in &entries {
            if let Some(id) = e["app"]["pm_id"].as_u64() {
                let want = ts_where(&entries, |x| x["app"]["pm_id"].as_u64() == Some(id));
                expect.push(("pm_id", id.to_string(), want));
            }
            if let Some(a) = e["app"]["name"].as_str() {
                let want = ts_where(&entries, |x| x["app"]["name"].as_str() == Some(a));
                expect.push(("app_name", a.to_owned(), want));
            }
            // conn: connection events, requests and replies of that connection.
            if let Some(c) = e["conn"].as_u64() {
                let want = ts_where(&entries, |x| x["conn"].as_u64() == Some(c));
                expect.push(("conn", c.to_string(), want));
            }
        }
        // signal and exit_code: daemon "exited" lines, bus exit events, process exits.
        let sig_of = |e: &Value| -> Option<String> {
            e["log"]["signal"]
                .as_str()
                .or(if e["type"] == "bus" {
                    e["signal"].as_str()
                } else {
                    None
                })
                .or(e["event"]["status"]["name"].as_str())
                .map(str::to_owned)
        };
        let code_of = |e: &Value| -> Option<i64> {
            e["log"]["code"]
                .as_i64()
                .or(if e["type"] == "bus" {
                    e["exit_code"].as_i64()
                } else {
                    None
                })
                .or(if e["event"]["status"]["kind"] == "code" {
                    e["event"]["status"]["code"].as_i64()
                } else {
                    None
                })
        };
        for e in &entries {
            if let Some(sig) = sig_of(e) {
                let want = ts_where(&entries, |x| sig_of(x).as_deref() == Some(sig.as_str()));
                expect.push(("signal", sig, want));
            }
            if let Some(c) = code_of(e) {
                let want = ts_where(&entries, |x| code_of(x) == Some(c));
                expect.push(("exit_code", c.to_string(), want));
            }
        }
        // event: the bus channel (the recorder's packet comment names it) and, for process
        // events, the event itself.
        for ev in ["log:PM2", "log:out", "log:err", "process:event"] {
            let want: BTreeSet<u64> = rows
                .iter()
                .filter(|r| r.comment == format!("bus {ev}"))
                .filter_map(|r| r.t)
                .collect();
            expect.push(("event", ev.into(), want));
        }
        let online = ts_where(&entries, |e| {
            e["bus"] == "process_event" && e["event"] == "online"
        });
        expect.push(("event", "online".into(), online));
        expect.sort();
        expect.dedup();
        for (field, value, want) in &expect {
            assert_eq!(
                &rows_with(&rows, field, value),
                want,
                "{name}: pm2trace.{field} == {value}"
            );
            *checked.entry(field).or_default() += want.len();
        }
        // pid: the new pid of each restart reply is on the reply and on every record of
        // that process.
        for e in entries.iter().filter(|e| e["new_pid"].is_i64()) {
            let pid = e["new_pid"].as_i64().unwrap();
            let got = rows_with(&rows, "pid", &pid.to_string());
            let procs = ts_where(&entries, |x| {
                x["type"] == "proc" && x["event"]["who"]["pid"].as_i64() == Some(pid)
            });
            assert!(got.contains(&entry_t(e)), "{name} reply for pid {pid}");
            assert!(
                !procs.is_empty() && got.is_superset(&procs),
                "{name} records of pid {pid}"
            );
            *checked.entry("pid").or_default() += got.len();
            expect.push(("pid", pid.to_string(), got));
        }
        // The display filters themselves, on two captures: each selects what the fields say.
        if name.contains("crash-on-start-restart-") {
            let mut one_per_field: BTreeMap<&str, (String, BTreeSet<u64>)> = BTreeMap::new();
            for (field, value, want) in &expect {
                if !want.is_empty() {
                    one_per_field
                        .entry(field)
                        .or_insert((value.clone(), want.clone()));
                }
            }
            for (field, (value, want)) in one_per_field {
                let quoted = if matches!(field, "pm_id" | "pid" | "conn" | "exit_code") {
                    value.clone()
                } else {
                    format!("\"{value}\"")
                };
                let filter = format!("pm2trace.{field} == {quoted}");
                let got = ts_of(&packets(&s, &cap, Some(&filter)));
                assert_eq!(got, want, "{name}: -Y '{filter}'");
                *checked.entry("display filter").or_default() += 1;
            }
        }
    }
    for field in [
        "source",
        "type",
        "method",
        "app_name",
        "pm_id",
        "conn",
        "pid",
        "signal",
        "exit_code",
        "event",
    ] {
        assert!(
            checked.get(field).copied().unwrap_or(0) > 0,
            "no record exercised pm2trace.{field}: {checked:?}"
        );
    }
    assert!(checked["display filter"] >= 20, "{checked:?}");
}
