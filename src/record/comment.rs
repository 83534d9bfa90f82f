//! The capture's packet comments: one short line per record, shown by Wireshark and tshark.

use crate::event::{Direction, Event};

/// A short human-readable comment for the capture's packet.
pub(crate) fn comment(ev: &Event) -> String {
    use crate::wire::rpc;
    match ev {
        Event::RpcMessage { conn, dir, msg } => match dir {
            Direction::ToDaemon => match rpc::parse_call(&msg.0) {
                Some(c) => format!("conn {conn} client->daemon call {} id {}", c.method, c.id),
                None => format!("conn {conn} client->daemon message"),
            },
            Direction::ToClient => match rpc::parse_reply(&msg.0) {
                Some(r) => format!(
                    "conn {conn} daemon->client reply id {}{}",
                    r.id,
                    if r.outcome.is_err() { " (error)" } else { "" }
                ),
                None => format!("conn {conn} daemon->client message"),
            },
        },
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
