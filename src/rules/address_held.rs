//! `address-held-by-previous-generation`: a new generation failed while a process of an
//! earlier generation (in pm2's tree, orphaned, or double-forked out of it) still held the
//! TCP/UDP port or unix socket path it needed.
//!
//! Evidence: the failing generation's stderr says the address was in use (EADDRINUSE; when
//! the capture hashed app output, the stderr cannot tell and the holder alone is the
//! evidence), a process-watcher snapshot taken while it ran shows the address held by a
//! process of an older generation (or that process's exit event lists it as held), and the
//! holder's exit says until when.

use super::ctx::{crashed, cut, end_t, ev, is_addr_in_use, is_redacted, plural, start_t, AppCtx};
use super::{Finding, Severity};
use crate::event::{MonoNs, Source};
use crate::timeline::{Generation, SnapWhy};

pub(crate) const KIND: &str = "address-held-by-previous-generation";

/// Snapshots this long before a generation's start still show what it met.
const BEFORE_NS: u64 = 50_000_000;
/// ... and this long after its end.
const AFTER_NS: u64 = 200_000_000;

/// A process of an older generation that held an address while newer ones failed.
#[derive(Debug, Clone)]
pub(crate) struct Holder {
    pub(crate) pid: i64,
    /// pm2 restart_time of the generation it belongs to.
    pub(crate) generation: Option<u64>,
    pub(crate) addr: String,
    /// `tcp`, `udp`, `unix`, ... (`None`: only the exit event's list named it).
    pub(crate) proto: Option<String>,
    pub(crate) port: Option<u16>,
    /// Indexes of the generations that failed while it held the address.
    pub(crate) victims: Vec<usize>,
    /// The failing generations' stderr said the address was in use.
    pub(crate) stderr_says: bool,
    /// Whether it was in pm2's process tree in the first snapshot that shows it, and in the
    /// last one.
    pub(crate) in_tree_first: Option<bool>,
    pub(crate) in_tree_last: Option<bool>,
    /// Snapshots that show it holding the address.
    pub(crate) seen_at: Vec<MonoNs>,
}

/// Port numbers a stderr line names.
fn numbers(line: &str) -> Vec<u16> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter(|w| (2..=5).contains(&w.len()))
        .filter_map(|w| w.parse::<u16>().ok())
        .collect()
}

fn port_of(addr: &str) -> Option<u16> {
    if addr.starts_with('/') || addr.starts_with('@') {
        return None;
    }
    addr.rsplit(':').next()?.parse().ok()
}

/// Find the holders of this app, by first failure.
pub(crate) fn find(c: &AppCtx) -> Vec<Holder> {
    let a = c.a;
    let mut out: Vec<Holder> = Vec::new();
    // Processes whose exit said they held an address.
    let holding: Vec<&crate::timeline::SeenProcess> =
        a.processes.iter().filter(|p| !p.held.is_empty()).collect();
    for (i, g) in a.generations.iter().enumerate() {
        if g.before_capture || !crashed(g) {
            continue;
        }
        let Some(t0) = start_t(g) else { continue };
        // A start before the recording began was not seen: whether it failed, and on what,
        // cannot be told (on a loaded machine a cluster reload's old worker, started before
        // the recording, was taken for a new generation that failed on its sibling's port).
        if t0 < c.tl.mono_ref() {
            continue;
        }
        let t1 = end_t(g).unwrap_or(t0).max(t0);
        let says = g.stderr_tail.iter().any(|l| is_addr_in_use(l));
        let blind = g.stderr_tail.is_empty() || g.stderr_tail.iter().all(|l| is_redacted(l));
        // A unix socket path the app held is an address it needs again, whatever its
        // error text says; a port needs the text (or a blind capture).
        let text_ok = says || blind;
        let named: Vec<u16> = g
            .stderr_tail
            .iter()
            .filter(|l| is_addr_in_use(l))
            .flat_map(|l| numbers(l))
            .collect();
        let named_paths: Vec<&String> =
            g.stderr_tail.iter().filter(|l| is_addr_in_use(l)).collect();
        let mine = |pid: i64, gen: Option<u64>| -> bool {
            c.main_pid(g) == Some(pid)
                || (gen.is_some() && gen == g.restart_time)
                || c.a
                    .process(pid)
                    .and_then(|p| c.generation_of(p))
                    .is_some_and(|k| k >= i)
        };
        let older = |gen: Option<u64>| match (gen, g.restart_time) {
            (Some(x), Some(y)) => x < y,
            _ => true,
        };
        // (pid, generation, addr, proto, port, snapshot time)
        type Cand = (
            i64,
            Option<u64>,
            String,
            Option<String>,
            Option<u16>,
            Option<MonoNs>,
        );
        let mut cands: Vec<Cand> = Vec::new();
        // Snapshots are kept in the order they were taken.
        let from = a.snapshots.partition_point(|s| s.t + BEFORE_NS < t0);
        for s in &a.snapshots[from..] {
            if s.t > t1 + AFTER_NS {
                // (with a second of slack for snapshots stored slightly out of order)
                if s.t > t1 + AFTER_NS + 1_000_000_000 {
                    break;
                }
                continue;
            }
            for h in &s.sockets {
                if mine(h.pid, h.generation) || !older(h.generation) {
                    continue;
                }
                cands.push((
                    h.pid,
                    h.generation,
                    h.addr.clone(),
                    Some(h.proto.clone()),
                    h.port,
                    Some(s.t),
                ));
            }
        }
        for p in &holding {
            if p.first_seen.t > t1 || p.exit.is_some_and(|e| e.t <= t0) {
                continue;
            }
            if mine(p.pid, p.generation) || !older(p.generation) {
                continue;
            }
            for addr in &p.held {
                // Exit events list held unix paths as `unix:/path`.
                match addr.strip_prefix("unix:") {
                    Some(path) => cands.push((
                        p.pid,
                        p.generation,
                        path.to_owned(),
                        Some("unix".to_owned()),
                        None,
                        None,
                    )),
                    None => {
                        cands.push((p.pid, p.generation, addr.clone(), None, port_of(addr), None))
                    }
                }
            }
        }
        // The holder must still have been there when the generation started.
        cands.retain(|(pid, ..)| {
            a.process(*pid)
                .and_then(|p| p.exit)
                .is_none_or(|e| e.t > t0)
        });
        if !text_ok {
            cands.retain(|(_, _, addr, ..)| {
                crate::addr::Addr::parse(addr).is_some_and(|x| x.is_unix())
            });
        }
        let matching: Vec<&Cand> = cands
            .iter()
            .filter(|(_, _, addr, _, port, _)| {
                port.is_some_and(|p| named.contains(&p))
                    || (addr.starts_with('/')
                        && named_paths.iter().any(|l| l.contains(addr.as_str())))
            })
            .collect();
        let chosen: Vec<&Cand> = if matching.is_empty() {
            cands.iter().collect()
        } else {
            matching
        };
        for (pid, gen, addr, proto, port, snap_t) in chosen {
            let h = match out
                .iter_mut()
                .position(|h| h.pid == *pid && h.addr == *addr)
            {
                Some(k) => &mut out[k],
                None => {
                    out.push(Holder {
                        pid: *pid,
                        generation: *gen,
                        addr: addr.clone(),
                        proto: proto.clone(),
                        port: *port,
                        victims: Vec::new(),
                        stderr_says: false,
                        in_tree_first: None,
                        in_tree_last: None,
                        seen_at: Vec::new(),
                    });
                    out.last_mut().expect("just pushed")
                }
            };
            if h.proto.is_none() {
                h.proto = proto.clone();
            }
            if h.generation.is_none() {
                h.generation = *gen;
            }
            if !h.victims.contains(&i) {
                h.victims.push(i);
            }
            h.stderr_says |= says;
            if let Some(t) = snap_t {
                if !h.seen_at.contains(t) {
                    h.seen_at.push(*t);
                }
            }
        }
    }
    // Whether each holder was in pm2's tree: every snapshot that shows the process.
    for h in &mut out {
        let views: Vec<bool> = a
            .snapshots
            .iter()
            .filter_map(|s| {
                s.process(h.pid)
                    .map(|p| p.in_tree)
                    .or_else(|| s.sockets.iter().find(|x| x.pid == h.pid).map(|x| x.in_tree))
            })
            .collect();
        h.in_tree_first = views.first().copied();
        h.in_tree_last = views
            .last()
            .copied()
            .or_else(|| a.process(h.pid).and_then(|p| p.in_tree_at_exit));
        h.seen_at.sort();
    }
    out.sort_by_key(|h| h.victims.first().copied());
    out
}

/// The generation index of the last stop before generation `i` (the one being replaced).
pub(crate) fn stop_before(c: &AppCtx, i: usize) -> Option<usize> {
    c.a.generations[..i].iter().rposition(|g| g.stop.is_some())
}

/// The status change to errored after `t` and before the next request, if any.
pub(crate) fn errored_after(c: &AppCtx, t: MonoNs) -> Option<MonoNs> {
    let next = c.next_request_after(t).map(|r| r.asked).unwrap_or(u64::MAX);
    c.a.statuses
        .iter()
        .find(|s| s.status == "errored" && s.at.t >= t && s.at.t < next)
        .map(|s| s.at.t)
}

/// Words for where the holder was relative to pm2's process tree.
pub(crate) fn tree_words(c: &AppCtx, h: &Holder) -> String {
    let parent =
        c.a.process(h.pid)
            .and_then(|p| p.parent)
            .map(|p| format!(" (parent pid {p})"))
            .unwrap_or_default();
    match (h.in_tree_first, h.in_tree_last) {
        (Some(true), Some(false)) => format!(
            "a descendant in pm2's process tree{parent} that was orphaned when its parent exited"
        ),
        (Some(true), _) => format!("a descendant in pm2's process tree{parent}"),
        (Some(false), _) => format!(
            "a process outside pm2's process tree{parent}, double-forked away, which pm2 neither \
             signals nor waits for"
        ),
        (None, _) => "a process of the app".into(),
    }
}

/// `the previous generation (restart_time 0)`.
pub(crate) fn holder_gen_words(h: &Holder, victim: &Generation) -> String {
    match (h.generation, victim.restart_time) {
        (Some(x), Some(y)) if x + 1 == y => format!("the previous generation (restart_time {x})"),
        (Some(x), _) => format!("an earlier generation (restart_time {x})"),
        _ => "an earlier generation".into(),
    }
}

pub(crate) fn findings(c: &AppCtx, holders: &[Holder]) -> Vec<(MonoNs, Finding)> {
    let a = c.a;
    let mut out = Vec::new();
    for h in holders {
        let Some(&first_i) = h.victims.first() else {
            continue;
        };
        let last_i = *h.victims.last().expect("not empty");
        let first = &a.generations[first_i];
        let last = &a.generations[last_i];
        let Some(t0) = start_t(first) else { continue };
        let n = h.victims.len();
        let holder = c.a.process(h.pid);
        let until = holder.and_then(|p| p.exit);
        let errored = errored_after(c, t0);
        let stopped_i = stop_before(c, first_i);
        let stop_t = stopped_i
            .and_then(|k| a.generations[k].stop.as_ref())
            .map(|s| s.requested.t);
        let request = stopped_i
            .and_then(|k| a.generations[k].stop.as_ref())
            .and_then(|s| s.by_request)
            .and_then(|r| c.tl.requests.get(r))
            .or_else(|| first.started_by.and_then(|r| c.tl.requests.get(r)));
        let what = match h.proto.as_deref() {
            Some("unix") => "unix socket",
            Some("udp") | Some("udp6") => "UDP port",
            _ => "port",
        };
        let says = if h.stderr_says {
            " with EADDRINUSE"
        } else if h.proto.as_deref() == Some("unix") {
            " (its error text did not say EADDRINUSE, but the path was held)"
        } else {
            ""
        };
        let failed = super::ctx::failed_starts(n, says);
        let errored_w = errored
            .map(|t| format!(" and {} ended errored at {}", c.label(), c.at(t)))
            .unwrap_or_default();
        let freed = match until {
            Some(u) => format!(
                "; the {what} was free only at {}, {} after pm2 started the new generation",
                c.at(u.t),
                c.span(u.t.saturating_sub(t0))
            ),
            None => format!(
                "; pid {} still held it when the capture ended at {}",
                h.pid,
                c.at(c.end())
            ),
        };
        let tree = match (h.in_tree_first, h.in_tree_last) {
            (Some(false), _) => " (outside pm2's process tree)",
            (Some(true), Some(false)) => " (a child orphaned when its parent exited)",
            _ => "",
        };
        let summary = format!(
            "pid {}{tree} from {} of {} still held {what} {} when pm2 started the new \
             generation at {}, so {failed}{errored_w}{freed}.",
            h.pid,
            holder_gen_words(h, first),
            c.label(),
            h.addr,
            c.at(t0)
        );

        let mut chain = Vec::new();
        let mut evidence = Vec::new();
        if let Some(r) = request {
            chain.push(format!(
                "{} at {} asked pm2 to replace {}'s running generation.",
                super::ctx::request_words(r),
                c.at(r.asked),
                c.label()
            ));
            evidence.push(super::ctx::asked_evidence(r, &c.label()));
        }
        let cmd = holder
            .and_then(|p| p.cmd.as_deref())
            .map(|x| format!(" (`{}`)", super::ctx::short_cmd(x)))
            .unwrap_or_default();
        chain.push(format!(
            "pid {}{cmd}, {}, held {what} {}.",
            h.pid,
            tree_words(c, h),
            h.addr
        ));
        if let Some(k) = stopped_i {
            let old = &a.generations[k];
            let main = c.main_pid(old);
            let why = if h.in_tree_first == Some(false) {
                "it was not in the tree pm2 waits for".to_owned()
            } else if c.waits_for_main_pid_only() {
                "pm2 before 7 waits only for the main pid".to_owned()
            } else {
                "pm2 did not wait for it".to_owned()
            };
            let main_w = main.map(|p| format!(" (main pid {p})")).unwrap_or_default();
            let ended = super::ctx::end_t(old)
                .map(|t| format!(" when its main process exited at {}", c.at(t)))
                .unwrap_or_default();
            chain.push(format!(
                "pm2 treated generation {}{main_w} as stopped{ended} and started the next at {}, \
                 while pid {} was still alive: {why}.",
                old.restart_time
                    .map(|r| format!("restart_time {r}"))
                    .unwrap_or_else(|| "the old one".into()),
                c.at(t0),
                h.pid
            ));
            if let Some(s) = &old.stop {
                evidence.push(ev(
                    s.requested.t,
                    Source::Bus,
                    format!("Stopping app {} (SIGINT to the old generation)", c.label()),
                ));
                if let Some(cf) = s.confirmed {
                    evidence.push(ev(
                        cf.t,
                        Source::Bus,
                        format!("daemon: old generation{main_w} killed, starting the next"),
                    ));
                }
            }
        }
        chain.push(super::ctx::new_generation_failed(c, first));
        super::ctx::generation_evidence(c, first, &mut evidence);
        super::ctx::repeats_then_errored(c, n, last, errored, &mut chain, &mut evidence);
        for t in h
            .seen_at
            .iter()
            .take(1)
            .chain(h.seen_at.iter().skip(1).last())
        {
            let why = a
                .snapshots
                .iter()
                .find(|s| s.t == *t)
                .map(|s| match &s.why {
                    SnapWhy::NewGeneration { pid, .. } => format!(
                        "new generation{}",
                        pid.map(|p| format!(" pid {p}")).unwrap_or_default()
                    ),
                    SnapWhy::EarlyExit { pid, .. } => format!("early exit of pid {pid}"),
                    SnapWhy::RestartRequested => "restart requested".into(),
                    SnapWhy::StopRequested => "stop requested".into(),
                    SnapWhy::Start => "watcher start".into(),
                    SnapWhy::Other { why } => cut(why, 60),
                })
                .unwrap_or_default();
            evidence.push(ev(
                *t,
                Source::Proc,
                format!("snapshot ({why}): {what} {} held by pid {}", h.addr, h.pid),
            ));
        }
        match until {
            Some(u) => {
                let since_stop = stop_t
                    .map(|s| format!(", {} after the stop began", c.span(u.t.saturating_sub(s))))
                    .unwrap_or_default();
                chain.push(format!(
                    "pid {} exited at {}{since_stop} and only then released {}.",
                    h.pid,
                    c.at(u.t),
                    h.addr
                ));
                let status = holder
                    .and_then(|p| p.exit_status.clone())
                    .map(|s| format!(" {s}"))
                    .unwrap_or_default();
                evidence.push(ev(
                    u.t,
                    Source::Proc,
                    format!("exit pid {}{status}, held {}", h.pid, h.addr),
                ));
            }
            None => chain.push(format!(
                "pid {} still held {} when the capture ended at {}.",
                h.pid,
                h.addr,
                c.at(c.end())
            )),
        }

        let name = c.cli_name();
        let wait = match (until, stop_t) {
            (Some(u), Some(s)) => format!(
                "; here that took {} after the stop began, and a start after {} would have found \
                 {} free, avoiding {}",
                c.span(u.t.saturating_sub(s)),
                c.at(u.t),
                h.addr,
                plural(n as u64, "failed start", "failed starts")
            ),
            (Some(u), None) => format!(
                "; a start after {} would have found {} free, avoiding {}",
                c.at(u.t),
                h.addr,
                plural(n as u64, "failed start", "failed starts")
            ),
            _ => String::new(),
        };
        let lasting = if h.in_tree_first == Some(false) {
            "Lasting fix: do not detach the server from the process pm2 starts (no double fork, \
             setsid or detached spawn), or make the main process wait until the server has \
             closed the listener before it exits: pm2 cannot signal or wait for processes \
             outside its tree."
                .to_owned()
        } else if c.waits_for_main_pid_only() {
            "Lasting fix: make the main process forward the stop signal to the child that owns \
             the listener and exit only after the child has closed it (pm2 before 7 waits only for \
             the main pid; pm2 7+ waits for the whole tree, up to kill_timeout)."
                .to_owned()
        } else {
            "Lasting fix: make the main process exit only after the child that owns the \
             listener has closed it, within kill_timeout."
                .to_owned()
        };
        let check = match (h.port, h.proto.as_deref()) {
            (Some(p), Some("udp" | "udp6")) => format!(" (`ss -lunp 'sport = :{p}'` is empty)"),
            (Some(p), _) => format!(" (`ss -ltnp 'sport = :{p}'` is empty)"),
            _ => String::new(),
        };
        let remedy = format!(
            "Now: `pm2 stop {name}`, wait until pid {} has exited and nothing listens on {}{check}, \
             then `pm2 start {name}`{wait}. {lasting}",
            h.pid, h.addr
        );
        let severity = if errored.is_some() {
            Severity::Error
        } else {
            Severity::Warning
        };
        out.push((
            t0,
            c.finding(KIND, severity, summary, chain, evidence, remedy),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_in_lines() {
        assert_eq!(
            numbers("slow-drain-child[child pid=1989]: listen on 37109 failed: EADDRINUSE"),
            vec![1989, 37109]
        );
        assert_eq!(
            numbers("Error: listen EADDRINUSE: address already in use 127.0.0.1:3000"),
            vec![127, 3000]
        );
        assert_eq!(port_of("127.0.0.1:3000"), Some(3000));
        assert_eq!(port_of("[::]:80"), Some(80));
        assert_eq!(port_of("/run/app.sock"), None);
    }
}
