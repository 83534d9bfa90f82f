//! tshark reads every capture the project writes without a warning: comments, interfaces,
//! JSON dissection and wall-clock timestamps.
//!
//! Needs Debian's `tshark` package. As root, tshark prints "Running as user "root" ... This
//! could be dangerous." on stderr; rather than filtering stderr, the test runs tshark as
//! `nobody` (uid/gid 65534) and feeds the capture on stdin (the capture itself is 0600).

mod capture_util;
#[path = "support/tshark.rs"]
mod tshark;

use capture_util::*;
use pm2_trace::capture::{CaptureWriter, MAX_PACKET_LEN};
use pm2_trace::event::{mono_now, wall_now_ns, CaptureInfo, Event, NoteLevel, Stamped};
use std::path::Path;

/// tshark on `capture` (see tests/support/tshark.rs).
fn tshark(capture: &Path, args: &[&str]) -> String {
    tshark::run(&[], capture, args, "C")
}

/// A capture stamped with the real clocks, so times are "now".
fn live_info() -> CaptureInfo {
    let mut info = sample_info();
    info.mono_ref_ns = mono_now();
    info.wall_ref_ns = wall_now_ns();
    info
}

fn write_live(path: &Path, info: &CaptureInfo, extra: Vec<Stamped>) -> Vec<(Stamped, String)> {
    let mut w = CaptureWriter::create(path, info, false).unwrap();
    let mut written = Vec::new();
    for (i, mut ev) in all_events().into_iter().chain(extra).enumerate() {
        ev.t = info.mono_ref_ns + 1_000_000 * (i as u64 + 1) + 123;
        let comment = format!("{} #{i}: ünïcode ok", kind(&ev.event));
        w.write(&ev, &comment).unwrap();
        written.push((ev, comment));
    }
    w.finish().unwrap();
    written
}

#[test]
fn tshark_reads_comments_json_and_wall_times_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.pcapng");
    let info = live_info();
    let written = write_live(&path, &info, vec![]);

    // Full dissection: comments, interfaces, JSON.
    let v = tshark(&path, &["-V"]);
    for (_, comment) in &written {
        assert!(
            v.contains(comment.as_str()),
            "comment {comment:?} missing from tshark -V"
        );
    }
    let frames = written.len() + 1; // + the capture-info record
    assert_eq!(
        v.matches("\nJavaScript Object Notation\n").count(),
        frames,
        "JSON not dissected:\n{}",
        v
    );
    assert_eq!(
        v.matches("Encapsulation type: Wireshark Upper PDU export")
            .count(),
        frames
    );
    for name in ["recorder", "rpc", "bus", "proc"] {
        assert!(
            v.contains(&format!("Interface name: {name}\n")),
            "interface {name} missing"
        );
    }
    assert!(v.contains("Column protocol string: pm2-trace"));
    assert!(
        v.contains("String value: restartProcessId"),
        "JSON members not dissected"
    );
    assert!(!v.contains("Malformed"), "malformed packet:\n{}", v);
    assert!(!v.contains("Expert Info (Warning") && !v.contains("Expert Info (Error"));

    // Per packet: comment, exact nanosecond wall time, interface and direction flags.
    let f = tshark(
        &path,
        &[
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "frame.comment",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.packet_flags_direction",
        ],
    );
    let lines: Vec<&str> = f.lines().collect();
    assert_eq!(lines.len(), frames, "{}", f);
    assert!(lines[0].starts_with("pm2-trace "), "{}", lines[0]);
    for ((ev, comment), line) in written.iter().zip(&lines[1..]) {
        let cols: Vec<&str> = line.split('|').collect();
        assert_eq!(cols[0], comment);
        let wall = info.wall_ns(ev.t);
        let expect = format!("{}.{:09}", wall / 1_000_000_000, wall % 1_000_000_000);
        assert_eq!(cols[1], expect, "timestamp of {comment}");
        // Log lines (explain's source) are no capture interface: a capture that holds one
        // (only these tests write it) files it under the recorder's interface.
        let src = ev.event.source();
        let iface = if pm2_trace::event::Source::ALL.contains(&src) {
            src.name()
        } else {
            pm2_trace::event::Source::Recorder.name()
        };
        assert_eq!(cols[2], iface, "interface of {comment}");
        let dir = match &ev.event {
            Event::RpcMessage { dir, .. } | Event::RpcUndecodable { dir, .. } => Some(*dir),
            _ => None,
        };
        let expect_dir = match dir {
            Some(pm2_trace::event::Direction::ToDaemon) => Some(1), // inbound
            Some(pm2_trace::event::Direction::ToClient) => Some(2), // outbound
            None => None,
        };
        // tshark 4.0 prints the field in hex ("0x00000001"); accept decimal too.
        let shown_dir = match cols[3] {
            "" => None,
            v => Some(match v.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16).unwrap(),
                None => v.parse::<u32>().unwrap(),
            }),
        };
        assert_eq!(
            shown_dir, expect_dir,
            "direction flags of {comment}: {line}"
        );
    }

    // The summary line's UTC time (-t ud) matches the wall clock within a second.
    let s = tshark(&path, &["-t", "ud", "-c", "2"]);
    let second = s.lines().nth(1).expect("two summary lines");
    let ts = second
        .split_whitespace()
        .skip(1)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let shown = chrono::NaiveDateTime::parse_from_str(&ts, "%Y-%m-%d %H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("cannot parse tshark time {ts:?} in {second:?}: {e}"));
    let shown_ns = shown.and_utc().timestamp_nanos_opt().unwrap() as i128;
    let expect_ns = info.wall_ns(written[0].0.t);
    assert!(
        (shown_ns - expect_ns).abs() < 1_000_000_000,
        "tshark shows {ts}, expected {expect_ns} ns"
    );
    assert!(
        (expect_ns - wall_now_ns()).abs() < 60_000_000_000,
        "test clock sanity"
    );
    assert!(second.contains("pm2-trace"), "protocol column: {second}");
}

#[test]
fn tshark_reads_fragmented_records_and_stop_marker_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.pcapng");
    let info = live_info();
    let text: String = "pm2 log line ✓ "
        .chars()
        .cycle()
        .take(2 * MAX_PACKET_LEN + 99)
        .collect();
    let big = Stamped {
        t: 0,
        event: Event::Note {
            level: NoteLevel::Info,
            text,
        },
    };
    let stop = Stamped {
        t: 0,
        event: Event::RecordingStopped {
            reason: "disk full".into(),
        },
    };
    let written = write_live(&path, &info, vec![big, stop]);
    let v = tshark(&path, &["-V"]);
    assert!(v.contains("[record part 1/3]") && v.contains("[record part 3/3]"));
    assert!(!v.contains("Malformed"));
    let f = tshark(&path, &["-T", "fields", "-e", "frame.comment"]);
    assert!(f.contains(written.last().unwrap().1.as_str()));
    // The reader reassembles what tshark shows as three data packets.
    let (_, back) = read_all(&path);
    assert_eq!(back.len(), written.len());
    assert!(back.iter().zip(&written).all(|(a, (b, _))| a == b));
}

/// Every capture the project ships (recorded from real daemons by the recorder) opens in
/// tshark without a warning, with a comment and a JSON dissection on every packet.
#[test]
fn tshark_reads_every_shipped_capture_without_warnings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("captures/") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "bin") {
            continue;
        }
        let out = tshark(
            &path,
            &["-T", "fields", "-e", "frame.comment", "-e", "json.object"],
        );
        let packets = out.lines().count();
        assert!(packets > 10, "{}: only {packets} packets", path.display());
        let commented = out
            .lines()
            .filter(|l| !l.starts_with('\t') && !l.is_empty())
            .count();
        assert!(
            commented * 10 >= packets * 9,
            "{}: {commented} of {packets} packets have a comment",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 10, "expected the shipped captures, found {seen}");
}
