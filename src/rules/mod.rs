//! Rules turn orderings in the timeline into findings: why a restart ended `errored` (or
//! went wrong another way), with the evidence and a remedy.
//!
//! One file per rule; each reads the [`Timeline`] (apps → generations, requests, the process
//! watcher's processes and snapshots) and says what it finds in words an on-call engineer
//! can act on: the app, the pids, the ports, the times (as `+s.mmm` from the start of the
//! capture, as in the timeline view, and durations in ms), the environment keys (never
//! their values).
//!
//! | kind | severity | rests on |
//! | --- | --- | --- |
//! | `start-path-missing` | error | the daemon's `Error: spawn node ENOENT` after `starting` (or a generation dying within min_uptime), the watcher's start-path facts of the replaced generation: working directory marked deleted, script or interpreter gone, `PWD` and the symlinks on it |
//! | `address-held-by-previous-generation` | error (warning if the app recovered) | EADDRINUSE in the new generation's stderr, a snapshot showing an older generation's process holding the address, that process's exit |
//! | `address-held-by-other-process` | error (warning if the app recovered) | the address the failing generation needed (named in its stderr; a unix path the app held before, whatever the text), a snapshot showing it held by another app of the daemon or, from the host-wide scan, by another PM2 daemon's app (its `PM2_HOME`), a service or container (cgroup) or any other process (command line) |
//! | `restart-env-changed` | error / warning / info | the restart's `env` keys whose value hashes differ from the app's, the next generation's exit |
//! | `reload-without-ready` | error when no healthy worker was left, else warning | a cluster reload's `_old_<id>` stop before its replacement listened (`-reload- New worker listening`) or sent `ready`; the replacement's exits; the app's healthy-worker count over time |
//! | `crash-loop-errored` | error | the daemon's `too many unstable restarts`, the early exits before it, min_uptime/max_restarts, the first failure's exit and stderr |
//! | `stop-timeout-errored` | error | `could not be killed` / `could not be stopped`, the SIGKILL line, the kernel's exit of the process pm2 still saw |
//! | `overlapping-restart` | warning | two action requests for one app in flight at once, their replies, the generations started |
//! | `restart-loop` | warning | three or more starts by the daemon itself (no request in progress) without errored: the exits before them and min_uptime × max_restarts, restart_delay / `will restart in N ms`, `exceeds --max-memory-restart`, `Change detected on path` |
//! | `descendant-outlived-stop` | warning | processes of a stopped generation alive when pm2 started the next one (or said stopped) |
//! | `graceful-shutdown-killed` | warning | `Stopping app`, the SIGKILL after kill_timeout, the kernel's SIGKILL exit status |
//! | `early-exit-after-restart` | warning | the first generation after a restart dying within min_uptime, no more specific cause |
//! | `ready-timeout` | warning (error when the generation was already dead) | wait_ready, a generation's start, no `ready` message, the daemon's `online` line listen_timeout later, the generation's exit |
//!
//! Findings come most severe first; a clean restart yields none of warning or error.

mod address_held;
mod address_other;
mod crash_loop;
mod ctx;
mod descendant;
mod early_exit;
mod env_changed;
mod graceful_kill;
mod overlapping;
mod ready_timeout;
mod reload_without_ready;
mod restart_loop;
mod start_path;
mod stop_timeout;

use crate::event::{MonoNs, Source};
use crate::timeline::Timeline;
use serde::{Deserialize, Serialize};

/// How bad a finding is. Ordered: `Info < Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One event a finding rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Evidence {
    /// When it was observed (CLOCK_MONOTONIC ns, as the timeline's entries).
    pub(crate) t: MonoNs,
    pub(crate) source: Source,
    /// The event in words.
    pub(crate) what: String,
}

/// What a rule concluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable name, e.g. `crash-loop-errored`.
    pub kind: String,
    pub(crate) severity: Severity,
    pub(crate) app: Option<String>,
    pub(crate) pm_id: Option<u64>,
    /// One sentence a person can act on.
    pub summary: String,
    /// The causal chain, step by step, in plain words.
    pub(crate) chain: Vec<String>,
    pub(crate) evidence: Vec<Evidence>,
    pub(crate) remedy: String,
}

/// Every kind the rules can report, in the order they are listed within one severity
/// (causes before consequences).
#[cfg(test)]
pub(crate) const KINDS: &[&str] = &[
    start_path::KIND,
    address_held::KIND,
    address_other::KIND,
    env_changed::KIND,
    reload_without_ready::KIND,
    crash_loop::KIND,
    stop_timeout::KIND,
    overlapping::KIND,
    restart_loop::KIND,
    descendant::KIND,
    graceful_kill::KIND,
    early_exit::KIND,
    ready_timeout::KIND,
];

/// The place of reload-without-ready (about all instances of an app, not one) among the
/// per-app rules in [`analyze`], and in [`KINDS`].
const RELOAD_RANK: usize = 4;

/// Most findings one rule reports per app (a capture of days could repeat a pattern).
const MAX_PER_RULE: usize = 20;

/// The findings for a timeline, most severe first; within one severity, causes before
/// consequences, then by time.
pub fn analyze(tl: &Timeline) -> Vec<Finding> {
    let mut out: Vec<(usize, MonoNs, Finding)> = Vec::new();
    for a in tl.apps.values() {
        let c = ctx::AppCtx::new(tl, a);
        let holders = address_held::find(&c);
        let mut per_rule: Vec<Vec<(MonoNs, Finding)>> = vec![
            start_path::findings(&c),
            address_held::findings(&c, &holders),
            address_other::findings(&c),
            env_changed::findings(&c),
            Vec::new(), // reload-without-ready: about every instance of an app, below
            crash_loop::findings(&c, &holders),
            stop_timeout::findings(&c),
            overlapping::findings(&c),
            restart_loop::findings(&c),
            descendant::findings(&c),
            graceful_kill::findings(&c),
            early_exit::findings(&c, &holders),
            ready_timeout::findings(&c),
        ];
        for (rank, list) in per_rule.iter_mut().enumerate() {
            for (t, f) in list.drain(..).take(MAX_PER_RULE) {
                out.push((rank, t, f));
            }
        }
    }
    for (t, f) in reload_without_ready::findings(tl)
        .into_iter()
        .take(MAX_PER_RULE)
    {
        out.push((RELOAD_RANK, t, f));
    }
    out.sort_by(|x, y| {
        y.2.severity
            .cmp(&x.2.severity)
            .then(x.0.cmp(&y.0))
            .then(x.1.cmp(&y.1))
    });
    out.into_iter().map(|(_, _, f)| f).collect()
}

#[cfg(test)]
mod tests;
