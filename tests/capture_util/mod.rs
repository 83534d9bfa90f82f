//! Helpers shared by the capture tests: sample capture info and one event of every kind.
#![allow(dead_code)]

use pm2_trace::capture::{CaptureReader, CaptureWriter};
use pm2_trace::event::{
    Asked, CaptureInfo, Direction, Event, NoteLevel, PeerCred, ProcEvent, Stamped, WireMessage,
};
use pm2_trace::wire::amp::{Arg, Message};
use serde_json::json;
use std::path::Path;

/// The monotonic reference of the sample info; events are stamped after it.
pub const MONO_REF: u64 = 5_000_000_000_000;
/// 2024-05-01T12:00:00Z in ns.
pub const WALL_REF: i128 = 1_714_564_800_000_000_000;

pub fn sample_info() -> CaptureInfo {
    CaptureInfo {
        tool: "pm2-trace".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        host: "testhost".into(),
        kernel: "Linux 6.1.0-test x86_64".into(),
        pm2_version: Some("5.4.3".into()),
        pm2_home: "/tmp/pm2home".into(),
        daemon_pid: Some(4242),
        wall_ref_ns: WALL_REF,
        mono_ref_ns: MONO_REF,
        redaction: "values".into(),
        proc_mode: "netlink".into(),
        command_line: vec!["pm2-trace".into(), "record".into()],
        rpc_paired: true,
    }
}

/// The name of an event's kind. Exhaustive on purpose: a new Event variant fails to compile
/// here until `all_events` gets a sample of it.
pub fn kind(e: &Event) -> &'static str {
    match e {
        Event::Note { .. } => "note",
        Event::RpcConnect { .. } => "rpc_connect",
        Event::RpcRefused { .. } => "rpc_refused",
        Event::RpcMessage { .. } => "rpc_message",
        Event::RpcUndecodable { .. } => "rpc_undecodable",
        Event::RpcClose { .. } => "rpc_close",
        Event::BusMessage { .. } => "bus_message",
        Event::BusLink { .. } => "bus_link",
        Event::Proc(_) => "proc",
        Event::RecordingStopped { .. } => "recording_stopped",
        Event::LogLine(_) => "log_line",
    }
}

pub fn restart_call() -> WireMessage {
    WireMessage(Message::new(vec![
        Arg::json(json!({"type": "call", "method": "restartProcessId"})),
        Arg::json(json!({"id": 0, "env": {"NODE_ENV": "<redacted:1f2e3d4c5b6a>"}})),
        Arg::Str("1:7".into()),
    ]))
}

/// One event of every kind (and both RPC directions), at increasing instants.
pub fn all_events() -> Vec<Stamped> {
    let events = vec![
        Event::Note {
            level: NoteLevel::Info,
            text: "recording started; proxy on rpc.sock".into(),
        },
        Event::Note {
            level: NoteLevel::Warning,
            text: "unicode ✓ \"quoted\" \\ back\nslash".into(),
        },
        Event::Note {
            level: NoteLevel::Error,
            text: String::new(),
        },
        Event::RpcConnect {
            conn: 1,
            peer: Some(PeerCred {
                pid: 1234,
                uid: 0,
                gid: 0,
            }),
        },
        Event::RpcConnect {
            conn: 2,
            peer: None,
        },
        Event::RpcRefused {
            peer: PeerCred {
                pid: 99,
                uid: 1000,
                gid: 1000,
            },
            reason: "uid 1000 not admitted".into(),
        },
        Event::RpcMessage {
            conn: 1,
            dir: Direction::ToDaemon,
            msg: restart_call(),
            ask: Some(1),
            asked: None,
        },
        Event::RpcMessage {
            conn: 1,
            dir: Direction::ToClient,
            msg: WireMessage(Message::new(vec![
                Arg::json(json!({"type": "reply"})),
                Arg::json(json!([{"pm_id": 0, "pid": 4243}])),
                Arg::Raw(vec![0, 1, 2, 255]),
            ])),
            ask: Some(1),
            asked: Some(Box::new(Asked {
                t: MONO_REF + 1_000,
                method: "restartProcessId".into(),
                pm_id: Some(0),
            })),
        },
        Event::RpcUndecodable {
            conn: 2,
            dir: Direction::ToDaemon,
            offset: 17,
            error: "bad AMP version 7".into(),
        },
        Event::RpcClose {
            conn: 1,
            to_client_bytes: 512,
            to_daemon_bytes: 256,
            unanswered: vec!["getVersion".into()],
        },
        Event::BusMessage {
            msg: WireMessage(Message::new(vec![
                Arg::Str("process:event".into()),
                Arg::json(json!({"event": "exit", "manually": false, "process": {"pm_id": 0}})),
            ])),
        },
        Event::BusLink {
            up: true,
            detail: "connected to pub.sock".into(),
        },
        Event::BusLink {
            up: false,
            detail: "EOF".into(),
        },
        Event::Proc(Box::new(ProcEvent::Lost {
            why: "test: netlink buffer overrun".into(),
        })),
        Event::LogLine(Box::new(pm2_trace::sources::logs::LogLine {
            stream: pm2_trace::sources::logs::LogStream::Daemon,
            app: None,
            file: 0,
            offset: 120,
            at_ms: Some(1_795_556_677_000),
            precision: pm2_trace::sources::logs::stamp::LinePrecision::Second,
            inherited: false,
            level: Some("log".into()),
            text: "App [web:0] online".into(),
            cut: false,
        })),
        Event::RecordingStopped {
            reason: "test marker".into(),
        },
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Stamped {
            t: MONO_REF + 1_000_000 * (i as u64 + 1),
            event,
        })
        .collect()
}

/// A human-readable comment for an event.
pub fn comment_for(ev: &Stamped) -> String {
    format!(
        "{} at +{} ms",
        kind(&ev.event),
        (ev.t - MONO_REF) / 1_000_000
    )
}

/// Write `events` to a new capture at `path`.
pub fn write_capture(path: &Path, events: &[Stamped]) {
    let mut w = CaptureWriter::create(path, &sample_info(), false).expect("create capture");
    for ev in events {
        w.write(ev, &comment_for(ev)).expect("write event");
    }
    w.finish().expect("finish capture");
}

/// Read every event of a capture, failing on any error.
pub fn read_all(path: &Path) -> (CaptureReader, Vec<Stamped>) {
    let mut r = CaptureReader::open(path).expect("open capture");
    let mut out = Vec::new();
    for ev in r.by_ref() {
        out.push(ev.expect("read event"));
    }
    (r, out)
}
