//! The `pm2-trace` command line.

use clap::{Parser, Subcommand};
use pm2_trace::record::{self, RecordOptions, Stopper};
use pm2_trace::redact::RedactMode;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Why did `pm2 restart` leave the app errored? pm2-trace records what the pm2 CLI asked the
/// daemon, what the daemon said on its event bus, and what the processes really did, on one
/// clock, and names the ordering that went wrong.
#[derive(Parser, Debug)]
#[command(name = "pm2-trace", version, about, long_about = None, propagate_version = true)]
struct Cli {
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
    Record(RecordArgs),
    /// Print the timeline and findings of a capture file.
    Replay(ReplayArgs),
    /// Restore a daemon socket left interposed by a crashed recorder (also done
    /// automatically when `record` starts).
    Repair {
        /// PM2 home directory [default: $PM2_HOME, else ~/.pm2]
        #[arg(long, value_name = "DIR")]
        pm2_home: Option<PathBuf>,
    },
    #[command(name = "__guard", hide = true)]
    Guard { rpc: PathBuf, aside: PathBuf, proxy_ino: u64 },
}

#[derive(clap::Args, Debug)]
struct RecordArgs {
    /// PM2 home directory of the daemon to record [default: $PM2_HOME, else ~/.pm2]
    #[arg(long, value_name = "DIR")]
    pm2_home: Option<PathBuf>,
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
    /// Do not print events while recording
    #[arg(short, long)]
    quiet: bool,
}

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    /// Capture file written by `pm2-trace record`
    file: PathBuf,
    /// Print one JSON document {"capture", "events", "findings"} instead of text
    #[arg(long)]
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration like 30s, 5m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit `{unit}` in `{s}`: use ms, s, m or h")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("`{s}` must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn pm2_home(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| std::env::var_os("PM2_HOME").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".pm2"))
}

fn daemon_of(home: &std::path::Path) -> (Option<i32>, Option<String>) {
    let pid = std::fs::read_to_string(home.join("pm2.pid")).ok().and_then(|s| s.trim().parse::<i32>().ok());
    let version = pid.and_then(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok()).and_then(|c| {
        let c = String::from_utf8_lossy(&c).into_owned();
        c.strip_prefix("PM2 v").and_then(|r| r.split(':').next()).map(str::to_owned)
    });
    (pid, version)
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

fn run_record(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let home = pm2_home(args.pm2_home);
    let (daemon_pid, pm2_version) = daemon_of(&home);
    let stop = Stopper::new();
    install_signal_thread(stop.clone());
    let opts = RecordOptions {
        rpc_path: std::env::var_os("PM2_DAEMON_RPC_PORT").map(PathBuf::from).unwrap_or_else(|| home.join("rpc.sock")),
        pub_path: std::env::var_os("PM2_DAEMON_PUB_PORT").map(PathBuf::from).unwrap_or_else(|| home.join("pub.sock")),
        pm2_home: home,
        daemon_pid,
        pm2_version,
        output: args.output,
        overwrite: args.force,
        duration: args.duration,
        listen: args.listen,
        redact: args.redact,
        max_message: pm2_trace::wire::amp::DEFAULT_MAX_MESSAGE,
        command_line: std::env::args().collect(),
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
    let quiet = args.quiet;
    let mut on_event = |_info: &pm2_trace::event::CaptureInfo, ev: &pm2_trace::event::Stamped| {
        if !quiet {
            println!("{}", record::comment(&ev.event));
        }
    };
    let out = record::record(&opts, stop, &mut on_event)?;
    eprintln!(
        "pm2-trace: {}; {} events from {} pm2 connection(s) written to {}; daemon socket: {}",
        out.stop_reason,
        out.events,
        out.connections,
        opts.output.display(),
        out.restore
    );
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Record(a) => run_record(a),
        Command::Replay(a) => pm2_trace::views::replay(&a.file, a.json),
        Command::Repair { pm2_home: h } => {
            let home = pm2_home(h);
            pm2_trace::sources::guardian::RecorderLock::acquire(&home)
                .map_err(anyhow::Error::from)
                .and_then(|_lock| Ok(pm2_trace::sources::guardian::repair_stale(&home.join("rpc.sock"))?))
                .map(|s| {
                    println!("{s:?}");
                    ExitCode::SUCCESS
                })
        }
        Command::Guard { rpc, aside, proxy_ino } => {
            return ExitCode::from(pm2_trace::sources::guardian::guardian_main(rpc, aside, proxy_ino) as u8)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pm2-trace: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
