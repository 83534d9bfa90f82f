//! The PM2 daemon's own log lines (`pm2.log`, and the `log:PM2` bus event) as typed events.
//!
//! The format strings come from pm2's source (5.4.3 and 7.0.4), `lib/God.js`,
//! `lib/God/ActionMethods.js`, `lib/God/Methods.js`, `lib/God/ForkMode.js` and
//! `lib/God/ClusterMode.js`:
//!
//! ```text
//! Stopping app:%s id:%s
//! pid=%d msg=failed to kill - retrying in %dms
//! pid=%d msg=process tree killed (%d pids)                                        7.x
//! pid=%d msg=process killed                                                       5.x
//! Process with pid %d still alive after %sms, sending SIGKILL to %d remaining pids...   7.x
//! Process with pid %d still alive after %sms, sending it SIGKILL now...                 5.x
//! Process with pid %d could not be killed
//! App [name:id] exited with code [code] via signal [signal]     (signal defaults to SIGINT)
//! App [name:id] starting in -fork mode-        (or -cluster mode-)
//! App [name:id] online
//! App [name:id] stale exit event ignored (pid %s)                                 7.x
//! Script %s had too many unstable restarts (%d). Stopped. "errored"
//! app=%s id=%d pid=%s could not be stopped
//! App name:%s id:%s disconnected                                  (cluster mode)
//! -reload- New worker listening                                   (reloadProcessId)
//! -softReload- New worker listening                               (softReloadProcessId)
//! -softReload- Old worker disconnected
//! Process %s in a stopped status, starting it                     (reload of a non-online app)
//! ```
//!
//! During a cluster reload the outgoing worker is parked under the id `_old_<pm_id>`
//! (lib/God/Reload.js): `Stopping app:web id:_old_0`, `App [web:_old_0] exited ...`. Those
//! lines carry the instance's pm_id with `old: true`.
//!
//! In `pm2.log` each line carries a prefix `<date>: PM2 <level>: ` (date format
//! `PM2_LOG_DATE_FORMAT`, default `YYYY-MM-DDTHH:mm:ss`); `log:PM2` bus payloads do not.
//! [`parse`] accepts both. It never panics: anything it does not recognise is
//! [`DaemonLogLine::Other`].

use serde::{Deserialize, Serialize};

/// One line of the daemon's log, with its meaning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "line", rename_all = "snake_case")]
pub enum DaemonLogLine {
    /// `Stopping app:web id:0`: a stop began; pm2 sends the kill signal (SIGINT by default)
    /// to the process (tree) right after. `old`: the id was `_old_<id>`, the outgoing worker
    /// of a cluster reload.
    Stopping {
        app: String,
        id: u64,
        #[serde(default, skip_serializing_if = "is_false")]
        old: bool,
    },
    /// `pid=3456 msg=failed to kill - retrying in 100ms`: still alive at a poll.
    KillRetry { pid: i64, ms: u64 },
    /// `pid=3456 msg=process tree killed (1 pids)` (7.x): every pid of the tree is gone.
    TreeKilled { pid: i64, pids: u64 },
    /// `pid=3456 msg=process killed` (5.x): the main pid is gone (descendants not checked).
    ProcessKilled { pid: i64 },
    /// `Process with pid 5308 still alive after 1600ms, sending SIGKILL ...`: the stop timed
    /// out. `remaining` is the number of tree pids still alive (7.x only).
    SigkillAfterTimeout {
        pid: i64,
        ms: u64,
        remaining: Option<u64>,
    },
    /// `Process with pid %d could not be killed`: even SIGKILL did not end it in time.
    CouldNotBeKilled { pid: i64 },
    /// `App [web:0] exited with code [1] via signal [SIGINT]`. The daemon prints SIGINT when
    /// there was no signal, so `signal` is what pm2 says, not necessarily what happened.
    Exited {
        app: String,
        id: u64,
        code: i64,
        signal: String,
        #[serde(default, skip_serializing_if = "is_false")]
        old: bool,
    },
    /// `App name:web id:0 disconnected` (cluster mode): the worker's IPC channel closed, which
    /// happens when it exits or is stopped.
    Disconnected {
        app: String,
        id: u64,
        #[serde(default, skip_serializing_if = "is_false")]
        old: bool,
    },
    /// `-reload- New worker listening` (reloadProcessId) or `-softReload- New worker
    /// listening` (softReloadProcessId, `soft`): the replacement of a reload became ready
    /// (listening, or `ready` under wait_ready) before listen_timeout. The line names no app.
    ReloadReady { soft: bool },
    /// `-softReload- Old worker disconnected`: the outgoing worker of a graceful reload left.
    SoftReloadOldGone,
    /// `Process 0 in a stopped status, starting it`: a reload of an app that was not online
    /// (or not in cluster mode) became a restart.
    ReloadBecameRestart { id: u64 },
    /// `App [web:0] starting in -fork mode-`: a new generation is being spawned.
    Starting { app: String, id: u64, mode: String },
    /// `App [web:0] online`.
    Online { app: String, id: u64 },
    /// `App [web:0] stale exit event ignored (pid 123)` (7.x): an exit of an earlier
    /// generation arrived after its slot was taken over.
    StaleExitIgnored {
        app: String,
        id: u64,
        pid: Option<i64>,
    },
    /// `Script /srv/app.js had too many unstable restarts (16). Stopped. "errored"`.
    TooManyUnstableRestarts { script: String, count: u64 },
    /// `app=web id=0 pid=123 could not be stopped`: the daemon marks the app errored.
    CouldNotBeStopped {
        app: String,
        id: u64,
        pid: Option<i64>,
    },
    /// `Error: spawn node ENOENT` (pm2 5.2.2+ logs the spawn's error and goes on): the
    /// program could not be started (`ENOENT` also when the working directory is missing:
    /// Node names the program either way). The line names no app.
    SpawnFailed { program: String, code: String },
    /// `App [web:0] will restart in 150ms` (exp_backoff_restart_delay only).
    WillRestart { app: String, id: u64, ms: u64 },
    /// `[PM2][WORKER] Process 0 restarted because it exceeds --max-memory-restart value
    /// (current_memory=... max_memory_limit=... [octets])`: the number is the pm_id.
    MemoryRestart { id: u64 },
    /// `Change detected on path src/x.js for app web - restarting` (watch mode).
    WatchRestart { path: String, app: String },
    /// Anything else, kept as it was (without the pm2.log prefix).
    Other { text: String },
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The `pm2.log` prefix of a line: `2026-11-25T15:34:44: PM2 log: `.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogPrefix {
    /// The date as the daemon printed it (format `PM2_LOG_DATE_FORMAT`).
    pub(crate) stamp: String,
    /// `log`, `error`, `warn` or `info`.
    pub(crate) level: String,
}

/// Longest date prefix accepted before `: PM2 <level>: `.
const MAX_STAMP: usize = 64;

/// The levels of a `pm2.log` prefix, in the order they are looked for, with their markers.
const LEVELS: [(&str, &str); 4] = [
    ("log", ": PM2 log: "),
    ("error", ": PM2 error: "),
    ("warn", ": PM2 warn: "),
    ("info", ": PM2 info: "),
];

/// Split a `pm2.log` line into its prefix (if it has one) and its message: the first level
/// (in [`LEVELS`]' order) whose marker's first place in the line ends a stamp of at most
/// [`MAX_STAMP`] bytes on one line.
pub(crate) fn split_prefix(line: &str) -> (Option<LogPrefix>, &str) {
    // A marker's first place, when it is at most MAX_STAMP bytes in, is inside these bytes;
    // when it is further, the line has no prefix of that level either way. Most lines the
    // bus carries have none: told without looking for each level.
    let head = &line.as_bytes()[..line.len().min(MAX_STAMP + ": PM2 error: ".len())];
    if !head.windows(6).any(|w| w == b": PM2 ") {
        return (None, line);
    }
    for (level, marker) in LEVELS {
        let Some(pos) = head
            .windows(marker.len())
            .position(|w| w == marker.as_bytes())
        else {
            continue;
        };
        if pos > 0 && pos <= MAX_STAMP && !line[..pos].contains(['\n', '\r']) {
            let stamp = line[..pos].to_owned();
            let rest = &line[pos + marker.len()..];
            return (
                Some(LogPrefix {
                    stamp,
                    level: level.to_owned(),
                }),
                rest,
            );
        }
    }
    (None, line)
}

/// Parse one daemon log line, with or without its `pm2.log` prefix.
pub(crate) fn parse(line: &str) -> DaemonLogLine {
    let (_, msg) = split_prefix(line);
    parse_message(msg)
}

/// Parse one daemon log message (no prefix; a trailing newline is ignored).
pub(crate) fn parse_message(msg: &str) -> DaemonLogLine {
    let msg = msg.trim_end_matches(['\n', '\r']);
    let other = || DaemonLogLine::Other {
        text: msg.to_owned(),
    };
    if let Some(rest) = msg.strip_prefix("Stopping app:") {
        return stopping(rest).unwrap_or_else(other);
    }
    if let Some(rest) = msg.strip_prefix("pid=") {
        return pid_msg(rest).unwrap_or_else(other);
    }
    if let Some(rest) = msg.strip_prefix("Process with pid ") {
        return process_with_pid(rest).unwrap_or_else(other);
    }
    if let Some(rest) = msg.strip_prefix("App [") {
        return app_line(rest).unwrap_or_else(other);
    }
    if let Some(rest) = msg.strip_prefix("Script ") {
        return too_many(rest).unwrap_or_else(other);
    }
    if let Some(rest) = msg.strip_prefix("app=") {
        return could_not_be_stopped(rest).unwrap_or_else(other);
    }
    if let Some(rest) = msg.strip_prefix("Error: spawn ") {
        if let Some((program, code)) = rest.rsplit_once(' ') {
            if !program.is_empty() && code.starts_with('E') && code.len() < 16 {
                return DaemonLogLine::SpawnFailed {
                    program: program.to_owned(),
                    code: code.to_owned(),
                };
            }
        }
        return other();
    }
    if let Some(rest) = msg.strip_prefix("[PM2][WORKER] Process ") {
        if let Some((id, tail)) = rest.split_once(' ') {
            if tail.starts_with("restarted because it exceeds --max-memory-restart") {
                if let Some(id) = num(id) {
                    return DaemonLogLine::MemoryRestart { id };
                }
            }
        }
        return other();
    }
    if let Some(rest) = msg.strip_prefix("Change detected on path ") {
        if let Some((path, tail)) = rest.rsplit_once(" for app ") {
            if let Some(app) = tail.strip_suffix(" - restarting") {
                return DaemonLogLine::WatchRestart {
                    path: path.to_owned(),
                    app: app.to_owned(),
                };
            }
        }
        return other();
    }
    if let Some(rest) = msg.strip_prefix("App name:") {
        return disconnected(rest).unwrap_or_else(other);
    }
    match msg {
        "-reload- New worker listening" => return DaemonLogLine::ReloadReady { soft: false },
        "-softReload- New worker listening" => return DaemonLogLine::ReloadReady { soft: true },
        "-softReload- Old worker disconnected" => return DaemonLogLine::SoftReloadOldGone,
        _ => {}
    }
    if let Some(rest) = msg.strip_prefix("Process ") {
        if let Some(id) = rest.strip_suffix(" in a stopped status, starting it") {
            if let Some(id) = num(id) {
                return DaemonLogLine::ReloadBecameRestart { id };
            }
        }
    }
    other()
}

fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
    let s = s.trim();
    if s.is_empty() || s.len() > 24 {
        return None;
    }
    s.parse().ok()
}

/// A pm_id as the daemon prints it: `0`, or `_old_0` for the outgoing worker of a reload.
fn pm_id(s: &str) -> Option<(u64, bool)> {
    match s.strip_prefix("_old_") {
        Some(n) => Some((num(n)?, true)),
        None => Some((num(s)?, false)),
    }
}

/// `web id:0`, `web id:_old_0`
fn stopping(rest: &str) -> Option<DaemonLogLine> {
    let (app, id) = rest.rsplit_once(" id:")?;
    let (id, old) = pm_id(id)?;
    Some(DaemonLogLine::Stopping {
        app: app.to_owned(),
        id,
        old,
    })
}

/// `web id:0 disconnected`
fn disconnected(rest: &str) -> Option<DaemonLogLine> {
    let head = rest.strip_suffix(" disconnected")?;
    let (app, id) = head.rsplit_once(" id:")?;
    let (id, old) = pm_id(id)?;
    Some(DaemonLogLine::Disconnected {
        app: app.to_owned(),
        id,
        old,
    })
}

/// `3456 msg=...`
fn pid_msg(rest: &str) -> Option<DaemonLogLine> {
    let (pid, m) = rest.split_once(" msg=")?;
    let pid: i64 = num(pid)?;
    if let Some(ms) = m.strip_prefix("failed to kill - retrying in ") {
        return Some(DaemonLogLine::KillRetry {
            pid,
            ms: num(ms.strip_suffix("ms")?)?,
        });
    }
    if let Some(n) = m.strip_prefix("process tree killed (") {
        return Some(DaemonLogLine::TreeKilled {
            pid,
            pids: num(n.strip_suffix(" pids)")?)?,
        });
    }
    if m == "process killed" {
        return Some(DaemonLogLine::ProcessKilled { pid });
    }
    None
}

/// `5308 still alive after 1600ms, sending ...` or `5308 could not be killed`
fn process_with_pid(rest: &str) -> Option<DaemonLogLine> {
    if let Some(pid) = rest.strip_suffix(" could not be killed") {
        return Some(DaemonLogLine::CouldNotBeKilled { pid: num(pid)? });
    }
    let (pid, after) = rest.split_once(" still alive after ")?;
    let pid: i64 = num(pid)?;
    let (ms, tail) = after.split_once("ms, sending ")?;
    let ms: u64 = num(ms)?;
    if tail == "it SIGKILL now..." {
        return Some(DaemonLogLine::SigkillAfterTimeout {
            pid,
            ms,
            remaining: None,
        });
    }
    let n = tail
        .strip_prefix("SIGKILL to ")?
        .strip_suffix(" remaining pids...")?;
    Some(DaemonLogLine::SigkillAfterTimeout {
        pid,
        ms,
        remaining: Some(num(n)?),
    })
}

/// `web:0] exited with code [1] via signal [SIGINT]`, `web:0] online`, ...
fn app_line(rest: &str) -> Option<DaemonLogLine> {
    // The name may itself contain `]` or `:`; the suffixes are fixed, so match them first.
    if let Some(head) = rest.strip_suffix("] online") {
        let (app, id) = name_id(head)?;
        return Some(DaemonLogLine::Online { app, id });
    }
    if let Some(pos) = rest.rfind("] starting in -") {
        let (app, id) = name_id(&rest[..pos])?;
        let mode = rest[pos + "] starting in -".len()..].strip_suffix(" mode-")?;
        return Some(DaemonLogLine::Starting {
            app,
            id,
            mode: mode.to_owned(),
        });
    }
    if let Some(pos) = rest.rfind("] exited with code [") {
        let (app, id) = rest[..pos].rsplit_once(':')?;
        let (id, old) = pm_id(id)?;
        let tail = &rest[pos + "] exited with code [".len()..];
        let (code, sig) = tail.split_once("] via signal [")?;
        let signal = sig.strip_suffix(']')?;
        return Some(DaemonLogLine::Exited {
            app: app.to_owned(),
            id,
            code: num(code)?,
            signal: signal.to_owned(),
            old,
        });
    }
    if let Some(pos) = rest.rfind("] will restart in ") {
        let (app, id) = name_id(&rest[..pos])?;
        let ms = rest[pos + "] will restart in ".len()..].strip_suffix("ms")?;
        return Some(DaemonLogLine::WillRestart {
            app,
            id,
            ms: num(ms)?,
        });
    }
    if let Some(pos) = rest.rfind("] stale exit event ignored (pid ") {
        let (app, id) = name_id(&rest[..pos])?;
        let pid = rest[pos + "] stale exit event ignored (pid ".len()..].strip_suffix(')')?;
        return Some(DaemonLogLine::StaleExitIgnored {
            app,
            id,
            pid: num(pid),
        });
    }
    None
}

/// `web:0` -> ("web", 0); the id is after the last colon.
fn name_id(s: &str) -> Option<(String, u64)> {
    let (name, id) = s.rsplit_once(':')?;
    Some((name.to_owned(), num(id)?))
}

/// `/srv/app.js had too many unstable restarts (16). Stopped. "errored"`
fn too_many(rest: &str) -> Option<DaemonLogLine> {
    let pos = rest.rfind(" had too many unstable restarts (")?;
    let script = &rest[..pos];
    let tail = &rest[pos + " had too many unstable restarts (".len()..];
    let (count, _) = tail.split_once(")")?;
    Some(DaemonLogLine::TooManyUnstableRestarts {
        script: script.to_owned(),
        count: num(count)?,
    })
}

/// `web id=0 pid=123 could not be stopped`
fn could_not_be_stopped(rest: &str) -> Option<DaemonLogLine> {
    let head = rest.strip_suffix(" could not be stopped")?;
    let (head, pid) = head.rsplit_once(" pid=")?;
    let (app, id) = head.rsplit_once(" id=")?;
    Some(DaemonLogLine::CouldNotBeStopped {
        app: app.to_owned(),
        id: num(id)?,
        pid: num(pid),
    })
}

impl DaemonLogLine {
    /// The app (name, pm_id) the line is about, when it names one.
    pub(crate) fn app(&self) -> Option<(&str, u64)> {
        match self {
            DaemonLogLine::Stopping { app, id, .. }
            | DaemonLogLine::Exited { app, id, .. }
            | DaemonLogLine::Disconnected { app, id, .. }
            | DaemonLogLine::Starting { app, id, .. }
            | DaemonLogLine::Online { app, id }
            | DaemonLogLine::StaleExitIgnored { app, id, .. }
            | DaemonLogLine::CouldNotBeStopped { app, id, .. }
            | DaemonLogLine::WillRestart { app, id, .. } => Some((app, *id)),
            _ => None,
        }
    }

    /// Whether the line is about the outgoing worker of a cluster reload (`_old_<id>`).
    pub fn is_old_worker(&self) -> bool {
        matches!(
            self,
            DaemonLogLine::Stopping { old: true, .. }
                | DaemonLogLine::Exited { old: true, .. }
                | DaemonLogLine::Disconnected { old: true, .. }
        )
    }

    /// The OS pid the line is about, when it names one.
    pub(crate) fn pid(&self) -> Option<i64> {
        match self {
            DaemonLogLine::KillRetry { pid, .. }
            | DaemonLogLine::TreeKilled { pid, .. }
            | DaemonLogLine::ProcessKilled { pid }
            | DaemonLogLine::SigkillAfterTimeout { pid, .. }
            | DaemonLogLine::CouldNotBeKilled { pid } => Some(*pid),
            DaemonLogLine::StaleExitIgnored { pid, .. }
            | DaemonLogLine::CouldNotBeStopped { pid, .. } => *pid,
            _ => None,
        }
    }

    /// What the line says, in words (without the app, which the caller shows).
    pub(crate) fn describe(&self) -> String {
        match self {
            DaemonLogLine::Stopping { old: false, .. } => {
                "stopping (daemon sends the kill signal)".into()
            }
            DaemonLogLine::Stopping { old: true, id, .. } => {
                format!("stopping the outgoing worker _old_{id} of the reload")
            }
            DaemonLogLine::KillRetry { pid, ms } => {
                format!("pid {pid} still alive, retrying in {ms} ms")
            }
            DaemonLogLine::TreeKilled { pid, pids } => {
                format!(
                    "pid {pid}: process tree killed ({pids} pid{})",
                    if *pids == 1 { "" } else { "s" }
                )
            }
            DaemonLogLine::ProcessKilled { pid } => {
                format!("pid {pid}: process killed (main pid only)")
            }
            DaemonLogLine::SigkillAfterTimeout { pid, ms, remaining } => match remaining {
                Some(n) => {
                    format!("pid {pid} still alive after {ms} ms: SIGKILL to {n} remaining pid(s)")
                }
                None => format!("pid {pid} still alive after {ms} ms: SIGKILL"),
            },
            DaemonLogLine::CouldNotBeKilled { pid } => {
                format!("pid {pid} could not be killed, even with SIGKILL")
            }
            DaemonLogLine::Exited {
                code,
                signal,
                old: false,
                ..
            } => format!("exited code {code} via {signal} (daemon says)"),
            DaemonLogLine::Exited {
                code,
                signal,
                old: true,
                id,
                ..
            } => format!("outgoing worker _old_{id} exited code {code} via {signal} (daemon says)"),
            DaemonLogLine::Disconnected { old: false, .. } => {
                "worker disconnected (cluster IPC closed)".into()
            }
            DaemonLogLine::Disconnected { old: true, id, .. } => {
                format!("outgoing worker _old_{id} disconnected")
            }
            DaemonLogLine::ReloadReady { soft: false } => {
                "reload: new worker listening (or ready): the old one is stopped now".into()
            }
            DaemonLogLine::ReloadReady { soft: true } => {
                "graceful reload: new worker listening: the old one is told to shut down".into()
            }
            DaemonLogLine::SoftReloadOldGone => "graceful reload: old worker disconnected".into(),
            DaemonLogLine::ReloadBecameRestart { id } => {
                format!("reload of {id}: not online in cluster mode, so restarted instead")
            }
            DaemonLogLine::Starting { mode, .. } => format!("starting ({mode} mode)"),
            DaemonLogLine::Online { .. } => "online (daemon log)".into(),
            DaemonLogLine::StaleExitIgnored { pid, .. } => match pid {
                Some(p) => format!("stale exit of earlier pid {p} ignored"),
                None => "stale exit of an earlier generation ignored".into(),
            },
            DaemonLogLine::TooManyUnstableRestarts { script, count } => {
                format!("errored: too many unstable restarts ({count}) of {script}")
            }
            DaemonLogLine::CouldNotBeStopped { pid, .. } => match pid {
                Some(p) => format!("pid {p} could not be stopped: errored"),
                None => "could not be stopped: errored".into(),
            },
            DaemonLogLine::SpawnFailed { program, code } => {
                format!("could not spawn {program}: {code} (program or working directory missing)")
            }
            DaemonLogLine::WillRestart { ms, .. } => format!("will restart in {ms} ms"),
            DaemonLogLine::MemoryRestart { id } => {
                format!("pm_id {id} restarted: over max_memory_restart")
            }
            DaemonLogLine::WatchRestart { path, .. } => {
                format!("change detected on {path}: restarting (watch)")
            }
            DaemonLogLine::Other { text } => format!("daemon: {text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `pm2.log` prefix is split as looking for each level's marker in the whole line
    /// splits it (what [`split_prefix`] did before it looked only at the line's head): for
    /// the real daemons' pm2.log lines and lines with markers beyond the longest stamp, at
    /// its edge, twice, after a newline, after other characters, or none.
    #[test]
    fn prefixes_split_as_by_whole_line_search() {
        fn by_whole_line(line: &str) -> (Option<LogPrefix>, &str) {
            for level in ["log", "error", "warn", "info"] {
                let marker = format!(": PM2 {level}: ");
                if let Some(pos) = line.find(&marker) {
                    if pos > 0 && pos <= MAX_STAMP && !line[..pos].contains(['\n', '\r']) {
                        let prefix = LogPrefix {
                            stamp: line[..pos].to_owned(),
                            level: level.to_owned(),
                        };
                        return (Some(prefix), &line[pos + marker.len()..]);
                    }
                }
            }
            (None, line)
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut lines: Vec<String> = ["pm2-5.4.3.pm2.log", "pm2-7.0.4.pm2.log"]
            .iter()
            .flat_map(|f| {
                let text = std::fs::read_to_string(root.join(f)).expect("a fixture pm2.log");
                text.lines().map(str::to_owned).collect::<Vec<_>>()
            })
            .collect();
        assert!(lines.len() > 20, "{}", lines.len());
        for level in ["log", "error", "warn", "info", "debug"] {
            let marker = format!(": PM2 {level}: ");
            for at in [
                0,
                1,
                MAX_STAMP - 1,
                MAX_STAMP,
                MAX_STAMP + 1,
                MAX_STAMP + 20,
            ] {
                let stamp = "2".repeat(at);
                lines.push(format!("{stamp}{marker}App [web:0] online"));
                lines.push(format!("{stamp}{marker}x{marker}y"));
                lines.push(format!("é{stamp}{marker}z"));
                lines.push(format!("{stamp}\n{marker}z"));
                lines.push(format!("{stamp}: PM2 warn: a: PM2 log: b"));
                lines.push(format!("{stamp}{marker}"));
                lines.push(stamp[..at.min(3)].to_owned() + &marker[..marker.len() - 1]);
            }
        }
        lines.extend(["".into(), ": PM2 log: ".into(), "App [web:0] online".into()]);
        for l in &lines {
            assert_eq!(split_prefix(l), by_whole_line(l), "{l:?}");
        }
    }
    use proptest::prelude::*;

    #[test]
    fn every_line_from_the_field_notes() {
        use DaemonLogLine::*;
        let cases: Vec<(&str, DaemonLogLine)> = vec![
            ("Stopping app:web id:0", Stopping { app: "web".into(), id: 0, old: false }),
            ("Stopping app:web id:_old_1", Stopping { app: "web".into(), id: 1, old: true }),
            ("App name:web id:0 disconnected", Disconnected { app: "web".into(), id: 0, old: false }),
            ("App name:web id:_old_3 disconnected", Disconnected { app: "web".into(), id: 3, old: true }),
            (
                "App [web:_old_0] exited with code [0] via signal [SIGINT]",
                Exited { app: "web".into(), id: 0, code: 0, signal: "SIGINT".into(), old: true },
            ),
            ("-reload- New worker listening", ReloadReady { soft: false }),
            ("-softReload- New worker listening", ReloadReady { soft: true }),
            ("-softReload- Old worker disconnected", SoftReloadOldGone),
            ("Process 4 in a stopped status, starting it", ReloadBecameRestart { id: 4 }),
            ("Process x in a stopped status, starting it", Other { text: "Process x in a stopped status, starting it".into() }),
            ("pid=3456 msg=failed to kill - retrying in 100ms", KillRetry { pid: 3456, ms: 100 }),
            ("pid=3456 msg=process tree killed (1 pids)", TreeKilled { pid: 3456, pids: 1 }),
            ("pid=3456 msg=process killed", ProcessKilled { pid: 3456 }),
            (
                "Process with pid 5308 still alive after 1600ms, sending SIGKILL to 1 remaining pids...",
                SigkillAfterTimeout { pid: 5308, ms: 1600, remaining: Some(1) },
            ),
            (
                "Process with pid 26808 still alive after 1600ms, sending it SIGKILL now...",
                SigkillAfterTimeout { pid: 26808, ms: 1600, remaining: None },
            ),
            ("Process with pid 9 could not be killed", CouldNotBeKilled { pid: 9 }),
            (
                "Error: spawn node ENOENT",
                SpawnFailed { program: "node".into(), code: "ENOENT".into() },
            ),
            (
                "Error: spawn /opt/my node/bin/node EACCES",
                SpawnFailed { program: "/opt/my node/bin/node".into(), code: "EACCES".into() },
            ),
            ("App [web:0] will restart in 150ms", WillRestart { app: "web".into(), id: 0, ms: 150 }),
            (
                "[PM2][WORKER] Process 3 restarted because it exceeds --max-memory-restart value (current_memory=209 max_memory_limit=100 [octets])",
                MemoryRestart { id: 3 },
            ),
            (
                "Change detected on path src/a b.js for app web - restarting",
                WatchRestart { path: "src/a b.js".into(), app: "web".into() },
            ),
            (
                "App [web:0] exited with code [1] via signal [SIGINT]",
                Exited { app: "web".into(), id: 0, code: 1, signal: "SIGINT".into(), old: false },
            ),
            ("App [web:0] starting in -fork mode-", Starting { app: "web".into(), id: 0, mode: "fork".into() }),
            ("App [api:3] starting in -cluster mode-", Starting { app: "api".into(), id: 3, mode: "cluster".into() }),
            ("App [web:0] online", Online { app: "web".into(), id: 0 }),
            (
                "App [web:0] stale exit event ignored (pid 77)",
                StaleExitIgnored { app: "web".into(), id: 0, pid: Some(77) },
            ),
            (
                "Script /path/app.js had too many unstable restarts (16). Stopped. \"errored\"",
                TooManyUnstableRestarts { script: "/path/app.js".into(), count: 16 },
            ),
            (
                "app=web id=0 pid=123 could not be stopped",
                CouldNotBeStopped { app: "web".into(), id: 0, pid: Some(123) },
            ),
            ("PM2 successfully stopped", Other { text: "PM2 successfully stopped".into() }),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), want, "{line}");
            let prefixed = format!("2026-11-25T15:34:44: PM2 log: {line}");
            assert_eq!(parse(&prefixed), want, "{prefixed}");
            assert_eq!(parse(&format!("{line}\n")), want, "with newline: {line}");
        }
    }

    #[test]
    fn names_with_colons_and_brackets() {
        assert_eq!(
            parse("App [my:app]:12] online"),
            DaemonLogLine::Online {
                app: "my:app]".into(),
                id: 12
            }
        );
        assert_eq!(
            parse("Stopping app:a id:b id:4"),
            DaemonLogLine::Stopping {
                app: "a id:b".into(),
                id: 4,
                old: false
            }
        );
        assert_eq!(
            parse("app=x y id=2 pid=undefined could not be stopped"),
            DaemonLogLine::CouldNotBeStopped {
                app: "x y".into(),
                id: 2,
                pid: None
            }
        );
    }

    #[test]
    fn prefix_levels_and_custom_date_formats() {
        let (p, m) =
            split_prefix("2026-11-25T15:35:25: PM2 error: Error [ERR_STREAM_DESTROYED]: x");
        assert_eq!(p.unwrap().level, "error");
        assert_eq!(m, "Error [ERR_STREAM_DESTROYED]: x");
        let (p, m) = split_prefix("25/11/2026 15:35 +00:00: PM2 log: App [web:0] online");
        assert_eq!(p.unwrap().stamp, "25/11/2026 15:35 +00:00");
        assert_eq!(
            parse_message(m),
            DaemonLogLine::Online {
                app: "web".into(),
                id: 0
            }
        );
        // A bus payload that merely mentions the marker far into the text is not a prefix.
        let long = format!("{}: PM2 log: App [web:0] online", "x".repeat(100));
        assert!(matches!(parse(&long), DaemonLogLine::Other { .. }));
    }

    #[test]
    fn near_misses_are_other() {
        for line in [
            "",
            "Stopping app:web id:",
            "Stopping app:web id:x",
            "pid=abc msg=process killed",
            "pid=1 msg=failed to kill - retrying in xms",
            "pid=1 msg=process tree killed (",
            "Process with pid 1 still alive after ms, sending it SIGKILL now...",
            "App [web] online",
            "App [web:0] exited with code [] via signal [SIGINT]",
            "App [web:0] starting in -fork",
            "Script x had too many unstable restarts (",
            "app=web could not be stopped",
            "pid=99999999999999999999999999 msg=process killed",
        ] {
            assert!(
                matches!(parse(line), DaemonLogLine::Other { .. }),
                "{line:?} -> {:?}",
                parse(line)
            );
        }
    }

    /// Every line of the real pm2.log files recorded for the fixtures parses, and the
    /// interesting ones are recognised.
    #[test]
    fn real_pm2_logs() {
        for (file, want_sigkill) in [("pm2-7.0.4.pm2.log", Some(1)), ("pm2-5.4.3.pm2.log", None)] {
            let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let lines: Vec<DaemonLogLine> = text.lines().map(parse).collect();
            let count = |f: &dyn Fn(&DaemonLogLine) -> bool| lines.iter().filter(|l| f(l)).count();
            assert!(
                count(&|l| matches!(l, DaemonLogLine::Stopping { .. })) >= 4,
                "{file}"
            );
            assert!(
                count(&|l| matches!(l, DaemonLogLine::Exited { .. })) >= 16,
                "{file}"
            );
            assert!(
                count(&|l| matches!(l, DaemonLogLine::Starting { .. })) >= 16,
                "{file}"
            );
            assert!(
                count(&|l| matches!(l, DaemonLogLine::Online { .. })) >= 16,
                "{file}"
            );
            assert!(
                count(&|l| matches!(l, DaemonLogLine::KillRetry { ms: 100, .. })) >= 10,
                "{file}"
            );
            assert_eq!(
                count(&|l| matches!(l, DaemonLogLine::TooManyUnstableRestarts { count: 16, .. })),
                1
            );
            assert!(
                count(
                    &|l| matches!(l, DaemonLogLine::SigkillAfterTimeout { ms: 1600, remaining, .. } if *remaining == want_sigkill)
                ) >= 1,
                "{file}"
            );
            if want_sigkill.is_some() {
                assert!(count(&|l| matches!(l, DaemonLogLine::TreeKilled { pids: 1, .. })) >= 3);
            } else {
                assert!(count(&|l| matches!(l, DaemonLogLine::ProcessKilled { .. })) >= 3);
            }
            // Nothing from a known line is left with its prefix in Other.
            for l in &lines {
                if let DaemonLogLine::Other { text } = l {
                    assert!(!text.contains(": PM2 log: "), "{text}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_near_known_shapes(
            head in prop::sample::select(vec!["Stopping app:", "pid=", "Process with pid ", "App [", "Script ", "app=", "2026: PM2 log: App ["]),
            tail in "[a-z0-9 :=\\[\\]().\\-\"é]{0,40}",
        ) {
            let _ = parse(&format!("{head}{tail}"));
        }
    }
}
