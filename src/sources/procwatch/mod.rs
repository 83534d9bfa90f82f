//! The process watcher: exits, signals, descendants and ports, from the kernel and /proc.
//!
//! [`ProcWatcher::start`] picks a mode, tracks the PM2 daemon, its descendants and every
//! process whose environment says it is a pm2 app of this `PM2_HOME`, and sends
//! [`ProcEvent`]s (inside [`crate::event::Event::Proc`]; their types, the capture's, are in
//! [`crate::event::proc`]) to the recorder's [`EventSink`], stamped on CLOCK_MONOTONIC like
//! every other source.
//!
//! [`ProcEvent`]: crate::event::ProcEvent
//!
//! - **netlink**: the kernel's process connector gives fork, exec and exit of every process
//!   with the kernel's timestamp and the wait status; everything not tracked is dropped
//!   after one hash lookup, without allocation. The subscription is verified with a
//!   throw-away child before the mode is chosen (the kernel silently ignores subscriptions
//!   from a non-initial user or pid namespace).
//! - **pidfd**: one pidfd per tracked process gives the exit instant (the watcher wakes on
//!   it); `PIDFD_GET_INFO`/`PIDFD_INFO_EXIT` (Linux 6.15+) gives the wait status once the
//!   parent reaped the process, else /proc stat field 52 while it is a zombie, else the
//!   status is recorded as unknown with the reason. New processes are found by /proc scans:
//!   every `fast_scan` while something is in flux (a request, an exit, a new process),
//!   every `idle_scan` otherwise; their birth is known to a clock tick from their start time.
//! - **procscan**: scans only (no pidfd_open): exits are known to a scan interval.
//!
//! Snapshots ([`ProcWatcher::request_snapshot`], and automatically when a new generation is
//! spawned or exits early) record the process tree, the listening sockets of every
//! attributed process and, for stop/restart requests, the environment of the generation
//! being replaced, with values passed through the recorder's redaction.
//!
//! # How the recorder uses it
//!
//! ```ignore
//! let mut cfg = WatchConfig::new(&pm2_home);      // Auto mode, daemon from pm2.pid
//! cfg.daemon_pid = opts.daemon_pid;
//! let r = Arc::new(redactor);                      // the capture's Redactor
//! let redact: RedactFn = { let r = r.clone(); Box::new(move |k, v| r.env_value(k, v)) };
//! let w = ProcWatcher::start(cfg, sink.clone(), redact)?;   // blocks ≤ 2 × verify_timeout
//! info.proc_mode = w.mode().to_string();            // and print it
//! // request seen on rpc.sock (before or as it is forwarded):
//! w.request_snapshot(SnapshotReason::RestartRequested { pm_id: Some(id) }); // restart, reload
//! w.request_snapshot(SnapshotReason::StopRequested { pm_id: None });       // stop/delete "all"
//! // replies: restartProcessId (new pid), getMonitorData (every pid): cheap when known
//! w.hint_pid(pid, pm_id, &name);
//! w.stop();                                         // before finalising the capture
//! ```
//!
//! Event stamps: netlink events carry the kernel's time and arrive within milliseconds;
//! pidfd exits are stamped at the wake-up (a status still pending arrives up to
//! `reap_grace` later); pidfd/procscan forks are stamped at the process's start time and
//! arrive with the next scan (up to `idle_scan` later while nothing is in flux).

pub mod netlink;
pub(crate) mod procfs;
pub(crate) mod start_paths;
pub mod sys;
mod watcher;

use crate::event::proc::{SnapshotReason, WatchModeReport};
use crate::event::EventSink;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// The recorder's redaction of environment values: `(key, value) -> stored value`.
pub(crate) type RedactFn = Box<dyn Fn(&str, &str) -> String + Send + Sync>;

/// Store values as they are (tests; `--redact none`).
pub fn no_redaction() -> RedactFn {
    Box::new(|_, v| v.to_string())
}

/// Which mechanism to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// netlink if it works (verified), else pidfd, else /proc scans only.
    Auto,
    /// netlink or fail.
    Netlink,
    /// pidfd (+ /proc scans) even when netlink would work; fails without pidfd_open.
    Pidfd,
    /// Do not watch.
    Off,
}

/// Knobs, with defaults suitable for production. Tests shorten or disable some.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// How long to wait for the verification child's exit event after subscribing.
    pub verify_timeout: Duration,
    /// /proc scan interval while something is in flux (pidfd and procscan modes).
    pub fast_scan: Duration,
    /// /proc scan interval otherwise.
    pub idle_scan: Duration,
    /// How long after a request, exit or new process the fast interval applies.
    pub flux_window: Duration,
    /// How long to wait after a pidfd exit for the parent to reap it (for PIDFD_INFO_EXIT).
    pub reap_grace: Duration,
    /// An exit of the newest generation within this time of its start triggers an
    /// early-exit snapshot (pm2's default min_uptime).
    pub early_exit: Duration,
    /// Use PIDFD_INFO_EXIT for exit statuses (pidfd mode). Off: as on a kernel before 6.15.
    pub pidfd_exit_info: bool,
    /// Read the exit status of zombies from `/proc/<pid>/stat` (pidfd and procscan modes).
    pub zombie_stat: bool,
    /// Where procfs is mounted.
    pub proc_root: PathBuf,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            verify_timeout: Duration::from_millis(300),
            fast_scan: Duration::from_millis(50),
            idle_scan: Duration::from_secs(2),
            flux_window: Duration::from_secs(5),
            reap_grace: Duration::from_millis(150),
            early_exit: Duration::from_millis(1000),
            pidfd_exit_info: true,
            zombie_stat: true,
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// What to watch and how.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The daemon's home (`PM2_HOME`); apps are recognised by `PM2_HOME` in their environment.
    pub pm2_home: PathBuf,
    /// The daemon's pid; `None`: read `<pm2_home>/pm2.pid` (checked to be a God daemon).
    pub daemon_pid: Option<i32>,
    pub mode: WatchMode,
    pub tuning: Tuning,
}

impl WatchConfig {
    /// Auto mode, daemon from `pm2.pid`, default tuning.
    pub fn new(pm2_home: impl Into<PathBuf>) -> WatchConfig {
        WatchConfig {
            pm2_home: pm2_home.into(),
            daemon_pid: None,
            mode: WatchMode::Auto,
            tuning: Tuning::default(),
        }
    }
}

pub(crate) enum Cmd {
    Hint {
        pid: i32,
        pm_id: u64,
        name: String,
    },
    /// A snapshot, and when it was asked for (monotonic ns).
    Snapshot(SnapshotReason, crate::event::MonoNs),
    Stop,
}

/// A running process watcher (one thread). Stops when dropped.
pub struct ProcWatcher {
    report: WatchModeReport,
    tx: mpsc::Sender<Cmd>,
    wake: Arc<sys::EventFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProcWatcher {
    /// Choose the mode (verifying netlink with a throw-away child, at most
    /// `2 × verify_timeout`), then start the watcher thread, which emits a
    /// `ProcEvent::Mode`, a `ProcEvent::Tracked` per process found and a start
    /// `ProcEvent::Snapshot` (see [`crate::event::ProcEvent`]), then events as they happen.
    ///
    /// Errors: a forced mode (Netlink, Pidfd) that does not work here, or a failure to set
    /// up epoll/eventfd or the thread.
    pub fn start(
        cfg: WatchConfig,
        sink: EventSink,
        redact: RedactFn,
    ) -> std::io::Result<ProcWatcher> {
        let (tx, rx) = mpsc::channel();
        let wake = Arc::new(sys::EventFd::new()?);
        let (watcher, report) = watcher::Watcher::new(cfg, sink, redact, wake.clone())?;
        let thread = std::thread::Builder::new()
            .name("pm2-trace-procwatch".into())
            .spawn(move || watcher.run(rx))?;
        Ok(ProcWatcher {
            report,
            tx,
            wake,
            thread: Some(thread),
        })
    }

    /// Which mode runs and why (for `record`'s output and `CaptureInfo.proc_mode`).
    pub fn mode(&self) -> &WatchModeReport {
        &self.report
    }

    /// A cloneable handle for giving the watcher hints from other threads.
    pub fn handle(&self) -> WatcherHandle {
        WatcherHandle {
            tx: self.tx.clone(),
            wake: self.wake.clone(),
        }
    }

    /// See [`WatcherHandle::hint_pid`].
    pub fn hint_pid(&self, pid: i32, pm_id: u64, name: &str) {
        self.handle().hint_pid(pid, pm_id, name)
    }

    /// See [`WatcherHandle::request_snapshot`].
    pub fn request_snapshot(&self, reason: SnapshotReason) {
        self.handle().request_snapshot(reason)
    }

    /// Stop the thread and wait for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn send(&self, c: Cmd) {
        self.handle().send(c)
    }

    fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            self.send(Cmd::Stop);
            let _ = t.join();
        }
    }
}

/// Gives a running [`ProcWatcher`] hints; cheap to clone, usable from any thread. Hints
/// sent after the watcher stopped are ignored.
#[derive(Clone)]
pub struct WatcherHandle {
    tx: mpsc::Sender<Cmd>,
    wake: Arc<sys::EventFd>,
}

impl WatcherHandle {
    /// The recorder learned that `pid` is app `pm_id` (`name`), e.g. from a getMonitorData
    /// or restartProcessId reply. The process is tracked (if it was not) and attributed.
    pub(crate) fn hint_pid(&self, pid: i32, pm_id: u64, name: &str) {
        self.send(Cmd::Hint {
            pid,
            pm_id,
            name: name.to_string(),
        });
    }

    /// Take a snapshot now (asynchronously: it is emitted as an event).
    pub fn request_snapshot(&self, reason: SnapshotReason) {
        self.send(Cmd::Snapshot(reason, crate::event::mono_now()));
    }

    fn send(&self, c: Cmd) {
        if self.tx.send(c).is_ok() {
            self.wake.wake();
        }
    }
}

impl Drop for ProcWatcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}
