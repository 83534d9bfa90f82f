//! `crash-loop-errored`: the app reached `errored` through unstable restarts: how many, in
//! what window, against which min_uptime/max_restarts, and the first failure's cause (exit
//! status and the new generation's last stderr lines).
//!
//! Evidence: the status change to errored (`too many unstable restarts`, `restart
//! overlimit`), the generations that ended on their own within min_uptime before it, since
//! the last request that started the app.

use super::address_held::Holder;
use super::ctx::{
    crashed, end_t, ev, exit_words, failed_early, generation_evidence, list_words, plural,
    request_words, start_t, AppCtx,
};
use super::{Finding, Severity};
use crate::event::{MonoNs, Source};

pub(crate) const KIND: &str = "crash-loop-errored";

/// A stop that gave up this close to errored explains it instead (stop-timeout-errored).
const STOP_GAVE_UP_NS: u64 = 500_000_000;

pub(crate) fn findings(c: &AppCtx, holders: &[Holder]) -> Vec<(MonoNs, Finding)> {
    let a = c.a;
    let mut out = Vec::new();
    let starts = c.starting_requests();
    let mut prev_err: Option<MonoNs> = None;
    for st in a.statuses.iter().filter(|s| s.status == "errored") {
        let t_err = st.at.t;
        let gave_up = a.generations.iter().any(|g| {
            g.stop
                .as_ref()
                .and_then(|s| s.gave_up)
                .is_some_and(|x| x.t.abs_diff(t_err) < STOP_GAVE_UP_NS)
        });
        if gave_up {
            continue;
        }
        // The episode starts at the last request that started the app (or the previous
        // errored episode, or the capture's start).
        let req = starts
            .iter()
            .rev()
            .find(|(_, r)| r.asked <= t_err)
            .map(|(_, r)| *r);
        let from = req
            .map(|r| r.asked)
            .into_iter()
            .chain(prev_err)
            .max()
            .unwrap_or(0);
        prev_err = Some(t_err);
        // Known errored from a reply at the start of the capture: no episode seen.
        if a.statuses.first().is_some_and(|f| std::ptr::eq(f, st))
            && !st.via.starts_with("bus")
            && !st.via.starts_with("daemon")
        {
            continue;
        }
        let lo = c.first_generation_from(from);
        let hi = c.first_generation_from(t_err + 100_000_000).max(lo);
        let gens: Vec<usize> = a.generations[lo..hi]
            .iter()
            .enumerate()
            .map(|(k, g)| (lo + k, g))
            .filter(|(_, g)| {
                crashed(g)
                    && start_t(g).is_some_and(|t| t >= from && t < t_err)
                    && end_t(g).is_some_and(|t| t <= t_err + 100_000_000)
            })
            .map(|(i, _)| i)
            .collect();
        let cfg_min_up = a.config.min_uptime_ms();
        let early: Vec<usize> = gens
            .iter()
            .copied()
            .filter(|i| failed_early(&a.generations[*i], cfg_min_up))
            .collect();
        let Some(&first_i) = early.first().or(gens.first()) else {
            continue;
        };
        let first = &a.generations[first_i];
        // The daemon's own count, from its events and its `too many unstable restarts` line.
        let daemon_count = a.generations[lo..hi]
            .iter()
            .filter(|g| start_t(g).is_some_and(|t| t >= from && t <= t_err + 100_000_000))
            .filter_map(|g| g.unstable_restarts)
            .max();
        let n = daemon_count
            .unwrap_or(early.len() as u64)
            .max(early.len() as u64);
        let cfg = &a.config;
        let min_up = cfg.min_uptime_ms();
        let max_r = cfg.max_restarts();
        let dflt = |set: bool| if set { "" } else { ", the default" };
        let t_first = start_t(first).unwrap_or(from);
        let window = t_err.saturating_sub(t_first);
        let since = match req {
            Some(r) => format!(
                ", {} after `{}` at {}",
                c.span(t_err.saturating_sub(r.asked)),
                super::ctx::cli_words(&r.method),
                c.at(r.asked)
            ),
            None => String::new(),
        };
        let quote = c
            .failure_line(first)
            .map(|q| format!(": {q}"))
            .unwrap_or_default();
        let holder = holders.iter().find(|h| h.victims.contains(&first_i));
        let env_keys: Vec<String> = req
            .map(|r| r.env_changes.iter().map(|e| e.key.clone()).collect())
            .unwrap_or_default();
        let cause = match (holder, env_keys.is_empty()) {
            (Some(h), _) => format!(
                " Cause: pid {} of an earlier generation still held {} (see {}).",
                h.pid,
                h.addr,
                super::address_held::KIND
            ),
            (None, false) => format!(
                " Cause: the restart changed the environment key(s) {} (see {}).",
                list_words(&env_keys, 6),
                super::env_changed::KIND
            ),
            _ => String::new(),
        };
        let first_pid = c.pid_words(first);
        let starts_w = if n == 1 {
            "1 start died".to_owned()
        } else {
            format!("{n} starts in a row died")
        };
        let summary = format!(
            "{} went errored at {}{since}: {starts_w} within min_uptime ({min_up} ms) in {}, \
             reaching max_restarts ({max_r}); the first{first_pid} {}{}{quote}.{cause}",
            c.label(),
            c.at(t_err),
            c.span(window),
            exit_words(first),
            c.lived(first),
        );

        let mut chain = Vec::new();
        let mut evidence = Vec::new();
        if let Some(r) = req {
            chain.push(format!(
                "{} at {} {} {}.",
                request_words(r),
                c.at(r.asked),
                if r.method == "restartProcessId" || r.method.contains("eload") {
                    "restarted"
                } else {
                    "started"
                },
                c.label()
            ));
            evidence.push(super::ctx::asked_evidence(r, &c.label()));
        }
        let stderr = c
            .quote_stderr(first)
            .map(|q| format!("; its last stderr lines: {q}"))
            .unwrap_or_default();
        chain.push(format!(
            "The first new generation{first_pid} started at {} and {}{}{stderr}.",
            c.at(t_first),
            exit_words(first),
            c.lived(first)
        ));
        generation_evidence(c, first, &mut evidence);
        if !cause.is_empty() {
            chain.push(cause.trim().to_owned());
        }
        if early.len() > 1 {
            let last = &a.generations[*early.last().expect("not empty")];
            chain.push(format!(
                "pm2 restarted it at once each time; {} died within min_uptime ({min_up} \
                 ms{}), the last {}{}.",
                plural(early.len() as u64 - 1, "more start", "more starts"),
                dflt(cfg.min_uptime.is_some()),
                exit_words(last),
                c.lived(last)
            ));
            generation_evidence(c, last, &mut evidence);
        }
        chain.push(format!(
            "Each counted as an unstable restart (a start less than min_uptime ago, within \
             min_uptime × max_restarts = {} ms of the app's creation or restart); at {n} \
             (max_restarts {max_r}{}) the daemon set {} errored at {} and stopped restarting it.",
            min_up.saturating_mul(max_r),
            dflt(cfg.max_restarts.is_some()),
            c.label(),
            c.at(t_err)
        ));
        evidence.push(ev(
            t_err,
            Source::Bus,
            format!("{} errored ({})", c.label(), st.via),
        ));

        let name = c.cli_name();
        let remedy = if let Some(h) = holder {
            format!(
                "Free {} first (see {}), then `pm2 restart {name}`: for an errored app it only \
                 starts it again.",
                h.addr,
                super::address_held::KIND
            )
        } else if !env_keys.is_empty() {
            format!(
                "Give {} a working value (see {}) and `pm2 restart {name} --update-env`.",
                list_words(&env_keys, 6),
                super::env_changed::KIND
            )
        } else {
            format!(
                "Fix the startup failure shown by its stderr (`pm2 logs {name} --err --lines 50`), \
                 then `pm2 restart {name}` (for an errored app it only starts it again). Raising \
                 max_restarts or min_uptime, or setting restart_delay / \
                 exp_backoff_restart_delay, only helps when the cause is transient."
            )
        };
        out.push((
            t_err,
            c.finding(KIND, Severity::Error, summary, chain, evidence, remedy),
        ));
    }
    out
}
