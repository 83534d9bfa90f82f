//! The tracked processes, and which pm2 app each belongs to: from its environment (pm2's
//! `pm_id`, `name`, `PM2_HOME`, `restart_time`), from the recorder's hints, or inherited
//! from the tracked process that forked it.

use super::{Watcher, TOKEN_PIDFD};
use crate::event::proc::{shorten, ActiveMode, AppRef, AttrHow, ProcEvent, Timing, Via, Who};
use crate::event::{mono_now, MonoNs};
use crate::sources::procwatch::procfs::{self, Stat};
use crate::sources::procwatch::sys;
use std::os::fd::{AsRawFd, OwnedFd};

/// One tracked process.
pub(super) struct Tracked {
    pub(super) pid: i32,
    pub(super) start: Option<u64>,
    /// Start on the monotonic clock (exact from a fork event, else from start ticks).
    pub(super) start_mono: Option<MonoNs>,
    pub(super) ppid: i32,
    pub(super) app: Option<AppRef>,
    pub(super) how: Option<AttrHow>,
    pub(super) daemon: bool,
    pub(super) cmd: Option<String>,
    /// Listening addresses at the last snapshot.
    pub(super) held: Vec<String>,
    pub(super) pidfd: Option<OwnedFd>,
    /// When the watcher last knew it alive (scan modes).
    pub(super) seen_ns: MonoNs,
    /// It had already exited when the watcher started watching it (pidfd readable at once,
    /// or gone before pidfd_open): its exit instant is only known to an interval.
    pub(super) born_dead: bool,
}

impl Tracked {
    /// The process as an event names it.
    pub(super) fn who(&self) -> Who {
        Who {
            pid: self.pid,
            start: self.start,
            ppid: self.ppid,
            app: self.app.clone(),
            how: self.how.clone(),
            daemon: self.daemon,
            cmd: self.cmd.clone(),
        }
    }
}

fn normalize_home(s: &str) -> &str {
    let t = s.trim_end_matches('/');
    if t.is_empty() {
        "/"
    } else {
        t
    }
}

/// A command line as events show it, `None` when empty.
pub(super) fn join_cmd(args: &[String]) -> Option<String> {
    if args.is_empty() {
        None
    } else {
        let joined = args.join(" ");
        // Process titles (the God daemon's) are padded with spaces.
        Some(shorten(joined.trim_end(), 300))
    }
}

/// Whether the ancestry of `pid`, each parent as `ppid_of` says, leads to `daemon` (within
/// 128 generations).
pub(super) fn descends_from(
    daemon: Option<i32>,
    mut pid: i32,
    ppid_of: impl Fn(i32) -> Option<i32>,
) -> bool {
    let Some(d) = daemon else { return false };
    for _ in 0..128 {
        if pid == d {
            return true;
        }
        match ppid_of(pid) {
            Some(ppid) if ppid > 0 && ppid != pid => pid = ppid,
            _ => return false,
        }
    }
    false
}

impl Watcher {
    fn home_matches(&self, env_home: &str) -> bool {
        if normalize_home(env_home) == normalize_home(&self.home) {
            return true;
        }
        match (&self.home_canon, std::fs::canonicalize(env_home)) {
            (Some(a), Ok(b)) => *a == b,
            _ => false,
        }
    }

    /// Attribution from a process's environment, if it names an app of this home (or, for
    /// a descendant of the daemon, an app without naming a home).
    pub(super) fn env_attribution(&self, pid: i32, descendant: bool) -> Option<AppRef> {
        let (block, _) = procfs::read_environ(&self.proc_root, pid).ok()?;
        let e = procfs::parse_pm2_env(&block);
        let pm_id = e.pm_id?;
        let ours = match &e.pm2_home {
            Some(h) => self.home_matches(h),
            None => descendant,
        };
        if !ours {
            return None;
        }
        Some(AppRef {
            pm2_home: self.home.clone(),
            pm_id,
            name: e.name.unwrap_or_default(),
            generation: e.restart_time,
            unique_id: e.unique_id,
        })
    }

    /// Whether `pid`'s ancestry, as tracked, leads to the daemon.
    pub(super) fn in_tree(&self, pid: i32) -> bool {
        descends_from(self.daemon, pid, |p| self.table.get(&p).map(|t| t.ppid))
    }

    /// Start tracking `pid` (attributed from its environment, else as `inherit` says; in
    /// pidfd mode with a pidfd). Returns false if it is gone.
    pub(super) fn track(
        &mut self,
        pid: i32,
        stat: Option<Stat>,
        start_mono: Option<MonoNs>,
        inherit: Option<(i32, AppRef)>,
    ) -> bool {
        if self.table.contains_key(&pid) {
            return true;
        }
        let stat = stat.or_else(|| procfs::read_stat(&self.proc_root, pid));
        let now = mono_now();
        let is_daemon = Some(pid) == self.daemon;
        let ppid = stat.as_ref().map(|s| s.ppid).unwrap_or(0);
        let descendant = is_daemon || self.table.contains_key(&ppid);
        let (app, how) = match (
            if is_daemon {
                None
            } else {
                self.env_attribution(pid, descendant)
            },
            inherit,
        ) {
            (Some(a), _) => (Some(a), Some(AttrHow::Environ)),
            (None, Some((parent, a))) => (Some(a), Some(AttrHow::Ancestry { parent })),
            (None, None) => (None, None),
        };
        let cmd = procfs::read_cmdline(&self.proc_root, pid).and_then(|a| join_cmd(&a));
        let start = stat.as_ref().map(|s| s.starttime);
        let start_mono = start_mono.or_else(|| start.map(|s| self.ticks_to_mono(s)));
        let mut t = Tracked {
            pid,
            start,
            start_mono,
            ppid,
            app,
            how,
            daemon: is_daemon,
            cmd,
            held: Vec::new(),
            pidfd: None,
            seen_ns: now,
            born_dead: false,
        };
        if self.mode == ActiveMode::Pidfd {
            match sys::pidfd_open(pid) {
                Ok(fd) => {
                    // The pid may have been reused between the stat read and pidfd_open.
                    let again = procfs::read_stat(&self.proc_root, pid);
                    if let (Some(a), Some(s)) = (&again, start) {
                        if a.starttime != s {
                            return false;
                        }
                    }
                    let mut pfd = libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd, no wait.
                    if unsafe { libc::poll(&mut pfd, 1, 0) } > 0 {
                        t.born_dead = true;
                    }
                    if self
                        .epoll
                        .add(fd.as_raw_fd(), TOKEN_PIDFD | pid as u32 as u64)
                        .is_ok()
                    {
                        t.pidfd = Some(fd);
                    }
                }
                // Gone (reaped) between the scan's stat read and pidfd_open: the next scan
                // records its exit, with the interval it is known to.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => t.born_dead = true,
                Err(_) => return false,
            }
        }
        self.table.insert(pid, t);
        true
    }

    /// Tracked `pid` executed a new program (`exec`: how that was seen) or was looked at
    /// again, and its environment names `app`: emit the exec, then its new attribution
    /// when that changed, all at `at`.
    pub(super) fn reattribute(
        &mut self,
        pid: i32,
        app: Option<AppRef>,
        exec: Option<(Via, Timing)>,
        at: MonoNs,
    ) {
        let Some(t) = self.table.get_mut(&pid) else {
            return;
        };
        let changed = app.is_some() && app != t.app;
        if app.is_some() {
            t.app = app;
            t.how = Some(AttrHow::Environ);
        }
        let who = t.who();
        if let Some((via, timing)) = exec {
            let who = who.clone();
            self.emit(at, ProcEvent::Exec { who, via, timing });
        }
        if changed {
            self.emit(at, ProcEvent::Attributed { who });
            self.note_generation(pid);
        }
    }

    /// The recorder learned that `pid` is app `pm_id` (`name`): track it if it is not, and
    /// attribute it.
    pub(super) fn on_hint(&mut self, pid: i32, pm_id: u64, name: &str) {
        // Already known as this app: nothing to do (the recorder may hint on every reply).
        if self
            .table
            .get(&pid)
            .is_some_and(|t| t.app.as_ref().is_some_and(|a| a.pm_id == pm_id))
        {
            return;
        }
        self.flux();
        let now = mono_now();
        let hinted = |env: Option<AppRef>, home: &str| -> AppRef {
            match env {
                Some(a) if a.pm_id == pm_id => a,
                _ => AppRef {
                    pm2_home: home.to_string(),
                    pm_id,
                    name: name.to_string(),
                    generation: None,
                    unique_id: None,
                },
            }
        };
        if self.table.contains_key(&pid) {
            let env = self.env_attribution(pid, true);
            let home = self.home.clone();
            let Some(t) = self.table.get_mut(&pid) else {
                return;
            };
            if t.app.as_ref().is_some_and(|a| a.pm_id == pm_id) {
                return;
            }
            t.app = Some(hinted(env, &home));
            t.how = Some(AttrHow::Hint {
                source: "recorder".into(),
            });
            let who = t.who();
            self.emit(now, ProcEvent::Attributed { who });
            self.note_generation(pid);
            return;
        }
        let Some(stat) = procfs::read_stat(&self.proc_root, pid) else {
            // A hint about a process whose exit was seen (the recorder decodes the RPC
            // traffic behind the kernel's events) is late, not a sign of lost events.
            if !self.exited.contains_key(&pid) {
                self.lost(format!("hint: pid {pid} ({name}:{pm_id}) is not running"));
            }
            return;
        };
        if !self.track(pid, Some(stat), None, None) {
            return;
        }
        let env = self.env_attribution(pid, true);
        let home = self.home.clone();
        let Some(t) = self.table.get_mut(&pid) else {
            return;
        };
        if t.app.as_ref().is_none_or(|a| a.pm_id != pm_id) {
            t.app = Some(hinted(env, &home));
            t.how = Some(AttrHow::Hint {
                source: "recorder".into(),
            });
        }
        let who = t.who();
        let timing = Timing::Observed { observed_ns: now };
        self.emit(
            now,
            ProcEvent::Tracked {
                who,
                via: Via::Hint,
                timing,
            },
        );
        self.note_generation(pid);
        // Its descendants too.
        if self.mode == ActiveMode::Netlink {
            self.scan();
        }
    }
}
