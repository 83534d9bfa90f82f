//! Forward compatibility: blocks, interfaces, dissectors and record types this version does
//! not know are skipped and counted; a record that is broken is an error for that record only.

mod capture_util;

use capture_util::*;
use pm2_trace::capture::{CaptureError, CaptureReader};
use pm2_trace::event::Stamped;
use std::io::Write;
use std::path::Path;

fn block(ty: u32, body: &[u8]) -> Vec<u8> {
    let padded = body.len().div_ceil(4) * 4;
    let len = (12 + padded) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(body);
    b.resize(8 + padded, 0);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

fn tlv(tag: u16, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&tag.to_be_bytes());
    v.extend_from_slice(&(value.len() as u16).to_be_bytes());
    v.extend_from_slice(value);
    v
}

fn epb(interface: u32, dissector: &str, body: &[u8]) -> Vec<u8> {
    let mut data = tlv(12, dissector.as_bytes());
    data.extend(tlv(0, b""));
    data.extend_from_slice(body);
    let mut b = Vec::new();
    b.extend_from_slice(&interface.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(&data);
    block(6, &b)
}

fn idb(linktype: u16, name: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&linktype.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes()); // if_name
    b.extend_from_slice(&(name.len() as u16).to_le_bytes());
    b.extend_from_slice(name.as_bytes());
    b.resize(b.len().div_ceil(4) * 4, 0);
    b.extend_from_slice(&[0, 0, 0, 0]);
    block(1, &b)
}

fn append(path: &Path, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

fn event_json(ev: &Stamped) -> Vec<u8> {
    serde_json::to_vec(ev).unwrap()
}

#[test]
fn unknown_things_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.pcapng");
    let events = all_events();
    write_capture(&path, &events[..2]);
    let mut tail = Vec::new();
    // 1. A block type from the future.
    tail.extend(block(0x0000_0BAD, b"future block body"));
    // 2. A custom block (copyable, PEN 32473) is skipped too.
    tail.extend(block(0x0000_0BAD, &32473u32.to_le_bytes()));
    // 3. An unknown record type on a known interface.
    tail.extend(epb(
        0,
        "json",
        br#"{"t":7,"type":"daemon_replaced","old_pid":1,"new_pid":2}"#,
    ));
    // 4. A process event of a kind this version does not know.
    tail.extend(epb(
        3,
        "json",
        br#"{"t":8,"type":"proc","kind":"cgroup_moved","pid":5}"#,
    ));
    // 5. A payload for another dissector.
    tail.extend(epb(1, "text", b"plain text"));
    // 6. An interface we don't know (Ethernet) and a packet on it.
    tail.extend(idb(1, "eth0"));
    tail.extend(epb(4, "json", &event_json(&events[2])));
    // 7. A second capture-info record.
    tail.extend(epb(0, "json", br#"{"capture_info":{"tool":"x"}}"#));
    // Known events still come through, also with fields this version doesn't know.
    let mut with_extra: serde_json::Value = serde_json::to_value(&events[3]).unwrap();
    with_extra["added_in_v2"] = serde_json::json!({"anything": [1, 2]});
    tail.extend(epb(1, "json", &serde_json::to_vec(&with_extra).unwrap()));
    tail.extend(epb(2, "json", &event_json(&events[4])));
    // Interface statistics and name resolution blocks are known and ignored, not counted.
    tail.extend(block(5, &[0u8; 12]));
    tail.extend(block(4, &[0u8; 4]));
    append(&path, &tail);

    let (r, back) = read_all(&path);
    assert_eq!(
        back,
        vec![
            events[0].clone(),
            events[1].clone(),
            events[3].clone(),
            events[4].clone()
        ]
    );
    assert_eq!(
        r.skipped(),
        8,
        "2 blocks + 2 record types + 1 dissector + 1 interface + 1 packet on it + 1 info"
    );
    assert_eq!(r.truncated(), None);
}

#[test]
fn a_broken_record_is_an_error_for_that_record_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.pcapng");
    let events = all_events();
    write_capture(&path, &events[..1]);
    let mut tail = Vec::new();
    tail.extend(epb(
        0,
        "json",
        br#"{"t":1,"type":"note","level":5,"text":"x"}"#,
    )); // wrong field type
    tail.extend(epb(0, "json", b"{not json"));
    tail.extend(epb(9, "json", &event_json(&events[1]))); // undescribed interface
    tail.extend(epb(0, "json", &event_json(&events[1])));
    append(&path, &tail);

    let mut r = CaptureReader::open(&path).unwrap();
    let items: Vec<Result<Stamped, CaptureError>> = r.by_ref().collect();
    assert_eq!(items.len(), 5);
    assert_eq!(items[0].as_ref().unwrap(), &events[0]);
    for (i, what) in [
        (1, "does not match the event schema"),
        (2, "not a JSON object"),
        (3, "never described"),
    ] {
        let msg = items[i].as_ref().unwrap_err().to_string();
        assert!(
            msg.contains(what)
                && msg.contains(&path.display().to_string())
                && msg.contains("at byte"),
            "{msg}"
        );
    }
    assert_eq!(items[4].as_ref().unwrap(), &events[1]);
}

#[test]
fn broken_framing_ends_iteration_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("framing.pcapng");
    let events = all_events();
    write_capture(&path, &events[..1]);
    let at = std::fs::metadata(&path).unwrap().len();
    for (name, bad, expect) in [
        (
            "huge",
            [6u32.to_le_bytes(), 0xFFFF_FFF0u32.to_le_bytes()].concat(),
            "impossible length",
        ),
        (
            "odd",
            [6u32.to_le_bytes(), 21u32.to_le_bytes()].concat(),
            "impossible length",
        ),
        (
            "tiny",
            [6u32.to_le_bytes(), 8u32.to_le_bytes()].concat(),
            "impossible length",
        ),
        (
            "trailer",
            [6u32.to_le_bytes(), 12u32.to_le_bytes(), 16u32.to_le_bytes()].concat(),
            "at its end",
        ),
    ] {
        let p = dir.path().join(name);
        std::fs::copy(&path, &p).unwrap();
        append(&p, &bad);
        append(&p, &epb(0, "json", &event_json(&events[1])));
        let mut r = CaptureReader::open(&p).unwrap();
        let items: Vec<_> = r.by_ref().collect();
        assert_eq!(items.len(), 2, "{name}");
        let err = items[1].as_ref().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(expect) && msg.contains(&format!("at byte {at}")),
            "{name}: {msg}"
        );
        assert_eq!(err.offset(), at);
        assert!(r.next().is_none(), "iteration ends after broken framing");
    }
}
