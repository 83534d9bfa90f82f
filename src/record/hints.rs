//! What the RPC traffic tells the process watcher, as the tap decoder sees it.

use crate::event::proc::SnapshotReason;
use crate::pm2::exchange::{Paired, ReplyProcs, Rpc};
use crate::pm2::meaning::Pm2Call;
use crate::sources::procwatch::WatcherHandle;

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

/// Tells the process watcher what the RPC traffic says, as soon as the tap decoder has
/// decoded and paired a message: a snapshot when a stop or restart is asked (before the
/// daemon acts), and the pids the daemon reports, read by [`ReplyProcs`] as the interpreter
/// reads them. The pairing is the tap's one [`crate::pm2::exchange::Pairing`]: the hinter
/// keeps none of its own.
pub(super) struct Hinter<S: HintSink> {
    sink: S,
}

impl<S: HintSink> Hinter<S> {
    pub(super) fn new(sink: S) -> Hinter<S> {
        Hinter { sink }
    }

    /// A message the tap decoded (`rpc`) and how it was paired.
    pub(super) fn message(&mut self, rpc: &Rpc, paired: &Paired) {
        match rpc {
            Rpc::Call { meaning, .. } => match meaning {
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
            },
            Rpc::Reply(reply) => {
                let (Some(asked), Ok(args)) = (&paired.asked, &reply.outcome) else {
                    return;
                };
                for (pid, pm_id, name) in ReplyProcs::read(Some(&asked.method), args).running() {
                    self.sink.pid(pid as i32, pm_id, &name);
                }
            }
            Rpc::Other => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CaptureInfo, Direction, Event, EventSink, Stamped};
    use crate::record::pipeline::TapDecoder;
    use crate::sources::proxy::Tap;
    use crate::timeline::{EntryKind, Interpreter};
    use crate::wire::amp::Message;
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

    /// Feed messages through the tap decoder, as the proxy's copies (a `None` message closes
    /// the connection): the hints given and the events made.
    fn tap(taps: &[(u64, Direction, Option<Message>)]) -> (Hints, Vec<Stamped>) {
        let mut hints = Hints::default();
        let (sink, mut rx) = EventSink::channel(1 << 16);
        {
            let mut dec = TapDecoder::new(sink, 1 << 20, Some(Hinter::new(&mut hints)));
            for (i, (conn, dir, msg)) in taps.iter().enumerate() {
                let (t, conn) = (i as u64 + 1, *conn);
                dec.take(match msg {
                    Some(m) => Tap::Data {
                        t,
                        conn,
                        dir: *dir,
                        bytes: m.encode().into(),
                    },
                    None => Tap::Close {
                        t,
                        conn,
                        to_client_bytes: 0,
                        to_daemon_bytes: 0,
                    },
                });
            }
            dec.release_held(None);
        }
        (hints, std::iter::from_fn(|| rx.try_recv()).collect())
    }

    /// The new pids the interpreter's replies name, reading the tap's pairing from the
    /// events; the same events without it (a capture recorded before the tap paired) give
    /// the same entries.
    fn new_pids(events: &[Stamped]) -> Vec<i64> {
        let paired = CaptureInfo {
            rpc_paired: true,
            ..CaptureInfo::default()
        };
        let entries = |info: &CaptureInfo, events: &mut dyn Iterator<Item = Stamped>| {
            let mut interp = Interpreter::new(info);
            events.flat_map(|e| interp.push(&e)).collect::<Vec<_>>()
        };
        let from_tap = entries(&paired, &mut events.iter().cloned());
        let mut unpaired = events.iter().cloned().map(|mut e| {
            match &mut e.event {
                Event::RpcMessage { ask, asked, .. } => (*ask, *asked) = (None, None),
                Event::RpcClose { unanswered, .. } => unanswered.clear(),
                _ => {}
            }
            e
        });
        assert_eq!(
            from_tap,
            entries(&CaptureInfo::default(), &mut unpaired),
            "the tap's pairing and the one of an old capture's reading differ"
        );
        from_tap
            .into_iter()
            .filter_map(|e| match e.kind {
                EntryKind::RequestAnswered { new_pid, .. } => new_pid,
                _ => None,
            })
            .collect()
    }

    fn started(pid: i64) -> Option<Message> {
        Some(encode_reply(
            vec![json!({"pid": pid, "pm_id": 0, "name": "web", "pm2_env": {"status": "online"}})],
            "1",
        ))
    }

    fn call(method: &str, arg: serde_json::Value) -> Option<Message> {
        Some(encode_call(method, vec![arg], "1"))
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
            let (hints, events) = tap(&[
                (1, Direction::ToDaemon, call(method, arg)),
                (1, Direction::ToClient, started(4242)),
            ]);
            assert_eq!(new_pids(&events), vec![4242], "{method}");
            assert_eq!(hints.pids, vec![(4242, 0, "web".into())], "{method}");
        }
    }

    #[test]
    fn stops_and_restarts_ask_for_a_snapshot_before_the_reply() {
        let (hints, events) = tap(&[
            (1, Direction::ToDaemon, call("stopProcessId", json!(3))),
            (
                2,
                Direction::ToDaemon,
                call("restartProcessId", json!({"id": 0})),
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
        assert!(hints.pids.is_empty());
        assert!(new_pids(&events).is_empty());
    }

    #[test]
    fn a_reply_after_its_connection_closed_pairs_with_nothing() {
        let (hints, events) = tap(&[
            (
                1,
                Direction::ToDaemon,
                call("restartProcessId", json!({"id": 0})),
            ),
            (1, Direction::ToDaemon, None),
            (1, Direction::ToClient, started(5)),
        ]);
        assert!(hints.pids.is_empty());
        assert!(new_pids(&events).is_empty());
        assert!(matches!(
            &events[1].event,
            Event::RpcClose { unanswered, .. } if unanswered == &["restartProcessId"]
        ));
        assert!(matches!(
            events[2].event,
            Event::RpcMessage { ask: None, .. }
        ));
    }
}
