//! `graceful-shutdown-killed`: SIGKILL after kill_timeout cut a process that was still
//! shutting down; how long it had, and that it needed longer.
//!
//! Evidence: `Stopping app` (the kill signal, SIGINT unless configured, goes out right
//! after), the daemon's `still alive after 1600ms, sending SIGKILL` line, and the kernel's
//! exit of each process of that generation killed by SIGKILL during the stop.

use super::ctx::{ev, short_cmd, AppCtx};
use super::{Finding, Severity};
use crate::event::{MonoNs, Source};
use crate::timeline::SeenProcess;

pub(crate) const KIND: &str = "graceful-shutdown-killed";

/// A SIGKILL exit this long after the daemon said it was done still belongs to the stop.
const LATE_NS: u64 = 1_000_000_000;

pub(crate) fn findings(c: &AppCtx) -> Vec<(MonoNs, Finding)> {
    let a = c.a;
    let mut out = Vec::new();
    for g in &a.generations {
        let Some(stop) = &g.stop else { continue };
        let t_int = stop.requested.t;
        let until = stop.confirmed.map(|x| x.t + LATE_NS).unwrap_or(u64::MAX);
        let killed: Vec<&SeenProcess> = c
            .processes_of(g)
            .into_iter()
            .filter(|p| p.exit_status.as_deref() == Some("signal SIGKILL"))
            .filter(|p| p.exit.is_some_and(|x| x.t >= t_int && x.t <= until))
            .collect();
        if killed.is_empty() && stop.sigkill.is_none() {
            continue;
        }
        // When pm2 gave up (stop-timeout-errored), only what the kernel saw SIGKILL end.
        if stop.gave_up.is_some() && killed.is_empty() {
            continue;
        }
        let kt = a.config.kill_timeout_ms();
        let kt_w = if a.config.kill_timeout.is_some() {
            format!("kill_timeout {kt} ms")
        } else {
            format!("kill_timeout {kt} ms, the default")
        };
        // When the SIGKILL struck: the kernel's exit, else the daemon's line.
        let t_kill = killed
            .iter()
            .filter_map(|p| p.exit.map(|x| x.t))
            .min()
            .or(stop.sigkill.map(|s| s.t))
            .unwrap_or(t_int);
        let had = t_kill.saturating_sub(t_int);
        let who = if killed.is_empty() {
            let pid = stop
                .sigkill
                .and(c.main_pid(g))
                .map(|p| c.proc_words(p))
                .unwrap_or_else(|| "its process".into());
            vec![pid]
        } else {
            killed
                .iter()
                .take(5)
                .map(|p| {
                    let cmd = p
                        .cmd
                        .as_deref()
                        .map(|x| format!(" (`{}`)", short_cmd(x)))
                        .unwrap_or_default();
                    format!("pid {}{cmd}", p.pid)
                })
                .collect()
        };
        let summary = format!(
            "pm2 SIGKILLed {} of {} at {}, {} after asking it to stop ({kt_w}): its graceful \
             shutdown was cut short and needed more than {}.",
            who.join(", "),
            c.label(),
            c.at(t_kill),
            c.span(had),
            c.span(had)
        );
        let mut chain = Vec::new();
        let mut evidence = Vec::new();
        if let Some(r) = stop.by_request.and_then(|i| c.tl.requests.get(i)) {
            chain.push(format!(
                "{} at {} asked to stop {}'s running generation.",
                super::ctx::request_words(r),
                c.at(r.asked),
                c.label()
            ));
            evidence.push(super::ctx::asked_evidence(r, &c.label()));
        }
        chain.push(format!(
            "pm2 sent the stop signal (SIGINT unless kill_signal says otherwise) at {} and polled \
             every 100 ms.",
            c.at(t_int)
        ));
        evidence.push(ev(
            t_int,
            Source::Bus,
            format!("Stopping app {}", c.label()),
        ));
        if let Some(s) = stop.sigkill {
            let n = stop
                .sigkill_remaining
                .map(|n| format!(" to {n} remaining pid(s)"))
                .unwrap_or_default();
            chain.push(format!(
                "After {} it was still alive, so pm2 sent SIGKILL{n} at {}.",
                stop.sigkill_after_ms
                    .map(|m| format!("{m} ms"))
                    .unwrap_or_else(|| kt_w.clone()),
                c.at(s.t)
            ));
            evidence.push(ev(
                s.t,
                Source::Bus,
                format!("daemon: still alive after kill_timeout, sending SIGKILL{n}"),
            ));
        }
        for p in killed.iter().take(5) {
            if let Some(x) = p.exit {
                let held = if p.held.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (it listened on {} at its last snapshot)",
                        p.held.join(", ")
                    )
                };
                chain.push(format!(
                    "The kernel reports pid {} killed by SIGKILL at {}, {} after the stop \
                     signal{held}.",
                    p.pid,
                    c.at(x.t),
                    c.span(x.t.saturating_sub(t_int))
                ));
                evidence.push(ev(
                    x.t,
                    Source::Proc,
                    format!("exit pid {} signal SIGKILL", p.pid),
                ));
            }
        }
        if !c.waits_for_main_pid_only() && killed.iter().any(|p| Some(p.pid) != c.main_pid(g)) {
            chain.push(
                "pm2 7+ waits for every process of the tree it signalled, and kills the ones \
                 still alive at kill_timeout."
                    .into(),
            );
        }
        let name = c.cli_name();
        let remedy = format!(
            "If the shutdown needs that long, raise kill_timeout above its real duration \
             (`kill_timeout` in the ecosystem file, or `pm2 delete {name}` and `pm2 start … \
             --kill-timeout <ms>`); otherwise make the SIGINT handler finish within {kt} ms \
             (stop accepting work first, bound the drain)."
        );
        out.push((
            t_kill,
            c.finding(KIND, Severity::Warning, summary, chain, evidence, remedy),
        ));
    }
    out
}
