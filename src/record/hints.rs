//! What the RPC traffic tells the process watcher, as the tap decoder sees it.

use crate::event::proc::SnapshotReason;
use crate::event::Direction;
use crate::pm2::exchange::{Exchanges, ReplyProcs};
use crate::pm2::meaning::Pm2Call;
use crate::sources::procwatch::WatcherHandle;
use crate::wire::amp::Message;
use crate::wire::rpc;

/// Where hints go: the process watcher (a list, in tests).
pub(super) trait HintSink {
    fn snapshot(&mut self, reason: SnapshotReason);
    fn pid(&mut self, pid: i32, pm_id: u64, name: &str);
}

impl HintSink for WatcherHandle {
    fn snapshot(&mut self, reason: SnapshotReason) {
        self.request_snapshot(reason)
    }
    fn pid(&mut self, pid: i32, pm_id: u64, name: &str) {
        self.hint_pid(pid, pm_id, name)
    }
}

/// Tells the process watcher what the RPC traffic says, as soon as the tap decoder sees it:
/// a snapshot when a stop or restart is asked (before the daemon acts), and the pids the
/// daemon reports. Requests are paired with replies by [`Exchanges`] and replies read by
/// [`ReplyProcs`], as the interpreter does.
pub(super) struct Hinter<S: HintSink> {
    sink: S,
    /// Method of each request still waiting for its reply.
    pending: Exchanges<String>,
}

impl<S: HintSink> Hinter<S> {
    pub(super) fn new(sink: S) -> Hinter<S> {
        Hinter {
            sink,
            pending: Exchanges::new(),
        }
    }

    pub(super) fn message(&mut self, conn: u64, dir: Direction, msg: &Message) {
        match dir {
            Direction::ToDaemon => {
                let Some(call) = rpc::parse_call(msg) else {
                    return;
                };
                match Pm2Call::from_call(&call) {
                    c @ (Pm2Call::RestartProcessId { .. } | Pm2Call::ReloadProcessId { .. }) => {
                        self.sink.snapshot(SnapshotReason::RestartRequested {
                            pm_id: c.target_id(),
                        })
                    }
                    c @ (Pm2Call::StopProcessId { .. } | Pm2Call::DeleteProcessId { .. }) => {
                        self.sink.snapshot(SnapshotReason::StopRequested {
                            pm_id: c.target_id(),
                        })
                    }
                    _ => {}
                }
                self.pending.ask(conn, &call.id, call.method.to_owned());
            }
            Direction::ToClient => {
                let Some(reply) = rpc::parse_reply(msg) else {
                    return;
                };
                let Some((_, method)) = self.pending.answer(conn, &reply.id) else {
                    return;
                };
                let Ok(args) = reply.outcome else { return };
                for (pid, pm_id, name) in ReplyProcs::read(Some(&method), &args).running() {
                    self.sink.pid(pid as i32, pm_id, &name);
                }
            }
        }
    }

    pub(super) fn closed(&mut self, conn: u64) {
        self.pending.close(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CaptureInfo, Event, Stamped, WireMessage};
    use crate::timeline::{EntryKind, Interpreter};
    use crate::wire::rpc::{encode_call, encode_reply};
    use serde_json::json;

    #[derive(Default)]
    struct Hints {
        snapshots: Vec<SnapshotReason>,
        pids: Vec<(i32, u64, String)>,
    }

    impl HintSink for &mut Hints {
        fn snapshot(&mut self, reason: SnapshotReason) {
            self.snapshots.push(reason)
        }
        fn pid(&mut self, pid: i32, pm_id: u64, name: &str) {
            self.pids.push((pid, pm_id, name.to_owned()))
        }
    }

    /// Feed the same exchanges to a hinter and an interpreter: (hinted pids, new pids the
    /// interpreter's replies name).
    fn both(exchanges: &[(u64, Direction, Message)]) -> (Hints, Vec<i64>) {
        let mut hints = Hints::default();
        let mut new_pids = Vec::new();
        {
            let mut h = Hinter::new(&mut hints);
            let mut interp = Interpreter::new(&CaptureInfo::default());
            for (i, (conn, dir, msg)) in exchanges.iter().enumerate() {
                h.message(*conn, *dir, msg);
                let ev = Stamped {
                    t: i as u64,
                    event: Event::RpcMessage {
                        conn: *conn,
                        dir: *dir,
                        msg: WireMessage(msg.clone()),
                    },
                };
                for e in interp.push(&ev) {
                    if let EntryKind::RequestAnswered {
                        new_pid: Some(p), ..
                    } = e.kind
                    {
                        new_pids.push(p);
                    }
                }
            }
        }
        (hints, new_pids)
    }

    fn started(pid: i64) -> Message {
        encode_reply(
            vec![json!({"pid": pid, "pm_id": 0, "name": "web", "pm2_env": {"status": "online"}})],
            "1",
        )
    }

    #[test]
    fn every_start_is_hinted_as_the_interpreter_reads_it() {
        for (method, arg) in [
            ("restartProcessId", json!({"id": 0, "env": {}})),
            ("reloadProcessId", json!({"id": 0, "env": {}})),
            ("softReloadProcessId", json!({"id": 0, "env": {}})),
            ("startProcessId", json!(0)),
            ("prepare", json!([{"name": "web"}])),
        ] {
            let (hints, new_pids) = both(&[
                (1, Direction::ToDaemon, encode_call(method, vec![arg], "1")),
                (1, Direction::ToClient, started(4242)),
            ]);
            assert_eq!(new_pids, vec![4242], "{method}");
            assert_eq!(hints.pids, vec![(4242, 0, "web".into())], "{method}");
        }
    }

    #[test]
    fn stops_and_restarts_ask_for_a_snapshot_before_the_reply() {
        let (hints, new_pids) = both(&[
            (
                1,
                Direction::ToDaemon,
                encode_call("stopProcessId", vec![json!(3)], "1"),
            ),
            (
                2,
                Direction::ToDaemon,
                encode_call("restartProcessId", vec![json!({"id": 0})], "1"),
            ),
            // A stop's reply names a process that no longer runs: no hint, no new pid.
            (1, Direction::ToClient, started(77)),
        ]);
        assert_eq!(
            hints.snapshots,
            vec![
                SnapshotReason::StopRequested { pm_id: Some(3) },
                SnapshotReason::RestartRequested { pm_id: Some(0) }
            ]
        );
        assert!(hints.pids.is_empty() && new_pids.is_empty());
    }

    #[test]
    fn a_reply_after_its_connection_closed_pairs_with_nothing() {
        let mut hints = Hints::default();
        {
            let mut h = Hinter::new(&mut hints);
            h.message(
                1,
                Direction::ToDaemon,
                &encode_call("restartProcessId", vec![json!({"id": 0})], "1"),
            );
            h.closed(1);
            h.message(1, Direction::ToClient, &started(5));
        }
        assert!(hints.pids.is_empty());
    }
}
