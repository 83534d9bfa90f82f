//! A capture cut at any byte replays up to its last whole record and says where it ends.

mod capture_util;

use capture_util::*;
use pm2_trace::capture::{CaptureReader, Truncation, MAX_PACKET_LEN};
use pm2_trace::event::{Event, NoteLevel, Stamped};
use std::path::Path;

/// The offset after the capture-info record, and after each event record.
fn record_ends(path: &Path) -> (u64, Vec<u64>) {
    let mut r = CaptureReader::open(path).unwrap();
    let info_end = r.offset();
    let mut ends = Vec::new();
    while let Some(ev) = r.next() {
        ev.unwrap();
        ends.push(r.offset());
    }
    (info_end, ends)
}

fn check_cut(
    bytes: &[u8],
    cut: usize,
    cut_path: &Path,
    events: &[Stamped],
    info_end: u64,
    ends: &[u64],
) {
    std::fs::write(cut_path, &bytes[..cut]).unwrap();
    let cut = cut as u64;
    let opened = CaptureReader::open(cut_path);
    if cut < info_end {
        let err = opened.expect_err("a capture cut before its info record cannot open");
        let msg = err.to_string();
        assert!(
            msg.contains(&cut_path.display().to_string()) && msg.contains("at byte"),
            "cut {cut}: {msg}"
        );
        return;
    }
    let mut r = opened.unwrap_or_else(|e| panic!("cut {cut}: {e}"));
    let back: Vec<Stamped> = r
        .by_ref()
        .map(|e| e.unwrap_or_else(|e| panic!("cut {cut}: {e}")))
        .collect();
    let whole = ends.iter().take_while(|&&e| e <= cut).count();
    assert_eq!(back.len(), whole, "cut {cut}");
    assert_eq!(&back[..], &events[..whole], "cut {cut}");
    let last_end = if whole == 0 {
        info_end
    } else {
        ends[whole - 1]
    };
    if last_end == cut {
        assert_eq!(r.truncated(), None, "cut {cut} at a record boundary");
    } else {
        assert_eq!(
            r.truncated(),
            Some(Truncation {
                offset: last_end,
                file_len: cut,
                records: whole as u64
            }),
            "cut {cut}"
        );
    }
}

#[test]
fn truncation_at_every_byte_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.pcapng");
    let events = all_events();
    write_capture(&path, &events);
    let bytes = std::fs::read(&path).unwrap();
    let (info_end, ends) = record_ends(&path);
    assert_eq!(ends.len(), events.len());
    assert_eq!(*ends.last().unwrap(), bytes.len() as u64);
    let cut_path = dir.path().join("cut.pcapng");
    for cut in 0..=bytes.len() {
        check_cut(&bytes, cut, &cut_path, &events, info_end, &ends);
    }
}

#[test]
fn truncation_inside_a_fragmented_record() {
    // A record split over three packets, between two small ones: a cut anywhere inside the
    // three packets loses the whole record, never returns part of it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frag.pcapng");
    let mut events = all_events()[..3].to_vec();
    let text: String = "0123456789abcdef"
        .chars()
        .cycle()
        .take(2 * MAX_PACKET_LEN + 10)
        .collect();
    events.push(Stamped {
        t: MONO_REF + 50_000_000,
        event: Event::Note {
            level: NoteLevel::Info,
            text,
        },
    });
    events.push(all_events()[4].clone());
    write_capture(&path, &events);
    let bytes = std::fs::read(&path).unwrap();
    let (info_end, ends) = record_ends(&path);
    let cut_path = dir.path().join("cut.pcapng");
    // Block boundaries inside the big record: walk the block lengths.
    let mut boundaries = Vec::new();
    let mut at = ends[2] as usize;
    while at < ends[3] as usize {
        boundaries.push(at);
        at += u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    }
    assert_eq!(boundaries.len(), 3, "three fragments");
    let mut cuts: Vec<usize> = Vec::new();
    for b in boundaries
        .iter()
        .copied()
        .chain([ends[3] as usize, ends[4] as usize])
    {
        for d in [0usize, 1, 4, 7, 8, 12, 100] {
            cuts.push(b.saturating_sub(d));
            cuts.push((b + d).min(bytes.len()));
        }
    }
    cuts.sort();
    cuts.dedup();
    for cut in cuts {
        check_cut(&bytes, cut, &cut_path, &events, info_end, &ends);
    }
}
