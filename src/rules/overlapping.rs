//! `overlapping-restart`: a restart/stop/reload for an app arrived while another request
//! for it was still in progress (two CLIs, a deploy script and a human), or while pm2 was
//! waiting to restart it (`waiting restart`), with its consequence: an error reply, two
//! generations started, or which request took effect.
//!
//! Evidence: both requests (asked/answered on the proxied RPC connections, with the client
//! pids), the replies, the generations they started.

use super::ctx::{cli_words, ev, request_words, start_t, AppCtx};
use super::{Finding, Severity};
use crate::event::{MonoNs, Source};
use crate::timeline::Request;

pub(crate) const KIND: &str = "overlapping-restart";

/// Earlier requests compared with each one (a request unanswered for longer is forgotten).
const LOOK_BACK: usize = 64;

fn answered_words(c: &AppCtx, r: &Request) -> String {
    match (&r.error, r.answered, r.new_pid) {
        (Some(e), Some(t), _) => format!(
            "the daemon answered it with the error \"{}\" after {}",
            super::ctx::cut(e, 120),
            c.span(t.saturating_sub(r.asked))
        ),
        (Some(e), None, _) => format!("it failed: \"{}\"", super::ctx::cut(e, 120)),
        (None, Some(t), Some(p)) => format!("it completed at {} with new pid {p}", c.at(t)),
        (None, Some(t), None) => format!("it completed at {}", c.at(t)),
        (None, None, _) => "it was never answered within the capture".into(),
    }
}

/// A request that arrived while pm2 was waiting to restart the app (restart_delay).
fn while_waiting(c: &AppCtx, b: &Request) -> Finding {
    let a = c.a;
    // The generation that had exited (pm2 reports `waiting restart` only in its process
    // list, so the crash is when the waiting began).
    let dead = a
        .generations
        .iter()
        .rev()
        .find(|g| super::ctx::end_t(g).is_some_and(|t| t <= b.asked));
    let waiting_since = dead.and_then(super::ctx::end_t).unwrap_or(b.asked);
    let dead_pid = dead.and_then(|g| c.main_pid(g));
    let later = a
        .generations
        .iter()
        .find(|g| start_t(g).is_some_and(|t| t > b.asked) && g.started_by.is_none());
    let stale = match (&b.error, dead_pid) {
        (Some(e), Some(p)) if e.contains(&format!("pid {p} ")) => format!(
            " (pid {p} is the process that had exited: pm2 keeps its pid on record while it \
             waits)"
        ),
        _ => String::new(),
    };
    let then = match later.and_then(start_t) {
        Some(t) => format!(
            "; pm2 started the app itself at {} when the delay ran out{}",
            c.at(t),
            later.map(|g| c.pid_words(g)).unwrap_or_default()
        ),
        None => String::new(),
    };
    let summary = format!(
        "`{}` of {} arrived at {} while pm2 was waiting to restart it after a crash \
         (it had exited at {} and restart_delay was running); {}{stale}{then}.",
        cli_words(&b.method),
        c.label(),
        c.at(b.asked),
        c.at(waiting_since),
        answered_words(c, b)
    );
    let mut chain = vec![
        format!(
            "{} exited at {} and pm2 set it to `waiting restart`: it restarts it by itself when \
             restart_delay runs out.",
            c.label(),
            c.at(waiting_since)
        ),
        format!(
            "{} arrived at {}; {}{stale}.",
            request_words(b),
            c.at(b.asked),
            answered_words(c, b)
        ),
    ];
    if !then.is_empty() {
        chain.push(format!("The pending automatic restart went ahead{then}."));
    }
    let mut evidence = vec![
        ev(
            waiting_since,
            Source::Proc,
            format!("{} exited; waiting restart", c.label()),
        ),
        ev(
            b.asked,
            Source::Rpc,
            format!("{} {} asked", b.method, c.label()),
        ),
    ];
    if let (Some(t), Some(e)) = (b.answered, &b.error) {
        evidence.push(ev(
            t,
            Source::Rpc,
            format!("{} -> error \"{}\"", b.method, super::ctx::cut(e, 80)),
        ));
    }
    if let Some(g) = later {
        super::ctx::generation_evidence(c, g, &mut evidence);
    }
    let name = c.cli_name();
    c.finding(
        KIND,
        Severity::Warning,
        summary,
        chain,
        evidence,
        format!(
            "Let the pending automatic restart happen, or `pm2 stop {name}` first and then \
             `pm2 start {name}`: a restart while pm2 waits to restart the app is refused and the \
             CLI exits 1."
        ),
    )
}

pub(crate) fn findings(c: &AppCtx) -> Vec<(MonoNs, Finding)> {
    let a = c.a;
    let mut out = Vec::new();
    let reqs = c.requests();
    for (k, (ib, b)) in reqs.iter().enumerate() {
        // The earliest request still in progress when b arrived.
        let first = reqs[k.saturating_sub(LOOK_BACK)..k].iter().find(|(_, x)| {
            x.asked <= b.asked && x.answered.is_none_or(|t| b.asked < t) && x.conn != b.conn
        });
        let waiting = a
            .statuses
            .iter()
            .rev()
            .find(|s| s.at.t <= b.asked)
            .is_some_and(|s| s.status == "waiting restart");
        let Some((ia, x)) = first.copied() else {
            if waiting && b.method != "stopProcessId" && b.method != "deleteProcessId" {
                out.push((b.asked, while_waiting(c, b)));
            }
            continue;
        };
        // What followed: generations started while either was in progress.
        let end = [x.answered, b.answered]
            .into_iter()
            .map(|t| t.unwrap_or(u64::MAX))
            .max()
            .unwrap_or(u64::MAX);
        let spawned: Vec<usize> = a
            .generations
            .iter()
            .enumerate()
            .filter(|(_, g)| {
                g.started_by == Some(ia)
                    || g.started_by == Some(*ib)
                    || start_t(g).is_some_and(|t| t >= x.asked && t <= end)
            })
            .map(|(i, _)| i)
            .collect();
        let consequence = if b.error.is_some() || x.error.is_some() {
            let second_failed = b.error.is_some();
            let (failed, other): (&Request, &Request) = if second_failed { (b, x) } else { (x, b) };
            format!(
                "the {} one got the error \"{}\", and the {} one {}",
                if second_failed { "second" } else { "first" },
                super::ctx::cut(failed.error.as_deref().unwrap_or(""), 120),
                if second_failed { "first" } else { "second" },
                match (other.error.as_ref(), other.new_pid) {
                    (None, Some(p)) => format!("took effect (new pid {p})"),
                    (None, None) => "took effect".into(),
                    (Some(_), _) => "failed too".into(),
                }
            )
        } else if spawned.len() > 1 {
            format!(
                "both went through and {} generations were started back to back",
                spawned.len()
            )
        } else {
            "both went through".into()
        };
        let summary = format!(
            "Two requests for {} overlapped: {} arrived at {} while {} asked at {} was still in \
             progress; {consequence}.",
            c.label(),
            request_words(b),
            c.at(b.asked),
            request_words(x),
            c.at(x.asked)
        );
        let chain = vec![
            format!(
                "{} asked at {}; {}.",
                request_words(x),
                c.at(x.asked),
                answered_words(c, x)
            ),
            format!(
                "{} asked at {}, {} into the first; {}.",
                request_words(b),
                c.at(b.asked),
                c.span(b.asked.saturating_sub(x.asked)),
                answered_words(c, b)
            ),
            format!(
                "pm2 acts on each request as it comes: a second stop/restart of an app that is \
                 being stopped or started {}.",
                if b.error.is_some() || x.error.is_some() {
                    "is refused (the process still exists, or is already online)"
                } else {
                    "runs interleaved with the first"
                }
            ),
        ];
        let mut evidence = vec![
            ev(
                x.asked,
                Source::Rpc,
                format!("{} {} asked (first)", x.method, c.label()),
            ),
            ev(
                b.asked,
                Source::Rpc,
                format!("{} {} asked (second)", b.method, c.label()),
            ),
        ];
        for r in [x, b] {
            if let Some(t) = r.answered {
                let what = match (&r.error, r.new_pid) {
                    (Some(e), _) => format!("{} -> error \"{}\"", r.method, super::ctx::cut(e, 80)),
                    (None, Some(p)) => format!("{} -> new pid {p}", r.method),
                    _ => format!("{} -> ok", r.method),
                };
                evidence.push(ev(t, Source::Rpc, what));
            }
        }
        let remedy = format!(
            "Run one restart/stop/reload per app at a time: serialize deploy scripts with a lock \
             and wait for `pm2 {} {}` to return before the next command; check `pm2 jlist` \
             afterwards, since the refused command exits 1.",
            cli_words(&x.method).trim_start_matches("pm2 "),
            c.cli_name()
        );
        out.push((
            b.asked,
            c.finding(KIND, Severity::Warning, summary, chain, evidence, remedy),
        ));
    }
    out
}
