//! The recording pipeline: the tap decoder turns tapped copies into RPC events; the recorder
//! loop orders events from every source, redacts and writes them. Both run in the idle
//! scheduling class, beside the proxy's forwarding threads.

use super::comment::comment;
use super::hints::{HintSink, Hinter};
use super::order::{Intake, Reorder};
use super::stop::{process_alive, Stopper, DRAIN_TIMEOUT};
use super::store::Store;
use super::{RecordOptions, RecordOutcome};
use crate::capture::writer::CaptureSummary;
use crate::event::{
    self, CaptureInfo, Direction, Event, EventSink, NoteLevel, Stamped, WireMessage,
};
use crate::pm2::exchange::{Pairing, Rpc};
use crate::redact::Redactor;
use crate::safe_dir::{SafeDir, SocketRef};
use crate::sources::bus::BusSubscriber;
use crate::sources::guardian::Interposition;
use crate::sources::procwatch::{ProcWatcher, WatcherHandle};
use crate::sources::proxy::{Access, Proxy, Tap, TapProgress};
use crate::wire::amp::{Decoder, Message};
use std::collections::HashMap;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Events are written in time order once they are this old: sources deliver with small,
/// different delays (the tap decoder, the kernel), and this window puts them back in order.
const REORDER_WINDOW_NS: u64 = 200_000_000;
const PIDFD_REORDER_WINDOW_NS: u64 = 2_500_000_000;
/// Longest an event is held back for tapped copies still to be decoded (see
/// [`write_upto`]): on a host so busy that the tap decoder gets no CPU for longer, events
/// go on, and its late RPC events are written out of time order.
const MAX_HOLD_NS: u64 = 5_000_000_000;

/// The youngest instant whose events can be written once the sources' events sent before
/// `taken` are held: older than the reorder window before `taken`, and older than
/// `tap_floor` (from [`crate::sources::proxy::TapProgress`]: the oldest tapped copy not yet
/// decoded, or the instant its reading began), unless that holds them beyond
/// [`MAX_HOLD_NS`]. Both are instants read before the events were taken, not after: the
/// recorder's loop runs in the idle class, and on a busy host the time between taking
/// events and writing them was seen to exceed the window, which then let younger events out
/// before older ones still on their way.
fn write_upto(taken: event::MonoNs, window: u64, tap_floor: event::MonoNs) -> event::MonoNs {
    taken.saturating_sub(window).min(
        tap_floor
            .saturating_sub(1)
            .max(taken.saturating_sub(MAX_HOLD_NS)),
    )
}

/// What one recording session works with, handed from the caller to the recorder's thread.
pub(super) struct Session<'a> {
    pub(super) opts: &'a RecordOptions,
    pub(super) stop: &'a Stopper,
    pub(super) on_event: &'a mut dyn super::Observer,
    pub(super) info: &'a mut CaptureInfo,
    pub(super) redactor: &'a Arc<Redactor>,
    /// Notes made before the recording began, written first.
    pub(super) early_notes: Vec<Stamped>,
    pub(super) interposition: Option<&'a Interposition>,
    /// Where every source sends its events, and where the recorder takes them.
    pub(super) events: (EventSink, event::EventReceiver),
    pub(super) watcher: Option<ProcWatcher>,
    pub(super) writer: &'a mut dyn Store,
}

/// Record through the proxy: forward `listener`'s clients to `upstream` and record the
/// session until it stops.
pub(super) fn record_interposed(
    session: Session,
    listener: UnixListener,
    upstream: SocketRef,
) -> anyhow::Result<RecordOutcome> {
    let opts = session.opts;
    let sink = &session.events.0;
    let watcher = &session.watcher;
    // A session that fails as it starts gives the daemon its name back before its listener
    // closes (when this returns): in between, `rpc.sock` would name a socket that refuses
    // every pm2 command.
    let interposition = session.interposition;
    let give_back = |e: anyhow::Error| {
        if let Some(ip) = interposition {
            let _ = ip.restore();
        }
        e
    };
    // The bus subscriber starts here, on the caller's thread: its thread stamps the daemon's
    // events as they arrive, so it must not inherit the recorder's idle class (on a host whose
    // normal work takes every CPU an idle reader stamped them seconds late, after the
    // kernel's process facts they had preceded). Leaving the idle class later would need
    // CAP_SYS_NICE.
    let (pub_dir, pub_name) = SafeDir::open_parent(&opts.pub_path)
        .map_err(anyhow::Error::from)
        .map_err(give_back)?;
    let bus = BusSubscriber::start(pub_dir, pub_name, opts.daemon_pid, sink.clone())
        .map_err(anyhow::Error::from)
        .map_err(give_back)?;
    session
        .writer
        .begin(session.info)
        .map_err(|e| give_back(anyhow::anyhow!("{e}")))?;
    let access = Access::of_socket(&upstream);
    let (tap, tap_rx) = crate::sources::proxy::tap_channel(1 << 16, 256 << 20);
    let tap_progress = tap_rx.progress();
    let tap_thread = {
        let sink = sink.clone();
        let max = opts.max_message;
        let hints = watcher.as_ref().map(ProcWatcher::handle);
        std::thread::Builder::new()
            .name("tap-decoder".into())
            .spawn(move || decode_taps(tap_rx, sink, max, hints))
            .map_err(anyhow::Error::from)
            .map_err(give_back)?
    };
    let proxy = Proxy::start(listener, upstream, access, tap)
        .map_err(anyhow::Error::from)
        .map_err(give_back)?;
    // Everything else but forwarding runs on a thread of its own in the idle class: the
    // forwarding threads (spawned above, at the caller's priority) preempt it whenever they
    // wake. The caller's thread keeps its priority, so that the next session's proxy and bus
    // (`record --dir` follows the daemon across restarts on one thread) start at normal
    // priority again.
    std::thread::scope(|scope| {
        let recorder = std::thread::Builder::new()
            .name("recorder".into())
            .spawn_scoped(scope, move || {
                crate::sched::idle_class();
                record_loop(session, proxy, (tap_thread, tap_progress), bus)
            })?;
        recorder
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The recorder's loop: order, redact, interpret and write events until the recording
/// stops, then stop the sources.
fn record_loop(
    session: Session,
    proxy: Proxy,
    (tap_thread, tap_progress): (std::thread::JoinHandle<u64>, TapProgress),
    bus: BusSubscriber,
) -> anyhow::Result<RecordOutcome> {
    let Session {
        opts,
        stop,
        on_event,
        info,
        redactor,
        early_notes,
        interposition,
        events: (sink, mut rx),
        mut watcher,
        writer,
    } = session;
    let mut proxy = Some(proxy);
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

    let mut intake = Intake::default();
    for n in early_notes {
        intake.take(n);
    }
    intake.take(Stamped {
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
    });

    let started = Instant::now();
    let mut events = 0u64;
    let mut write_failed: Option<String> = None;
    let mut stopping_since: Option<Instant> = None;
    let mut stop_reason = String::new();
    let mut bus_stopped = false;
    let mut bus = Some(bus);
    let mut last_flush = Instant::now();
    let mut first_restore: Option<String> = None;
    let mut daemon_exited: Option<String> = None;

    let mut write_out = |held: &mut Reorder,
                         upto: u64,
                         writer: &mut dyn Store,
                         events: &mut u64,
                         failed: &mut Option<String>,
                         on_event: &mut dyn super::Observer| {
        while let Some(mut ev) = held.pop_upto(upto) {
            redactor.event(&mut ev.event);
            entries.clear();
            if opts.interpret {
                interp.push_into(&ev, &mut entries);
            }
            if failed.is_none() {
                match writer.write(&ev, &comment(&ev.event, &entries)) {
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
            on_event.event(info, &ev, &entries);
            recycle(ev);
        }
    };

    loop {
        // Stop conditions.
        let (n_stops, why) = stop.requested();
        let timed_out = opts.duration.is_some_and(|d| started.elapsed() >= d);
        if stopping_since.is_none() && (n_stops > 0 || timed_out || daemon_exited.is_some()) {
            stop_reason = why
                .or_else(|| daemon_exited.clone())
                .unwrap_or_else(|| "duration elapsed".into());
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
                    intake.take(Stamped {
                        t: event::mono_now(),
                        event: Event::Note {
                            level: NoteLevel::Warning,
                            text: format!("stopped with {} pm2 command(s) still in progress through the proxy", proxy.as_ref().map_or(0, |p| p.active())),
                        },
                    });
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
        if intake.bus_down && stopping_since.is_none() {
            if let Some(pid) = opts.daemon_pid.filter(|p| !process_alive(*p)) {
                daemon_exited = Some(format!("the PM2 daemon (pid {pid}) exited"));
            }
        }
        // Before taking the sources' events: the events of every older copy are sent by
        // then, and copies taken from here on are younger.
        let before = event::mono_now();
        let tap_floor = tap_progress
            .oldest_pending()
            .map_or(before, |p| p.min(before));
        let taken = match intake.receive(&mut rx, Duration::from_millis(50)) {
            Ok(taken) => taken,
            Err(true) => before,
            Err(false) => break, // every source is gone
        };
        write_out(
            &mut intake.held,
            write_upto(taken, reorder_window, tap_floor),
            writer,
            &mut events,
            &mut write_failed,
            &mut *on_event,
        );
        if last_flush.elapsed() > Duration::from_millis(500) {
            writer.flush();
            // Large payload buffers not needed in the last half second go.
            crate::wire::json::pool::trim();
            last_flush = Instant::now();
        }
    }
    let lost_taps = tap_thread.join().unwrap_or(0);
    if lost_taps > 0 {
        intake.take(Stamped {
            t: event::mono_now(),
            event: Event::Note {
                level: NoteLevel::Warning,
                text: format!(
                    "{lost_taps} copies of RPC traffic were not recorded because the recorder fell behind (the traffic itself was forwarded)"
                ),
            },
        });
    }
    let dropped = drop_counter.load(std::sync::atomic::Ordering::Relaxed);
    if dropped > 0 {
        intake.take(Stamped {
            t: event::mono_now(),
            event: Event::Note {
                level: NoteLevel::Warning,
                text: format!("{dropped} events were dropped because the recorder fell behind"),
            },
        });
    }
    // Write out everything held, whatever its time.
    let mut write_all = |intake: &mut Intake, on_event: &mut dyn super::Observer| {
        write_out(
            &mut intake.held,
            u64::MAX,
            writer,
            &mut events,
            &mut write_failed,
            on_event,
        )
    };
    // Everything recorded reaches the watchers before they are asked to close (the live
    // exporter sends its last traces then): the events still in the reorder window, and
    // those the last receive took as the sources went away.
    write_all(&mut intake, &mut *on_event);
    for text in on_event.closing_notes() {
        intake.take(Stamped {
            t: event::mono_now(),
            event: Event::Note {
                level: NoteLevel::Warning,
                text,
            },
        });
    }
    intake.take(Stamped {
        t: event::mono_now(),
        event: Event::Note {
            level: NoteLevel::Info,
            text: format!("recording stopped: {stop_reason}"),
        },
    });
    write_all(&mut intake, &mut *on_event);
    let capture = match writer.end() {
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
        connections: intake.connections,
        info: info.clone(),
        daemon_exited: daemon_exited.is_some() && stop.requested().0 == 0,
    })
}

/// Give an event's payload texts back for reuse once it is written: the tap decoder's next
/// large payload is copied into warm memory instead of pages fresh from the kernel.
fn recycle(ev: Stamped) {
    if let Event::RpcMessage { msg, .. } | Event::BusMessage { msg } = ev.event {
        for arg in msg.0.args {
            if let crate::wire::amp::Arg::Json(j) = arg {
                j.recycle();
            }
        }
    }
}

/// Turn tapped copies into events (see [`TapDecoder`]) until the proxy and all its
/// forwarding threads are gone; returns the copies lost.
fn decode_taps(
    rx: crate::sources::proxy::TapReceiver,
    sink: EventSink,
    max_message: usize,
    watcher: Option<WatcherHandle>,
) -> u64 {
    crate::sched::idle_class();
    let mut decoder = TapDecoder::new(sink, max_message, watcher.map(Hinter::new));
    let mut batch = Vec::new();
    while rx.recv_batch(&mut batch) {
        decoder.take_batch(&mut batch, |bytes| rx.recycle(bytes));
        // Measured on the copies' own clock, not the time now: when this thread falls
        // behind, a request queued just after its reply is in the next batch, however late.
        decoder.release_held(Some(decoder.latest().saturating_sub(HOLD_UNPAIRED_NS)));
    }
    decoder.release_held(None);
    rx.lost()
}

/// How long a reply that answers no request waiting is held back for its request, on the
/// copies' own clock: until a copy this much younger than the reply was taken. Its request
/// is always queued before its connection's close (the close is queued once both forwarding
/// threads are done), which releases it too; this bounds the wait on a connection that
/// stays open. Under load a forwarding thread was seen to queue a request's copy more than
/// 150 ms after stamping it, behind its reply; a reply held that long is written out of
/// time order (as the late request itself is, beyond the reorder window).
const HOLD_UNPAIRED_NS: u64 = 1_000_000_000;
/// Replies held back at most; beyond, the oldest goes on unpaired.
const MAX_HELD: usize = 1024;

/// A reply that answered no request waiting when it was decoded.
struct HeldReply {
    t: event::MonoNs,
    conn: u64,
    id: String,
    msg: Message,
}

/// The tap decoder: whole RPC messages out of tapped copies, per connection and direction,
/// each decoded once ([`Rpc::decode`]) and paired there ([`Pairing`], the one pairing). The
/// watcher's hints follow that result as soon as it is known, before the daemon acts; the
/// event carries it to the capture, the interpreter, the timeline and the TUI.
pub(super) struct TapDecoder<S: HintSink> {
    sink: EventSink,
    max_message: usize,
    streams: HashMap<(u64, Direction), Decoder>,
    pairing: Pairing,
    hinter: Option<Hinter<S>>,
    /// Replies that answered nothing yet, oldest first. A forwarding thread stamps its copy
    /// before it forwards the bytes and queues it after: a request's copy can be queued
    /// after the reply the daemon already sent, beyond the batch that holds the reply.
    held: std::collections::VecDeque<HeldReply>,
    /// The latest instant of a copy taken.
    latest: event::MonoNs,
}

impl<S: HintSink> TapDecoder<S> {
    pub(super) fn new(sink: EventSink, max_message: usize, hinter: Option<Hinter<S>>) -> Self {
        TapDecoder {
            sink,
            max_message,
            streams: HashMap::new(),
            pairing: Pairing::new(),
            hinter,
            held: Default::default(),
            latest: 0,
        }
    }

    /// The latest instant of a copy taken so far.
    pub(super) fn latest(&self) -> event::MonoNs {
        self.latest
    }

    /// One whole message: decoded once, paired, hinted, and sent on as an event. A reply
    /// that answers no request waiting is held back (when `hold`) until its request comes
    /// or [`TapDecoder::release_held`] lets it go.
    fn message(&mut self, t: event::MonoNs, conn: u64, dir: Direction, msg: Message, hold: bool) {
        let rpc = Rpc::decode(dir, &msg);
        let paired = self.pairing.pair(t, conn, &rpc);
        let asked_id = match &rpc {
            Rpc::Reply(r) if hold && paired.ask.is_none() => {
                let id = r.id.clone();
                drop(rpc);
                if self.held.len() >= MAX_HELD {
                    self.release_oldest();
                }
                self.held.push_back(HeldReply { t, conn, id, msg });
                return;
            }
            Rpc::Call { call, .. } => Some(call.id.clone()),
            _ => None,
        };
        if let Some(h) = self.hinter.as_mut() {
            h.message(&rpc, &paired);
        }
        drop(rpc);
        self.sink.emit_at(
            t,
            Event::RpcMessage {
                conn,
                dir,
                msg: WireMessage(msg),
                ask: paired.ask,
                asked: paired.asked.map(Box::new),
            },
        );
        // The reply to this request, if it was queued first.
        if let Some(id) = asked_id {
            if let Some(i) = self
                .held
                .iter()
                .position(|h| h.conn == conn && h.id == id && h.t >= t)
            {
                let h = self.held.remove(i).expect("a held reply");
                self.message(h.t, h.conn, Direction::ToClient, h.msg, false);
            }
        }
    }

    fn release_oldest(&mut self) {
        if let Some(h) = self.held.pop_front() {
            self.unpaired(h);
        }
    }

    /// A held reply goes on as it was decoded: answering nothing (not paired now with a
    /// request seen after it).
    fn unpaired(&self, h: HeldReply) {
        self.sink.emit_at(
            h.t,
            Event::RpcMessage {
                conn: h.conn,
                dir: Direction::ToClient,
                msg: WireMessage(h.msg),
                ask: None,
                asked: None,
            },
        );
    }

    /// Send on the held replies seen before `before` (all of them: `None`), unpaired.
    pub(super) fn release_held(&mut self, before: Option<event::MonoNs>) {
        while self
            .held
            .front()
            .is_some_and(|h| before.is_none_or(|b| h.t < b))
        {
            self.release_oldest();
        }
    }

    /// Send on the held replies of `conn`, unpaired (it closed, or copies of it were lost).
    fn release_conn(&mut self, conn: u64) {
        let (of_conn, rest) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.conn == conn);
        self.held = rest;
        for h in of_conn {
            self.unpaired(h);
        }
    }

    /// Take a batch of tapped copies (emptying it); each copy's buffer goes to `recycle`.
    pub(super) fn take_batch(&mut self, batch: &mut Vec<Tap>, mut recycle: impl FnMut(Vec<u8>)) {
        // The forwarding threads stamp each copy before forwarding it and queue it after, so
        // a batch can hold them out of time order (a reply queued before its request): pair
        // them in the order they were seen, which is the order the capture stores them in.
        batch.sort_by_key(Tap::time);
        if let Some(last) = batch.last() {
            self.latest = self.latest.max(last.time());
        }
        for item in batch.drain(..) {
            if let Some(bytes) = self.take(item) {
                recycle(bytes);
            }
        }
    }

    /// Take one tapped copy, in the order seen; gives back a copy's buffer for reuse.
    pub(super) fn take(&mut self, item: Tap) -> Option<Vec<u8>> {
        let sink = &self.sink;
        match item {
            Tap::Open { t, conn, peer } => sink.emit_at(t, Event::RpcConnect { conn, peer }),
            Tap::Data {
                t,
                conn,
                dir,
                bytes,
            } => {
                let max = self.max_message;
                let dec = self
                    .streams
                    .entry((conn, dir))
                    .or_insert_with(|| Decoder::new(max));
                dec.push(&bytes);
                // Decoded first (the decoder is borrowed from `streams`), then taken in order.
                let decoded: Vec<_> = std::iter::from_fn(|| dec.next()).collect();
                for m in decoded {
                    match m {
                        Ok(msg) => self.message(t, conn, dir, msg, true),
                        Err(e) => self.sink.emit_at(
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
                return Some(bytes.into_buffer());
            }
            Tap::Gap { t, conn, dir } => {
                let offset = self.streams.get(&(conn, dir)).map_or(0, |d| d.offset());
                self.streams.remove(&(conn, dir));
                // The requests a held reply waits for may be among the copies lost.
                self.release_conn(conn);
                self.sink.emit_at(t, Event::RpcUndecodable { conn, dir, offset, error: "the recorder fell behind; copies of this stream were dropped (traffic was forwarded)".into() });
            }
            Tap::Close {
                t,
                conn,
                to_client_bytes,
                to_daemon_bytes,
            } => {
                self.streams.remove(&(conn, Direction::ToDaemon));
                self.streams.remove(&(conn, Direction::ToClient));
                self.release_conn(conn);
                self.sink.emit_at(
                    t,
                    Event::RpcClose {
                        conn,
                        to_client_bytes,
                        to_daemon_bytes,
                        unanswered: self.pairing.close(conn),
                    },
                );
            }
            Tap::Refused { t, peer, reason } => sink.emit_at(t, Event::RpcRefused { peer, reason }),
            Tap::UpstreamFailed { t, conn, error } => sink.emit_at(
                t,
                Event::Note {
                    level: NoteLevel::Error,
                    text: format!("connection {conn}: cannot reach the daemon: {error}"),
                },
            ),
        }
        None
    }
}

#[cfg(test)]
mod tests {
    /// Events wait for tapped copies older than them, within the reorder window's rule
    /// and at most [`MAX_HOLD_NS`].
    #[test]
    fn events_wait_for_older_copies_still_to_decode() {
        let taken = 10_000_000_000;
        let w = REORDER_WINDOW_NS;
        // Nothing pending, the events taken at once.
        assert_eq!(write_upto(taken, w, taken - 1_000_000), taken - w);
        // A copy 700 ms old still to decode; or the loop starved for 700 ms before taking.
        assert_eq!(
            write_upto(taken, w, taken - 700_000_000),
            taken - 700_000_001
        );
        assert_eq!(write_upto(taken, w, 1), taken - MAX_HOLD_NS);
        assert_eq!(write_upto(5, w, 1), 0);
    }

    use super::*;
    use crate::capture::{CaptureReader, CaptureWriter};
    use crate::event::Asked;
    use crate::timeline::{EntryKind, Interpreter};
    use crate::wire::rpc::{encode_call, encode_reply};
    use serde_json::json;

    fn data(t: u64, conn: u64, dir: Direction, msg: crate::wire::amp::Message) -> Tap {
        Tap::Data {
            t,
            conn,
            dir,
            bytes: msg.encode().into(),
        }
    }

    /// The events the tap decoder makes of one batch.
    fn decode(batch: Vec<Tap>) -> Vec<Stamped> {
        decode_batches(vec![batch])
    }

    /// The events the tap decoder makes of batches taken one after the other.
    fn decode_batches(batches: Vec<Vec<Tap>>) -> Vec<Stamped> {
        let (sink, mut rx) = EventSink::channel(1024);
        let mut dec = TapDecoder::<WatcherHandle>::new(sink, 1 << 20, None);
        for mut batch in batches {
            dec.take_batch(&mut batch, drop);
        }
        dec.release_held(None);
        drop(dec);
        std::iter::from_fn(|| rx.try_recv()).collect()
    }

    fn pairing(ev: &Stamped) -> (Option<u64>, Option<Asked>) {
        match &ev.event {
            Event::RpcMessage { ask, asked, .. } => (*ask, asked.as_deref().cloned()),
            e => panic!("not an RPC message: {e:?}"),
        }
    }

    /// A reply paired in the tap carries its request's number and method into the capture,
    /// and a replay takes them from there: the interpreter does not pair again.
    #[test]
    fn the_tap_pairing_goes_through_the_capture_to_the_entries() {
        let restart = encode_call("restartProcessId", vec![json!({"id": 3})], "7");
        let started = encode_reply(
            vec![json!({"pid": 4242, "pm_id": 3, "name": "web", "pm2_env": {}})],
            "7",
        );
        // Queued reply first, as when the request's forwarding thread is slow to queue it.
        let events = decode(vec![
            data(2_000, 1, Direction::ToClient, started),
            data(1_000, 1, Direction::ToDaemon, restart),
        ]);
        assert_eq!(pairing(&events[0]), (Some(1), None));
        let asked = Asked {
            t: 1_000,
            method: "restartProcessId".into(),
            pm_id: Some(3),
        };
        assert_eq!(pairing(&events[1]), (Some(1), Some(asked.clone())));

        // Through a capture file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paired.bin");
        let info = CaptureInfo {
            rpc_paired: true,
            ..CaptureInfo::default()
        };
        let mut w = CaptureWriter::create(&path, &info, false).unwrap();
        for ev in &events {
            w.write(ev, "").unwrap();
        }
        w.finish().unwrap();
        let r = CaptureReader::open(&path).unwrap();
        assert!(r.info().rpc_paired);
        let info = r.info().clone();
        let mut read: Vec<Stamped> = r.map(Result::unwrap).collect();
        assert_eq!(read, events);

        // The reply's id no longer matches its request's: pairing again by (connection, id)
        // would leave it unanswered; the interpreter follows the capture.
        if let Event::RpcMessage { msg, .. } = &mut read[1].event {
            msg.0.args[1] = crate::wire::amp::Arg::Str("other".into());
        }
        let mut interp = Interpreter::new(&info);
        let entries: Vec<_> = read.iter().flat_map(|e| interp.push(e)).collect();
        match &entries[1].kind {
            EntryKind::RequestAnswered {
                ask,
                method,
                latency_ns,
                new_pid,
                ..
            } => {
                assert_eq!(*ask, Some(1));
                assert_eq!(method.as_deref(), Some("restartProcessId"));
                assert_eq!(*latency_ns, Some(1_000));
                assert_eq!(*new_pid, Some(4242));
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(entries[1].app.as_ref().map(|a| a.pm_id), Some(3));
    }

    /// Requests are numbered over all connections in the order seen; a close lists what was
    /// still waiting, and a reply that comes after pairs with nothing.
    #[test]
    fn requests_are_numbered_in_the_order_seen() {
        let events = decode(vec![
            data(
                30,
                2,
                Direction::ToDaemon,
                encode_call("getVersion", vec![], "1"),
            ),
            data(
                10,
                1,
                Direction::ToDaemon,
                encode_call("getMonitorData", vec![], "1"),
            ),
            data(20, 1, Direction::ToDaemon, encode_call("ping", vec![], "2")),
            Tap::Close {
                t: 40,
                conn: 1,
                to_client_bytes: 0,
                to_daemon_bytes: 0,
            },
            data(
                50,
                2,
                Direction::ToClient,
                encode_reply(vec![json!("7.0.4")], "1"),
            ),
            data(
                60,
                1,
                Direction::ToClient,
                encode_reply(vec![json!([])], "1"),
            ),
        ]);
        let asks: Vec<_> = events
            .iter()
            .filter_map(|e| match &e.event {
                Event::RpcMessage { ask, asked, .. } => Some((
                    e.t,
                    *ask,
                    asked.as_ref().map(|a| a.method.as_str().to_owned()),
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            asks,
            vec![
                (10, Some(1), None),
                (20, Some(2), None),
                (30, Some(3), None),
                (50, Some(3), Some("getVersion".into())),
                (60, None, None),
            ]
        );
        assert!(matches!(
            &events[3].event,
            Event::RpcClose { unanswered, .. } if unanswered == &["getMonitorData", "ping"]
        ));
    }

    /// A request's copy queued after the batch that held its reply (its forwarding thread
    /// was slow to queue it): the reply waits for it and pairs, in time order.
    #[test]
    fn a_reply_queued_a_batch_before_its_request_still_pairs() {
        let events = decode_batches(vec![
            vec![data(
                2_000,
                1,
                Direction::ToClient,
                encode_reply(vec![json!("7.0.4")], "5"),
            )],
            vec![data(
                1_000,
                1,
                Direction::ToDaemon,
                encode_call("getVersion", vec![], "5"),
            )],
        ]);
        assert_eq!(events.len(), 2);
        assert_eq!(pairing(&events[0]), (Some(1), None));
        assert_eq!(events[1].t, 2_000);
        assert_eq!(
            pairing(&events[1]),
            (
                Some(1),
                Some(Asked {
                    t: 1_000,
                    method: "getVersion".into(),
                    pm_id: None,
                })
            )
        );
    }

    /// A reply that answers nothing is held back only until its connection closes, copies
    /// of it are lost, or it is older than the hold; a request seen after it does not take it.
    #[test]
    fn a_reply_that_answers_nothing_goes_on_unpaired() {
        let reply = |t, conn| data(t, conn, Direction::ToClient, encode_reply(vec![], "9"));
        let (sink, mut rx) = EventSink::channel(1024);
        let mut dec = TapDecoder::<WatcherHandle>::new(sink, 1 << 20, None);
        let take = |dec: &mut TapDecoder<WatcherHandle>, tap| dec.take_batch(&mut vec![tap], drop);
        take(&mut dec, reply(10, 1));
        take(&mut dec, reply(20, 2));
        take(&mut dec, reply(30, 3));
        take(
            &mut dec,
            Tap::Close {
                t: 40,
                conn: 1,
                to_client_bytes: 0,
                to_daemon_bytes: 0,
            },
        );
        take(
            &mut dec,
            Tap::Gap {
                t: 50,
                conn: 2,
                dir: Direction::ToDaemon,
            },
        );
        // A request sent after the reply is not what it answered.
        take(
            &mut dec,
            data(60, 3, Direction::ToDaemon, encode_call("ping", vec![], "9")),
        );
        let kinds = |rx: &mut crate::event::EventReceiver| -> Vec<(u64, Option<u64>)> {
            std::iter::from_fn(|| rx.try_recv())
                .map(|e| match e.event {
                    Event::RpcMessage { ask, .. } => (e.t, ask),
                    _ => (e.t, None),
                })
                .collect()
        };
        assert_eq!(
            kinds(&mut rx),
            vec![
                (10, None),
                (40, None),
                (20, None),
                (50, None),
                (60, Some(1))
            ]
        );
        dec.release_held(Some(30));
        assert_eq!(kinds(&mut rx), vec![]);
        dec.release_held(Some(31));
        assert_eq!(kinds(&mut rx), vec![(30, None)]);
    }
}
