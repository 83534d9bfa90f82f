//! Disk full (ENOSPC on a small tmpfs): the capture is cut back to its last whole record and
//! closed with a `recording_stopped` marker (the writer keeps space reserved for it), and
//! replay reads everything before the marker and the marker itself.
//!
//! Needs root and permission to mount a tmpfs (as on the project's machines and CI).

mod capture_util;
#[path = "support/tmpfs.rs"]
mod tmpfs;

use capture_util::*;
use pm2_trace::capture::{CaptureError, CaptureReader, CaptureWriter};
use pm2_trace::event::{Event, NoteLevel, Stamped};
use std::path::Path;
use tmpfs::Tmpfs;

fn fill_until_full(path: &Path, size: u64) {
    let mut w = CaptureWriter::create(path, &sample_info(), false).unwrap();
    let mut sent = Vec::new();
    let mut failure = None;
    for i in 0..100_000u64 {
        let ev = Stamped {
            t: MONO_REF + i * 1000,
            event: Event::Note {
                level: NoteLevel::Warning,
                text: format!("event {i} {}", "y".repeat(i as usize % 500)),
            },
        };
        match w.write(&ev, &format!("note {i}")) {
            Ok(()) => sent.push(ev),
            Err(e @ CaptureError::WriteFailed { .. }) => {
                failure = Some(e);
                break;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    let failure = failure.expect("the disk never filled up");
    let msg = failure.to_string();
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(
        msg.contains("recording_stopped marker"),
        "no marker written: {msg}"
    );
    // Refused from now on, with a clear error.
    let err = w.write(&sent[0], "late").unwrap_err();
    assert!(
        matches!(err, CaptureError::Stopped { .. })
            && err.to_string().contains("recording stopped"),
        "{err}"
    );
    let summary = w.finish().expect("finish after a reported failure");
    let reason = summary.stopped.expect("stopped");

    let mut r = CaptureReader::open(path).unwrap();
    let back: Vec<Stamped> = r.by_ref().map(|e| e.unwrap()).collect();
    assert_eq!(r.truncated(), None);
    let (marker, before) = back.split_last().unwrap();
    assert_eq!(
        marker.event,
        Event::RecordingStopped {
            reason: reason.clone()
        }
    );
    assert_eq!(before.len() as u64, summary.records);
    assert!(!before.is_empty());
    assert_eq!(before, &sent[..before.len()]);
    eprintln!(
        "tmpfs {size}: {} events kept, {} bytes; marker: {reason}",
        before.len(),
        summary.bytes
    );
}

#[test]
fn disk_full_stops_recording_with_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(dir.path(), "400k");
    fill_until_full(&dir.path().join("full.pcapng"), 400 * 1024);
}

#[test]
fn disk_full_with_little_room_still_gets_a_marker() {
    // So small that the generous reservation fails from the start.
    let dir = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(dir.path(), "80k");
    fill_until_full(&dir.path().join("tiny.pcapng"), 80 * 1024);
}

/// Fill the buffer with about `bytes` of events without triggering a write.
fn buffer_events(w: &mut CaptureWriter, bytes: usize) -> Vec<Stamped> {
    let mut sent = Vec::new();
    let mut total = 0;
    let mut i = 0u64;
    while total < bytes {
        let ev = Stamped {
            t: MONO_REF + i,
            event: Event::Note {
                level: NoteLevel::Info,
                text: format!("buffered {i} {}", "z".repeat(200)),
            },
        };
        w.write(&ev, "buffered").unwrap();
        total += 300;
        i += 1;
        sent.push(ev);
    }
    sent
}

/// The capture holds a prefix of `sent` (the whole records that reached the disk), then
/// the stop marker; returns how many events it kept.
fn assert_prefix_then_marker(path: &Path, sent: &[Stamped]) -> usize {
    let (r, back) = read_all(path);
    assert_eq!(r.truncated(), None);
    let (marker, before) = back.split_last().expect("at least the marker");
    assert!(
        matches!(&marker.event, Event::RecordingStopped { reason } if reason.contains("No space left")),
        "last record is not the stop marker"
    );
    assert!(before.len() < sent.len(), "some events were lost");
    assert!(
        before == &sent[..before.len()],
        "kept events are the first ones, in order"
    );
    before.len()
}

#[test]
fn a_failed_flush_is_reported_by_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(dir.path(), "64k");
    let path = dir.path().join("flush.pcapng");
    let mut w = CaptureWriter::create(&path, &sample_info(), false).unwrap();
    let sent = buffer_events(&mut w, 150 * 1024); // below the automatic flush size
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        w.committed(),
        "nothing written yet"
    );
    w.flush();
    assert!(w.stopped().is_some(), "flush hit the full disk");
    let err = w.write(&sent[0], "next").unwrap_err();
    assert!(matches!(err, CaptureError::WriteFailed { .. }), "{err}");
    let err = w.write(&sent[0], "next").unwrap_err();
    assert!(matches!(err, CaptureError::Stopped { .. }), "{err}");
    let summary = w.finish().expect("failure already reported");
    assert!(summary.stopped.is_some());
    let kept = assert_prefix_then_marker(&path, &sent);
    assert_eq!(kept as u64, summary.records);
}

#[test]
fn a_failure_in_finish_is_returned_by_finish() {
    let dir = tempfile::tempdir().unwrap();
    let _fs = Tmpfs::mount(dir.path(), "64k");
    let path = dir.path().join("finish.pcapng");
    let mut w = CaptureWriter::create(&path, &sample_info(), false).unwrap();
    let sent = buffer_events(&mut w, 150 * 1024);
    let err = w.finish().unwrap_err();
    assert!(matches!(err, CaptureError::WriteFailed { .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_prefix_then_marker(&path, &sent);
}
