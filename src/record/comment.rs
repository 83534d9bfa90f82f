//! The capture's packet comments: one short line per record, shown by Wireshark and tshark.

use crate::event::{Direction, Event};
use crate::timeline::{Entry, EntryKind};

/// A short human-readable comment for the capture's packet. `entries` are what the
/// interpreter made of the event, when it ran: an RPC message's comment is read from them
/// (the message is decoded once); without them the message is read here.
pub(crate) fn comment(ev: &Event, entries: &[Entry]) -> String {
    match ev {
        Event::RpcMessage { conn, dir, msg, .. } => {
            let said = entries.iter().find_map(|e| match &e.kind {
                EntryKind::RequestAsked { id, call, .. } => Some(Said::Call(call.method(), id)),
                EntryKind::RequestAnswered { id, outcome, .. } => Some(Said::Reply(
                    id,
                    matches!(outcome, crate::timeline::Outcome::Error { .. }),
                )),
                EntryKind::RpcOther { .. } => Some(Said::Other),
                _ => None,
            });
            match said {
                Some(said) => said.comment(*conn, *dir),
                None => decode_and_comment(*conn, *dir, &msg.0),
            }
        }
        Event::BusMessage { msg } => format!(
            "bus {}",
            msg.0.args.first().and_then(|a| a.as_str()).unwrap_or("?")
        ),
        Event::RpcConnect { conn, peer } => match peer {
            Some(p) => format!("conn {conn} opened by pid {} uid {}", p.pid, p.uid),
            None => format!("conn {conn} opened"),
        },
        Event::RpcClose { conn, .. } => format!("conn {conn} closed"),
        Event::RpcRefused { peer, .. } => format!("refused pid {} uid {}", peer.pid, peer.uid),
        Event::RpcUndecodable { conn, offset, .. } => {
            format!("conn {conn} undecodable from byte {offset}")
        }
        Event::BusLink { up, detail } => {
            format!("bus {}: {detail}", if *up { "up" } else { "down" })
        }
        Event::Note { text, .. } => text.clone(),
        Event::RecordingStopped { reason } => format!("recording stopped: {reason}"),
        Event::Proc(p) => format!("{p:?}"),
        Event::LogLine(l) => format!("log line at byte {}", l.offset),
    }
}

/// What an RPC message says, as far as its comment goes.
enum Said<'a> {
    Call(&'a str, &'a str),
    /// A reply's id, and whether it is an error.
    Reply(&'a str, bool),
    Other,
}

impl Said<'_> {
    fn comment(&self, conn: u64, dir: Direction) -> String {
        match (self, dir) {
            (Said::Call(method, id), _) => {
                format!("conn {conn} client->daemon call {method} id {id}")
            }
            (Said::Reply(id, error), _) => format!(
                "conn {conn} daemon->client reply id {id}{}",
                if *error { " (error)" } else { "" }
            ),
            (Said::Other, Direction::ToDaemon) => format!("conn {conn} client->daemon message"),
            (Said::Other, Direction::ToClient) => format!("conn {conn} daemon->client message"),
        }
    }
}

/// The comment of an RPC message no interpreter has read.
fn decode_and_comment(conn: u64, dir: Direction, msg: &crate::wire::amp::Message) -> String {
    use crate::wire::rpc;
    match dir {
        Direction::ToDaemon => match rpc::parse_call(msg) {
            Some(c) => Said::Call(&c.method, &c.id).comment(conn, dir),
            None => Said::Other.comment(conn, dir),
        },
        Direction::ToClient => match rpc::parse_reply(msg) {
            Some(r) => Said::Reply(&r.id, r.outcome.is_err()).comment(conn, dir),
            None => Said::Other.comment(conn, dir),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CaptureInfo, Stamped, WireMessage};
    use crate::timeline::Interpreter;
    use crate::wire::amp::{Arg, Message};
    use crate::wire::rpc::{encode_call, encode_reply};
    use serde_json::json;

    #[test]
    fn read_from_the_interpreter_or_decoded_the_comment_is_the_same() {
        let error = Message::new(vec![
            Arg::json(json!({"error": "Process not found"})),
            Arg::Str("2".into()),
        ]);
        let cases = [
            (
                Direction::ToDaemon,
                encode_call("softReloadProcessId", vec![json!({"id": 0})], "1"),
                "conn 7 client->daemon call softReloadProcessId id 1",
            ),
            (
                Direction::ToDaemon,
                encode_call("getVersion", vec![], "2"),
                "conn 7 client->daemon call getVersion id 2",
            ),
            (
                Direction::ToClient,
                encode_reply(vec![json!("7.0.4")], "1"),
                "conn 7 daemon->client reply id 1",
            ),
            (
                Direction::ToClient,
                error,
                "conn 7 daemon->client reply id 2 (error)",
            ),
            (
                Direction::ToDaemon,
                Message::new(vec![Arg::Raw(vec![1, 2])]),
                "conn 7 client->daemon message",
            ),
            (
                Direction::ToClient,
                Message::new(vec![Arg::Str("x".into())]),
                "conn 7 daemon->client message",
            ),
        ];
        let mut interp = Interpreter::new(&CaptureInfo::default());
        for (dir, msg, want) in cases {
            let ev = Event::RpcMessage {
                conn: 7,
                dir,
                msg: WireMessage(msg),
                ask: None,
                asked: None,
            };
            let entries = interp.push(&Stamped {
                t: 1,
                event: ev.clone(),
            });
            assert!(!entries.is_empty());
            assert_eq!(comment(&ev, &entries), want);
            assert_eq!(comment(&ev, &[]), want);
        }
    }
}
