//! `restart-env-changed`: a restart (or reload) carried environment values that differ from
//! the ones the running generation had (keys added or changed), and the next generation
//! failed. Names the keys, never the values: the model compares value hashes only.
//!
//! Severity: error when the app then went errored, warning when the next generation failed
//! but the app recovered, info when nothing failed (the change is still worth knowing).

use super::ctx::{
    crashed, ev, exit_words, failed_early, generation_evidence, list_words, plural, request_words,
    start_t, AppCtx,
};
use super::{Finding, Severity};
use crate::event::{MonoNs, Source};
use crate::timeline::EnvChangeKind;

pub(crate) const KIND: &str = "restart-env-changed";

/// Keys named in a summary.
const KEYS_SHOWN: usize = 8;

pub(crate) fn findings(c: &AppCtx) -> Vec<(MonoNs, Finding)> {
    let a = c.a;
    let mut out = Vec::new();
    for (_, r) in c.starting_requests() {
        if r.env_changes.is_empty() || r.error.is_some() {
            continue;
        }
        let next_req = c
            .next_request_after(r.asked)
            .map(|n| n.asked)
            .unwrap_or(u64::MAX);
        let Some(g) = a
            .generations
            .get(c.first_generation_from(r.asked))
            .filter(|g| start_t(g).is_some_and(|t| t < next_req))
        else {
            continue;
        };
        let mut keys: Vec<String> = Vec::new();
        let mut added = Vec::new();
        let mut changed = Vec::new();
        for e in &r.env_changes {
            keys.push(e.key.clone());
            match e.change {
                EnvChangeKind::Added => added.push(e.key.clone()),
                EnvChangeKind::Changed => changed.push(e.key.clone()),
            }
        }
        let mut kinds = Vec::new();
        if !added.is_empty() {
            kinds.push(format!("added {}", list_words(&added, KEYS_SHOWN)));
        }
        if !changed.is_empty() {
            kinds.push(format!("changed {}", list_words(&changed, KEYS_SHOWN)));
        }
        let kinds = kinds.join("; ");
        let failed = crashed(g);
        let errored = super::address_held::errored_after(c, r.asked);
        let pid = c.pid_words(g);
        let cmd = format!(
            "`{} {} --update-env`",
            super::ctx::cli_words(&r.method),
            c.cli_name()
        );
        let severity = match (failed, errored) {
            (_, Some(_)) if failed => Severity::Error,
            (true, _) => Severity::Warning,
            _ => Severity::Info,
        };
        let quote = c
            .failure_line(g)
            .map(|q| format!(": {q}"))
            .unwrap_or_default();
        let summary = if failed {
            let early = if failed_early(g, a.config.min_uptime_ms()) {
                format!(" (within min_uptime, {} ms)", a.config.min_uptime_ms())
            } else {
                String::new()
            };
            let errored_w = errored
                .map(|t| format!("; {} went errored at {}", c.label(), c.at(t)))
                .unwrap_or_default();
            format!(
                "{cmd} at {} changed {} of {} ({kinds}), and the next generation{pid} \
                 {}{}{early}{quote}{errored_w}.",
                c.at(r.asked),
                plural(keys.len() as u64, "environment key", "environment keys"),
                c.label(),
                exit_words(g),
                c.lived(g)
            )
        } else {
            format!(
                "{cmd} at {} changed {} of {} ({kinds}); the next generation{pid} came \
                 up.",
                c.at(r.asked),
                plural(keys.len() as u64, "environment key", "environment keys"),
                c.label()
            )
        };
        let mut chain = vec![format!(
            "{} at {} carried the caller's environment; compared with the values the daemon \
             held for {} (by hash, values are never shown), it {kinds}.",
            request_words(r),
            c.at(r.asked),
            c.label()
        )];
        let mut evidence = vec![ev(
            r.asked,
            Source::Rpc,
            format!(
                "{} {} asked with env keys that differ: {}",
                r.method,
                c.label(),
                list_words(&keys, KEYS_SHOWN)
            ),
        )];
        chain.push(
            "pm2 merges those values into the app's stored environment (keys are added or \
             overwritten, never removed) and starts the next generation with it."
                .into(),
        );
        generation_evidence(c, g, &mut evidence);
        if failed {
            let stderr = c
                .quote_stderr(g)
                .map(|q| format!("; its last stderr lines: {q}"))
                .unwrap_or_default();
            chain.push(format!(
                "The next generation{pid} {}{}{stderr}.",
                exit_words(g),
                c.lived(g)
            ));
        }
        if let Some(t) = errored.filter(|_| failed) {
            chain.push(format!(
                "Every start failed the same way until the daemon set {} errored at {} (see \
                 crash-loop-errored).",
                c.label(),
                c.at(t)
            ));
            evidence.push(ev(t, Source::Bus, format!("{} errored", c.label())));
        }
        let name = c.cli_name();
        let remedy = if failed {
            format!(
                "Check {} against what the app expects (`pm2 env {}` shows what the daemon now \
                 holds). Because pm2 never removes keys, fix it by restarting with working \
                 values: `KEY=<good value> pm2 restart {name} --update-env` (an unset variable \
                 does not remove it), or `pm2 delete {name}` and start it again.",
                list_words(&keys, KEYS_SHOWN),
                a.pm_id
            )
        } else {
            String::new()
        };
        out.push((
            r.asked,
            c.finding(KIND, severity, summary, chain, evidence, remedy),
        ));
    }
    out
}
