//! `restart-loop` (a warning): the app keeps restarting by itself without reaching
//! `errored`, so pm2 never stops it and nobody is told.
//!
//! pm2 sets `errored` only after `max_restarts` *unstable* restarts: exits within
//! `min_uptime` of a start, while the app was (re)started less than `min_uptime ×
//! max_restarts` ago. Loops that escape that count:
//!
//! - `restart_delay` or `exp_backoff_restart_delay` spaces the crashes, so most fall
//!   outside the unstable window;
//! - the app crashes after running longer than `min_uptime` (each exit is "stable");
//! - `max_memory_restart`: the daemon's worker (every `PM2_WORKER_INTERVAL` ms, 30 s by
//!   default) finds the app over the limit and reloads it, which in fork mode is a restart
//!   (`Process N in a stopped status, starting it`); `restartProcessId` resets the counter;
//! - `watch`: a changed file restarts it (`restartProcessId` again), and a file the app writes
//!   changes on each start. pm2 names the path relative to the app's `pm_cwd`.
//!
//! Both reproduced on pm2 5.4.3, 6.0.14 and 7.0.4 (scenarios `memory-restart-loop` and
//! `watch-restart-loop`).
//!
//! Evidence: the generations the daemon started with no request in progress, the exits
//! before them, the daemon's `will restart in N ms`, `exceeds --max-memory-restart` and
//! `Change detected on path` lines, and the app's configuration from getMonitorData.

use super::ctx::{self, crashed, end_t, ev, start_t, AppCtx};
use super::{Evidence, Finding, Severity};
use crate::event::{MonoNs, Source};
use crate::timeline::{AutoRestart, AutoRestartCause};

pub const KIND: &str = "restart-loop";

/// Restarts by the daemon itself, in a row, that make a loop.
const MIN_RESTARTS: usize = 3;

/// Whether the daemon's unstable-restart counter rose with each crash, as far as its
/// events say (unknown counts as rising).
fn unstable_counting(crashes: &[&&crate::timeline::Generation]) -> bool {
    let counts: Vec<u64> = crashes.iter().filter_map(|g| g.unstable_restarts).collect();
    counts.windows(2).all(|w| w[1] > w[0])
}

pub fn findings(c: &AppCtx) -> Vec<(MonoNs, Finding)> {
    let a = c.a;
    // Generations the daemon started by itself.
    let autos: Vec<usize> = a
        .generations
        .iter()
        .enumerate()
        .filter(|(i, g)| *i > 0 && !g.before_capture && g.started_by.is_none())
        .filter(|(_, g)| start_t(g).is_some())
        .map(|(i, _)| i)
        .collect();
    // Episodes: runs of them with no request for the app in between.
    let mut episodes: Vec<Vec<usize>> = Vec::new();
    for i in autos {
        let t = start_t(&a.generations[i]).unwrap_or(0);
        let joins = episodes.last().and_then(|e| e.last()).is_some_and(|&p| {
            let tp = start_t(&a.generations[p]).unwrap_or(0);
            c.next_request_after(tp).is_none_or(|r| r.asked > t)
        });
        if joins {
            episodes.last_mut().expect("joins").push(i);
        } else {
            episodes.push(vec![i]);
        }
    }
    let mut out = Vec::new();
    for e in episodes {
        if e.len() < MIN_RESTARTS {
            continue;
        }
        let first_t = start_t(&a.generations[e[0]]).unwrap_or(0);
        let next = c
            .next_request_after(first_t)
            .map(|r| r.asked)
            .unwrap_or(u64::MAX);
        // It reached errored: crash-loop-errored tells that story.
        if a.statuses
            .iter()
            .any(|s| s.status == "errored" && s.at.t >= first_t && s.at.t < next)
        {
            continue;
        }
        if let Some(f) = finding(c, &e) {
            out.push(f);
        }
    }
    out
}

fn finding(c: &AppCtx, e: &[usize]) -> Option<(MonoNs, Finding)> {
    let a = c.a;
    let label = c.label();
    let n = e.len();
    let t_first = start_t(&a.generations[e[0]])?;
    let t_last = start_t(&a.generations[*e.last()?])?;
    let period = t_last.saturating_sub(t_first);
    let every = period / (n as u64 - 1).max(1);
    let cfg = &a.config;
    let min_up = cfg.min_uptime_ms();
    let window = min_up * cfg.max_restarts();
    // The daemon's own reasons for the starts of the episode: each comes just before the
    // start it causes (a reason after the last start is for a start not recorded).
    let reasons: Vec<&crate::timeline::AutoRestart> = a
        .auto_restarts
        .iter()
        .filter(|r| r.at.t + 2_000_000_000 >= t_first && r.at.t <= t_last)
        .collect();
    let mem: Vec<&&crate::timeline::AutoRestart> = reasons
        .iter()
        .filter(|r| r.cause == AutoRestartCause::Memory)
        .collect();
    let watch: Vec<&&crate::timeline::AutoRestart> = reasons
        .iter()
        .filter(|r| matches!(r.cause, AutoRestartCause::Watch { .. }))
        .collect();
    // The exits that led to the restarts.
    let before: Vec<&crate::timeline::Generation> =
        e.iter().map(|&i| &a.generations[i - 1]).collect();
    let crashes: Vec<&&crate::timeline::Generation> =
        before.iter().filter(|g| crashed(g)).collect();
    let early = crashes
        .iter()
        .filter(|g| g.uptime_ns().is_some_and(|u| u < min_up * 1_000_000))
        .count();
    // Gaps between an exit and the next start (restart_delay shows there).
    let mut gaps: Vec<u64> = e
        .iter()
        .filter_map(|&i| {
            let s = start_t(&a.generations[i])?;
            let x = end_t(&a.generations[i - 1])?;
            Some(s.saturating_sub(x))
        })
        .collect();
    gaps.sort_unstable();
    let median_gap = gaps.get(gaps.len() / 2).copied();
    let backoff: Vec<u64> = before.iter().filter_map(|g| g.restart_in_ms).collect();
    let mut evidence = Vec::new();
    let mut chain = Vec::new();
    let (cause, remedy) =
        if !mem.is_empty() {
            chain.push(format!(
                "The daemon restarted {label} {} because it exceeded max_memory_restart{}: such a \
             restart resets pm2's unstable-restart count, so it never ends errored.",
                ctx::plural(mem.len() as u64, "time", "times"),
                cfg.max_memory_restart
                    .map(|b| format!(" ({} MB)", b / 1_048_576))
                    .unwrap_or_default()
            ));
            if let Some(range) = after_start(c, &mem) {
                chain.push(format!(
                    "Each generation had run {range} when the daemon's memory check (every \
                 PM2_WORKER_INTERVAL ms, 30 s by default) found it over the limit."
                ));
            }
            for r in mem.iter().take(2) {
                evidence.push(ev(
                    r.at.t,
                    Source::Bus,
                    "daemon: over --max-memory-restart: restarting",
                ));
            }
            (
            "max_memory_restart restarts it whenever its memory grows past the limit".to_owned(),
            "Find what grows (a leak, a cache without bound: `node --inspect` heap snapshots, or \
             `pm2 monit` over time) and fix it, or raise max_memory_restart if the app simply \
             needs more; a memory restart hides the leak and drops the requests in flight."
                .to_owned(),
        )
        } else if !watch.is_empty() {
            watch_cause(c, &watch, &mut chain, &mut evidence)
        } else if crashes.is_empty() {
            return None;
        } else if early == crashes.len()
            && backoff.is_empty()
            && cfg.restart_delay.is_none()
            && unstable_counting(&crashes)
        {
            // Every crash counted as unstable: a crash loop on its way to errored (or cut
            // short by a command), not a loop that escapes pm2's count.
            return None;
        } else {
            let spacing =
                if !backoff.is_empty() {
                    format!(
                "exp_backoff_restart_delay waits longer before each restart (the daemon said \
                 `will restart in` {} ms)",
                ctx::list_words(&backoff.iter().map(|b| b.to_string()).collect::<Vec<_>>(), 4)
            )
                } else if let Some(d) = cfg.restart_delay {
                    format!("restart_delay waits {d} ms before each restart")
                } else {
                    String::new()
                };
            let first = crashes[0];
            let quote = c
                .failure_line(first)
                .map(|q| format!(": {q}"))
                .unwrap_or_default();
            chain.push(format!(
                "Each generation ended on its own: the first {}{}{quote}; {} of {} crashes came \
             within min_uptime ({min_up} ms).",
                ctx::exit_words(first),
                c.lived(first),
                early,
                crashes.len()
            ));
            for g in crashes.iter().take(1).chain(crashes.iter().skip(1).last()) {
                ctx::generation_evidence(c, g, &mut evidence);
            }
            let why = if spacing.is_empty() {
                if early == 0 {
                    format!(
                    "each generation ran longer than min_uptime ({min_up} ms) before it crashed, \
                     so pm2 counted no unstable restart"
                )
                } else {
                    format!(
                    "only {early} of the crashes came within min_uptime ({min_up} ms), short of \
                     max_restarts ({})",
                    cfg.max_restarts()
                )
                }
            } else {
                format!(
                    "{spacing}, so the crashes fall outside pm2's unstable window (min_uptime × \
                 max_restarts = {window} ms after a start or restart) and the count never \
                 reaches max_restarts ({})",
                    cfg.max_restarts()
                )
            };
            chain.push(format!(
                "pm2 restarted it each time{}; {why}.",
                median_gap
                    .map(|g| format!(" (median {} after the exit)", c.span(g)))
                    .unwrap_or_default()
            ));
            (
                why,
                format!(
                    "Read why it crashes (`pm2 logs {} --err --lines 50`) and fix that: the loop \
                 hides the failure (pm2 shows the app online between crashes and never sets \
                 errored). To have pm2 give up instead, lower max_restarts or raise min_uptime \
                 so that the crashes count as unstable; alert on the restart count (`pm2 jlist`, \
                 restart_time) rather than on status.",
                    c.cli_name()
                ),
            )
        };
    for &i in e.iter().take(1).chain(e.iter().skip(1).last()) {
        let g = &a.generations[i];
        evidence.push(ev(
            start_t(g).unwrap_or(0),
            Source::Bus,
            format!(
                "{label} starting{} (no request in progress)",
                g.restart_time
                    .map(|r| format!(" (restart_time {r})"))
                    .unwrap_or_default()
            ),
        ));
    }
    chain.insert(
        0,
        format!(
            "From {} to {} pm2 started {label} {n} times by itself, no `pm2` command asking, one \
             start every {} on average.",
            c.at(t_first),
            c.at(t_last),
            c.span(every)
        ),
    );
    let status = a
        .statuses
        .iter()
        .rfind(|s| s.at.t <= c.end())
        .map(|s| format!("; pm2 showed it {} at the end", s.status))
        .unwrap_or_default();
    chain.push(format!(
        "It never reached errored{status}: pm2 will keep restarting it."
    ));
    let summary = format!(
        "{label} restarted {n} times in {} ({} apart on average) without reaching errored: {cause}.",
        c.span(period),
        c.span(every)
    );
    Some((
        t_first,
        c.finding(KIND, Severity::Warning, summary, chain, evidence, remedy),
    ))
}

/// How long after the latest start of the app each of the daemon's reasons came:
/// `878 ms` or `95 to 410 ms`; from pm2.log alone (explain) `under a second` or
/// `about 1 to 3 s`.
fn after_start(c: &AppCtx, reasons: &[&&AutoRestart]) -> Option<String> {
    let a = c.a;
    let deltas: Vec<u64> = reasons
        .iter()
        .filter_map(|r| {
            // The generation running then (its start seen, not ended before the reason).
            let g = a
                .generations
                .iter()
                .filter(|g| start_t(g).is_some_and(|s| s <= r.at.t))
                .max_by_key(|g| start_t(g))?;
            if end_t(g).is_some_and(|e| e < r.at.t) {
                return None;
            }
            Some(r.at.t - start_t(g)?)
        })
        .collect();
    let lo = *deltas.iter().min()?;
    let hi = *deltas.iter().max()?;
    Some(c.span_range(lo, hi))
}

/// The path of a watch line: pm2 (chokidar, `cwd: pm_cwd`) names it relative to the app's
/// working directory, which is where `--watch` looks.
fn watched_path(cwd: Option<&str>, path: &str) -> String {
    match cwd {
        Some(d) if d.starts_with('/') && !path.starts_with('/') => {
            format!("{}/{path}", d.trim_end_matches('/'))
        }
        _ => path.to_owned(),
    }
}

/// What to put in ignore_watch for a changed path (relative to the app's directory): its
/// top directory, or the file itself.
fn ignore_entry(path: &str) -> &str {
    let p = path.trim_start_matches("./");
    match p.split_once('/') {
        Some((top, _)) if !top.is_empty() && !p.starts_with('/') => top,
        _ => p,
    }
}

/// The cause, remedy, chain and evidence of a loop driven by watch restarts.
fn watch_cause(
    c: &AppCtx,
    watch: &[&&AutoRestart],
    chain: &mut Vec<String>,
    evidence: &mut Vec<Evidence>,
) -> (String, String) {
    let a = c.a;
    let label = c.label();
    // The changed paths, most often first (the first seen first among equals).
    let mut paths: Vec<(&str, usize)> = Vec::new();
    for r in watch {
        if let AutoRestartCause::Watch { path } = &r.cause {
            match paths.iter_mut().find(|(p, _)| *p == path.as_str()) {
                Some((_, n)) => *n += 1,
                None => paths.push((path.as_str(), 1)),
            }
        }
    }
    paths.sort_by_key(|p| std::cmp::Reverse(p.1));
    let cwd = a.cwd.as_deref();
    let main = paths.first().map(|p| p.0).unwrap_or_default();
    let shown: Vec<String> = paths
        .iter()
        .map(|(p, n)| {
            let times = if *n > 1 {
                format!(" ({n} times)")
            } else {
                String::new()
            };
            format!("{}{times}", watched_path(cwd, p))
        })
        .collect();
    chain.push(format!(
        "The daemon restarted {label} {} because a watched file changed: {}.",
        ctx::plural(watch.len() as u64, "time", "times"),
        ctx::list_words(&shown, 3),
    ));
    if let Some(range) = after_start(c, watch) {
        chain.push(format!(
            "Each change came {range} after a start of {label}: a file written as it starts, \
             most likely by the app itself, so every restart causes the next."
        ));
    }
    for r in watch.iter().take(2) {
        if let AutoRestartCause::Watch { path } = &r.cause {
            evidence.push(ev(
                r.at.t,
                Source::Bus,
                format!(
                    "daemon: change detected on {}: restarting (watch)",
                    watched_path(cwd, path)
                ),
            ));
        }
    }
    let ignore = ignore_entry(main);
    (
        format!(
            "watch restarts it on every change of {}",
            watched_path(cwd, main)
        ),
        format!(
            "Exclude what the app itself writes (logs, uploads, caches, pid files) from watch: \
             `pm2 start ... --watch --ignore-watch=\"{ignore}\"`, or `ignore_watch: \
             [\"{ignore}\"]` in the ecosystem file (relative to the app's directory); or \
             turn watch off in production."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_paths_are_relative_to_the_working_directory() {
        assert_eq!(
            watched_path(Some("/srv/app/"), "logs/app.log"),
            "/srv/app/logs/app.log"
        );
        assert_eq!(watched_path(Some("/srv/app"), "/var/x"), "/var/x");
        // Unknown or hashed (`--redact all`) directory: the path as pm2 said it.
        assert_eq!(watched_path(None, "logs/app.log"), "logs/app.log");
        assert_eq!(
            watched_path(Some("<redacted:0123>"), "cache.json"),
            "cache.json"
        );
    }

    #[test]
    fn ignore_watch_names_the_top_directory_or_the_file() {
        assert_eq!(ignore_entry("logs/app.log"), "logs");
        assert_eq!(ignore_entry("./tmp/cache/x"), "tmp");
        assert_eq!(ignore_entry("app.pid"), "app.pid");
        assert_eq!(ignore_entry("/abs/file"), "/abs/file");
    }
}
