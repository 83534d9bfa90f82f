//! `pm2-trace record`: wire the sources to a capture file.
//!
//! Threads: the proxy's accept and forwarding threads (which only forward and tap), a tap
//! decoder (AMP framing of the tapped copies, off the forwarding path), the bus subscriber,
//! the process watcher, and the caller's thread, which redacts, orders and writes events.

use crate::capture::writer::{CaptureSummary, CaptureWriter};
use crate::event::{
    self, CaptureInfo, Direction, Event, EventSink, NoteLevel, Stamped, WireMessage,
};
use crate::redact::{RedactMode, Redactor};
use crate::safe_dir::{SafeDir, SocketRef};
use crate::sources::bus::BusSubscriber;
use crate::sources::guardian::{self, Guardian, Interposition, RecorderLock, StaleState};
use crate::sources::procwatch::{
    ProcWatcher, SnapshotReason, WatchConfig, WatchMode, WatcherHandle,
};
use crate::sources::proxy::{Access, Proxy, Tap};
use crate::wire::amp::Decoder;
use anyhow::Context;
use std::collections::{BinaryHeap, HashMap};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Events are written in time order once they are this old: sources deliver with small,
/// different delays (the tap decoder, the kernel), and this window puts them back in order.
const REORDER_WINDOW_NS: u64 = 200_000_000;
const PIDFD_REORDER_WINDOW_NS: u64 = 2_500_000_000;
/// How long a stopping recorder lets commands in progress finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

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
}

/// Asks a recording to stop, from a signal handler thread, a timer or a view. The recorder
/// looks at it every time it wakes (at least every 50 ms).
#[derive(Clone, Default)]
pub struct Stopper(Arc<Mutex<Vec<String>>>);

impl Stopper {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask to stop, saying why. A second request (a second Ctrl-C) hurries the shutdown.
    pub fn stop(&self, why: impl Into<String>) {
        if let Ok(mut g) = self.0.lock() {
            g.push(why.into());
        }
    }

    /// How many stop requests arrived, and the first reason.
    pub fn requested(&self) -> (usize, Option<String>) {
        let g = self.0.lock().map(|g| g.clone()).unwrap_or_default();
        (g.len(), g.first().cloned())
    }
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
}

struct Ordered(Stamped);
impl PartialEq for Ordered {
    fn eq(&self, o: &Self) -> bool {
        self.0.t == o.0.t
    }
}
impl Eq for Ordered {}
impl PartialOrd for Ordered {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ordered {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.0.t.cmp(&self.0.t) // min-heap on t
    }
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

/// Record until `stop` is asked, the duration ends, or the daemon goes away. `on_event`
/// sees every event as it is written (for live views).
pub fn record(
    opts: &RecordOptions,
    stop: Stopper,
    on_event: &mut dyn FnMut(&CaptureInfo, &Stamped, &[crate::timeline::Entry]),
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
    };
    let redactor = Arc::new(Redactor::new(opts.redact));
    let mut early_notes: Vec<Stamped> = Vec::new();
    let note = |notes: &mut Vec<Stamped>, level, text: String| {
        notes.push(Stamped {
            t: event::mono_now(),
            event: Event::Note { level, text },
        })
    };

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
                let (l, ip) = guardian::interpose(&sock_dir, &rpc_name)?;
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
                let daemon = sock_dir.open_socket(&rpc_name).with_context(refuse)?;
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
        Some(ip) => match Guardian::spawn(ip, &listener, &lock) {
            Ok(g) => Some(g),
            Err(e) => {
                let _ = ip.restore();
                return Err(anyhow::anyhow!("cannot start the guardian process: {e}"));
            }
        },
        None => None,
    };
    let result = record_interposed(
        opts,
        &stop,
        on_event,
        &mut info,
        &redactor,
        early_notes,
        listener,
        upstream,
        interposition.as_ref(),
        (sink, rx),
        watcher,
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

#[allow(clippy::too_many_arguments)]
fn record_interposed(
    opts: &RecordOptions,
    stop: &Stopper,
    on_event: &mut dyn FnMut(&CaptureInfo, &Stamped, &[crate::timeline::Entry]),
    info: &mut CaptureInfo,
    redactor: &Arc<Redactor>,
    early_notes: Vec<Stamped>,
    listener: UnixListener,
    upstream: SocketRef,
    interposition: Option<&Interposition>,
    (sink, mut rx): (EventSink, event::EventReceiver),
    mut watcher: Option<ProcWatcher>,
) -> anyhow::Result<RecordOutcome> {
    let access = Access::of_socket(&upstream);
    let (tap, tap_rx) = crate::sources::proxy::tap_channel(1 << 16, 256 << 20);
    let tap_thread = {
        let sink = sink.clone();
        let max = opts.max_message;
        let hints = watcher.as_ref().map(ProcWatcher::handle);
        std::thread::Builder::new()
            .name("tap-decoder".into())
            .spawn(move || decode_taps(tap_rx, sink, max, hints))?
    };
    let mut proxy = Some(Proxy::start(listener, upstream, access, tap)?);
    // Everything but forwarding yields the CPU to the forwarding threads (spawned above, at
    // normal priority): threads started from here on inherit the lower priority.
    lower_thread_priority();
    let (pub_dir, pub_name) = SafeDir::open_parent(&opts.pub_path)?;
    let bus = BusSubscriber::start(pub_dir, pub_name, sink.clone())?;
    eprintln!("pm2-trace: process watcher: {}", info.proc_mode);
    // Sources deliver with different delays; the pidfd fallback finds new processes only at
    // its next /proc scan, so it needs a wider window to put events back in order.
    let reorder_window = if info.proc_mode.starts_with("netlink") || watcher.is_none() {
        REORDER_WINDOW_NS
    } else {
        PIDFD_REORDER_WINDOW_NS
    };
    let mut interp = crate::timeline::Interpreter::new(info);
    let mut entries = Vec::new();
    let drop_counter = sink.drop_counter();
    drop(sink);

    let mut writer = CaptureWriter::create(&opts.output, info, opts.overwrite)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut heap: BinaryHeap<Ordered> = early_notes.into_iter().map(Ordered).collect();
    heap.push(Ordered(Stamped {
        t: event::mono_now(),
        event: Event::Note {
            level: NoteLevel::Info,
            text: match interposition {
                Some(ip) => format!(
                    "recording: proxy on {}, daemon reached at {}",
                    ip.rpc_path.display(),
                    ip.aside_path.display()
                ),
                None => format!(
                    "recording: proxy listening on {}",
                    opts.listen
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
            },
        },
    }));

    let started = Instant::now();
    let mut events = 0u64;
    let mut write_failed: Option<String> = None;
    let mut stopping_since: Option<Instant> = None;
    let mut stop_reason = String::new();
    let mut bus_stopped = false;
    let mut bus = Some(bus);
    let mut last_flush = Instant::now();
    let mut connections = 0u64;
    let mut first_restore: Option<String> = None;
    let mut bus_down = false;

    let mut write_out = |heap: &mut BinaryHeap<Ordered>,
                         upto: u64,
                         writer: &mut CaptureWriter,
                         events: &mut u64,
                         failed: &mut Option<String>| {
        while heap.peek().is_some_and(|o| o.0.t <= upto) {
            let Some(Ordered(mut ev)) = heap.pop() else {
                break;
            };
            redactor.event(&mut ev.event);
            if failed.is_none() {
                match writer.write(&ev, &comment(&ev.event)) {
                    Ok(()) => {}
                    // One oversized event is skipped (and counted); the recording goes on.
                    Err(crate::capture::CaptureError::TooLarge { .. }) => {}
                    Err(e) => {
                        eprintln!(
                            "pm2-trace: {e}; recording stopped, pm2 traffic is still forwarded"
                        );
                        *failed = Some(e.to_string());
                    }
                }
            }
            *events += 1;
            entries.clear();
            if opts.interpret {
                interp.push_into(&ev, &mut entries);
            }
            on_event(info, &ev, &entries);
        }
    };

    loop {
        // Stop conditions.
        let (n_stops, why) = stop.requested();
        let timed_out = opts.duration.is_some_and(|d| started.elapsed() >= d);
        if stopping_since.is_none() && (n_stops > 0 || timed_out) {
            stop_reason = why.unwrap_or_else(|| "duration elapsed".into());
            stopping_since = Some(Instant::now());
            // New clients go straight to the daemon from now on.
            if let Some(ip) = interposition {
                first_restore = Some(
                    ip.restore()
                        .map(str::to_owned)
                        .unwrap_or_else(|e| format!("restore failed: {e}")),
                );
            }
            if let Some(p) = proxy.as_mut() {
                p.stop_accepting();
            }
        }
        if let Some(since) = stopping_since {
            let idle = proxy.as_ref().is_none_or(|p| p.active() == 0);
            let hurry = stop.requested().0 > 1 || since.elapsed() > DRAIN_TIMEOUT;
            if (idle || hurry) && !bus_stopped {
                if !idle {
                    if let Some(p) = proxy.as_ref() {
                        p.cut_all();
                    }
                    heap.push(Ordered(Stamped {
                        t: event::mono_now(),
                        event: Event::Note {
                            level: NoteLevel::Warning,
                            text: format!("stopped with {} pm2 command(s) still in progress through the proxy", proxy.as_ref().map_or(0, |p| p.active())),
                        },
                    }));
                }
                drop(proxy.take());
                if let Some(b) = bus.take() {
                    b.stop();
                }
                if let Some(w) = watcher.take() {
                    w.stop();
                }
                bus_stopped = true;
            }
        }
        // While the bus is down, watch whether the daemon itself is gone (pm2 kill, a crash).
        if bus_down && stopping_since.is_none() {
            if let Some(pid) = opts.daemon_pid.filter(|p| !process_alive(*p)) {
                stop.stop(format!("the PM2 daemon (pid {pid}) exited"));
            }
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(ev) => {
                if let Event::RpcConnect { .. } = ev.event {
                    connections += 1;
                }
                if let Event::BusLink { up, .. } = ev.event {
                    bus_down = !up;
                }
                heap.push(Ordered(ev));
                // Let a burst arrive, then take all of it at once: one wake-up per burst
                // keeps the writer's work beside the traffic instead of inside each round trip.
                std::thread::sleep(Duration::from_millis(2));
                while let Some(ev) = rx.try_recv() {
                    heap.push(Ordered(ev));
                }
            }
            Err(true) => {}
            Err(false) => break, // every source is gone
        }
        let now = event::mono_now();
        write_out(
            &mut heap,
            now.saturating_sub(reorder_window),
            &mut writer,
            &mut events,
            &mut write_failed,
        );
        if last_flush.elapsed() > Duration::from_millis(500) {
            writer.flush();
            last_flush = Instant::now();
        }
    }
    let lost_taps = tap_thread.join().unwrap_or(0);
    if lost_taps > 0 {
        heap.push(Ordered(Stamped {
            t: event::mono_now(),
            event: Event::Note {
                level: NoteLevel::Warning,
                text: format!(
                    "{lost_taps} copies of RPC traffic were not recorded because the recorder fell behind (the traffic itself was forwarded)"
                ),
            },
        }));
    }
    let dropped = drop_counter.load(std::sync::atomic::Ordering::Relaxed);
    if dropped > 0 {
        heap.push(Ordered(Stamped {
            t: event::mono_now(),
            event: Event::Note {
                level: NoteLevel::Warning,
                text: format!("{dropped} events were dropped because the recorder fell behind"),
            },
        }));
    }
    heap.push(Ordered(Stamped {
        t: event::mono_now(),
        event: Event::Note {
            level: NoteLevel::Info,
            text: format!("recording stopped: {stop_reason}"),
        },
    }));
    write_out(
        &mut heap,
        u64::MAX,
        &mut writer,
        &mut events,
        &mut write_failed,
    );
    let capture = match writer.finish() {
        Ok(c) => c,
        // The failure surfaced only now (at the last flush): the file holds everything up to
        // the stop marker; report it like any other early stop.
        Err(e) => CaptureSummary {
            records: events,
            bytes: 0,
            too_large: 0,
            stopped: Some(e.to_string()),
        },
    };
    Ok(RecordOutcome {
        capture,
        events,
        stop_reason,
        restore: first_restore.unwrap_or_default(),
        dropped_events: dropped,
        lost_taps,
        connections,
        info: info.clone(),
    })
}

/// Tells the process watcher what the RPC traffic says, as soon as the tap decoder sees it:
/// a snapshot when a stop or restart is asked (before the daemon acts), and the pids the
/// daemon reports.
struct Hinter {
    watcher: WatcherHandle,
    /// Method of each request still waiting for its reply, by (connection, id).
    pending: HashMap<(u64, String), String>,
}

impl Hinter {
    fn message(&mut self, conn: u64, dir: Direction, msg: &crate::wire::amp::Message) {
        use crate::pm2::meaning::{MonitorProc, Pm2Call};
        use crate::wire::rpc;
        match dir {
            Direction::ToDaemon => {
                let Some(call) = rpc::parse_call(msg) else {
                    return;
                };
                let typed = Pm2Call::from_call(&call);
                match typed {
                    Pm2Call::RestartProcessId { .. } | Pm2Call::ReloadProcessId { .. } => self
                        .watcher
                        .request_snapshot(SnapshotReason::RestartRequested {
                            pm_id: typed.target_id(),
                        }),
                    Pm2Call::StopProcessId { .. } | Pm2Call::DeleteProcessId { .. } => self
                        .watcher
                        .request_snapshot(SnapshotReason::StopRequested {
                            pm_id: typed.target_id(),
                        }),
                    _ => {}
                }
                if self.pending.len() < 10_000 {
                    self.pending.insert((conn, call.id), call.method);
                }
            }
            Direction::ToClient => {
                let Some(reply) = rpc::parse_reply(msg) else {
                    return;
                };
                let Some(method) = self.pending.remove(&(conn, reply.id)) else {
                    return;
                };
                let Ok(args) = reply.outcome else { return };
                let procs = match method.as_str() {
                    "getMonitorData" => MonitorProc::list_from_reply(args),
                    "restartProcessId" | "reloadProcessId" | "startProcessId" => {
                        MonitorProc::from_reply(args).into_iter().collect()
                    }
                    _ => Vec::new(),
                };
                for p in procs {
                    if let (Some(pid), Some(pm_id)) = (p.pid, p.pm_id) {
                        if pid > 0 {
                            self.watcher.hint_pid(
                                pid as i32,
                                pm_id,
                                p.name.as_deref().unwrap_or(""),
                            );
                        }
                    }
                }
            }
        }
    }

    fn closed(&mut self, conn: u64) {
        self.pending.retain(|(c, _), _| *c != conn);
    }
}

/// Turn tapped copies into whole RPC messages, per connection and direction.
fn decode_taps(
    rx: crate::sources::proxy::TapReceiver,
    sink: EventSink,
    max_message: usize,
    watcher: Option<WatcherHandle>,
) -> u64 {
    lower_thread_priority();
    let mut hinter = watcher.map(|watcher| Hinter {
        watcher,
        pending: HashMap::new(),
    });
    let mut streams: HashMap<(u64, Direction), Decoder> = HashMap::new();
    let mut batch = Vec::new();
    // Ends once the proxy and all its forwarding threads are gone.
    while rx.recv_batch(&mut batch) {
        for item in batch.drain(..) {
            match item {
                Tap::Open { t, conn, peer } => sink.emit_at(t, Event::RpcConnect { conn, peer }),
                Tap::Data {
                    t,
                    conn,
                    dir,
                    bytes,
                } => {
                    let dec = streams
                        .entry((conn, dir))
                        .or_insert_with(|| Decoder::new(max_message));
                    dec.push(&bytes);
                    rx.recycle(bytes);
                    while let Some(m) = dec.next() {
                        match m {
                            Ok(msg) => {
                                if let Some(h) = hinter.as_mut() {
                                    h.message(conn, dir, &msg);
                                }
                                sink.emit_at(
                                    t,
                                    Event::RpcMessage {
                                        conn,
                                        dir,
                                        msg: WireMessage(msg),
                                    },
                                )
                            }
                            Err(e) => sink.emit_at(
                                t,
                                Event::RpcUndecodable {
                                    conn,
                                    dir,
                                    offset: e.offset(),
                                    error: e.to_string(),
                                },
                            ),
                        }
                    }
                }
                Tap::Gap { t, conn, dir } => {
                    let offset = streams.get(&(conn, dir)).map_or(0, |d| d.offset());
                    streams.remove(&(conn, dir));
                    sink.emit_at(t, Event::RpcUndecodable { conn, dir, offset, error: "the recorder fell behind; copies of this stream were dropped (traffic was forwarded)".into() });
                }
                Tap::Close {
                    t,
                    conn,
                    to_client_bytes,
                    to_daemon_bytes,
                } => {
                    streams.remove(&(conn, Direction::ToDaemon));
                    streams.remove(&(conn, Direction::ToClient));
                    if let Some(h) = hinter.as_mut() {
                        h.closed(conn);
                    }
                    sink.emit_at(
                        t,
                        Event::RpcClose {
                            conn,
                            to_client_bytes,
                            to_daemon_bytes,
                        },
                    );
                }
                Tap::Refused { t, peer, reason } => {
                    sink.emit_at(t, Event::RpcRefused { peer, reason })
                }
                Tap::UpstreamFailed { t, conn, error } => sink.emit_at(
                    t,
                    Event::Note {
                        level: NoteLevel::Error,
                        text: format!("connection {conn}: cannot reach the daemon: {error}"),
                    },
                ),
            }
        }
    }
    rx.lost()
}

/// Whether `pid` runs: it exists and is not a zombie (an unreaped zombie is as good as gone,
/// and init may take seconds to reap it).
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Nice the calling thread to 10 (Linux nice values are per thread).
fn lower_thread_priority() {
    // SAFETY: gettid and setpriority on the calling thread only.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// A short human-readable comment for the capture's packet.
pub fn comment(ev: &Event) -> String {
    use crate::wire::rpc;
    match ev {
        Event::RpcMessage { conn, dir, msg } => match dir {
            Direction::ToDaemon => match rpc::parse_call(&msg.0) {
                Some(c) => format!("conn {conn} client->daemon call {} id {}", c.method, c.id),
                None => format!("conn {conn} client->daemon message"),
            },
            Direction::ToClient => match rpc::parse_reply(&msg.0) {
                Some(r) => format!(
                    "conn {conn} daemon->client reply id {}{}",
                    r.id,
                    if r.outcome.is_err() { " (error)" } else { "" }
                ),
                None => format!("conn {conn} daemon->client message"),
            },
        },
        Event::BusMessage { msg } => format!(
            "bus {}",
            msg.0.args.first().and_then(|a| a.as_str()).unwrap_or("?")
        ),
        Event::RpcConnect { conn, peer } => match peer {
            Some(p) => format!("conn {conn} opened by pid {} uid {}", p.pid, p.uid),
            None => format!("conn {conn} opened"),
        },
        Event::RpcClose { conn, .. } => format!("conn {conn} closed"),
        Event::RpcRefused { peer, .. } => format!("refused pid {} uid {}", peer.pid, peer.uid),
        Event::RpcUndecodable { conn, offset, .. } => {
            format!("conn {conn} undecodable from byte {offset}")
        }
        Event::BusLink { up, detail } => {
            format!("bus {}: {detail}", if *up { "up" } else { "down" })
        }
        Event::Note { text, .. } => text.clone(),
        Event::RecordingStopped { reason } => format!("recording stopped: {reason}"),
        Event::Proc(p) => format!("{p:?}"),
        Event::LogLine(l) => format!("log line at byte {}", l.offset),
    }
}

/// Prints the timeline while recording, with the same text view as replay, and the
/// findings at the end.
pub struct LiveText<W: std::io::Write> {
    out: W,
    state: Option<(
        crate::views::text::TextView<Vec<u8>>,
        crate::timeline::Timeline,
    )>,
}

impl<W: std::io::Write> LiveText<W> {
    pub fn new(out: W) -> Self {
        LiveText { out, state: None }
    }

    pub fn event(&mut self, info: &CaptureInfo, entries: &[crate::timeline::Entry]) {
        use std::io::IsTerminal;
        let (view, tl) = self.state.get_or_insert_with(|| {
            let color = crate::views::text::color_wanted(std::io::stdout().is_terminal());
            let mut view = crate::views::text::TextView::new(Vec::new(), info, color);
            let _ = view.header();
            (view, crate::timeline::Timeline::new(info))
        });
        for e in entries {
            tl.apply(e);
            let _ = view.entry(e);
        }
        let bytes = view.out_mut();
        let _ = self.out.write_all(bytes);
        bytes.clear();
        let _ = self.out.flush();
    }

    /// Print the findings of what was recorded.
    pub fn finish(mut self) {
        if let Some((mut view, tl)) = self.state.take() {
            let _ = view.findings(&crate::rules::analyze(&tl));
            let _ = self.out.write_all(view.out_mut());
        }
        let _ = self.out.flush();
    }
}
