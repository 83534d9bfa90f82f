//! Snapshots: the state of an app's processes at a moment that matters (start, a stop or
//! restart request, a new generation, an early exit): the process tree, the listening
//! sockets of every tracked process, for an early exit who holds what elsewhere on the
//! host, and for a stop or restart the environment and start paths of the generation being
//! replaced. Long steps keep reading the netlink socket between them
//! ([`super::netlink_events::NetlinkInbox::keep_up`]).

use super::table::descends_from;
use super::Watcher;
use crate::event::host::HostHold;
use crate::event::proc::{
    ActiveMode, EnvSnap, EnvVar, ProcEvent, ProcSnap, Proto, Snapshot, SnapshotReason, SocketHold,
    StartPaths, HOST_HOLDS,
};
use crate::event::{mono_now, MonoNs};
use crate::sources::procwatch::procfs::{self, Stat};
use crate::sources::procwatch::start_paths;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// Most host-wide socket scans (which read every process's descriptors) per this interval.
const HOST_SCAN_SPACING_NS: u64 = 500_000_000;

/// The /proc state of every tracked process still running, read at the snapshot.
struct Fresh {
    stats: HashMap<i32, Stat>,
    daemon: Option<i32>,
}

impl Fresh {
    /// Whether `pid`'s ancestry, as /proc shows it now, leads to the daemon.
    fn in_tree(&self, pid: i32) -> bool {
        descends_from(self.daemon, pid, |p| self.stats.get(&p).map(|s| s.ppid))
    }

    /// The running pids, in order.
    fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self.stats.keys().copied().collect();
        pids.sort_unstable();
        pids
    }
}

impl Watcher {
    /// Take the queued snapshots (and those they queue), each reason once per round.
    pub(super) fn run_queued_snapshots(&mut self) {
        while !self.queued_snapshots.is_empty() {
            let mut q = std::mem::take(&mut self.queued_snapshots);
            q.dedup_by(|a, b| a.0 == b.0);
            for (r, asked) in q {
                self.snapshot(r, asked);
            }
        }
    }

    /// Take one snapshot for `reason`, asked for at `asked`, and emit it.
    pub(super) fn snapshot(&mut self, reason: SnapshotReason, asked: MonoNs) {
        let t0 = mono_now();
        let mut notes = Vec::new();
        if self.mode != ActiveMode::Netlink && !matches!(reason, SnapshotReason::Start) {
            // Find what appeared since the last scan first.
            self.scan();
        }
        let scope = reason.pm_id();
        // First, before the daemon's stop takes them away: the environment of the
        // generation being replaced and where it was started from.
        let (env, paths) = if reason.wants_env() {
            self.replaced_generations(scope, asked, &mut notes)
        } else {
            (Vec::new(), Vec::new())
        };
        let fresh = self.fresh_state(&mut notes);
        let pids = fresh.pids();
        let processes = self.processes(&pids, &fresh, scope);
        let sockets = self.listening_sockets(&pids, &fresh, &mut notes);
        self.remember_held(&sockets);
        // An early exit may be a bind that failed on an address held outside the tree.
        let mut host = Vec::new();
        if matches!(reason, SnapshotReason::EarlyExit { .. })
            && t0.saturating_sub(self.last_host_scan) >= HOST_SCAN_SPACING_NS
        {
            self.last_host_scan = t0;
            host = self.host_holds(&mut notes);
        }
        if let Some(n) = &self.daemon_note {
            if matches!(reason, SnapshotReason::Start) {
                notes.push(n.clone());
            }
        }
        let cost_us = (mono_now() - t0) / 1000;
        self.emit(
            t0,
            ProcEvent::Snapshot(Snapshot {
                reason,
                processes,
                sockets,
                env,
                notes,
                cost_us,
                host,
                paths,
            }),
        );
    }

    /// The environment (values redacted) and start paths of the main process of each
    /// generation a stop or restart in `scope`, asked at `asked`, replaces.
    fn replaced_generations(
        &mut self,
        scope: Option<u64>,
        asked: MonoNs,
        notes: &mut Vec<String>,
    ) -> (Vec<EnvSnap>, Vec<StartPaths>) {
        let mut env = Vec::new();
        let mut paths = Vec::new();
        for m in self.replaced_generation_mains(scope, asked) {
            self.netlink.keep_up();
            let p = m.pid;
            let (app, start) = (m.app.clone(), m.start.unwrap_or(0));
            // The environment as read when the process appeared (it does not change
            // after exec), else now. A live read can also come too late: a process
            // being killed has lost its memory (an empty environment) while /proc
            // still shows its directory.
            let alive = self
                .table
                .get(&p)
                .is_some_and(|t| t.start == m.start && t.app.is_some());
            // Never a live read of a pid that is no longer the tracked process: it may have
            // been reused by another process, whose environment is none of ours.
            let environ = match m.remembered.as_ref().map(|r| &r.0) {
                Some(Ok(e)) if !e.0.is_empty() => Ok(e.clone()),
                _ if alive => procfs::read_environ(&self.proc_root, p).map_err(|e| e.to_string()),
                _ => Err("it had exited, and its environment was not read while it ran".into()),
            };
            let mut pwd = None;
            match environ {
                Ok((block, truncated)) => {
                    let vars = procfs::parse_environ(&block)
                        .into_iter()
                        .map(|(k, v)| {
                            if k == "PWD" {
                                pwd = Some(v.clone());
                            }
                            let value = (self.redact)(&k, &v);
                            EnvVar { key: k, value }
                        })
                        .collect();
                    env.push(EnvSnap {
                        pid: p,
                        start,
                        app: app.clone(),
                        vars,
                        truncated,
                    });
                }
                Err(e) => notes.push(format!("environment of pid {p} unreadable: {e}")),
            }
            let live = alive
                .then(|| start_paths::read(&self.proc_root, p))
                .flatten();
            let (pp, gone) = match live {
                Some(pp) => (Some(pp), false),
                None => (m.remembered.as_ref().and_then(|r| r.1.clone()), true),
            };
            if let Some(pp) = pp {
                paths.push(start_paths::complete(pp, app, pwd, gone));
            }
        }
        (env, paths)
    }

    /// Fresh /proc state of every tracked process; a note for each one that exited.
    fn fresh_state(&mut self, notes: &mut Vec<String>) -> Fresh {
        let mut stats = HashMap::new();
        for t in self.table.values() {
            self.netlink.keep_up();
            match procfs::read_stat(&self.proc_root, t.pid) {
                Some(s) if t.start.is_none() || Some(s.starttime) == t.start => {
                    stats.insert(t.pid, s);
                }
                _ => notes.push(format!("pid {} exited while the snapshot was taken", t.pid)),
            }
        }
        Fresh {
            stats,
            daemon: self.daemon,
        }
    }

    /// The daemon, the processes of the app in `scope` (every app's when `None`) and the
    /// unattributed descendants of the daemon.
    fn processes(&mut self, pids: &[i32], fresh: &Fresh, scope: Option<u64>) -> Vec<ProcSnap> {
        let mut processes = Vec::new();
        for &p in pids {
            self.netlink.keep_up();
            let (Some(t), Some(s)) = (self.table.get(&p), fresh.stats.get(&p)) else {
                continue;
            };
            let include = t.daemon
                || match (&t.app, scope) {
                    (_, None) => true,
                    (Some(a), Some(id)) => a.pm_id == id,
                    (None, Some(_)) => true, // unattributed descendants of the daemon
                };
            if !include {
                continue;
            }
            processes.push(ProcSnap {
                pid: p,
                ppid: s.ppid,
                pgid: s.pgrp,
                sid: s.session,
                start: s.starttime,
                state: s.state.to_string(),
                cmdline: procfs::read_cmdline(&self.proc_root, p).unwrap_or_default(),
                app: t.app.clone(),
                how: t.how.clone(),
                daemon: t.daemon,
                in_tree: t.daemon || fresh.in_tree(s.ppid),
            });
        }
        processes
    }

    /// Every tracked process's listening sockets: their socket inodes joined with the
    /// socket tables of each network namespace they live in.
    fn listening_sockets(
        &mut self,
        pids: &[i32],
        fresh: &Fresh,
        notes: &mut Vec<String>,
    ) -> Vec<SocketHold> {
        let mut by_inode: HashMap<u64, i32> = HashMap::new();
        // Each namespace's tables are read through one of its processes; every candidate is
        // kept, since a process of a crash loop can exit between here and the read.
        let mut netns: HashMap<PathBuf, Vec<i32>> = HashMap::new();
        for &p in pids {
            self.netlink.keep_up();
            match procfs::socket_inodes(&self.proc_root, p) {
                Ok(v) => {
                    if !v.is_empty() {
                        for ino in v {
                            by_inode.entry(ino).or_insert(p);
                        }
                        if let Some(ns) = procfs::net_ns(&self.proc_root, p) {
                            netns.entry(ns).or_default().push(p);
                        }
                    }
                }
                Err(e) => notes.push(format!("sockets of pid {p} unreadable: {e}")),
            }
        }
        let mut sockets = Vec::new();
        let mut readers: Vec<Vec<i32>> = netns.into_values().collect();
        readers.sort_unstable();
        for candidates in readers {
            let read = |file: &str| {
                candidates.iter().find_map(|r| {
                    std::fs::read_to_string(
                        self.proc_root.join(r.to_string()).join("net").join(file),
                    )
                    .ok()
                })
            };
            for (file, proto) in [
                ("tcp", Proto::Tcp),
                ("tcp6", Proto::Tcp6),
                ("udp", Proto::Udp),
                ("udp6", Proto::Udp6),
            ] {
                self.netlink.keep_up();
                let Some(text) = read(file) else {
                    continue;
                };
                for line in text.lines().skip(1) {
                    let Some(s) = procfs::parse_inet_line(proto, line) else {
                        continue;
                    };
                    if !s.is_listening() {
                        continue;
                    }
                    if let Some(&holder) = by_inode.get(&s.inode) {
                        let addr = s.addr_string();
                        sockets.push(self.hold(proto, addr, Some(s.port), s.inode, holder, fresh));
                    }
                }
            }
            if let Some(text) = read("unix") {
                for line in text.lines().skip(1) {
                    let Some(u) = procfs::parse_unix_line(line) else {
                        continue;
                    };
                    if !u.is_bound_listener() {
                        continue;
                    }
                    if let (Some(&holder), Some(path)) = (by_inode.get(&u.inode), u.path) {
                        sockets.push(self.hold(Proto::Unix, path, None, u.inode, holder, fresh));
                    }
                }
            }
        }
        sockets.sort_by(|a, b| (a.pid, a.proto, &a.addr).cmp(&(b.pid, b.proto, &b.addr)));
        sockets.dedup_by(|a, b| a.inode == b.inode && a.pid == b.pid);
        sockets
    }

    /// A socket held by tracked process `pid`.
    fn hold(
        &self,
        proto: Proto,
        addr: String,
        port: Option<u16>,
        inode: u64,
        pid: i32,
        fresh: &Fresh,
    ) -> SocketHold {
        let t = self.table.get(&pid);
        let daemon = t.is_some_and(|t| t.daemon);
        let stat = fresh.stats.get(&pid);
        SocketHold {
            proto,
            addr,
            port,
            inode,
            pid,
            start: stat.map(|s| s.starttime).unwrap_or(0),
            app: t.and_then(|t| t.app.clone()),
            daemon,
            in_tree: daemon || stat.is_some_and(|s| fresh.in_tree(s.ppid)),
        }
    }

    /// Remember what each process held, for its exit event. A process whose exit has begun
    /// keeps what it held before: `do_exit` closes its files (its listening sockets among
    /// them) before the kernel reports the exit, and a snapshot in that window would
    /// otherwise make the exit say it held nothing.
    fn remember_held(&mut self, sockets: &[SocketHold]) {
        let mut now: HashMap<i32, Vec<String>> = HashMap::new();
        for s in sockets {
            if self.table.contains_key(&s.pid) {
                now.entry(s.pid)
                    .or_default()
                    .push(if s.proto != Proto::Unix {
                        s.addr.clone()
                    } else {
                        format!("unix:{}", s.addr)
                    });
            }
        }
        let proc_root = self.proc_root.clone();
        for t in self.table.values_mut() {
            let held = now.remove(&t.pid).unwrap_or_default();
            if held_at_exit(&t.held, &held, || {
                procfs::read_stat(&proc_root, t.pid)
                    .filter(|s| t.start.is_none() || Some(s.starttime) == t.start)
                    .is_none_or(|s| s.exiting())
            }) {
                continue;
            }
            t.held = held;
        }
    }

    /// Listening sockets anywhere on the host held by processes the watcher does not
    /// track, ports first, at most [`HOST_HOLDS`].
    fn host_holds(&mut self, notes: &mut Vec<String>) -> Vec<HostHold> {
        self.netlink.keep_up();
        let mut skip: HashSet<i32> = self.table.keys().copied().collect();
        skip.insert(std::process::id() as i32);
        let mut host = Vec::new();
        match crate::sources::holders::scan(&self.proc_root, |_| true, &skip) {
            Ok(mut scan) => {
                // Ports first: they are what a failing start usually needs.
                scan.holds.sort_by_key(|h| h.proto == "unix");
                scan.holds.truncate(HOST_HOLDS);
                host = scan.holds;
                notes.extend(scan.notes);
            }
            Err(e) => notes.push(format!("host sockets unreadable: {e}")),
        }
        self.netlink.keep_up();
        host
    }
}

/// Whether a process that held `before` and is seen holding `now` keeps `before` for its
/// exit event: only when it lost a holding and `exiting()` (read after the sockets were
/// listed) says its exit has begun or it is gone.
fn held_at_exit(before: &[String], now: &[String], exiting: impl FnOnce() -> bool) -> bool {
    before.iter().any(|a| !now.contains(a)) && exiting()
}

#[cfg(test)]
mod tests {
    use super::held_at_exit;

    #[test]
    fn an_exiting_process_keeps_what_it_held() {
        let a = vec!["127.0.0.1:3000".to_string()];
        // Closed its listener during its exit: the exit reports the port.
        assert!(held_at_exit(&a, &[], || true));
        // Closed it while alive (a drain that released the port first): it held nothing.
        assert!(!held_at_exit(&a, &[], || false));
        // Nothing lost: the stat is not even read.
        assert!(!held_at_exit(&a, &a, || panic!("read")));
        assert!(!held_at_exit(&[], &a, || panic!("read")));
    }
}
