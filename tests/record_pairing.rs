//! The recorder pairs each RPC request with its reply in its tap decoder, as it decodes
//! them, and the capture carries that pairing: recorded from a real daemon under concurrent
//! clients with several requests in flight per connection, every reply is paired with its
//! own request, each request has its own number, and the interpreter's reading of the
//! stored pairing is what pairing the same records again (as for a capture recorded before
//! the recorder paired) gives.

#[path = "support/pm2.rs"]
mod pm2;
#[path = "support/recorder.rs"]
mod recorder;

use pm2::Pm2;
use pm2_trace::capture::CaptureReader;
use pm2_trace::event::{CaptureInfo, Direction, Event, Stamped};
use pm2_trace::timeline::{Entry, EntryKind, Interpreter};
use pm2_trace::wire::amp::Decoder;
use pm2_trace::wire::rpc;
use recorder::Recorder;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// On one connection, send every request at once, then read all the replies.
fn pipelined(path: &Path, calls: &[(&str, String)]) {
    let mut s =
        UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = Vec::new();
    for (method, id) in calls {
        out.extend(rpc::encode_call(method, vec![serde_json::json!({})], id).encode());
    }
    s.write_all(&out).unwrap();
    let mut dec = Decoder::default();
    let mut buf = vec![0u8; 65536];
    let mut replies = 0;
    while replies < calls.len() {
        if let Some(m) = dec.next() {
            rpc::parse_reply(&m.unwrap()).expect("a reply");
            replies += 1;
            continue;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "daemon closed the connection");
        dec.push(&buf[..n]);
    }
}

/// The entries of `events`, each request's number replaced by its rank among the requests
/// (the recorder numbers requests as their copies reach it, which under load is not
/// always their time order; pairing the records again numbers them in time order).
fn entries(info: &CaptureInfo, events: &[Stamped]) -> Vec<Entry> {
    let mut interp = Interpreter::new(info);
    let mut rank = HashMap::new();
    let mut out: Vec<Entry> = events.iter().flat_map(|e| interp.push(e)).collect();
    for e in &mut out {
        match &mut e.kind {
            EntryKind::RequestAsked { ask, .. } => {
                let n = rank.len() as u64;
                *ask = *rank.entry(*ask).or_insert(n);
            }
            EntryKind::RequestAnswered { ask: Some(ask), .. } => *ask = rank[ask],
            _ => {}
        }
    }
    out
}

#[test]
fn concurrent_clients_are_paired_in_the_tap_and_read_from_the_capture() {
    let pm2 = Pm2::start("7.0.4");
    pm2.start_app("app0", "well-behaved.js", pm2::free_port(), &[]);
    let cap = pm2.home().join("cap.bin");
    let rec = Recorder::start(pm2.home(), &cap, &["--quiet"]);
    let rpc_sock = pm2.rpc_sock();
    const CLIENTS: usize = 64;
    const PER_CLIENT: usize = 4;
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let p = rpc_sock.clone();
            std::thread::spawn(move || {
                let calls: Vec<(&str, String)> = (0..PER_CLIENT)
                    .map(|k| {
                        let m = if k % 2 == 0 {
                            "getMonitorData"
                        } else {
                            "getVersion"
                        };
                        (m, format!("c{i}:{k}"))
                    })
                    .collect();
                pipelined(&p, &calls);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a client failed");
    }
    // And the pm2 CLI's own exchanges.
    assert!(pm2.cmd(&["restart", "app0"]).status.success());
    assert!(rec.stop().success());

    let reader = CaptureReader::open(&cap).unwrap();
    let info = reader.info().clone();
    assert!(info.rpc_paired, "a new capture says the recorder paired");
    let events: Vec<Stamped> = reader.map(Result::unwrap).collect();

    // Every request has a number of its own, and every reply names the request of its own
    // connection and id.
    let mut requests: HashMap<u64, (u64, String, String, u64)> = HashMap::new();
    let (mut calls, mut replies) = (0, 0);
    for ev in &events {
        let Event::RpcMessage {
            conn,
            dir,
            msg,
            ask,
            asked,
        } = &ev.event
        else {
            continue;
        };
        match dir {
            Direction::ToDaemon => {
                // `[{"j": {"type": "call", "method": ..}}, {"s": id}]`
                let stored = serde_json::to_value(msg).unwrap();
                if stored[0]["j"]["type"] != "call" {
                    continue;
                }
                let method = stored[0]["j"]["method"].as_str().unwrap().to_owned();
                let id = stored[1]["s"].as_str().unwrap_or_default().to_owned();
                let ask = ask.unwrap_or_else(|| panic!("request without a number: {ev:?}"));
                let again = requests.insert(ask, (*conn, id, method, ev.t));
                assert!(again.is_none(), "request number {ask} given twice");
                calls += 1;
            }
            Direction::ToClient => {
                let Some(reply) = rpc::parse_reply(&msg.0) else {
                    continue;
                };
                let ask = ask.unwrap_or_else(|| panic!("reply paired with nothing: {ev:?}"));
                let (c, id, method, t) = &requests[&ask];
                assert_eq!((c, id), (conn, &reply.id), "reply {ev:?}");
                let asked = asked.as_ref().expect("a paired reply says what it answers");
                assert_eq!((&asked.method, asked.t), (method, *t));
                replies += 1;
            }
        }
    }
    assert!(calls >= CLIENTS * PER_CLIENT, "{calls} requests");
    assert_eq!(replies, calls, "every request answered");

    // The interpreter reads the stored pairing; pairing the same records again, as for a
    // capture recorded before the recorder paired, gives the same entries.
    let stripped: Vec<Stamped> = events
        .iter()
        .cloned()
        .map(|mut e| {
            match &mut e.event {
                Event::RpcMessage { ask, asked, .. } => (*ask, *asked) = (None, None),
                Event::RpcClose { unanswered, .. } => unanswered.clear(),
                _ => {}
            }
            e
        })
        .collect();
    let old = CaptureInfo {
        rpc_paired: false,
        ..info.clone()
    };
    assert_eq!(entries(&info, &events), entries(&old, &stripped));
}
