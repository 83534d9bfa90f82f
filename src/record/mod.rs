//! `pm2-trace record`: wire the sources to a capture file.
//!
//! Threads: the proxy's accept and forwarding threads (which only forward and tap), a tap
//! decoder (AMP framing of the tapped copies, off the forwarding path), the bus subscriber,
//! the process watcher, and the recorder loop (a thread of its own, in the idle class like the
//! tap decoder), which orders, redacts and writes events.
//!
//! - [`pipeline`]: the tap decoder and the loop that orders, redacts and writes events;
//! - [`stop`]: asking a recording to stop, and noticing the daemon is gone;
//! - [`hints`]: what the RPC traffic tells the process watcher;
//! - [`comment`]: the capture's packet comments;
//! - [`live`]: the live text view; [`live_tui`]: `record --tui`, the recording feeding the
//!   terminal view;
//! - [`store`]: where events go, one file or a directory of segments ([`segments`]);
//! - `record --dir`, the always-on recorder: [`always`] runs one stream per PM2 home, each
//!   following its daemon across restarts ([`follow`]) and writing incidents from the live
//!   rules ([`incident`]).

pub mod always;
mod comment;
pub mod follow;
mod hints;
pub mod incident;
mod live;
mod live_tui;
mod order;
mod pipeline;
pub mod segments;
mod stop;
pub mod store;

pub use live::LiveText;
pub use live_tui::record_tui;
pub use stop::Stopper;
pub use store::{FileStore, Store};

use crate::capture::writer::CaptureSummary;
use crate::event::{self, CaptureInfo, Event, NoteLevel, Stamped};
use crate::redact::{RedactMode, Redactor};
use crate::safe_dir::{SafeDir, SocketRef};
use crate::sources::guardian::{self, Guardian, Interposition, RecorderLock, StaleState};
use crate::sources::procwatch::{ProcWatcher, WatchConfig, WatchMode};
use anyhow::Context;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub pm2_home: PathBuf,
    pub rpc_path: PathBuf,
    pub pub_path: PathBuf,
    pub daemon_pid: Option<i32>,
    pub pm2_version: Option<String>,
    pub output: PathBuf,
    pub overwrite: bool,
    pub duration: Option<Duration>,
    /// Listen on this path instead of interposing on `rpc.sock`.
    pub listen: Option<PathBuf>,
    pub redact: RedactMode,
    /// How to watch processes (kernel connector, pidfd fallback, off).
    pub proc_mode: crate::sources::procwatch::WatchMode,
    pub max_message: usize,
    pub command_line: Vec<String>,
    /// Interpret events while recording, for a live view (`on_event` then gets the
    /// timeline entries). Off (`--quiet`) leaves the CPU to forwarding; the capture is the
    /// same either way.
    pub interpret: bool,
    /// The pm2-trace program started as the guardian, which gives the daemon its socket
    /// back should this process die while interposed. None: this executable (the
    /// pm2-trace binary itself); a program embedding the recorder names a pm2-trace binary.
    pub guardian: Option<PathBuf>,
}

/// What a finished recording reports.
#[derive(Debug)]
pub struct RecordOutcome {
    pub capture: CaptureSummary,
    pub events: u64,
    pub stop_reason: String,
    pub restore: String,
    pub dropped_events: u64,
    pub lost_taps: u64,
    pub connections: u64,
    pub info: CaptureInfo,
    /// The recording ended because the daemon exited (not because it was asked to stop).
    pub daemon_exited: bool,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_default()
}

/// What watches a recording as it is written: live views and exporters. Called on the
/// recorder loop's own thread (hence `Send`).
pub trait Observer: Send {
    /// One event, just written, with its timeline entries (none unless `interpret`).
    fn event(&mut self, info: &CaptureInfo, ev: &Stamped, entries: &[crate::timeline::Entry]);
    /// Warnings to note in the capture before it is closed (e.g. what an exporter lost).
    fn closing_notes(&mut self) -> Vec<String> {
        Vec::new()
    }
}

impl<F: FnMut(&CaptureInfo, &Stamped, &[crate::timeline::Entry]) + Send> Observer for F {
    fn event(&mut self, info: &CaptureInfo, ev: &Stamped, entries: &[crate::timeline::Entry]) {
        self(info, ev, entries)
    }
}

/// Record until `stop` is asked, the duration ends, or the daemon goes away. `on_event`
/// sees every event as it is written (for live views and exporters).
pub fn record(
    opts: &RecordOptions,
    stop: Stopper,
    on_event: &mut dyn Observer,
) -> anyhow::Result<RecordOutcome> {
    // Fail before touching the daemon's socket when the capture cannot be written.
    if !opts.overwrite && std::fs::symlink_metadata(&opts.output).is_ok() {
        anyhow::bail!(
            "{} already exists; choose another --output or add --force",
            opts.output.display()
        );
    }
    if let Some(dir) = opts.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            anyhow::bail!(
                "cannot write {}: {} is not a directory",
                opts.output.display(),
                dir.display()
            );
        }
    }

    let mut store = FileStore::new(opts.output.clone(), opts.overwrite);
    record_to(opts, stop, on_event, &mut store)
}

/// Record one session (one daemon) into `store`: like [`record`], for callers that choose
/// where the events go and keep the store across sessions (`record --dir`).
pub fn record_to(
    opts: &RecordOptions,
    stop: Stopper,
    on_event: &mut dyn Observer,
    store: &mut dyn Store,
) -> anyhow::Result<RecordOutcome> {
    let wall = event::wall_now_ns();
    let mono = event::mono_now();
    let mut info = CaptureInfo {
        tool: "pm2-trace".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        host: host_name(),
        kernel: kernel(),
        pm2_version: opts.pm2_version.clone(),
        pm2_home: opts.pm2_home.display().to_string(),
        daemon_pid: opts.daemon_pid,
        wall_ref_ns: wall,
        mono_ref_ns: mono,
        redaction: opts.redact.name().into(),
        proc_mode: "off".into(),
        command_line: opts.command_line.clone(),
        // The tap decoder pairs every RPC message as it decodes it.
        rpc_paired: true,
    };
    let redactor = Arc::new(Redactor::new(opts.redact));
    let mut early_notes: Vec<Stamped> = Vec::new();
    let note = |notes: &mut Vec<Stamped>, level, text: String| {
        notes.push(Stamped {
            t: event::mono_now(),
            event: Event::Note { level, text },
        })
    };

    // The process watcher verifies its kernel subscription before it is trusted (up to a
    // few hundred ms when the connector is silent): do that before pm2's clients depend on
    // the proxy.
    let (sink, rx) = event::EventSink::channel(1 << 16);
    let watcher = if opts.proc_mode == WatchMode::Off {
        info.proc_mode = "off (--proc off)".into();
        None
    } else {
        let mut cfg = WatchConfig::new(opts.pm2_home.clone());
        cfg.mode = opts.proc_mode;
        cfg.daemon_pid = opts.daemon_pid;
        let r = redactor.clone();
        match ProcWatcher::start(cfg, sink.clone(), Box::new(move |k, v| r.env_value(k, v))) {
            Ok(w) => {
                info.proc_mode = w.mode().to_string();
                Some(w)
            }
            Err(e) => {
                info.proc_mode = format!("off: the process watcher could not start: {e}");
                None
            }
        }
    };

    // 1. Take the place in front of the daemon (or beside it, with --listen). Every
    // operation in PM2_HOME and the socket directories goes through a descriptor
    // (crate::safe_dir): their owner may be less trusted than we are.
    let home = SafeDir::open(&opts.pm2_home)?;
    let lock = RecorderLock::acquire(&home)?;
    let (sock_dir, rpc_name) = SafeDir::open_parent(&opts.rpc_path)?;
    // The --listen socket, to be removed at the end only if it is still ours.
    let mut listen_socket: Option<(SafeDir, std::ffi::OsString, (u64, u64))> = None;
    let (listener, interposition, upstream): (UnixListener, Option<Interposition>, SocketRef) =
        match &opts.listen {
            None => {
                if let StaleState::Repaired(what) = guardian::repair_stale(&sock_dir, &rpc_name)? {
                    note(
                        &mut early_notes,
                        NoteLevel::Warning,
                        format!("stale interposition from an earlier crash repaired: {what}"),
                    );
                }
                let (l, ip) = guardian::interpose(&sock_dir, &rpc_name, opts.daemon_pid)?;
                let up = ip.daemon.try_clone()?;
                (l, Some(ip), up)
            }
            Some(path) => {
                let refuse = || {
                    format!(
                        "no PM2 daemon answers on {}; refusing to listen on {}, since a pm2 command sent there would start a second daemon",
                        opts.rpc_path.display(),
                        path.display()
                    )
                };
                let daemon = sock_dir
                    .open_socket(&rpc_name)
                    .with_context(refuse)?
                    .expect_listener(opts.daemon_pid);
                daemon.connect().with_context(refuse)?;
                let (dir, name) = SafeDir::open_parent(path)?;
                if dir.stat(&name)?.is_some() {
                    anyhow::bail!(
                        "{} already exists; remove it or choose another --listen path",
                        path.display()
                    );
                }
                let (uid, gid, mode) = daemon.access();
                let staged = dir.stage_socket(uid, gid, mode)?;
                let id = (dir.identity().0, staged.ino());
                let l = staged.install(&name, false)?;
                listen_socket = Some((dir, name, id));
                (l, None, daemon)
            }
        };
    // From here on the daemon's name must be given back whatever happens.
    let guard = match &interposition {
        Some(ip) => match opts
            .guardian
            .clone()
            .map_or_else(std::env::current_exe, Ok)
            .and_then(|program| Guardian::spawn(&program, ip, &listener, &lock))
        {
            Ok(g) => Some(g),
            Err(e) => {
                let _ = ip.restore();
                return Err(anyhow::anyhow!("cannot start the guardian process: {e}"));
            }
        },
        None => None,
    };
    let result = pipeline::record_interposed(
        pipeline::Session {
            opts,
            stop: &stop,
            on_event,
            info: &mut info,
            redactor: &redactor,
            early_notes,
            interposition: interposition.as_ref(),
            events: (sink, rx),
            watcher,
            writer: store,
        },
        listener,
        upstream,
    );
    let restore = match &interposition {
        Some(ip) => ip.restore().map(str::to_owned).unwrap_or_else(|e| {
            // Said whatever else went wrong: pm2 cannot reach its daemon until repaired.
            eprintln!(
                "pm2-trace: error: could not give {} back to the daemon: {e}; run `pm2-trace repair`",
                ip.rpc_path.display()
            );
            format!("restore failed: {e}")
        }),
        None => match &listen_socket {
            Some((dir, name, id)) => match dir.unlink_if(name, *id) {
                Ok(true) => "listen socket removed".into(),
                Ok(false) => "listen socket was replaced meanwhile; left alone".into(),
                Err(e) => format!("cannot remove the listen socket: {e}"),
            },
            None => String::new(),
        },
    };
    if let Some(g) = guard {
        g.release();
    }
    drop(lock);
    let mut outcome = result?;
    if outcome.restore.is_empty() {
        outcome.restore = restore;
    }
    Ok(outcome)
}
