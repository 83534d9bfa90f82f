//! `ready-timeout`: with `wait_ready`, a new generation did not send `process.send('ready')`
//! within listen_timeout, and pm2 declared it online anyway when the timeout ran out
//! (lib/God.js: `ready_timeout` calls the same `readyCb` as the `ready` message).
//!
//! Every restart, reload or start of such an app is delayed by listen_timeout. And pm2 5.x
//! and 6.x keep that timer running when the generation dies: it is declared online (and a
//! `pm2 restart` answers with its pid) after it already exited. pm2 7.x concludes at the
//! exit instead, without the delay.
//!
//! Evidence: the generation's start, its `ready` (absent), the daemon's `online` line
//! listen_timeout later, its exit when it was already dead, and the request's reply.

use super::ctx::{end_source, ev, exit_words, plural, request_words, AppCtx};
use super::{Finding, Severity};
use crate::event::{MonoNs, Source};
use crate::timeline::{Generation, TimeRef};

pub const KIND: &str = "ready-timeout";

/// pm2's timer is armed a little after the `starting` line; an `online` this much before
/// start + listen_timeout still counts as the timeout.
const EARLY_NS: u64 = 100_000_000;
/// Event-loop delay accepted after start + listen_timeout (a busy daemon; the cluster
/// worker's timer starts at its `online` event, a few hundred ms after `starting`).
const LATE_NS: u64 = 1_000_000_000;
/// pm2 7 concludes a generation that dies before `ready` at its exit: the `online` line comes
/// in the same tick as the exit line. Such an `online` is not the timeout.
const AT_EXIT_NS: u64 = 50_000_000;

/// A generation pm2 declared online when listen_timeout ran out.
struct TimedOut<'a> {
    g: &'a Generation,
    started: MonoNs,
    online: TimeRef,
    /// It had already ended when it was declared online.
    dead: Option<TimeRef>,
}

fn timed_out<'a>(c: &AppCtx<'a>) -> Vec<TimedOut<'a>> {
    let a = c.a;
    let lt = a.config.listen_timeout_ms() * 1_000_000;
    // Only pm2 7 writes an `online` line at a waiting generation's exit; in 5.x and 6.x an
    // `online` close to some exit is a timer that ran out then (a crash loop's generations
    // start every few hundred ms, so that happens).
    let concludes_at_exit = !c.is_pm2_before_7();
    let mut out: Vec<TimedOut> = Vec::new();
    for g in &a.generations {
        // A generation already running when the capture began has no known spawn instant:
        // the watcher's first sight of it is the capture's start, and pm2's `pm_uptime`
        // (what a getMonitorData reply dates it by) is when it went online, listen_timeout
        // after its spawn under wait_ready.
        if g.before_capture {
            continue;
        }
        // pm2 arms the timer right after the spawn: the kernel's instant of the main process
        // when the watcher saw it (the daemon's `starting` line can arrive late).
        let spawned = c
            .main_pid(g)
            .and_then(|pid| a.process(pid))
            .filter(|p| {
                g.starting.is_none_or(|s| {
                    p.first_seen.t <= s.t + EARLY_NS && p.first_seen.t + LATE_NS >= s.t
                })
            })
            .map(|p| p.first_seen.t);
        let Some(started) = spawned.into_iter().chain(g.starting.map(|s| s.t)).min() else {
            continue;
        };
        let due = started + lt;
        let at_an_exit = |t: MonoNs| {
            concludes_at_exit
                && a.generations
                    .iter()
                    .filter_map(|x| x.exit.as_ref())
                    .any(|x| x.at.t.abs_diff(t) <= AT_EXIT_NS)
        };
        let Some(online) = a.online_reports.iter().find(|o| {
            o.t + EARLY_NS >= due
                && o.t <= due + LATE_NS
                && !at_an_exit(o.t)
                && !out.iter().any(|h| h.online.t == o.t)
        }) else {
            continue;
        };
        if g.ready_msg.is_some_and(|r| r.t <= online.t) || g.listening.is_some() {
            continue;
        }
        let dead = g.ended().filter(|e| e.t < online.t);
        out.push(TimedOut {
            g,
            started,
            online: *online,
            dead,
        });
    }
    out
}

pub fn findings(c: &AppCtx) -> Vec<(MonoNs, Finding)> {
    let a = c.a;
    if !a.config.waits_ready() {
        return Vec::new();
    }
    let hits = timed_out(c);
    let Some(first) = hits.first() else {
        return Vec::new();
    };
    let lt_ms = a.config.listen_timeout_ms();
    let label = c.label();
    let name = c.cli_name();
    let req = first.g.started_by.and_then(|i| c.tl.requests.get(i));
    let waited = first.online.t.saturating_sub(first.started);
    let by_req = match req {
        Some(r) => format!(
            "`{}` at {}: ",
            super::ctx::cli_words(&r.method),
            c.at(r.asked)
        ),
        None => String::new(),
    };
    let answered = req
        .and_then(|r| Some((r, r.answered?)))
        .map(|(r, t)| {
            format!(
                "; the `{}` request was answered only after {}",
                super::ctx::cli_words(&r.method),
                c.span(t.saturating_sub(r.asked))
            )
        })
        .unwrap_or_default();
    let dead_n = hits.iter().filter(|h| h.dead.is_some()).count() as u64;
    let mut summary = match first.dead {
        None => format!(
            "{by_req}{label}{} never sent `ready` (wait_ready), so pm2 waited the whole \
             listen_timeout ({lt_ms} ms) and declared it online anyway at {}, {} after it \
             started{answered}.",
            c.pid_words(first.g),
            c.at(first.online.t),
            c.span(waited)
        ),
        Some(d) => format!(
            "{by_req}pm2 declared {label} online at {}, {} after its generation{} started, when listen_timeout \
             ({lt_ms} ms) ran out without `ready`; but it had already {} at {}: pm2 showed a \
             dead process as online{answered}.",
            c.at(first.online.t),
            c.span(waited),
            c.pid_words(first.g),
            exit_words(first.g),
            c.at(d.t)
        ),
    };
    if hits.len() > 1 {
        summary.pop();
        summary.push_str(&format!(
            "; in all {} waited out listen_timeout{}.",
            plural(hits.len() as u64, "generation", "generations"),
            if dead_n > 0 {
                format!(", {dead_n} of them already dead when declared online")
            } else {
                String::new()
            }
        ));
    }
    let mut chain = Vec::new();
    if let Some(r) = req {
        chain.push(format!("{} at {}.", request_words(r), c.at(r.asked)));
    }
    chain.push(format!(
        "{label} runs with wait_ready: pm2 reports a new generation online only when it sends \
         `process.send('ready')`, or when listen_timeout ({lt_ms} ms) runs out."
    ));
    let mut evidence = Vec::new();
    if let Some(r) = req {
        evidence.push(super::ctx::asked_evidence(r, &label));
        if let Some(t) = r.answered {
            evidence.push(ev(
                t,
                Source::Rpc,
                format!(
                    "{} {label} answered after {}",
                    r.method,
                    c.span(t - r.asked)
                ),
            ));
        }
    }
    for h in hits.iter().take(5) {
        let pid = c.pid_words(h.g);
        chain.push(match h.dead {
            None => format!(
                "The generation{pid} started at {} sent no `ready`; pm2 declared it online at {} \
                 ({} later).",
                c.at(h.started),
                c.at(h.online.t),
                c.span(h.online.t.saturating_sub(h.started))
            ),
            Some(d) => format!(
                "The generation{pid} started at {} {} at {} without sending `ready`; pm2's \
                 timer still ran and declared it online at {}.",
                c.at(h.started),
                exit_words(h.g),
                c.at(d.t),
                c.at(h.online.t)
            ),
        });
        evidence.push(ev(
            h.started,
            Source::Bus,
            format!("{label}{pid} starting (wait_ready)"),
        ));
        if let Some(d) = h.dead {
            evidence.push(ev(
                d.t,
                end_source(h.g),
                format!("{label}{pid} {}", exit_words(h.g)),
            ));
        }
        evidence.push(ev(
            h.online.t,
            Source::Bus,
            format!("{label} online (daemon log), no `ready` received"),
        ));
    }
    if hits.len() > 5 {
        chain.push(format!(
            "{} more generations went the same way.",
            hits.len() - 5
        ));
    }
    let mut remedy = format!(
        "Make the app call `process.send('ready')` once it really serves (after `listen` \
         calls back and its dependencies are reachable), or start it without `--wait-ready` \
         if it cannot tell: a missing `ready` is not a failed health check for pm2, it only \
         costs listen_timeout ({lt_ms} ms) on every restart and reload of {name}."
    );
    if dead_n > 0 {
        remedy.push_str(&format!(
            " A generation that dies before `ready` is still declared online by pm2 5.x and \
             6.x when the timer runs out (pm2 7 concludes at the exit): trust the process, not \
             `pm2 ls` (`pm2 logs {name} --err --lines 50` shows why it died)."
        ));
    }
    let severity = if dead_n > 0 {
        Severity::Error
    } else {
        Severity::Warning
    };
    vec![(
        first.started,
        c.finding(KIND, severity, summary, chain, evidence, remedy),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CaptureInfo, ProcEvent};
    use crate::pm2::daemon_log::DaemonLogLine;
    use crate::pm2::meaning::{MonitorProc, Pm2Call, Target};
    use crate::timeline::{AppRef, Entry, EntryKind, Outcome, Timeline};

    const MS: u64 = 1_000_000;

    fn put(tl: &mut Timeline, t: u64, source: Source, app: bool, kind: EntryKind) {
        tl.apply(&Entry {
            t,
            source,
            app: app.then(|| AppRef {
                pm_id: 0,
                name: Some("web".into()),
            }),
            kind,
        });
    }

    fn line(tl: &mut Timeline, t: u64, log: DaemonLogLine) {
        put(
            tl,
            t,
            Source::Bus,
            true,
            EntryKind::Daemon { at: None, log },
        );
    }

    /// A reply on connection 1 to request number `ask` (`None`: a request not seen).
    fn answered(
        method: &str,
        ask: Option<u64>,
        procs: Vec<MonitorProc>,
        new_pid: Option<i64>,
    ) -> EntryKind {
        EntryKind::RequestAnswered {
            conn: 1,
            id: format!("1:{method}"),
            ask,
            method: Some(method.into()),
            latency_ns: None,
            outcome: Outcome::Ok,
            new_pid,
            procs,
            result: None,
        }
    }

    /// A wait_ready app (pid 100) already running when the capture began, online since
    /// +40 ms (`pm_uptime`), seen by the watcher at +50 ms; `pm2 restart` at +0.9 s stops it; the new generation starts at
    /// +1 s and, never sending `ready`, is declared online when listen_timeout runs out,
    /// at +4.04 s (CI's timing on pm2 5.4.3).
    ///
    /// With `online_line_first`, the daemon's `online` line for the running generation arrives
    /// at +5 ms, before the first snapshot: the recorder began while pm2 was declaring it
    /// online (CI's run on pm2 5.4.3, whose `pm_uptime` is the spawn, so the test's "online
    /// for 1.3 s" wait ended at once).
    fn restart_of_a_running_app(online_line_first: bool) -> Timeline {
        let mut tl = Timeline::new(&CaptureInfo::default());
        if online_line_first {
            line(
                &mut tl,
                5 * MS,
                DaemonLogLine::Online {
                    app: "web".into(),
                    id: 0,
                },
            );
        }
        let proc = MonitorProc {
            pm_id: Some(0),
            name: Some("web".into()),
            pid: Some(100),
            status: Some("online".into()),
            restart_time: Some(0),
            wait_ready: Some(true),
            // Online (its own listen_timeout ran out) just before the capture began.
            pm_uptime: Some(40),
            ..MonitorProc::default()
        };
        put(
            &mut tl,
            10 * MS,
            Source::Rpc,
            false,
            answered("getMonitorData", None, vec![proc], None),
        );
        let tracked: ProcEvent = serde_json::from_value(serde_json::json!({
            "kind": "tracked",
            "who": {"pid": 100, "start": null, "ppid": 1, "how": null, "cmd": "node app.js",
                    "app": {"pm2_home": "/h", "pm_id": 0, "name": "web", "generation": 0,
                            "unique_id": null}},
            "via": "proc_scan",
            "timing": {"how": "before_start", "observed_ns": 50 * MS}
        }))
        .expect("a tracked event");
        put(
            &mut tl,
            50 * MS,
            Source::Proc,
            true,
            EntryKind::Proc {
                event: Box::new(tracked),
            },
        );
        put(
            &mut tl,
            900 * MS,
            Source::Rpc,
            true,
            EntryKind::RequestAsked {
                conn: 1,
                id: "1:restartProcessId".into(),
                ask: 1,
                call: Pm2Call::RestartProcessId {
                    target: Some(Target::Id(0)),
                    env: None,
                },
            },
        );
        let w = |s: &str| s.to_owned();
        line(
            &mut tl,
            950 * MS,
            DaemonLogLine::Stopping {
                app: w("web"),
                id: 0,
                old: false,
            },
        );
        line(
            &mut tl,
            960 * MS,
            DaemonLogLine::Exited {
                app: w("web"),
                id: 0,
                code: 0,
                signal: w("SIGINT"),
                old: false,
            },
        );
        line(
            &mut tl,
            1000 * MS,
            DaemonLogLine::Starting {
                app: w("web"),
                id: 0,
                mode: w("fork"),
            },
        );
        line(
            &mut tl,
            4040 * MS,
            DaemonLogLine::Online {
                app: w("web"),
                id: 0,
            },
        );
        put(
            &mut tl,
            4050 * MS,
            Source::Rpc,
            true,
            answered("restartProcessId", Some(1), Vec::new(), Some(101)),
        );
        tl
    }

    #[test]
    fn a_generation_running_before_the_capture_is_not_timed_from_the_capture_start() {
        for online_line_first in [false, true] {
            let tl = restart_of_a_running_app(online_line_first);
            let a = tl.app(0).expect("web");
            assert_eq!(a.generations.len(), 2, "{:#?}", a.generations);
            assert!(a.generations[0].before_capture, "{:#?}", a.generations);
            assert_eq!(a.generations[0].pid, Some(100), "{:#?}", a.generations);
            let c = AppCtx::new(&tl, a);
            let f = findings(&c);
            assert_eq!(f.len(), 1, "{f:#?}");
            let f = &f[0].1;
            // The replacement (started at +1 s) is the one that waited; the stopped
            // generation (seen at +50 ms, exited at +0.96 s) is not "a dead process declared
            // online".
            assert_eq!(
                f.severity,
                Severity::Warning,
                "online line first: {online_line_first}: {}",
                f.summary
            );
            assert!(f.summary.contains("never sent `ready`"), "{}", f.summary);
            assert!(!f.summary.contains("dead process"), "{}", f.summary);
        }
    }
}
