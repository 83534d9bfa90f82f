//! The `pm2-trace` command line.

use clap::{Parser, Subcommand};
use pm2_trace::record::{self, RecordOptions, Stopper};
use pm2_trace::redact::RedactMode;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// mimalloc: replay and the TUI build millions of small JSON maps; glibc malloc spent about a
/// quarter of replay's time in allocation and free (profile in the performance notes).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Why did `pm2 restart` leave the app errored? pm2-trace records what the pm2 CLI asked the
/// daemon, what the daemon said on its event bus, and what the processes really did, on one
/// clock, and names the ordering that went wrong.
#[derive(Parser, Debug)]
#[command(name = "pm2-trace", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Record a live PM2 daemon until Ctrl-C (or --duration): every pm2 command, the event
    /// bus, and the app processes. pm2 is used exactly as always, from any shell.
    ///
    /// The proxy takes the name of the daemon's rpc.sock (same owner, group and mode) and
    /// forwards every byte unchanged; the daemon's socket gets it back when recording stops,
    /// also if pm2-trace is killed (a guardian process restores it).
    ///
    /// Privileges: for a daemon of another user, root is needed only to change names in that
    /// user's PM2_HOME, to read that user's processes in /proc, and (on older kernels) for
    /// the kernel's process connector. The narrowest way is to run as the daemon's owner,
    /// with at most CAP_NET_ADMIN for the connector, e.g. `sudo setpriv --reuid=deploy
    /// --regid=deploy --init-groups --inh-caps=+net_admin --ambient-caps=+net_admin
    /// pm2-trace record`; without it the pidfd fallback is used. As root, pm2-trace never
    /// follows a name the PM2_HOME owner controls (see SECURITY.md).
    Record(RecordArgs),
    /// Print the timeline and findings of a capture file.
    Replay(ReplayArgs),
    /// Why is an app errored (or down), when nothing was recording: reads pm2.log and the
    /// apps' logs (rotated and compressed copies too), the daemon's state (getMonitorData,
    /// read-only, else dump.pm2) and the system now (who holds the app's address, whether
    /// its paths exist, which old processes live on), and runs the same rules as replay.
    ///
    /// Never starts or changes a daemon. Every finding says what it rests on and what only
    /// a recording would tell. pm2.log stamps whole seconds: so are its times here.
    Explain(ExplainArgs),
    /// Explore a capture file in an interactive timeline (? lists the keys).
    Tui {
        /// Capture file written by `pm2-trace record`, or a directory written by
        /// `record --dir`
        file: PathBuf,
        #[command(flatten)]
        window: WindowArgs,
    },
    /// Restore a daemon socket left interposed by a crashed recorder (also done
    /// automatically when `record` starts).
    Repair {
        /// PM2 home directory [default: $PM2_HOME, else ~/.pm2]
        #[arg(long, value_name = "DIR")]
        pm2_home: Option<PathBuf>,
    },
    #[command(name = "__guard", hide = true)]
    Guard {
        rpc: PathBuf,
        proxy_ino: u64,
        #[arg(allow_hyphen_values = true)]
        peer_uid: i64,
    },
}

#[derive(clap::Args, Debug)]
struct RecordArgs {
    /// PM2 home directory of the daemon to record [default: $PM2_HOME, else ~/.pm2]. With
    /// --dir it may be given more than once: each home is its own stream of segments
    #[arg(long, value_name = "DIR")]
    pm2_home: Vec<PathBuf>,
    /// With --dir: record every PM2 daemon running on the host (every user, every PM2_HOME)
    #[arg(long, requires = "dir", conflicts_with = "pm2_home")]
    all: bool,
    /// Always-on flight recorder: write segments into DIR (created 0700) within --keep and
    /// --keep-for, write an incident file for each finding, and follow the daemon across
    /// `pm2 kill` / `pm2 update` (never starting one); runs until SIGINT/SIGTERM
    #[arg(long, value_name = "DIR", conflicts_with_all = ["output", "force", "listen", "tui", "otlp"])]
    dir: Option<PathBuf>,
    /// With --dir: disk budget for the segments (KB, MB, GB; binary units). The oldest
    /// segments are deleted first; incident files do not count
    #[arg(long, default_value = "256MB", value_parser = parse_size, value_name = "SIZE", requires = "dir")]
    keep: u64,
    /// With --dir: also delete segments older than this, e.g. 12h, 7d
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", requires = "dir")]
    keep_for: Option<Duration>,
    /// With --dir: findings at or above this level write an incident file
    #[arg(long, value_enum, default_value_t = FailOn::Error, value_name = "SEVERITY", requires = "dir")]
    incident_level: FailOn,
    /// With --dir: an incident file starts this long before the finding's first evidence
    #[arg(long, default_value = "2m", value_parser = parse_duration, value_name = "DURATION", requires = "dir")]
    before: Duration,
    /// With --dir: an incident file ends this long after the finding's last evidence (it is
    /// written then)
    #[arg(long, default_value = "30s", value_parser = parse_duration_or_zero, value_name = "DURATION", requires = "dir")]
    after: Duration,
    /// With --dir: keep at most this many incident files (the oldest are deleted)
    #[arg(long, default_value_t = 100, value_name = "N", requires = "dir")]
    keep_incidents: usize,
    /// With --dir: run this shell command for each incident, with PM2_TRACE_INCIDENT_FILE,
    /// PM2_TRACE_SUMMARY, PM2_TRACE_KIND, PM2_TRACE_SEVERITY and PM2_TRACE_APP in its
    /// environment and the finding's JSON on stdin; failures are logged, recording goes on
    #[arg(long, value_name = "CMD", requires = "dir")]
    on_incident: Option<String>,
    /// With --dir: --on-incident is killed (with its process group) after this long
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION", requires = "dir")]
    on_incident_timeout: Duration,
    /// Capture file to write (created 0600)
    #[arg(short, long, default_value = "capture.bin", value_name = "FILE")]
    output: PathBuf,
    /// Replace the output file if it exists
    #[arg(long)]
    force: bool,
    /// Stop after this long, e.g. 30s, 5m, 1h
    #[arg(short, long, value_parser = parse_duration, value_name = "DURATION")]
    duration: Option<Duration>,
    /// Listen on this socket path instead of taking rpc.sock's place; point clients at it
    /// with PM2_DAEMON_RPC_PORT=PATH (the daemon's socket is not touched)
    #[arg(long, value_name = "PATH")]
    listen: Option<PathBuf>,
    /// What to redact before anything is written: `values` hashes environment values
    /// (equal values keep equal hashes, so changed keys still show), `all` also app output
    /// and arguments, `none` nothing (the capture then holds secrets in clear)
    #[arg(long, value_enum, default_value_t = RedactMode::Values)]
    redact: RedactMode,
    /// How to watch the app processes: `auto` uses the kernel's process connector when it
    /// delivers (root or CAP_NET_ADMIN, initial namespaces) and falls back to pidfd + /proc
    /// scans, which know less (said in the capture); `off` records RPC and bus only
    #[arg(long, value_enum, default_value_t = WatchModeArg::Auto, value_name = "MODE")]
    proc: WatchModeArg,
    /// Do not print events while recording
    #[arg(short, long)]
    quiet: bool,
    /// Watch the events in the interactive timeline while recording; q stops the recording
    #[arg(long, conflicts_with = "quiet")]
    tui: bool,
    /// Export while recording to OpenTelemetry over OTLP/HTTP (protobuf): one trace per pm2 request
    /// acting on an app, one log record per finding, sent in the
    /// background (a slow or dead collector never slows pm2 or the recording; what cannot
    /// be sent is counted and noted in the capture); to URL/v1/traces and URL/v1/logs.
    /// Without URL: $OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318.
    /// OTEL_EXPORTER_OTLP_HEADERS (and the per-signal variables) are honoured
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "", conflicts_with = "tui")]
    otlp: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum WatchModeArg {
    Auto,
    Netlink,
    Pidfd,
    Off,
}

impl From<WatchModeArg> for pm2_trace::sources::procwatch::WatchMode {
    fn from(m: WatchModeArg) -> Self {
        use pm2_trace::sources::procwatch::WatchMode;
        match m {
            WatchModeArg::Auto => WatchMode::Auto,
            WatchModeArg::Netlink => WatchMode::Netlink,
            WatchModeArg::Pidfd => WatchMode::Pidfd,
            WatchModeArg::Off => WatchMode::Off,
        }
    }
}

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    /// Capture file written by `pm2-trace record`, or a directory written by
    /// `record --dir` (its segments are read in time order as one timeline)
    file: PathBuf,
    #[command(flatten)]
    window: WindowArgs,
    /// Print one JSON document {"capture", "events", "findings"} instead of text
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when a finding is at least this severe (for scripts)
    #[arg(long, value_enum, value_name = "SEVERITY")]
    fail_on: Option<FailOn>,
    /// Also export to OpenTelemetry over OTLP/HTTP (protobuf): one trace per pm2 request
    /// acting on an app, one log record per finding, sent to URL/v1/traces and URL/v1/logs.
    /// Without URL: $OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318.
    /// OTEL_EXPORTER_OTLP_HEADERS (and the per-signal variables) are honoured
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    otlp: Option<String>,
}

#[derive(clap::Args, Debug)]
struct ExplainArgs {
    /// The app to explain, by name or pm id [default: every app that is errored, down, or
    /// has findings]
    app: Option<String>,
    /// PM2 home directory of the daemon [default: $PM2_HOME, else ~/.pm2]
    #[arg(long, value_name = "DIR")]
    pm2_home: Option<PathBuf>,
    /// How far back to read the logs, e.g. 30m, 6h [default: since the daemon started;
    /// the last 24 h when no daemon runs]
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    since: Option<Duration>,
    /// Print one JSON document {"source", "events", "findings"} instead of text; findings
    /// are the same objects as `replay --json`'s
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when a finding is at least this severe (for scripts)
    #[arg(long, value_enum, value_name = "SEVERITY")]
    fail_on: Option<FailOn>,
}

fn run_explain(a: ExplainArgs) -> anyhow::Result<ExitCode> {
    use pm2_trace::rules::Severity;
    use std::io::IsTerminal;
    let now_ms = (pm2_trace::event::wall_now_ns() / 1_000_000) as i64;
    let x = pm2_trace::explain::explain(&pm2_trace::explain::ExplainOptions {
        pm2_home: a.pm2_home,
        app: a.app,
        since: a.since,
        now_ms,
    })?;
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = if a.json {
        pm2_trace::views::explain::write_json(&x, out).map(|_| ())
    } else {
        pm2_trace::views::explain::write_text(&x, out, std::io::stdout().is_terminal()).map(|_| ())
    };
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    let level = a.fail_on.map(|f| match f {
        FailOn::Warning => Severity::Warning,
        FailOn::Error => Severity::Error,
    });
    Ok(ExitCode::from(pm2_trace::explain::exit_code(
        &x.findings,
        level,
    )))
}

/// Which part of a capture or directory to read.
#[derive(clap::Args, Debug, Clone)]
struct WindowArgs {
    /// Only events from this time on: '2026-11-26 03:00' (local time), an RFC 3339 time
    /// ('2026-11-26T03:00:00Z'), or a time of day ('03:00', today). For a directory only the
    /// segments that overlap the window are read
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only events up to this time (same forms; a time of day takes --since's date)
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Which stream of a directory (one per PM2 home, named after it) when it holds several
    #[arg(long, value_name = "NAME")]
    stream: Option<String>,
}

impl WindowArgs {
    fn window(&self) -> anyhow::Result<pm2_trace::replay::Window> {
        use pm2_trace::replay::parse_when;
        let since = self
            .since
            .as_deref()
            .map(|s| parse_when(s, None))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
        let until = self
            .until
            .as_deref()
            .map(|s| parse_when(s, since))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--until: {e}"))?;
        Ok(pm2_trace::replay::Window {
            since,
            until,
            stream: self.stream.clone(),
        })
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum FailOn {
    Warning,
    Error,
}

fn run_replay(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    use pm2_trace::rules::Severity;
    let out = pm2_trace::replay::replay_window(&a.file, a.json, &a.window.window()?)?;
    if let Some((offset, records)) = out.truncated {
        eprintln!(
            "pm2-trace: {} ends inside a record at byte {offset} (truncated): replayed the {records} whole records before it",
            a.file.display()
        );
    }
    if let Some(e) = &out.error {
        eprintln!(
            "pm2-trace: error: {e}; {} damaged record(s) passed over, {} records replayed",
            out.damaged, out.records
        );
    }
    if out.skipped > 0 {
        eprintln!(
            "pm2-trace: skipped {} records of kinds this version does not know",
            out.skipped
        );
    }
    if let Some(flag) = &a.otlp {
        use pm2_trace::views::otlp;
        let endpoint = otlp::Endpoint::resolve(flag, |k| std::env::var(k).ok())?;
        match otlp::export_file(&a.file, &endpoint) {
            Ok(stats) => eprintln!("pm2-trace: {}", stats.summary(&endpoint.traces.url)),
            Err(e) => {
                eprintln!("pm2-trace: error: OpenTelemetry export failed: {e:#}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    let level = a.fail_on.map(|f| match f {
        FailOn::Warning => Severity::Warning,
        FailOn::Error => Severity::Error,
    });
    Ok(ExitCode::from(pm2_trace::replay::exit_code(&out, level)))
}

fn parse_size(s: &str) -> Result<u64, String> {
    pm2_trace::record::segments::parse_size(s)
}

/// A duration that may be zero (`--after 0`).
fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim()
        .trim_end_matches(['s', 'm', 'h', 'd'])
        .parse::<f64>()
        == Ok(0.0)
    {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s, 5m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{s}`: use ms, s, m, h or d"
            ))
        }
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("`{s}` must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `pm2-trace repair`: with the lock held, undo a crashed recorder's interposition. Every
/// operation in PM2_HOME goes through its descriptor (`safe_dir`).
fn run_repair(home: &std::path::Path) -> anyhow::Result<ExitCode> {
    use pm2_trace::safe_dir::SafeDir;
    use pm2_trace::sources::guardian;
    let dir = SafeDir::open(home)?;
    let _lock = guardian::RecorderLock::acquire(&dir)?;
    let state = guardian::repair_stale(&dir, std::ffi::OsStr::new("rpc.sock"))?;
    println!("{}", pm2_trace::views::terminal_safe(&format!("{state:?}")));
    Ok(ExitCode::SUCCESS)
}

fn pm2_home(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(pm2_trace::pm2::home::resolve_home(arg.as_deref(), |k| std::env::var_os(k))?.dir)
}

/// Block the stop signals in every thread and turn them into stop requests.
fn install_signal_thread(stop: Stopper) {
    // SAFETY: plain sigset manipulation and pthread_sigmask on the calling (main) thread,
    // before any other thread exists; threads spawned later inherit the mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        std::thread::spawn(move || loop {
            let mut sig: libc::c_int = 0;
            if libc::sigwait(&set, &mut sig) == 0 {
                let name = match sig {
                    libc::SIGINT => "SIGINT",
                    libc::SIGTERM => "SIGTERM",
                    _ => "SIGHUP",
                };
                if stop.requested().0 > 0 {
                    eprintln!("pm2-trace: {name} again: finishing now (the daemon socket is still restored)");
                }
                stop.stop(format!("{name} received"));
            }
        });
    }
}

/// `record --dir`: the always-on recorder (see `record::always`).
fn run_record_dir(args: RecordArgs, dir: PathBuf) -> anyhow::Result<ExitCode> {
    use pm2_trace::record::{always, incident, segments};
    let homes = if args.all {
        let homes = record::follow::all_homes();
        if homes.is_empty() {
            anyhow::bail!("--all: no PM2 daemon runs on this host");
        }
        homes
    } else if args.pm2_home.is_empty() {
        vec![pm2_home(None)?]
    } else {
        args.pm2_home
            .iter()
            .map(|h| pm2_home(Some(h.clone())))
            .collect::<anyhow::Result<_>>()?
    };
    let stop = Stopper::new();
    install_signal_thread(stop.clone());
    pm2_trace::capture::ignore_sigxfsz();
    if args.redact == RedactMode::None {
        eprintln!("pm2-trace: warning: --redact none: the segments will hold environment values (secrets) in clear");
    }
    let template = RecordOptions {
        rpc_path: PathBuf::new(),
        pub_path: PathBuf::new(),
        pm2_home: PathBuf::new(),
        daemon_pid: None,
        pm2_version: None,
        output: dir.clone(),
        overwrite: false,
        duration: args.duration,
        listen: None,
        redact: args.redact,
        proc_mode: args.proc.into(),
        max_message: pm2_trace::wire::amp::DEFAULT_MAX_MESSAGE,
        command_line: std::env::args().collect(),
        interpret: true,
        guardian: None,
    };
    let d = always::DirOptions {
        dir,
        budget: segments::Budget {
            keep: args.keep,
            keep_for: args.keep_for,
        },
        incidents: incident::IncidentConfig {
            level: severity(args.incident_level),
            before: args.before,
            after: args.after,
            keep_incidents: args.keep_incidents,
            on_incident: args.on_incident,
            command_timeout: args.on_incident_timeout,
        },
        homes,
    };
    always::record_dir(&template, &d, stop)?;
    Ok(ExitCode::SUCCESS)
}

fn severity(f: FailOn) -> pm2_trace::rules::Severity {
    match f {
        FailOn::Warning => pm2_trace::rules::Severity::Warning,
        FailOn::Error => pm2_trace::rules::Severity::Error,
    }
}

fn run_record(args: RecordArgs) -> anyhow::Result<ExitCode> {
    use pm2_trace::pm2::home;
    if let Some(dir) = args.dir.clone() {
        return run_record_dir(args, dir);
    }
    if args.pm2_home.len() > 1 {
        anyhow::bail!("--pm2-home may be given more than once only with --dir");
    }
    let located = home::locate(
        args.pm2_home.first().map(PathBuf::as_path),
        |k| std::env::var_os(k),
        &home::list_daemons(),
    )?;
    let stop = Stopper::new();
    install_signal_thread(stop.clone());
    pm2_trace::capture::ignore_sigxfsz();
    let opts = RecordOptions {
        rpc_path: located.sockets.rpc.clone(),
        pub_path: located.sockets.pub_.clone(),
        pm2_home: located.home.dir.clone(),
        daemon_pid: Some(located.pid),
        pm2_version: located.version.clone(),
        output: args.output,
        overwrite: args.force,
        duration: args.duration,
        listen: args.listen,
        redact: args.redact,
        proc_mode: args.proc.into(),
        max_message: pm2_trace::wire::amp::DEFAULT_MAX_MESSAGE,
        command_line: std::env::args().collect(),
        interpret: !args.quiet || args.tui || args.otlp.is_some(),
        guardian: None,
    };
    let endpoint = match &args.otlp {
        Some(flag) => Some(pm2_trace::views::otlp::Endpoint::resolve(flag, |k| {
            std::env::var(k).ok()
        })?),
        None => None,
    };
    if opts.redact == RedactMode::None {
        eprintln!("pm2-trace: warning: --redact none: the capture will hold environment values (secrets) in clear");
    }
    eprintln!(
        "pm2-trace: recording PM2 daemon {} (home {}) into {}; Ctrl-C to stop",
        opts.daemon_pid.map_or("?".into(), |p| p.to_string()),
        opts.pm2_home.display(),
        opts.output.display()
    );
    if args.tui {
        let out = record::record_tui(&opts, stop)?;
        return Ok(record_summary(&opts, &out));
    }
    let otlp = match endpoint {
        Some(e) => Some(pm2_trace::views::otlp::LiveExporter::start(
            e,
            pm2_trace::views::otlp::Retry::default(),
        )?),
        None => None,
    };
    let mut watchers = Watchers {
        live: (!args.quiet).then(|| record::LiveText::new(std::io::stdout())),
        otlp,
        exported: None,
    };
    let out = record::record(&opts, stop, &mut watchers)?;
    if let Some(l) = watchers.live.take() {
        l.finish();
    }
    if let Some((endpoint, stats)) = &watchers.exported {
        match stats.loss_note(endpoint) {
            Some(note) => eprintln!("pm2-trace: warning: {note}"),
            None => eprintln!("pm2-trace: {}", stats.summary(endpoint)),
        }
    }
    Ok(record_summary(&opts, &out))
}

/// How long a stopping recorder waits for the OpenTelemetry exporter to send what remains.
const OTLP_FINISH: Duration = Duration::from_secs(5);

/// What watches `record`: the live text view and the OpenTelemetry exporter.
struct Watchers {
    live: Option<record::LiveText<std::io::Stdout>>,
    otlp: Option<pm2_trace::views::otlp::LiveExporter>,
    exported: Option<(String, pm2_trace::views::otlp::ExportStats)>,
}

impl record::Observer for Watchers {
    fn event(
        &mut self,
        info: &pm2_trace::event::CaptureInfo,
        _ev: &pm2_trace::event::Stamped,
        entries: &[pm2_trace::timeline::Entry],
    ) {
        if let Some(l) = self.live.as_mut() {
            l.event(info, entries);
        }
        if let Some(x) = self.otlp.as_mut() {
            x.offer(info, entries);
        }
    }

    fn closing_notes(&mut self) -> Vec<String> {
        let Some(x) = self.otlp.take() else {
            return Vec::new();
        };
        let endpoint = x.endpoint().to_owned();
        let stats = x.finish(OTLP_FINISH);
        let note = stats.loss_note(&endpoint);
        self.exported = Some((endpoint, stats));
        note.into_iter().collect()
    }
}

/// What `record --tui` prints once the terminal is back.
fn record_summary(opts: &RecordOptions, out: &record::RecordOutcome) -> ExitCode {
    if out.lost_taps > 0 || out.dropped_events > 0 {
        eprintln!(
            "pm2-trace: warning: the recorder fell behind: {} copies of RPC traffic and {} events were not recorded (traffic was forwarded; noted in the capture)",
            out.lost_taps, out.dropped_events
        );
    }
    if let Some(why) = &out.capture.stopped {
        eprintln!("pm2-trace: warning: the capture stopped early ({why}); pm2 traffic was forwarded throughout");
    }
    eprintln!(
        "pm2-trace: {}; {} events from {} pm2 connection(s) written to {}; daemon socket: {}",
        out.stop_reason,
        out.events,
        out.connections,
        opts.output.display(),
        out.restore
    );
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Record(a) => run_record(a),
        Command::Replay(a) => run_replay(a),
        Command::Explain(a) => run_explain(a),
        Command::Tui { file, window } => window.window().and_then(|w| {
            // A viewer that exits when closed: freed memory stays for reuse, and fresh memory
            // comes in small pages (src/alloc.rs).
            pm2_trace::alloc::keep_freed_memory();
            pm2_trace::alloc::no_huge_pages();
            if file.is_dir() {
                pm2_trace::views::tui::run_dir(&file, &w)
            } else {
                pm2_trace::views::tui::run_file(&file)
            }
            .map(|()| ExitCode::SUCCESS)
        }),
        Command::Repair { pm2_home: h } => pm2_home(h).and_then(|home| run_repair(&home)),
        Command::Guard {
            rpc,
            proxy_ino,
            peer_uid,
        } => {
            return ExitCode::from(pm2_trace::sources::guardian::guardian_main(
                rpc, proxy_ino, peer_uid,
            ) as u8)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Errors name paths and quote what daemons said: shown, never obeyed.
            eprintln!(
                "pm2-trace: error: {}",
                pm2_trace::views::terminal_safe(&format!("{e:#}"))
            );
            ExitCode::from(2)
        }
    }
}
