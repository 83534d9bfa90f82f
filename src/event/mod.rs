//! The events that sources produce and the capture stores.
//!
//! An [`Event`] is what one source observed, at one instant of the recorder's monotonic
//! clock ([`Stamped::t`]). Events are stored as they were observed (after redaction); their
//! PM2 meaning is derived later by the timeline, identically live and on replay.
//!
//! These are the capture format's types: what a capture stores is defined here and in
//! [`proc`] (what the process watcher observed) and [`host`] (who holds an address elsewhere
//! on the host); sources depend on them.

pub mod host;
pub mod proc;

use crate::wire::amp::{Arg, Message};
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use proc::ProcEvent;

/// `n` in decimal, appended to `out` without the formatting machinery (the TUI describes
/// every event it loads).
pub(crate) fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits, each a char of its own (no UTF-8 check of the slice).
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// `n` in decimal (with its sign), appended to `out`: what `{n}` writes.
pub(crate) fn push_i64(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    push_u64(out, n.unsigned_abs());
}

/// Nanoseconds of CLOCK_MONOTONIC: the one clock every source is ordered on (the kernel's
/// process-connector timestamps use it too).
pub(crate) type MonoNs = u64;

/// Read CLOCK_MONOTONIC now.
pub fn mono_now() -> MonoNs {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass and has no other effect.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Nanoseconds since the Unix epoch, from the wall clock.
pub fn wall_now_ns() -> i128 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_nanos() as i128
}

/// Where an event comes from. Each source is one interface in the capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The recorder itself: start, notes, faults.
    Recorder,
    /// Bytes between `pm2` clients and the daemon's `rpc.sock`.
    Rpc,
    /// The daemon's event bus, `pub.sock`.
    Bus,
    /// The operating system: process events and snapshots.
    Proc,
    /// Log files read afterwards by `explain` (pm2.log, app out/err logs). Not a capture
    /// interface: `record` does not read logs.
    Logs,
}

impl Source {
    /// The capture's interfaces, in order (every source but [`Source::Logs`]).
    pub const ALL: [Source; 4] = [Source::Recorder, Source::Rpc, Source::Bus, Source::Proc];

    pub fn name(self) -> &'static str {
        match self {
            Source::Recorder => "recorder",
            Source::Rpc => "rpc",
            Source::Bus => "bus",
            Source::Proc => "proc",
            Source::Logs => "log",
        }
    }
}

/// `+12.345s`: `t` relative to `reference` (a capture's start), in seconds with
/// milliseconds, `-` before it. The one formatter of relative times for every view and
/// finding.
pub(crate) fn offset_text(t: MonoNs, reference: MonoNs) -> String {
    let d = t as i128 - reference as i128;
    let sign = if d < 0 { "-" } else { "+" };
    let d = d.unsigned_abs();
    format!("{sign}{}.{:03}s", d / 1_000_000_000, (d / 1_000_000) % 1000)
}

/// Direction of RPC bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From a pm2 client to the daemon.
    ToDaemon,
    /// From the daemon to a pm2 client.
    ToClient,
}

/// Credentials of a peer on a unix socket (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteLevel {
    Info,
    Warning,
    Error,
}

/// One observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Something the recorder wants on the record: its mode, a fault, a decision.
    Note { level: NoteLevel, text: String },
    /// A pm2 client connected to the proxy and was forwarded to the daemon.
    RpcConnect { conn: u64, peer: Option<PeerCred> },
    /// A client was refused because the daemon's own socket would not admit it.
    RpcRefused { peer: PeerCred, reason: String },
    /// One whole AMP message on an RPC connection, with how the recorder paired it as it
    /// decoded it ([`crate::pm2::exchange::Pairing`]; absent from captures recorded before it
    /// did, see [`CaptureInfo::rpc_paired`]).
    RpcMessage {
        conn: u64,
        dir: Direction,
        msg: WireMessage,
        /// A request: its number (from 1, over all connections, in the order asked). A
        /// reply: the number of the request it answers; none if it answers none waiting.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ask: Option<u64>,
        /// A reply: the request it answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        asked: Option<Box<Asked>>,
    },
    /// The RPC stream could not be decoded from `offset` on; its bytes were still forwarded.
    RpcUndecodable {
        conn: u64,
        dir: Direction,
        offset: u64,
        error: String,
    },
    /// An RPC connection ended.
    RpcClose {
        conn: u64,
        to_client_bytes: u64,
        to_daemon_bytes: u64,
        /// Methods of the requests still waiting for their reply, oldest first (as paired by
        /// the recorder, like [`Event::RpcMessage`]'s `ask`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unanswered: Vec<String>,
    },
    /// One message on the event bus.
    BusMessage { msg: WireMessage },
    /// The bus subscription connected (true) or was lost (false).
    BusLink { up: bool, detail: String },
    /// What the operating system showed (boxed: the largest variant by far, it would make
    /// every event as large as a process event, and events are moved in batches).
    Proc(Box<ProcEvent>),
    /// Recording stopped here before the end of the capture (write error, disk full);
    /// events after this instant are missing.
    RecordingStopped { reason: String },
    /// A line of pm2.log or of an app's log, placed at its own timestamp (`explain`).
    LogLine(Box<crate::sources::logs::LogLine>),
}

impl Event {
    pub fn source(&self) -> Source {
        match self {
            Event::Note { .. } | Event::RecordingStopped { .. } => Source::Recorder,
            Event::RpcConnect { .. }
            | Event::RpcRefused { .. }
            | Event::RpcMessage { .. }
            | Event::RpcUndecodable { .. }
            | Event::RpcClose { .. } => Source::Rpc,
            Event::BusMessage { .. } | Event::BusLink { .. } => Source::Bus,
            Event::Proc(_) => Source::Proc,
            Event::LogLine(_) => Source::Logs,
        }
    }
}

/// The request a reply answers, as the pairing kept it: what the timeline needs of it
/// without looking for it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Asked {
    /// When the request was seen.
    pub t: MonoNs,
    pub method: String,
    /// The app the request named by pm_id, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pm_id: Option<u64>,
}

/// An event with the instant it was observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    /// CLOCK_MONOTONIC nanoseconds.
    pub t: MonoNs,
    #[serde(flatten)]
    pub event: Event,
}

impl Stamped {
    /// Move the event by `by` ns (onto another recording's clock): its instant, and the
    /// instant it names of the request a reply answers. Clamped to the clock's range.
    pub(crate) fn shift(&mut self, by: i128) {
        let shifted = |t: MonoNs| (t as i128 + by).clamp(0, MonoNs::MAX as i128) as MonoNs;
        self.t = shifted(self.t);
        if let Event::RpcMessage {
            asked: Some(asked), ..
        } = &mut self.event
        {
            asked.t = shifted(asked.t);
        }
    }
}

/// An AMP message as stored: each argument tagged `j` (JSON), `s` (string) or `b64` (raw).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WireMessage(pub Message);

impl Serialize for WireMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.args.len()))?;
        for a in &self.0.args {
            // One-member objects written directly: the JSON text goes through as kept.
            #[derive(Serialize)]
            enum Stored<'a> {
                #[serde(rename = "j")]
                J(&'a crate::wire::json::Json),
                #[serde(rename = "s")]
                S(&'a str),
                #[serde(rename = "b64")]
                B64(String),
            }
            match a {
                Arg::Json(v) => seq.serialize_element(&Stored::J(v))?,
                Arg::Str(v) => seq.serialize_element(&Stored::S(v))?,
                Arg::Raw(b) => seq.serialize_element(&Stored::B64(
                    base64::engine::general_purpose::STANDARD.encode(b),
                ))?,
            }
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for WireMessage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        /// One stored argument, read without building an intermediate map.
        #[derive(Deserialize)]
        struct StoredArg {
            /// Present-but-null is `Some(Null)`: `j:null` is a valid AMP argument.
            #[serde(default, deserialize_with = "present")]
            j: Option<crate::wire::json::Json>,
            s: Option<String>,
            b64: Option<String>,
        }
        let items: Vec<StoredArg> = Vec::deserialize(d)?;
        let mut args = Vec::with_capacity(items.len());
        for item in items {
            let arg = match item {
                StoredArg { j: Some(v), .. } => Arg::Json(v),
                StoredArg { s: Some(s), .. } => Arg::Str(s),
                StoredArg { b64: Some(b), .. } => Arg::Raw(
                    base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .map_err(D::Error::custom)?,
                ),
                _ => return Err(D::Error::custom("argument is none of j, s, b64")),
            };
            args.push(arg);
        }
        Ok(WireMessage(Message { args }))
    }
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<crate::wire::json::Json>, D::Error> {
    crate::wire::json::Json::deserialize(d).map(Some)
}

/// What is known about the recording as a whole; the first record of every capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CaptureInfo {
    pub tool: String,
    pub tool_version: String,
    pub host: String,
    pub kernel: String,
    pub pm2_version: Option<String>,
    pub pm2_home: String,
    pub daemon_pid: Option<i32>,
    /// Wall clock (ns since the Unix epoch) and monotonic clock (ns) read together at start:
    /// `wall = wall_ref_ns + (t - mono_ref_ns)`.
    pub wall_ref_ns: i128,
    pub mono_ref_ns: MonoNs,
    /// How values were redacted: `values`, `all` or `none`.
    pub redaction: String,
    /// How the process watcher ran (`netlink`, `pidfd`, `off`) and why.
    pub proc_mode: String,
    pub command_line: Vec<String>,
    /// Whether the recorder paired the RPC messages as it decoded them (`ask`, `asked` and
    /// `unanswered` on the RPC events). Captures recorded before it did lack them; their
    /// requests (without `ask`) are paired when interpreted, by the same
    /// [`crate::pm2::exchange::Pairing`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rpc_paired: bool,
}

impl CaptureInfo {
    /// Wall-clock nanoseconds of monotonic instant `t`.
    pub fn wall_ns(&self, t: MonoNs) -> i128 {
        self.wall_ref_ns + (t as i128 - self.mono_ref_ns as i128)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers written without the formatting machinery read as `{n}` writes them.
    #[test]
    fn numbers_pushed_as_formatted() {
        for n in [
            0u64,
            7,
            9,
            10,
            99,
            100,
            4242,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut s = String::from("x");
            push_u64(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
        for n in [
            0i64,
            1,
            -1,
            9,
            -10,
            4242,
            -4242,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ] {
            let mut s = String::new();
            push_i64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn stamped_json_roundtrip() {
        let msg = Message::new(vec![
            Arg::json(serde_json::json!({"type": "call"})),
            Arg::Str("1:0".into()),
            Arg::Raw(vec![0, 255]),
            Arg::json(serde_json::Value::Null),
        ]);
        let ev = Stamped {
            t: 42,
            event: Event::RpcMessage {
                conn: 1,
                dir: Direction::ToDaemon,
                msg: WireMessage(msg),
                ask: None,
                asked: None,
            },
        };
        let text = serde_json::to_string(&ev).unwrap();
        assert!(text.contains("\"type\":\"rpc_message\""), "{text}");
        let back: Stamped = serde_json::from_str(&text).unwrap();
        assert_eq!(back, ev);
    }

    /// The sink holds at most `capacity` events in flight and counts the rest as dropped,
    /// without blocking; taking events frees room again.
    #[test]
    fn sink_bound_counts_drops_and_frees_room() {
        let (sink, mut rx) = EventSink::channel(2);
        let note = |i: u64| Event::Note {
            level: NoteLevel::Info,
            text: format!("n{i}"),
        };
        for i in 0..5 {
            sink.emit_at(i, note(i));
        }
        let dropped = sink.drop_counter();
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(rx.try_recv().map(|e| e.t), Some(0));
        assert_eq!(rx.try_recv().map(|e| e.t), Some(1));
        assert!(rx.try_recv().is_none());
        sink.emit_at(7, note(7));
        sink.emit_at(8, note(8));
        sink.emit_at(9, note(9));
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 4);
        assert_eq!(rx.try_recv().map(|e| e.t), Some(7));
        // Every sink gone: the receiver says so once the queue is empty.
        drop(sink);
        assert_eq!(rx.try_recv().map(|e| e.t), Some(8));
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_millis(10)),
            Err(false)
        );
    }
}

/// Where sources send their events. Never blocks: when the recorder falls behind (slow
/// disk), events are counted as dropped instead of delaying the source, and the recorder
/// reports the count in the capture. Cloneable; usable from any thread.
///
/// The bound is a count of events in flight, over an unbounded channel: memory follows the
/// events actually queued. (A `sync_channel` of the same bound allocates and touches every
/// slot up front: 65,536 events of ~300 bytes were 20 MB of an idle recorder's RSS.)
#[derive(Clone, Debug)]
pub struct EventSink {
    tx: std::sync::mpsc::Sender<Stamped>,
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    capacity: usize,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The receiving end of an [`EventSink`].
#[derive(Debug)]
pub struct EventReceiver {
    rx: std::sync::mpsc::Receiver<Stamped>,
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl EventReceiver {
    /// The next event within `timeout`: `Err(true)` on timeout, `Err(false)` when every
    /// sink is gone.
    pub fn recv_timeout(&mut self, timeout: std::time::Duration) -> Result<Stamped, bool> {
        use std::sync::mpsc::RecvTimeoutError;
        let e = self
            .rx
            .recv_timeout(timeout)
            .map_err(|e| matches!(e, RecvTimeoutError::Timeout))?;
        self.taken();
        Ok(e)
    }

    pub fn try_recv(&mut self) -> Option<Stamped> {
        let e = self.rx.try_recv().ok()?;
        self.taken();
        Some(e)
    }

    fn taken(&self) {
        self.in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl EventSink {
    /// A sink and the receiving end, holding at most `capacity` events in flight.
    pub fn channel(capacity: usize) -> (EventSink, EventReceiver) {
        let (tx, rx) = std::sync::mpsc::channel();
        let in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize> = Default::default();
        (
            EventSink {
                tx,
                in_flight: in_flight.clone(),
                capacity,
                dropped: Default::default(),
            },
            EventReceiver { rx, in_flight },
        )
    }

    /// Stamp `event` with the current monotonic time and send it.
    pub(crate) fn emit(&self, event: Event) {
        self.emit_at(mono_now(), event)
    }

    /// Send an event observed at `t` (for sources with their own timestamps, e.g. the kernel).
    pub(crate) fn emit_at(&self, t: MonoNs, event: Event) {
        use std::sync::atomic::Ordering::Relaxed;
        let queued = self.in_flight.fetch_add(1, Relaxed) < self.capacity
            && self.tx.send(Stamped { t, event }).is_ok();
        if !queued {
            self.in_flight.fetch_sub(1, Relaxed);
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    /// A handle on the drop count that does not keep the channel open.
    pub(crate) fn drop_counter(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.dropped.clone()
    }
}
