//! `start-path-missing`: the new generation could not start, or died at once, because its
//! working directory, script or interpreter no longer exists.
//!
//! The classic case is a deploy that re-points a `current` symlink to a new release and
//! deletes the old one under an app started with `cd current && pm2 start app.js`: the
//! shell's `process.cwd()` resolved the symlink, so pm2 stored `releases/N` as the app's
//! working directory and script. The next `pm2 restart` spawns the interpreter in a
//! directory that is gone: pm2 5.2.2+ logs `Error: spawn node ENOENT` (Node names the
//! program even when the missing thing is the directory), marks the app online and shows
//! it with no pid; older versions set it errored.
//!
//! Evidence: the daemon's spawn error after `starting` (or a generation that died within
//! min_uptime), and the process watcher's facts from the restart request, taken from the
//! generation being replaced before it was stopped: its working directory as the kernel
//! names it (`(deleted)`), whether its script and interpreter still exist, the directory
//! it was started from (`PWD`) and where the symlinks on it point now.

use super::ctx::{self, crashed, ev, failed_early, start_t, AppCtx};
use super::{Finding, Severity};
use crate::event::proc::StartPaths;
use crate::event::{MonoNs, Source};
use crate::timeline::Generation;

pub const KIND: &str = "start-path-missing";

/// What is missing, as far as the evidence tells.
enum Missing<'a> {
    Cwd(&'a str),
    Script(&'a str),
    Interpreter(&'a str),
    /// Only the daemon's spawn error: the directory or the program.
    CwdOrProgram {
        cwd: Option<&'a str>,
        program: &'a str,
    },
}

/// The program and error code of a spawn error's words (`spawn node ENOENT`).
fn spawn_words(words: &str) -> (&str, &str) {
    let rest = words.strip_prefix("spawn ").unwrap_or(words);
    rest.rsplit_once(' ').unwrap_or((rest, ""))
}

/// The start-path facts the watcher took for this app before generation `i` started: the
/// last snapshot with facts before its start, else one finished after it whose facts are
/// about an earlier generation (the watcher read them from the generation being replaced
/// when the restart was asked; on a fast daemon the new generation may start before the
/// snapshot's other work is done). `with_paths`: the indexes of the app's snapshots that
/// have start-path facts, in order (few: only those of stop and restart requests).
fn facts_before<'a>(
    c: &AppCtx<'a>,
    with_paths: &[usize],
    i: usize,
    t0: MonoNs,
) -> Option<(MonoNs, &'a StartPaths)> {
    let a = c.a;
    // Asked only of a process a snapshot names (a crash loop has thousands of generations
    // and few snapshots: no list of every earlier main pid per generation).
    let earlier = |pid: i64| {
        a.generations[..i]
            .iter()
            .rev()
            .any(|g| c.main_pid(g) == Some(pid))
    };
    let snapshots = || with_paths.iter().map(|&k| &a.snapshots[k]);
    snapshots()
        .rev()
        .filter(|s| s.t <= t0)
        .find_map(|s| s.paths.first().map(|p| (s.t, p)))
        .or_else(|| {
            snapshots().filter(|s| s.t > t0).find_map(|s| {
                s.paths
                    .iter()
                    .find(|p| earlier(i64::from(p.pid)))
                    .map(|p| (s.t, p))
            })
        })
}

fn missing<'a>(
    sp: Option<&'a StartPaths>,
    g: &'a Generation,
    c: &AppCtx<'a>,
) -> Option<Missing<'a>> {
    if let Some(sp) = sp {
        if sp.cwd_deleted {
            if let Some(d) = &sp.cwd {
                return Some(Missing::Cwd(d));
            }
        }
        if sp.script_exists == Some(false) {
            if let Some(s) = &sp.script {
                return Some(Missing::Script(s));
            }
        }
        if sp.exe_deleted && sp.exe_exists == Some(false) {
            if let Some(e) = &sp.exe {
                return Some(Missing::Interpreter(e));
            }
        }
    }
    let (_, words) = g.spawn_failed.as_ref()?;
    let (program, code) = spawn_words(words);
    (code == "ENOENT").then_some(Missing::CwdOrProgram {
        cwd: c.a.cwd.as_deref().filter(|d| !ctx::is_redacted(d)),
        program,
    })
}

pub fn findings(c: &AppCtx) -> Vec<(MonoNs, Finding)> {
    let a = c.a;
    let mut out = Vec::new();
    let min_up = a.config.min_uptime_ms();
    let with_paths: Vec<usize> = (0..a.snapshots.len())
        .filter(|&k| !a.snapshots[k].paths.is_empty())
        .collect();
    let mut i = 0;
    while i < a.generations.len() {
        let g = &a.generations[i];
        let Some(t0) = start_t(g) else {
            i += 1;
            continue;
        };
        let spawn_failed = g.spawn_failed.is_some();
        let died = crashed(g) && failed_early(g, min_up);
        if g.before_capture || !(spawn_failed || died) {
            i += 1;
            continue;
        }
        let facts = facts_before(c, &with_paths, i, t0);
        let sp = facts.map(|(_, p)| p);
        let Some(what) = missing(sp, g, c) else {
            i += 1;
            continue;
        };
        // The same cause for the generations that follow until one runs.
        let mut j = i + 1;
        while j < a.generations.len() {
            let h = &a.generations[j];
            if h.spawn_failed.is_some() || (crashed(h) && failed_early(h, min_up)) {
                j += 1;
            } else {
                break;
            }
        }
        let n = j - i;
        out.push((t0, finding(c, g, i, n, t0, facts, what)));
        i = j;
    }
    out
}

fn finding(
    c: &AppCtx,
    g: &Generation,
    i: usize,
    n: usize,
    t0: MonoNs,
    facts: Option<(MonoNs, &StartPaths)>,
    what: Missing,
) -> Finding {
    let a = c.a;
    let label = c.label();
    let sp = facts.map(|(_, p)| p);
    let mut chain = Vec::new();
    let mut evidence = Vec::new();
    let request = g.started_by.and_then(|r| c.tl.requests.get(r));
    if let Some(r) = request {
        chain.push(format!(
            "{} at {} asked pm2 to start a new generation of {label}.",
            ctx::request_words(r),
            c.at(r.asked)
        ));
        evidence.push(ctx::asked_evidence(r, &label));
    }
    // How the paths came to be missing.
    let missing_w = match &what {
        Missing::Cwd(d) => format!("its working directory {d} no longer exists"),
        Missing::Script(s) => format!("its script {s} no longer exists"),
        Missing::Interpreter(e) => format!("its interpreter {e} no longer exists"),
        Missing::CwdOrProgram {
            cwd: Some(d),
            program,
        } => format!("its working directory {d} or its interpreter `{program}` no longer exists"),
        Missing::CwdOrProgram { cwd: None, program } => {
            format!("its working directory or its interpreter `{program}` no longer exists")
        }
    };
    let link = sp.and_then(|p| {
        let l = p.symlinks.last()?;
        Some((p.start_dir.as_deref().unwrap_or(&l.link), l))
    });
    if let (Some(sp), Some((t, _))) = (sp, facts) {
        let mut s = format!(
            "When the restart was asked ({}), the running generation (pid {}) ran in {}",
            c.at(t),
            sp.pid,
            sp.cwd.as_deref().unwrap_or("an unknown directory")
        );
        if sp.cwd_deleted {
            s.push_str(", which the kernel marks deleted");
        }
        if let Some((start, l)) = link {
            s.push_str(&format!(
                "; it had been started from {start}, and the symlink {} now points to {}: \
                 pm2 stored the resolved path, not the symlink",
                l.link, l.target
            ));
        }
        s.push('.');
        chain.push(s);
        evidence.push(ev(t, Source::Proc, format!("snapshot: {}", sp.summary())));
    }
    let pid_w = c.pid_words(g);
    match &g.spawn_failed {
        Some((at, words)) => {
            let (program, code) = spawn_words(words);
            let names = if matches!(what, Missing::Cwd(_)) {
                format!(
                    " (Node names the program `{program}` although the missing path is the \
                     working directory)"
                )
            } else {
                String::new()
            };
            chain.push(format!(
                "pm2 started the new generation at {} and could not spawn it: the daemon \
                 logged `Error: {words}` at {}{names}.",
                c.at(t0),
                c.at(at.t)
            ));
            evidence.push(ev(t0, Source::Bus, format!("{label} starting")));
            evidence.push(ev(
                at.t,
                Source::Bus,
                format!("daemon: Error: spawn {program} {code}"),
            ));
        }
        None => {
            let quote = c
                .failure_line(g)
                .map(|q| format!(": {q}"))
                .unwrap_or_default();
            chain.push(format!(
                "The new generation{pid_w} started at {} {}{}{quote}.",
                c.at(t0),
                ctx::exit_words(g),
                c.lived(g)
            ));
            ctx::generation_evidence(c, g, &mut evidence);
        }
    }
    if n > 1 {
        chain.push(format!(
            "The next {} failed the same way.",
            ctx::plural(n as u64 - 1, "start", "starts")
        ));
    }
    // What pm2 shows afterwards.
    let next = c
        .next_request_after(t0)
        .map(|r| r.asked)
        .unwrap_or(u64::MAX);
    let last_status = a.statuses.iter().rfind(|s| s.at.t >= t0 && s.at.t < next);
    let last_gen = &a.generations[(i + n - 1).min(a.generations.len() - 1)];
    let (shows, shows_long) = match last_status {
        Some(s) if s.status == "online" && last_gen.pid.is_none() && g.spawn_failed.is_some() => {
            evidence.push(ev(
                s.at.t,
                Source::Bus,
                format!("{label} online ({})", s.via),
            ));
            (
                format!("pm2 shows {label} online with no pid, but nothing runs: the app is down"),
                format!(
                    "pm2 shows {label} online with no pid (`pm2 ls`: pid N/A, uptime 0, cpu and \
                     memory 0; the daemon logs `Error caught while calling pidusage` on each \
                     poll): nothing runs, the app is down, and pm2 will not restart it"
                ),
            )
        }
        Some(s) => {
            evidence.push(ev(s.at.t, Source::Bus, format!("{label} {}", s.status)));
            let w = format!("pm2 shows {label} {} since {}", s.status, c.at(s.at.t));
            (w.clone(), w)
        }
        None => {
            let w = format!("nothing runs for {label}");
            (w.clone(), w)
        }
    };
    chain.push(format!("As a result, {shows_long}."));
    let summary = format!(
        "The new generation of {label} started at {} could not {} because {missing_w}{}; {shows}.",
        c.at(t0),
        if g.spawn_failed.is_some() {
            "be spawned"
        } else {
            "run"
        },
        match link {
            Some((start, l)) => format!(
                " (it was started from {start}, and {} now points to {})",
                l.link, l.target
            ),
            None => String::new(),
        }
    );
    let name = c.cli_name();
    let through = link.map(|(start, _)| start.to_owned());
    let script_base = sp
        .and_then(|p| p.script.as_deref())
        .or(a.exec_path.as_deref())
        .and_then(|s| s.rsplit('/').next())
        .unwrap_or("app.js")
        .to_owned();
    let remedy = match through {
        Some(dir) => format!(
            "Now: `pm2 delete {name}` and start it again through the symlink, with absolute \
             paths so that pm2 keeps them as given: `pm2 start {dir}/{script_base} --name {name} \
             --cwd {dir}` (or an ecosystem file with `cwd: '{dir}'` and `script: \
             '{dir}/{script_base}'`), then `pm2 save`; a `pm2 restart` cannot change the stored \
             directory. Lasting fix: always start from the symlink's path, not from inside it \
             (`cd {dir} && pm2 start {script_base}` stores the resolved release), and delete an \
             old release only after the app runs from the new one."
        ),
        None => format!(
            "Now: `pm2 delete {name}` and start it again from paths that exist (`pm2 start \
             /path/to/{script_base} --name {name} --cwd /path/to/app`), then `pm2 save`: a \
             `pm2 restart` reuses the stored directory, script and interpreter. Lasting fix: \
             start apps through a stable path (a `current` symlink given as an absolute path, \
             which pm2 keeps as is) and remove an old release, or an interpreter version, only \
             after nothing started from it is left in `pm2 ls`."
        ),
    };
    c.finding(KIND, Severity::Error, summary, chain, evidence, remedy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_error_words() {
        assert_eq!(spawn_words("spawn node ENOENT"), ("node", "ENOENT"));
        assert_eq!(
            spawn_words("spawn /opt/a b/node EACCES"),
            ("/opt/a b/node", "EACCES")
        );
    }

    /// How the facts were found before the snapshots with facts were listed once per app:
    /// every snapshot looked at, for every generation.
    fn facts_before_reference<'a>(
        c: &AppCtx<'a>,
        i: usize,
        t0: MonoNs,
    ) -> Option<(MonoNs, &'a StartPaths)> {
        let a = c.a;
        let earlier = |pid: i64| {
            a.generations[..i]
                .iter()
                .rev()
                .any(|g| c.main_pid(g) == Some(pid))
        };
        a.snapshots
            .iter()
            .rev()
            .filter(|s| s.t <= t0)
            .find_map(|s| s.paths.first().map(|p| (s.t, p)))
            .or_else(|| {
                a.snapshots.iter().filter(|s| s.t > t0).find_map(|s| {
                    s.paths
                        .iter()
                        .find(|p| earlier(i64::from(p.pid)))
                        .map(|p| (s.t, p))
                })
            })
    }

    /// Over every shipped capture, for every generation with a start, at its start and
    /// around it: the facts found are the reference's (and some captures have facts).
    #[test]
    fn facts_are_found_as_every_snapshot_looked_at_finds_them() {
        let mut found = 0;
        for path in crate::capture::shipped_captures() {
            let mut r = crate::capture::CaptureReader::open(&path).unwrap();
            let info = r.info().clone();
            let mut interp = crate::timeline::Interpreter::new(&info);
            let mut tl = crate::timeline::Timeline::new(&info);
            for ev in r.by_ref() {
                for e in interp.push(&ev.unwrap()) {
                    tl.apply(&e);
                }
            }
            for a in tl.apps.values() {
                let c = AppCtx::new(&tl, a);
                let with_paths: Vec<usize> = (0..a.snapshots.len())
                    .filter(|&k| !a.snapshots[k].paths.is_empty())
                    .collect();
                for (i, g) in a.generations.iter().enumerate() {
                    let Some(t0) = start_t(g) else { continue };
                    for t in [t0.saturating_sub(1_000_000_000), t0, t0 + 1_000_000_000] {
                        let fast = facts_before(&c, &with_paths, i, t);
                        assert_eq!(
                            fast.map(|(t, p)| (t, p as *const StartPaths)),
                            facts_before_reference(&c, i, t)
                                .map(|(t, p)| (t, p as *const StartPaths)),
                            "{} {} generation {i}",
                            path.display(),
                            a.pm_id
                        );
                        found += usize::from(fast.is_some());
                    }
                }
            }
        }
        assert!(found > 10, "only {found} generations with start-path facts");
    }
}
