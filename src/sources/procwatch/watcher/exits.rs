//! Exits: how each was seen (netlink, a pidfd wake-up, a /proc scan), its status (the
//! connector's wait status, `PIDFD_INFO_EXIT` once the parent reaped, a zombie's
//! `/proc/<pid>/stat`, else unknown with the reason), and what follows an exit: orphans'
//! new parents and the early-exit snapshot of a newest generation that died young.

use super::mode::StatusSupport;
use super::table::Tracked;
use super::Watcher;
use crate::event::proc::{fmt_ns, ExitStatus, ProcEvent, SnapshotReason, StatusFrom, Timing, Via};
use crate::event::{mono_now, MonoNs};
use crate::sources::procwatch::procfs;
use crate::sources::procwatch::sys::{self, PidfdExit};
use std::collections::HashSet;
use std::os::fd::AsRawFd;

/// An exit with an error code within this many times the early-exit window also gets an
/// early-exit snapshot.
const SLOW_FAILURE_FACTOR: u64 = 5;

/// Most early-exit snapshots per app per this interval.
const EARLY_SNAPSHOT_SPACING_NS: u64 = 100_000_000;

/// Exited processes remembered before the list is pruned against /proc.
const EXITED_PRUNE_AT: usize = 4096;

/// An exit seen on a pidfd whose status is not known yet (waiting for the parent to reap).
pub(super) struct PendingExit {
    t: Tracked,
    observed: MonoNs,
    deadline: MonoNs,
    pub(super) next_try: MonoNs,
    tries: u32,
}

impl Watcher {
    /// Emit an exit and run what follows it: children's new parents, the early-exit check.
    pub(super) fn finish_exit(
        &mut self,
        t: Tracked,
        status: ExitStatus,
        from: Option<StatusFrom>,
        via: Via,
        timing: Timing,
        parent_at_exit: Option<i32>,
    ) {
        let at = timing.at();
        let lived_ns = t.start_mono.map(|s| at.saturating_sub(s));
        let in_tree = if t.daemon {
            Some(true)
        } else {
            let parent = parent_at_exit.unwrap_or(t.ppid);
            Some(self.in_tree(parent))
        };
        let mut who = t.who();
        if let Some(p) = parent_at_exit {
            who.ppid = p;
        }
        if let Some(fd) = &t.pidfd {
            self.epoll.del(fd.as_raw_fd());
        }
        self.exited.insert(t.pid, t.start);
        if self.exited.len() > EXITED_PRUNE_AT {
            // Netlink mode scans rarely: prune here.
            let mut pids = Vec::new();
            if procfs::list_pids(&self.proc_root, &mut pids).is_ok() {
                let listed: HashSet<i32> = pids.into_iter().collect();
                self.exited.retain(|p, _| listed.contains(p));
            }
        }
        let failed = matches!(status, ExitStatus::Signal { .. })
            || matches!(status, ExitStatus::Code { code } if code != 0);
        let error_code = matches!(status, ExitStatus::Code { code } if code != 0);
        self.emit(
            at,
            ProcEvent::Exit {
                who,
                status,
                status_from: from,
                via,
                timing,
                lived_ns,
                held: t.held.clone(),
                in_tree,
            },
        );
        // Its children now have another parent.
        let orphans: Vec<i32> = self
            .table
            .values()
            .filter(|c| c.ppid == t.pid)
            .map(|c| c.pid)
            .collect();
        for c in orphans {
            let np = procfs::read_stat(&self.proc_root, c)
                .map(|s| s.ppid)
                .unwrap_or(0);
            if let Some(ct) = self.table.get_mut(&c) {
                ct.ppid = np;
            }
        }
        if t.daemon {
            self.daemon = None;
        }
        self.flux();
        if let Some(lived) = lived_ns {
            let main = Some(parent_at_exit.unwrap_or(t.ppid)) == self.daemon;
            self.check_early_exit(&t, at, lived, main || failed, error_code);
        }
    }

    /// Queue an early-exit snapshot when `t`, of its app's newest generation, lived less
    /// than the early-exit window (or failed with an error code soon after). Only the
    /// generation's main process (a child of the daemon) or a process of it that failed
    /// (`main_or_failed`): helpers that exit 0 by design (a double fork's intermediate) are
    /// not it.
    fn check_early_exit(
        &mut self,
        t: &Tracked,
        at: MonoNs,
        lived: u64,
        main_or_failed: bool,
        error_code: bool,
    ) {
        let Some(app) = &t.app else { return };
        let (Some(g), true) = (app.generation, main_or_failed) else {
            return;
        };
        let newest = self.newest_gen.get(&app.pm_id).copied().unwrap_or(g);
        let early = self.tuning.early_exit.as_nanos() as u64;
        // A start that fails with an error code a little after min_uptime (a slow start on
        // a loaded machine) gets the same look at who holds what.
        let crashed_soon = error_code && lived < early.saturating_mul(SLOW_FAILURE_FACTOR);
        if g < newest || !(lived < early || crashed_soon) {
            return;
        }
        let last = self.last_early_snap.get(&app.pm_id).copied().unwrap_or(0);
        if last == 0 || at.saturating_sub(last) >= EARLY_SNAPSHOT_SPACING_NS {
            self.last_early_snap.insert(app.pm_id, at.max(1));
            self.queued_snapshots.push((
                SnapshotReason::EarlyExit {
                    pm_id: app.pm_id,
                    pid: t.pid,
                    generation: Some(g),
                    lived_ms: Some(lived / 1_000_000),
                },
                at,
            ));
        }
    }

    /// A tracked process found gone (or a zombie) by a /proc scan.
    pub(super) fn scan_exit(&mut self, pid: i32, now: MonoNs) {
        let Some(t) = self.table.remove(&pid) else {
            return;
        };
        let (status, from) = self.zombie_status(&t).unwrap_or_else(|| {
            (
                ExitStatus::Unknown {
                    why: "found gone by a /proc scan; only its parent learns the status".into(),
                },
                None,
            )
        });
        let timing = Timing::Between {
            not_before_ns: t.seen_ns,
            observed_ns: now,
        };
        self.finish_exit(t, status, from, Via::ProcScan, timing, None);
    }

    /// The status of a zombie from /proc/<pid>/stat field 52, when permitted.
    fn zombie_status(&self, t: &Tracked) -> Option<(ExitStatus, Option<StatusFrom>)> {
        if !self.tuning.zombie_stat {
            return None;
        }
        let s = procfs::read_stat(&self.proc_root, t.pid)?;
        if s.state != 'Z' || (t.start.is_some() && Some(s.starttime) != t.start) {
            return None;
        }
        // The kernel shows the status only to readers allowed to ptrace-read the process;
        // others read 0, which would look like a clean exit.
        if self.my_uid != 0 {
            use std::os::unix::fs::MetadataExt;
            let owner = std::fs::metadata(self.proc_root.join(t.pid.to_string()))
                .ok()?
                .uid();
            if owner != self.my_uid {
                return None;
            }
        }
        let code = s.exit_code?;
        Some((
            ExitStatus::from_wait_status(code),
            Some(StatusFrom::ZombieStat),
        ))
    }

    /// A tracked process's pidfd became readable: it exited.
    pub(super) fn on_pidfd(&mut self, pid: i32, observed: MonoNs) {
        let Some(t) = self.table.remove(&pid) else {
            return;
        };
        if let Some(fd) = &t.pidfd {
            self.epoll.del(fd.as_raw_fd());
        }
        // A scan must not take the zombie for a new process while its status is pending.
        self.exited.insert(t.pid, t.start);
        let deadline = observed + self.tuning.reap_grace.as_nanos() as u64;
        let p = PendingExit {
            t,
            observed,
            deadline,
            next_try: observed,
            tries: 0,
        };
        self.try_resolve(p);
    }

    /// Try to learn the status of a pidfd exit; keep it pending until the grace period ends.
    fn try_resolve(&mut self, mut p: PendingExit) {
        let now = mono_now();
        let timing = if p.t.born_dead {
            Timing::Between {
                not_before_ns: p.t.start_mono.unwrap_or(p.t.seen_ns),
                observed_ns: p.t.seen_ns,
            }
        } else {
            Timing::Wakeup {
                observed_ns: p.observed,
            }
        };
        if self.pidfd_status == StatusSupport::Yes {
            if let Some(fd) = &p.t.pidfd {
                if let Ok(PidfdExit::Status(s)) = sys::pidfd_exit_info(fd) {
                    let st = ExitStatus::from_wait_status(s);
                    self.finish_exit(
                        p.t,
                        st,
                        Some(StatusFrom::PidfdInfo),
                        Via::Pidfd,
                        timing,
                        None,
                    );
                    return;
                }
            }
        }
        if let Some((st, from)) = self.zombie_status(&p.t) {
            // Reaping may be imminent with PIDFD_INFO_EXIT; the zombie's status is the same.
            self.finish_exit(p.t, st, from, Via::Pidfd, timing, None);
            return;
        }
        let can_wait = self.pidfd_status == StatusSupport::Yes;
        if !can_wait || now >= p.deadline {
            let why = match self.pidfd_status {
                StatusSupport::Yes => format!(
                    "its parent (pid {}) had not reaped it {} after it exited, and the watcher is not its parent",
                    p.t.ppid,
                    fmt_ns(self.tuning.reap_grace.as_nanos() as u64)
                ),
                StatusSupport::Unsupported => {
                    "the watcher is not its parent and this kernel has no PIDFD_INFO_EXIT (Linux 6.15+)".into()
                }
                StatusSupport::Disabled => {
                    "the watcher is not its parent and PIDFD_INFO_EXIT is disabled by configuration".into()
                }
            };
            self.finish_exit(
                p.t,
                ExitStatus::Unknown { why },
                None,
                Via::Pidfd,
                timing,
                None,
            );
            return;
        }
        p.tries += 1;
        let step = (1_000_000u64 << p.tries.min(6)).min(50_000_000);
        p.next_try = (now + step).min(p.deadline);
        self.pending_exits.push(p);
    }

    /// Look again at the pending exits whose next try is due.
    pub(super) fn retry_pending(&mut self) {
        if self.pending_exits.is_empty() {
            return;
        }
        let now = mono_now();
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_exits)
            .into_iter()
            .partition(|p| p.next_try <= now);
        self.pending_exits = keep;
        for p in due {
            self.try_resolve(p);
        }
    }
}
