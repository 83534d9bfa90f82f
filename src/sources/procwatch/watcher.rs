//! The watcher thread: one [`Watcher`] holds what the process watcher knows and runs its
//! event loop ([`Watcher::run`]): commands from the recorder, netlink datagrams, pidfd
//! wake-ups, and /proc scans on a timer. Its parts, each an `impl Watcher` in a file:
//!
//! - `mode`: choosing the mechanism (netlink verified with a test child, pidfd probed);
//! - `table`: the tracked processes and the app each belongs to (environment, hints,
//!   inheritance);
//! - `discovery`: the daemon from `pm2.pid`, /proc scans for new processes (and, in the
//!   scan modes, for exits), late attribution of processes caught before their exec;
//! - `netlink_events`: the connector's fork, exec and exit events (netlink mode);
//! - `exits`: exits and their status, and the early-exit check that follows;
//! - `generations`: each app's newest generation and the main processes a stop or restart
//!   replaces;
//! - `snapshot`: processes, sockets, host-wide holders, environment and start paths.

mod discovery;
mod exits;
mod generations;
mod mode;
mod netlink_events;
mod snapshot;
mod table;

use super::netlink::CnEvent;
use super::sys::{self, Epoll, EventFd};
use super::{Cmd, RedactFn, Tuning, WatchConfig};
use crate::event::proc::{ActiveMode, ProcEvent, SnapshotReason, WatchModeReport};
use crate::event::{mono_now, Event, EventSink, MonoNs};
use exits::PendingExit;
use generations::MainFacts;
use mode::StatusSupport;
use netlink_events::NetlinkInbox;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use table::Tracked;

/// epoll tokens: the command eventfd, the netlink socket, and a pidfd (`TOKEN_PIDFD | pid`).
const TOKEN_WAKE: u64 = 0;
const TOKEN_NETLINK: u64 = 1;
const TOKEN_PIDFD: u64 = 1 << 32;

/// The process watcher's state, owned by its thread.
pub(super) struct Watcher {
    home: String,
    home_canon: Option<PathBuf>,
    proc_root: PathBuf,
    tuning: Tuning,
    sink: EventSink,
    redact: RedactFn,
    report: WatchModeReport,
    mode: ActiveMode,
    epoll: Epoll,
    wake: Arc<EventFd>,
    netlink: NetlinkInbox,
    /// Connector events read while verifying the subscription, handled after the first scan.
    startup_events: Vec<CnEvent>,
    /// Some of those were dropped.
    startup_lost: bool,
    pidfd_status: StatusSupport,
    /// The tracked processes, by pid.
    table: HashMap<i32, Tracked>,
    daemon: Option<i32>,
    /// Why there is no daemon to track, when there is none.
    daemon_note: Option<String>,
    /// pidfd exits waiting for their status.
    pending_exits: Vec<PendingExit>,
    /// Pids found by the last scan to be neither the daemon's descendants nor its apps.
    foreign: HashSet<i32>,
    /// Processes whose exit was recorded (pid -> start), so that a scan that still finds
    /// them (zombies not yet reaped) does not take them for new ones.
    exited: HashMap<i32, Option<u64>>,
    last_scan: MonoNs,
    /// Until when scans run at the fast interval (something is in flux).
    flux_until: MonoNs,
    /// The newest generation seen of each app (pm_id -> restart_time).
    newest_gen: HashMap<u64, u64>,
    /// When each app's last early-exit snapshot was queued.
    last_early_snap: HashMap<u64, MonoNs>,
    /// When the last host-wide socket scan ran (early-exit snapshots, spaced).
    last_host_scan: MonoNs,
    /// Snapshots to take, with the instant each was asked for (the tap's instant for a
    /// stop or restart request).
    queued_snapshots: Vec<(SnapshotReason, MonoNs)>,
    /// The main processes of each app's latest generations (pm_id -> oldest first), with
    /// what they were started with, read when they appeared.
    mains: HashMap<u64, Vec<MainFacts>>,
    /// CLOCK_BOOTTIME - CLOCK_MONOTONIC, to place start ticks on the monotonic clock.
    boot_off: u64,
    tick_ns: u64,
    my_uid: u32,
    /// The first scan is running: what it finds existed before the watcher.
    initializing: bool,
    /// Reused by scans.
    pid_buf: Vec<i32>,
}

impl Watcher {
    /// Choose the mode, find the daemon and set up epoll.
    pub(super) fn new(
        cfg: WatchConfig,
        sink: EventSink,
        redact: RedactFn,
        wake: Arc<EventFd>,
    ) -> std::io::Result<(Watcher, WatchModeReport)> {
        let tuning = cfg.tuning.clone();
        let chosen = mode::choose(cfg.mode, &tuning)?;
        let home = cfg.pm2_home.to_string_lossy().into_owned();
        let home_canon = std::fs::canonicalize(&cfg.pm2_home).ok();
        let proc_root = tuning.proc_root.clone();
        let (daemon, daemon_note) = match cfg.daemon_pid {
            Some(p) => (Some(p), None),
            None => discovery::daemon_from_pidfile(&cfg.pm2_home, &proc_root),
        };
        let mut why = chosen.why;
        if let Some(n) = &daemon_note {
            why.push_str(&format!(" ({n}; tracking apps by environment only)"));
        }
        let report = WatchModeReport {
            mode: chosen.mode,
            why,
            limits: chosen.limits,
        };
        let epoll = Epoll::new()?;
        epoll.add(wake.raw_fd(), TOKEN_WAKE)?;
        let (sock, startup_events, startup_lost) = match chosen.netlink {
            Some(s) => (Some(s.sock), s.events, s.lost),
            None => (None, Vec::new(), false),
        };
        if let Some(s) = &sock {
            epoll.add(s.raw_fd(), TOKEN_NETLINK)?;
        }
        let tick_ns = 1_000_000_000 / sys::clk_tck();
        // SAFETY: geteuid has no side effects.
        let my_uid = unsafe { libc::geteuid() };
        let watcher = Watcher {
            home,
            home_canon,
            proc_root,
            tuning,
            sink,
            redact,
            report: report.clone(),
            mode: chosen.mode,
            epoll,
            wake,
            netlink: NetlinkInbox::new(sock),
            startup_events,
            startup_lost,
            pidfd_status: chosen.pidfd_status,
            table: HashMap::new(),
            daemon,
            daemon_note,
            pending_exits: Vec::new(),
            foreign: HashSet::new(),
            exited: HashMap::new(),
            last_scan: 0,
            flux_until: 0,
            newest_gen: HashMap::new(),
            last_early_snap: HashMap::new(),
            last_host_scan: 0,
            queued_snapshots: Vec::new(),
            mains: HashMap::new(),
            boot_off: sys::boottime_offset_ns(),
            tick_ns,
            my_uid,
            initializing: true,
            pid_buf: Vec::new(),
        };
        Ok((watcher, report))
    }

    /// The thread's body: the mode event, the initial scan and start snapshot, then events
    /// until [`Cmd::Stop`].
    pub(super) fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let t0 = mono_now();
        self.emit(
            t0,
            ProcEvent::Mode {
                report: self.report.clone(),
            },
        );
        if self.mode == ActiveMode::Off {
            // Only wait for stop.
            while let Ok(c) = rx.recv() {
                if matches!(c, Cmd::Stop) {
                    return;
                }
            }
            return;
        }
        self.initial_scan();
        self.initializing = false;
        // Events read while verifying the subscription.
        let startup = std::mem::take(&mut self.startup_events);
        let now = mono_now();
        for e in startup {
            self.on_cn(e, now);
        }
        if self.startup_lost {
            self.lost("events arrived faster than they could be buffered during start-up".into());
        }
        self.snapshot(SnapshotReason::Start, mono_now());
        self.run_queued_snapshots();

        let mut ready = Vec::new();
        loop {
            let timeout = self.next_timeout();
            if let Err(e) = self.epoll.wait(&mut ready, timeout) {
                self.lost(format!("epoll_wait failed, watcher stops: {e}"));
                return;
            }
            let now = mono_now();
            for &tok in ready.iter() {
                if tok == TOKEN_WAKE {
                    self.wake.drain();
                    while let Ok(c) = rx.try_recv() {
                        match c {
                            Cmd::Stop => {
                                // What the kernel reported before the stop is kept: the
                                // datagrams waiting or already read ahead.
                                self.drain_netlink();
                                return;
                            }
                            Cmd::Hint { pid, pm_id, name } => self.on_hint(pid, pm_id, &name),
                            Cmd::Snapshot(r, asked) => {
                                self.flux();
                                self.queued_snapshots.push((r, asked))
                            }
                        }
                    }
                } else if tok == TOKEN_NETLINK {
                    self.drain_netlink();
                } else if tok & TOKEN_PIDFD != 0 {
                    let pid = (tok & 0xffff_ffff) as u32 as i32;
                    self.on_pidfd(pid, now);
                }
            }
            self.retry_pending();
            if self.mode != ActiveMode::Netlink && self.scan_due() {
                self.scan();
            }
            self.run_queued_snapshots();
            // Datagrams a long step read ahead (`keep_up`, e.g. in a snapshot) are handled
            // now: the socket they came from is empty and would not wake the loop for them.
            while self.netlink.read_ahead() {
                self.drain_netlink();
                self.run_queued_snapshots();
            }
        }
    }

    /// Milliseconds until the next pending-exit retry or scan is due (-1: none).
    fn next_timeout(&self) -> i32 {
        let now = mono_now();
        let mut due: Option<MonoNs> = None;
        let mut consider = |t: MonoNs| due = Some(due.map_or(t, |d: MonoNs| d.min(t)));
        for p in &self.pending_exits {
            consider(p.next_try);
        }
        if self.mode != ActiveMode::Netlink {
            consider(self.next_scan_at());
        }
        match due {
            None => -1,
            Some(d) if d <= now => 0,
            Some(d) => (d - now).div_ceil(1_000_000).min(i32::MAX as u64) as i32,
        }
    }

    fn next_scan_at(&self) -> MonoNs {
        let iv = if self.last_scan < self.flux_until {
            self.tuning.fast_scan
        } else {
            self.tuning.idle_scan
        };
        self.last_scan + iv.as_nanos() as u64
    }

    fn scan_due(&self) -> bool {
        mono_now() >= self.next_scan_at()
    }

    /// Something is in flux (a request, an exit, a new process): scan at the fast interval
    /// for a while (scan modes).
    fn flux(&mut self) {
        if self.mode != ActiveMode::Netlink {
            self.flux_until = mono_now() + self.tuning.flux_window.as_nanos() as u64;
        }
    }

    fn emit(&self, t: MonoNs, e: ProcEvent) {
        self.sink.emit_at(t, Event::Proc(Box::new(e)));
    }

    fn lost(&self, why: String) {
        self.emit(mono_now(), ProcEvent::Lost { why });
    }

    /// A start time in clock ticks since boot, on the monotonic clock.
    fn ticks_to_mono(&self, ticks: u64) -> MonoNs {
        (ticks * self.tick_ns).saturating_sub(self.boot_off)
    }
}
