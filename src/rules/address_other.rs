//! `address-held-by-other-process`: a new generation failed because the address it needed
//! (a TCP/UDP port or a unix socket path) was held by something other than an earlier
//! generation of the same app: another app of the same daemon, an app of another PM2
//! daemon (another `PM2_HOME`, often another user), or a process outside pm2 (a systemd
//! service, a container, a stray server).
//!
//! Evidence: the address the failing generation needed, from its stderr (`EADDRINUSE ...
//! 127.0.0.1:4000`, `listen on 4000 failed`) or, for a unix socket path, from the paths the
//! app's earlier generations held (whatever the error text says); a process-watcher
//! snapshot taken while it ran showing that address held by another app of the daemon, or,
//! from the host-wide scan of its early exit, by a process the watcher does not track, with
//! who that is (`PM2_HOME` and app name from its environment, systemd unit or container
//! from its cgroup, its command line).

use super::address_held::errored_after;
use super::ctx::{self, crashed, end_t, ev, start_t, AppCtx};
use super::{Finding, Severity};
use crate::addr::{self, Addr, Transport};
use crate::event::host::Pm2Role;
use crate::event::{MonoNs, Source};
use crate::sources::holders::Relation;
use crate::timeline::{OtherHolder, OtherSocket};

pub const KIND: &str = "address-held-by-other-process";

/// Snapshots this long before a generation's start still show what it met.
const BEFORE_NS: u64 = 50_000_000;
/// ... and this long after its end.
const AFTER_NS: u64 = 300_000_000;

/// Port numbers a line names as bare numbers (`listen on 4000 failed`).
fn bare_ports(line: &str) -> Vec<Addr> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter(|w| (2..=5).contains(&w.len()))
        .filter_map(|w| w.parse::<u16>().ok())
        .filter(|p| *p > 0)
        .map(|port| Addr::Inet { ip: None, port })
        .collect()
}

/// What a holder is, in words, and whether it belongs to another daemon.
fn holder_words(c: &AppCtx, o: &OtherSocket) -> (String, Relation) {
    match &o.holder {
        OtherHolder::App {
            name,
            pm_id,
            in_tree,
            ..
        } => {
            let tree = if *in_tree { "" } else { ", outside pm2's tree" };
            (
                format!(
                    "pid {}, app {name}:{pm_id} of the same pm2 daemon{tree}",
                    o.pid
                ),
                Relation::ThisDaemonsApp,
            )
        }
        OtherHolder::Host(id) => {
            let rel = id.relation(&c.tl.pm2_home);
            let mut w = match (&id.pm2, rel) {
                (
                    Some(Pm2Role::App {
                        name,
                        pm_id,
                        pm2_home,
                        ..
                    }),
                    r,
                ) => {
                    let app = match (name, pm_id) {
                        (Some(n), Some(i)) => format!("{n}:{i}"),
                        (Some(n), None) => n.clone(),
                        (None, Some(i)) => format!("pm_id {i}"),
                        (None, None) => "an app".into(),
                    };
                    if r == Relation::ThisDaemonsApp {
                        format!("pid {}, app {app} of the same pm2 daemon", id.pid)
                    } else {
                        format!(
                            "pid {}, app {app} of another PM2 daemon (PM2_HOME={pm2_home})",
                            id.pid
                        )
                    }
                }
                (Some(Pm2Role::Daemon { pm2_home }), _) => format!(
                    "pid {}, the PM2 daemon of PM2_HOME={pm2_home} (in cluster mode the daemon \
                     holds its apps' ports)",
                    id.pid
                ),
                (None, _) => format!(
                    "pid {} (`{}`), a process outside pm2",
                    id.pid,
                    ctx::short_cmd(&ctx::cut(&id.cmd, 120))
                ),
            };
            if let Some(k) = &id.container {
                w.push_str(&format!(", in container {k}"));
            } else if let Some(u) = &id.unit {
                w.push_str(&format!(", in systemd unit {u}"));
            }
            if let Some(uid) = id.uid {
                w.push_str(&format!(", uid {uid}"));
            }
            (w, rel)
        }
    }
}

/// One holder and the generations that failed while it held the address.
struct Blocked<'a> {
    other: &'a OtherSocket,
    victims: Vec<usize>,
    stderr_named: bool,
    seen_at: Vec<MonoNs>,
}

pub fn findings(c: &AppCtx) -> Vec<(MonoNs, Finding)> {
    let a = c.a;
    let me = a.pm_id;
    // Unix paths the app's own generations held: needed again whatever its stderr says.
    let mut own_paths: Vec<Addr> = Vec::new();
    for s in &a.snapshots {
        for h in s.sockets.iter().filter(|h| h.proto == "unix") {
            if let Some(p) = Addr::parse(&h.addr) {
                if !own_paths.contains(&p) {
                    own_paths.push(p);
                }
            }
        }
    }
    let mut found: Vec<Blocked> = Vec::new();
    for (i, g) in a.generations.iter().enumerate() {
        if g.before_capture || !crashed(g) {
            continue;
        }
        let Some(t0) = start_t(g) else { continue };
        let t1 = end_t(g).unwrap_or(t0).max(t0);
        let in_use: Vec<&String> = g
            .stderr_tail
            .iter()
            .filter(|l| addr::says_in_use(l))
            .collect();
        let mut needed: Vec<(Addr, bool)> = Vec::new();
        for l in &in_use {
            let named = addr::named_in(l);
            let named = if named.is_empty() {
                bare_ports(l)
            } else {
                named
            };
            for n in named {
                needed.push((n, true));
            }
        }
        // A unix path the app held before, named in any stderr line, or held by another.
        for p in &own_paths {
            needed.push((p.clone(), false));
        }
        if needed.is_empty() {
            continue;
        }
        let from = a.snapshots.partition_point(|s| s.t + BEFORE_NS < t0);
        for s in &a.snapshots[from..] {
            if s.t > t1 + AFTER_NS {
                break;
            }
            for o in &s.others {
                // An earlier generation of this very app is the other rule's business.
                if let OtherHolder::Host(id) = &o.holder {
                    if let Some(Pm2Role::App { pm_id, .. }) = &id.pm2 {
                        if id.relation(&c.tl.pm2_home) == Relation::ThisDaemonsApp
                            && pm_id == &Some(me)
                        {
                            continue;
                        }
                    }
                    if id.relation(&c.tl.pm2_home) == Relation::ThisDaemon {
                        continue;
                    }
                }
                let Some(t) = Transport::from_proto(&o.proto) else {
                    continue;
                };
                let Some(held) = Addr::parse(&o.addr) else {
                    continue;
                };
                let Some((_, named)) = needed
                    .iter()
                    .find(|(n, _)| held.conflicts(n) && (t == Transport::Unix) == n.is_unix())
                else {
                    continue;
                };
                // A port is the cause only when the failing start said it was in use.
                if !held.is_unix() && in_use.is_empty() {
                    continue;
                }
                let k = match found
                    .iter()
                    .position(|b| b.other.pid == o.pid && b.other.addr == o.addr)
                {
                    Some(k) => k,
                    None => {
                        found.push(Blocked {
                            other: o,
                            victims: Vec::new(),
                            stderr_named: false,
                            seen_at: Vec::new(),
                        });
                        found.len() - 1
                    }
                };
                let b = &mut found[k];
                if !b.victims.contains(&i) {
                    b.victims.push(i);
                }
                b.stderr_named |= *named;
                if !b.seen_at.contains(&s.t) {
                    b.seen_at.push(s.t);
                }
            }
        }
    }
    found.into_iter().filter_map(|b| finding(c, b)).collect()
}

fn finding(c: &AppCtx, b: Blocked) -> Option<(MonoNs, Finding)> {
    let a = c.a;
    let label = c.label();
    let first_i = *b.victims.first()?;
    let last_i = *b.victims.last()?;
    let first = &a.generations[first_i];
    let last = &a.generations[last_i];
    let t0 = start_t(first)?;
    let n = b.victims.len();
    let o = b.other;
    let what = match o.proto.as_str() {
        "unix" => "unix socket",
        "udp" | "udp6" => "UDP port",
        _ => "port",
    };
    let (who, rel) = holder_words(c, o);
    let errored = errored_after(c, t0);
    // The request that began it: the one in progress at the first failing start, else the
    // last start request before it (pm2 restarted the app by itself since).
    let request = first
        .started_by
        .and_then(|r| c.tl.requests.get(r))
        .or_else(|| {
            c.starting_requests()
                .into_iter()
                .rev()
                .map(|(_, r)| r)
                .find(|r| r.asked <= t0 && r.error.is_none())
        });
    let mut chain = Vec::new();
    let mut evidence = Vec::new();
    let mut why_needed = String::new();
    if let Some(r) = request {
        let env = if r.env_changes.is_empty() {
            String::new()
        } else {
            let keys: Vec<String> = r.env_changes.iter().map(|e| e.key.clone()).collect();
            why_needed = format!(
                " after `{} {} --update-env` changed {}",
                ctx::cli_words(&r.method),
                c.cli_name(),
                ctx::list_words(&keys, 4)
            );
            format!(
                ", carrying changed environment keys ({}; see restart-env-changed)",
                ctx::list_words(&keys, 4)
            )
        };
        chain.push(format!(
            "{} at {} asked pm2 to start a new generation of {label}{env}.",
            ctx::request_words(r),
            c.at(r.asked)
        ));
        evidence.push(ctx::asked_evidence(r, &label));
    }
    let says = if b.stderr_named {
        " with EADDRINUSE"
    } else {
        ""
    };
    let failed = ctx::failed_starts(n, says);
    chain.push(ctx::new_generation_failed(c, first));
    ctx::generation_evidence(c, first, &mut evidence);
    let whose = match rel {
        Relation::OtherDaemonsApp | Relation::OtherDaemon => {
            "; the recorded daemon's own tree does not show it: it was found among the host's sockets"
        }
        Relation::NotPm2 => "; it is not a pm2 process: it was found among the host's sockets",
        _ => "",
    };
    chain.push(format!("{what} {} was held by {who}{whose}.", o.addr));
    for t in b
        .seen_at
        .iter()
        .take(1)
        .chain(b.seen_at.iter().skip(1).last())
    {
        evidence.push(ev(
            *t,
            Source::Proc,
            format!("snapshot: {what} {} held by {who}", o.addr),
        ));
    }
    ctx::repeats_then_errored(c, n, last, errored, &mut chain, &mut evidence);
    let errored_w = errored
        .map(|t| format!(" and {label} ended errored at {}", c.at(t)))
        .unwrap_or_default();
    let summary = format!(
        "{what} {}, which {label} needed{why_needed}, was held by {who}, so {failed}{errored_w}.",
        o.addr
    );
    let name = c.cli_name();
    let check = match (o.port, o.proto.as_str()) {
        (Some(p), "udp" | "udp6") => format!("`ss -lunp 'sport = :{p}'`"),
        (Some(p), _) => format!("`ss -ltnp 'sport = :{p}'`"),
        _ => format!("`ss -lxp | grep {}`", o.addr),
    };
    let free_it = match (&o.holder, rel) {
        (OtherHolder::App { name: other, .. }, _) => {
            format!("stop the other app (`pm2 stop {other}`) or move one of the two")
        }
        (OtherHolder::Host(id), Relation::OtherDaemonsApp) => {
            let (home, app) = match &id.pm2 {
                Some(Pm2Role::App { pm2_home, name, .. }) => {
                    (pm2_home.clone(), name.clone().unwrap_or_default())
                }
                _ => (String::new(), String::new()),
            };
            format!(
                "stop it in its own daemon (`PM2_HOME={home} pm2 stop {app}`, as that daemon's \
                 user) or move one of the two"
            )
        }
        (OtherHolder::Host(id), _) => match (&id.container, &id.unit) {
            (Some(k), _) => format!("stop or move container {k}"),
            (None, Some(u)) if u.ends_with(".service") => {
                format!("stop or reconfigure the service (`systemctl stop {u}`)")
            }
            _ => format!("stop or move pid {}", id.pid),
        },
    };
    let lasting = if request.is_some_and(|r| !r.env_changes.is_empty()) {
        "Lasting fix: keep each app's address in its ecosystem file, not in the deploying \
         shell's environment (`--update-env` takes whatever that shell has), and give every app \
         on the host, in every PM2 daemon, its own port or socket path."
    } else {
        "Lasting fix: give every app on the host, in every PM2 daemon and outside pm2, its own \
         port or socket path, and check that it is free before a deploy."
    };
    let remedy = format!(
        "Now: {check} shows the holder; {free_it}, then `pm2 restart {name}` (or give {name} a \
         free address: `PORT=<free port> pm2 restart {name} --update-env`). {lasting}"
    );
    let severity = if errored.is_some() {
        Severity::Error
    } else {
        Severity::Warning
    };
    Some((
        t0,
        c.finding(KIND, severity, summary, chain, evidence, remedy),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_named_as_numbers() {
        assert_eq!(
            bare_ports("well-behaved: listen on 38207 failed: EADDRINUSE"),
            vec![Addr::Inet {
                ip: None,
                port: 38207
            }]
        );
        assert!(bare_ports("no numbers here").is_empty());
        assert!(bare_ports("exit 0").is_empty());
    }
}
