//! The watcher thread: mode selection, the tracking table, event handling and snapshots.

use crate::event::proc::*;
use super::netlink::{self, CnEvent, NetlinkSock};
use super::procfs::{self, Stat};
use super::sys::{self, Epoll, EventFd, PidfdExit};
use super::{Cmd, RedactFn, Tuning, WatchConfig, WatchMode};
use crate::event::{mono_now, Event, EventSink, MonoNs};
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;

const TOKEN_WAKE: u64 = 0;
const TOKEN_NETLINK: u64 = 1;
const TOKEN_PIDFD: u64 = 1 << 32;

/// Events kept while verifying the netlink subscription, replayed after the first scan.
const VERIFY_BUFFER: usize = 65536;

/// Unattributed tracked processes younger than this get their environment re-read on
/// scans (they may have been caught between fork and exec).
const REATTRIBUTE_AGE_NS: u64 = 5_000_000_000;

/// Most host-wide socket scans (which read every process's descriptors) per this interval.
const HOST_SCAN_SPACING_NS: u64 = 500_000_000;

/// An exit with an error code within this many times the early-exit window also gets an
/// early-exit snapshot.
const SLOW_FAILURE_FACTOR: u64 = 5;

/// Most early-exit snapshots per app per this interval.
const EARLY_SNAPSHOT_SPACING_NS: u64 = 100_000_000;

/// One tracked process.
struct Tracked {
    pid: i32,
    start: Option<u64>,
    /// Start on the monotonic clock (exact from a fork event, else from start ticks).
    start_mono: Option<MonoNs>,
    ppid: i32,
    app: Option<AppRef>,
    how: Option<AttrHow>,
    daemon: bool,
    cmd: Option<String>,
    /// Listening addresses at the last snapshot.
    held: Vec<String>,
    pidfd: Option<OwnedFd>,
    /// When the watcher last knew it alive (scan modes).
    seen_ns: MonoNs,
    /// It had already exited when the watcher started watching it (pidfd readable at once,
    /// or gone before pidfd_open): its exit instant is only known to an interval.
    born_dead: bool,
}

/// A generation's main process as it was when the watcher first saw it: what a stop or
/// restart request needs from the generation it replaces, kept because pm2 (7.x above
/// all) can kill that process and spawn the next before the request's snapshot runs.
struct MainFacts {
    pid: i32,
    start: Option<u64>,
    /// When the watcher first saw it (its fork's instant when known).
    seen: MonoNs,
    app: Option<AppRef>,
    environ: Environ,
    paths: Option<super::start_paths::ProcPaths>,
}

/// A process's environment block (and whether it was cut short), or why it was unreadable.
type Environ = Result<(Vec<u8>, bool), String>;

/// The main process of a generation a stop or restart replaces.
struct ReplacedMain {
    pid: i32,
    start: Option<u64>,
    app: Option<AppRef>,
    /// Its environment and paths as read when it appeared, when the watcher saw it appear.
    remembered: Option<(Environ, Option<super::start_paths::ProcPaths>)>,
}

/// Generations remembered per app by [`MainFacts`].
const MAINS_PER_APP: usize = 3;
/// Apps whose generations are remembered.
const MAINS_APPS: usize = 4096;

/// An exit seen on a pidfd whose status is not known yet (waiting for the parent to reap).
struct PendingExit {
    t: Tracked,
    observed: MonoNs,
    deadline: MonoNs,
    next_try: MonoNs,
    tries: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StatusSupport {
    Yes,
    Unsupported,
    Disabled,
}

pub(crate) struct Core {
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
    nl: Option<NetlinkSock>,
    early: Vec<CnEvent>,
    early_lost: bool,
    pidfd_status: StatusSupport,
    table: HashMap<i32, Tracked>,
    daemon: Option<i32>,
    daemon_note: Option<String>,
    pending: Vec<PendingExit>,
    foreign: HashSet<i32>,
    /// Processes whose exit was recorded (pid -> start), so that a scan that still finds
    /// them (zombies not yet reaped) does not take them for new ones.
    dead: HashMap<i32, Option<u64>>,
    last_scan: MonoNs,
    flux_until: MonoNs,
    newest_gen: HashMap<u64, u64>,
    last_early_snap: HashMap<u64, MonoNs>,
    /// When the last host-wide socket scan ran (early-exit snapshots, at most one per
    /// [`HOST_SCAN_SPACING_NS`]).
    last_host_scan: MonoNs,
    /// Snapshots to take, with the instant each was asked for (the tap's instant for a
    /// stop or restart request).
    queued_snapshots: Vec<(SnapshotReason, MonoNs)>,
    /// The main processes of each app's latest generations (pm_id -> oldest first), with
    /// what they were started with, read when they appeared.
    mains: HashMap<u64, Vec<MainFacts>>,
    boot_off: u64,
    tick_ns: u64,
    my_uid: u32,
    initializing: bool,
    pid_buf: Vec<i32>,
    /// Netlink datagrams read (with the instant they were read) but not yet handled: long
    /// work such as a snapshot keeps reading the socket between steps, so events keep
    /// their read instant and the kernel's buffer does not overrun meanwhile.
    nl_pending: std::collections::VecDeque<(MonoNs, Vec<u8>)>,
    nl_scratch: Vec<u8>,
    nl_overrun: bool,
}

/// Read every datagram waiting on the netlink socket into `pending`, stamped now.
fn prefetch_netlink(
    nl: &Option<NetlinkSock>,
    pending: &mut std::collections::VecDeque<(MonoNs, Vec<u8>)>,
    scratch: &mut Vec<u8>,
    overrun: &mut bool,
) -> Option<String> {
    let sock = nl.as_ref()?;
    if scratch.is_empty() {
        scratch.resize(16384, 0);
    }
    loop {
        match sock.recv(scratch) {
            Ok(None) => return None,
            Ok(Some(d)) => {
                // Bounded: beyond this the kernel's own buffer takes over (and may overrun).
                if pending.len() >= 65536 {
                    *overrun = true;
                    return None;
                }
                let d = d.to_vec();
                pending.push_back((mono_now(), d));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => *overrun = true,
            Err(e) => return Some(format!("netlink receive failed: {e}")),
        }
    }
}

/// Prefetch netlink datagrams from inside long work; only disjoint fields are borrowed, so it
/// can run while `self.table` is being iterated.
macro_rules! prefetch {
    ($core:expr) => {
        if $core.mode == ActiveMode::Netlink {
            let _ = prefetch_netlink(
                &$core.nl,
                &mut $core.nl_pending,
                &mut $core.nl_scratch,
                &mut $core.nl_overrun,
            );
        }
    };
}

fn io_other(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}

/// fork a child that exits at once with `code`; returns its pid.
fn fork_exit(code: i32) -> std::io::Result<i32> {
    // SAFETY: the child only calls _exit, which is async-signal-safe, so forking a
    // multi-threaded process is fine.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: terminate the child immediately.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

fn reap(pid: i32) {
    let mut st = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
}

fn errno_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPROTONOSUPPORT) => {
            "the kernel has no netlink process connector (EPROTONOSUPPORT)".into()
        }
        Some(libc::EPERM) | Some(libc::EACCES) => {
            format!("not permitted ({e}); needs root or CAP_NET_ADMIN")
        }
        _ => e.to_string(),
    }
}

/// Try to subscribe to the connector and check that events really arrive. Returns the
/// socket, the events read meanwhile, and a description.
fn try_netlink(t: &Tuning) -> Result<(NetlinkSock, Vec<CnEvent>, bool, String), String> {
    let sock = NetlinkSock::open().map_err(|e| format!("netlink socket: {}", errno_text(&e)))?;
    let filter = netlink::PROC_EVENT_FORK | netlink::PROC_EVENT_EXEC | netlink::PROC_EVENT_EXIT;
    let mut buffered = Vec::new();
    let mut lost = false;
    // First the filtered subscription (Linux 6.6+), then the legacy one that older kernels
    // need (they ignore a request of the new size without a word).
    for (attempt, f) in [Some(filter), None].into_iter().enumerate() {
        sock.send_op(netlink::PROC_CN_MCAST_LISTEN, f)
            .map_err(|e| format!("netlink subscribe: {}", errno_text(&e)))?;
        let t0 = mono_now();
        let child = fork_exit(0).map_err(|e| format!("fork for netlink verification: {e}"))?;
        let deadline = t0 + t.verify_timeout.as_nanos() as u64;
        let mut buf = [0u8; 8192];
        let mut seen = None;
        let mut refused = None;
        while seen.is_none() && refused.is_none() {
            let now = mono_now();
            if now >= deadline {
                break;
            }
            let mut pfd = libc::pollfd {
                fd: sock.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = ((deadline - now) / 1_000_000).max(1) as i32;
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, ms) };
            loop {
                match sock.recv(&mut buf) {
                    Ok(None) => break,
                    Ok(Some(d)) => {
                        let _ = netlink::parse_datagram(d, |e| {
                            match e {
                                CnEvent::Exit { pid, tgid, .. }
                                    if pid == child && tgid == child =>
                                {
                                    seen = Some(mono_now())
                                }
                                CnEvent::Ack { err } if err != 0 => refused = Some(err),
                                _ => {}
                            }
                            if buffered.len() < VERIFY_BUFFER {
                                buffered.push(e);
                            } else {
                                lost = true;
                            }
                        });
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => lost = true,
                    Err(e) => {
                        reap(child);
                        return Err(format!("netlink receive: {e}"));
                    }
                }
            }
        }
        reap(child);
        if let Some(err) = refused {
            let e = std::io::Error::from_raw_os_error(err as i32);
            return Err(format!(
                "the kernel refused the subscription: {}",
                errno_text(&e)
            ));
        }
        if let Some(at) = seen {
            let how = if attempt == 0 {
                "fork/exec/exit filter"
            } else {
                "all event types (kernel before 6.6)"
            };
            return Ok((
                sock,
                buffered,
                lost,
                format!(
                    "kernel process connector, {how}; verified: a test child's exit arrived after {}",
                    fmt_ns(at.saturating_sub(t0))
                ),
            ));
        }
    }
    Err(format!(
        "subscribed, but no event arrived within {} for a test child: probably a non-initial user or \
         pid namespace (container), where the kernel silently ignores the subscription",
        fmt_ns(t.verify_timeout.as_nanos() as u64)
    ))
}

/// Whether pidfd_open works and PIDFD_INFO_EXIT returns statuses, probed with a child.
fn probe_pidfd() -> Result<StatusSupport, String> {
    let child = fork_exit(3).map_err(|e| format!("fork for pidfd probe: {e}"))?;
    let fd = match sys::pidfd_open(child) {
        Ok(fd) => fd,
        Err(e) => {
            reap(child);
            return Err(format!("pidfd_open: {e}"));
        }
    };
    reap(child);
    Ok(match sys::pidfd_exit_info(&fd) {
        Ok(PidfdExit::Status(0x300)) => StatusSupport::Yes,
        _ => StatusSupport::Unsupported,
    })
}

fn normalize_home(s: &str) -> &str {
    let t = s.trim_end_matches('/');
    if t.is_empty() {
        "/"
    } else {
        t
    }
}

fn join_cmd(args: &[String]) -> Option<String> {
    if args.is_empty() {
        None
    } else {
        let joined = args.join(" ");
        // Process titles (the God daemon's) are padded with spaces.
        Some(shorten(joined.trim_end(), 300))
    }
}

impl Core {
    pub(crate) fn new(
        cfg: WatchConfig,
        sink: EventSink,
        redact: RedactFn,
        wake: Arc<EventFd>,
    ) -> std::io::Result<(Core, WatchModeReport)> {
        let tuning = cfg.tuning.clone();
        let mut nl = None;
        let mut early = Vec::new();
        let mut early_lost = false;
        let mut pidfd_status = StatusSupport::Unsupported;
        let mut limits = Vec::new();
        let (mode, why) = match cfg.mode {
            WatchMode::Off => (ActiveMode::Off, "disabled by configuration".to_string()),
            WatchMode::Netlink => match try_netlink(&tuning) {
                Ok((s, ev, lost, why)) => {
                    nl = Some(s);
                    early = ev;
                    early_lost = lost;
                    (ActiveMode::Netlink, why)
                }
                Err(e) => {
                    return Err(io_other(format!(
                        "netlink mode requested but unavailable: {e}"
                    )))
                }
            },
            WatchMode::Pidfd => match probe_pidfd() {
                Ok(s) => {
                    pidfd_status = s;
                    (ActiveMode::Pidfd, "pidfd mode requested".to_string())
                }
                Err(e) => {
                    return Err(io_other(format!(
                        "pidfd mode requested but unavailable: {e}"
                    )))
                }
            },
            WatchMode::Auto => match try_netlink(&tuning) {
                Ok((s, ev, lost, why)) => {
                    nl = Some(s);
                    early = ev;
                    early_lost = lost;
                    (ActiveMode::Netlink, why)
                }
                Err(nl_why) => match probe_pidfd() {
                    Ok(s) => {
                        pidfd_status = s;
                        (ActiveMode::Pidfd, format!("netlink unavailable: {nl_why}"))
                    }
                    Err(pf_why) => (
                        ActiveMode::ProcScan,
                        format!("netlink unavailable: {nl_why}; pidfd unavailable: {pf_why}"),
                    ),
                },
            },
        };
        if !tuning.pidfd_exit_info && pidfd_status == StatusSupport::Yes {
            pidfd_status = StatusSupport::Disabled;
        }
        match mode {
            ActiveMode::Pidfd => {
                limits.push(format!(
                    "exit instants from pidfd wake-ups; new processes found by /proc scans every {} \
                     (every {} while idle), births known to a clock tick, a process born and gone \
                     between two scans is not seen",
                    fmt_ns(tuning.fast_scan.as_nanos() as u64),
                    fmt_ns(tuning.idle_scan.as_nanos() as u64)
                ));
                limits.push(match pidfd_status {
                    StatusSupport::Yes => "exit status from PIDFD_INFO_EXIT once the parent reaps; unknown if \
                                           the parent does not reap within the grace period"
                        .into(),
                    StatusSupport::Unsupported => "this kernel has no PIDFD_INFO_EXIT (Linux 6.15+): exit status \
                                                   only for zombies the watcher may read, else unknown"
                        .into(),
                    StatusSupport::Disabled => "PIDFD_INFO_EXIT disabled by configuration: exit status only for \
                                                zombies the watcher may read, else unknown"
                        .into(),
                });
            }
            ActiveMode::ProcScan => limits.push(
                "exits and births known only to a /proc scan interval; exit status only for zombies the \
                 watcher may read, else unknown"
                    .into(),
            ),
            _ => {}
        }
        let home = cfg.pm2_home.to_string_lossy().into_owned();
        let home_canon = std::fs::canonicalize(&cfg.pm2_home).ok();
        let proc_root = tuning.proc_root.clone();
        // The daemon.
        let mut daemon_note = None;
        let daemon = match cfg.daemon_pid {
            Some(p) => Some(p),
            None => {
                let pidfile = cfg.pm2_home.join("pm2.pid");
                // Never through a symlink, and never quoting a file that failed the checks.
                let read = crate::safe_dir::SafeDir::open(&cfg.pm2_home)
                    .and_then(|d| d.read_file("pm2.pid", 64))
                    .map(|b| String::from_utf8_lossy(&b).into_owned());
                match read {
                    Ok(s) => match s.trim().parse::<i32>() {
                        Ok(p) => {
                            let cmd = procfs::read_cmdline(&proc_root, p)
                                .unwrap_or_default()
                                .join(" ");
                            if cmd.contains("God Daemon") {
                                Some(p)
                            } else {
                                daemon_note = Some(format!(
                                    "{} names pid {p}, which is not a PM2 God daemon (gone or reused)",
                                    pidfile.display()
                                ));
                                None
                            }
                        }
                        Err(_) => {
                            daemon_note = Some(format!(
                                "{}: not a pid: {:?}",
                                pidfile.display(),
                                crate::views::terminal_safe(&shorten(&s, 40))
                            ));
                            None
                        }
                    },
                    Err(e) => {
                        daemon_note = Some(format!("no daemon: {e}"));
                        None
                    }
                }
            }
        };
        let mut why = why;
        if let Some(n) = &daemon_note {
            why.push_str(&format!(" ({n}; tracking apps by environment only)"));
        }
        let report = WatchModeReport { mode, why, limits };
        let epoll = Epoll::new()?;
        epoll.add(wake.raw_fd(), TOKEN_WAKE)?;
        if let Some(s) = &nl {
            epoll.add(s.raw_fd(), TOKEN_NETLINK)?;
        }
        let tick_ns = 1_000_000_000 / sys::clk_tck();
        // SAFETY: geteuid has no side effects.
        let my_uid = unsafe { libc::geteuid() };
        let core = Core {
            home,
            home_canon,
            proc_root,
            tuning,
            sink,
            redact,
            report: report.clone(),
            mode,
            epoll,
            wake,
            nl,
            early,
            early_lost,
            pidfd_status,
            table: HashMap::new(),
            daemon,
            daemon_note,
            pending: Vec::new(),
            foreign: HashSet::new(),
            dead: HashMap::new(),
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
            nl_pending: Default::default(),
            nl_scratch: Vec::new(),
            nl_overrun: false,
        };
        Ok((core, report))
    }

    fn emit(&self, t: MonoNs, e: ProcEvent) {
        self.sink.emit_at(t, Event::Proc(e));
    }

    fn ticks_to_mono(&self, ticks: u64) -> MonoNs {
        (ticks * self.tick_ns).saturating_sub(self.boot_off)
    }

    #[allow(clippy::wrong_self_convention)]
    fn who(&self, t: &Tracked) -> Who {
        who_of(t)
    }
}

fn who_of(t: &Tracked) -> Who {
    Who {
        pid: t.pid,
        start: t.start,
        ppid: t.ppid,
        app: t.app.clone(),
        how: t.how.clone(),
        daemon: t.daemon,
        cmd: t.cmd.clone(),
    }
}

impl Core {
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
    fn env_attribution(&self, pid: i32, descendant: bool) -> Option<AppRef> {
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

    fn in_tree(&self, mut pid: i32) -> bool {
        let Some(d) = self.daemon else { return false };
        for _ in 0..128 {
            if pid == d {
                return true;
            }
            match self.table.get(&pid) {
                Some(t) if t.ppid > 0 && t.ppid != pid => pid = t.ppid,
                _ => return false,
            }
        }
        false
    }

    fn flux(&mut self) {
        if self.mode != ActiveMode::Netlink {
            self.flux_until = mono_now() + self.tuning.flux_window.as_nanos() as u64;
        }
    }

    /// Record a newly attributed generation; queue a snapshot when it is newer than any
    /// generation seen for the app.
    fn note_generation(&mut self, pid: i32) {
        let Some(t) = self.table.get(&pid) else {
            return;
        };
        let Some(app) = &t.app else { return };
        let Some(g) = app.generation else { return };
        let pm_id = app.pm_id;
        let newer = match self.newest_gen.get(&pm_id) {
            Some(&old) => g > old,
            None => true,
        };
        if newer {
            self.newest_gen.insert(pm_id, g);
            let main = t.ppid == self.daemon.unwrap_or(-1);
            if !self.initializing && main {
                self.queued_snapshots.push((
                    SnapshotReason::NewGeneration {
                        pm_id,
                        pid: Some(pid),
                        generation: Some(g),
                    },
                    mono_now(),
                ));
            }
            if main {
                self.remember_main(pid);
            }
        }
    }

    /// Read what a generation's main process was started with (environment, working
    /// directory, executable, script), while it runs.
    fn remember_main(&mut self, pid: i32) {
        let Some(t) = self.table.get(&pid) else {
            return;
        };
        let Some(pm_id) = t.app.as_ref().map(|a| a.pm_id) else {
            return;
        };
        if !self.mains.contains_key(&pm_id) && self.mains.len() >= MAINS_APPS {
            return;
        }
        let facts = MainFacts {
            pid,
            start: t.start,
            seen: t.start_mono.unwrap_or(t.seen_ns),
            app: t.app.clone(),
            environ: procfs::read_environ(&self.proc_root, pid)
                .map(|(mut block, cut)| {
                    block.shrink_to_fit();
                    (block, cut)
                })
                .map_err(|e| e.to_string()),
            paths: super::start_paths::read(&self.proc_root, pid),
        };
        let v = self.mains.entry(pm_id).or_default();
        v.retain(|m| m.pid != pid);
        v.push(facts);
        if v.len() > MAINS_PER_APP {
            v.remove(0);
        }
    }

    /// Start tracking `pid`. Returns false if it is gone.
    fn add(
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

    pub(crate) fn run(mut self, rx: mpsc::Receiver<Cmd>) {
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
        let early = std::mem::take(&mut self.early);
        let now = mono_now();
        for e in early {
            self.on_cn(e, now);
        }
        if self.early_lost {
            self.lost("events arrived faster than they could be buffered during start-up".into());
        }
        self.snapshot(SnapshotReason::Start, mono_now());
        self.run_queued_snapshots();

        let mut ready = Vec::new();
        let mut buf = vec![0u8; 16384];
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
                            Cmd::Stop => return,
                            Cmd::Hint { pid, pm_id, name } => self.on_hint(pid, pm_id, &name),
                            Cmd::Snapshot(r, asked) => {
                                self.flux();
                                self.queued_snapshots.push((r, asked))
                            }
                        }
                    }
                } else if tok == TOKEN_NETLINK {
                    self.drain_netlink(&mut buf);
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
        }
    }

    fn next_timeout(&self) -> i32 {
        let now = mono_now();
        let mut due: Option<MonoNs> = None;
        let mut consider = |t: MonoNs| due = Some(due.map_or(t, |d: MonoNs| d.min(t)));
        for p in &self.pending {
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

    fn lost(&self, why: String) {
        self.emit(mono_now(), ProcEvent::Lost { why });
    }

    // ----- discovery -------------------------------------------------------------------

    fn initial_scan(&mut self) {
        if let Some(d) = self.daemon {
            if !self.add(d, None, None, None) {
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
                        who: who_of(t),
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
    fn scan(&mut self) {
        let now = mono_now();
        let prev_scan = self.last_scan;
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
                if let Some(start) = self.dead.get(&p) {
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
                    if self.add(p, Some(s), None, inherit) {
                        new_pids.push((p, Some(ppid), start_ticks, is_zombie));
                    }
                }
                None => {
                    if self.env_attribution(p, false).is_some() {
                        let start_ticks = s.starttime;
                        if self.add(p, Some(s), None, None) {
                            new_pids.push((p, None, start_ticks, is_zombie));
                        }
                    } else {
                        foreign.insert(p);
                    }
                }
            }
        }
        self.foreign = foreign;
        self.dead.retain(|p, _| listed.contains(p));
        for (p, parent, start_ticks, zombie) in new_pids {
            let Some(t) = self.table.get(&p) else {
                continue;
            };
            let who = who_of(t);
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
                self.scan_exit(p, prev_scan, now);
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
                self.scan_exit(p, prev_scan, now);
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
            let changed = app.is_some() && app != t.app;
            if app.is_some() {
                t.app = app;
                t.how = Some(AttrHow::Environ);
            }
            let (not_before, who) = (t.seen_ns, who_of(t));
            if exec {
                self.emit(
                    now,
                    ProcEvent::Exec {
                        who: who.clone(),
                        via: Via::ProcScan,
                        timing: Timing::Between {
                            not_before_ns: not_before,
                            observed_ns: now,
                        },
                    },
                );
            }
            if changed {
                self.emit(now, ProcEvent::Attributed { who });
                self.note_generation(p);
            }
        }
    }

    fn scan_exit(&mut self, pid: i32, prev_scan: MonoNs, now: MonoNs) {
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
        let _ = prev_scan;
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

    // ----- exits ------------------------------------------------------------------------

    /// Emit an exit and run what follows it: children's new parents, the early-exit check.
    fn finish_exit(
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
        let failed = matches!(status, ExitStatus::Signal { .. })
            || matches!(status, ExitStatus::Code { code } if code != 0);
        let error_code = matches!(status, ExitStatus::Code { code } if code != 0);
        let in_tree = if t.daemon {
            Some(true)
        } else {
            let parent = parent_at_exit.unwrap_or(t.ppid);
            Some(self.in_tree(parent))
        };
        let mut who = self.who(&t);
        if let Some(p) = parent_at_exit {
            who.ppid = p;
        }
        if let Some(fd) = &t.pidfd {
            self.epoll.del(fd.as_raw_fd());
        }
        self.dead.insert(t.pid, t.start);
        if self.dead.len() > 4096 {
            // Netlink mode scans rarely: prune here.
            let mut pids = Vec::new();
            if procfs::list_pids(&self.proc_root, &mut pids).is_ok() {
                let listed: HashSet<i32> = pids.into_iter().collect();
                self.dead.retain(|p, _| listed.contains(p));
            }
        }
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
        // Early exit of the newest generation?
        // Only the generation's main process (a child of the daemon), or a process of it that
        // failed: helpers that exit 0 by design (a double fork's intermediate) are not it.
        if let (Some(app), Some(lived)) = (&t.app, lived_ns) {
            let main = Some(parent_at_exit.unwrap_or(t.ppid)) == self.daemon;
            if let (Some(g), true) = (app.generation, main || failed) {
                let newest = self.newest_gen.get(&app.pm_id).copied().unwrap_or(g);
                let early = self.tuning.early_exit.as_nanos() as u64;
                // A start that fails with an error code a little after min_uptime (a slow
                // start on a loaded machine) gets the same look at who holds what.
                let crashed_soon = error_code && lived < early.saturating_mul(SLOW_FAILURE_FACTOR);
                if g >= newest && (lived < early || crashed_soon) {
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
            }
        }
    }

    fn on_pidfd(&mut self, pid: i32, observed: MonoNs) {
        let Some(t) = self.table.remove(&pid) else {
            return;
        };
        if let Some(fd) = &t.pidfd {
            self.epoll.del(fd.as_raw_fd());
        }
        // A scan must not take the zombie for a new process while its status is pending.
        self.dead.insert(t.pid, t.start);
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
        self.pending.push(p);
    }

    fn retry_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let now = mono_now();
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.next_try <= now);
        self.pending = keep;
        for p in due {
            self.try_resolve(p);
        }
    }

    // ----- netlink ----------------------------------------------------------------------

    fn drain_netlink(&mut self, _buf: &mut [u8]) {
        if let Some(err) = prefetch_netlink(
            &self.nl,
            &mut self.nl_pending,
            &mut self.nl_scratch,
            &mut self.nl_overrun,
        ) {
            self.lost(err);
        }
        let mut events: Vec<CnEvent> = Vec::new();
        while let Some((observed, d)) = self.nl_pending.pop_front() {
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
        if std::mem::take(&mut self.nl_overrun) {
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

    fn on_cn(&mut self, e: CnEvent, observed: MonoNs) {
        match e {
            CnEvent::Fork {
                ts,
                parent_tgid,
                child_pid,
                child_tgid,
                ..
            } => {
                if child_pid != child_tgid || self.table.contains_key(&child_tgid) {
                    return;
                }
                let Some(parent) = self.table.get(&parent_tgid) else {
                    return;
                };
                let inherit = parent.app.clone().map(|a| (parent_tgid, a));
                let pcmd = parent.cmd.clone();
                let stat = procfs::read_stat(&self.proc_root, child_tgid);
                let start = stat.as_ref().map(|s| s.starttime);
                // The child has its parent's environment and command line until it execs.
                let (app, how) = match inherit {
                    Some((p, a)) => (Some(a), Some(AttrHow::Ancestry { parent: p })),
                    None => (None, None),
                };
                let t = Tracked {
                    pid: child_tgid,
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
                let who = self.who(&t);
                self.table.insert(child_tgid, t);
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
            CnEvent::Exec { ts, tgid, .. } => {
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
                let changed = app.is_some() && app != t.app;
                if app.is_some() {
                    t.app = app;
                    t.how = Some(AttrHow::Environ);
                }
                let who = who_of(t);
                self.emit(
                    ts,
                    ProcEvent::Exec {
                        who: who.clone(),
                        via: Via::Netlink,
                        timing: Timing::Kernel {
                            kernel_ns: ts,
                            observed_ns: observed,
                        },
                    },
                );
                if changed {
                    self.emit(ts, ProcEvent::Attributed { who });
                    self.note_generation(tgid);
                }
            }
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

    // ----- commands ---------------------------------------------------------------------

    fn on_hint(&mut self, pid: i32, pm_id: u64, name: &str) {
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
            let who = who_of(t);
            self.emit(now, ProcEvent::Attributed { who });
            self.note_generation(pid);
            return;
        }
        let Some(stat) = procfs::read_stat(&self.proc_root, pid) else {
            self.lost(format!("hint: pid {pid} ({name}:{pm_id}) is not running"));
            return;
        };
        if !self.add(pid, Some(stat), None, None) {
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
        let who = who_of(t);
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

    // ----- snapshots --------------------------------------------------------------------

    fn run_queued_snapshots(&mut self) {
        while !self.queued_snapshots.is_empty() {
            let mut q = std::mem::take(&mut self.queued_snapshots);
            q.dedup_by(|a, b| a.0 == b.0);
            for (r, asked) in q {
                self.snapshot(r, asked);
            }
        }
    }

    fn snapshot(&mut self, reason: SnapshotReason, asked: MonoNs) {
        let t0 = mono_now();
        let mut notes = Vec::new();
        if self.mode != ActiveMode::Netlink && !matches!(reason, SnapshotReason::Start) {
            // Find what appeared since the last scan first.
            self.scan();
        }
        let scope = reason.pm_id();
        // First, before the daemon's stop takes them away: the environment of the
        // generation being replaced and where it was started from.
        let mut env = Vec::new();
        let mut paths = Vec::new();
        if reason.wants_env() {
            for m in self.replaced_generation_mains(scope, asked) {
                prefetch!(self);
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
                let environ = match m.remembered.as_ref().map(|r| &r.0) {
                    Some(Ok(e)) if !e.0.is_empty() => Ok(e.clone()),
                    _ => procfs::read_environ(&self.proc_root, p).map_err(|e| e.to_string()),
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
                    .then(|| super::start_paths::read(&self.proc_root, p))
                    .flatten();
                let (pp, gone) = match live {
                    Some(pp) => (Some(pp), false),
                    None => (m.remembered.as_ref().and_then(|r| r.1.clone()), true),
                };
                if let Some(pp) = pp {
                    paths.push(super::start_paths::complete(pp, app, pwd, gone));
                }
            }
        }
        // Fresh /proc state of every tracked process.
        let mut fresh: HashMap<i32, Stat> = HashMap::new();
        for t in self.table.values() {
            prefetch!(self);
            match procfs::read_stat(&self.proc_root, t.pid) {
                Some(s) if t.start.is_none() || Some(s.starttime) == t.start => {
                    fresh.insert(t.pid, s);
                }
                _ => notes.push(format!("pid {} exited while the snapshot was taken", t.pid)),
            }
        }
        let daemon = self.daemon;
        let in_tree = |mut p: i32| -> bool {
            let Some(d) = daemon else { return false };
            for _ in 0..128 {
                if p == d {
                    return true;
                }
                match fresh.get(&p) {
                    Some(s) if s.ppid > 0 && s.ppid != p => p = s.ppid,
                    _ => return false,
                }
            }
            false
        };
        let mut pids: Vec<i32> = fresh.keys().copied().collect();
        pids.sort_unstable();
        let mut processes = Vec::new();
        for &p in &pids {
            prefetch!(self);
            let (Some(t), Some(s)) = (self.table.get(&p), fresh.get(&p)) else {
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
                in_tree: t.daemon || in_tree(s.ppid),
            });
        }
        // Sockets: every tracked process's socket inodes, joined with the socket tables of
        // each network namespace they live in.
        let mut by_inode: HashMap<u64, i32> = HashMap::new();
        // Each namespace's tables are read through one of its processes; every candidate is
        // kept, since a process of a crash loop can exit between here and the read.
        let mut netns: HashMap<PathBuf, Vec<i32>> = HashMap::new();
        for &p in &pids {
            prefetch!(self);
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
                prefetch!(self);
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
                        sockets.push(self.hold(
                            proto,
                            s.addr_string(),
                            Some(s.port),
                            s.inode,
                            holder,
                            &fresh,
                            &in_tree,
                        ));
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
                        sockets.push(self.hold(
                            Proto::Unix,
                            path,
                            None,
                            u.inode,
                            holder,
                            &fresh,
                            &in_tree,
                        ));
                    }
                }
            }
        }
        sockets.sort_by(|a, b| (a.pid, a.proto, &a.addr).cmp(&(b.pid, b.proto, &b.addr)));
        sockets.dedup_by(|a, b| a.inode == b.inode && a.pid == b.pid);
        // Remember what each process held, for its exit event.
        for t in self.table.values_mut() {
            t.held.clear();
        }
        for s in &sockets {
            if let Some(t) = self.table.get_mut(&s.pid) {
                if s.proto != Proto::Unix {
                    t.held.push(s.addr.clone());
                } else {
                    t.held.push(format!("unix:{}", s.addr));
                }
            }
        }
        // An early exit may be a bind that failed on an address held outside the tree.
        let mut host = Vec::new();
        if matches!(reason, SnapshotReason::EarlyExit { .. })
            && t0.saturating_sub(self.last_host_scan) >= HOST_SCAN_SPACING_NS
        {
            self.last_host_scan = t0;
            prefetch!(self);
            let mut skip: HashSet<i32> = self.table.keys().copied().collect();
            skip.insert(std::process::id() as i32);
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
            prefetch!(self);
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

    #[allow(clippy::too_many_arguments)]
    fn hold(
        &self,
        proto: Proto,
        addr: String,
        port: Option<u16>,
        inode: u64,
        pid: i32,
        fresh: &HashMap<i32, Stat>,
        in_tree: &dyn Fn(i32) -> bool,
    ) -> SocketHold {
        let t = self.table.get(&pid);
        let daemon = t.is_some_and(|t| t.daemon);
        SocketHold {
            proto,
            addr,
            port,
            inode,
            pid,
            start: fresh.get(&pid).map(|s| s.starttime).unwrap_or(0),
            app: t.and_then(|t| t.app.clone()),
            daemon,
            in_tree: daemon || fresh.get(&pid).is_some_and(|s| in_tree(s.ppid)),
        }
    }

    /// The main process of the current generation of each app in scope: attributed from its
    /// environment, newest generation, a child of the daemon if there is one, oldest first.
    /// The main process of the generation each app in `scope` ran when a stop or restart
    /// was asked at `asked`: the newest remembered main first seen before then, else the
    /// newest generation's main among the tracked processes.
    fn replaced_generation_mains(&self, scope: Option<u64>, asked: MonoNs) -> Vec<ReplacedMain> {
        let mut best: HashMap<u64, (u64, bool, u64, i32)> = HashMap::new();
        for t in self.table.values() {
            let Some(a) = &t.app else { continue };
            if scope.is_some_and(|s| s != a.pm_id) {
                continue;
            }
            let key = (
                a.generation.unwrap_or(0),
                Some(t.ppid) == self.daemon,
                u64::MAX - t.start.unwrap_or(u64::MAX),
                t.pid,
            );
            let e = best.entry(a.pm_id).or_insert(key);
            if key > *e {
                *e = key;
            }
        }
        let mut ids: Vec<u64> = best.keys().copied().collect();
        ids.extend(
            self.mains
                .keys()
                .filter(|id| scope.is_none_or(|s| s == **id)),
        );
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::new();
        for id in ids {
            let remembered = self
                .mains
                .get(&id)
                .and_then(|v| v.iter().rev().find(|m| m.seen <= asked));
            match remembered {
                Some(m) => out.push(ReplacedMain {
                    pid: m.pid,
                    start: m.start,
                    app: m.app.clone(),
                    remembered: Some((m.environ.clone(), m.paths.clone())),
                }),
                None => {
                    let Some(t) = best.get(&id).and_then(|k| self.table.get(&k.3)) else {
                        continue;
                    };
                    out.push(ReplacedMain {
                        pid: t.pid,
                        start: t.start,
                        app: t.app.clone(),
                        remembered: None,
                    });
                }
            }
        }
        out.sort_unstable_by_key(|m| m.pid);
        out
    }
}
