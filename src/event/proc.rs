//! What the process watcher records (in [`super::Event::Proc`]).
//!
//! Every [`ProcEvent`] is self-contained: it names the process (pid and start time, so a
//! reused pid is never confused with its predecessor), what pm2 app and generation it
//! belongs to and how that was established, how the event was seen (kernel, pidfd, /proc
//! scan) and how precisely its instant is known. Nothing here claims more precision than
//! the source had: an exit status the watcher could not learn is [`ExitStatus::Unknown`]
//! with the reason, an instant found by a scan is a [`Timing::Between`] interval.

use crate::event::{push_i64, push_u64, MonoNs};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The pm2 app (and generation) a process belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AppRef {
    /// The daemon's home (`PM2_HOME`).
    pub pm2_home: String,
    pub pm_id: u64,
    pub name: String,
    /// pm2's `restart_time` when this generation was spawned: each spawn of the app is one
    /// generation. `None` when not known (e.g. attributed from a pid hint only).
    pub generation: Option<u64>,
    /// pm2's `unique_id` of the app, when known.
    pub(crate) unique_id: Option<String>,
}

impl AppRef {
    /// `web:0 gen 3`, or `web:0` when the generation is not known.
    pub(crate) fn label(&self) -> String {
        let mut s = String::new();
        self.push_label(&mut s);
        s
    }

    /// [`AppRef::label`] written at the end of `s`.
    fn push_label(&self, s: &mut String) {
        s.push_str(&self.name);
        s.push(':');
        push_u64(s, self.pm_id);
        if let Some(g) = self.generation {
            s.push_str(" gen ");
            push_u64(s, g);
        }
    }
}

/// How a process came to be attributed to its app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum AttrHow {
    /// `/proc/<pid>/environ` holds pm2's `pm_id`, `name`, `PM2_HOME`, `restart_time`.
    Environ,
    /// Forked by a process that was already attributed.
    Ancestry { parent: i32 },
    /// The recorder said so (a pid in a getMonitorData or restartProcessId reply).
    Hint { source: String },
}

impl AttrHow {
    fn words(&self) -> String {
        match self {
            AttrHow::Environ => "from its environment".into(),
            AttrHow::Ancestry { parent } => format!("forked by pid {parent}"),
            AttrHow::Hint { source } => format!("from {source}"),
        }
    }
}

/// A process as an event names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Who {
    pub pid: i32,
    pub start: Option<u64>,
    /// Parent pid when the event was recorded (0 when unknown).
    pub ppid: i32,
    pub app: Option<AppRef>,
    pub how: Option<AttrHow>,
    /// This is the PM2 God daemon itself.
    #[serde(default)]
    pub daemon: bool,
    /// The command line, arguments joined by spaces, shortened to a few hundred bytes.
    pub cmd: Option<String>,
}

impl Who {
    /// `pid 4242 web:0 gen 3`, `pid 17 (pm2 daemon)`, `pid 99`.
    pub(crate) fn label(&self) -> String {
        let mut s = String::new();
        self.push_label(&mut s);
        s
    }

    /// [`Who::label`] written at the end of `s`.
    fn push_label(&self, s: &mut String) {
        s.push_str("pid ");
        push_i64(s, self.pid.into());
        if self.daemon {
            s.push_str(" (pm2 daemon)");
        }
        if let Some(app) = &self.app {
            s.push(' ');
            app.push_label(s);
        }
    }
}

/// Which mechanism saw an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The kernel's netlink process connector.
    Netlink,
    /// A pidfd became readable.
    Pidfd,
    /// A scan of /proc.
    ProcScan,
    /// A pid given by the recorder.
    Hint,
}

/// When something happened, and how precisely that is known. The event is stamped with
/// [`Timing::at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Timing {
    /// The kernel's own timestamp of the event (CLOCK_MONOTONIC): exact.
    Kernel {
        kernel_ns: MonoNs,
        observed_ns: MonoNs,
    },
    /// The watcher was woken by the event itself (a pidfd became readable at exit): the
    /// event happened at most a scheduling latency before `observed_ns`.
    Wakeup { observed_ns: MonoNs },
    /// Derived from the process start time in /proc (clock ticks since boot): within
    /// `resolution_ns` after `not_before_ns`.
    StartTime {
        not_before_ns: MonoNs,
        resolution_ns: u64,
        observed_ns: MonoNs,
    },
    /// Found by comparing two /proc scans: it happened after `not_before_ns` (the process
    /// was last seen in its earlier state then) and before `observed_ns`.
    Between {
        not_before_ns: MonoNs,
        observed_ns: MonoNs,
    },
    /// It already was so when the watcher started; no instant is known.
    BeforeStart { observed_ns: MonoNs },
    /// Learned at `observed_ns` (e.g. from a hint); when it began is not known.
    Observed { observed_ns: MonoNs },
}

impl Timing {
    /// The instant to put the event on the timeline at.
    pub(crate) fn at(&self) -> MonoNs {
        match *self {
            Timing::Kernel { kernel_ns, .. } => kernel_ns,
            Timing::Wakeup { observed_ns } => observed_ns,
            Timing::StartTime {
                not_before_ns,
                resolution_ns,
                ..
            } => not_before_ns + resolution_ns / 2,
            Timing::Between { observed_ns, .. } => observed_ns,
            Timing::BeforeStart { observed_ns } => observed_ns,
            Timing::Observed { observed_ns } => observed_ns,
        }
    }

    fn words(&self) -> Option<String> {
        match *self {
            Timing::Kernel { .. } | Timing::Wakeup { .. } => None,
            Timing::StartTime { resolution_ns, .. } => {
                Some(format!("start time ±{}", fmt_ns(resolution_ns)))
            }
            Timing::Between {
                not_before_ns,
                observed_ns,
            } => Some(format!(
                "sometime in the {} before it was noticed",
                fmt_ns(observed_ns.saturating_sub(not_before_ns))
            )),
            Timing::BeforeStart { .. } => Some("before the watcher started".into()),
            Timing::Observed { .. } => None,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitStatus {
    /// It exited (called exit) with this code.
    Code { code: i32 },
    /// A signal terminated it.
    Signal { sig: i32, name: String, core: bool },
    /// The watcher could not learn the status; `why` says why.
    Unknown { why: String },
}

impl ExitStatus {
    /// Decode a wait status (`(code << 8)`, or the signal number with 0x80 for a core dump),
    /// as found in the connector's `exit_code`, PIDFD_INFO_EXIT and /proc stat field 52.
    pub(crate) fn from_wait_status(status: i32) -> ExitStatus {
        let sig = status & 0x7f;
        if sig == 0 {
            ExitStatus::Code {
                code: (status >> 8) & 0xff,
            }
        } else {
            ExitStatus::Signal {
                sig,
                name: signal_name(sig),
                core: status & 0x80 != 0,
            }
        }
    }

    /// `code 3`, `signal SIGKILL`, `signal SIGSEGV (core dumped)`, `status unknown (...)`.
    pub fn words(&self) -> String {
        match self {
            ExitStatus::Code { code } => format!("code {code}"),
            ExitStatus::Signal {
                name, core: true, ..
            } => format!("signal {name} (core dumped)"),
            ExitStatus::Signal { name, .. } => format!("signal {name}"),
            ExitStatus::Unknown { why } => format!("status unknown ({why})"),
        }
    }
}

/// Where a known exit status came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusFrom {
    /// The connector's exit event (the wait status the kernel reported).
    Netlink,
    /// `PIDFD_GET_INFO` with `PIDFD_INFO_EXIT` after the parent reaped it.
    PidfdInfo,
    /// `/proc/<pid>/stat` field 52 while it was a zombie.
    ZombieStat,
}

/// `SIGKILL` for 9; `SIG42` for numbers without a name.
pub(crate) fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        16 => "SIGSTKFLT",
        17 => "SIGCHLD",
        18 => "SIGCONT",
        19 => "SIGSTOP",
        20 => "SIGTSTP",
        21 => "SIGTTIN",
        22 => "SIGTTOU",
        23 => "SIGURG",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        26 => "SIGVTALRM",
        27 => "SIGPROF",
        28 => "SIGWINCH",
        29 => "SIGIO",
        30 => "SIGPWR",
        31 => "SIGSYS",
        _ => return format!("SIG{sig}"),
    };
    name.to_string()
}

/// Which mechanism the watcher runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActiveMode {
    /// Kernel process events (fork, exec, exit with kernel timestamps and wait status).
    Netlink,
    /// pidfd per tracked process for exit instants, /proc scans for new processes.
    Pidfd,
    /// Only /proc scans (no pidfd_open on this kernel): exits known to a scan interval.
    ProcScan,
    /// Not watching.
    Off,
}

impl ActiveMode {
    pub fn name(self) -> &'static str {
        match self {
            ActiveMode::Netlink => "netlink",
            ActiveMode::Pidfd => "pidfd",
            ActiveMode::ProcScan => "procscan",
            ActiveMode::Off => "off",
        }
    }
}

/// Which mode runs and why, and what it can and cannot know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchModeReport {
    pub mode: ActiveMode,
    /// Why this mode: what was asked, what was tried and what happened.
    pub why: String,
    /// What this mode cannot know (e.g. exit status of processes the kernel keeps to their
    /// parent); empty when nothing is lost.
    pub limits: Vec<String>,
}

impl fmt::Display for WatchModeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.mode.name(), self.why)?;
        for l in &self.limits {
            write!(f, "; {l}")?;
        }
        Ok(())
    }
}

/// Why a snapshot was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SnapshotReason {
    /// The watcher started.
    Start,
    /// A stop (or delete) was requested for `pm_id` (`None`: all apps).
    StopRequested { pm_id: Option<u64> },
    /// A restart (or reload) was requested for `pm_id` (`None`: all apps).
    RestartRequested { pm_id: Option<u64> },
    /// A new generation of the app was spawned.
    NewGeneration {
        pm_id: u64,
        pid: Option<i32>,
        generation: Option<u64>,
    },
    /// A process of the newest generation exited within the early-exit window.
    EarlyExit {
        pm_id: u64,
        pid: i32,
        generation: Option<u64>,
        lived_ms: Option<u64>,
    },
    /// Anything else the recorder wants a snapshot for.
    Requested { why: String, pm_id: Option<u64> },
}

impl SnapshotReason {
    /// The app the snapshot is about (`None`: all apps).
    pub(crate) fn pm_id(&self) -> Option<u64> {
        match self {
            SnapshotReason::Start => None,
            SnapshotReason::StopRequested { pm_id }
            | SnapshotReason::RestartRequested { pm_id } => *pm_id,
            SnapshotReason::NewGeneration { pm_id, .. }
            | SnapshotReason::EarlyExit { pm_id, .. } => Some(*pm_id),
            SnapshotReason::Requested { pm_id, .. } => *pm_id,
        }
    }

    /// Whether the snapshot records the environment of the generation being replaced.
    pub(crate) fn wants_env(&self) -> bool {
        matches!(
            self,
            SnapshotReason::StopRequested { .. } | SnapshotReason::RestartRequested { .. }
        )
    }

    pub(crate) fn words(&self) -> String {
        fn app(p: &Option<u64>) -> String {
            match p {
                Some(id) => format!("pm_id {id}"),
                None => "all apps".into(),
            }
        }
        match self {
            SnapshotReason::Start => "watcher start".into(),
            SnapshotReason::StopRequested { pm_id } => format!("stop requested for {}", app(pm_id)),
            SnapshotReason::RestartRequested { pm_id } => {
                format!("restart requested for {}", app(pm_id))
            }
            SnapshotReason::NewGeneration {
                pm_id,
                pid,
                generation,
            } => {
                let mut s = format!("new generation of pm_id {pm_id}");
                if let Some(g) = generation {
                    s.push_str(&format!(" gen {g}"));
                }
                if let Some(p) = pid {
                    s.push_str(&format!(" pid {p}"));
                }
                s
            }
            SnapshotReason::EarlyExit {
                pm_id,
                pid,
                generation,
                lived_ms,
            } => {
                let mut s = format!("early exit of pid {pid} pm_id {pm_id}");
                if let Some(g) = generation {
                    s.push_str(&format!(" gen {g}"));
                }
                if let Some(ms) = lived_ms {
                    s.push_str(&format!(" after {ms} ms"));
                }
                s
            }
            SnapshotReason::Requested { why, pm_id } => format!("{why} ({})", app(pm_id)),
        }
    }
}

/// One process in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcSnap {
    pub pid: i32,
    pub(crate) ppid: i32,
    pub(crate) pgid: i32,
    pub(crate) sid: i32,
    pub(crate) start: u64,
    /// One-letter state from `/proc/<pid>/stat` (R, S, D, Z, T, ...).
    pub(crate) state: String,
    pub(crate) cmdline: Vec<String>,
    pub(crate) app: Option<AppRef>,
    pub(crate) how: Option<AttrHow>,
    pub daemon: bool,
    /// Whether its ancestry leads to the pm2 daemon (pm2 kills and waits for these).
    pub(crate) in_tree: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    Tcp,
    Tcp6,
    Udp,
    Udp6,
    Unix,
}

impl Proto {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Tcp6 => "tcp6",
            Proto::Udp => "udp",
            Proto::Udp6 => "udp6",
            Proto::Unix => "unix",
        }
    }
}

/// A listening (TCP), bound (UDP) or bound-path (unix) socket and the process holding it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketHold {
    pub proto: Proto,
    /// `127.0.0.1:4211`, `[::]:80`, `0.0.0.0:53`, `/run/app.sock`, `@abstract`.
    pub addr: String,
    /// Port number for TCP/UDP.
    pub port: Option<u16>,
    pub inode: u64,
    pub pid: i32,
    pub(crate) start: u64,
    pub app: Option<AppRef>,
    pub(crate) daemon: bool,
    pub in_tree: bool,
}

impl SocketHold {
    /// One of pm2's own sockets (`rpc.sock`, `pub.sock`, `interactor.sock` in PM2_HOME), not
    /// an address it holds for an app.
    pub fn is_pm2_own(&self) -> bool {
        self.proto == Proto::Unix
            && std::path::Path::new(&self.addr)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| {
                    n.starts_with("rpc.sock")
                        || n.starts_with("pub.sock")
                        || n.starts_with("interactor.sock")
                })
    }

    /// `port 127.0.0.1:4211 held by pid 4100 web:0 gen 2 (outside pm2's tree)`.
    pub fn summary(&self) -> String {
        let what = match self.proto {
            Proto::Unix => "unix socket",
            Proto::Udp | Proto::Udp6 => "udp port",
            _ => "port",
        };
        let mut s = format!("{what} {} held by pid {}", self.addr, self.pid);
        if self.daemon {
            s.push_str(" (pm2 daemon)");
        }
        if let Some(app) = &self.app {
            s.push(' ');
            s.push_str(&app.label());
        }
        if !self.in_tree && !self.daemon {
            s.push_str(" (outside pm2's tree)");
        }
        s
    }
}

/// One environment variable as recorded (value passed through the recorder's redaction).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub key: String,
    pub value: String,
}

/// The environment of a process of the generation being replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvSnap {
    pub pid: i32,
    pub(crate) start: u64,
    pub app: Option<AppRef>,
    pub vars: Vec<EnvVar>,
    /// The environment was larger than the watcher reads and was cut.
    pub truncated: bool,
}

/// The state of an app's (or every app's) processes at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub reason: SnapshotReason,
    /// The pm2 daemon and every process attributed to the app in scope (all apps when the
    /// reason names none), plus unattributed descendants of the daemon.
    pub processes: Vec<ProcSnap>,
    /// Listening/bound sockets of every attributed process of this PM2_HOME (all apps: a
    /// port needed by one app may be held by another) and of the daemon.
    pub sockets: Vec<SocketHold>,
    /// For stop/restart requests: the environment of the generation being replaced.
    pub env: Vec<EnvSnap>,
    /// What could not be read (permissions, processes gone mid-snapshot).
    pub notes: Vec<String>,
    /// How long taking the snapshot took, in microseconds.
    pub cost_us: u64,
    /// For early exits: listening sockets anywhere on the host held by processes the
    /// watcher does not track (another PM2 daemon's apps, services, containers, strays),
    /// with who holds them (at most [`HOST_HOLDS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host: Vec<super::host::HostHold>,
    /// For stop/restart requests: where each generation being replaced was started from,
    /// and whether those paths still exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<StartPaths>,
}

impl StartPaths {
    /// `pid 4100 runs in /srv/app/releases/1 (deleted), started from /srv/app/current
    /// (/srv/app/current -> releases/2 now)`.
    pub fn summary(&self) -> String {
        let mut s = format!("pid {}", self.pid);
        if let Some(c) = &self.cwd {
            s.push_str(&format!(" runs in {c}"));
            if self.cwd_deleted {
                s.push_str(" (deleted)");
            }
        }
        if let Some(d) = &self.start_dir {
            s.push_str(&format!(", started from {d}"));
        }
        if !self.symlinks.is_empty() {
            let links: Vec<String> = self
                .symlinks
                .iter()
                .map(|l| format!("{} -> {} now", l.link, l.target))
                .collect();
            s.push_str(&format!(" ({})", links.join(", ")));
        }
        if self.script_exists == Some(false) {
            if let Some(sc) = &self.script {
                s.push_str(&format!(", script {sc} missing"));
            }
        }
        if self.exe_deleted && self.exe_exists == Some(false) {
            if let Some(e) = &self.exe {
                s.push_str(&format!(", interpreter {e} missing"));
            }
        }
        s
    }
}

/// Most host-wide holds one snapshot records.
pub const HOST_HOLDS: usize = 256;

/// A symlink on a start path and where it points now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkNow {
    pub link: String,
    pub target: String,
}

/// Where a process was started from (see `start_paths`): what the kernel says of its
/// working directory and executable, its script, the logical start directory (`PWD`) and
/// the symlinks on it as they point now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartPaths {
    pub pid: i32,
    pub app: Option<AppRef>,
    /// The working directory (resolved, as the kernel names it).
    pub cwd: Option<String>,
    /// The kernel marks the working directory deleted.
    pub cwd_deleted: bool,
    /// The executable (the interpreter, for a script).
    pub exe: Option<String>,
    pub exe_deleted: bool,
    /// Whether a file exists at `exe`'s path now (a deleted executable may have been
    /// replaced by an upgrade); `None` when it could not be looked at.
    pub exe_exists: Option<bool>,
    /// The script (first absolute argument), if any.
    pub script: Option<String>,
    pub script_exists: Option<bool>,
    /// `PWD` from its environment, when it differs from `cwd`: the directory pm2 was
    /// started from, before symlinks were resolved.
    pub start_dir: Option<String>,
    /// Symlinks on `start_dir`, as they point now.
    pub symlinks: Vec<LinkNow>,
    pub notes: Vec<String>,
}

impl Snapshot {}

/// An observation of the operating system's processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProcEvent {
    /// How the watcher runs (first event of the watcher).
    Mode { report: WatchModeReport },
    /// A process is tracked from now on without its birth being seen (it existed when the
    /// watcher started, or was named by a hint).
    Tracked { who: Who, via: Via, timing: Timing },
    /// A tracked process created a process (which is tracked from now on).
    Fork {
        parent: i32,
        who: Who,
        via: Via,
        timing: Timing,
    },
    /// A tracked process executed a new program.
    Exec { who: Who, via: Via, timing: Timing },
    /// A tracked process was attributed to an app (or to a different one than before).
    Attributed { who: Who },
    /// A tracked process exited.
    Exit {
        who: Who,
        status: ExitStatus,
        /// Where the status came from (`None` when unknown).
        status_from: Option<StatusFrom>,
        via: Via,
        timing: Timing,
        /// How long it lived, when its start is known.
        lived_ns: Option<u64>,
        /// Listening addresses it held at its last snapshot taken before its exit began.
        held: Vec<String>,
        /// Whether its ancestry led to the pm2 daemon when it exited (`None`: unknown).
        in_tree: Option<bool>,
    },
    /// The state of an app's processes at a moment that matters.
    Snapshot(Snapshot),
    /// Events were lost (socket buffer overrun) or something could not be watched.
    Lost { why: String },
}

/// What a process event's line is given to start with: most fit (a pid, an app, a command
/// shortened to 100 or 120 bytes), so the line is not grown and copied as it is written.
const SUMMARY_CAPACITY: usize = 192;

impl ProcEvent {
    /// One human line.
    pub fn summary(&self) -> String {
        match self {
            ProcEvent::Mode { report } => format!("process watcher: {report}"),
            ProcEvent::Tracked {
                who,
                via: _,
                timing,
            } => {
                let mut s = String::with_capacity(SUMMARY_CAPACITY);
                s.push_str("tracking ");
                who.push_label(&mut s);
                if let Some(h) = &who.how {
                    s.push_str(" (");
                    s.push_str(&h.words());
                    s.push(')');
                }
                if let Some(c) = &who.cmd {
                    s.push_str(": ");
                    push_shortened(&mut s, c, 100);
                }
                if let Some(w) = timing.words() {
                    if !matches!(timing, Timing::BeforeStart { .. }) {
                        s.push_str(" [");
                        s.push_str(&w);
                        s.push(']');
                    }
                }
                s
            }
            ProcEvent::Fork {
                parent,
                who,
                via: _,
                timing,
            } => {
                let mut s = String::with_capacity(SUMMARY_CAPACITY);
                s.push_str("fork pid ");
                push_i64(&mut s, (*parent).into());
                s.push_str(" -> ");
                who.push_label(&mut s);
                if let Some(c) = &who.cmd {
                    s.push_str(": ");
                    push_shortened(&mut s, c, 100);
                }
                if let Some(w) = timing.words() {
                    s.push_str(" [");
                    s.push_str(&w);
                    s.push(']');
                }
                s
            }
            ProcEvent::Exec { who, .. } => {
                let mut s = String::with_capacity(SUMMARY_CAPACITY);
                s.push_str("exec ");
                who.push_label(&mut s);
                s.push_str(": ");
                push_shortened(&mut s, who.cmd.as_deref().unwrap_or("?"), 120);
                s
            }
            ProcEvent::Attributed { who } => {
                let mut s = format!(
                    "{} is",
                    who.label().split(' ').take(2).collect::<Vec<_>>().join(" ")
                );
                match &who.app {
                    Some(app) => s.push_str(&format!(" {}", app.label())),
                    None => s.push_str(" no pm2 app"),
                }
                if let Some(h) = &who.how {
                    s.push_str(&format!(" ({})", h.words()));
                }
                s
            }
            ProcEvent::Exit {
                who,
                status,
                timing,
                lived_ns,
                held,
                in_tree,
                ..
            } => {
                let mut s = String::with_capacity(SUMMARY_CAPACITY);
                s.push_str("exit ");
                who.push_label(&mut s);
                s.push(' ');
                s.push_str(&status.words());
                if let Some(l) = lived_ns {
                    s.push_str(" after ");
                    s.push_str(&fmt_ns(*l));
                }
                if !held.is_empty() {
                    s.push_str(&format!(", held {}", held.join(", ")));
                }
                if *in_tree == Some(false) && !who.daemon {
                    s.push_str(" (outside pm2's tree)");
                }
                if let Some(w) = timing.words() {
                    s.push_str(&format!(" [{w}]"));
                }
                s
            }
            ProcEvent::Snapshot(snap) => {
                let mut s = format!(
                    "snapshot ({}): {} processes",
                    snap.reason.words(),
                    snap.processes.len()
                );
                // The daemon's own sockets (rpc.sock, pub.sock) are in the data, not the line.
                let apps: Vec<&SocketHold> = snap.sockets.iter().filter(|h| !h.daemon).collect();
                // In cluster mode the daemon is the cluster master: it holds its cluster
                // apps' listening sockets, the workers hold none.
                let master: Vec<&SocketHold> = snap
                    .sockets
                    .iter()
                    .filter(|h| h.daemon && !h.is_pm2_own())
                    .collect();
                if apps.is_empty() && master.is_empty() {
                    s.push_str(", no app holds a listening socket");
                }
                for h in apps {
                    s.push_str("; ");
                    s.push_str(&h.summary());
                }
                for h in master {
                    s.push_str("; ");
                    s.push_str(&h.summary());
                    s.push_str(", the cluster master, for its cluster-mode apps");
                }
                for p in &snap.paths {
                    s.push_str("; ");
                    s.push_str(&p.summary());
                }
                if !snap.host.is_empty() {
                    s.push_str(&format!(
                        "; {} listening sockets elsewhere on the host",
                        snap.host.len()
                    ));
                }
                s
            }
            ProcEvent::Lost { why } => format!("process events lost: {why}"),
        }
    }
}

/// `1.234 s`, `12 ms`, `340 µs`.
pub(crate) fn fmt_ns(ns: u64) -> String {
    if ns >= 10_000_000_000 {
        format!("{} s", ns / 1_000_000_000)
    } else if ns >= 1_000_000_000 {
        format!("{:.3} s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{} ms", ns / 1_000_000)
    } else {
        format!("{} µs", ns / 1000)
    }
}

/// [`shorten`] of `c` written at the end of `s` (copied as it is when nothing is to be cut or
/// replaced).
fn push_shortened(s: &mut String, c: &str, max: usize) {
    if c.len() <= max && !c.chars().any(char::is_control) {
        s.push_str(c);
    } else {
        s.push_str(&shorten(c, max));
    }
}

/// Cut `s` to at most `max` bytes on a char boundary, marking the cut; control characters
/// (newlines in a shell script's command line) become spaces so the result is one line.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    if s.chars().any(char::is_control) {
        let clean: String = s
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        return shorten(&clean, max);
    }
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Stamped};

    fn app(gen: u64) -> AppRef {
        AppRef {
            pm2_home: "/h".into(),
            pm_id: 0,
            name: "web".into(),
            generation: Some(gen),
            unique_id: None,
        }
    }

    #[test]
    fn wait_status_decoding() {
        assert_eq!(
            ExitStatus::from_wait_status(0x300),
            ExitStatus::Code { code: 3 }
        );
        assert_eq!(
            ExitStatus::from_wait_status(0),
            ExitStatus::Code { code: 0 }
        );
        assert_eq!(
            ExitStatus::from_wait_status(9),
            ExitStatus::Signal {
                sig: 9,
                name: "SIGKILL".into(),
                core: false
            }
        );
        assert_eq!(
            ExitStatus::from_wait_status(0x8b),
            ExitStatus::Signal {
                sig: 11,
                name: "SIGSEGV".into(),
                core: true
            }
        );
        assert_eq!(
            ExitStatus::from_wait_status(0xff00),
            ExitStatus::Code { code: 255 }
        );
    }

    #[test]
    fn summaries() {
        let who = Who {
            pid: 4242,
            start: Some(1),
            ppid: 1,
            app: Some(app(3)),
            how: Some(AttrHow::Environ),
            daemon: false,
            cmd: None,
        };
        let ev = ProcEvent::Exit {
            who,
            status: ExitStatus::from_wait_status(9),
            status_from: Some(StatusFrom::Netlink),
            via: Via::Netlink,
            timing: Timing::Kernel {
                kernel_ns: 5,
                observed_ns: 6,
            },
            lived_ns: None,
            held: vec![],
            in_tree: Some(true),
        };
        assert_eq!(ev.summary(), "exit pid 4242 web:0 gen 3 signal SIGKILL");
        let hold = SocketHold {
            proto: Proto::Tcp,
            addr: "127.0.0.1:4211".into(),
            port: Some(4211),
            inode: 1,
            pid: 4100,
            start: 1,
            app: Some(app(2)),
            daemon: false,
            in_tree: false,
        };
        assert_eq!(
            hold.summary(),
            "port 127.0.0.1:4211 held by pid 4100 web:0 gen 2 (outside pm2's tree)"
        );
    }

    #[test]
    fn serde_roundtrip_inside_event() {
        let snap = Snapshot {
            reason: SnapshotReason::EarlyExit {
                pm_id: 0,
                pid: 7,
                generation: Some(4),
                lived_ms: Some(30),
            },
            processes: vec![ProcSnap {
                pid: 7,
                ppid: 1,
                pgid: 7,
                sid: 7,
                start: 99,
                state: "S".into(),
                cmdline: vec!["node".into(), "a b.js".into()],
                app: Some(app(4)),
                how: Some(AttrHow::Ancestry { parent: 3 }),
                daemon: false,
                in_tree: true,
            }],
            sockets: vec![],
            env: vec![EnvSnap {
                pid: 7,
                start: 99,
                app: None,
                vars: vec![EnvVar {
                    key: "A".into(),
                    value: "b".into(),
                }],
                truncated: false,
            }],
            notes: vec![],
            cost_us: 12,
            host: vec![],
            paths: vec![],
        };
        for pe in [
            ProcEvent::Snapshot(snap),
            ProcEvent::Exit {
                who: Who {
                    pid: 1,
                    start: None,
                    ppid: 0,
                    app: None,
                    how: None,
                    daemon: true,
                    cmd: Some("x".into()),
                },
                status: ExitStatus::Unknown { why: "no".into() },
                status_from: None,
                via: Via::Pidfd,
                timing: Timing::Between {
                    not_before_ns: 1,
                    observed_ns: 2,
                },
                lived_ns: Some(u64::MAX),
                held: vec!["127.0.0.1:1".into()],
                in_tree: None,
            },
            ProcEvent::Mode {
                report: WatchModeReport {
                    mode: ActiveMode::Pidfd,
                    why: "x".into(),
                    limits: vec!["y".into()],
                },
            },
        ] {
            let st = Stamped {
                t: 77,
                event: Event::Proc(Box::new(pe)),
            };
            let text = serde_json::to_string(&st).unwrap();
            let back: Stamped = serde_json::from_str(&text).unwrap();
            assert_eq!(back, st, "{text}");
        }
    }

    /// How the process events' lines were written before they were written into one
    /// string: each part formatted on its own and appended.
    fn summary_reference(e: &ProcEvent) -> String {
        let app_label = |a: &AppRef| match a.generation {
            Some(g) => format!("{}:{} gen {}", a.name, a.pm_id, g),
            None => format!("{}:{}", a.name, a.pm_id),
        };
        let label = |w: &Who| {
            let mut s = format!("pid {}", w.pid);
            if w.daemon {
                s.push_str(" (pm2 daemon)");
            }
            if let Some(app) = &w.app {
                s.push(' ');
                s.push_str(&app_label(app));
            }
            s
        };
        match e {
            ProcEvent::Tracked { who, timing, .. } => {
                let mut s = format!("tracking {}", label(who));
                if let Some(h) = &who.how {
                    s.push_str(&format!(" ({})", h.words()));
                }
                if let Some(c) = &who.cmd {
                    s.push_str(&format!(": {}", shorten(c, 100)));
                }
                if let Some(w) = timing.words() {
                    if !matches!(timing, Timing::BeforeStart { .. }) {
                        s.push_str(&format!(" [{w}]"));
                    }
                }
                s
            }
            ProcEvent::Fork {
                parent,
                who,
                timing,
                ..
            } => {
                let mut s = format!("fork pid {parent} -> {}", label(who));
                if let Some(c) = &who.cmd {
                    s.push_str(&format!(": {}", shorten(c, 100)));
                }
                if let Some(w) = timing.words() {
                    s.push_str(&format!(" [{w}]"));
                }
                s
            }
            ProcEvent::Exec { who, .. } => format!(
                "exec {}: {}",
                label(who),
                shorten(who.cmd.as_deref().unwrap_or("?"), 120)
            ),
            ProcEvent::Exit {
                who,
                status,
                timing,
                lived_ns,
                held,
                in_tree,
                ..
            } => {
                let mut s = format!("exit {} {}", label(who), status.words());
                if let Some(l) = lived_ns {
                    s.push_str(&format!(" after {}", fmt_ns(*l)));
                }
                if !held.is_empty() {
                    s.push_str(&format!(", held {}", held.join(", ")));
                }
                if *in_tree == Some(false) && !who.daemon {
                    s.push_str(" (outside pm2's tree)");
                }
                if let Some(w) = timing.words() {
                    s.push_str(&format!(" [{w}]"));
                }
                s
            }
            other => other.summary(),
        }
    }

    /// Every process event of the shipped captures, and each of them again with the
    /// parts a line may have or lack (daemon, app with and without a generation, how,
    /// command lines long, short, absent and with control characters, each timing): the
    /// lines, and the labels, are the reference's.
    #[test]
    fn process_event_lines_are_written_as_before() {
        let mut events = Vec::new();
        for path in crate::capture::shipped_captures() {
            for ev in crate::capture::CaptureReader::open(&path).unwrap() {
                if let Event::Proc(p) = ev.unwrap().event {
                    events.push(*p);
                }
            }
        }
        assert!(events.len() > 1000, "only {} process events", events.len());
        let timings = [
            Timing::Kernel {
                kernel_ns: 1,
                observed_ns: 2,
            },
            Timing::StartTime {
                not_before_ns: 1,
                resolution_ns: 10_000_000,
                observed_ns: 2,
            },
            Timing::Between {
                not_before_ns: 1,
                observed_ns: 3_000_000_000,
            },
            Timing::BeforeStart { observed_ns: 2 },
        ];
        let cmds = [
            None,
            Some("node app.js".to_string()),
            Some("x".repeat(300)),
            Some("sh -c 'a\nb'".to_string()),
            Some(format!("{}é", "y".repeat(99))),
        ];
        let mut variants = Vec::new();
        for (k, e) in events.iter().enumerate() {
            let mut e = e.clone();
            if let ProcEvent::Tracked { who, timing, .. }
            | ProcEvent::Fork { who, timing, .. }
            | ProcEvent::Exec { who, timing, .. }
            | ProcEvent::Exit { who, timing, .. } = &mut e
            {
                who.daemon = k % 3 == 0;
                who.cmd = cmds[k % cmds.len()].clone();
                *timing = timings[k % timings.len()];
                who.how = match k % 4 {
                    0 => None,
                    1 => Some(AttrHow::Environ),
                    2 => Some(AttrHow::Ancestry { parent: 7 }),
                    _ => Some(AttrHow::Hint { source: "r".into() }),
                };
                if let Some(app) = &mut who.app {
                    app.generation = (k % 2 == 0).then_some(k as u64);
                }
                if let ProcEvent::Exit {
                    lived_ns,
                    held,
                    in_tree,
                    ..
                } = &mut e
                {
                    *lived_ns = (k % 2 == 1).then_some(k as u64 * 1_000_003);
                    *held = (0..k % 3).map(|i| format!("0.0.0.0:{i}")).collect();
                    *in_tree = [None, Some(true), Some(false)][k % 3];
                }
                variants.push(e);
            }
        }
        for e in events.iter().chain(&variants) {
            assert_eq!(e.summary(), summary_reference(e), "{e:?}");
        }
        let who = Who {
            pid: 5,
            start: None,
            ppid: 1,
            app: Some(app(3)),
            how: None,
            daemon: true,
            cmd: None,
        };
        assert_eq!(who.label(), "pid 5 (pm2 daemon) web:0 gen 3");
        assert_eq!(app(3).label(), "web:0 gen 3");
    }
}
