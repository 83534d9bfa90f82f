//! Putting events from every source back in time order before they are written.
//!
//! Sources deliver with small, different delays (the tap decoder, the kernel, the bus), so
//! the recorder holds each event for a short window and writes the oldest first. Events with
//! the same timestamp (e.g. several RPC messages decoded from one tapped chunk) keep the order
//! they arrived in: a sequence number breaks ties, so a capture's records always stand in the
//! order their bytes arrived, on every run.

use crate::event::{mono_now, Event, EventReceiver, MonoNs, Stamped};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

struct Held {
    ev: Stamped,
    seq: u64,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reverse, so the oldest (then the first to arrive) is on top.
        (o.ev.t, o.seq).cmp(&(self.ev.t, self.seq))
    }
}

/// Events waiting to be written, oldest first; ties in arrival order.
#[derive(Default)]
pub(super) struct Reorder {
    heap: BinaryHeap<Held>,
    next_seq: u64,
}

impl Reorder {
    pub(super) fn push(&mut self, ev: Stamped) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Held { ev, seq });
    }

    /// The oldest event held, if it is at `upto` or earlier.
    pub(super) fn pop_upto(&mut self, upto: u64) -> Option<Stamped> {
        if self.heap.peek()?.ev.t <= upto {
            self.heap.pop().map(|h| h.ev)
        } else {
            None
        }
    }
}

/// What the recorder's loop learns from the events themselves as they arrive, before they
/// are ordered: every event of a burst passes through [`Intake::take`].
#[derive(Default)]
pub(super) struct Intake {
    pub(super) held: Reorder,
    /// RPC connections opened.
    pub(super) connections: u64,
    /// Whether the last bus link event said the bus was down.
    pub(super) bus_down: bool,
}

/// How long a wake-up lets the rest of a burst arrive before taking all of it at once: one
/// wake-up per burst keeps the writer's work beside the traffic instead of inside each round
/// trip.
const BURST_SETTLE: Duration = Duration::from_millis(2);

impl Intake {
    pub(super) fn take(&mut self, ev: Stamped) {
        match ev.event {
            Event::RpcConnect { .. } => self.connections += 1,
            Event::BusLink { up, .. } => self.bus_down = !up,
            _ => {}
        }
        self.held.push(ev);
    }

    /// Wait up to `timeout` for events, then take the whole burst; returns the instant
    /// before the burst was taken: every event sent before it is held now. `Err(true)` when
    /// nothing came, `Err(false)` when every source is gone.
    pub(super) fn receive(
        &mut self,
        rx: &mut EventReceiver,
        timeout: Duration,
    ) -> Result<MonoNs, bool> {
        let first = rx.recv_timeout(timeout)?;
        self.take(first);
        std::thread::sleep(BURST_SETTLE);
        let taken_at = mono_now();
        while let Some(ev) = rx.try_recv() {
            self.take(ev);
        }
        Ok(taken_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventSink, NoteLevel};

    fn note(t: u64, text: &str) -> Stamped {
        Stamped {
            t,
            event: Event::Note {
                level: NoteLevel::Info,
                text: text.into(),
            },
        }
    }

    fn text(ev: &Stamped) -> &str {
        match &ev.event {
            Event::Note { text, .. } => text,
            _ => "",
        }
    }

    #[test]
    fn equal_timestamps_keep_arrival_order() {
        let mut r = Reorder::default();
        // Interleave two instants so the heap has to reorder, with many ties at each.
        for i in 0..64 {
            r.push(note(if i % 2 == 0 { 20 } else { 10 }, &format!("{i}")));
        }
        let mut out = Vec::new();
        while let Some(ev) = r.pop_upto(u64::MAX) {
            out.push((ev.t, text(&ev).parse::<u32>().unwrap()));
        }
        let mut want: Vec<(u64, u32)> = (0..64).filter(|i| i % 2 == 1).map(|i| (10, i)).collect();
        want.extend((0..64).filter(|i| i % 2 == 0).map(|i| (20, i)));
        assert_eq!(out, want);
    }

    #[test]
    fn pop_upto_holds_younger_events() {
        let mut r = Reorder::default();
        r.push(note(30, "late"));
        r.push(note(10, "early"));
        assert_eq!(r.pop_upto(20).map(|e| e.t), Some(10));
        assert!(r.pop_upto(20).is_none());
        assert_eq!(r.pop_upto(30).map(|e| e.t), Some(30));
    }

    #[test]
    fn every_event_of_a_burst_is_examined() {
        let (sink, mut rx) = EventSink::channel(16);
        for conn in 0..3 {
            sink.emit_at(1, Event::RpcConnect { conn, peer: None });
        }
        sink.emit_at(
            2,
            Event::BusLink {
                up: false,
                detail: "daemon gone".into(),
            },
        );
        let mut intake = Intake::default();
        intake.receive(&mut rx, Duration::from_secs(5)).unwrap();
        assert_eq!(
            intake.connections, 3,
            "connections counted in the whole burst"
        );
        assert!(intake.bus_down, "a bus-down event after the first is seen");
        let mut n = 0;
        while intake.held.pop_upto(u64::MAX).is_some() {
            n += 1;
        }
        assert_eq!(n, 4);
    }
}
