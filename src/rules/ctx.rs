//! What every rule needs: one app of the timeline, times in words, and the facts about its
//! generations and requests that several rules share.

use super::{Evidence, Finding, Severity};
use crate::event::{MonoNs, Source};
use crate::timeline::{AppTimeline, Generation, Request, SeenProcess, TimeGrain, Timeline};
use std::collections::HashMap;

/// Stderr lines quoted per generation.
pub(crate) const QUOTE_LINES: usize = 2;
/// Longest stderr line quoted, in characters.
const QUOTE_CHARS: usize = 160;

/// One app and the whole timeline.
pub(crate) struct AppCtx<'a> {
    pub(crate) tl: &'a Timeline,
    pub(crate) a: &'a AppTimeline,
    /// The watcher's processes by generation (restart_time), and by parent pid.
    by_gen: HashMap<u64, Vec<&'a SeenProcess>>,
    by_parent: HashMap<i64, Vec<&'a SeenProcess>>,
    /// Generation index by restart_time (the last one with it).
    gen_by_rt: HashMap<u64, usize>,
    /// The requests acting on this app, by time.
    reqs: Vec<(usize, &'a Request)>,
}

impl<'a> AppCtx<'a> {
    /// How long `ns` is, in words as fine as the timeline's instants: [`span_words`].
    pub(crate) fn span(&self, ns: u64) -> String {
        span_words(self.tl.grain, ns)
    }

    /// From `lo` to `hi`, the unit said once: `95 to 410 ms`; from whole-second stamps
    /// `about 1 to 3 s`.
    pub(crate) fn span_range(&self, lo: u64, hi: u64) -> String {
        let (lo_w, hi_w) = (self.span(lo), self.span(hi));
        match self.tl.grain {
            TimeGrain::Fine if lo / 1_000_000 == hi / 1_000_000 => lo_w,
            TimeGrain::Fine => format!("{} to {hi_w}", lo_w.trim_end_matches(" ms")),
            TimeGrain::Second if lo_w == hi_w => lo_w,
            TimeGrain::Second if lo < 1_000_000_000 => format!("{lo_w} to {hi_w}"),
            TimeGrain::Second => format!(
                "{} to {}",
                lo_w.trim_end_matches(" s"),
                hi_w.trim_start_matches("about ")
            ),
        }
    }

    /// How long generation `g` ran, in words (` after 45 ms`; ` within a second` when
    /// the timeline tells only seconds), when known.
    pub(crate) fn lived(&self, g: &Generation) -> String {
        match g.uptime_ns() {
            Some(ns) if self.tl.grain == TimeGrain::Second && ns < 1_000_000_000 => {
                " within a second".into()
            }
            Some(ns) => format!(" after {}", self.span(ns)),
            None => String::new(),
        }
    }

    pub(crate) fn new(tl: &'a Timeline, a: &'a AppTimeline) -> AppCtx<'a> {
        let mut by_gen: HashMap<u64, Vec<&SeenProcess>> = HashMap::new();
        let mut by_parent: HashMap<i64, Vec<&SeenProcess>> = HashMap::new();
        for p in &a.processes {
            if let Some(g) = p.generation {
                by_gen.entry(g).or_default().push(p);
            }
            if let Some(pp) = p.parent {
                by_parent.entry(pp).or_default().push(p);
            }
        }
        let gen_by_rt = a
            .generations
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.restart_time.map(|rt| (rt, i)))
            .collect();
        let name = a.name.as_deref();
        let mut reqs: Vec<(usize, &Request)> = tl
            .requests
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.pm_id == Some(a.pm_id)
                    || (r.pm_id.is_none() && name.is_some_and(|n| r.names.iter().any(|m| m == n)))
            })
            .collect();
        reqs.sort_by_key(|(i, r)| (r.asked, *i));
        AppCtx {
            tl,
            a,
            by_gen,
            by_parent,
            gen_by_rt,
            reqs,
        }
    }

    /// `web:0` (or `#0` when the name is not known).
    pub(crate) fn label(&self) -> String {
        match &self.a.name {
            Some(n) => format!("{n}:{}", self.a.pm_id),
            None => format!("#{}", self.a.pm_id),
        }
    }

    /// The app's name for a CLI command (`web`, or the pm_id).
    pub(crate) fn cli_name(&self) -> String {
        match &self.a.name {
            Some(n) => n.to_string(),
            None => self.a.pm_id.to_string(),
        }
    }

    /// `+1.234s`: `t` relative to the start of the capture, as the timeline view shows it.
    pub(crate) fn at(&self, t: MonoNs) -> String {
        crate::event::offset_text(t, self.tl.mono_ref())
    }

    /// The end of the capture.
    pub(crate) fn end(&self) -> MonoNs {
        self.tl.last_t.unwrap_or(0)
    }

    /// The daemon stops a generation by waiting for its main pid alone (pm2 before 7:
    /// lib/God/Methods.js `killProcess` polls only `pid`; 7.x polls `_tree_pids`, every
    /// process of the tree it signalled).
    pub(crate) fn waits_for_main_pid_only(&self) -> bool {
        self.is_pm2_before_7()
    }

    /// The daemon is known to be older than pm2 7.
    pub(crate) fn is_pm2_before_7(&self) -> bool {
        let major = |v: &str| v.split('.').next()?.parse::<u32>().ok();
        self.tl
            .pm2_version
            .as_deref()
            .and_then(major)
            .is_some_and(|m| m < 7)
    }

    /// A finding about this app.
    pub(crate) fn finding(
        &self,
        kind: &str,
        severity: Severity,
        summary: String,
        chain: Vec<String>,
        mut evidence: Vec<Evidence>,
        remedy: String,
    ) -> Finding {
        evidence.sort_by_key(|e| e.t);
        evidence.dedup();
        Finding {
            kind: kind.to_owned(),
            severity,
            app: self.a.name.as_deref().map(str::to_owned),
            pm_id: Some(self.a.pm_id),
            summary,
            chain,
            evidence,
            remedy,
        }
    }

    /// The requests that acted on this app (restart, reload, stop, start, delete, and
    /// `prepare` naming it), as (index into the timeline's requests, request), by time.
    pub(crate) fn requests(&self) -> &[(usize, &'a Request)] {
        &self.reqs
    }

    /// The requests that start a generation (restart, reload, start).
    pub(crate) fn starting_requests(&self) -> Vec<(usize, &'a Request)> {
        self.reqs
            .iter()
            .copied()
            .filter(|(_, r)| starts(&r.method))
            .collect()
    }

    /// The next request acting on this app after `t` (one the daemon refused did nothing and
    /// does not count).
    pub(crate) fn next_request_after(&self, t: MonoNs) -> Option<&'a Request> {
        let from = self.reqs.partition_point(|(_, r)| r.asked <= t);
        self.reqs[from..]
            .iter()
            .map(|(_, r)| *r)
            .find(|r| r.asked > t && r.error.is_none())
    }

    /// Index of the first generation that started at or after `t` (generations are kept in
    /// the order they started).
    pub(crate) fn first_generation_from(&self, t: MonoNs) -> usize {
        self.a
            .generations
            .partition_point(|g| start_t(g).is_none_or(|s| s < t))
    }

    /// The main pid of generation `g`: as the model knows it, or the watcher's earliest
    /// process of that generation.
    pub(crate) fn main_pid(&self, g: &Generation) -> Option<i64> {
        g.pid.or_else(|| {
            let rt = g.restart_time?;
            self.by_gen
                .get(&rt)?
                .iter()
                .min_by_key(|p| p.first_seen.t)
                .map(|p| p.pid)
        })
    }

    /// ` (pid 4100)`: generation `g`'s main pid for a sentence, or nothing when unknown.
    pub(crate) fn pid_words(&self, g: &Generation) -> String {
        self.main_pid(g)
            .map(|p| format!(" (pid {p})"))
            .unwrap_or_default()
    }

    /// The processes the watcher saw of generation `g`: by restart_time, or descendants of
    /// its main pid.
    pub(crate) fn processes_of(&self, g: &Generation) -> Vec<&'a SeenProcess> {
        let main = self.main_pid(g);
        let mut out: Vec<&SeenProcess> = g
            .restart_time
            .and_then(|rt| self.by_gen.get(&rt))
            .cloned()
            .unwrap_or_default();
        if let Some(m) = main {
            // Descendants the watcher could not tie to a generation by their environment.
            let mut frontier = vec![m];
            let mut rounds = 0;
            while let Some(pid) = frontier.pop() {
                rounds += 1;
                if rounds > 256 {
                    break;
                }
                for p in self.by_parent.get(&pid).into_iter().flatten() {
                    if p.generation.is_none() && !out.iter().any(|q| std::ptr::eq(*q, *p)) {
                        out.push(p);
                        frontier.push(p.pid);
                    }
                }
            }
            if !out.iter().any(|p| p.pid == m) {
                if let Some(p) = self.a.process(m) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// The index of the generation the watcher's process `p` belongs to.
    pub(crate) fn generation_of(&self, p: &SeenProcess) -> Option<usize> {
        if let Some(i) = p.generation.and_then(|rt| self.gen_by_rt.get(&rt)) {
            return Some(*i);
        }
        self.a
            .generations
            .iter()
            .rposition(|g| g.pid == Some(p.pid))
    }

    /// `pid 1810 (node app.js --child)`.
    pub(crate) fn proc_words(&self, pid: i64) -> String {
        match self.a.process(pid).and_then(|p| p.cmd.as_deref()) {
            Some(cmd) => format!("pid {pid} (`{}`)", short_cmd(cmd)),
            None => format!("pid {pid}"),
        }
    }

    /// The generation's last stderr lines, quoted (`"…"`), or None.
    pub(crate) fn quote_stderr(&self, g: &Generation) -> Option<String> {
        let lines: Vec<String> = g
            .stderr_tail
            .iter()
            .filter(|l| !l.trim().is_empty())
            .rev()
            .take(QUOTE_LINES)
            .map(|l| format!("\"{}\"", cut(l.trim(), QUOTE_CHARS)))
            .collect();
        if lines.is_empty() {
            return None;
        }
        Some(lines.into_iter().rev().collect::<Vec<_>>().join(" / "))
    }

    /// The first stderr line that names the failure (an error code or `Error`), else the
    /// last line, quoted.
    pub(crate) fn failure_line(&self, g: &Generation) -> Option<String> {
        let lines: Vec<&String> = g
            .stderr_tail
            .iter()
            .filter(|l| !l.trim().is_empty())
            .collect();
        let pick = lines
            .iter()
            .find(|l| is_addr_in_use(l))
            .or_else(|| {
                lines
                    .iter()
                    .find(|l| l.contains("Error") || l.contains("error"))
            })
            .or_else(|| lines.last())?;
        Some(format!("\"{}\"", cut(pick.trim(), QUOTE_CHARS)))
    }
}

/// Whether a method starts a generation.
pub(crate) fn starts(method: &str) -> bool {
    matches!(
        method,
        "restartProcessId"
            | "reloadProcessId"
            | "softReloadProcessId"
            | "startProcessId"
            | "prepare"
    )
}

/// `pm2 restart` for `restartProcessId`.
pub(crate) fn cli_words(method: &str) -> &'static str {
    match method {
        "restartProcessId" => "pm2 restart",
        "reloadProcessId" | "softReloadProcessId" => "pm2 reload",
        "stopProcessId" => "pm2 stop",
        "startProcessId" | "prepare" => "pm2 start",
        "deleteProcessId" => "pm2 delete",
        _ => "a pm2 command",
    }
}

/// `` `pm2 restart` (restartProcessId from client pid 1946) ``.
pub(crate) fn request_words(r: &Request) -> String {
    let who = match r.peer_pid {
        Some(p) => format!(" from client pid {p}"),
        None => format!(" on connection {}", r.conn),
    };
    format!("`{}` ({}{who})", cli_words(&r.method), r.method)
}

/// When generation `g` started, as well as known.
pub(crate) fn start_t(g: &Generation) -> Option<MonoNs> {
    g.started().map(|s| s.t)
}

/// When generation `g` ended: the kernel's instant, else the daemon's report.
pub(crate) fn end_t(g: &Generation) -> Option<MonoNs> {
    g.os_exit.or(g.exit.as_ref().map(|e| e.at)).map(|x| x.t)
}

/// The generation ended on its own (no stop was asked), i.e. it crashed or exited.
pub(crate) fn crashed(g: &Generation) -> bool {
    g.stop.is_none() && (g.exit.is_some() || g.os_exit.is_some())
}

/// It ended on its own within min_uptime: what pm2 counts as an unstable restart.
pub(crate) fn failed_early(g: &Generation, min_uptime_ms: u64) -> bool {
    crashed(g)
        && g.early_exit == Some(true)
        && g.uptime_ns().is_none_or(|u| u < min_uptime_ms * 1_000_000)
}

/// `exited with code 1`, `was killed by SIGSEGV`.
pub(crate) fn exit_words(g: &Generation) -> String {
    if let Some(s) = &g.os_exit_status {
        if let Some(code) = s.strip_prefix("code ") {
            return format!("exited with code {code}");
        }
        if let Some(sig) = s.strip_prefix("signal ") {
            return format!("was killed by {sig}");
        }
    }
    match &g.exit {
        // The daemon names SIGINT when there was no signal.
        Some(x) => match (x.code, x.signal.as_deref()) {
            (Some(c), Some("SIGINT") | None) => format!("exited with code {c}"),
            (_, Some(sig)) => format!("was killed by {sig}"),
            (None, None) => "exited".into(),
        },
        None => "exited".into(),
    }
}

/// `45 ms`; `0.9 ms` below 10 ms.
pub(crate) fn ms(ns: u64) -> String {
    if ns < 10_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{} ms", ns / 1_000_000)
    }
}

/// `1 start`, `5 starts`.
pub(crate) fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// `ns`, in words no finer than `grain` tells: `45 ms`; from pm2.log's whole-second
/// stamps `under a second` or `about 3 s`.
pub(crate) fn span_words(grain: TimeGrain, ns: u64) -> String {
    match grain {
        TimeGrain::Fine => ms(ns),
        TimeGrain::Second if ns < 1_000_000_000 => "under a second".into(),
        TimeGrain::Second => format!("about {} s", (ns + 500_000_000) / 1_000_000_000),
    }
}

/// Does a stderr line say an address was in use?
pub(crate) use crate::addr::says_in_use as is_addr_in_use;

/// Stderr lines that carry no text because the capture hashed them (`--redact all`).
pub(crate) fn is_redacted(line: &str) -> bool {
    line.trim_start().starts_with("<redacted")
}

/// The command line without the directories of its program and script.
pub(crate) fn short_cmd(cmd: &str) -> String {
    let words: Vec<String> = cmd
        .split_whitespace()
        .map(|w| {
            if w.starts_with('/') && w.contains('/') {
                w.rsplit('/').next().unwrap_or(w).to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect();
    cut(&words.join(" "), 100)
}

/// Cut `s` to at most `max` characters, marking the cut.
pub(crate) fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut o: String = s.chars().take(max).collect();
    o.push('…');
    o
}

/// `FOO, BAR and 3 more`.
pub(crate) fn list_words(items: &[String], max: usize) -> String {
    let shown: Vec<&str> = items.iter().take(max).map(String::as_str).collect();
    let rest = items.len().saturating_sub(max);
    let mut s = match shown.len() {
        0 => String::new(),
        1 => shown[0].to_owned(),
        n => format!("{} and {}", shown[..n - 1].join(", "), shown[n - 1]),
    };
    if rest > 0 {
        s = format!("{} and {rest} more", shown.join(", "));
    }
    s
}

/// Evidence from one source.
/// The evidence that request `r` was asked, for the app labelled `label`.
pub(crate) fn asked_evidence(r: &Request, label: &str) -> Evidence {
    ev(r.asked, Source::Rpc, format!("{} {label} asked", r.method))
}

pub(crate) fn ev(t: MonoNs, source: Source, what: impl Into<String>) -> Evidence {
    Evidence {
        t,
        source,
        what: what.into(),
    }
}

/// `The new generation (pid 4100) exited with code 1 after 40 ms: "…EADDRINUSE…".`
pub fn new_generation_failed(c: &AppCtx, g: &Generation) -> String {
    let pid = c.pid_words(g);
    let quote = c
        .failure_line(g)
        .map(|q| format!(": {q}"))
        .unwrap_or_default();
    format!(
        "The new generation{pid} {}{}{quote}.",
        exit_words(g),
        c.lived(g)
    )
}

/// `its start failed with EADDRINUSE`, `16 starts in a row failed`.
pub fn failed_starts(n: usize, says: &str) -> String {
    if n == 1 {
        format!("its start failed{says}")
    } else {
        format!("{n} starts in a row failed{says}")
    }
}

/// The end of a run of `n` failed starts: the restarts after the first failure (up to
/// generation `last`) and the errored status at `errored`, in the chain and the evidence.
pub fn repeats_then_errored(
    c: &AppCtx,
    n: usize,
    last: &Generation,
    errored: Option<MonoNs>,
    chain: &mut Vec<String>,
    evidence: &mut Vec<Evidence>,
) {
    if n > 1 {
        let last_end = end_t(last)
            .map(|t| format!(" until {}", c.at(t)))
            .unwrap_or_default();
        chain.push(format!(
            "pm2 restarted it; {} failed the same way{last_end}.",
            plural(n as u64 - 1, "more start", "more starts")
        ));
        generation_evidence(c, last, evidence);
    }
    if let Some(t) = errored {
        chain.push(format!(
            "The daemon counted too many unstable restarts and set {} errored at {} \
             (see crash-loop-errored).",
            c.label(),
            c.at(t)
        ));
        evidence.push(ev(t, Source::Bus, format!("{} errored", c.label())));
    }
}

/// Where the end of generation `g` was seen: the kernel when the watcher saw it, else the
/// daemon's bus.
pub fn end_source(g: &Generation) -> Source {
    if g.os_exit.is_some() {
        Source::Proc
    } else {
        Source::Bus
    }
}

/// Evidence of a generation's start and end.
pub(crate) fn generation_evidence(c: &AppCtx, g: &Generation, out: &mut Vec<Evidence>) {
    let pid = c.main_pid(g);
    let pid_w = pid.map(|p| format!(" pid {p}")).unwrap_or_default();
    let gen_w = g
        .restart_time
        .map(|r| format!(" (restart_time {r})"))
        .unwrap_or_default();
    if let Some(s) = g.started() {
        out.push(ev(
            s.t,
            Source::Bus,
            format!("{} starting{pid_w}{gen_w}", c.label()),
        ));
    }
    if let Some(t) = g.os_exit {
        out.push(ev(
            t.t,
            Source::Proc,
            format!(
                "{} pid {} {} (kernel){}",
                c.label(),
                pid.map(|p| p.to_string()).unwrap_or_default(),
                exit_words(g),
                c.lived(g)
            ),
        ));
    } else if let Some(x) = &g.exit {
        out.push(ev(
            x.at.t,
            Source::Bus,
            format!(
                "{}{pid_w} {} (daemon){}",
                c.label(),
                exit_words(g),
                c.lived(g)
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(
            list_words(&["A".into(), "B".into(), "C".into()], 8),
            "A, B and C"
        );
        assert_eq!(list_words(&["A".into()], 8), "A");
        assert_eq!(
            list_words(&["A".into(), "B".into(), "C".into()], 2),
            "A, B and 1 more"
        );
        assert_eq!(
            short_cmd("/usr/bin/node /srv/app/server.js --child"),
            "node server.js --child"
        );
        assert!(is_addr_in_use(
            "Error: listen EADDRINUSE: address already in use 127.0.0.1:3000"
        ));
        assert!(!is_addr_in_use("listening on 3000"));
        assert_eq!(cut("abcdef", 3), "abc…");
        assert_eq!(ms(45_900_000), "45 ms");
        assert_eq!(ms(900_000), "0.9 ms");
        assert_eq!(plural(1, "start", "starts"), "1 start");
    }

    #[test]
    fn spans_are_worded_as_finely_as_the_times_tell() {
        assert_eq!(span_words(TimeGrain::Fine, 900_000), "0.9 ms");
        assert_eq!(span_words(TimeGrain::Fine, 2_400_000_000), "2400 ms");
        assert_eq!(span_words(TimeGrain::Second, 1000), "under a second");
        assert_eq!(span_words(TimeGrain::Second, 2_400_000_000), "about 2 s");
        assert_eq!(span_words(TimeGrain::Second, 2_600_000_000), "about 3 s");
        let mut tl = Timeline::new(&crate::event::CaptureInfo::default());
        tl.apply(&crate::timeline::Entry {
            t: 0,
            source: Source::Rpc,
            app: None,
            kind: crate::timeline::EntryKind::monitor_data(
                0,
                "1",
                vec![crate::pm2::meaning::MonitorProc {
                    pm_id: Some(0),
                    ..Default::default()
                }],
            ),
        });
        let range = |tl: &Timeline, lo, hi| AppCtx::new(tl, tl.app(0).unwrap()).span_range(lo, hi);
        assert_eq!(range(&tl, 95_000_000, 410_000_000), "95 to 410 ms");
        assert_eq!(range(&tl, 95_000_000, 95_600_000), "95 ms");
        tl.grain = TimeGrain::Second;
        assert_eq!(range(&tl, 1_000_000_000, 3_000_000_000), "about 1 to 3 s");
        assert_eq!(
            range(&tl, 1000, 3_000_000_000),
            "under a second to about 3 s"
        );
        assert_eq!(range(&tl, 1000, 2000), "under a second");
    }
}
