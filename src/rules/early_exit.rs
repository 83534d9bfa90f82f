//! `early-exit-after-restart`: the first generation after a restart (or reload, or start)
//! died within min_uptime and no more specific cause was found: no address held by an older
//! generation, no environment change, and the app did not go on to `errored` (that is
//! crash-loop-errored, which names the first failure itself).
//!
//! Evidence: the request, the generation's start and exit (status, how long it lived) and its
//! last stderr lines.

use super::address_held::Holder;
use super::ctx::{
    ev, exit_words, failed_early, generation_evidence, request_words, start_t, AppCtx,
};
use super::{Finding, Severity};
use crate::event::{MonoNs, Source};

pub(crate) const KIND: &str = "early-exit-after-restart";

pub(crate) fn findings(c: &AppCtx, holders: &[Holder]) -> Vec<(MonoNs, Finding)> {
    let a = c.a;
    let mut out = Vec::new();
    for (_, r) in c.starting_requests() {
        if r.error.is_some() || !r.env_changes.is_empty() {
            continue;
        }
        let next_req = c
            .next_request_after(r.asked)
            .map(|n| n.asked)
            .unwrap_or(u64::MAX);
        let i = c.first_generation_from(r.asked);
        if a.generations
            .get(i)
            .and_then(start_t)
            .is_none_or(|t| t >= next_req)
        {
            continue;
        }
        let g = &a.generations[i];
        if !failed_early(g, a.config.min_uptime_ms())
            || holders.iter().any(|h| h.victims.contains(&i))
        {
            continue;
        }
        if super::address_held::errored_after(c, r.asked).is_some() {
            continue; // crash-loop-errored
        }
        // What became of the app afterwards: a later generation that lived past min_uptime
        // (or was still running at the next request or the end of the capture).
        let min_up_ns = a.config.min_uptime_ms() * 1_000_000;
        let horizon = next_req.min(c.end());
        let in_episode =
            |n: &&crate::timeline::Generation| start_t(n).is_some_and(|t| t < next_req);
        let later = a.generations[i + 1..].iter().filter(in_episode).find(|n| {
            let Some(s) = start_t(n) else { return false };
            match super::ctx::end_t(n) {
                Some(e) => e.saturating_sub(s) >= min_up_ns,
                None => horizon.saturating_sub(s) >= min_up_ns,
            }
        });
        let tries = a.generations[i..]
            .iter()
            .filter(in_episode)
            .take_while(|n| failed_early(n, a.config.min_uptime_ms()))
            .count();
        let after = match later {
            Some(n) => format!(
                "; pm2 restarted it and {} was up again at {}{}",
                if tries > 1 {
                    format!("after {tries} failed starts, it")
                } else {
                    "it".into()
                },
                c.at(start_t(n).unwrap_or(0)),
                c.pid_words(n)
            ),
            None => match c.next_request_after(r.asked) {
                Some(nr) => format!(
                    "; {} failed before `{}` at {}",
                    super::ctx::plural(tries as u64, "start", "starts in a row"),
                    super::ctx::cli_words(&nr.method),
                    c.at(nr.asked)
                ),
                None => format!(
                    "; {} failed and it had not come up when the capture ended at {}",
                    super::ctx::plural(tries as u64, "start", "starts in a row"),
                    c.at(c.end())
                ),
            },
        };
        let pid = c.pid_words(g);
        let quote = c
            .failure_line(g)
            .map(|q| format!(": {q}"))
            .unwrap_or_default();
        let min_up = a.config.min_uptime_ms();
        let summary = format!(
            "The first generation of {} after `{}` at {}{pid} {}{}, within min_uptime ({min_up} \
             ms){quote}{after}.",
            c.label(),
            super::ctx::cli_words(&r.method),
            c.at(r.asked),
            exit_words(g),
            c.lived(g)
        );
        let mut evidence = vec![ev(
            r.asked,
            Source::Rpc,
            format!("{} {} asked", r.method, c.label()),
        )];
        generation_evidence(c, g, &mut evidence);
        let stderr = c
            .quote_stderr(g)
            .map(|q| format!("; its last stderr lines: {q}"))
            .unwrap_or_else(|| "; it wrote nothing to stderr".into());
        let mut chain = vec![
            format!("{} at {}.", request_words(r), c.at(r.asked)),
            format!(
                "The new generation{pid} {}{}{stderr}.",
                exit_words(g),
                c.lived(g)
            ),
            "No older process held an address it needed, and the request changed no \
             environment key: the cause is in the app's own startup."
                .into(),
        ];
        if let Some(n) = later {
            chain.push(format!(
                "pm2 restarted it; the generation started at {} stayed up.",
                c.at(start_t(n).unwrap_or(0))
            ));
            generation_evidence(c, n, &mut evidence);
        }
        let name = c.cli_name();
        let remedy = format!(
            "Read why the start failed (`pm2 logs {name} --err --lines 50`). A start that fails \
             right after a restart and then succeeds usually trips over state the previous \
             generation left behind (a lock or pid file, a socket path, a migration in \
             progress): clean it up in the app's shutdown or tolerate it at startup."
        );
        out.push((
            start_t(g).unwrap_or(r.asked),
            c.finding(KIND, Severity::Warning, summary, chain, evidence, remedy),
        ));
    }
    out
}
