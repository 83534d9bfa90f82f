//! Finding the processes to track: the daemon (from `pm2.pid`), then /proc scans for its
//! descendants and for processes whose environment names an app of this `PM2_HOME`. In
//! the scan modes (pidfd, procscan) a scan also finds exits of processes without a pidfd,
//! and looks again at young processes that may have been caught between fork and exec.

use super::table::join_cmd;
use super::Watcher;
use crate::event::proc::{shorten, ActiveMode, AttrHow, ProcEvent, Timing, Via};
use crate::event::{mono_now, MonoNs};
use crate::sources::procwatch::procfs::{self, Stat};
use std::collections::HashSet;
use std::path::Path;

/// Unattributed tracked processes younger than this get their environment re-read on
/// scans (they may have been caught between fork and exec).
const REATTRIBUTE_AGE_NS: u64 = 5_000_000_000;

/// The daemon's pid from `<pm2_home>/pm2.pid`, checked to be a God daemon; else `None`
/// and why.
pub(super) fn daemon_from_pidfile(
    pm2_home: &Path,
    proc_root: &Path,
) -> (Option<i32>, Option<String>) {
    let pidfile = pm2_home.join("pm2.pid");
    // Never through a symlink, and never quoting a file that failed the checks.
    let read = crate::safe_dir::SafeDir::open(pm2_home)
        .and_then(|d| d.read_file("pm2.pid", 64))
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    match read {
        Ok(s) => match s.trim().parse::<i32>() {
            Ok(p) => {
                let cmd = procfs::read_cmdline(proc_root, p)
                    .unwrap_or_default()
                    .join(" ");
                if cmd.contains("God Daemon") {
                    (Some(p), None)
                } else {
                    let note = format!(
                        "{} names pid {p}, which is not a PM2 God daemon (gone or reused)",
                        pidfile.display()
                    );
                    (None, Some(note))
                }
            }
            Err(_) => {
                let note = format!(
                    "{}: not a pid: {:?}",
                    pidfile.display(),
                    crate::views::terminal_safe(&shorten(&s, 40))
                );
                (None, Some(note))
            }
        },
        Err(e) => (None, Some(format!("no daemon: {e}"))),
    }
}

impl Watcher {
    /// Track the daemon and everything already running; note the newest generations.
    pub(super) fn initial_scan(&mut self) {
        if let Some(d) = self.daemon {
            if !self.track(d, None, None, None) {
                self.daemon_note = Some(format!("daemon pid {d} is gone"));
                self.lost(format!(
                    "daemon pid {d} is not running; tracking apps by environment only"
                ));
                self.daemon = None;
            } else if let Some(t) = self.table.get(&d) {
                let now = mono_now();
                self.emit(
                    now,
                    ProcEvent::Tracked {
                        who: t.who(),
                        via: Via::ProcScan,
                        timing: Timing::BeforeStart { observed_ns: now },
                    },
                );
            }
        }
        self.scan();
        // Newest generations seen at start: later ones are new.
        let pids: Vec<i32> = self.table.keys().copied().collect();
        for p in pids {
            self.note_generation(p);
        }
    }

    /// One /proc scan: new descendants and newly visible apps; in scan modes also exits of
    /// tracked processes and late attribution of processes caught before their exec.
    pub(super) fn scan(&mut self) {
        let now = mono_now();
        self.last_scan = now;
        let mut pids = std::mem::take(&mut self.pid_buf);
        pids.clear();
        if let Err(e) = procfs::list_pids(&self.proc_root, &mut pids) {
            self.lost(format!("cannot list {}: {e}", self.proc_root.display()));
            self.pid_buf = pids;
            return;
        }
        let listed: HashSet<i32> = pids.iter().copied().collect();
        // Candidates: pids neither tracked nor known to be foreign.
        let mut cands: Vec<Stat> = Vec::new();
        let mut foreign = HashSet::with_capacity(self.foreign.len() + 16);
        for &p in &pids {
            if self.table.contains_key(&p) {
                continue;
            }
            if self.foreign.contains(&p) {
                foreign.insert(p);
                continue;
            }
            if let Some(s) = procfs::read_stat(&self.proc_root, p) {
                if let Some(start) = self.exited.get(&p) {
                    if start.is_none() || *start == Some(s.starttime) {
                        continue;
                    }
                }
                cands.push(s);
            }
        }
        cands.sort_by_key(|s| (s.starttime, s.pid));
        let initial = self.initializing;
        let mut new_pids = Vec::new();
        for s in cands {
            let p = s.pid;
            let parent = self.table.get(&s.ppid).map(|t| t.app.clone());
            let is_zombie = s.state == 'Z';
            match parent {
                Some(papp) => {
                    let inherit = papp.map(|a| (s.ppid, a));
                    let start_ticks = s.starttime;
                    let ppid = s.ppid;
                    if self.track(p, Some(s), None, inherit) {
                        new_pids.push((p, Some(ppid), start_ticks, is_zombie));
                    }
                }
                None => {
                    if self.env_attribution(p, false).is_some() {
                        let start_ticks = s.starttime;
                        if self.track(p, Some(s), None, None) {
                            new_pids.push((p, None, start_ticks, is_zombie));
                        }
                    } else {
                        foreign.insert(p);
                    }
                }
            }
        }
        self.foreign = foreign;
        self.exited.retain(|p, _| listed.contains(p));
        for (p, parent, start_ticks, zombie) in new_pids {
            let Some(t) = self.table.get(&p) else {
                continue;
            };
            let who = t.who();
            let via = Via::ProcScan;
            let ev = if initial {
                ProcEvent::Tracked {
                    who,
                    via,
                    timing: Timing::BeforeStart { observed_ns: now },
                }
            } else {
                let timing = Timing::StartTime {
                    not_before_ns: self.ticks_to_mono(start_ticks),
                    resolution_ns: self.tick_ns,
                    observed_ns: now,
                };
                match parent {
                    Some(pp) => ProcEvent::Fork {
                        parent: pp,
                        who,
                        via,
                        timing,
                    },
                    None => ProcEvent::Tracked { who, via, timing },
                }
            };
            let at = match &ev {
                ProcEvent::Fork { timing, .. } | ProcEvent::Tracked { timing, .. } => timing.at(),
                _ => now,
            };
            self.emit(at, ev);
            if !initial {
                self.flux();
                self.note_generation(p);
            }
            // A zombie found by a scan in netlink mode exited before we subscribed or will be
            // reported by its exit event; in scan modes its status is readable now.
            if zombie && self.mode == ActiveMode::ProcScan {
                self.scan_exit(p, now);
            }
        }
        if self.mode != ActiveMode::Netlink && !initial {
            // Exits seen by the scan (procscan mode; pidfd mode only for processes without a pidfd).
            let gone: Vec<i32> = self
                .table
                .values()
                .filter(|t| t.pidfd.is_none())
                .filter(|t| {
                    if !listed.contains(&t.pid) {
                        return true;
                    }
                    match procfs::read_stat(&self.proc_root, t.pid) {
                        None => true,
                        Some(s) => {
                            s.state == 'Z' || (t.start.is_some() && Some(s.starttime) != t.start)
                        }
                    }
                })
                .map(|t| t.pid)
                .collect();
            for p in gone {
                self.scan_exit(p, now);
            }
            for t in self.table.values_mut() {
                t.seen_ns = now;
            }
            self.reattribute_young(now);
        }
        self.pid_buf = pids;
    }

    /// Processes caught between fork and exec have their parent's environment; look again.
    fn reattribute_young(&mut self, now: MonoNs) {
        let young: Vec<i32> = self
            .table
            .values()
            .filter(|t| {
                !t.daemon && !matches!(t.how, Some(AttrHow::Environ) | Some(AttrHow::Hint { .. }))
            })
            .filter(|t| {
                t.start_mono
                    .is_some_and(|s| now.saturating_sub(s) < REATTRIBUTE_AGE_NS)
            })
            .map(|t| t.pid)
            .collect();
        for p in young {
            let cmd = procfs::read_cmdline(&self.proc_root, p).and_then(|a| join_cmd(&a));
            let app = self.env_attribution(p, true);
            let Some(t) = self.table.get_mut(&p) else {
                continue;
            };
            let exec = cmd.is_some() && cmd != t.cmd;
            if exec {
                t.cmd = cmd;
            }
            let timing = Timing::Between {
                not_before_ns: t.seen_ns,
                observed_ns: now,
            };
            self.reattribute(p, app, exec.then_some((Via::ProcScan, timing)), now);
        }
    }
}
