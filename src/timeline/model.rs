//! The timeline model the rules read: per app, its generations (one per spawn) and the
//! requests that acted on them, each instant with how precisely it is known.
//!
//! Built by [`Timeline::apply`] from [`Entry`]s one at a time; it holds no raw events, only
//! what the rules need (bounded per generation: the last stderr lines, never all output).

use super::entry::{AppRef, Entry, EntryKind, Outcome};
use super::procfacts::{snapshot_views, ProcFacts};
use crate::event::host::Identity;
use crate::event::proc::{Snapshot, StartPaths};
use crate::event::{CaptureInfo, MonoNs, ProcEvent};
use crate::pm2::daemon_log::DaemonLogLine;
use crate::pm2::meaning::{
    BusEvent, EnvFingerprint, MonitorProc, Pm2Call, ProcessEvent, ProcessEventKind,
    RestartSettings, Stream,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// pm2's defaults when an app does not set them (lib/God.js, constants.js).
pub(crate) const DEFAULT_MIN_UPTIME_MS: u64 = 1000;
pub(crate) const DEFAULT_MAX_RESTARTS: u64 = 16;
pub(crate) const DEFAULT_KILL_TIMEOUT_MS: u64 = 1600;
/// How long pm2 waits for `ready` (wait_ready) or for a reload's new worker to listen
/// (`GRACEFUL_LISTEN_TIMEOUT` in constants.js).
pub(crate) const DEFAULT_LISTEN_TIMEOUT_MS: u64 = 3000;

/// Lines of stderr kept per generation (the last ones).
pub(crate) const STDERR_TAIL: usize = 20;
/// Longest stderr line kept, in characters.
const MAX_LINE: usize = 500;

/// How precisely an instant is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Precision {
    /// `t` is when it happened: a kernel timestamp, or bytes the proxy forwarded.
    Exact,
    /// `t` is when the recorder received the report (bus, daemon log): it happened a little
    /// earlier; `daemon_ms` is the daemon's own millisecond timestamp when it sent one.
    Received,
    /// Only the daemon's millisecond clock tells (e.g. a start before the capture);
    /// `t` is converted through the capture's wall/monotonic pair.
    DaemonMs,
}

/// An instant on the capture's monotonic clock, with its precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimeRef {
    pub t: MonoNs,
    pub(crate) precision: Precision,
    /// The daemon's timestamp (ms since the epoch, its wall clock), when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) daemon_ms: Option<i64>,
}

impl TimeRef {
    pub(crate) fn exact(t: MonoNs) -> TimeRef {
        TimeRef {
            t,
            precision: Precision::Exact,
            daemon_ms: None,
        }
    }
    pub(crate) fn received(t: MonoNs, daemon_ms: Option<i64>) -> TimeRef {
        TimeRef {
            t,
            precision: Precision::Received,
            daemon_ms,
        }
    }
}

/// App settings that decide restarts and kills (`None`: pm2's default applies).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct AppConfig {
    pub(crate) min_uptime: Option<u64>,
    pub(crate) max_restarts: Option<u64>,
    pub(crate) kill_timeout: Option<u64>,
    pub(crate) treekill: Option<bool>,
    pub(crate) exec_mode: Option<String>,
    pub(crate) restart_delay: Option<u64>,
    pub(crate) exp_backoff_restart_delay: Option<u64>,
    pub(crate) max_memory_restart: Option<u64>,
    pub(crate) watch: Option<bool>,
    pub(crate) wait_ready: Option<bool>,
    pub(crate) listen_timeout: Option<u64>,
}

impl AppConfig {
    /// Take what the daemon reported of the app's restart settings.
    fn learn_restarts(&mut self, r: &RestartSettings) {
        self.restart_delay = r.restart_delay.or(self.restart_delay);
        self.exp_backoff_restart_delay = r
            .exp_backoff_restart_delay
            .or(self.exp_backoff_restart_delay);
        self.max_memory_restart = r.max_memory_restart.or(self.max_memory_restart);
        self.watch = r.watch.or(self.watch);
        self.min_uptime = r.min_uptime.or(self.min_uptime);
        self.max_restarts = r.max_restarts.or(self.max_restarts);
    }

    pub(crate) fn min_uptime_ms(&self) -> u64 {
        self.min_uptime.unwrap_or(DEFAULT_MIN_UPTIME_MS)
    }
    pub(crate) fn max_restarts(&self) -> u64 {
        self.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS)
    }
    pub(crate) fn kill_timeout_ms(&self) -> u64 {
        self.kill_timeout.unwrap_or(DEFAULT_KILL_TIMEOUT_MS)
    }
    pub fn listen_timeout_ms(&self) -> u64 {
        self.listen_timeout.unwrap_or(DEFAULT_LISTEN_TIMEOUT_MS)
    }
    /// `exec_mode` is `cluster_mode`: the daemon is the cluster master.
    pub fn is_cluster(&self) -> bool {
        self.exec_mode.as_deref() == Some("cluster_mode")
    }
    pub fn waits_ready(&self) -> bool {
        self.wait_ready == Some(true)
    }
}

/// Where an exit was learnt from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ExitSource {
    /// `App [..] exited with code [..] via signal [..]`.
    DaemonLog,
    /// A `process:event` exit.
    Bus,
}

/// The end of a generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exit {
    pub at: TimeRef,
    pub code: Option<i64>,
    /// The signal the daemon names (it says SIGINT when there was none).
    pub(crate) signal: Option<String>,
    pub(crate) source: ExitSource,
}

/// A stop the daemon carried out on a generation (restart, stop, delete, reload).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stop {
    /// `Stopping app:..`: the kill signal (SIGINT unless configured) goes out right after.
    pub requested: TimeRef,
    /// Index into [`Timeline::requests`] of the request in progress when it began.
    pub by_request: Option<usize>,
    /// `failed to kill - retrying` polls.
    pub(crate) kill_retries: u32,
    /// SIGKILL after kill_timeout.
    pub sigkill: Option<TimeRef>,
    pub(crate) sigkill_after_ms: Option<u64>,
    /// 7.x: how many tree pids were still alive at SIGKILL.
    pub(crate) sigkill_remaining: Option<u64>,
    /// `process tree killed (n pids)` (7.x, `n` in `tree_pids`) or `process killed` (5.x).
    pub confirmed: Option<TimeRef>,
    pub(crate) tree_pids: Option<u64>,
    /// `could not be killed` / `could not be stopped`: the daemon gave up and set errored.
    pub(crate) gave_up: Option<TimeRef>,
}

impl Stop {
    /// A stop that began at `requested` (`Stopping app:..`), during request `by_request`.
    fn begun(requested: TimeRef, by_request: Option<usize>) -> Stop {
        Stop {
            requested,
            by_request,
            kill_retries: 0,
            sigkill: None,
            sigkill_after_ms: None,
            sigkill_remaining: None,
            confirmed: None,
            tree_pids: None,
            gave_up: None,
        }
    }
}

/// One spawn of an app: from start to exit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    /// 0, 1, ... within this app in this capture.
    pub seq: u32,
    /// pm2's `restart_time` counter, when known.
    pub(crate) restart_time: Option<u64>,
    /// The process pm2 spawned.
    pub pid: Option<i64>,
    /// Pids pm2 found in its tree at the last kill (7.x).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) tree_pids: Vec<i64>,
    /// Already running when the capture began.
    pub before_capture: bool,
    /// `App [..] starting in -fork mode-`.
    pub starting: Option<TimeRef>,
    pub online: Option<TimeRef>,
    /// Index into [`Timeline::requests`] of the request that was in progress when it started.
    pub started_by: Option<usize>,
    /// The app sent `process.send('ready')` (what `--wait-ready` and a reload wait for).
    pub ready_msg: Option<TimeRef>,
    /// The daemon said the reload's new worker was listening (or ready, under wait_ready):
    /// `-reload- New worker listening`.
    pub listening: Option<TimeRef>,
    /// Index into [`Timeline::requests`] of the cluster reload that parked this generation
    /// as the outgoing worker `_old_<pm_id>` (replaced by a new worker under its id).
    pub parked_by: Option<usize>,
    pub stop: Option<Stop>,
    pub exit: Option<Exit>,
    /// The process watcher saw the pid end.
    pub os_exit: Option<TimeRef>,
    /// How it ended, as the kernel says (`code 1`, `signal SIGKILL`).
    pub os_exit_status: Option<String>,
    /// 7.x: the daemon ignored a late exit of this generation (`stale exit event ignored`).
    pub(crate) stale_exit: Option<TimeRef>,
    /// Exit within min_uptime of the start (what pm2 counts as an unstable restart).
    pub early_exit: Option<bool>,
    /// The daemon's unstable restart counter as of the exit.
    pub(crate) unstable_restarts: Option<u64>,
    /// The daemon could not spawn it (`Error: spawn node ENOENT`): when, and the words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) spawn_failed: Option<(TimeRef, String)>,
    /// `will restart in N ms` after it exited (exp_backoff_restart_delay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) restart_in_ms: Option<u64>,
    /// The last [`STDERR_TAIL`] lines of stderr.
    pub stderr_tail: Vec<String>,
    pub(crate) stderr_lines: u64,
    pub(crate) stdout_lines: u64,
    /// Made from a reply or a snapshot that named the new pid before the daemon's
    /// `starting` line arrived (they come on different sockets): that line then completes
    /// this generation instead of making another.
    #[serde(skip)]
    provisional: bool,
}

impl Generation {
    fn new(seq: u32) -> Generation {
        Generation {
            seq,
            restart_time: None,
            pid: None,
            tree_pids: Vec::new(),
            before_capture: false,
            starting: None,
            online: None,
            started_by: None,
            ready_msg: None,
            listening: None,
            parked_by: None,
            stop: None,
            exit: None,
            os_exit: None,
            os_exit_status: None,
            stale_exit: None,
            early_exit: None,
            unstable_restarts: None,
            spawn_failed: None,
            restart_in_ms: None,
            stderr_tail: Vec::new(),
            stderr_lines: 0,
            stdout_lines: 0,
            provisional: false,
        }
    }

    /// When it started, as well as known.
    pub(crate) fn started(&self) -> Option<TimeRef> {
        self.starting.or(self.online)
    }

    /// How long it ran, when start and exit are both known.
    pub(crate) fn uptime_ns(&self) -> Option<u64> {
        let end = self.os_exit.or(self.exit.as_ref().map(|e| e.at))?;
        Some(end.t.saturating_sub(self.started()?.t))
    }

    /// Whether `pid` is this generation's process or one of its tree.
    pub(crate) fn has_pid(&self, pid: i64) -> bool {
        self.pid == Some(pid) || self.tree_pids.contains(&pid)
    }

    /// When it ended, as well as known (the kernel's instant first).
    pub fn ended(&self) -> Option<TimeRef> {
        self.os_exit.or(self.exit.as_ref().map(|e| e.at))
    }

    /// When it said it was ready: the daemon's reload line or the app's `ready` message,
    /// whichever came first.
    pub fn ready(&self) -> Option<TimeRef> {
        match (self.listening, self.ready_msg) {
            (Some(a), Some(b)) => Some(if a.t <= b.t { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

/// A status the app took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusChange {
    pub at: TimeRef,
    pub(crate) status: String,
    /// What said so: `bus exit`, `daemon log`, `getMonitorData`, ...
    pub(crate) via: String,
}

/// One app (pm_id) over the capture.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppTimeline {
    pub pm_id: u64,
    pub name: Option<std::sync::Arc<str>>,
    /// `pm_exec_path`.
    pub exec_path: Option<String>,
    /// `pm_cwd`.
    pub(crate) cwd: Option<String>,
    /// `exec_interpreter`.
    pub(crate) interpreter: Option<String>,
    pub(crate) config: AppConfig,
    pub generations: Vec<Generation>,
    pub statuses: Vec<StatusChange>,
    /// Fingerprint of the app's environment as last reported by the daemon.
    #[serde(skip)]
    pub env: Option<std::sync::Arc<EnvFingerprint>>,
    pub deleted: Option<TimeRef>,
    /// Processes the watcher tied to this app: main processes and descendants, also
    /// those that left pm2's tree (at most [`MAX_PROCESSES`]).
    pub processes: Vec<SeenProcess>,
    /// Oldest generations forgotten to stay within [`MAX_GENERATIONS`].
    pub generations_dropped: u64,
    /// What the process watcher's snapshots showed of this app (at most [`MAX_SNAPSHOTS`]).
    pub snapshots: Vec<AppSnapshot>,
    /// Restarts the daemon decided on by itself: memory limit, watch.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub auto_restarts: Vec<AutoRestart>,
    /// Every `App [..] online` the daemon logged (at most [`MAX_STATUSES`]). Under wait_ready
    /// pm2 logs it when `ready` came or listen_timeout ran out, which can be long after that
    /// generation died and newer ones started: the line says online, not for which pid.
    pub online_reports: Vec<TimeRef>,
    /// Main pids of new generations the watcher reported before the generation was known
    /// here: (pid, restart_time).
    #[serde(skip)]
    pending_main: Vec<(i64, u64)>,
    /// The index in `processes` of the latest process seen with each pid (pids are reused:
    /// an earlier one has exited), so that a process event finds its process without a
    /// scan of up to [`MAX_PROCESSES`].
    #[serde(skip)]
    process_ix: HashMap<i64, usize>,
    /// For each main pid, the generations that have it (pids are reused), by number
    /// (`generations_dropped` + index), oldest first: a lookup by pid does not scan up to
    /// [`MAX_GENERATIONS`] generations for every process event and reply (most pids are no
    /// generation's: the apps' children, the daemon's helpers). Kept by
    /// [`AppTimeline::set_pid`], the only writer of a generation's pid, and by the
    /// generations' own insertions and evictions.
    #[serde(skip)]
    pid_ix: HashMap<i64, Vec<u64>>,
}

/// Why the daemon restarted an app by itself, other than an exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AutoRestartCause {
    /// Over `max_memory_restart`.
    Memory,
    /// A watched file changed.
    Watch { path: String },
}

/// A restart the daemon decided on by itself (its log says why).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutoRestart {
    pub at: TimeRef,
    pub cause: AutoRestartCause,
}

/// Generations kept per app (the oldest half is forgotten beyond).
pub(crate) const MAX_GENERATIONS: usize = 20_000;
/// Status changes kept per app (the oldest half is forgotten beyond).
pub(crate) const MAX_STATUSES: usize = 40_000;
/// Generations (the most recent) that keep their stderr lines.
pub(crate) const STDERR_GENERATIONS: usize = 256;

/// Generations searched (the latest) for the stop a kill line belongs to.
const STOP_SEARCH: usize = 64;

/// Processes kept per app.
pub(crate) const MAX_PROCESSES: usize = 4096;

/// A process of an app, as the process watcher saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeenProcess {
    pub pid: i64,
    /// pm2's restart_time of the generation it belongs to (from its environment).
    pub generation: Option<u64>,
    pub(crate) first_seen: TimeRef,
    pub exit: Option<TimeRef>,
    pub(crate) exit_status: Option<String>,
    pub(crate) cmd: Option<String>,
    /// The process that forked it (or its parent when first seen).
    pub(crate) parent: Option<i64>,
    /// Listening addresses it held at its last snapshot, as its exit event says.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
    /// Whether its ancestry still led to the pm2 daemon when it exited.
    pub in_tree_at_exit: Option<bool>,
    /// Its parent when it exited (the process that must reap it).
    pub(crate) parent_at_exit: Option<i64>,
}

/// Why the process watcher took a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum SnapWhy {
    Start,
    StopRequested,
    RestartRequested,
    /// A new generation was spawned: its process and pm2's restart_time.
    NewGeneration {
        pid: Option<i64>,
        generation: Option<u64>,
    },
    /// A process of the newest generation exited within the early-exit window.
    EarlyExit {
        pid: i64,
        generation: Option<u64>,
        lived_ms: Option<u64>,
    },
    Other {
        why: String,
    },
}

/// A process of the app in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct SnapProcess {
    pub(crate) pid: i64,
    pub(crate) ppid: i64,
    /// pm2's restart_time of the generation it belongs to.
    pub(crate) generation: Option<u64>,
    /// Whether its ancestry led to the pm2 daemon.
    pub(crate) in_tree: bool,
    /// One-letter state (`S`, `R`, `Z`, `D`, ...).
    pub(crate) state: String,
    pub(crate) cmd: String,
}

/// A listening (TCP), bound (UDP) or bound-path (unix) socket held by a process of the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct SnapSocket {
    /// `tcp`, `tcp6`, `udp`, `udp6`, `unix`.
    pub(crate) proto: String,
    /// `127.0.0.1:4211`, `/run/app.sock`.
    pub(crate) addr: String,
    pub(crate) port: Option<u16>,
    pub(crate) pid: i64,
    pub(crate) generation: Option<u64>,
    pub(crate) in_tree: bool,
    /// Held by the pm2 daemon as the cluster master of this cluster-mode app (its workers
    /// hold no listening socket of their own).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) master: bool,
}

/// Who holds a socket that is not this app's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OtherHolder {
    /// Another app of the recorded daemon.
    App {
        name: String,
        pm_id: u64,
        generation: Option<u64>,
        in_tree: bool,
    },
    /// A process elsewhere on the host (another PM2 daemon's app, a service, a container,
    /// a stray process), as the host-wide scan identified it.
    Host(Identity),
}

/// A listening (TCP), bound (UDP) or bound-path (unix) socket that something other than
/// the app held (snapshots taken for one app only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OtherSocket {
    pub proto: String,
    pub addr: String,
    pub port: Option<u16>,
    pub pid: i64,
    pub holder: OtherHolder,
}

/// What the process watcher saw of one app at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppSnapshot {
    pub t: MonoNs,
    pub(crate) why: SnapWhy,
    pub(crate) processes: Vec<SnapProcess>,
    pub(crate) sockets: Vec<SnapSocket>,
    /// Sockets held by other apps of the daemon or elsewhere on the host (snapshots about
    /// this app only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) others: Vec<OtherSocket>,
    /// Where the app's generation being replaced was started from (stop/restart requests).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) paths: Vec<StartPaths>,
}

impl AppSnapshot {
    /// The process with `pid`, if the snapshot shows it.
    pub(crate) fn process(&self, pid: i64) -> Option<&SnapProcess> {
        self.processes.iter().find(|p| p.pid == pid)
    }
}

/// Snapshots kept per app (the oldest half is forgotten beyond).
pub(crate) const MAX_SNAPSHOTS: usize = 4096;

impl AppTimeline {
    fn new(pm_id: u64) -> AppTimeline {
        AppTimeline {
            pm_id,
            name: None,
            exec_path: None,
            cwd: None,
            interpreter: None,
            config: AppConfig::default(),
            generations: Vec::new(),
            statuses: Vec::new(),
            env: None,
            deleted: None,
            processes: Vec::new(),
            generations_dropped: 0,
            snapshots: Vec::new(),
            auto_restarts: Vec::new(),
            online_reports: Vec::new(),
            pending_main: Vec::new(),
            process_ix: HashMap::new(),
            pid_ix: HashMap::new(),
        }
    }

    /// The last status seen.
    pub fn status(&self) -> Option<&str> {
        self.statuses.last().map(|s| s.status.as_str())
    }

    fn set_status(&mut self, at: TimeRef, status: &str, via: &str) {
        if self.status() != Some(status) {
            if self.statuses.len() >= MAX_STATUSES {
                self.statuses.drain(..MAX_STATUSES / 2);
            }
            self.statuses.push(StatusChange {
                at,
                status: status.to_owned(),
                via: via.to_owned(),
            });
        }
    }

    fn push_generation(&mut self) -> &mut Generation {
        if self.generations.len() >= MAX_GENERATIONS {
            // A crash loop of days: keep the recent half.
            let n = MAX_GENERATIONS / 2;
            self.generations.drain(..n);
            self.generations_dropped += n as u64;
            let dropped = self.generations_dropped;
            self.pid_ix.retain(|_, gens| {
                gens.retain(|&g| g >= dropped);
                !gens.is_empty()
            });
        }
        let seq = (self.generations_dropped + self.generations.len() as u64) as u32;
        self.generations.push(Generation::new(seq));
        // Only the recent generations keep their stderr lines.
        let len = self.generations.len();
        if len > STDERR_GENERATIONS {
            let old = &mut self.generations[len - STDERR_GENERATIONS - 1];
            old.stderr_tail = Vec::new();
        }
        let g = self.generations.last_mut();
        g.expect("just pushed")
    }

    /// A generation inserted at index `at` (it started before the ones after it).
    fn insert_generation(&mut self, at: usize) -> &mut Generation {
        self.generations.insert(at, Generation::new(0));
        let base = self.generations_dropped;
        for (i, g) in self.generations.iter_mut().enumerate().skip(at) {
            g.seq = (base + i as u64) as u32;
        }
        // The generations from `at` on moved up by one.
        for gens in self.pid_ix.values_mut() {
            for g in gens.iter_mut().filter(|g| **g >= base + at as u64) {
                *g += 1;
            }
        }
        &mut self.generations[at]
    }

    /// The current generation, creating one (running since before the capture, or of
    /// unknown start) when there is none.
    fn current(&mut self) -> &mut Generation {
        if self.generations.is_empty() {
            self.push_generation().before_capture = true;
        }
        let g = self.generations.last_mut();
        g.expect("not empty")
    }

    /// The generation an `online` report is about: the current one, or a new one when the
    /// last has ended. An app's first generation made this way started before the capture:
    /// its `starting` was not seen (the recorder began while pm2 waited for it, as under
    /// wait_ready, and the `online` arrived before the first snapshot of the daemon).
    fn online_generation(&mut self) {
        if self.generations.last().is_none_or(|g| g.exit.is_some()) {
            let first = self.generations.is_empty();
            self.push_generation().before_capture = first;
        }
    }

    /// The current generation for what the daemon says on its bus (exits, stops, output):
    /// not one made from a reply ahead of its `starting` line (the daemon logs that line
    /// before it can say anything else about the new process, on the same socket).
    fn confirmed(&mut self) -> &mut Generation {
        let n = self.generations.len();
        if n >= 2 && self.generations[n - 1].provisional {
            return &mut self.generations[n - 2];
        }
        self.current()
    }

    /// The outgoing worker of the reload in progress (`_old_<pm_id>`): the last generation a
    /// reload parked.
    fn parked_index(&self) -> Option<usize> {
        self.generations
            .iter()
            .rposition(|g| g.parked_by.is_some() && g.exit.is_none())
            .or_else(|| self.generations.iter().rposition(|g| g.parked_by.is_some()))
    }

    /// The generation a kill line is about: the last one with a stop not yet confirmed.
    fn stopping_index(&self) -> Option<usize> {
        let n = self.generations.len();
        self.generations
            .iter()
            .rev()
            .take(4)
            .position(|g| {
                g.stop
                    .as_ref()
                    .is_some_and(|s| s.confirmed.is_none() && s.gave_up.is_none())
            })
            .map(|back| n - 1 - back)
    }

    /// The newest generation whose main pid is `pid` and for which `pick` holds (what
    /// `generations.iter().rposition(|g| g.pid == Some(pid) && pick(g))` finds).
    fn newest_with_pid(&self, pid: i64, pick: impl Fn(&Generation) -> bool) -> Option<usize> {
        let dropped = self.generations_dropped;
        self.pid_ix
            .get(&pid)?
            .iter()
            .rev()
            .map_while(|&g| usize::try_from(g.checked_sub(dropped)?).ok())
            .find(|&i| {
                self.generations
                    .get(i)
                    .is_some_and(|g| g.pid == Some(pid) && pick(g))
            })
    }

    /// Give generation `i` its main pid, in the pid index too.
    fn set_pid(&mut self, i: usize, pid: i64) {
        let number = self.generations_dropped + i as u64;
        match self.generations[i].pid.replace(pid) {
            Some(old) if old == pid => return,
            Some(old) => {
                if let Some(gens) = self.pid_ix.get_mut(&old) {
                    gens.retain(|&g| g != number);
                }
            }
            None => {}
        }
        let gens = self.pid_ix.entry(pid).or_default();
        let at = gens.partition_point(|&g| g < number);
        gens.insert(at, number);
    }

    fn by_pid(&mut self, pid: i64) -> Option<&mut Generation> {
        self.generations.iter_mut().rev().find(|g| g.has_pid(pid))
    }

    /// The process the watcher saw with `pid` (the latest one, pids are reused).
    pub(crate) fn process(&self, pid: i64) -> Option<&SeenProcess> {
        self.process_ix.get(&pid).map(|&i| &self.processes[i])
    }

    /// Give the generation with restart_time `rt` (or the newest one still without a pid)
    /// its main pid, as the watcher reported it; kept for later when no generation fits yet.
    fn learn_main_pid(&mut self, pid: i64, rt: Option<u64>) {
        let idx = self
            .newest_with_pid(pid, |_| true)
            .or_else(|| {
                let rt = rt?;
                self.generations
                    .iter()
                    .rposition(|g| g.restart_time == Some(rt) && g.pid.is_none())
            })
            .or_else(|| {
                let g = self.generations.last()?;
                (g.pid.is_none()
                    && g.exit.is_none()
                    && !g.before_capture
                    && (g.restart_time.is_none() || g.restart_time == rt))
                    .then(|| self.generations.len() - 1)
            });
        match idx {
            Some(i) => self.set_main_pid(i, pid, rt),
            None => {
                if let Some(rt) = rt {
                    if self.pending_main.len() >= 16 {
                        self.pending_main.remove(0);
                    }
                    self.pending_main.push((pid, rt));
                }
            }
        }
    }

    fn set_main_pid(&mut self, i: usize, pid: i64, rt: Option<u64>) {
        let exit = self
            .process(pid)
            .and_then(|p| p.exit.map(|e| (e, p.exit_status.clone())));
        let min_uptime = self.config.min_uptime_ms();
        self.set_pid(i, pid);
        let g = &mut self.generations[i];
        if g.restart_time.is_none() {
            g.restart_time = rt;
        }
        if g.os_exit.is_none() {
            if let Some((at, status)) = exit {
                g.os_exit = Some(at);
                g.os_exit_status = status;
                if g.exit.is_some() {
                    set_early(g, min_uptime);
                }
            }
        }
    }

    /// A generation learnt its restart_time: give it a main pid reported earlier.
    fn claim_pending(&mut self, i: usize) {
        let Some(rt) = self.generations[i].restart_time else {
            return;
        };
        if self.generations[i].pid.is_some() {
            return;
        }
        if let Some(k) = self.pending_main.iter().position(|(_, r)| *r == rt) {
            let (pid, _) = self.pending_main.remove(k);
            self.set_main_pid(i, pid, Some(rt));
        }
    }
}

/// Whether an environment key was added or changed by a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EnvChangeKind {
    Added,
    Changed,
}

/// One environment key a request changes (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvChange {
    pub key: String,
    pub(crate) change: EnvChangeKind,
}

/// A request that acted on an app (restart, reload, stop, start, delete, prepare).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Request {
    pub conn: u64,
    pub(crate) id: String,
    /// The request's number in the entries (`RequestAsked`'s `ask`), by which its reply
    /// names it.
    #[serde(skip)]
    pub(crate) ask: u64,
    /// The client's pid (SO_PEERCRED), when known.
    pub(crate) peer_pid: Option<i32>,
    pub method: String,
    pub(crate) pm_id: Option<u64>,
    /// For `prepare`: the app names it starts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) names: Vec<String>,
    pub(crate) asked: MonoNs,
    pub(crate) answered: Option<MonoNs>,
    pub error: Option<String>,
    pub new_pid: Option<i64>,
    /// Keys whose values differ from the app's environment as last reported.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env_changes: Vec<EnvChange>,
    /// The client sent `notifyByProcessId` for it afterwards (what the CLI does on success).
    pub notified: Option<MonoNs>,
}

impl Request {
    pub(crate) fn in_progress_at(&self, t: MonoNs) -> bool {
        self.asked <= t && self.answered.is_none_or(|a| t <= a)
    }
}

/// Something that limits what the capture can tell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gap {
    pub t: MonoNs,
    pub(crate) what: String,
}

/// How finely a timeline's instants tell when things happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeGrain {
    /// To the nanosecond or millisecond: a recording (kernel, proxy, bus, daemon stamps).
    #[default]
    Fine,
    /// To the second: explained from pm2.log, whose stamps are whole seconds (lines of one
    /// second are placed a microsecond apart, in file order).
    Second,
}

/// The whole capture as apps, generations and requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    pub apps: BTreeMap<u64, AppTimeline>,
    pub requests: Vec<Request>,
    pub gaps: Vec<Gap>,
    pub first_t: Option<MonoNs>,
    pub last_t: Option<MonoNs>,
    /// The daemon's pm2 version, as the capture says.
    pub pm2_version: Option<String>,
    /// Whether the capture has process-watcher events (a watcher ran).
    pub proc_watched: bool,
    /// The recorded daemon's home (`PM2_HOME`).
    pub pm2_home: String,
    /// How finely its instants tell: durations are worded no finer than this.
    #[serde(skip)]
    pub grain: TimeGrain,
    /// Wall/monotonic pair, to place the daemon's millisecond timestamps.
    #[serde(skip)]
    wall_ref_ns: i128,
    #[serde(skip)]
    mono_ref_ns: MonoNs,
    #[serde(skip)]
    peers: HashMap<u64, i32>,
}

/// Most gaps kept (a broken stream can repeat).
const MAX_GAPS: usize = 1000;

impl Timeline {
    pub fn new(info: &CaptureInfo) -> Timeline {
        Timeline {
            apps: BTreeMap::new(),
            requests: Vec::new(),
            gaps: Vec::new(),
            first_t: None,
            last_t: None,
            pm2_version: info.pm2_version.clone(),
            proc_watched: false,
            pm2_home: info.pm2_home.clone(),
            grain: TimeGrain::Fine,
            wall_ref_ns: info.wall_ref_ns,
            mono_ref_ns: info.mono_ref_ns,
            peers: HashMap::new(),
        }
    }

    /// The capture's reference instant (what `+0.000s` means in the views).
    pub(crate) fn mono_ref(&self) -> MonoNs {
        self.mono_ref_ns
    }

    /// The app with `pm_id`, if seen.
    pub fn app(&self, pm_id: u64) -> Option<&AppTimeline> {
        self.apps.get(&pm_id)
    }

    /// An instant given only by the daemon's millisecond clock.
    pub fn daemon_time(&self, ms: i64) -> TimeRef {
        let t = self.mono_ref_ns as i128 + (ms as i128 * 1_000_000 - self.wall_ref_ns);
        TimeRef {
            t: t.clamp(0, u64::MAX as i128) as u64,
            precision: Precision::DaemonMs,
            daemon_ms: Some(ms),
        }
    }

    fn app_mut(&mut self, r: &AppRef) -> &mut AppTimeline {
        let a = self
            .apps
            .entry(r.pm_id)
            .or_insert_with(|| AppTimeline::new(r.pm_id));
        if r.name.is_some() && a.name != r.name {
            a.name = r.name.clone();
        }
        a
    }

    /// Requests still in progress for `pm_id` at `t` (latest first).
    fn in_flight(&self, pm_id: u64, name: Option<&str>, t: MonoNs) -> Option<usize> {
        self.requests
            .iter()
            .enumerate()
            .rev()
            .take(64)
            .find_map(|(i, r)| {
                let ours = r.pm_id == Some(pm_id)
                    || (r.pm_id.is_none() && name.is_some_and(|n| r.names.iter().any(|m| m == n)));
                (ours
                    && r.error.is_none()
                    && r.in_progress_at(t)
                    && r.method != "notifyByProcessId")
                    .then_some(i)
            })
    }

    /// Fold one entry into the model.
    pub fn apply(&mut self, e: &Entry) {
        self.first_t = Some(self.first_t.map_or(e.t, |f| f.min(e.t)));
        self.last_t = Some(self.last_t.map_or(e.t, |l| l.max(e.t)));
        match &e.kind {
            EntryKind::RequestAsked {
                conn,
                id,
                ask,
                call,
            } => self.asked(e, *conn, id, *ask, call),
            EntryKind::RequestAnswered {
                ask,
                outcome,
                new_pid,
                procs,
                method,
                latency_ns,
                ..
            } => {
                // The request a reply answers was asked `latency_ns` before it.
                let ask = ask.zip(latency_ns.map(|l| e.t.saturating_sub(l)));
                self.answered(e, ask, method.as_deref(), outcome, *new_pid, procs)
            }
            EntryKind::Bus(BusEvent::ProcessEvent(pe)) => self.process_event(e, pe),
            EntryKind::Bus(b @ BusEvent::ProcessMsg { at, .. }) if b.is_ready_message() => {
                self.ready_message(e, *at)
            }
            EntryKind::Daemon { at, log } => self.daemon_line(e, *at, log),
            EntryKind::AppLog { stream, line, .. } => {
                if let Some(r) = &e.app {
                    let g = self.app_mut(r).confirmed();
                    match stream {
                        Stream::Out => g.stdout_lines += 1,
                        Stream::Err => {
                            g.stderr_lines += 1;
                            if g.stderr_tail.len() >= STDERR_TAIL {
                                g.stderr_tail.remove(0);
                            }
                            g.stderr_tail.push(line.chars().take(MAX_LINE).collect());
                        }
                    }
                }
            }
            EntryKind::Proc { event } => {
                self.proc_watched = true;
                match &**event {
                    ProcEvent::Snapshot(snap) => self.snapshot(e.t, snap),
                    ProcEvent::Mode { .. } | ProcEvent::Lost { .. } => {}
                    _ => self.proc_event(e, &ProcFacts::of(event)),
                }
            }
            EntryKind::ConnOpened {
                conn,
                peer: Some(p),
            } => {
                self.peers.insert(*conn, p.pid);
            }
            EntryKind::ConnClosed { conn, .. } => {
                self.peers.remove(conn);
            }
            EntryKind::Undecodable { conn, error, .. } => {
                self.gap(e.t, format!("RPC connection {conn} undecodable: {error}"));
            }
            EntryKind::RecordingStopped { reason } => {
                self.gap(e.t, format!("recording stopped: {reason}"))
            }
            EntryKind::BusLink { up: false, detail } => {
                self.gap(e.t, format!("event bus lost: {detail}"))
            }
            _ => {}
        }
    }

    fn proc_event(&mut self, e: &Entry, f: &ProcFacts) {
        let (Some(pid), Some(r)) = (f.pid, &e.app) else {
            return;
        };
        let at = if f.exact {
            TimeRef::exact(e.t)
        } else {
            TimeRef {
                t: e.t,
                precision: Precision::Received,
                daemon_ms: None,
            }
        };
        let a = self.app_mut(r);
        // A new process is added only when none with its pid is open, so the open one, if
        // any, is the latest with that pid.
        let idx = a
            .process_ix
            .get(&pid)
            .copied()
            .filter(|&i| a.processes[i].exit.is_none());
        let seen = match idx {
            Some(i) => Some(&mut a.processes[i]),
            None if a.processes.len() < MAX_PROCESSES => {
                a.process_ix.insert(pid, a.processes.len());
                a.processes.push(SeenProcess {
                    pid,
                    generation: f.generation,
                    first_seen: at,
                    exit: None,
                    exit_status: None,
                    cmd: None,
                    parent: f.parent,
                    held: Vec::new(),
                    in_tree_at_exit: None,
                    parent_at_exit: None,
                });
                a.processes.last_mut()
            }
            None => None,
        };
        if let Some(p) = seen {
            p.generation = p.generation.or(f.generation);
            if p.cmd.is_none() || (f.kind.as_deref() == Some("exec") && f.cmd.is_some()) {
                p.cmd = f.cmd.clone();
            }
            if p.parent.is_none() && !f.is_exit() {
                p.parent = f.parent;
            }
            if f.is_exit() {
                p.exit = Some(at);
                p.exit_status = f.exit_status.clone();
                p.held = f.held.clone();
                p.in_tree_at_exit = f.in_tree;
                p.parent_at_exit = f.parent;
            }
        }
        if f.is_exit() {
            if let Some(i) = a.newest_with_pid(pid, |g| g.os_exit.is_none()) {
                let g = &mut a.generations[i];
                g.os_exit = Some(at);
                g.os_exit_status = f.exit_status.clone();
            }
        }
    }

    fn snapshot(&mut self, t: MonoNs, snap: &Snapshot) {
        // The daemon's sockets other than its own are the addresses of its cluster-mode
        // apps: ascribed to the app when there is one such app (by name), else to none.
        let cluster_names: std::collections::BTreeSet<&str> = self
            .apps
            .values()
            .filter(|a| a.config.is_cluster())
            .filter_map(|a| a.name.as_deref())
            .collect();
        let cluster_names: Vec<String> = cluster_names.into_iter().map(str::to_owned).collect();
        let master: Vec<SnapSocket> = snap
            .sockets
            .iter()
            .filter(|h| h.daemon && !h.is_pm2_own())
            .take(super::procfacts::SNAP_SOCKETS)
            .map(|h| SnapSocket {
                proto: h.proto.name().to_owned(),
                addr: h.addr.clone(),
                port: h.port,
                pid: i64::from(h.pid),
                generation: None,
                in_tree: true,
                master: true,
            })
            .collect();
        for (pm_id, view) in snapshot_views(t, snap) {
            if !self.apps.contains_key(&pm_id) {
                // An app the capture has not named yet: known from its processes.
                let name = snap
                    .processes
                    .iter()
                    .filter_map(|p| p.app.as_ref())
                    .find(|a| a.pm_id == pm_id)
                    .map(|a| a.name.clone());
                self.app_mut(&AppRef {
                    pm_id,
                    name: name.map(Into::into),
                });
            }
            let Some(a) = self.apps.get_mut(&pm_id) else {
                continue;
            };
            if let SnapWhy::NewGeneration {
                pid: Some(pid),
                generation,
            } = view.why
            {
                a.learn_main_pid(pid, generation);
            }
            let mut view = view;
            if a.config.is_cluster() && cluster_names.len() == 1 {
                view.sockets.extend(master.iter().cloned());
            }
            if a.snapshots.len() >= MAX_SNAPSHOTS {
                a.snapshots.drain(..MAX_SNAPSHOTS / 2);
            }
            a.snapshots.push(view);
        }
    }

    fn gap(&mut self, t: MonoNs, what: String) {
        if self.gaps.len() < MAX_GAPS {
            self.gaps.push(Gap { t, what });
        }
    }

    fn asked(&mut self, e: &Entry, conn: u64, id: &str, ask: u64, call: &Pm2Call) {
        if let Pm2Call::NotifyByProcessId { .. } = call {
            // Mark the latest answered action of this connection for the same app.
            let target = call.target_id();
            if let Some(r) = self
                .requests
                .iter_mut()
                .rev()
                .take(16)
                .find(|r| r.conn == conn && r.pm_id == target)
            {
                r.notified.get_or_insert(e.t);
            }
            return;
        }
        if !call.is_action() && !matches!(call, Pm2Call::Prepare { .. }) {
            return;
        }
        let pm_id = call.target_id();
        let env_changes = match pm_id
            .and_then(|i| self.apps.get(&i))
            .and_then(|a| a.env.as_ref())
        {
            Some(env) => call
                .env_vars()
                .into_iter()
                .filter_map(|(k, v)| match env.get(k) {
                    None => Some(EnvChange {
                        key: k.to_owned(),
                        change: EnvChangeKind::Added,
                    }),
                    Some(h) if *h != v => Some(EnvChange {
                        key: k.to_owned(),
                        change: EnvChangeKind::Changed,
                    }),
                    Some(_) => None,
                })
                .collect(),
            None => Vec::new(),
        };
        if let Some(r) = &e.app {
            self.app_mut(r);
        }
        let names = match call {
            Pm2Call::Prepare { names } => names.clone(),
            _ => Vec::new(),
        };
        self.requests.push(Request {
            conn,
            id: id.to_owned(),
            ask,
            peer_pid: self.peers.get(&conn).copied(),
            method: call.method().to_owned(),
            pm_id,
            names,
            asked: e.t,
            answered: None,
            error: None,
            new_pid: None,
            env_changes,
            notified: None,
        });
        let idx = self.requests.len() - 1;
        if let (Pm2Call::ReloadProcessId { .. }, Some(a)) =
            (call, pm_id.and_then(|i| self.apps.get_mut(&i)))
        {
            // A cluster reload parks the running worker as `_old_<pm_id>` and starts its
            // replacement first (a fork-mode app is restarted instead, and says so).
            // The running worker: the newest generation that started before the request
            // (the new worker's `starting` line may be read before the request).
            let asked = e.t;
            if a.config.exec_mode.is_none() || a.config.is_cluster() {
                if let Some(g) = a.generations.iter_mut().rev().find(|g| {
                    g.exit.is_none()
                        && g.stop.is_none()
                        && g.parked_by.is_none()
                        && g.started().is_none_or(|s| s.t <= asked || g.before_capture)
                }) {
                    g.parked_by = Some(idx);
                }
            }
        }
    }

    /// The reload in progress at `t` whose replacement has not yet been reported ready:
    /// the app a `-reload- New worker listening` line (which names none) is about.
    fn reload_in_flight(&self, t: MonoNs) -> Option<u64> {
        self.requests
            .iter()
            .rev()
            .take(64)
            .filter(|r| r.method == "reloadProcessId" || r.method == "softReloadProcessId")
            .filter(|r| r.error.is_none() && r.in_progress_at(t))
            .find_map(|r| {
                let a = self.apps.get(&r.pm_id?)?;
                a.generations
                    .last()
                    .is_some_and(|g| g.listening.is_none())
                    .then_some(a.pm_id)
            })
    }

    /// The request numbered `ask` and asked at `at`, if it acted on an app (only those are
    /// kept). Requests stand in the order they were asked; their numbers need not grow in
    /// that order (the recorder numbers requests as their copies reach it), and a number is
    /// unique only within one numbering, so the instant finds the request.
    fn request_numbered(&self, ask: u64, at: MonoNs) -> Option<usize> {
        let from = self.requests.partition_point(|r| r.asked < at);
        self.requests[from..]
            .iter()
            .take_while(|r| r.asked == at)
            .position(|r| r.ask == ask)
            .map(|i| from + i)
    }

    fn answered(
        &mut self,
        e: &Entry,
        ask: Option<(u64, MonoNs)>,
        method: Option<&str>,
        outcome: &Outcome,
        new_pid: Option<i64>,
        procs: &[MonitorProc],
    ) {
        let req = ask.and_then(|(a, at)| self.request_numbered(a, at));
        if let Some(i) = req {
            let r = &mut self.requests[i];
            r.answered = Some(e.t);
            r.new_pid = new_pid;
            if let Outcome::Error { message } = outcome {
                r.error = Some(message.clone());
            }
            if r.pm_id.is_none() {
                r.pm_id = procs.first().and_then(|p| p.pm_id);
            }
        }
        if method == Some("getMonitorData") {
            for p in procs {
                self.learn_proc(e.t, p, "getMonitorData", None);
            }
        } else if let Some(p) = procs.first() {
            let via = method.unwrap_or("reply").to_owned();
            self.learn_proc(e.t, p, &via, req);
            if method == Some("deleteProcessId") && matches!(outcome, Outcome::Ok) {
                if let Some(a) = p.pm_id.and_then(|i| self.apps.get_mut(&i)) {
                    a.deleted.get_or_insert(TimeRef::exact(e.t));
                }
            }
        }
    }

    /// What the daemon says about one app (monitor data or a reply's process).
    fn learn_proc(&mut self, t: MonoNs, p: &MonitorProc, via: &str, req: Option<usize>) {
        let Some(pm_id) = p.pm_id else { return };
        let started = p.pm_uptime.map(|ms| self.daemon_time(ms));
        let a = self.app_mut(&AppRef {
            pm_id,
            name: p.name.as_deref().map(Into::into),
        });
        if p.exec_path.is_some() {
            a.exec_path = p.exec_path.clone();
        }
        if p.cwd.is_some() {
            a.cwd = p.cwd.clone();
        }
        if p.interpreter.is_some() {
            a.interpreter = p.interpreter.clone();
        }
        let c = &mut a.config;
        c.learn_restarts(&p.restarts);
        c.min_uptime = p.min_uptime.or(c.min_uptime);
        c.max_restarts = p.max_restarts.or(c.max_restarts);
        c.kill_timeout = p.kill_timeout.or(c.kill_timeout);
        c.treekill = p.treekill.or(c.treekill);
        c.exec_mode = p.exec_mode.clone().or(c.exec_mode.take());
        c.wait_ready = p.wait_ready.or(c.wait_ready);
        c.listen_timeout = p.listen_timeout.or(c.listen_timeout);
        if let Some(env) = &p.env {
            a.env = Some(env.clone());
        }
        let at = TimeRef::exact(t);
        if let Some(st) = &p.status {
            a.set_status(at, st, via);
        }
        let Some(pid) = p.pid.filter(|p| *p > 0) else {
            return;
        };
        // The generation this process belongs to: the one the request started, the
        // current one if it has no pid yet (also when it has ended since: a reply from
        // before its end whose copy reached the timeline late, on a busy host), or a new one
        // (its start was not seen).
        let idx = req
            .and_then(|r| {
                a.generations
                    .iter()
                    .rposition(|g| g.started_by == Some(r) && g.pid.is_none_or(|x| x == pid))
            })
            .or_else(|| a.newest_with_pid(pid, |_| true))
            .or_else(|| {
                a.generations
                    .last()
                    .filter(|g| {
                        g.pid.is_none()
                            && g.exit.as_ref().is_none_or(|x| x.at.t > t)
                            && !started_before(g, p, started)
                    })
                    .map(|_| a.generations.len() - 1)
            });
        // A process that started before the newest generation (a reply that arrived after a
        // cluster reload's new worker began, which runs beside it): the generation before it.
        // Also when the new worker's pid is already known (on a busy host the recorder's RPC
        // copies can reach the timeline after the kernel's exec and snapshot of that worker):
        // no generation has this pid, so the newest is another process's.
        let earlier = idx.is_none()
            && a.generations
                .last()
                .is_some_and(|g| started_before(g, p, started));
        let i = match idx {
            Some(i) => i,
            None if earlier => {
                let at = a.generations.len() - 1;
                let g = a.insert_generation(at);
                g.before_capture = at == 0;
                g.online = started.filter(|_| p.status.as_deref() == Some("online"));
                g.starting = started;
                at
            }
            None => {
                let first = a.generations.is_empty();
                let g = a.push_generation();
                g.before_capture = first;
                g.provisional = !first;
                g.online = started.filter(|_| p.status.as_deref() == Some("online"));
                g.starting = started;
                if !first {
                    g.started_by = req;
                }
                a.generations.len() - 1
            }
        };
        a.set_pid(i, pid);
        let g = &mut a.generations[i];
        if p.restart_time.is_some() {
            g.restart_time = p.restart_time;
        }
    }

    fn process_event(&mut self, e: &Entry, pe: &ProcessEvent) {
        let Some(r) = &e.app else { return };
        let at = TimeRef::received(e.t, pe.at);
        let a = self.app_mut(r);
        a.config.learn_restarts(&pe.restarts);
        if pe.exec_path.is_some() {
            a.exec_path = pe.exec_path.clone();
        }
        if pe.cwd.is_some() {
            a.cwd = pe.cwd.clone();
        }
        let via = format!("bus {}", pe.event.as_str());
        if pe.old {
            // The outgoing worker of a reload: its end, not the app's status (the app's
            // status is the new worker's).
            if pe.event == ProcessEventKind::Exit {
                let min_uptime = a.config.min_uptime_ms();
                if let Some(i) = a.parked_index() {
                    bus_exit(&mut a.generations[i], at, pe, min_uptime);
                }
            }
            return;
        }
        match &pe.event {
            ProcessEventKind::Online => {
                a.set_status(at, "online", &via);
                // The bus event and the daemon log line both say online: one generation.
                a.online_generation();
                let g = a.current();
                g.online.get_or_insert(at);
                if pe.restart_time.is_some() {
                    g.restart_time = pe.restart_time;
                }
                let last = a.generations.len() - 1;
                a.claim_pending(last);
            }
            ProcessEventKind::Exit => {
                if let Some(st) = &pe.status {
                    a.set_status(at, st, &via);
                }
                let min_uptime = a.config.min_uptime_ms();
                let g = a.confirmed();
                bus_exit(g, at, pe, min_uptime);
                // The daemon resets the counter to 0 once errored, before this event.
                if let Some(u) = pe.unstable_restarts {
                    g.unstable_restarts = Some(g.unstable_restarts.map_or(u, |x| x.max(u)));
                }
                if !pe.tree_pids.is_empty() && g.stop.is_some() {
                    g.tree_pids = pe.tree_pids.iter().copied().take(1024).collect();
                }
            }
            ProcessEventKind::RestartOverlimit => {
                a.set_status(at, "errored", &via);
                if let Some(u) = pe.unstable_restarts {
                    a.confirmed().unstable_restarts = Some(u);
                }
            }
            ProcessEventKind::Stop => {
                a.set_status(at, pe.status.as_deref().unwrap_or("stopped"), &via)
            }
            ProcessEventKind::Delete => {
                a.deleted.get_or_insert(at);
            }
            _ => {
                if let Some(st) = &pe.status {
                    a.set_status(at, st, &via);
                }
            }
        }
    }

    /// An app's `process.send('ready')`: the newest generation of that instance said so.
    fn ready_message(&mut self, e: &Entry, at_ms: Option<i64>) {
        let Some(r) = &e.app else { return };
        let a = self.app_mut(r);
        if let Some(g) = a.generations.last_mut() {
            g.ready_msg.get_or_insert(TimeRef::received(e.t, at_ms));
        }
    }

    /// A daemon line about the outgoing worker `_old_<pm_id>` of a cluster reload.
    fn old_worker_line(&mut self, r: &AppRef, at: TimeRef, line: &DaemonLogLine) {
        let t = at.t;
        let by = self.in_flight(r.pm_id, r.name.as_deref(), t);
        let a = self.app_mut(r);
        let min_uptime = a.config.min_uptime_ms();
        // Without a reload seen (it began before the capture): the newest generation before
        // the newest one that is still running.
        let n = a.generations.len();
        let Some(i) = a.parked_index().or_else(|| {
            a.generations[..n.saturating_sub(1)]
                .iter()
                .rposition(|g| g.exit.is_none())
        }) else {
            return;
        };
        let g = &mut a.generations[i];
        match line {
            DaemonLogLine::Stopping { .. } => {
                g.stop.get_or_insert(Stop::begun(at, by.or(g.parked_by)));
            }
            DaemonLogLine::Exited { code, signal, .. } => {
                daemon_exit(g, at, *code, signal, min_uptime)
            }
            _ => {}
        }
    }

    fn daemon_line(&mut self, e: &Entry, at_ms: Option<i64>, line: &DaemonLogLine) {
        let at = TimeRef::received(e.t, at_ms);
        if let DaemonLogLine::ReloadReady { .. } = line {
            // The line names no app: the reload in progress whose new worker is not yet ready.
            if let Some(a) = self
                .reload_in_flight(e.t)
                .and_then(|i| self.apps.get_mut(&i))
            {
                if let Some(g) = a.generations.last_mut() {
                    g.listening.get_or_insert(at);
                }
            }
            return;
        }
        let Some(r) = &e.app else { return };
        if line.is_old_worker() {
            return self.old_worker_line(r, at, line);
        }
        let t = e.t;
        let in_flight = self.in_flight(r.pm_id, r.name.as_deref(), t);
        let a = self.app_mut(r);
        match line {
            DaemonLogLine::ReloadBecameRestart { .. } => {
                // No worker was parked: the reload is a restart.
                if let Some(g) = a.generations.last_mut() {
                    g.parked_by = None;
                }
            }
            DaemonLogLine::Disconnected { .. }
            | DaemonLogLine::ReloadReady { .. }
            | DaemonLogLine::SoftReloadOldGone => {}
            DaemonLogLine::Starting { mode, .. } => {
                // `-cluster mode-` / `-fork mode-`: pm2's exec_mode, `cluster_mode`.
                if a.config.exec_mode.is_none() && !mode.is_empty() && mode.len() < 32 {
                    a.config.exec_mode = Some(format!("{mode}_mode"));
                }
                let early = a
                    .generations
                    .last()
                    .is_some_and(|g| g.provisional && g.exit.is_none() && g.stop.is_none());
                let g = if early {
                    a.current()
                } else {
                    a.push_generation()
                };
                g.provisional = false;
                g.starting = Some(at);
                if g.started_by.is_none() {
                    g.started_by = in_flight;
                }
            }
            DaemonLogLine::Online { .. } => {
                if a.online_reports.len() >= MAX_STATUSES {
                    a.online_reports.drain(..MAX_STATUSES / 2);
                }
                a.online_reports.push(at);
                a.set_status(at, "online", "daemon log");
                a.online_generation();
                a.current().online.get_or_insert(at);
            }
            DaemonLogLine::Stopping { .. } => {
                a.set_status(at, "stopping", "daemon log");
                let g = a.confirmed();
                g.stop.get_or_insert(Stop::begun(at, in_flight));
            }
            DaemonLogLine::Exited { code, signal, .. } => {
                let min_uptime = a.config.min_uptime_ms();
                let g = a.confirmed();
                daemon_exit(g, at, *code, signal, min_uptime);
            }
            DaemonLogLine::KillRetry { pid, .. } => {
                if let Some(s) = stop_of(a, *pid) {
                    s.kill_retries += 1;
                }
            }
            DaemonLogLine::SigkillAfterTimeout { pid, ms, remaining } => {
                if let Some(s) = stop_of(a, *pid) {
                    s.sigkill = Some(at);
                    s.sigkill_after_ms = Some(*ms);
                    s.sigkill_remaining = *remaining;
                }
            }
            DaemonLogLine::TreeKilled { pid, pids } => {
                if let Some(s) = stop_of(a, *pid) {
                    s.confirmed = Some(at);
                    s.tree_pids = Some(*pids);
                }
            }
            DaemonLogLine::ProcessKilled { pid } => {
                if let Some(s) = stop_of(a, *pid) {
                    s.confirmed = Some(at);
                }
            }
            DaemonLogLine::CouldNotBeKilled { pid } => {
                if let Some(s) = stop_of(a, *pid) {
                    s.gave_up.get_or_insert(at);
                }
            }
            DaemonLogLine::CouldNotBeStopped { pid, .. } => {
                a.set_status(at, "errored", "daemon log: could not be stopped");
                let s = match pid {
                    Some(p) => stop_of(a, *p),
                    None => a
                        .stopping_index()
                        .and_then(|i| a.generations[i].stop.as_mut()),
                };
                if let Some(s) = s {
                    s.gave_up.get_or_insert(at);
                }
            }
            DaemonLogLine::TooManyUnstableRestarts { count, .. } => {
                a.set_status(at, "errored", "daemon log: too many unstable restarts");
                if let Some(g) = a.generations.last_mut() {
                    g.unstable_restarts = Some(*count);
                }
            }
            DaemonLogLine::StaleExitIgnored { pid, .. } => {
                if let Some(g) = pid.and_then(|p| a.by_pid(p)) {
                    g.stale_exit = Some(at);
                }
            }
            DaemonLogLine::SpawnFailed { program, code } => {
                if let Some(g) = a.generations.last_mut() {
                    g.spawn_failed
                        .get_or_insert((at, format!("spawn {program} {code}")));
                }
            }
            DaemonLogLine::WillRestart { ms, .. } => {
                if let Some(g) = a.generations.last_mut() {
                    g.restart_in_ms = Some(*ms);
                }
            }
            DaemonLogLine::MemoryRestart { .. } => a.auto_restart(at, AutoRestartCause::Memory),
            DaemonLogLine::WatchRestart { path, .. } => a.auto_restart(
                at,
                AutoRestartCause::Watch {
                    path: path.chars().take(200).collect(),
                },
            ),
            DaemonLogLine::Other { .. } => {}
        }
    }
}

impl AppTimeline {
    fn auto_restart(&mut self, at: TimeRef, cause: AutoRestartCause) {
        if self.auto_restarts.len() >= MAX_STATUSES {
            self.auto_restarts.drain(..MAX_STATUSES / 2);
        }
        self.auto_restarts.push(AutoRestart { at, cause });
    }
}

/// Whether the process the daemon describes (`p`, started at `started`) is older than
/// generation `g`: an earlier restart_time, or a start more than a second before `g`'s.
fn started_before(g: &Generation, p: &MonitorProc, started: Option<TimeRef>) -> bool {
    if let (Some(a), Some(b)) = (p.restart_time, g.restart_time) {
        return a < b;
    }
    match (started, g.starting) {
        (Some(a), Some(b)) => a.t + 1_000_000_000 < b.t,
        _ => false,
    }
}

/// The stop in progress that a kill line about `pid` belongs to; learns the pid.
///
/// A stop in progress is one of the app's latest generations: only the last
/// [`STOP_SEARCH`] are looked at, so that a log of thousands of restarts is not read
/// quadratically (the whole list was searched for every kill line, 65% of `explain`'s time
/// over a long pm2.log).
fn stop_of(a: &mut AppTimeline, pid: i64) -> Option<&mut Stop> {
    let from = a.generations.len().saturating_sub(STOP_SEARCH);
    let recent = &a.generations[from..];
    let idx = recent
        .iter()
        .rposition(|g| g.has_pid(pid) && g.stop.is_some())
        .or_else(|| {
            recent
                .iter()
                .rposition(|g| g.pid.is_none() && g.stop.is_some())
        })
        .map(|i| from + i)
        .or_else(|| a.stopping_index())?;
    if a.generations[idx].pid.is_none() {
        a.set_pid(idx, pid);
    }
    a.generations[idx].stop.as_mut()
}

/// The end of `g` as a bus `exit` event reports it (the first report wins).
fn bus_exit(g: &mut Generation, at: TimeRef, pe: &ProcessEvent, min_uptime_ms: u64) {
    if g.exit.is_none() {
        g.exit = Some(Exit {
            at,
            code: pe.exit_code,
            signal: pe.signal.clone(),
            source: ExitSource::Bus,
        });
        set_early(g, min_uptime_ms);
    }
}

/// The end of `g` as the daemon's `exited with code` line reports it; completes a bus report.
fn daemon_exit(g: &mut Generation, at: TimeRef, code: i64, signal: &str, min_uptime_ms: u64) {
    match &mut g.exit {
        Some(x) => {
            x.signal.get_or_insert_with(|| signal.to_owned());
            x.code.get_or_insert(code);
        }
        None => {
            g.exit = Some(Exit {
                at,
                code: Some(code),
                signal: Some(signal.to_owned()),
                source: ExitSource::DaemonLog,
            });
            set_early(g, min_uptime_ms);
        }
    }
}

fn set_early(g: &mut Generation, min_uptime_ms: u64) {
    if let Some(up) = g.uptime_ns() {
        g.early_exit = Some(up < min_uptime_ms * 1_000_000);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the pid index answers, held to the scans it replaced, for every pid of `pids`.
    fn agrees_with_scans(a: &AppTimeline, pids: std::ops::Range<i64>) {
        for pid in pids {
            assert_eq!(
                a.newest_with_pid(pid, |_| true),
                a.generations.iter().rposition(|g| g.pid == Some(pid)),
                "pid {pid}"
            );
            assert_eq!(
                a.newest_with_pid(pid, |g| g.os_exit.is_none()),
                a.generations
                    .iter()
                    .rposition(|g| g.pid == Some(pid) && g.os_exit.is_none()),
                "pid {pid}, not exited"
            );
        }
    }

    proptest! {
        /// Generations pushed and inserted, pids given (and reused), exits: the index finds
        /// what scanning the generations finds.
        #[test]
        fn pid_index_finds_what_a_scan_finds(ops in proptest::collection::vec((0u8..4, any::<usize>(), 0i64..6), 0..60)) {
            let mut a = AppTimeline::new(0);
            for (op, at, pid) in ops {
                let n = a.generations.len();
                match op {
                    0 => {
                        a.push_generation();
                    }
                    1 if n > 0 => {
                        a.insert_generation(at % n);
                    }
                    2 if n > 0 => a.set_pid(at % n, pid),
                    3 if n > 0 => a.generations[at % n].os_exit = Some(TimeRef::exact(1)),
                    _ => {}
                }
                agrees_with_scans(&a, 0..6);
            }
        }
    }

    /// Past MAX_GENERATIONS the oldest half is forgotten: so are their pids.
    #[test]
    fn pid_index_forgets_evicted_generations() {
        let mut a = AppTimeline::new(0);
        for i in 0..MAX_GENERATIONS + 10 {
            a.push_generation();
            let last = a.generations.len() - 1;
            // Pid 1000 only in the oldest generations, the rest reused.
            a.set_pid(last, if i < 100 { 1000 } else { (i % 7) as i64 });
            if i % 3 == 0 {
                a.generations[last].os_exit = Some(TimeRef::exact(1));
            }
        }
        assert!(a.generations_dropped > 0);
        agrees_with_scans(&a, 0..7);
        agrees_with_scans(&a, 1000..1001);
        assert!(!a.pid_ix.contains_key(&1000));
        a.insert_generation(3);
        a.set_pid(3, 1000);
        agrees_with_scans(&a, 0..7);
        agrees_with_scans(&a, 1000..1001);
    }
}
