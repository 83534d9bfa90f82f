//! A write error (here EFBIG from a file size limit) cuts the capture back to its last whole
//! record and closes it with a `recording_stopped` marker; replay reads everything before
//! the marker and the marker itself.
//!
//! RLIMIT_FSIZE is per process, so this binary holds this one test only.

mod capture_util;

use capture_util::*;
use pm2_trace::capture::{ignore_sigxfsz, CaptureError, CaptureReader, CaptureWriter};
use pm2_trace::event::{Event, NoteLevel, Stamped};

fn set_fsize(limit: libc::rlim_t) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut old) }, 0);
    let new = libc::rlimit {
        rlim_cur: limit,
        rlim_max: old.rlim_max,
    };
    assert_eq!(
        unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &new) },
        0,
        "setrlimit(RLIMIT_FSIZE)"
    );
    old
}

/// A new capture at `name` in `dir`, then the process's file size limit set to `limit`;
/// returns the capture's path, its writer and the limit before.
fn limited_writer(
    dir: &tempfile::TempDir,
    name: &str,
    limit: u64,
) -> (std::path::PathBuf, CaptureWriter, libc::rlimit) {
    let path = dir.path().join(name);
    let w = CaptureWriter::create(&path, &sample_info(), false).unwrap();
    let old = set_fsize(limit as libc::rlim_t);
    (path, w, old)
}

/// The events of a capture cut at a file size limit: within the limit, of the size the
/// writer's summary says, and ending on a whole record.
fn read_back(path: &std::path::Path, limit: u64, summary_bytes: u64) -> Vec<Stamped> {
    let size = std::fs::metadata(path).unwrap().len();
    assert!(size <= limit, "file of {size} bytes beyond the limit");
    assert_eq!(summary_bytes, size);
    let mut r = CaptureReader::open(path).unwrap();
    let back: Vec<Stamped> = r.by_ref().map(|e| e.unwrap()).collect();
    assert_eq!(r.truncated(), None, "file must end on a whole record");
    back
}

#[test]
fn file_size_limit_stops_recording_with_a_marker() {
    ignore_sigxfsz();
    let dir = tempfile::tempdir().unwrap();
    const LIMIT: u64 = 150_000;
    let (path, mut w, old) = limited_writer(&dir, "limited.pcapng", LIMIT);

    let mut sent = Vec::new();
    let mut failure = None;
    let mut refused = 0;
    for i in 0..5_000u64 {
        let ev = Stamped {
            t: MONO_REF + i * 1000,
            event: Event::Note {
                level: NoteLevel::Info,
                text: format!("event {i} {}", "x".repeat(i as usize % 300)),
            },
        };
        match w.write(&ev, &format!("note {i}")) {
            Ok(()) => sent.push(ev),
            Err(e @ CaptureError::WriteFailed { .. }) => {
                assert!(failure.is_none(), "WriteFailed reported twice");
                failure = Some(e);
            }
            Err(CaptureError::Stopped { .. }) => refused += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    let summary = w.finish();
    set_fsize(old.rlim_cur);

    let failure = failure.expect("the file size limit was never hit");
    let msg = failure.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("File too large") && msg.contains("recording_stopped marker"),
        "{msg}"
    );
    assert!(refused > 0, "writes after the failure must be refused");
    let summary = summary.expect("finish after a reported failure");
    let reason = summary
        .stopped
        .clone()
        .expect("summary says recording stopped");

    let back = read_back(&path, LIMIT, summary.bytes);
    let (marker, before) = back.split_last().expect("some events");
    match &marker.event {
        Event::RecordingStopped { reason: r } => assert_eq!(r, &reason),
        other => panic!("last event is not the stop marker: {other:?}"),
    }
    assert!(reason.contains("File too large"), "{reason}");
    assert_eq!(before.len() as u64, summary.records);
    assert!(
        before.len() > 100,
        "only {} events before the marker",
        before.len()
    );
    assert_eq!(
        before,
        &sent[..before.len()],
        "events before the marker are the first ones written, in order"
    );
    eprintln!(
        "limit {LIMIT}: {} events kept, marker: {reason}",
        before.len()
    );

    fragmented_records_hit_the_limit_mid_record();
}

/// Records bigger than a packet: a limit reached in the middle of one still cuts the file
/// back to the last whole record and ends it with the marker. (In the same
/// test: the limit is per process.)
fn fragmented_records_hit_the_limit_mid_record() {
    let dir = tempfile::tempdir().unwrap();
    const LIMIT: u64 = 1_000_000;
    let (path, mut w, old) = limited_writer(&dir, "limited-big.pcapng", LIMIT);
    let mut sent = Vec::new();
    let mut failure = None;
    for i in 0..10u64 {
        let ev = Stamped {
            t: MONO_REF + i * 1000,
            event: Event::Note {
                level: NoteLevel::Info,
                text: format!("big {i} {}", "y".repeat(300_000 + i as usize)),
            },
        };
        match w.write(&ev, &format!("big note {i}")) {
            Ok(()) => sent.push(ev),
            Err(e @ CaptureError::WriteFailed { .. }) => {
                failure = Some(e);
                break;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    let summary = w.finish();
    set_fsize(old.rlim_cur);
    let failure = failure.expect("the file size limit was never hit");
    assert!(failure.to_string().contains("File too large"), "{failure}");
    let summary = summary.expect("finish after a reported failure");
    let back = read_back(&path, LIMIT, summary.bytes);
    let (marker, before) = back.split_last().expect("some events");
    assert!(
        matches!(&marker.event, Event::RecordingStopped { .. }),
        "{marker:?}"
    );
    // Records are written behind the calls (direct writes from the writer's thread): the
    // ones accepted after the record that hit the limit are lost with it, and counted.
    let failure = failure.to_string();
    let lost: usize = failure
        .split(" buffered event(s) lost")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of lost events: {failure}"));
    assert_eq!(
        before.len() + lost,
        sent.len() + 1,
        "every record is kept or counted lost (the one of the call that failed too): {failure}"
    );
    assert_eq!(before, &sent[..before.len()]);
    assert!(
        !before.is_empty() && before.len() < 4,
        "{} kept",
        before.len()
    );
}
