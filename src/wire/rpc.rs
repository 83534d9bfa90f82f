//! pm2-axon-rpc on top of AMP: a request is `[j:{"type":"call","method":M,"args":[...]}, s:<id>]`,
//! a reply `[j:{"args":[...]}, s:<id>]` or `[j:{"error":..,"stack":..}, s:<id>]`.
//! Replies are matched to requests by id ([`crate::pm2::exchange::Exchanges`]); one connection may
//! carry several in flight.

use super::amp::{Arg, Message};
use super::json::Node;
use serde_json::Value;

/// A decoded RPC request; its arguments are views borrowed from the message's text (a
/// restart's arguments carry the caller's whole environment: never built into a tree or
/// copied to be read).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call<'a> {
    pub(crate) method: std::borrow::Cow<'a, str>,
    pub(crate) args: Vec<Node<'a>>,
    pub(crate) id: String,
}

/// A decoded RPC reply; its arguments are views borrowed from the message's text (replies
/// such as getMonitorData's are large and are never built into trees).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<'a> {
    pub id: String,
    pub outcome: Result<Vec<Node<'a>>, RemoteError>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RemoteError {
    pub message: String,
    pub stack: Option<String>,
}

/// Read a request sent by a pm2 client. `None` if the message is not shaped like one.
pub(crate) fn parse_call(msg: &Message) -> Option<Call<'_>> {
    let body = msg.args.first()?.as_payload()?.node();
    if body.get("type")?.as_str()? != "call" {
        return None;
    }
    let method = body.get("method")?.as_str()?;
    let args = body.get("args").and_then(|a| a.items()).unwrap_or_default();
    let id = msg.args.get(1).and_then(id_of).unwrap_or_default();
    Some(Call { method, args, id })
}

/// Read a reply sent by the daemon. `None` if the message is not shaped like one.
pub fn parse_reply(msg: &Message) -> Option<Reply<'_>> {
    let body = msg.args.first()?.as_payload()?.node();
    let id = msg.args.get(1).and_then(id_of).unwrap_or_default();
    if let Some(err) = body.get("error") {
        let message = err.text();
        let stack = body
            .get("stack")
            .and_then(|s| s.as_str())
            .map(|s| s.into_owned());
        return Some(Reply {
            id,
            outcome: Err(RemoteError { message, stack }),
        });
    }
    let args = body.get("args")?.items()?;
    Some(Reply {
        id,
        outcome: Ok(args),
    })
}

fn id_of(arg: &Arg) -> Option<String> {
    match arg {
        Arg::Str(s) => Some(s.clone()),
        Arg::Json(v) => Some(v.to_string()),
        Arg::Raw(_) => None,
    }
}

/// Build a request (`explain` asks the daemon for getMonitorData; tests and benchmarks).
pub fn encode_call(method: &str, args: Vec<Value>, id: &str) -> Message {
    Message::new(vec![
        Arg::json(serde_json::json!({"type": "call", "method": method, "args": args})),
        Arg::Str(id.to_owned()),
    ])
}

/// Build a reply, for tests and benchmarks.
#[cfg(any(test, feature = "test-hooks"))]
pub fn encode_reply(args: Vec<Value>, id: &str) -> Message {
    Message::new(vec![
        Arg::json(serde_json::json!({ "args": args })),
        Arg::Str(id.to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn call_and_reply_roundtrip() {
        let c = encode_call(
            "restartProcessId",
            vec![json!({"id": 0, "env": {}})],
            "77:2",
        );
        let call = parse_call(&c).unwrap();
        assert_eq!(call.method, "restartProcessId");
        assert_eq!(call.id, "77:2");
        let reply = encode_reply(vec![json!({"pm_id": 0})], "77:2");
        let r = parse_reply(&reply).unwrap();
        assert_eq!(r.id, "77:2");
        assert!(r.outcome.is_ok());
        let e = Message::new(vec![
            Arg::json(json!({"error": "Process not found", "stack": "x"})),
            Arg::Str("77:3".into()),
        ]);
        assert_eq!(
            parse_reply(&e).unwrap().outcome.unwrap_err().message,
            "Process not found"
        );
    }
}
