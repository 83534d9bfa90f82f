//! `reload-without-ready`: a cluster reload stopped an instance's healthy worker while the
//! worker replacing it had not become ready.
//!
//! `pm2 reload` (reloadProcessId, one instance after the other) parks the running worker as
//! `_old_<pm_id>`, starts a new one, and stops the old one when the new one listens
//! (`-reload- New worker listening`), sends `ready` under wait_ready, or when listen_timeout
//! runs out, whichever comes first (lib/God/Reload.js). A release that crashes at start thus
//! replaces every healthy worker with a crash loop: pm2 does not roll back.
//!
//! For the whole app (all its instances) the rule says, per instance, when the healthy worker
//! was stopped and whether its replacement ever became ready; and over time how many
//! healthy workers the app had compared with before the reload: the windows with fewer,
//! and with none (an outage, with its length).
//!
//! A worker is healthy from when it was ready (the reload's listening line or its `ready`
//! message; a worker running before the capture from the start; one that pm2 declared
//! online and that stayed up past min_uptime from then, or past 10 × min_uptime when it
//! then crashed) until pm2 began stopping it or it ended.
//!
//! Evidence: each reload request, the old worker's stop and exit, the replacement's start,
//! failure and errored, and the instants the healthy count fell and rose.

use super::ctx::{cli_words, end_source, ev, exit_words, plural, AppCtx};
use super::{Finding, Severity};
use crate::event::{MonoNs, Source};
use crate::timeline::{AppTimeline, Generation, Request, TimeRef, Timeline};

pub const KIND: &str = "reload-without-ready";

/// A worker that crashed within this many min_uptimes of coming online never served.
const CRASHED_UPTIMES: u64 = 10;

/// When generation `g` became ready, as the reload understands it: the daemon's listening
/// line, or its `ready` message.
fn ready_t(g: &Generation) -> Option<MonoNs> {
    g.ready().map(|r| r.t)
}

/// When generation `g` of app `a` served, as far as the capture tells: `[from, to)`.
fn healthy_span(tl: &Timeline, a: &AppTimeline, g: &Generation) -> Option<(MonoNs, MonoNs)> {
    let end_of = |g: &Generation| {
        g.stop
            .as_ref()
            .map(|s| s.requested.t)
            .into_iter()
            .chain(g.ended().map(|e| e.t))
            .min()
    };
    let to = end_of(g).unwrap_or(u64::MAX);
    let min_up = a.config.min_uptime_ms() * 1_000_000;
    let from = if g.before_capture {
        (g.early_exit != Some(true)).then(|| tl.first_t.unwrap_or(0))?
    } else if let Some(r) = ready_t(g) {
        r
    } else {
        // Declared online and seen up for min_uptime after that; one that then crashed
        // within CRASHED_UPTIMES × min_uptime was failing to start, not serving (under load a
        // crash at start can take longer than min_uptime).
        let on = g.online?.t;
        let lived = to.min(tl.last_t.unwrap_or(0)).saturating_sub(on);
        let crashed = g.stop.is_none()
            && g.ended().is_some()
            && g.exit.as_ref().and_then(|x| x.code).unwrap_or(1) != 0;
        let enough = if crashed {
            min_up * CRASHED_UPTIMES
        } else {
            min_up
        };
        (lived >= enough).then_some(on)?
    };
    (from < to).then_some((from, to))
}

/// One instance whose healthy worker a reload stopped too early.
struct Stopped<'a> {
    a: &'a AppTimeline,
    old: &'a Generation,
    req: &'a Request,
    /// When pm2 began stopping the old worker (or it ended).
    stopped: TimeRef,
    /// The replacements started by this reload (until the next reload of the instance).
    replacements: Vec<&'a Generation>,
    /// When one of them became ready (after the old one was stopped), if ever.
    ready: Option<MonoNs>,
}

fn label(a: &AppTimeline) -> String {
    match &a.name {
        Some(n) => format!("{n}:{}", a.pm_id),
        None => format!("#{}", a.pm_id),
    }
}

/// The healthy-worker count of `apps` over `[from, end]`: `(t, count)` at each change.
fn healthy_counts(
    tl: &Timeline,
    apps: &[&AppTimeline],
    from: MonoNs,
) -> (usize, Vec<(MonoNs, usize)>) {
    let mut spans = Vec::new();
    for a in apps {
        for g in &a.generations {
            if let Some(s) = healthy_span(tl, a, g) {
                spans.push(s);
            }
        }
    }
    let before = spans
        .iter()
        .filter(|(f, t)| *f < from && *t >= from)
        .count();
    let mut edges: Vec<(MonoNs, i64)> = Vec::new();
    for (f, t) in &spans {
        if *f >= from {
            edges.push((*f, 1));
        }
        if *t >= from && *t != u64::MAX {
            edges.push((*t, -1));
        }
    }
    edges.sort();
    let mut n = before as i64;
    let mut out = Vec::new();
    let mut i = 0;
    while i < edges.len() {
        let t = edges[i].0;
        while i < edges.len() && edges[i].0 == t {
            n += edges[i].1;
            i += 1;
        }
        out.push((t, n.max(0) as usize));
    }
    (before, out)
}

pub fn findings(tl: &Timeline) -> Vec<(MonoNs, Finding)> {
    // Instances by app name (an app without a name is alone).
    let mut groups: Vec<Vec<&AppTimeline>> = Vec::new();
    for a in tl.apps.values() {
        match groups
            .iter_mut()
            .find(|g| a.name.is_some() && g[0].name == a.name)
        {
            Some(g) => g.push(a),
            None => groups.push(vec![a]),
        }
    }
    let mut out = Vec::new();
    for apps in groups {
        if let Some(f) = app_finding(tl, &apps) {
            out.push(f);
        }
    }
    out
}

fn stopped_too_early<'a>(tl: &'a Timeline, a: &'a AppTimeline) -> Vec<Stopped<'a>> {
    let mut out = Vec::new();
    for (i, old) in a.generations.iter().enumerate() {
        let Some(req) = old.parked_by.and_then(|r| tl.requests.get(r)) else {
            continue;
        };
        let Some(stopped) = old.stop.as_ref().map(|s| s.requested).or(old.ended()) else {
            continue; // still running: nothing was stopped
        };
        // Healthy when the reload began?
        if healthy_span(tl, a, old).is_none_or(|(f, t)| f > req.asked || t < req.asked) {
            continue;
        }
        let next_reload = a.generations[i + 1..]
            .iter()
            .filter_map(|g| g.parked_by)
            .filter_map(|r| tl.requests.get(r))
            .map(|r| r.asked)
            .find(|t| *t > req.asked)
            .unwrap_or(u64::MAX);
        let replacements: Vec<&Generation> = a.generations[i + 1..]
            .iter()
            .filter(|g| {
                g.started()
                    .is_some_and(|s| s.t >= req.asked && s.t < next_reload)
            })
            .collect();
        let ready = replacements.iter().filter_map(|g| ready_t(g)).min();
        if ready.is_some_and(|r| r <= stopped.t) {
            continue;
        }
        out.push(Stopped {
            a,
            old,
            req,
            stopped,
            replacements,
            ready,
        });
    }
    out
}

fn app_finding(tl: &Timeline, apps: &[&AppTimeline]) -> Option<(MonoNs, Finding)> {
    let mut hits: Vec<Stopped> = apps.iter().flat_map(|a| stopped_too_early(tl, a)).collect();
    if hits.is_empty() {
        return None;
    }
    hits.sort_by_key(|h| h.stopped.t);
    let first = apps[0];
    let c = AppCtx::new(tl, first);
    let name = c.cli_name();
    let lt_ms = first.config.listen_timeout_ms();
    let waits = first.config.waits_ready();
    let t0 = hits.iter().map(|h| h.req.asked).min().unwrap_or(0);
    let end = tl.last_t.unwrap_or(t0);
    let (n0, counts) = healthy_counts(tl, apps, t0);
    // Windows with fewer healthy workers than before the reload, and with none.
    let mut fewer: Vec<(MonoNs, Option<MonoNs>, usize)> = Vec::new();
    let mut none: Vec<(MonoNs, Option<MonoNs>)> = Vec::new();
    let mut low = n0;
    for (t, n) in &counts {
        low = low.min(*n);
        match fewer.last_mut() {
            Some((_, to @ None, m)) => {
                if *n >= n0 {
                    *to = Some(*t);
                } else {
                    *m = (*m).min(*n);
                }
            }
            _ if *n < n0 => fewer.push((*t, None, *n)),
            _ => {}
        }
        match none.last_mut() {
            Some((_, to @ None)) if *n > 0 => *to = Some(*t),
            Some((_, None)) => {}
            _ if *n == 0 && n0 > 0 => none.push((*t, None)),
            _ => {}
        }
    }
    let ready_words = if waits { "sent `ready`" } else { "listened" };
    // Per instance, in words.
    let mut per = Vec::new();
    let mut chain = vec![format!(
        "`{}` ({}) replaced {} one at a time: for each it started a new worker, parked the \
         running one as `_old_<id>`, and stopped that one as soon as the new one {ready_words} \
         or listen_timeout ({lt_ms} ms) ran out, whichever came first.",
        cli_words(&hits[0].req.method),
        hits[0].req.method,
        plural(apps.len() as u64, "instance", "instances")
    )];
    let mut evidence = Vec::new();
    for h in &hits {
        let l = label(h.a);
        let pid = h.old.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        let after = h.stopped.t.saturating_sub(h.req.asked);
        let timeout = after + 250_000_000 >= lt_ms * 1_000_000;
        let fate = replacement_words(&c, h, ready_words);
        per.push(format!(
            "{l}'s worker{pid} at {}, {} after its reload began{}, {fate}",
            c.at(h.stopped.t),
            c.span(after),
            if timeout { " (listen_timeout)" } else { "" }
        ));
        chain.push(format!(
            "{l}: the reload began at {}; its healthy worker{pid} was stopped at {}{}; {fate}.",
            c.at(h.req.asked),
            c.at(h.stopped.t),
            if timeout {
                format!(", when listen_timeout ({lt_ms} ms) ran out")
            } else {
                String::new()
            }
        ));
        evidence.push(ev(
            h.req.asked,
            Source::Rpc,
            format!("{} {l} asked", h.req.method),
        ));
        evidence.push(ev(
            h.stopped.t,
            Source::Bus,
            format!("{l} stopping outgoing worker _old_{}{pid}", h.a.pm_id),
        ));
        if let Some(e) = h.old.ended() {
            evidence.push(ev(
                e.t,
                end_source(h.old),
                format!("{l} old worker{pid} {}", exit_words(h.old)),
            ));
        }
        if let Some(g) = h.replacements.first() {
            if let (Some(s), Some(e)) = (g.started(), g.ended()) {
                evidence.push(ev(s.t, Source::Bus, format!("{l} replacement starting")));
                evidence.push(ev(
                    e.t,
                    Source::Bus,
                    format!("{l} replacement {}", exit_words(g)),
                ));
            }
        }
        if let Some(t) = h.ready {
            evidence.push(ev(t, Source::Bus, format!("{l} replacement {ready_words}")));
        }
        if let Some(st) =
            h.a.statuses
                .iter()
                .find(|s| s.status == "errored" && s.at.t >= h.req.asked)
        {
            evidence.push(ev(
                st.at.t,
                Source::Bus,
                format!("{l} errored ({})", st.via),
            ));
        }
    }
    // The healthy count over time.
    let count_words = if fewer.is_empty() {
        format!(
            "As far as the capture tells, {name} kept its {} throughout: the replacements \
             stayed up once pm2 declared them online, though none signalled that it was ready \
             before its predecessor was stopped.",
            plural(n0 as u64, "healthy worker", "healthy workers")
        )
    } else {
        let mut s = format!(
            "{name} had {} before the reload",
            plural(n0 as u64, "healthy worker", "healthy workers")
        );
        let (f, to, m) = fewer[0];
        s.push_str(&format!(
            ", fewer from {} ({} at the lowest){}",
            c.at(f),
            m,
            match to {
                Some(t) => format!(" until {} ({})", c.at(t), c.span(t - f)),
                None => String::new(),
            }
        ));
        match none.first() {
            Some((f, Some(t))) => s.push_str(&format!(
                ", and none from {} to {}: an outage of {}",
                c.at(*f),
                c.at(*t),
                c.span(t - f)
            )),
            Some((f, None)) => s.push_str(&format!(
                ", and none from {}: an outage of at least {}, not over when the capture ended \
                 at {}",
                c.at(*f),
                c.span(end.saturating_sub(*f)),
                c.at(end)
            )),
            None => {}
        }
        if fewer.len() > 1 {
            s.push_str(&format!(" ({} such windows)", fewer.len()));
        }
        s.push('.');
        s
    };
    for (f, to, _) in fewer.iter().take(3) {
        evidence.push(ev(
            *f,
            Source::Proc,
            format!("{name}: fewer healthy workers than before the reload"),
        ));
        if let Some(t) = to {
            evidence.push(ev(
                *t,
                Source::Proc,
                format!("{name}: healthy workers back to {n0}"),
            ));
        }
    }
    for (f, to) in none.iter().take(3) {
        evidence.push(ev(
            *f,
            Source::Proc,
            format!("{name}: no healthy worker left"),
        ));
        if let Some(t) = to {
            evidence.push(ev(
                *t,
                Source::Proc,
                format!("{name}: a healthy worker again"),
            ));
        }
    }
    chain.push(count_words.clone());
    let summary = format!(
        "`{} {name}` at {} stopped the healthy worker of {} while its replacement had not \
         become ready: {}. {count_words}",
        cli_words(&hits[0].req.method),
        c.at(t0),
        plural(hits.len() as u64, "instance", "instances"),
        per.join("; ")
    );
    let mut remedy = format!(
        "pm2 does not roll back a reload: when listen_timeout ({lt_ms} ms) runs out it stops \
         the old worker whether or not the new one ever became ready, and goes on to the next \
         instance. Now: put the previous release back and `pm2 reload {name}` (or `pm2 \
         restart {name}` when no worker is left). To deploy safely: start the new release \
         beside the running one (another app name or port), check that it answers, and only \
         then switch traffic and stop the old one; "
    );
    if waits {
        remedy.push_str(
            "wait_ready is set, so make the app send `process.send('ready')` only once it \
             really serves, and keep listen_timeout above its real startup time (pm2 still \
             stops the old worker when it runs out).",
        );
    } else {
        remedy.push_str(
            "and let pm2 wait for a real readiness signal (`--wait-ready` with \
             `process.send('ready')` once the app really serves, and a listen_timeout above \
             its startup time) instead of the first `listen`, knowing that pm2 still stops \
             the old worker when listen_timeout runs out.",
        );
    }
    let severity = if none.is_empty() {
        Severity::Warning
    } else {
        Severity::Error
    };
    let mut f = c.finding(KIND, severity, summary, chain, evidence, remedy);
    if apps.len() > 1 {
        // About the whole app, every instance.
        f.pm_id = None;
    }
    Some((t0, f))
}

/// What became of the replacements of one instance, in words.
fn replacement_words(c: &AppCtx, h: &Stopped, ready_words: &str) -> String {
    let n = h.replacements.len() as u64;
    let errored =
        h.a.statuses
            .iter()
            .find(|s| s.status == "errored" && s.at.t >= h.req.asked);
    let quote = h
        .replacements
        .first()
        .and_then(|g| c.failure_line(g))
        .map(|q| format!(" ({q})"))
        .unwrap_or_default();
    match h.ready {
        Some(t) => format!(
            "its replacement became ready only at {} ({} later)",
            c.at(t),
            c.span(t.saturating_sub(h.stopped.t))
        ),
        None if n == 0 => "no replacement started".into(),
        None if h
            .replacements
            .iter()
            .any(|g| healthy_span(c.tl, h.a, g).is_some()) =>
        {
            let on = h
                .replacements
                .iter()
                .find_map(|g| g.online)
                .map(|o| format!("; pm2 declared it online at {}", c.at(o.t)))
                .unwrap_or_default();
            format!("its replacement never {ready_words}{on} and it stayed up")
        }
        None => {
            let died = h
                .replacements
                .iter()
                .filter(|g| g.ended().is_some())
                .count() as u64;
            let mut s = if died == n {
                format!(
                    "its replacement never became ready: {} died{quote}",
                    plural(n, "start", "starts in a row"),
                )
            } else {
                format!("its replacement never became ready{quote}")
            };
            if let Some(e) = errored {
                s.push_str(&format!(
                    " and {} went errored at {}",
                    label(h.a),
                    c.at(e.at.t)
                ));
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CaptureInfo, Source};
    use crate::pm2::daemon_log::DaemonLogLine;
    use crate::pm2::meaning::{MonitorProc, Pm2Call, Target};
    use crate::timeline::{AppRef, Entry, EntryKind, Outcome};

    const S: u64 = 1_000_000_000;

    fn app(id: u64) -> Option<AppRef> {
        Some(AppRef {
            pm_id: id,
            name: Some("web".into()),
        })
    }

    fn put(tl: &mut Timeline, t: u64, source: Source, id: Option<u64>, kind: EntryKind) {
        tl.apply(&Entry {
            t,
            source,
            app: id.and_then(app),
            kind,
        });
    }

    fn daemon(tl: &mut Timeline, t: u64, id: Option<u64>, log: DaemonLogLine) {
        put(tl, t, Source::Bus, id, EntryKind::Daemon { at: None, log });
    }

    /// Two cluster workers online since before the capture, then `pm2 reload web`: for each
    /// instance a new worker starts at +0.1 s; `listening_after` (from its start) says when
    /// the daemon reported it listening, or `None` for one that crashes at start; the old one
    /// is stopped at +3 s (listen_timeout) unless the new one listened first.
    fn reload(listening_after: [Option<u64>; 2]) -> Timeline {
        let mut tl = Timeline::new(&CaptureInfo::default());
        let procs: Vec<MonitorProc> = (0..2)
            .map(|id| MonitorProc {
                pm_id: Some(id),
                name: Some("web".into()),
                pid: Some(100 + id as i64),
                status: Some("online".into()),
                exec_mode: Some("cluster_mode".into()),
                restart_time: Some(0),
                ..MonitorProc::default()
            })
            .collect();
        put(
            &mut tl,
            S,
            Source::Rpc,
            None,
            EntryKind::monitor_data(1, "1:0", procs),
        );
        let mut t = 2 * S;
        for (id, listen) in listening_after.into_iter().enumerate() {
            let id = id as u64;
            let rid = format!("1:{}", id + 1);
            put(
                &mut tl,
                t,
                Source::Rpc,
                Some(id),
                EntryKind::RequestAsked {
                    conn: 1,
                    id: rid.clone(),
                    ask: id + 1,
                    call: Pm2Call::ReloadProcessId {
                        target: Some(Target::Id(id)),
                        env: None,
                        graceful: false,
                    },
                },
            );
            let start = t + S / 10;
            let w = |s: &str| s.to_owned();
            daemon(
                &mut tl,
                start,
                Some(id),
                DaemonLogLine::Starting {
                    app: w("web"),
                    id,
                    mode: w("cluster"),
                },
            );
            daemon(
                &mut tl,
                start + S / 10,
                Some(id),
                DaemonLogLine::Online { app: w("web"), id },
            );
            let stop = match listen {
                Some(l) if start + l < t + 3 * S => start + l,
                _ => t + 3 * S,
            };
            match listen {
                Some(l) => daemon(
                    &mut tl,
                    start + l,
                    None,
                    DaemonLogLine::ReloadReady { soft: false },
                ),
                // A release that crashes at start.
                None => daemon(
                    &mut tl,
                    start + 3 * S / 10,
                    Some(id),
                    DaemonLogLine::Exited {
                        app: w("web"),
                        id,
                        code: 1,
                        signal: w("SIGINT"),
                        old: false,
                    },
                ),
            }
            let old = |l| DaemonLogLine::Stopping {
                app: w("web"),
                id: l,
                old: true,
            };
            daemon(&mut tl, stop, Some(id), old(id));
            daemon(
                &mut tl,
                stop + S / 20,
                Some(id),
                DaemonLogLine::Exited {
                    app: w("web"),
                    id,
                    code: 0,
                    signal: w("SIGINT"),
                    old: true,
                },
            );
            t = stop + S / 10;
            put(
                &mut tl,
                t,
                Source::Rpc,
                Some(id),
                EntryKind::RequestAnswered {
                    conn: 1,
                    id: rid,
                    ask: Some(id + 1),
                    method: Some("reloadProcessId".into()),
                    latency_ns: None,
                    outcome: Outcome::Ok,
                    new_pid: None,
                    procs: Vec::new(),
                    result: None,
                },
            );
        }
        put(
            &mut tl,
            t + 5 * S,
            Source::Rpc,
            None,
            EntryKind::Note {
                level: crate::event::NoteLevel::Info,
                text: "end".into(),
            },
        );
        tl
    }

    #[test]
    fn a_clean_reload_gives_nothing() {
        let tl = reload([Some(S / 2), Some(S / 2)]);
        // The outgoing workers are told apart from the new ones.
        let a = tl.app(0).unwrap();
        assert_eq!(a.generations.len(), 2, "{:#?}", a.generations);
        assert!(a.generations[0].parked_by.is_some() && a.generations[0].exit.is_some());
        assert!(a.generations[1].listening.is_some() && a.generations[1].exit.is_none());
        assert!(findings(&tl).is_empty(), "{:#?}", findings(&tl));
    }

    #[test]
    fn a_slow_replacement_leaves_fewer_workers_for_a_while() {
        // Instance 0's replacement listens 4 s after its start, 1 s after its predecessor
        // was stopped at listen_timeout; instance 1's in time.
        let tl = reload([Some(4 * S), Some(S / 2)]);
        let f = findings(&tl);
        assert_eq!(f.len(), 1, "{f:#?}");
        let f = &f[0].1;
        assert_eq!(f.severity, Severity::Warning, "{}", f.summary);
        assert!(
            f.summary.contains("web:0's worker (pid 100)"),
            "{}",
            f.summary
        );
        assert!(!f.summary.contains("web:1's worker"), "{}", f.summary);
        assert!(f.summary.contains("became ready only at"), "{}", f.summary);
        assert!(
            f.summary.contains("(1 at the lowest) until"),
            "{}",
            f.summary
        );
        assert!(!f.summary.contains("outage"), "{}", f.summary);
    }

    #[test]
    fn replacements_that_never_listen_end_in_an_outage() {
        let tl = reload([None, None]);
        let f = findings(&tl);
        let f = &f[0].1;
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(f.pm_id, None, "about the whole app");
        assert!(f.summary.contains("2 instances"), "{}", f.summary);
        assert!(f.summary.contains("and none from"), "{}", f.summary);
        assert!(
            f.summary.contains("not over when the capture ended"),
            "{}",
            f.summary
        );
        assert!(f.remedy.contains("does not roll back"), "{}", f.remedy);
    }
}
