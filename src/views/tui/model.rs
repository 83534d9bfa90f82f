//! What the TUI shows, kept compact so that a million events stay cheap: one small [`Row`]
//! per timeline entry in time order, their words in one text arena, the raw events left in
//! the capture file (re-read by offset when the detail pane asks), the [`Timeline`] model
//! for the lanes and the findings of the rules.

use super::raw::RawStore;
use crate::capture::{CaptureError, CaptureReader};
use crate::event::{CaptureInfo, MonoNs, Source, Stamped};
use crate::pm2::daemon_log::DaemonLogLine;
use crate::pm2::meaning::{BusEvent, ProcessEventKind};
use crate::rules::{self, Finding};
use crate::timeline::{AppRef, Entry, EntryKind, Interpreter, Timeline, Tone};
use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::time::{Duration, Instant};

/// No index (pair, app).
pub(crate) const NONE: u32 = u32::MAX;
/// Longest description kept per row, in bytes.
const MAX_TEXT: usize = 512;
/// The rows' words are kept in chunks of this many bytes (a power of two), each allocated
/// once at its full size: a growing arena would copy (and fault in) everything again at
/// each doubling. A row's `text_at` is its chunk's number and its offset in the chunk.
const TEXT_CHUNK_BITS: u32 = 20;
const TEXT_CHUNK: usize = 1 << TEXT_CHUNK_BITS;
/// Chunks that `text_at` can number (4 GB of words in all, as before the chunks).
const MAX_TEXT_CHUNKS: usize = 1 << (32 - TEXT_CHUNK_BITS);
/// Events per batch from the loader thread.
const BATCH: usize = 1024;
/// Capture bytes per batch from the loader thread: with large events (getMonitorData
/// replies of 150 KB), batches of [`BATCH`] events queued on the channel would hold
/// hundreds of MB.
const BATCH_BYTES: u64 = 4 << 20;
/// How far ahead of the rows read the rows grow at most, as a multiple (see
/// [`Model::reserve_rows`]).
const MAX_ROWS_AHEAD: usize = 256;
/// Read problems kept for the status line.
const MAX_PROBLEMS: usize = 100;

/// What a row is, for the lanes and the detail pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum RowKind {
    Ask,
    Answer,
    /// A daemon event: bus process event or other bus event, daemon log line, bus link.
    Daemon,
    AppLog,
    Proc,
    Other,
}

/// A marker drawn on a lane. Ordered by how much it matters when several share a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Mark {
    None,
    Plain,
    Online,
    /// Ready: a reload's new worker listening, or the app's `ready` message.
    Ready,
    Spawn,
    Stop,
    Exit,
    Kill,
    Errored,
}

impl Mark {
    /// The glyph on a lane.
    pub(crate) fn glyph(self) -> char {
        match self {
            Mark::None => ' ',
            Mark::Plain => '·',
            Mark::Online => 'o',
            Mark::Ready => 'r',
            Mark::Spawn => 'S',
            Mark::Stop => 'i',
            Mark::Exit => 'x',
            Mark::Kill => 'K',
            Mark::Errored => 'E',
        }
    }
}

/// One timeline entry, compact.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// When it was observed.
    pub t: MonoNs,
    /// `t`, made non-decreasing over the rows (sources deliver with small delays): the key
    /// rows are searched by.
    pub(crate) tk: MonoNs,
    /// Index of the raw event in the [`RawStore`].
    pub(crate) raw: u32,
    text_at: u32,
    text_len: u32,
    /// The other half of a request: the answer of an ask, the ask of an answer.
    pub(crate) pair: u32,
    /// Index into [`Model::apps`], or [`NONE`].
    pub app: u32,
    pub(crate) source: Source,
    pub(crate) tone: Tone,
    pub(crate) kind: RowKind,
}

/// A row of the daemon lane: its instants, app, marker and tone (those of its [`Row`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DaemonMark {
    pub(crate) t: MonoNs,
    pub(crate) tk: MonoNs,
    pub(crate) app: u32,
    pub(crate) mark: Mark,
    pub(crate) tone: Tone,
}

/// Reading a capture in the background, in two threads: one reads and decodes the events
/// (`tui-loader`), the other interprets them (`tui-interp`), so that the view's thread only
/// indexes the entries.
pub struct Loader {
    rx: Receiver<LoadMsg<Interpreted>>,
    /// Used batches go back to the thread that made them, to be freed (and their memory
    /// reused) there: freeing memory another thread allocated is slow with the system
    /// allocator.
    recycle: Sender<Interpreted>,
    /// File length, for the progress shown while loading.
    pub(crate) total: u64,
    /// Bytes read so far.
    pub(crate) read: u64,
    /// The interpreting thread (it waits for the reading thread before it ends).
    handle: Option<std::thread::JoinHandle<()>>,
}

/// What a loading thread passes on: batches (of events read, or of their entries), problems
/// met, and the end.
enum LoadMsg<B> {
    Batch { batch: B, read: u64 },
    Problem(String),
    Done,
}

/// Events read, each with its offset in the file.
type Read = Vec<(u64, Stamped)>;

/// The entries the interpreter made of a batch of events.
#[derive(Default)]
struct Interpreted {
    entries: Vec<Entry>,
    /// Per event that made entries: its offset in the file, and how many of `entries`
    /// (in order) it made.
    events: Vec<(u64, usize)>,
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Unblock and end the thread: it stops at its next send.
        let (_tx, rx) = std::sync::mpsc::channel();
        let _ = std::mem::replace(&mut self.rx, rx);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Everything the views show.
pub struct Model {
    pub(crate) info: CaptureInfo,
    /// What is shown: the file name, or `live`.
    pub(crate) name: String,
    rows: Vec<Row>,
    /// The rows' words, in chunks of at most [`TEXT_CHUNK`] bytes.
    text: Vec<String>,
    /// Where an entry's words are written before they are made terminal-safe and kept.
    words: String,
    /// Apps by index (rows refer to them); names learnt late are filled in.
    pub(crate) apps: Vec<AppRef>,
    app_ix: HashMap<u64, u32>,
    /// The last app found in `app_ix` (pm_id, index): runs of rows name the same app.
    last_app: Option<(u64, u32)>,
    /// The daemon lane's rows, in order, with what the lane draws of them: a frame of the
    /// whole capture reads every one, and reading them here rather than among the million
    /// rows (40 bytes each, a cache miss apiece) took most of a frame's time.
    pub(crate) daemon: Vec<DaemonMark>,
    /// The row of each ask not yet answered, with its instant and number, in time order.
    /// The pairing is the recorder's (or, for an older capture, the interpreter's); this
    /// only finds the row an answer names, by the instant and number of its ask (numbers
    /// need not grow with time: the recorder numbers asks as their copies reach it). Grows
    /// only with asks that never get an answer, by 24 bytes each, less than their rows.
    waiting_asks: Vec<(MonoNs, u64, u32)>,
    pub timeline: Timeline,
    pub findings: Vec<Finding>,
    raw: RawStore,
    /// Problems met while reading (damaged records, truncation).
    pub(crate) problems: Vec<String>,
    /// Bumped on every change, for caches.
    pub(crate) version: u64,
    /// Rows added since the findings were computed.
    stale_findings: bool,
}

impl Model {
    fn new(info: CaptureInfo, name: String, raw: RawStore) -> Model {
        Model {
            timeline: Timeline::new(&info),
            info,
            name,
            rows: Vec::new(),
            text: Vec::new(),
            words: String::new(),
            apps: Vec::new(),
            app_ix: HashMap::new(),
            last_app: None,
            daemon: Vec::new(),
            waiting_asks: Vec::new(),
            findings: Vec::new(),
            raw,
            problems: Vec::new(),
            version: 0,
            stale_findings: false,
        }
    }

    /// An empty model for a live recording; events arrive through [`Model::push_live`].
    pub fn live(info: CaptureInfo, name: impl Into<String>) -> Model {
        Model::new(info, name.into(), RawStore::memory())
    }

    /// The capture's metadata, once the recorder knows it (before any row arrived).
    pub(crate) fn set_info(&mut self, info: CaptureInfo) {
        if self.rows.is_empty() {
            self.timeline = Timeline::new(&info);
        }
        self.info = info;
        self.version += 1;
    }

    /// Open a capture and start reading it in the background: feed the model with
    /// [`Model::pump`] until it says it is done.
    pub fn open(path: &Path) -> Result<(Model, Loader), CaptureError> {
        let reader = CaptureReader::open(path)?;
        let info = reader.info().clone();
        let total = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let raw = RawStore::file(path);
        let model = Model::new(info.clone(), name, raw);
        let spawn_error = |error| CaptureError::Io {
            path: path.to_owned(),
            offset: 0,
            op: "cannot start the loader threads",
            error,
        };
        let (read_tx, read_rx) = std::sync::mpsc::sync_channel(4);
        let (read_recycle, read_used) = std::sync::mpsc::channel();
        let reading = std::thread::Builder::new()
            .name("tui-loader".into())
            .spawn(move || load_thread(reader, read_tx, read_used))
            .map_err(spawn_error)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let (recycle, used) = std::sync::mpsc::channel();
        let interp = Interpreter::new(&info);
        let handle = std::thread::Builder::new()
            .name("tui-interp".into())
            .spawn(move || {
                interp_thread(interp, read_rx, read_recycle, tx, used);
                let _ = reading.join();
            })
            .map_err(spawn_error)?;
        Ok((
            model,
            Loader {
                rx,
                recycle,
                total,
                read: 0,
                handle: Some(handle),
            },
        ))
    }

    /// Open and read a whole capture (with its findings) before returning.
    pub fn load(path: &Path) -> Result<Model, CaptureError> {
        let (mut m, mut l) = Model::open(path)?;
        while !m.pump(&mut l, Duration::from_secs(3600)) {}
        Ok(m)
    }

    /// Take what the loader read so far, for at most `budget`; true once everything is read
    /// (the findings are then computed).
    pub fn pump(&mut self, loader: &mut Loader, budget: Duration) -> bool {
        let start = Instant::now();
        loop {
            let msg = if start.elapsed() >= budget {
                return false;
            } else {
                match loader
                    .rx
                    .recv_timeout(budget.saturating_sub(start.elapsed()))
                {
                    Ok(m) => m,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return false,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => LoadMsg::Done,
                }
            };
            match msg {
                LoadMsg::Batch { batch, read } => {
                    loader.read = read;
                    self.reserve_rows(batch.entries.len(), read, loader.total);
                    let mut at = 0;
                    for &(offset, n) in &batch.events {
                        let raw = self.raw.add_offset(offset);
                        self.push_entries(raw, &batch.entries[at..at + n]);
                        at += n;
                    }
                    let _ = loader.recycle.send(batch);
                }
                LoadMsg::Problem(p) => self.problem(p),
                LoadMsg::Done => {
                    loader.read = loader.total;
                    self.refresh_findings();
                    return true;
                }
            }
        }
    }

    /// Room for `more` rows, `read` bytes of a capture of `total` into it. When the rows
    /// must grow, they grow at once to what the whole capture will need at the rate of rows
    /// per byte seen so far (at least doubling, at most [`MAX_ROWS_AHEAD`] times what is
    /// needed now): growing by doubling, a million rows would be copied, and faulted in,
    /// many times. Room reserved and not used is address space, not memory.
    fn reserve_rows(&mut self, more: usize, read: u64, total: u64) {
        let need = self.rows.len() + more;
        if need <= self.rows.capacity() {
            return;
        }
        let expected = (need as u128 * u128::from(total) / u128::from(read.max(1)))
            .min(usize::MAX as u128) as usize;
        let at_least = self.rows.capacity().saturating_mul(2).max(need);
        let want = (expected.saturating_add(expected / 8))
            .clamp(at_least, at_least.max(need.saturating_mul(MAX_ROWS_AHEAD)));
        self.rows.reserve_exact(want - self.rows.len());
    }

    pub(crate) fn problem(&mut self, p: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        }
        self.version += 1;
    }

    /// One live event and the entries the recorder's interpreter made of it.
    pub(crate) fn push_live(&mut self, ev: Stamped, entries: &[Entry]) {
        if entries.is_empty() {
            return;
        }
        let raw = self.raw.add_event(ev);
        self.push_entries(raw, entries);
    }

    /// Run the rules again if rows arrived since the last time.
    pub(crate) fn refresh_findings(&mut self) {
        if self.stale_findings || self.rows.is_empty() {
            self.findings = rules::analyze(&self.timeline);
            self.stale_findings = false;
            self.version += 1;
        }
    }

    /// Whether rows arrived since the findings were computed.
    pub(crate) fn findings_stale(&self) -> bool {
        self.stale_findings
    }

    fn app_index(&mut self, a: &AppRef) -> u32 {
        let known = match self.last_app {
            Some((id, i)) if id == a.pm_id => Some(i),
            _ => self.app_ix.get(&a.pm_id).copied(),
        };
        let i = match known {
            Some(i) => {
                if a.name.is_some() && self.apps[i as usize].name != a.name {
                    self.apps[i as usize].name = a.name.clone();
                }
                i
            }
            None => {
                let i = self.apps.len() as u32;
                self.apps.push(a.clone());
                self.app_ix.insert(a.pm_id, i);
                i
            }
        };
        self.last_app = Some((a.pm_id, i));
        i
    }

    fn push_entries(&mut self, raw: u32, entries: &[Entry]) {
        for e in entries {
            self.timeline.apply(e);
            let idx = self.rows.len() as u32;
            let app = match &e.app {
                Some(a) => self.app_index(a),
                None => NONE,
            };
            let (kind, mark) = classify(e);
            let mut pair = NONE;
            match &e.kind {
                EntryKind::RequestAsked { ask, .. } => {
                    let at = self.waiting_asks.partition_point(|w| w.0 <= e.t);
                    self.waiting_asks.insert(at, (e.t, *ask, idx));
                }
                EntryKind::RequestAnswered {
                    ask: Some(ask),
                    latency_ns: Some(latency),
                    ..
                } => {
                    // Its ask was made `latency` before it.
                    let asked = e.t.saturating_sub(*latency);
                    let from = self.waiting_asks.partition_point(|w| w.0 < asked);
                    let found = self.waiting_asks[from..]
                        .iter()
                        .take_while(|w| w.0 == asked)
                        .position(|w| w.1 == *ask);
                    if let Some(i) = found {
                        let (_, _, row) = self.waiting_asks.remove(from + i);
                        pair = row;
                        self.rows[row as usize].pair = idx;
                    }
                }
                _ => {}
            }
            self.words.clear();
            e.describe_into(&mut self.words);
            let (text_at, text_len) = keep_text(&mut self.text, &self.words);
            let tk = self.rows.last().map_or(e.t, |r| r.tk.max(e.t));
            let tone = e.tone();
            if kind == RowKind::Daemon {
                self.daemon.push(DaemonMark {
                    t: e.t,
                    tk,
                    app,
                    mark,
                    tone,
                });
            }
            self.rows.push(Row {
                t: e.t,
                tk,
                raw,
                text_at,
                text_len,
                pair,
                app,
                source: e.source,
                tone,
                kind,
            });
        }
        self.stale_findings = true;
        self.version += 1;
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn row(&self, i: usize) -> &Row {
        &self.rows[i]
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The words of row `i`.
    pub fn text(&self, i: usize) -> &str {
        let r = &self.rows[i];
        kept_text(&self.text, r.text_at, r.text_len)
    }

    /// The app of a row, as `web:0`.
    pub fn app_label(&self, app: u32) -> Option<String> {
        self.apps
            .get(app as usize)
            .map(|a| crate::views::terminal_safe(&a.to_string()).into_owned())
    }

    pub(crate) fn app_index_of(&self, pm_id: u64) -> Option<u32> {
        self.app_ix.get(&pm_id).copied()
    }

    /// First row with `tk >= t`.
    pub(crate) fn lower_bound(&self, t: MonoNs) -> usize {
        self.rows.partition_point(|r| r.tk < t)
    }

    /// First and last instant.
    pub(crate) fn span(&self) -> Option<(MonoNs, MonoNs)> {
        Some((self.rows.first()?.tk, self.rows.last()?.tk))
    }

    /// The raw event of row `i`, read back from the capture (or memory).
    pub(crate) fn raw_event(&mut self, i: usize) -> Result<Stamped, String> {
        let raw = self.rows[i].raw;
        self.raw.get(raw)
    }

    /// The row an evidence item refers to: same instant and source, preferably same words.
    pub(crate) fn find_evidence(&self, t: MonoNs, source: Source, what: &str) -> Option<usize> {
        let mut i = self.lower_bound(t).saturating_sub(64);
        let mut best = None;
        let end = self.lower_bound(t.saturating_add(1)).saturating_add(64);
        while i < self.rows.len().min(end) {
            let r = &self.rows[i];
            if r.t == t && r.source == source {
                if self.text(i) == what {
                    return Some(i);
                }
                best.get_or_insert(i);
            }
            i += 1;
        }
        best.or_else(|| {
            // The nearest row of that source in time.
            let i = self.lower_bound(t);
            let after = (i..self.rows.len().min(i + 256)).find(|&j| self.rows[j].source == source);
            let before = (i.saturating_sub(256)..i)
                .rev()
                .find(|&j| self.rows[j].source == source);
            match (before, after) {
                (Some(b), Some(a)) => {
                    if t - self.rows[b].t.min(t) <= self.rows[a].t.saturating_sub(t) {
                        Some(b)
                    } else {
                        Some(a)
                    }
                }
                (b, a) => a.or(b),
            }
        })
    }
}

/// Keep `described` (made terminal-safe, cut to [`MAX_TEXT`] bytes) in the chunks `text`;
/// its `text_at` and length (empty once the chunks that can be numbered are full).
fn keep_text(text: &mut Vec<String>, described: &str) -> (u32, u32) {
    let safe = crate::views::terminal_safe(described);
    let mut cut = safe.len().min(MAX_TEXT);
    while !safe.is_char_boundary(cut) {
        cut -= 1;
    }
    if text.last().is_none_or(|c| c.len() + cut > TEXT_CHUNK) {
        if text.len() == MAX_TEXT_CHUNKS {
            return (0, 0);
        }
        text.push(String::with_capacity(TEXT_CHUNK));
    }
    let n = text.len() - 1;
    let chunk = &mut text[n];
    let at = ((n as u32) << TEXT_CHUNK_BITS) | chunk.len() as u32;
    chunk.push_str(&safe[..cut]);
    (at, cut as u32)
}

/// The words [`keep_text`] kept at `text_at`.
fn kept_text(text: &[String], text_at: u32, len: u32) -> &str {
    let chunk = (text_at >> TEXT_CHUNK_BITS) as usize;
    let at = (text_at as usize) & (TEXT_CHUNK - 1);
    text.get(chunk)
        .and_then(|c| c.get(at..at + len as usize))
        .unwrap_or("")
}

/// What kind of row an entry makes and its marker on the daemon lane.
fn classify(e: &Entry) -> (RowKind, Mark) {
    match &e.kind {
        EntryKind::RequestAsked { .. } => (RowKind::Ask, Mark::None),
        EntryKind::RequestAnswered { .. } => (RowKind::Answer, Mark::None),
        EntryKind::Bus(BusEvent::ProcessEvent(pe)) => {
            let m = match pe.event {
                ProcessEventKind::Exit => Mark::Exit,
                ProcessEventKind::Online => Mark::Online,
                ProcessEventKind::RestartOverlimit => Mark::Errored,
                _ if pe.status.as_deref() == Some("errored") => Mark::Errored,
                _ => Mark::Plain,
            };
            (RowKind::Daemon, m)
        }
        EntryKind::Bus(b @ BusEvent::ProcessMsg { .. }) if b.is_ready_message() => {
            (RowKind::Daemon, Mark::Ready)
        }
        EntryKind::Bus(BusEvent::Log { .. }) | EntryKind::AppLog { .. } => {
            (RowKind::AppLog, Mark::None)
        }
        EntryKind::Bus(_) | EntryKind::BusLink { .. } => (RowKind::Daemon, Mark::Plain),
        EntryKind::Daemon { log, .. } => {
            let m = match log {
                DaemonLogLine::Starting { .. } => Mark::Spawn,
                DaemonLogLine::Online { .. } => Mark::Online,
                DaemonLogLine::ReloadReady { .. } => Mark::Ready,
                DaemonLogLine::Stopping { .. } => Mark::Stop,
                DaemonLogLine::SigkillAfterTimeout { .. } => Mark::Kill,
                DaemonLogLine::Exited { .. } => Mark::Exit,
                DaemonLogLine::TooManyUnstableRestarts { .. }
                | DaemonLogLine::CouldNotBeStopped { .. } => Mark::Errored,
                _ => Mark::Plain,
            };
            (RowKind::Daemon, m)
        }
        EntryKind::Proc { .. } => (RowKind::Proc, Mark::None),
        _ => (RowKind::Other, Mark::None),
    }
}

/// Interpret the batches of events `rx` brings, passing their entries (and the problems and
/// the end) on to `tx`; used batches go back through `recycle`, and come back from the
/// view through `used`.
fn interp_thread(
    mut interp: Interpreter,
    rx: Receiver<LoadMsg<Read>>,
    recycle: Sender<Read>,
    tx: SyncSender<LoadMsg<Interpreted>>,
    used: Receiver<Interpreted>,
) {
    let mut spare: Vec<Interpreted> = Vec::new();
    for msg in rx {
        let msg = match msg {
            LoadMsg::Batch { batch: items, read } => {
                // Free (and reuse) what the view is done with, here where it was allocated.
                spare.extend(used.try_iter().map(|mut b| {
                    b.entries.clear();
                    b.events.clear();
                    b
                }));
                let mut batch = spare.pop().unwrap_or_default();
                let mut items = items;
                for (offset, ev) in &mut items {
                    let before = batch.entries.len();
                    interp.push_taking(ev, &mut batch.entries);
                    let n = batch.entries.len() - before;
                    if n > 0 {
                        batch.events.push((*offset, n));
                    }
                }
                let _ = recycle.send(items);
                LoadMsg::Batch { batch, read }
            }
            LoadMsg::Problem(p) => LoadMsg::Problem(p),
            LoadMsg::Done => LoadMsg::Done,
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

fn load_thread(mut reader: CaptureReader, tx: SyncSender<LoadMsg<Read>>, used: Receiver<Read>) {
    let mut items: Read = Vec::with_capacity(BATCH);
    // Batches the interpreter is done with, emptied here where their events were allocated
    // and filled again: a fresh batch's memory would be faulted in again each time.
    let mut spare: Vec<Read> = Vec::new();
    let mut batch_from = reader.offset();
    loop {
        spare.extend(used.try_iter().map(|mut v| {
            v.clear();
            v
        }));
        let offset = reader.offset();
        let Some(next) = reader.next() else { break };
        match next {
            Ok(ev) => items.push((offset, ev)),
            Err(e) => {
                if tx.send(LoadMsg::Problem(e.to_string())).is_err() {
                    return;
                }
            }
        }
        if items.len() >= BATCH || reader.offset() - batch_from >= BATCH_BYTES {
            batch_from = reader.offset();
            let next = spare.pop().unwrap_or_else(|| Vec::with_capacity(BATCH));
            let batch = std::mem::replace(&mut items, next);
            if tx
                .send(LoadMsg::Batch {
                    batch,
                    read: reader.offset(),
                })
                .is_err()
            {
                return;
            }
        }
    }
    if !items.is_empty()
        && tx
            .send(LoadMsg::Batch {
                batch: items,
                read: reader.offset(),
            })
            .is_err()
    {
        return;
    }
    if let Some(t) = reader.truncated() {
        let _ = tx.send(LoadMsg::Problem(format!(
            "{} ends inside a record at byte {} (truncated): the {} whole records before it are shown",
            reader.path().display(),
            t.offset,
            t.records
        )));
    }
    if reader.skipped() > 0 {
        let _ = tx.send(LoadMsg::Problem(format!(
            "skipped {} records of kinds this version does not know",
            reader.skipped()
        )));
    }
    let _ = tx.send(LoadMsg::Done);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the loading threads pass on moves by the million (events from the reading
    /// thread to the interpreting one, their entries on to the view's, in batches of about a
    /// thousand): the large, rare kinds are boxed so that they do not make every one as
    /// large. Before: a payload 168 bytes (`Json`'s three `OnceLock`s side by side), an
    /// event 120 (a log file's line), an entry 336 (a bus process event, a process-watcher
    /// event); the request answered (176 bytes) is now the largest entry kind.
    #[test]
    fn what_the_loading_threads_pass_on_is_small() {
        fn at_most<T>(max: usize) {
            let n = std::mem::size_of::<T>();
            assert!(n <= max, "{} is {n} bytes", std::any::type_name::<T>());
        }
        at_most::<crate::wire::json::Json>(48);
        at_most::<crate::wire::amp::Arg>(56);
        at_most::<crate::event::Event>(64);
        at_most::<Stamped>(72);
        at_most::<crate::pm2::meaning::BusEvent>(88);
        at_most::<Entry>(224);
    }

    /// The rows grow at once to what the capture will need at the rate seen so far, never
    /// by less than doubling nor to more than MAX_ROWS_AHEAD times what is needed.
    #[test]
    fn rows_grow_to_the_expected_count() {
        let mut m = Model::live(CaptureInfo::default(), "test");
        m.reserve_rows(1000, 1 << 20, 100 << 20);
        let cap = m.rows.capacity();
        assert!((112_500..=112_500 + 64).contains(&cap), "{cap}");
        let mut far = Model::live(CaptureInfo::default(), "test");
        far.reserve_rows(10, 1, 1 << 40);
        assert!(far.rows.capacity() <= 10 * MAX_ROWS_AHEAD + 64);
        m.reserve_rows(cap + 1, 1 << 20, 100 << 20);
        assert!(m.rows.capacity() >= 2 * cap);
        let mut m = Model::live(CaptureInfo::default(), "test");
        m.reserve_rows(100, 10_000, 1_000);
        assert!(m.rows.capacity() >= 100 && m.rows.capacity() < 200);
        m.reserve_rows(10, 0, 0);
        assert!(m.rows.capacity() >= 100);
    }

    /// Words are kept whole across the arena's chunks (a chunk is never grown beyond its
    /// first size), made terminal-safe and cut at a character boundary.
    #[test]
    fn words_are_kept_across_chunks() {
        let mut text = Vec::new();
        let mut kept = Vec::new();
        for i in 0..20_000usize {
            let words = match i % 4 {
                0 => "x".repeat(i % 700),
                1 => "é".repeat(i % 300),
                2 => format!("line {i}\x1b]0;title\x07"),
                _ => String::new(),
            };
            let (at, len) = keep_text(&mut text, &words);
            kept.push((words, at, len));
        }
        assert!(text.len() > 2, "{} chunks", text.len());
        assert!(text.iter().all(|c| c.capacity() == TEXT_CHUNK));
        for (words, at, len) in kept {
            let safe = crate::views::terminal_safe(&words);
            let cut = (0..=safe.len().min(MAX_TEXT))
                .rev()
                .find(|&c| safe.is_char_boundary(c))
                .unwrap();
            assert_eq!(kept_text(&text, at, len), &safe[..cut], "{words:?}");
        }
    }

    /// The rows link an ask and its answer as the interpreter paired them, and nothing
    /// else: a reply it did not pair (its request forgotten under the one bound) links to
    /// no row, though its connection and id match an ask shown.
    #[test]
    fn rows_pair_as_the_interpreter_did() {
        let (events, _) = crate::timeline::tests::a_reply_forgotten_behind_polls();
        let info = CaptureInfo::default();
        let mut interp = Interpreter::new(&info);
        let mut m = Model::live(info, "test");
        let mut entries = Vec::new();
        for ev in events {
            entries.clear();
            interp.push_into(&ev, &mut entries);
            m.push_live(ev, &entries);
        }
        let n = m.len();
        let (stop_ask, restart_ask) = (0, 1);
        let (stop_answer, restart_answer) = (n - 2, n - 1);
        assert!(
            m.text(stop_ask).starts_with("stopProcessId"),
            "{}",
            m.text(stop_ask)
        );
        assert!(
            m.text(stop_answer)
                .starts_with("reply to a request sent before"),
            "{}",
            m.text(stop_answer)
        );
        assert_eq!(m.row(stop_ask).pair, NONE);
        assert_eq!(m.row(stop_answer).pair, NONE);
        assert_eq!(m.row(restart_ask).pair, restart_answer as u32);
        assert_eq!(m.row(restart_answer).pair, restart_ask as u32);
        // What was answered no longer waits: the polls and the forgotten stop do.
        assert_eq!(
            m.waiting_asks.len(),
            crate::pm2::exchange::MAX_WAITING_PER_CONN + 1
        );
    }

    /// The recorder numbers requests as their copies reach it: in time order, a later
    /// request can bear a smaller number. Each answer still links to its own ask.
    #[test]
    fn rows_pair_asks_numbered_out_of_time_order() {
        use crate::event::{Asked, Direction, Event, WireMessage};
        use crate::wire::rpc::{encode_call, encode_reply};
        let info = CaptureInfo {
            rpc_paired: true,
            ..CaptureInfo::default()
        };
        let rpc = |t, conn, dir, msg, ask, asked: Option<u64>| Stamped {
            t,
            event: Event::RpcMessage {
                conn,
                dir,
                msg: WireMessage(msg),
                ask: Some(ask),
                asked: asked.map(|t| {
                    Box::new(Asked {
                        t,
                        method: "getVersion".into(),
                        pm_id: None,
                    })
                }),
            },
        };
        let call = || encode_call("getVersion", vec![], "1");
        let reply = || encode_reply(vec![serde_json::json!("7.0.4")], "1");
        let events = [
            rpc(1, 1, Direction::ToDaemon, call(), 2, None),
            rpc(2, 2, Direction::ToDaemon, call(), 1, None),
            rpc(3, 2, Direction::ToClient, reply(), 1, Some(2)),
            rpc(4, 1, Direction::ToClient, reply(), 2, Some(1)),
        ];
        let mut interp = Interpreter::new(&info);
        let mut m = Model::live(info, "test");
        for ev in events {
            let entries = interp.push(&ev);
            m.push_live(ev, &entries);
        }
        assert_eq!(m.len(), 4);
        assert_eq!((m.row(0).pair, m.row(3).pair), (3, 0));
        assert_eq!((m.row(1).pair, m.row(2).pair), (2, 1));
        assert!(m.waiting_asks.is_empty());
    }
}
