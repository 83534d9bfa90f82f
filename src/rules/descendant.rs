//! `descendant-outlived-stop`: pm2 treated a generation as stopped (and started the next, or
//! reported it stopped) while descendants of it were still alive: pm2 before 7 waits only for
//! the main pid; no version waits for a process double-forked out of its tree.
//!
//! Evidence: the stop (`Stopping app`), the moment pm2 was done with it (the next
//! generation's start, else the daemon's `process killed` line), and the process watcher's
//! processes of that generation that were seen before that moment and exited after it (or
//! not at all within the capture).

use super::ctx::{ev, short_cmd, start_t, AppCtx};
use super::{Finding, Severity};
use crate::event::{MonoNs, Source};
use crate::timeline::{Precision, SeenProcess};

pub(crate) const KIND: &str = "descendant-outlived-stop";

/// An exit known only roughly must outlast the moment by this much to count.
const ROUGH_NS: u64 = 200_000_000;
/// Descendants named per finding.
const MAX_NAMED: usize = 5;

pub(crate) fn findings(c: &AppCtx) -> Vec<(MonoNs, Finding)> {
    let a = c.a;
    let mut out = Vec::new();
    for (i, g) in a.generations.iter().enumerate() {
        let Some(stop) = &g.stop else { continue };
        let next = a.generations[i + 1..]
            .iter()
            .find(|n| start_t(n).is_some_and(|t| t >= stop.requested.t));
        let (done, started_next) = match (next.and_then(start_t), stop.confirmed) {
            (Some(t), _) => (t, true),
            (None, Some(cf)) => (cf.t, false),
            (None, None) => continue,
        };
        let main = c.main_pid(g);
        let alive: Vec<&SeenProcess> = c
            .processes_of(g)
            .into_iter()
            .filter(|p| Some(p.pid) != main && p.first_seen.t < done)
            .filter(|p| match p.exit {
                None => true,
                Some(x) if x.precision == Precision::Exact => x.t > done,
                Some(x) => x.t > done + ROUGH_NS,
            })
            .collect();
        if alive.is_empty() {
            continue;
        }
        let first = alive[0];
        let outside = |p: &SeenProcess| -> Option<bool> {
            a.snapshots
                .iter()
                .find_map(|s| s.process(p.pid).map(|x| !x.in_tree))
        };
        let names: Vec<String> = alive
            .iter()
            .take(MAX_NAMED)
            .map(|p| {
                let cmd = p
                    .cmd
                    .as_deref()
                    .map(|x| format!(" (`{}`)", short_cmd(x)))
                    .unwrap_or_default();
                let until = match p.exit {
                    Some(x) => format!(
                        "exited at {}, {} later",
                        c.at(x.t),
                        c.span(x.t.saturating_sub(done))
                    ),
                    None => format!("still alive when the capture ended at {}", c.at(c.end())),
                };
                let tree = if outside(p) == Some(true) {
                    ", outside pm2's tree"
                } else {
                    ""
                };
                format!("pid {}{cmd}{tree}: {until}", p.pid)
            })
            .collect();
        let more = alive.len().saturating_sub(MAX_NAMED);
        let more_w = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        let main_w = main.map(|p| format!(" (main pid {p})")).unwrap_or_default();
        let moment = if started_next {
            format!(
                "pm2 started {}'s next generation at {}",
                c.label(),
                c.at(done)
            )
        } else {
            format!("pm2 reported {} stopped at {}", c.label(), c.at(done))
        };
        let gen_w = g
            .restart_time
            .map(|r| format!("generation {r}"))
            .unwrap_or_else(|| "the stopped generation".into());
        let summary = format!(
            "{moment} while {} of {gen_w}{main_w} {} still running: {}{more_w}.",
            if alive.len() == 1 {
                "a descendant"
            } else {
                "descendants"
            },
            if alive.len() == 1 { "was" } else { "were" },
            names.join("; ")
        );
        let why = if alive.iter().all(|p| outside(p) == Some(true)) {
            "It was outside pm2's process tree (double-forked), so pm2 neither signalled nor \
             waited for it."
                .to_owned()
        } else if c.waits_for_main_pid_only() {
            "pm2 before 7 signals the tree but waits only for the main pid before it calls the \
             generation stopped."
                .to_owned()
        } else {
            "pm2 did not wait for it.".to_owned()
        };
        let mut chain = vec![format!(
            "pm2 asked {gen_w}{main_w} to stop at {}.",
            c.at(stop.requested.t)
        )];
        let mut evidence = vec![ev(
            stop.requested.t,
            Source::Bus,
            format!("Stopping app {}", c.label()),
        )];
        if let Some(x) = super::ctx::end_t(g) {
            chain.push(format!("Its main process exited at {}.", c.at(x)));
            evidence.push(ev(
                x,
                Source::Proc,
                format!(
                    "exit of main pid {}",
                    main.map(|p| p.to_string()).unwrap_or_default()
                ),
            ));
        }
        chain.push(format!("{moment}. {why}"));
        evidence.push(ev(
            done,
            Source::Bus,
            if started_next {
                format!("{} starting (next generation)", c.label())
            } else {
                format!("{}: daemon says the process is killed", c.label())
            },
        ));
        for p in alive.iter().take(MAX_NAMED) {
            let held = if p.held.is_empty() {
                String::new()
            } else {
                format!(" (it held {} at its last snapshot)", p.held.join(", "))
            };
            match p.exit {
                Some(x) => {
                    chain.push(format!(
                        "pid {} ran on alongside{held} until {}.",
                        p.pid,
                        c.at(x.t)
                    ));
                    evidence.push(ev(
                        x.t,
                        Source::Proc,
                        format!(
                            "exit pid {} {}{held}",
                            p.pid,
                            p.exit_status.clone().unwrap_or_default()
                        ),
                    ));
                }
                None => chain.push(format!(
                    "pid {} was still running when the capture ended.",
                    p.pid
                )),
            }
        }
        let name = c.cli_name();
        let remedy = format!(
            "Make the main process stop its children and exit only after they are gone (forward \
             SIGINT/SIGTERM and wait for them); never detach workers out of the process pm2 \
             starts.{} Until then, stop with `pm2 stop {name}`, wait until pid {} has exited, then \
             `pm2 start {name}`.",
            if c.waits_for_main_pid_only() {
                " pm2 7+ waits for the whole process tree (up to kill_timeout)."
            } else {
                ""
            },
            first.pid
        );
        out.push((
            done,
            c.finding(KIND, Severity::Warning, summary, chain, evidence, remedy),
        ));
    }
    out
}
