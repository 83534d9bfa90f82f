//! Export while recording: the recorder hands each event's timeline entries to a bounded
//! queue and never waits; one background thread folds them into its own timeline, sends a
//! request's trace once it has settled (the next action on the app began, or
//! [`SETTLE`] passed after the answer), and the findings of sent requests. A dead, slow or
//! failing collector only delays that thread: when the queue is full, entries are dropped
//! and counted, and [`LiveExporter::finish`] reports the losses for a note in the capture.

use super::build::{self, TracedRequest};
use super::endpoint::{Client, Endpoint, Retry};
use crate::event::{mono_now, CaptureInfo, MonoNs};
use crate::rules::{self, Finding};
use crate::timeline::{Entry, Timeline};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Messages waiting for the exporter thread (each one event's entries).
pub const QUEUE: usize = 4096;
/// A request's trace is sent once the recording has gone this far past its answer (on the
/// events' own clock) with no other action on its app.
pub const SETTLE: Duration = Duration::from_secs(5);
/// ... or once this long has passed on the wall clock, for a daemon that stays quiet after
/// the answer (no later event moves the events' clock on).
pub const SETTLE_QUIET: Duration = Duration::from_secs(30);
/// How often the exporter looks for settled requests.
const TICK: Duration = Duration::from_millis(500);
/// Span-event entries kept for traces not yet sent (the oldest are forgotten beyond).
const MAX_EVENTS: usize = 200_000;

enum Msg {
    Info(Box<CaptureInfo>),
    Entries(Vec<Entry>),
}

/// What the exporter sent and lost.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExportStats {
    pub traces_sent: u64,
    pub logs_sent: u64,
    /// Traces and finding logs the collector did not take (after retries) or that were
    /// still unsent when the recorder stopped.
    pub traces_lost: u64,
    pub logs_lost: u64,
    /// Events whose entries found the queue full.
    pub events_dropped: u64,
    /// The last failure, for the note.
    pub last_error: Option<String>,
}

impl ExportStats {
    /// A line for the capture and the terminal when something was lost.
    pub fn loss_note(&self, endpoint: &str) -> Option<String> {
        if self.traces_lost == 0 && self.logs_lost == 0 && self.events_dropped == 0 {
            return None;
        }
        let mut s = format!(
            "OpenTelemetry export to {endpoint}: {} trace(s) and {} finding log(s) not delivered, {} event(s) not exported (queue full)",
            self.traces_lost, self.logs_lost, self.events_dropped
        );
        if let Some(e) = &self.last_error {
            s.push_str(&format!("; last error: {e}"));
        }
        s.push_str("; the capture itself is complete");
        Some(s)
    }

    /// (1, 0) for a batch delivered, (0, 1) for one lost (keeping its error).
    fn tally(&mut self, r: Result<(), super::endpoint::SendError>) -> (u64, u64) {
        match r {
            Ok(()) => (1, 0),
            Err(e) => {
                self.last_error = Some(e.to_string());
                (0, 1)
            }
        }
    }

    /// A line saying what was sent.
    pub fn summary(&self, endpoint: &str) -> String {
        format!(
            "OpenTelemetry export to {endpoint}: {} trace(s) and {} finding log(s) sent",
            self.traces_sent, self.logs_sent
        )
    }
}

/// The recorder's side of the exporter.
pub struct LiveExporter {
    tx: Option<SyncSender<Msg>>,
    info_sent: bool,
    dropped: Arc<AtomicU64>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<ExportStats>>,
    endpoint: String,
}

impl LiveExporter {
    /// Start the exporter thread.
    pub fn start(endpoint: Endpoint, retry: Retry) -> std::io::Result<LiveExporter> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let stopping = Arc::new(AtomicBool::new(false));
        let shown = endpoint.traces.url.clone();
        let st = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || Worker::new(endpoint, retry, st).run(rx))?;
        Ok(LiveExporter {
            tx: Some(tx),
            info_sent: false,
            dropped: Arc::new(AtomicU64::new(0)),
            stopping,
            thread: Some(thread),
            endpoint: shown,
        })
    }

    /// Offer one event's entries. Never blocks: a full queue drops them (counted).
    pub fn offer(&mut self, info: &CaptureInfo, entries: &[Entry]) {
        let Some(tx) = &self.tx else { return };
        if !self.info_sent {
            self.info_sent = tx.try_send(Msg::Info(Box::new(info.clone()))).is_ok();
            if !self.info_sent {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if entries.is_empty() {
            return;
        }
        match tx.try_send(Msg::Entries(entries.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The traces endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Send what remains, waiting at most `deadline`; whatever is still unsent then is
    /// counted as lost (the thread is left to finish or fail on its own).
    pub fn finish(mut self, deadline: Duration) -> ExportStats {
        drop(self.tx.take());
        let dropped = self.dropped.load(Ordering::Relaxed);
        let thread = self.thread.take();
        let (done_tx, done_rx) = mpsc::channel();
        let stopping = self.stopping.clone();
        if let Some(t) = thread {
            std::thread::spawn(move || {
                let _ = done_tx.send(t.join().unwrap_or_default());
            });
        }
        let mut stats = match done_rx.recv_timeout(deadline) {
            Ok(s) => s,
            Err(_) => {
                stopping.store(true, Ordering::Relaxed);
                // A last short wait for the worker to notice and count what it lost.
                done_rx
                    .recv_timeout(Duration::from_millis(500))
                    .unwrap_or_else(|_| ExportStats {
                        last_error: Some(format!(
                            "the collector did not answer within {} s",
                            deadline.as_secs_f64()
                        )),
                        traces_lost: 1,
                        ..Default::default()
                    })
            }
        };
        stats.events_dropped += dropped;
        stats
    }
}

/// The requests whose trace is complete at wall time `now`: the next action on the app
/// began, or the recording went [`SETTLE`] past the answer on the events' own clock (the
/// latest event applied), or [`SETTLE_QUIET`] passed on the wall clock; all of them when
/// `last`. On the events' clock, because a recorder that falls behind (its threads are in
/// the idle class) hands over a crash that came within a second of the answer seconds
/// later: judged by the wall clock, the trace went without it.
fn settled<'a>(
    tl: &'a Timeline,
    all: &'a [TracedRequest],
    now: MonoNs,
    last: bool,
) -> impl Iterator<Item = &'a TracedRequest> + 'a {
    let seen = tl.last_t.unwrap_or(0);
    all.iter().filter(move |r| {
        let next_began = all.iter().any(|o| o.pm_id == r.pm_id && o.start > r.start);
        let quiet = tl.requests[r.index].answered.is_some_and(|a| {
            seen.saturating_sub(a) >= SETTLE.as_nanos() as u64
                || now.saturating_sub(a) >= SETTLE_QUIET.as_nanos() as u64
        });
        last || next_began || quiet
    })
}

struct Worker {
    endpoint: Endpoint,
    client: Client,
    stopping: Arc<AtomicBool>,
    info: Option<CaptureInfo>,
    tl: Option<Timeline>,
    events: VecDeque<Entry>,
    sent_requests: HashSet<(u64, String, MonoNs)>,
    sent_findings: HashSet<(String, Option<u64>, Option<MonoNs>)>,
    stats: ExportStats,
}

impl Worker {
    fn new(endpoint: Endpoint, retry: Retry, stopping: Arc<AtomicBool>) -> Worker {
        Worker {
            endpoint,
            client: Client::new(retry),
            stopping,
            info: None,
            tl: None,
            events: VecDeque::new(),
            sent_requests: HashSet::new(),
            sent_findings: HashSet::new(),
            stats: ExportStats::default(),
        }
    }

    fn run(mut self, rx: Receiver<Msg>) -> ExportStats {
        let mut last = Instant::now();
        loop {
            match rx.recv_timeout(TICK) {
                Ok(Msg::Info(info)) => {
                    self.tl = Some(Timeline::new(&info));
                    self.info = Some(*info);
                }
                Ok(Msg::Entries(es)) => self.apply(es),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last.elapsed() >= TICK {
                self.flush(false);
                last = Instant::now();
            }
        }
        self.flush(true);
        self.stats
    }

    fn apply(&mut self, es: Vec<Entry>) {
        let Some(tl) = self.tl.as_mut() else { return };
        for e in es {
            tl.apply(&e);
            if build::is_span_event(&e) {
                if self.events.len() >= MAX_EVENTS {
                    self.events.pop_front();
                }
                self.events.push_back(e);
            }
        }
    }

    fn request_key(tl: &Timeline, r: &TracedRequest) -> (u64, String, MonoNs) {
        let q = &tl.requests[r.index];
        (q.conn, q.id.clone(), q.asked)
    }

    /// Send settled requests (all of them when `last`) and the findings they concern.
    fn flush(&mut self, last: bool) {
        let (Some(info), Some(tl)) = (&self.info, &self.tl) else {
            return;
        };
        let all = build::traced_requests(info, tl);
        let settled: Vec<TracedRequest> = settled(tl, &all, mono_now(), last)
            .filter(|r| !self.sent_requests.contains(&Self::request_key(tl, r)))
            .cloned()
            .collect();
        if settled.is_empty() && !last {
            return;
        }
        let give_up = || self.stopping.load(Ordering::Relaxed);
        if !settled.is_empty() {
            let events: Vec<Entry> = self.events.iter().cloned().collect();
            let msg = build::traces(info, tl, &settled, &events);
            let n = settled.len() as u64;
            let r = self.client.send(&self.endpoint.traces, &msg, &give_up);
            let (sent, lost) = self.stats.tally(r);
            self.stats.traces_sent += n * sent;
            self.stats.traces_lost += n * lost;
            for r in &settled {
                self.sent_requests.insert(Self::request_key(tl, r));
            }
        }
        // Findings: those about sent requests (or about none, at the end), once each.
        let findings: Vec<Finding> = rules::analyze(tl)
            .into_iter()
            .filter(|f| {
                let key = (f.kind.clone(), f.pm_id, build::finding_time(f));
                if self.sent_findings.contains(&key) {
                    return false;
                }
                match build::request_of(f, &all) {
                    Some(r) => self.sent_requests.contains(&Self::request_key(tl, r)),
                    None => last,
                }
            })
            .collect();
        if findings.is_empty() {
            return;
        }
        let msg = build::logs(info, tl, &findings, &all);
        let n = findings.len() as u64;
        let r = self.client.send(&self.endpoint.logs, &msg, &give_up);
        let (sent, lost) = self.stats.tally(r);
        self.stats.logs_sent += n * sent;
        self.stats.logs_lost += n * lost;
        for f in &findings {
            self.sent_findings
                .insert((f.kind.clone(), f.pm_id, build::finding_time(f)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::tests::load_fixture;

    /// A request whose answer came less than [`SETTLE`] before the last event applied is
    /// not settled however late the wall clock is (up to [`SETTLE_QUIET`]): the events that
    /// complete its trace may still be on their way from a recorder that fell behind.
    #[test]
    fn a_request_settles_on_the_events_clock() {
        let (info, events) = load_fixture("pm2-7.0.4");
        let tl = crate::timeline::replay(&info, events, |_| Ok::<(), ()>(())).unwrap();
        let all = build::traced_requests(&info, &tl);
        let last_t = tl.last_t.unwrap();
        let is_last =
            |r: &&TracedRequest| !all.iter().any(|o| o.pm_id == r.pm_id && o.start > r.start);
        let r = all
            .iter()
            .filter(is_last)
            .find(|r| {
                tl.requests[r.index]
                    .answered
                    .is_some_and(|a| last_t.saturating_sub(a) < SETTLE.as_nanos() as u64)
            })
            .expect("a last request answered less than SETTLE before the capture's end");
        let a = tl.requests[r.index].answered.unwrap();
        let names = |now: MonoNs, last: bool| -> Vec<usize> {
            settled(&tl, &all, now, last).map(|r| r.index).collect()
        };
        // 10 s of wall clock after the answer: not settled (the old rule sent it at 5 s).
        assert!(!names(a + 10_000_000_000, false).contains(&r.index));
        // Past SETTLE_QUIET on the wall clock, or at the end: settled.
        assert!(names(a + SETTLE_QUIET.as_nanos() as u64, false).contains(&r.index));
        assert!(names(a, true).contains(&r.index));
    }
}
