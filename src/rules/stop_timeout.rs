//! `stop-timeout-errored`: the stop could not kill the process even with SIGKILL and the
//! daemon marked the app errored directly (`could not be killed`, `could not be stopped`).
//!
//! Evidence: the daemon's lines, and from the process watcher which process pm2 still saw:
//! one of the stopped generation's processes that had not exited by the SIGKILL. When the
//! kernel reports it dead before pm2 gave up, pm2 was looking at a zombie its parent had not
//! reaped (pm2's `kill(pid, 0)` counts zombies as alive); when it never died, it was
//! unkillable (uninterruptible sleep).

use super::ctx::{ev, short_cmd, start_t, AppCtx};
use super::{Finding, Severity};
use crate::event::{MonoNs, Source};
use crate::timeline::SeenProcess;

pub(crate) const KIND: &str = "stop-timeout-errored";

/// How much earlier than its log line the SIGKILL may have gone out.
const SLACK_NS: u64 = 100_000_000;

pub(crate) fn findings(c: &AppCtx) -> Vec<(MonoNs, Finding)> {
    let a = c.a;
    let mut out = Vec::new();
    for g in &a.generations {
        let Some(stop) = &g.stop else { continue };
        let Some(gave_up) = stop.gave_up else {
            continue;
        };
        let t_int = stop.requested.t;
        let t_kill = stop.sigkill.map(|s| s.t);
        // Processes pm2 could still see at the SIGKILL: not exited before it. The daemon's
        // line is received a little after the SIGKILL went out, the kernel's exit is exact.
        let cut = t_kill.map_or(t_int, |t| t.saturating_sub(SLACK_NS).max(t_int));
        let stuck: Vec<&SeenProcess> = c
            .processes_of(g)
            .into_iter()
            .filter(|p| p.first_seen.t <= cut && p.exit.is_none_or(|x| x.t + 1 >= cut))
            .collect();
        let errored_t = a
            .statuses
            .iter()
            .find(|s| s.status == "errored" && s.at.t + 1_000_000_000 >= gave_up.t)
            .map(|s| s.at.t)
            .unwrap_or(gave_up.t);
        let kt = a.config.kill_timeout_ms();
        let mut chain = Vec::new();
        let mut evidence = Vec::new();
        if let Some(r) = stop.by_request.and_then(|i| c.tl.requests.get(i)) {
            chain.push(format!(
                "{} at {} asked to stop {}.",
                super::ctx::request_words(r),
                c.at(r.asked),
                c.label()
            ));
            evidence.push(super::ctx::asked_evidence(r, &c.label()));
        }
        chain.push(format!(
            "pm2 sent the stop signal at {} and waited kill_timeout ({kt} ms).",
            c.at(t_int)
        ));
        evidence.push(ev(
            t_int,
            Source::Bus,
            format!("Stopping app {}", c.label()),
        ));
        if let Some(t) = t_kill {
            chain.push(format!(
                "At {} pm2 sent SIGKILL and kept polling; {} after SIGKILL it gave up.",
                c.at(t),
                c.span(gave_up.t.saturating_sub(t))
            ));
            evidence.push(ev(
                t,
                Source::Bus,
                "daemon: still alive after kill_timeout, sending SIGKILL",
            ));
        }
        evidence.push(ev(
            gave_up.t,
            Source::Bus,
            "daemon: could not be killed / could not be stopped",
        ));
        let (who, why, remedy_why) = match stuck.first() {
            Some(p) => {
                let cmd = p
                    .cmd
                    .as_deref()
                    .map(|x| format!(" (`{}`)", short_cmd(x)))
                    .unwrap_or_default();
                match p.exit {
                    Some(x) if x.t <= gave_up.t => {
                        let reaper = p
                            .parent_at_exit
                            .map(|r| format!(" (pid {r})"))
                            .unwrap_or_default();
                        chain.push(format!(
                            "The kernel reports pid {} died ({}) at {}, {} before pm2 gave up: \
                             what pm2 still saw was a zombie that its parent{reaper} had not \
                             reaped; pm2's kill(pid, 0) check counts a zombie as alive.",
                            p.pid,
                            p.exit_status.as_deref().unwrap_or("status unknown"),
                            c.at(x.t),
                            c.span(gave_up.t.saturating_sub(x.t))
                        ));
                        evidence.push(ev(
                            x.t,
                            Source::Proc,
                            format!(
                                "exit pid {} {}",
                                p.pid,
                                p.exit_status.clone().unwrap_or_default()
                            ),
                        ));
                        (
                            format!("pid {}{cmd}", p.pid),
                            format!(
                                "the kernel had it dead at {} but it stayed an unreaped zombie \
                                 of its parent{reaper}",
                                c.at(x.t)
                            ),
                            format!(
                                "Orphans of the app must be reaped promptly: run the pm2 \
                                 daemon under an init that reaps (tini or dumb-init in a \
                                 container, systemd), and find why the parent{reaper} did not \
                                 reap pid {}.",
                                p.pid
                            ),
                        )
                    }
                    Some(x) => {
                        chain.push(format!(
                            "pid {} only died at {}, {} after pm2 gave up.",
                            p.pid,
                            c.at(x.t),
                            c.span(x.t.saturating_sub(gave_up.t))
                        ));
                        evidence.push(ev(x.t, Source::Proc, format!("exit pid {}", p.pid)));
                        (
                            format!("pid {}{cmd}", p.pid),
                            format!(
                                "it survived SIGKILL until {} (uninterruptible sleep?)",
                                c.at(x.t)
                            ),
                            format!(
                                "A process that outlives SIGKILL is in uninterruptible sleep (D \
                                 state: hung disk or NFS I/O); look at `ps -o pid,stat,wchan -p \
                                 {}` while it happens and fix the I/O it waits for.",
                                p.pid
                            ),
                        )
                    }
                    None => {
                        chain.push(format!(
                            "pid {} was still alive when the capture ended at {}.",
                            p.pid,
                            c.at(c.end())
                        ));
                        (
                            format!("pid {}{cmd}", p.pid),
                            "it was still alive when the capture ended (unkillable: D state?)"
                                .to_owned(),
                            format!(
                                "A process that survives SIGKILL is in uninterruptible sleep (D \
                                 state: hung disk or NFS I/O); look at `ps -o pid,stat,wchan -p \
                                 {}` and fix the I/O it waits for.",
                                p.pid
                            ),
                        )
                    }
                }
            }
            None => (
                c.main_pid(g)
                    .map(|p| format!("pid {p}"))
                    .unwrap_or_else(|| "its process".into()),
                "the capture has no process events that tell why".to_owned(),
                "Record with the process watcher (`--proc auto`) to see which process survived \
                 and why."
                    .to_owned(),
            ),
        };
        // pm2 7.x goes on with a restart after giving up on its stop.
        let next_req = stop
            .by_request
            .and_then(|i| c.tl.requests.get(i))
            .and_then(|r| c.next_request_after(r.asked))
            .map(|r| r.asked)
            .unwrap_or(u64::MAX);
        let went_on = a
            .generations
            .iter()
            .find(|h| start_t(h).is_some_and(|t| t + SLACK_NS >= gave_up.t && t < next_req));
        let end_status = a
            .statuses
            .iter()
            .rfind(|s| s.at.t >= errored_t && s.at.t < next_req);
        let label = c.label();
        let (summary, severity, remedy) = match went_on {
            Some(h) => {
                let t_start = start_t(h).unwrap_or(gave_up.t);
                let pid = c.pid_words(h);
                let end = match end_status {
                    Some(s) if s.at.t > errored_t || s.status != "errored" => {
                        evidence.push(ev(s.at.t, Source::Bus, format!("{label} {}", s.status)));
                        format!("{label} ended {} at {}", s.status, c.at(s.at.t))
                    }
                    _ => format!("{label} stayed errored"),
                };
                chain.push(format!(
                    "The daemon marked {label} errored at {}, then went on with the restart \
                     anyway: it started the next generation{pid} at {}, {} after giving up, and \
                     {end}.",
                    c.at(errored_t),
                    c.at(t_start),
                    c.span(t_start.saturating_sub(gave_up.t))
                ));
                evidence.push(ev(t_start, Source::Bus, format!("{label} starting{pid}")));
                let recovered = end_status.is_some_and(|s| s.status == "online");
                (
                    format!(
                        "pm2 could not stop {label}'s old generation: {who} still counted as \
                         alive {} after SIGKILL, because {why}; pm2 marked it errored at {}, \
                         then started the new generation at {} anyway and {end}.",
                        c.span(gave_up.t.saturating_sub(t_kill.unwrap_or(t_int))),
                        c.at(errored_t),
                        c.at(t_start)
                    ),
                    if recovered {
                        Severity::Warning
                    } else {
                        Severity::Error
                    },
                    format!(
                        "{remedy_why} The restart itself went through{}; the stop's wait was \
                         wasted time and the errored status in between can trip monitoring.",
                        if recovered {
                            ""
                        } else {
                            " but did not recover the app"
                        }
                    ),
                )
            }
            None => {
                chain.push(format!(
                    "The daemon marked {label} errored at {} (the status a failed stop leaves; \
                     it is not restarted automatically).",
                    c.at(errored_t)
                ));
                (
                    format!(
                        "pm2 could not stop {label} and marked it errored at {}: {} still \
                         counted as alive {} after SIGKILL, because {why}.",
                        c.at(errored_t),
                        who,
                        c.span(gave_up.t.saturating_sub(t_kill.unwrap_or(t_int)))
                    ),
                    Severity::Error,
                    format!(
                        "{remedy_why} Then `pm2 restart {}` (an errored app is only started \
                         again).",
                        c.cli_name()
                    ),
                )
            }
        };
        out.push((
            gave_up.t,
            c.finding(KIND, severity, summary, chain, evidence, remedy),
        ));
    }
    out
}
