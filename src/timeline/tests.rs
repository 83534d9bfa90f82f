//! Tests on real traffic recorded from pm2 5.4.3 and 7.0.4 (tests/fixtures, see its README).

use super::*;
use crate::event::{CaptureInfo, Direction, Event, NoteLevel, Stamped, WireMessage};
use crate::pm2::daemon_log::DaemonLogLine;
use crate::pm2::meaning::{BusEvent, Pm2Call, ProcessEventKind, Stream};
use crate::wire::amp::{Decoder, DEFAULT_MAX_MESSAGE};
use base64::Engine as _;
use std::collections::HashMap;

/// Read a fixture (`pm2-7.0.4`) as the events a recorder would have stored: chunks decoded
/// into whole AMP messages per stream, stamped with the relay's monotonic clock.
pub(crate) fn load_fixture(name: &str) -> (CaptureInfo, Vec<Stamped>) {
    let path = format!("{}/tests/fixtures/{name}.jsonl", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut info = CaptureInfo::default();
    let mut events = Vec::new();
    let mut decoders: HashMap<(String, u64, String), Decoder> = HashMap::new();
    let mut bytes: HashMap<u64, (u64, u64)> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let o: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{path}:{}: {e}", n + 1));
        let t: u64 = o["t"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{path}:{}: t", n + 1));
        let conn = o["conn"].as_u64().unwrap_or(0);
        match o["src"].as_str().unwrap_or_default() {
            "meta" => {
                info = CaptureInfo {
                    tool: "capture-fixture.js".into(),
                    tool_version: "0".into(),
                    host: "fixture-host".into(),
                    kernel: "linux".into(),
                    pm2_version: o["pm2_version"].as_str().map(str::to_owned),
                    pm2_home: "/tmp/fixture/home".into(),
                    daemon_pid: None,
                    wall_ref_ns: o["wall_ms"].as_i64().unwrap() as i128 * 1_000_000,
                    mono_ref_ns: t,
                    redaction: "none".into(),
                    proc_mode: "off".into(),
                    command_line: vec![],
                    // Paired by the interpreter, as an old capture is.
                    rpc_paired: false,
                }
            }
            "note" => events.push(Stamped {
                t,
                event: Event::Note {
                    level: NoteLevel::Info,
                    text: o["text"].as_str().unwrap_or_default().into(),
                },
            }),
            "rpc_open" => events.push(Stamped {
                t,
                event: Event::RpcConnect { conn, peer: None },
            }),
            "rpc_close" => {
                let (c, d) = bytes.remove(&conn).unwrap_or_default();
                events.push(Stamped {
                    t,
                    event: Event::RpcClose {
                        conn,
                        to_client_bytes: c,
                        to_daemon_bytes: d,
                        unanswered: Vec::new(),
                    },
                })
            }
            src @ ("rpc" | "bus") => {
                let dir = o["dir"].as_str().unwrap_or_default().to_owned();
                let chunk = base64::engine::general_purpose::STANDARD
                    .decode(o["b64"].as_str().unwrap())
                    .unwrap();
                let b = bytes.entry(conn).or_default();
                if dir == "to_client" {
                    b.0 += chunk.len() as u64
                } else {
                    b.1 += chunk.len() as u64
                }
                let dec = decoders
                    .entry((src.into(), conn, dir.clone()))
                    .or_insert_with(|| Decoder::new(DEFAULT_MAX_MESSAGE));
                dec.push(&chunk);
                while let Some(m) = dec.next() {
                    let msg = WireMessage(m.unwrap_or_else(|e| panic!("{path}:{}: {e}", n + 1)));
                    let event = if src == "bus" {
                        Event::BusMessage { msg }
                    } else {
                        let dir = if dir == "to_client" {
                            Direction::ToClient
                        } else {
                            Direction::ToDaemon
                        };
                        Event::RpcMessage {
                            conn,
                            dir,
                            msg,
                            ask: None,
                            asked: None,
                        }
                    };
                    events.push(Stamped { t, event });
                }
            }
            other => panic!("{path}:{}: unknown src {other}", n + 1),
        }
    }
    (info, events)
}

fn entries(name: &str) -> (CaptureInfo, Vec<Entry>, Timeline) {
    let (info, events) = load_fixture(name);
    let mut all = Vec::new();
    let tl = replay(&info, events, |e| {
        all.push(e.clone());
        Ok::<(), ()>(())
    })
    .unwrap();
    (info, all, tl)
}

/// Entries from the note `pm2 <cmd>` up to the next command.
fn section<'a>(all: &'a [Entry], cmd: &str) -> &'a [Entry] {
    let is_note = |e: &Entry, c: Option<&str>| match &e.kind {
        EntryKind::Note { text, .. } => c.is_none_or(|c| text == c) && text.starts_with("pm2 "),
        _ => false,
    };
    let start = all
        .iter()
        .position(|e| is_note(e, Some(cmd)))
        .unwrap_or_else(|| panic!("no note {cmd}"));
    let end = all[start + 1..]
        .iter()
        .position(|e| is_note(e, None))
        .map_or(all.len(), |i| start + 1 + i);
    &all[start..end]
}

fn lines(s: &[Entry]) -> Vec<String> {
    s.iter()
        .map(|e| {
            format!(
                "{} {}",
                e.app
                    .as_ref()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".into()),
                e.describe()
            )
        })
        .collect()
}

fn check_restart_web(version: &str) {
    let (_, all, tl) = entries(&format!("pm2-{version}"));
    let s = section(&all, "pm2 restart web");
    let text = lines(s).join("\n");
    // The request, paired with its reply, with the new pid and the latency.
    let asked = s
        .iter()
        .find(|e| {
            matches!(
                &e.kind,
                EntryKind::RequestAsked {
                    call: Pm2Call::RestartProcessId { .. },
                    ..
                }
            )
        })
        .expect(&text);
    assert_eq!(asked.app.as_ref().unwrap().to_string(), "web:0");
    let (new_pid, latency) = s
        .iter()
        .find_map(|e| match &e.kind {
            EntryKind::RequestAnswered {
                method: Some(m),
                new_pid,
                latency_ns,
                ..
            } if m == "restartProcessId" => {
                Some((new_pid.expect("new pid"), latency_ns.expect("latency")))
            }
            _ => None,
        })
        .expect(&text);
    assert!(latency > 50_000_000 && latency < 5_000_000_000, "{latency}");
    assert!(
        text.contains(&format!(
            "restartProcessId web:0 -> new pid {new_pid} after"
        )),
        "{text}"
    );
    assert!(
        text.contains("notifyByProcessId web:0 restart (manually)"),
        "{text}"
    );
    // The same pid is what getMonitorData reports afterwards.
    assert!(
        text.contains(&format!("web:0 online pid {new_pid}")),
        "{text}"
    );
    for want in [
        "web:0 web:0 stopping (daemon sends the kill signal)",
        "web:0 web:0 exited code 0 via SIGINT (daemon says)",
        "web:0 web:0 starting (fork mode)",
        "web:0 web:0 online",
        "web:0 web:0 restart (manually)",
        "web:0 web:0 stdout: draining",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
    if version.starts_with('7') {
        assert!(text.contains("process tree killed (1 pid)"), "{text}");
    } else {
        assert!(text.contains("process killed (main pid only)"), "{text}");
    }
    // The model: web's generations, the request that started the new one, its stop.
    let web = tl.app(0).unwrap();
    assert_eq!(web.name.as_deref(), Some("web"));
    let g = web
        .generations
        .iter()
        .find(|g| g.pid == Some(new_pid))
        .expect("generation of the new pid");
    let prev = &web.generations[g.seq as usize - 1];
    let r = &tl.requests[g.started_by.expect("started by a request")];
    assert_eq!(
        (r.method.as_str(), r.pm_id, r.new_pid),
        ("restartProcessId", Some(0), Some(new_pid))
    );
    assert!(r.notified.is_some());
    let stop = prev.stop.as_ref().expect("previous generation stopped");
    assert_eq!(stop.by_request, g.started_by);
    assert!(stop.confirmed.is_some() && stop.sigkill.is_none());
    assert_eq!(prev.exit.as_ref().unwrap().code, Some(0));
    assert_eq!(prev.early_exit, Some(false));
    assert!(prev.stop.as_ref().unwrap().requested.t >= r.asked);
}

#[test]
fn restart_web_704() {
    check_restart_web("7.0.4");
}

#[test]
fn restart_web_543() {
    check_restart_web("5.4.3");
}

fn check_crash_loop(version: &str) {
    let (_, all, tl) = entries(&format!("pm2-{version}"));
    let crash = tl
        .apps
        .values()
        .find(|a| a.name.as_deref() == Some("crash"))
        .expect("crash app");
    assert!(
        crash.statuses.iter().any(|s| s.status == "errored"),
        "{:?}",
        crash.statuses
    );
    // Up to errored: 16 generations, each an early exit with code 3 and its stderr line;
    // the 16th exit is the 16th unstable restart, and the daemon gives up.
    let errored_at = crash
        .statuses
        .iter()
        .find(|s| s.status == "errored")
        .unwrap()
        .at
        .t;
    let before: Vec<&Generation> = crash
        .generations
        .iter()
        .filter(|g| g.started().is_some_and(|s| s.t < errored_at))
        .collect();
    assert_eq!(
        before.len(),
        16,
        "{:#?}",
        before
            .iter()
            .map(|g| (g.seq, g.pid, g.exit.clone()))
            .collect::<Vec<_>>()
    );
    for g in &before {
        let x = g.exit.as_ref().expect("exit");
        assert_eq!(x.code, Some(3));
        assert_eq!(g.early_exit, Some(true), "gen {}", g.seq);
        assert_eq!(
            g.stderr_tail,
            vec!["boom: EADDRINUSE (simulated)".to_string()],
            "gen {}",
            g.seq
        );
    }
    assert_eq!(before.last().unwrap().unstable_restarts, Some(16));
    let text = lines(&all).join("\n");
    assert!(
        text.contains("crash:1 crash:1 errored: too many unstable restarts (16) of "),
        "{text}"
    );
    assert!(
        text.contains(
            "crash:1 crash:1 errored: restart overlimit, too many unstable restarts (16)"
        ),
        "{text}"
    );
    // The delete's notify comes after the app is gone: the daemon's error reply is shown.
    assert!(
        text.contains("notifyByProcessId crash:1 -> error \"process id doesnt exists\""),
        "{text}"
    );
    assert!(crash.deleted.is_some());
}

#[test]
fn crash_loop_704() {
    check_crash_loop("7.0.4");
}

#[test]
fn crash_loop_543() {
    check_crash_loop("5.4.3");
}

fn check_stubborn(version: &str) {
    let (_, all, tl) = entries(&format!("pm2-{version}"));
    let text = lines(section(&all, "pm2 restart stubborn")).join("\n");
    let a = tl
        .apps
        .values()
        .find(|a| a.name.as_deref() == Some("stubborn"))
        .expect("stubborn");
    let g = a
        .generations
        .iter()
        .find(|g| g.stop.as_ref().is_some_and(|s| s.sigkill.is_some()))
        .expect(&text);
    let s = g.stop.as_ref().unwrap();
    assert!(s.kill_retries >= 10, "{}", s.kill_retries);
    assert_eq!(s.sigkill_after_ms, Some(1600));
    assert_eq!(
        s.sigkill_remaining,
        if version.starts_with('7') {
            Some(1)
        } else {
            None
        }
    );
    assert_eq!(g.exit.as_ref().unwrap().signal.as_deref(), Some("SIGKILL"));
    let pid = g.pid.unwrap();
    assert!(text.contains("stubborn:2 stubborn:2 stopping"), "{text}");
    assert!(
        text.contains(&format!(
            "stubborn:2 pid {pid} still alive, retrying in 100 ms"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "stubborn:2 pid {pid} still alive after 1600 ms: SIGKILL"
        )),
        "{text}"
    );
    assert!(
        text.contains("stubborn:2 stubborn:2 exited code 0 via SIGKILL (daemon says)"),
        "{text}"
    );
    // SIGKILL arrives kill_timeout after the stop began.
    let waited = s.sigkill.unwrap().t - s.requested.t;
    assert!((1_500_000_000..2_500_000_000).contains(&waited), "{waited}");
}

#[test]
fn stubborn_sigkill_704() {
    check_stubborn("7.0.4");
}

#[test]
fn stubborn_sigkill_543() {
    check_stubborn("5.4.3");
}

fn check_update_env(version: &str) {
    let (_, all, tl) = entries(&format!("pm2-{version}"));
    let text = lines(section(&all, "pm2 restart web --update-env")).join("\n");
    assert!(text.contains("restartProcessId web:0 with "), "{text}");
    let r = tl
        .requests
        .iter()
        .find(|r| r.method == "restartProcessId" && !r.env_changes.is_empty())
        .expect("a restart with env changes");
    let keys: Vec<&str> = r.env_changes.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, vec!["FOO"], "{:?}", r.env_changes);
    assert_eq!(r.env_changes[0].change, EnvChangeKind::Added);
    // Plain restarts carry only env sections (objects), which the daemon does not merge.
    assert_eq!(
        tl.requests
            .iter()
            .filter(|r| !r.env_changes.is_empty())
            .count(),
        1
    );
}

#[test]
fn update_env_704() {
    check_update_env("7.0.4");
}

#[test]
fn update_env_543() {
    check_update_env("5.4.3");
}

/// Every request of both fixtures gets its reply, every daemon line about a pid gets an
/// app, and no message is left uninterpreted.
#[test]
fn everything_paired_and_attributed() {
    for v in ["7.0.4", "5.4.3"] {
        let (_, all, _) = entries(&format!("pm2-{v}"));
        let asked = all
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::RequestAsked { .. }))
            .count();
        let answered: Vec<&Entry> = all
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::RequestAnswered { .. }))
            .collect();
        // The CLI may disconnect before the last replies (notifyByProcessId, killMe):
        // those are reported unanswered when the connection closes.
        let unanswered: usize = all
            .iter()
            .map(|e| match &e.kind {
                EntryKind::ConnClosed { unanswered, .. } => unanswered.len(),
                _ => 0,
            })
            .sum();
        assert!(unanswered <= 8, "{v}: {unanswered}");
        assert_eq!(asked, answered.len() + unanswered, "{v}");
        assert!(answered.iter().all(|e| matches!(
            &e.kind,
            EntryKind::RequestAnswered {
                method: Some(_),
                ..
            }
        )));
        for e in &all {
            match &e.kind {
                EntryKind::RpcOther { .. } => panic!("{v}: {}", e.describe()),
                EntryKind::Daemon { log, .. } if log.pid().is_some() || log.app().is_some() => {
                    assert!(e.app.is_some(), "{v}: no app for {}", e.describe())
                }
                EntryKind::Bus(BusEvent::ProcessEvent(p)) => {
                    assert!(
                        e.app.as_ref().is_some_and(|a| a.name.is_some()),
                        "{v}: {p:?}"
                    )
                }
                EntryKind::AppLog { .. } => assert!(e.app.is_some()),
                _ => {}
            }
        }
    }
}

/// Several requests in flight on one connection are paired by id, replies in any order.
#[test]
fn pairs_out_of_order_replies() {
    use crate::wire::rpc::{encode_call, encode_reply};
    let info = CaptureInfo::default();
    let mut it = Interpreter::new(&info);
    let msg = |conn, dir, m| Stamped {
        t: 0,
        event: Event::RpcMessage {
            conn,
            dir,
            msg: WireMessage(m),
            ask: None,
            asked: None,
        },
    };
    let mut out = Vec::new();
    let mut ev = msg(
        1,
        Direction::ToDaemon,
        encode_call("getVersion", vec![serde_json::json!({})], "9:0"),
    );
    it.push_into(&ev, &mut out);
    ev = msg(
        1,
        Direction::ToDaemon,
        encode_call("getMonitorData", vec![serde_json::json!({})], "9:1"),
    );
    ev.t = 10;
    it.push_into(&ev, &mut out);
    // Same id on another connection: not confused.
    ev = msg(
        2,
        Direction::ToDaemon,
        encode_call("stopProcessId", vec![serde_json::json!(0)], "9:1"),
    );
    ev.t = 20;
    it.push_into(&ev, &mut out);
    ev = msg(
        1,
        Direction::ToClient,
        encode_reply(vec![serde_json::json!([])], "9:1"),
    );
    ev.t = 30;
    it.push_into(&ev, &mut out);
    ev = msg(
        1,
        Direction::ToClient,
        encode_reply(vec![serde_json::json!("7.0.4")], "9:0"),
    );
    ev.t = 40;
    it.push_into(&ev, &mut out);
    let ws: Vec<String> = out.iter().map(Entry::describe).collect();
    assert_eq!(ws[3], "getMonitorData -> no apps after 0.0 ms");
    assert_eq!(ws[4], "getVersion -> 7.0.4 after 0.0 ms");
    // The requests are numbered as they are asked; each reply names the one it answers,
    // a reply after its connection's other asks too.
    let asks: Vec<u64> = out[..3]
        .iter()
        .map(|e| match &e.kind {
            EntryKind::RequestAsked { ask, .. } => *ask,
            k => panic!("{k:?}"),
        })
        .collect();
    assert_eq!(asks, [1, 2, 3]);
    let answers: Vec<Option<u64>> = out[3..5]
        .iter()
        .map(|e| match &e.kind {
            EntryKind::RequestAnswered { ask, .. } => *ask,
            k => panic!("{k:?}"),
        })
        .collect();
    assert_eq!(answers, [Some(2), Some(1)]);
    match &out[4].kind {
        EntryKind::RequestAnswered { latency_ns, .. } => assert_eq!(*latency_ns, Some(40)),
        _ => panic!(),
    }
    // Closing conn 2 reports its unanswered request.
    it.push_into(
        &Stamped {
            t: 50,
            event: Event::RpcClose {
                conn: 2,
                to_client_bytes: 0,
                to_daemon_bytes: 9,
                unanswered: Vec::new(),
            },
        },
        &mut out,
    );
    assert_eq!(
        out[5].describe(),
        "client disconnected (conn 2) without replies to stopProcessId"
    );
    // A reply nobody asked for is still shown.
    ev = msg(3, Direction::ToClient, encode_reply(vec![], "1:1"));
    it.push_into(&ev, &mut out);
    assert_eq!(
        out[6].describe(),
        "reply to a request sent before the capture -> ok"
    );
    assert!(matches!(
        out[6].kind,
        EntryKind::RequestAnswered { ask: None, .. }
    ));
}

/// Events where the interpreter's one bound decides a pairing: `pm2 stop` on connection 1,
/// then `pm2 restart` on connection 2, then 1024 polls on connection 1 that are never
/// answered (the stop is forgotten behind them: 1024 requests wait per connection), then
/// the stop's reply (at `t`, which pairs with nothing) and the restart's (at `t + 1`).
/// Returns the events and `t`.
pub(crate) fn a_reply_forgotten_behind_polls() -> (Vec<Stamped>, u64) {
    use crate::pm2::exchange::MAX_WAITING_PER_CONN;
    use crate::wire::rpc::{encode_call, encode_reply};
    use serde_json::json;
    let msg = |t, conn, dir, m| Stamped {
        t,
        event: Event::RpcMessage {
            conn,
            dir,
            msg: WireMessage(m),
            ask: None,
            asked: None,
        },
    };
    let mut events = vec![
        msg(
            1,
            1,
            Direction::ToDaemon,
            encode_call("stopProcessId", vec![json!(0)], "stop"),
        ),
        msg(
            2,
            2,
            Direction::ToDaemon,
            encode_call("restartProcessId", vec![json!({"id": 0})], "restart"),
        ),
    ];
    for i in 0..MAX_WAITING_PER_CONN {
        let t = 3 + i as u64;
        let call = encode_call("getMonitorData", vec![json!({})], &format!("poll {i}"));
        events.push(msg(t, 1, Direction::ToDaemon, call));
    }
    let t = events.len() as u64 + 10;
    events.push(msg(t, 1, Direction::ToClient, encode_reply(vec![], "stop")));
    events.push(msg(
        t + 1,
        2,
        Direction::ToClient,
        encode_reply(vec![], "restart"),
    ));
    (events, t)
}

/// The timeline keeps no pairing of its own: a reply answers the request its entry names,
/// and a reply the interpreter did not pair (its request forgotten under the one bound)
/// answers none, though its connection and id match a request the timeline holds.
#[test]
fn the_timeline_follows_the_interpreters_pairing() {
    let (events, t) = a_reply_forgotten_behind_polls();
    let tl = replay(&CaptureInfo::default(), events, |_| Ok::<(), ()>(())).unwrap();
    let by_method = |m: &str| tl.requests.iter().find(|r| r.method == m).unwrap();
    assert_eq!(by_method("stopProcessId").answered, None);
    assert_eq!(by_method("restartProcessId").answered, Some(t + 1));
    assert_eq!(tl.requests.len(), 2);
}

/// A reply answers the request of its number asked at its instant: entries of another
/// numbering (from 1 again) do not answer the earlier requests that bear the same numbers,
/// and numbers that do not grow with time (the recorder numbers requests as their copies
/// reach it) still find their requests.
#[test]
fn asks_numbered_anew_do_not_answer_earlier_requests() {
    let info = CaptureInfo::default();
    let stop = |t, ask| Entry {
        t,
        source: crate::event::Source::Rpc,
        app: None,
        kind: EntryKind::RequestAsked {
            conn: 1,
            id: format!("{t}"),
            ask,
            call: Pm2Call::StopProcessId {
                target: Some(crate::pm2::meaning::Target::Id(0)),
            },
        },
    };
    let answer = |t: u64, ask, asked: u64| Entry {
        t,
        source: crate::event::Source::Rpc,
        app: None,
        kind: EntryKind::RequestAnswered {
            conn: 1,
            id: String::new(),
            ask: Some(ask),
            method: Some("stopProcessId".into()),
            latency_ns: Some(t - asked),
            outcome: Outcome::Ok,
            new_pid: None,
            procs: Vec::new(),
            result: None,
        },
    };
    let mut tl = Timeline::new(&info);
    tl.apply(&stop(1, 1));
    tl.apply(&stop(2, 2));
    tl.apply(&stop(3, 1));
    tl.apply(&answer(4, 1, 3));
    let answered: Vec<_> = tl.requests.iter().map(|r| r.answered).collect();
    assert_eq!(answered, [None, None, Some(4)]);

    // Numbered 48 then 41, in time order.
    let mut tl = Timeline::new(&info);
    tl.apply(&stop(1, 48));
    tl.apply(&stop(2, 41));
    tl.apply(&answer(3, 41, 2));
    tl.apply(&answer(4, 48, 1));
    let answered: Vec<_> = tl.requests.iter().map(|r| r.answered).collect();
    assert_eq!(answered, [Some(4), Some(3)]);
}

#[test]
fn log_chunks_split_into_lines() {
    let info = CaptureInfo::default();
    let mut it = Interpreter::new(&info);
    let m = crate::wire::amp::Message::new(vec![
        crate::wire::amp::Arg::Str("log:err".into()),
        crate::wire::amp::Arg::json(
            serde_json::json!({"process": {"pm_id": 1, "name": "api"}, "at": 1, "data": "Error: x\n    at y\n"}),
        ),
    ]);
    let out = it.push(&Stamped {
        t: 0,
        event: Event::BusMessage {
            msg: WireMessage(m),
        },
    });
    let ws: Vec<String> = out.iter().map(Entry::describe).collect();
    assert_eq!(ws, vec!["api:1 stderr: Error: x", "api:1 stderr:     at y"]);
    assert!(out.iter().all(|e| matches!(
        e.kind,
        EntryKind::AppLog {
            stream: Stream::Err,
            ..
        }
    )));
}

#[test]
fn unknown_things_are_kept() {
    let info = CaptureInfo::default();
    let mut it = Interpreter::new(&info);
    let call =
        crate::wire::rpc::encode_call("frobnicate", vec![serde_json::json!({"x": 1})], "1:0");
    let out = it.push(&Stamped {
        t: 0,
        event: Event::RpcMessage {
            conn: 1,
            dir: Direction::ToDaemon,
            msg: WireMessage(call),
            ask: None,
            asked: None,
        },
    });
    assert_eq!(out[0].describe(), "frobnicate {\"x\":1}");
    let odd = crate::wire::amp::Message::new(vec![crate::wire::amp::Arg::Raw(vec![1, 2, 3])]);
    let out = it.push(&Stamped {
        t: 0,
        event: Event::RpcMessage {
            conn: 1,
            dir: Direction::ToDaemon,
            msg: WireMessage(odd.clone()),
            ask: None,
            asked: None,
        },
    });
    assert_eq!(
        out[0].describe(),
        "message to daemon, neither request nor reply: <3 raw bytes>"
    );
    let out = it.push(&Stamped {
        t: 0,
        event: Event::BusMessage {
            msg: WireMessage(odd),
        },
    });
    assert!(out[0].describe().starts_with("bus (not an event)"));
    let ev = crate::wire::amp::Message::new(vec![
        crate::wire::amp::Arg::Str("pm2:kill".into()),
        crate::wire::amp::Arg::json(serde_json::json!({"status": "killed"})),
    ]);
    let out = it.push(&Stamped {
        t: 0,
        event: Event::BusMessage {
            msg: WireMessage(ev),
        },
    });
    assert_eq!(out[0].describe(), "bus pm2:kill {\"status\":\"killed\"}");
    let out = it.push(&Stamped {
        t: 0,
        event: Event::Proc(Box::new(proc_exit(5))),
    });
    let w = out[0].describe();
    assert!(w.contains("exit") && w.contains('5'), "{w}");
}

/// A process-watcher exit event for `pid`, in the watcher's shape when `ProcEvent` has it,
/// else in the placeholder shape (`{"kind":"exit","pid":..}`).
fn proc_exit(pid: i64) -> crate::event::ProcEvent {
    let watcher = serde_json::json!({"kind": "exit",
        "who": {"pid": pid, "start": null, "ppid": 1, "app": null, "how": null, "daemon": false, "cmd": null},
        "status": {"kind": "code", "code": 0}, "status_from": "netlink", "via": "netlink",
        "timing": {"how": "kernel", "kernel_ns": 0, "observed_ns": 0}, "lived_ns": null, "held": [], "in_tree": null});
    serde_json::from_value(watcher)
        .or_else(|_| {
            serde_json::from_value(
                serde_json::json!({"kind": "exit", "pid": pid, "detail": "exit 0"}),
            )
        })
        .expect("a ProcEvent exit in one of the known shapes")
}

/// A process-watcher exit of a generation's pid gives its end.
#[test]
fn proc_exit_marks_generation() {
    let (info, mut events) = load_fixture("pm2-7.0.4");
    // Find web's first pid from a getMonitorData reply, then add an OS exit for it.
    let (_, all, _) = entries("pm2-7.0.4");
    let pid = all
        .iter()
        .find_map(|e| match &e.kind {
            EntryKind::RequestAnswered {
                new_pid: Some(p), ..
            } => Some(*p),
            _ => None,
        })
        .unwrap();
    let last_t = events.last().unwrap().t;
    events.push(Stamped {
        t: last_t + 1,
        event: Event::Proc(Box::new(proc_exit(pid))),
    });
    let tl = replay(&info, events, |_| Ok::<(), ()>(())).unwrap();
    let g = tl
        .app(0)
        .unwrap()
        .generations
        .iter()
        .find(|g| g.pid == Some(pid))
        .unwrap();
    assert_eq!(g.os_exit.map(|t| t.t), Some(last_t + 1));
    let seen = tl
        .app(0)
        .unwrap()
        .processes
        .iter()
        .find(|p| p.pid == pid)
        .expect("seen process");
    assert_eq!(seen.exit.map(|t| t.t), Some(last_t + 1));
}

#[test]
fn daemon_time_conversion() {
    let info = CaptureInfo {
        wall_ref_ns: 1_000_000_000_000,
        mono_ref_ns: 5_000,
        ..Default::default()
    };
    let tl = Timeline::new(&info);
    let t = tl.daemon_time(1_000_002);
    assert_eq!(t.t, 5_000 + 2_000_000);
    assert_eq!(t.precision, Precision::DaemonMs);
    // Far before the monotonic origin: clamped, not wrapped.
    assert_eq!(tl.daemon_time(0).t, 0);
}

#[test]
fn daemon_line_kinds_get_apps() {
    let (_, all, _) = entries("pm2-5.4.3");
    let n = all
        .iter()
        .filter(|e| {
            matches!(
                &e.kind,
                EntryKind::Daemon {
                    log: DaemonLogLine::ProcessKilled { .. },
                    ..
                }
            )
        })
        .filter(|e| e.app.is_some())
        .count();
    assert!(n >= 4, "{n}");
    assert!(all.iter().any(|e| matches!(&e.kind, EntryKind::Bus(BusEvent::ProcessEvent(p)) if p.event == ProcessEventKind::RestartOverlimit)));
}

/// A long capture streams: polling traffic leaves nothing behind in the model, and the
/// interpreter's pending requests do not pile up.
#[test]
fn long_polling_capture_stays_small() {
    use crate::wire::rpc::{encode_call, encode_reply};
    let info = CaptureInfo::default();
    let mon = serde_json::json!([{"pid": 42, "name": "web", "pm_id": 0, "pm2_env": {"status": "online", "pm_uptime": 1}}]);
    let events = (0..50_000u64).flat_map(|i| {
        let id = format!("{i}:0");
        let conn = i;
        [
            Stamped {
                t: i * 10,
                event: Event::RpcConnect { conn, peer: None },
            },
            Stamped {
                t: i * 10 + 1,
                event: Event::RpcMessage {
                    conn,
                    dir: Direction::ToDaemon,
                    msg: WireMessage(encode_call(
                        "getMonitorData",
                        vec![serde_json::json!({})],
                        &id,
                    )),
                    ask: None,
                    asked: None,
                },
            },
            Stamped {
                t: i * 10 + 2,
                event: Event::RpcMessage {
                    conn,
                    dir: Direction::ToClient,
                    msg: WireMessage(encode_reply(vec![mon.clone()], &id)),
                    ask: None,
                    asked: None,
                },
            },
            // Every other client leaves without its reply... and without a close record.
            Stamped {
                t: i * 10 + 3,
                event: Event::RpcMessage {
                    conn,
                    dir: Direction::ToDaemon,
                    msg: WireMessage(encode_call("getVersion", vec![], &format!("{i}:1"))),
                    ask: None,
                    asked: None,
                },
            },
        ]
    });
    let mut n = 0u64;
    let tl = replay(&info, events, |_| {
        n += 1;
        Ok::<(), ()>(())
    })
    .unwrap();
    assert_eq!(n, 200_000);
    assert!(tl.requests.is_empty());
    let web = tl.app(0).unwrap();
    assert_eq!(web.generations.len(), 1);
    assert_eq!(web.statuses.len(), 1);
}

/// A bus message `name` with JSON `payload`, as the recorder stores one.
fn bus_message(name: &str, payload: serde_json::Value) -> Event {
    Event::BusMessage {
        msg: WireMessage(crate::wire::amp::Message::new(vec![
            crate::wire::amp::Arg::Str(name.into()),
            crate::wire::amp::Arg::json(payload),
        ])),
    }
}

/// An app's output lines name their app without a copy of its name per line: every line
/// of one app shares one name, and the name is the one its lines carry (a name learnt
/// later, from a process event, is the one the following lines share).
#[test]
fn output_lines_share_their_apps_name() {
    let info = CaptureInfo::default();
    let bus = bus_message;
    let line = |t: u64, pm_id: u64, name: &str| Stamped {
        t,
        event: bus(
            "log:out",
            serde_json::json!({"process": {"pm_id": pm_id, "name": name, "rev": null}, "data": format!("line {t}\n"), "at": t}),
        ),
    };
    let mut interp = Interpreter::new(&info);
    let mut apps = Vec::new();
    let events = [
        line(1, 0, "web"),
        line(2, 0, "web"),
        line(3, 1, "api"),
        line(4, 0, "web"),
        line(5, 0, "web2"),
        line(6, 0, "web2"),
    ];
    for ev in &events {
        for e in interp.push(ev) {
            assert!(matches!(e.kind, EntryKind::AppLog { .. }), "{e:?}");
            apps.push(e.app.expect("an app"));
        }
    }
    let names: Vec<(u64, &str)> = apps
        .iter()
        .map(|a| (a.pm_id, a.name.as_deref().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            (0, "web"),
            (0, "web"),
            (1, "api"),
            (0, "web"),
            (0, "web2"),
            (0, "web2")
        ]
    );
    let shared = |i: usize, j: usize| {
        std::sync::Arc::ptr_eq(
            apps[i].name.as_ref().unwrap(),
            apps[j].name.as_ref().unwrap(),
        )
    };
    assert!(shared(0, 1) && shared(1, 3), "web's lines share one name");
    assert!(shared(4, 5), "web2's lines share one name");
}

/// Days of a crash loop: the model keeps the recent generations and forgets the oldest.
#[test]
fn endless_crash_loop_is_bounded() {
    let info = CaptureInfo::default();
    let bus = bus_message;
    let n = MAX_GENERATIONS as u64 + 5_000;
    let events = (0..n).flat_map(move |i| {
        let p = serde_json::json!({"name": "c", "pm_id": 0, "status": "online", "exit_code": 3});
        [
            Stamped { t: i * 100, event: bus("log:PM2", serde_json::json!({"at": 1, "data": "App [c:0] starting in -fork mode-\n"})) },
            Stamped { t: i * 100 + 1, event: bus("process:event", serde_json::json!({"event": "online", "at": 1, "process": p.clone()})) },
            Stamped { t: i * 100 + 2, event: bus("log:err", serde_json::json!({"at": 1, "process": {"pm_id": 0, "name": "c"}, "data": "boom\n"})) },
            Stamped { t: i * 100 + 3, event: bus("process:event", serde_json::json!({"event": "exit", "at": 1, "process": p})) },
        ]
    });
    let tl = replay(&info, events, |_| Ok::<(), ()>(())).unwrap();
    let a = tl.app(0).unwrap();
    assert!(a.generations.len() <= MAX_GENERATIONS);
    assert_eq!(a.generations_dropped + a.generations.len() as u64, n);
    assert_eq!(a.generations.last().unwrap().seq as u64, n - 1);
    let with_stderr = a
        .generations
        .iter()
        .filter(|g| !g.stderr_tail.is_empty())
        .count();
    assert_eq!(with_stderr, STDERR_GENERATIONS);
    assert!(a.statuses.len() <= MAX_STATUSES);
    assert!(a
        .generations
        .iter()
        .all(|g| g.exit.is_some() && g.early_exit.is_some()));
}

/// Cluster mode: the daemon (the cluster master) holds the app's listening socket; a
/// snapshot ascribes it to the one cluster app, and its line names it.
#[test]
fn the_cluster_masters_socket_is_the_cluster_apps_address() {
    use crate::event::proc::{
        AppRef as Who, ProcSnap, Proto, Snapshot, SnapshotReason, SocketHold,
    };
    use crate::event::ProcEvent;
    let info = CaptureInfo::default();
    let mut tl = Timeline::new(&info);
    let app = Some(AppRef {
        pm_id: 1,
        name: Some("web".into()),
    });
    // `App [web:1] starting in -cluster mode-` tells the exec mode.
    tl.apply(&Entry {
        t: 10,
        source: crate::event::Source::Bus,
        app: app.clone(),
        kind: EntryKind::Daemon {
            at: None,
            log: DaemonLogLine::Starting {
                app: "web".into(),
                id: 1,
                mode: "cluster".into(),
            },
        },
    });
    let hold = |addr: &str, proto: Proto, port: Option<u16>| SocketHold {
        proto,
        addr: addr.into(),
        port,
        inode: 1,
        pid: 50,
        start: 1,
        app: None,
        daemon: true,
        in_tree: true,
    };
    let worker = ProcSnap {
        pid: 51,
        ppid: 50,
        pgid: 50,
        sid: 50,
        start: 2,
        state: "S".into(),
        cmdline: vec!["node".into(), "ProcessContainer.js".into()],
        app: Some(Who {
            pm2_home: "/h".into(),
            pm_id: 1,
            name: "web".into(),
            generation: Some(0),
            unique_id: None,
        }),
        how: None,
        daemon: false,
        in_tree: true,
    };
    let snap = ProcEvent::Snapshot(Snapshot {
        reason: SnapshotReason::Start,
        processes: vec![worker],
        sockets: vec![
            hold("/h/rpc.sock", Proto::Unix, None),
            hold("/h/pub.sock", Proto::Unix, None),
            hold("127.0.0.1:4000", Proto::Tcp, Some(4000)),
        ],
        env: vec![],
        notes: vec![],
        cost_us: 1,
        host: vec![],
        paths: vec![],
    });
    let words = snap.summary();
    assert!(
        words.contains("port 127.0.0.1:4000 held by pid 50 (pm2 daemon), the cluster master")
            && !words.contains("rpc.sock")
            && !words.contains("no app holds"),
        "{words}"
    );
    tl.apply(&Entry {
        t: 20,
        source: crate::event::Source::Proc,
        app: None,
        kind: EntryKind::Proc {
            event: Box::new(snap),
        },
    });
    let a = tl.app(1).expect("web:1");
    let s = a.snapshots.last().expect("a snapshot of web:1");
    assert_eq!(s.sockets.len(), 1, "{:?}", s.sockets);
    assert!(s.sockets[0].master && s.sockets[0].port == Some(4000));
}
