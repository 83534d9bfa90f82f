//! What the RPC traffic tells the process watcher, as the tap decoder sees it.

use crate::event::Direction;
use crate::sources::procwatch::{SnapshotReason, WatcherHandle};
use std::collections::HashMap;

/// Tells the process watcher what the RPC traffic says, as soon as the tap decoder sees it:
/// a snapshot when a stop or restart is asked (before the daemon acts), and the pids the
/// daemon reports.
pub(super) struct Hinter {
    pub(super) watcher: WatcherHandle,
    /// Method of each request still waiting for its reply, by (connection, id).
    pub(super) pending: HashMap<(u64, String), String>,
}

impl Hinter {
    pub(super) fn message(&mut self, conn: u64, dir: Direction, msg: &crate::wire::amp::Message) {
        use crate::pm2::meaning::{reply_starts_process, MonitorProc, Pm2Call};
        use crate::wire::rpc;
        match dir {
            Direction::ToDaemon => {
                let Some(call) = rpc::parse_call(msg) else {
                    return;
                };
                let typed = Pm2Call::from_call(&call);
                match typed {
                    Pm2Call::RestartProcessId { .. } | Pm2Call::ReloadProcessId { .. } => self
                        .watcher
                        .request_snapshot(SnapshotReason::RestartRequested {
                            pm_id: typed.target_id(),
                        }),
                    Pm2Call::StopProcessId { .. } | Pm2Call::DeleteProcessId { .. } => self
                        .watcher
                        .request_snapshot(SnapshotReason::StopRequested {
                            pm_id: typed.target_id(),
                        }),
                    _ => {}
                }
                if self.pending.len() < 10_000 {
                    self.pending.insert((conn, call.id), call.method);
                }
            }
            Direction::ToClient => {
                let Some(reply) = rpc::parse_reply(msg) else {
                    return;
                };
                let Some(method) = self.pending.remove(&(conn, reply.id)) else {
                    return;
                };
                let Ok(args) = reply.outcome else { return };
                // The same reading of replies as the interpreter's: a getMonitorData list, or
                // the process a start (restart, reload, softReload, prepare) reports.
                let procs = if method == "getMonitorData" || reply_starts_process(&method) {
                    MonitorProc::in_reply(Some(&method), &args)
                } else {
                    Vec::new()
                };
                for p in procs {
                    if let (Some(pid), Some(pm_id)) = (p.pid, p.pm_id) {
                        if pid > 0 {
                            self.watcher.hint_pid(
                                pid as i32,
                                pm_id,
                                p.name.as_deref().unwrap_or(""),
                            );
                        }
                    }
                }
            }
        }
    }

    pub(super) fn closed(&mut self, conn: u64) {
        self.pending.retain(|(c, _), _| *c != conn);
    }
}
