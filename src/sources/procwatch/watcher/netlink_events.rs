//! Netlink mode: the connector's fork, exec and exit events of tracked processes, each with
//! the kernel's timestamp; everything else is dropped after one hash lookup. Datagrams are
//! read as soon as they can be (also from inside long work such as a snapshot, see
//! [`NetlinkInbox::keep_up`]) so that they keep their read instant and the kernel's buffer
//! does not overrun; after an overrun the table is resynchronised from /proc.

use super::table::{join_cmd, Tracked};
use super::Watcher;
use crate::event::proc::{AttrHow, ExitStatus, ProcEvent, StatusFrom, Timing, Via};
use crate::event::{mono_now, MonoNs};
use crate::sources::procwatch::netlink::{self, CnEvent, NetlinkSock};
use crate::sources::procwatch::procfs;
use std::collections::VecDeque;

/// Most datagrams read ahead; beyond this the kernel's own buffer takes over (and may
/// overrun).
const READ_AHEAD: usize = 65536;

/// The connector socket (netlink mode only) and the datagrams read from it, with the
/// instant each was read, but not yet handled.
pub(super) struct NetlinkInbox {
    sock: Option<NetlinkSock>,
    pending: VecDeque<(MonoNs, Vec<u8>)>,
    scratch: Vec<u8>,
    overrun: bool,
}

impl NetlinkInbox {
    pub(super) fn new(sock: Option<NetlinkSock>) -> NetlinkInbox {
        NetlinkInbox {
            sock,
            pending: VecDeque::new(),
            scratch: Vec::new(),
            overrun: false,
        }
    }

    /// Read every datagram waiting on the socket, stamped now. Returns what went wrong
    /// when the socket fails.
    fn read_waiting(&mut self) -> Option<String> {
        let sock = self.sock.as_ref()?;
        if self.scratch.is_empty() {
            self.scratch.resize(16384, 0);
        }
        loop {
            match sock.recv(&mut self.scratch) {
                Ok(None) => return None,
                Ok(Some(d)) => {
                    if self.pending.len() >= READ_AHEAD {
                        self.overrun = true;
                        return None;
                    }
                    let d = d.to_vec();
                    self.pending.push_back((mono_now(), d));
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => self.overrun = true,
                Err(e) => return Some(format!("netlink receive failed: {e}")),
            }
        }
    }

    /// Datagrams read but not handled yet (or an overrun not yet acted on).
    pub(super) fn read_ahead(&self) -> bool {
        !self.pending.is_empty() || self.overrun
    }

    /// [`Self::read_waiting`] from inside long work: only this field is borrowed, so it can
    /// run while the table is being iterated. A failure is reported by the next drain.
    pub(super) fn keep_up(&mut self) {
        let _ = self.read_waiting();
    }
}

impl Watcher {
    /// Handle every datagram waiting, in order.
    pub(super) fn drain_netlink(&mut self) {
        if let Some(err) = self.netlink.read_waiting() {
            self.lost(err);
        }
        let mut events: Vec<CnEvent> = Vec::new();
        while let Some((observed, d)) = self.netlink.pending.pop_front() {
            // Filter here, before anything is kept: one lookup per event.
            let table = &self.table;
            if let Err(e) = netlink::parse_datagram(&d, |e| {
                let keep = match e {
                    CnEvent::Fork {
                        parent_tgid,
                        child_pid,
                        child_tgid,
                        ..
                    } => child_pid == child_tgid && table.contains_key(&parent_tgid),
                    CnEvent::Exec { tgid, .. } => table.contains_key(&tgid),
                    CnEvent::Exit { pid, tgid, .. } => pid == tgid && table.contains_key(&tgid),
                    _ => false,
                };
                if keep {
                    events.push(e);
                }
            }) {
                self.lost(e.to_string());
            }
            // Handle in order: a fork must be known before its child's exit.
            for e in events.drain(..) {
                self.on_cn(e, observed);
            }
        }
        if std::mem::take(&mut self.netlink.overrun) {
            self.lost("the kernel dropped process events (socket buffer overrun); resynchronising from /proc".into());
            self.resync();
        }
    }

    /// After lost events: find tracked processes that are gone and new ones.
    fn resync(&mut self) {
        let now = mono_now();
        let gone: Vec<i32> = self
            .table
            .values()
            .filter(|t| match procfs::read_stat(&self.proc_root, t.pid) {
                None => true,
                Some(s) => t.start.is_some() && Some(s.starttime) != t.start,
            })
            .map(|t| t.pid)
            .collect();
        for p in gone {
            if let Some(t) = self.table.remove(&p) {
                let seen = t.seen_ns;
                self.finish_exit(
                    t,
                    ExitStatus::Unknown {
                        why: "its exit event was among those the kernel dropped".into(),
                    },
                    None,
                    Via::ProcScan,
                    Timing::Between {
                        not_before_ns: seen,
                        observed_ns: now,
                    },
                    None,
                );
            }
        }
        self.foreign.clear();
        self.scan();
        for t in self.table.values_mut() {
            t.seen_ns = now;
        }
    }

    /// One connector event, read at `observed`.
    pub(super) fn on_cn(&mut self, e: CnEvent, observed: MonoNs) {
        match e {
            CnEvent::Fork {
                ts,
                parent_tgid,
                child_pid,
                child_tgid,
                ..
            } => {
                if child_pid == child_tgid {
                    self.on_fork(ts, parent_tgid, child_tgid, observed);
                }
            }
            CnEvent::Exec { ts, tgid, .. } => self.on_exec(ts, tgid, observed),
            CnEvent::Exit {
                ts,
                pid,
                tgid,
                exit_code,
                parent_tgid,
                ..
            } => {
                if pid != tgid {
                    return;
                }
                let Some(t) = self.table.remove(&tgid) else {
                    return;
                };
                self.finish_exit(
                    t,
                    ExitStatus::from_wait_status(exit_code as i32),
                    Some(StatusFrom::Netlink),
                    Via::Netlink,
                    Timing::Kernel {
                        kernel_ns: ts,
                        observed_ns: observed,
                    },
                    Some(parent_tgid),
                );
            }
            CnEvent::Ack { .. } | CnEvent::Other { .. } => {}
        }
    }

    /// A tracked process forked `child` at kernel time `ts`: track the child.
    fn on_fork(&mut self, ts: MonoNs, parent_tgid: i32, child: i32, observed: MonoNs) {
        if self.table.contains_key(&child) {
            return;
        }
        let Some(parent) = self.table.get(&parent_tgid) else {
            return;
        };
        let inherit = parent.app.clone().map(|a| (parent_tgid, a));
        let pcmd = parent.cmd.clone();
        let stat = procfs::read_stat(&self.proc_root, child);
        let start = stat.as_ref().map(|s| s.starttime);
        // The child has its parent's environment and command line until it execs.
        let (app, how) = match inherit {
            Some((p, a)) => (Some(a), Some(AttrHow::Ancestry { parent: p })),
            None => (None, None),
        };
        let t = Tracked {
            pid: child,
            start,
            start_mono: Some(ts),
            ppid: parent_tgid,
            app,
            how,
            daemon: false,
            cmd: pcmd,
            held: Vec::new(),
            pidfd: None,
            seen_ns: observed,
            born_dead: false,
        };
        let who = t.who();
        self.table.insert(child, t);
        self.emit(
            ts,
            ProcEvent::Fork {
                parent: parent_tgid,
                who,
                via: Via::Netlink,
                timing: Timing::Kernel {
                    kernel_ns: ts,
                    observed_ns: observed,
                },
            },
        );
    }

    /// A tracked process executed a new program: its command line, and its app from the
    /// new environment.
    fn on_exec(&mut self, ts: MonoNs, tgid: i32, observed: MonoNs) {
        if !self.table.contains_key(&tgid) {
            return;
        }
        let cmd = procfs::read_cmdline(&self.proc_root, tgid).and_then(|a| join_cmd(&a));
        let descendant = self
            .table
            .get(&tgid)
            .is_some_and(|t| self.table.contains_key(&t.ppid));
        let app = self.env_attribution(tgid, descendant);
        let Some(t) = self.table.get_mut(&tgid) else {
            return;
        };
        // After an exec the parent's command line is wrong; unknown is better.
        t.cmd = cmd;
        let timing = Timing::Kernel {
            kernel_ns: ts,
            observed_ns: observed,
        };
        self.reattribute(tgid, app, Some((Via::Netlink, timing)), ts);
    }
}
