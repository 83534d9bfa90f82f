//! `pm2-trace explain [APP]`: why is this app errored (or down), when nothing was recording.
//!
//! Data flow, as for a capture: the log source ([`crate::sources::logs`]) turns pm2.log and
//! the apps' logs into [`Event::LogLine`]s placed at their own timestamps; the interpreter
//! and the [`Timeline`] order them exactly as they order a recording's bus lines; the same
//! [`rules`] make the findings. Two read-only sources add what logs do not hold: the
//! daemon's state ([`crate::sources::daemon_state`]) and the system now
//! ([`crate::sources::system_now`]), which name the holder of an address (if it is still
//! there), earlier generations still alive, and paths that no longer exist. Every finding
//! then says what it rests on, what only a recording could tell, and how to record the next
//! occurrence. [`crate::views::explain`] presents the result.

use crate::addr::{self, Addr, Transport};
use crate::event::host::{Identity, Pm2Role};
use crate::event::proc::shorten;
use crate::event::{CaptureInfo, Event, MonoNs, Source, Stamped};
use crate::pm2::daemon_log::DaemonLogLine;
use crate::pm2::home;
use crate::pm2::meaning::MonitorProc;
use crate::rules::{self, Evidence, Finding, Severity};
use crate::sources::daemon_state::{self, AppState, DaemonState, StateOrigin};
use crate::sources::holders::{self, Relation};
use crate::sources::logs::{LogApp, LogLine, LogReport, LogSet, LogSpec, LogStream};
use crate::sources::system_now::{self, PathCheck, ProcScan};
use crate::timeline::{Entry, EntryKind, Interpreter, Outcome, TimeGrain, Timeline, Tone};
use crate::views::terminal_safe;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Lines that matter kept for the views (the last ones).
pub const KEPT_LINES: usize = 5000;
/// Without a running daemon, how far back the logs are read by default.
pub const NO_DAEMON_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// What to explain.
#[derive(Debug, Clone)]
pub struct ExplainOptions {
    /// `--pm2-home` as given.
    pub pm2_home: Option<PathBuf>,
    /// An app name or pm_id.
    pub app: Option<String>,
    /// How far back to read (default: since the daemon started).
    pub since: Option<Duration>,
    /// Now, ms since the epoch.
    pub now_ms: i64,
}

/// The daemon explain looked at.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonInfo {
    pub pm2_home: PathBuf,
    /// How PM2_HOME was chosen.
    pub pm2_home_from: String,
    pub pid: Option<i32>,
    pub version: Option<String>,
    /// When the daemon started (ms since the epoch), when it runs.
    pub started_ms: Option<i64>,
}

/// An app explain looked at, with what the system shows of it now.
#[derive(Debug, Clone, Serialize)]
pub struct AppNow {
    pub pm_id: Option<u64>,
    pub name: String,
    /// Status, pid and restart count from the daemon's state (or dump).
    pub status: Option<String>,
    pub pid: Option<i64>,
    pub restart_time: Option<u64>,
    pub paths: Vec<PathCheck>,
    /// Processes of earlier generations still alive now.
    pub earlier_alive: Vec<system_now::AppProcess>,
    /// Addresses the app's logs say it failed to bind (EADDRINUSE).
    pub addresses: Vec<String>,
    /// Who holds those addresses now.
    pub holders: Vec<HeldNow>,
}

/// An address an app could not bind, and who holds it now (from [`holders::who_holds`]).
#[derive(Debug, Clone, Serialize)]
pub struct HeldNow {
    /// The address held (`127.0.0.1:4211`), over `proto`.
    pub addr: String,
    pub proto: String,
    /// The oldest process holding it.
    pub holder: Identity,
    /// What the holder is to this app, in words: `earlier generation`, `current
    /// generation`, `this daemon` (cluster mode), `another app of this daemon`, `another
    /// daemon`, `another daemon's app`, `not pm2`.
    pub relation: String,
    /// Whether the holder is a process of an earlier generation of this very app.
    pub earlier_generation: bool,
    /// Whether the holder is this app itself now (its current generation, or the daemon
    /// holding a cluster app's socket): then it is no finding.
    pub itself: bool,
}

/// The `source` object of `explain --json`: where everything came from and what could not
/// be read.
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    pub tool: String,
    pub tool_version: String,
    pub host: String,
    pub daemon: DaemonInfo,
    /// The window read: lines stamped from `since` (ms since the epoch) to `until` (now).
    pub since_ms: i64,
    pub since_from: String,
    pub until_ms: i64,
    /// Precision of the times, in words (pm2.log has whole seconds).
    pub precision: String,
    pub state: StateOrigin,
    pub apps: Vec<AppNow>,
    pub logs: LogReport,
    /// Lines that could not be placed (a pm2.log line before any stamp).
    pub undated_daemon_lines: u64,
    /// What could not be read, and what that hides.
    pub not_read: Vec<String>,
    /// `pm2-trace record` for the next occurrence.
    pub record_command: String,
}

/// A timeline entry that matters, with where its line came from.
#[derive(Debug, Clone)]
pub struct Kept {
    pub entry: Entry,
    pub file: u32,
    pub offset: u64,
    pub precision: crate::sources::logs::stamp::LinePrecision,
}

/// Everything explain found.
pub struct Explained {
    pub info: CaptureInfo,
    pub source: SourceInfo,
    pub timeline: Timeline,
    pub kept: Vec<Kept>,
    pub findings: Vec<Finding>,
}

/// Run explain: read everything, analyse, return the result for a view.
pub fn explain(opts: &ExplainOptions) -> anyhow::Result<Explained> {
    let env = |k: &str| std::env::var_os(k);
    let home = home::resolve_home(opts.pm2_home.as_deref(), env)?;
    let daemons = home::list_daemons();
    let located = home::locate(Some(&home.dir), env, &daemons).ok();
    let mut not_read = Vec::new();
    let euid = unsafe { libc::geteuid() };
    if let Ok(m) = std::fs::metadata(&home.dir) {
        use std::os::unix::fs::MetadataExt;
        if euid != 0 && m.uid() != euid {
            not_read.push(format!(
                "not root, and {} belongs to uid {}: its files and its apps' processes are read only as far as their permissions allow",
                home.dir.display(),
                m.uid()
            ));
        }
    } else {
        not_read.push(format!(
            "{}: cannot be read (does it exist?)",
            home.dir.display()
        ));
    }
    let (pid, version, rpc) = match &located {
        Some(l) => (Some(l.pid), l.version.clone(), l.sockets.rpc.clone()),
        None => (None, None, home.rpc_sock()),
    };
    let started_ms = pid.and_then(process_start_ms);
    // The daemon's state, read-only.
    let state = daemon_state::read_state(&rpc, &home.dir.join("dump.pm2"), Duration::from_secs(5));
    if !matches!(state.origin, StateOrigin::Daemon { .. }) {
        not_read.extend(state.problems.iter().cloned());
    }
    // The window.
    let (since_ms, since_from) = match (opts.since, started_ms) {
        (Some(d), _) => (
            opts.now_ms - d.as_millis() as i64,
            format!("--since {}", words_duration(d)),
        ),
        // pm2.log stamps whole seconds: its start line carries the second it began in.
        (None, Some(s)) => (
            s - s.rem_euclid(1000),
            "since the daemon started".to_owned(),
        ),
        (None, None) => match last_daemon_start(&home.dir.join("pm2.log")) {
            Some(s) => (
                s,
                "since the last daemon start that pm2.log shows (no daemon runs now)".to_owned(),
            ),
            None => (
                opts.now_ms - NO_DAEMON_WINDOW.as_millis() as i64,
                "the last 24 h (no daemon runs, and pm2.log shows no daemon start)".to_owned(),
            ),
        },
    };
    // Which apps.
    let apps = select_apps(&state, opts.app.as_deref(), &home.dir)?;
    let mut specs = vec![LogSpec {
        stream: LogStream::Daemon,
        app: None,
        live: home.dir.join("pm2.log"),
    }];
    for a in &apps {
        let app = LogApp {
            name: a.name.clone(),
            pm_id: a.pm_id,
        };
        specs.push(LogSpec {
            stream: LogStream::Out,
            app: Some(app.clone()),
            live: a.out_log.clone(),
        });
        specs.push(LogSpec {
            stream: LogStream::Err,
            app: Some(app),
            live: a.err_log.clone(),
        });
    }
    // Capture-like info: times are wall-clock ns, `+s` counts from the window's start.
    let ref_ns = since_ms as i128 * 1_000_000;
    let info = CaptureInfo {
        tool: "pm2-trace explain".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        host: hostname(),
        kernel: String::new(),
        pm2_version: version.clone(),
        pm2_home: home.dir.display().to_string(),
        daemon_pid: pid,
        wall_ref_ns: ref_ns,
        mono_ref_ns: ref_ns.max(0) as MonoNs,
        redaction: "none (nothing is stored)".into(),
        proc_mode: "off (explain reads logs and /proc now)".into(),
        command_line: std::env::args().collect(),
        // Logs only: no RPC message to pair.
        rpc_paired: false,
    };
    let mut interp = Interpreter::new(&info);
    let mut tl = Timeline::new(&info);
    // pm2.log's stamps are whole seconds: durations are worded no finer.
    tl.grain = TimeGrain::Second;
    // What the daemon says of each app now: names, scripts and pids for attributing lines,
    // and the settings the rules weigh (min_uptime, max_restarts, kill_timeout). Its status
    // is now, not at the window's start, so it is left out here.
    let config: Vec<MonitorProc> = state
        .apps
        .iter()
        .map(|a| {
            interp.learn_app(&a.proc);
            MonitorProc {
                status: None,
                pid: None,
                pm_uptime: None,
                ..a.proc.clone()
            }
        })
        .collect();
    tl.apply(&Entry {
        t: info.mono_ref_ns,
        source: Source::Rpc,
        app: None,
        kind: EntryKind::RequestAnswered {
            conn: 0,
            id: "explain".into(),
            ask: None,
            method: Some("getMonitorData".into()),
            latency_ns: None,
            outcome: Outcome::Ok,
            new_pid: None,
            procs: config,
            result: None,
        },
    });
    let chosen_names: BTreeSet<String> = apps.iter().map(|a| a.name.clone()).collect();
    let chosen: BTreeSet<u64> = apps.iter().filter_map(|a| a.pm_id).collect();
    let mut kept: VecDeque<Kept> = VecDeque::new();
    let mut buf = Vec::new();
    let mut last_ms = i64::MIN;
    let mut seq = 0u64;
    let mut undated_daemon = 0u64;
    let mut seen_version: Option<String> = None;
    let mut addrs: BTreeMap<String, Vec<Addr>> = BTreeMap::new();
    let mut note_addrs = |app: &str, line: &str| {
        for a in addr::named_in(line) {
            let list = addrs.entry(app.to_owned()).or_default();
            if !list.contains(&a) && list.len() < 16 {
                list.push(a);
            }
        }
    };
    let set = LogSet {
        specs,
        since_ms: Some(since_ms),
    };
    let report = set.read(|line: LogLine| {
        let Some(ms) = line.at_ms else {
            undated_daemon += 1;
            return;
        };
        if line.stream == LogStream::Daemon {
            if let Some(v) = line.text.strip_prefix("PM2 version          : ") {
                seen_version = Some(v.trim().to_owned());
            }
        }
        if line.stream == LogStream::Err {
            if let Some(a) = &line.app {
                note_addrs(&a.name, &line.text);
            }
        }
        // Lines of one instant keep their file order, a microsecond apart.
        if ms == last_ms {
            seq = (seq + 1).min(999);
        } else {
            seq = 0;
            last_ms = ms;
        }
        let t = (ms as i128 * 1_000_000 + seq as i128 * 1000).max(0) as MonoNs;
        let (file, offset, precision) = (line.file, line.offset, line.precision);
        let ev = Stamped {
            t,
            event: Event::LogLine(Box::new(line)),
        };
        buf.clear();
        interp.push_into(&ev, &mut buf);
        for e in buf.drain(..) {
            tl.apply(&e);
            if matters(&e, &chosen, &chosen_names) {
                if kept.len() >= KEPT_LINES {
                    kept.pop_front();
                }
                kept.push_back(Kept {
                    entry: e,
                    file,
                    offset,
                    precision,
                });
            }
        }
    });
    for u in &report.undated {
        for l in &u.lines {
            note_addrs(&u.app.name, l);
        }
    }
    // The status the daemon reports now closes the timeline (pm2 writes pm2.log through a
    // stream: its last lines can lag behind the status).
    if matches!(state.origin, StateOrigin::Daemon { .. }) {
        let now_t = (opts.now_ms as i128 * 1_000_000).max(tl.last_t.unwrap_or(0) as i128) as MonoNs;
        let procs: Vec<MonitorProc> = state
            .apps
            .iter()
            .map(|a| MonitorProc {
                pm_id: a.proc.pm_id,
                name: a.proc.name.clone(),
                status: a.proc.status.clone(),
                ..MonitorProc::default()
            })
            .collect();
        tl.apply(&Entry {
            t: now_t,
            source: Source::Rpc,
            app: None,
            kind: EntryKind::monitor_data(0, "explain-now", procs),
        });
    }
    // Apps known by name only (dump.pm2 or log file names): their pm_id as the log names it.
    let mut apps = apps;
    for a in apps.iter_mut().filter(|a| a.pm_id.is_none()) {
        a.pm_id = tl
            .apps
            .values()
            .find(|x| x.name.as_deref() == Some(a.name.as_str()))
            .map(|x| x.pm_id);
    }
    let chosen: BTreeSet<u64> = apps.iter().filter_map(|a| a.pm_id).collect();
    let version = version.or(seen_version);
    tl.pm2_version = version.clone();
    for f in &report.unreadable {
        not_read.push(format!("{}: {}", f.path.display(), f.error));
    }
    // The system now.
    let scan = system_now::scan(&home.dir);
    if scan.unreadable_environ > 0 {
        not_read.push(format!(
            "the environment of {} process(es) ({}): earlier generations and holders among them cannot be named",
            scan.unreadable_environ,
            if euid == 0 {
                "refused even to root"
            } else {
                "other users'; run as root to read them"
            }
        ));
    }
    let path_var = pid.and_then(daemon_path_var);
    let mut now_apps: Vec<AppNow> = apps
        .iter()
        .map(|a| {
            app_now(
                a,
                &scan,
                &home.dir,
                path_var.as_deref(),
                &addrs,
                &mut not_read,
            )
        })
        .collect();
    now_apps.sort_by_key(|a| a.pm_id);
    // The rules, on the log-made timeline.
    let mut findings: Vec<Finding> = rules::analyze(&tl)
        .into_iter()
        .filter(|f| match (f.pm_id, &f.app) {
            (Some(i), _) if !chosen.is_empty() => chosen.contains(&i),
            (_, Some(n)) => chosen_names.contains(n),
            _ => true,
        })
        .collect();
    findings.extend(now_findings(&tl, &now_apps, &findings, &info));
    let record_command = format!(
        "pm2-trace record --pm2-home {} -o pm2-trace-$(date +%s).bin",
        shell_word(&home.dir.display().to_string())
    );
    let files_by_app = files_by_app(&report);
    for f in &mut findings {
        annotate(f, &files_by_app, &report, &now_apps, &record_command);
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let source = SourceInfo {
        tool: info.tool.clone(),
        tool_version: info.tool_version.clone(),
        host: info.host.clone(),
        daemon: DaemonInfo {
            pm2_home: home.dir.clone(),
            pm2_home_from: home.source.describe().to_owned(),
            pid,
            version,
            started_ms,
        },
        since_ms,
        since_from,
        until_ms: opts.now_ms,
        precision: precision_words(&report),
        state: state.origin.clone(),
        apps: now_apps,
        logs: report,
        undated_daemon_lines: undated_daemon,
        not_read,
        record_command,
    };
    Ok(Explained {
        info,
        source,
        timeline: tl,
        kept: kept.into(),
        findings,
    })
}

/// Exit code for `--fail-on`: 1 when a finding is at least that severe.
pub fn exit_code(findings: &[Finding], fail_on: Option<Severity>) -> u8 {
    match fail_on {
        Some(level) if findings.iter().any(|f| f.severity >= level) => 1,
        _ => 0,
    }
}

/// An app to explain, and where its logs are.
struct Chosen {
    pm_id: Option<u64>,
    name: String,
    state: Option<AppState>,
    out_log: PathBuf,
    err_log: PathBuf,
}

/// pm2's default log name for an app (lib/Common.js: non-word characters become `-`).
fn log_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn select_apps(
    state: &DaemonState,
    want: Option<&str>,
    home: &Path,
) -> anyhow::Result<Vec<Chosen>> {
    let mut out: Vec<Chosen> = state
        .apps
        .iter()
        .filter_map(|a| {
            let name = a.proc.name.clone()?;
            let stem = log_stem(&name);
            Some(Chosen {
                pm_id: a.proc.pm_id,
                out_log: a
                    .out_log
                    .clone()
                    .unwrap_or_else(|| home.join("logs").join(format!("{stem}-out.log"))),
                err_log: a
                    .err_log
                    .clone()
                    .unwrap_or_else(|| home.join("logs").join(format!("{stem}-error.log"))),
                name,
                state: Some(a.clone()),
            })
        })
        .collect();
    if out.is_empty() {
        // No daemon and no dump: the apps whose logs are in PM2_HOME/logs.
        let mut names = BTreeSet::new();
        if let Ok(rd) = std::fs::read_dir(home.join("logs")) {
            for e in rd.flatten() {
                if let Some(n) = e.file_name().to_str() {
                    if let Some(stem) = n.strip_suffix("-error.log").or(n.strip_suffix("-out.log"))
                    {
                        names.insert(stem.to_owned());
                    }
                }
            }
        }
        out = names
            .into_iter()
            .map(|n| Chosen {
                pm_id: None,
                out_log: home.join("logs").join(format!("{n}-out.log")),
                err_log: home.join("logs").join(format!("{n}-error.log")),
                name: n,
                state: None,
            })
            .collect();
    }
    if let Some(w) = want {
        let id: Option<u64> = w.parse().ok();
        out.retain(|a| a.name == w || (id.is_some() && a.pm_id == id));
        if out.is_empty() {
            anyhow::bail!(
                "no app `{}` in {} (by name or id){}",
                terminal_safe(w),
                home.display(),
                match &state.origin {
                    StateOrigin::None =>
                        ": no daemon answered and there is no dump.pm2 or log to name it",
                    _ => "",
                }
            );
        }
    }
    Ok(out)
}

/// Whether an entry belongs in the short timeline.
fn matters(e: &Entry, ids: &BTreeSet<u64>, names: &BTreeSet<String>) -> bool {
    let ours = match &e.app {
        Some(a) => ids.contains(&a.pm_id) || a.name.as_deref().is_some_and(|n| names.contains(n)),
        None => true,
    };
    if !ours {
        return false;
    }
    match &e.kind {
        EntryKind::Daemon { log, .. } => match log {
            DaemonLogLine::Other { text } => failure_words(text),
            DaemonLogLine::KillRetry { .. } => false,
            _ => true,
        },
        EntryKind::AppLog { line, .. } => e.tone() >= Tone::Warn || failure_words(line),
        _ => false,
    }
}

fn failure_words(s: &str) -> bool {
    [
        "Error",
        "ENOENT",
        "EADDRINUSE",
        "EACCES",
        "errored",
        "SIGKILL",
        "exception",
    ]
    .iter()
    .any(|w| s.contains(w))
}

/// An address as text (`127.0.0.1:4000`, `:4000`, `/run/app.sock`).
fn addr_words(a: &Addr) -> String {
    match a {
        Addr::Inet { ip: Some(ip), port } if ip.is_ipv6() => format!("[{ip}]:{port}"),
        Addr::Inet { ip: Some(ip), port } => format!("{ip}:{port}"),
        Addr::Inet { ip: None, port } => format!(":{port}"),
        Addr::Unix(p) => p.clone(),
    }
}

fn app_now(
    a: &Chosen,
    scan: &ProcScan,
    home: &Path,
    path_var: Option<&str>,
    addrs: &BTreeMap<String, Vec<Addr>>,
    not_read: &mut Vec<String>,
) -> AppNow {
    let st = a.state.as_ref();
    let mut paths = Vec::new();
    if let Some(s) = st {
        if let Some(p) = &s.proc.exec_path {
            paths.push(system_now::check_path("script", p));
        }
        if let Some(p) = &s.cwd {
            paths.push(system_now::check_path("cwd", p));
        }
        if let Some(i) = s.interpreter.as_deref() {
            paths.extend(system_now::check_interpreter(i, path_var));
        }
    }
    let current_rt = st.and_then(|s| s.proc.restart_time);
    let current_pid = st.and_then(|s| s.proc.pid).filter(|p| *p > 0);
    let earlier_alive = scan
        .apps
        .iter()
        .filter(|p| {
            a.pm_id.is_some_and(|i| i == p.pm_id)
                || (a.pm_id.is_none() && p.name.as_deref() == Some(&a.name))
        })
        .filter(|p| {
            Some(p.pid) != current_pid
                && match (p.restart_time, current_rt) {
                    (Some(r), Some(c)) => r < c,
                    _ => false,
                }
        })
        .cloned()
        .collect();
    let wanted: Vec<Addr> = addrs.get(&a.name).cloned().unwrap_or_default();
    let home_s = home.to_string_lossy();
    let mut holders = Vec::new();
    for w in &wanted {
        let transport = if w.is_unix() {
            Transport::Unix
        } else {
            Transport::Tcp
        };
        let found = match holders::who_holds(Path::new("/proc"), transport, w) {
            Ok(f) => f,
            Err(e) => {
                not_read.push(format!("the host's sockets: {e}"));
                continue;
            }
        };
        if found.unreadable > 0 {
            not_read.push(format!(
                "the descriptors of {} process(es), looking for who holds {}: a holder among them cannot be named",
                found.unreadable,
                addr_words(w)
            ));
        }
        not_read.extend(found.notes.iter().cloned());
        for hold in found.holds {
            let Some(holder) = hold.holders.into_iter().next() else {
                continue;
            };
            let rel = holder.relation(&home_s);
            let (earlier, current) = match (&holder.pm2, rel) {
                (
                    Some(Pm2Role::App {
                        pm_id, generation, ..
                    }),
                    Relation::ThisDaemonsApp,
                ) if *pm_id == a.pm_id => {
                    let earlier = generation.zip(current_rt).is_some_and(|(g, c)| g < c);
                    (earlier, !earlier)
                }
                _ => (false, false),
            };
            let relation = match rel {
                Relation::ThisDaemonsApp if earlier => "earlier generation",
                Relation::ThisDaemonsApp if current => "current generation",
                Relation::ThisDaemonsApp => "another app of this daemon",
                Relation::ThisDaemon => "this daemon (it holds a cluster app's sockets)",
                Relation::OtherDaemon => "another pm2 daemon",
                Relation::OtherDaemonsApp => "an app of another pm2 daemon",
                Relation::NotPm2 => "not pm2",
            };
            holders.push(HeldNow {
                addr: hold.addr,
                proto: hold.proto,
                itself: current || rel == Relation::ThisDaemon,
                earlier_generation: earlier,
                relation: relation.into(),
                holder,
            });
        }
    }
    let addresses: Vec<String> = wanted.iter().map(addr_words).collect();
    AppNow {
        pm_id: a.pm_id,
        name: a.name.clone(),
        status: st.and_then(|s| s.proc.status.clone()),
        pid: st.and_then(|s| s.proc.pid),
        restart_time: current_rt,
        paths,
        earlier_alive,
        addresses,
        holders,
    }
}

/// Findings that rest on the system now where the logs alone name no cause.
fn now_findings(
    tl: &Timeline,
    apps: &[AppNow],
    have: &[Finding],
    info: &CaptureInfo,
) -> Vec<Finding> {
    let now_t = (crate::event::wall_now_ns() - info.wall_ref_ns + info.mono_ref_ns as i128).max(0)
        as MonoNs;
    let mut out = Vec::new();
    for a in apps {
        let Some(pm_id) = a.pm_id else { continue };
        let label = format!("{}:{pm_id}", a.name);
        let has = |k: &str| have.iter().any(|f| f.kind == k && f.pm_id == Some(pm_id));
        let app_tl = tl.app(pm_id);
        let errored = a.status.as_deref() == Some("errored")
            || app_tl.is_some_and(|x| x.statuses.iter().any(|s| s.status == "errored"));
        let new_ev = |what: String| Evidence {
            t: now_t,
            source: Source::Proc,
            what,
        };
        // An address the new generations could not bind, held now.
        for h in &a.holders {
            if h.itself {
                // The app holds its own address now: the holder of the failed binds is
                // gone (said in the crash-loop finding, if any).
                continue;
            }
            let by_earlier = h.earlier_generation;
            let kind = if by_earlier {
                "address-held-by-previous-generation"
            } else {
                "address-held-by-other-process"
            };
            if has(kind) {
                continue;
            }
            let who = h.holder.describe();
            out.push(Finding {
                kind: kind.into(),
                severity: if errored { Severity::Error } else { Severity::Warning },
                app: Some(a.name.clone()),
                pm_id: Some(pm_id),
                summary: format!(
                    "{who} holds {} now, the address {label}'s log says it could not bind (EADDRINUSE).",
                    h.addr
                ),
                chain: vec![
                    format!("{label}'s error log shows `listen EADDRINUSE` on {}.", a.addresses.join(", ")),
                    format!("Now, {who} listens on {}.", h.addr),
                    if by_earlier {
                        "It carries an earlier restart_time of this app in its environment: a process of an earlier generation outlived the restart and kept the address.".into()
                    } else {
                        "It is not a process of this app's current generation.".into()
                    },
                ],
                evidence: vec![new_ev(format!("seen now: {who} listening on {}", h.addr))],
                remedy: if by_earlier {
                    format!("Stop pid {} (it is the old generation), then `pm2 restart {}`; make the app's children exit on SIGINT, or set a kill_timeout long enough for them.", h.holder.pid, a.name)
                } else {
                    format!("Free {} (stop the holder) or give {} another address, then `pm2 restart {}`.", h.addr, a.name, a.name)
                },
            });
        }
        // Processes of earlier generations still alive.
        if !a.earlier_alive.is_empty() && !has("descendant-outlived-stop") {
            let pids: Vec<String> = a
                .earlier_alive
                .iter()
                .map(|p| {
                    format!(
                        "pid {} (generation {}, `{}`)",
                        p.pid,
                        p.restart_time.map_or("?".into(), |r| r.to_string()),
                        terminal_safe(&shorten(&p.cmd, 80))
                    )
                })
                .collect();
            out.push(Finding {
                kind: "descendant-outlived-stop".into(),
                severity: Severity::Warning,
                app: Some(a.name.clone()),
                pm_id: Some(pm_id),
                summary: format!(
                    "{} of earlier generations of {label} {} still alive now: pm2 stopped their generation but not them.",
                    if pids.len() == 1 { "1 process".to_owned() } else { format!("{} processes", pids.len()) },
                    if pids.len() == 1 { "is" } else { "are" }
                ),
                chain: vec![
                    format!("{label} is at restart_time {}.", a.restart_time.map_or("?".into(), |r| r.to_string())),
                    format!("Alive now: {}.", pids.join("; ")),
                ],
                evidence: a
                    .earlier_alive
                    .iter()
                    .map(|p| new_ev(format!("seen now: pid {} with restart_time {}", p.pid, p.restart_time.map_or("?".into(), |r| r.to_string()))))
                    .collect(),
                remedy: "Make the app end its children on SIGINT (or start them in its process group), and stop the leftovers by pid.".into(),
            });
        }
        // Paths that no longer exist.
        let missing: Vec<&PathCheck> = a.paths.iter().filter(|p| p.exists == Some(false)).collect();
        if !missing.is_empty() && !has("start-path-missing") {
            let down =
                errored || (a.status.as_deref() == Some("online") && a.pid.is_none_or(|p| p <= 0));
            let words: Vec<String> = missing
                .iter()
                .map(|p| {
                    let links = if p.symlinks.is_empty() {
                        String::new()
                    } else {
                        format!(" (symlinks: {})", p.symlink_words())
                    };
                    format!(
                        "{} {} is missing from {}{links}",
                        p.what,
                        p.path,
                        p.missing_from.as_deref().unwrap_or("?")
                    )
                })
                .collect();
            out.push(Finding {
                kind: "start-path-missing".into(),
                severity: if down { Severity::Error } else { Severity::Warning },
                app: Some(a.name.clone()),
                pm_id: Some(pm_id),
                summary: format!(
                    "{label} cannot be started as configured: its {} no longer exists{}.",
                    missing.iter().map(|p| p.what.as_str()).collect::<Vec<_>>().join(" and "),
                    if a.status.as_deref() == Some("online") && a.pid.is_none_or(|p| p <= 0) { " (pm2 shows it online with no pid: it is down)" } else { "" }
                ),
                chain: words.iter().map(|w| format!("Now: {w}.")).collect(),
                evidence: missing.iter().map(|p| new_ev(format!("seen now: {} {} missing", p.what, p.path))).collect(),
                remedy: format!("Start {} from a path that exists (`pm2 delete {}` then `pm2 start` in the current release), or restore the directory.", a.name, a.name),
            });
        }
    }
    out
}

/// The files each app's findings can rest on: pm2.log, and its own logs.
fn files_by_app(r: &LogReport) -> BTreeMap<Option<String>, Vec<String>> {
    let mut m: BTreeMap<Option<String>, Vec<String>> = BTreeMap::new();
    for f in r.files.iter().filter(|f| f.lines > 0 || !f.rotated) {
        let name = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let words = format!("{name} ({})", f.precision.words());
        let key = f.app.as_ref().map(|a| a.name.clone());
        let list = m.entry(key).or_default();
        if !list.contains(&words) {
            list.push(words);
        }
    }
    m
}

/// Say what a finding rests on, what only a recording would tell, and how to record.
fn annotate(
    f: &mut Finding,
    files: &BTreeMap<Option<String>, Vec<String>>,
    report: &LogReport,
    apps: &[AppNow],
    record: &str,
) {
    // explain has no bus: every daemon line came from pm2.log.
    for e in &mut f.evidence {
        if e.source == Source::Bus {
            e.source = Source::Logs;
        }
    }
    let mut basis = Vec::new();
    if f.evidence.iter().any(|e| e.source == Source::Logs) {
        let mut fs: Vec<String> = files.get(&None).cloned().unwrap_or_default();
        if let Some(own) = f.app.as_ref().and_then(|n| files.get(&Some(n.clone()))) {
            fs.extend(own.iter().cloned());
        }
        basis.push(format!("from {}", fs.join(", ")));
    }
    // The failure line of an undated error log: the last one that names an error, else its
    // last line.
    let undated: Vec<&str> = report
        .undated
        .iter()
        .filter(|u| f.app.as_deref() == Some(u.app.name.as_str()) && u.stream == LogStream::Err)
        .flat_map(|u| {
            u.lines
                .iter()
                .rev()
                .find(|l| failure_words(l))
                .or(u.lines.last())
                .map(String::as_str)
        })
        .collect();
    if f.evidence.iter().any(|e| e.source == Source::Proc) {
        basis.push("what /proc and the file system show now".into());
    }
    if !basis.is_empty() {
        f.chain.push(format!("Rests on: {}.", basis.join("; ")));
    }
    if f.evidence.iter().any(|e| e.source == Source::Logs) {
        f.chain.push("Times and durations come from the logs' stamps: pm2.log's are whole seconds, so each is good to about a second (lines of one second are a microsecond apart in log order).".into());
    }
    if let Some(l) = undated.first() {
        f.chain.push(format!(
            "The app's error log has no timestamps (start the app with --time to place its lines on the timeline); its last failure line: {}",
            terminal_safe(&shorten(l, 200))
        ));
    }
    if let Some(a) = apps
        .iter()
        .find(|a| f.pm_id.is_some() && a.pm_id == f.pm_id)
    {
        let earlier_holder = a.holders.iter().any(|h| !h.itself);
        if !a.addresses.is_empty() && !earlier_holder && f.kind == "crash-loop-errored" {
            f.chain.push(format!(
                "The error log shows EADDRINUSE on {}; no other process holds it now, so the holder at the time cannot be named without a recording.",
                a.addresses.join(", ")
            ));
        }
    }
    f.chain.push(
        "Cannot know without a recording: the order of events within one second (pm2.log has whole seconds), which pids got which signal and when they really exited, who held an address at the moment of the restart, and which command (and environment) asked for it.".into(),
    );
    f.chain
        .push(format!("Record the next occurrence: {record}"));
}

fn precision_words(r: &LogReport) -> String {
    let mut parts = Vec::new();
    for f in r.files.iter().filter(|f| !f.rotated && !f.skipped_older) {
        let name = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        parts.push(format!("{name}: {}", f.precision.words()));
    }
    format!(
        "times are the lines' own stamps, read in this host's local time zone; pm2.log has second precision ({})",
        parts.join(", ")
    )
}

/// Bytes at the end of pm2.log searched for the last daemon start.
const START_SEARCH: u64 = 64 << 20;

/// The stamp of the last `--- New PM2 Daemon started` line in the last [`START_SEARCH`]
/// bytes of `pm2_log`.
fn last_daemon_start(pm2_log: &Path) -> Option<i64> {
    use crate::sources::logs::read::LineReader;
    use std::io::{Seek, SeekFrom};
    let (dir, name) = crate::safe_dir::SafeDir::open_parent(pm2_log).ok()?;
    let mut f = dir.open_read(name).ok()?;
    let len = f.metadata().ok()?.len();
    let from = len.saturating_sub(START_SEARCH);
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut r = LineReader::new(f, from, Some(len));
    let mut cache = crate::sources::logs::stamp::StampCache::default();
    let mut last = None;
    while let Some(l) = r.next_line() {
        if l.text.contains("--- New PM2 Daemon started") {
            if let (Some(p), _) = crate::pm2::daemon_log::split_prefix(&l.text) {
                last = cache.parse(&p.stamp).map(|s| s.ms).or(last);
            }
        }
    }
    last
}

/// When process `pid` started, ms since the epoch (/proc/<pid>/stat and /proc/stat btime).
fn process_start_ms(pid: i32) -> Option<i64> {
    let st = crate::sources::procwatch::procfs::read_stat(Path::new("/proc"), pid)?;
    let btime: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no side effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return None;
    }
    Some(btime * 1000 + st.starttime as i64 * 1000 / hz as i64)
}

fn daemon_path_var(pid: i32) -> Option<String> {
    let (b, _) = crate::sources::procwatch::procfs::read_environ(Path::new("/proc"), pid).ok()?;
    home::environ_get(&b, "PATH")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn words_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s % 3600 == 0 && s > 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 && s > 0 {
        format!("{}m", s / 60)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

fn shell_word(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_log_names_and_addresses() {
        assert_eq!(log_stem("api"), "api");
        assert_eq!(log_stem("my app/v2"), "my-app-v2");
        assert_eq!(addr_words(&Addr::parse(":::4000").unwrap()), "[::]:4000");
        assert_eq!(addr_words(&Addr::parse(":4000").unwrap()), ":4000");
        assert_eq!(
            addr_words(&Addr::parse("/run/a.sock").unwrap()),
            "/run/a.sock"
        );
        assert_eq!(shell_word("/srv/a b/.pm2"), "'/srv/a b/.pm2'");
    }

    /// A real pm2 7.0.4 daemon's pm2.log (tests/fixtures), whose app `crash` went errored
    /// in a crash loop of whole-second stamps: the finding words its durations to the
    /// second, not as `0.0 ms`.
    #[test]
    fn durations_from_pm2_log_are_worded_to_the_second() {
        let home = tempfile::tempdir().unwrap();
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pm2-7.0.4.pm2.log");
        std::fs::copy(&fixture, home.path().join("pm2.log")).unwrap();
        // The daemon is gone; its last saved state names the app and its script.
        std::fs::write(
            home.path().join("dump.pm2"),
            r#"[{"name":"crash","pm_id":1,"status":"errored","pm_exec_path":"/tmp/p2t-fixture-apps-90L3OT/crash.js","exec_interpreter":"node","restart_time":16}]"#,
        )
        .unwrap();
        let ex = explain(&ExplainOptions {
            pm2_home: Some(home.path().to_owned()),
            app: None,
            since: None,
            now_ms: chrono::Utc::now().timestamp_millis(),
        })
        .unwrap();
        let f = ex
            .findings
            .iter()
            .find(|f| f.kind == "crash-loop-errored")
            .unwrap_or_else(|| panic!("no crash-loop-errored: {:?}", ex.findings));
        let words: Vec<&str> = std::iter::once(f.summary.as_str())
            .chain(f.chain.iter().map(String::as_str))
            .chain(f.evidence.iter().map(|e| e.what.as_str()))
            .collect();
        let all = words.join("\n");
        assert!(!all.contains("0.0 ms"), "{all}");
        assert!(all.contains("within a second"), "{all}");
    }
}
