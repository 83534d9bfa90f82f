//! Capture write and read speed for many small events. Prints numbers, asserts nothing.
//!
//! cargo run --release --example capture_speed [EVENTS] [DIR]

use pm2_trace::capture::{CaptureReader, CaptureWriter};
use pm2_trace::event::{CaptureInfo, Direction, Event, NoteLevel, Stamped, WireMessage};
use pm2_trace::wire::amp::{Arg, Message};
use serde_json::json;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let dir = match args.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir(),
    };
    let path = dir.join(format!("pm2-trace-speed-{}.pcapng", std::process::id()));
    let info = CaptureInfo {
        tool: "pm2-trace".into(),
        redaction: "values".into(),
        ..Default::default()
    };

    // A mix of small events, as a busy recording would have.
    let call = WireMessage(Message::new(vec![
        Arg::json(json!({"type": "call", "method": "getMonitorData"})),
        Arg::json(json!({})),
        Arg::Str("1:42".into()),
    ]));
    let bus = WireMessage(Message::new(vec![
        Arg::Str("log:out".into()),
        Arg::json(
            json!({"process": {"pm_id": 0, "name": "api"}, "data": "GET /health 200\n", "at": 1714564800123u64}),
        ),
    ]));
    let make = |i: u64| -> Stamped {
        let event = match i % 4 {
            0 => Event::RpcMessage {
                conn: i / 100,
                dir: Direction::ToDaemon,
                msg: call.clone(),
                ask: Some(i / 4 + 1),
                asked: None,
            },
            1 => Event::BusMessage { msg: bus.clone() },
            2 => Event::Note {
                level: NoteLevel::Info,
                text: format!("note {i}"),
            },
            _ => Event::RpcClose {
                conn: i,
                to_client_bytes: 4096,
                to_daemon_bytes: 512,
                unanswered: Vec::new(),
            },
        };
        Stamped {
            t: 1_000_000_000 + i * 1000,
            event,
        }
    };
    let events: Vec<Stamped> = (0..1000).map(make).collect();
    let comments: Vec<String> = (0..1000)
        .map(|i| format!("event {i} of a speed test"))
        .collect();

    let t0 = Instant::now();
    let mut w = CaptureWriter::create(&path, &info, false)?;
    for i in 0..n as usize {
        w.write(&events[i % 1000], &comments[i % 1000])?;
    }
    let s = w.finish()?;
    let wt = t0.elapsed().as_secs_f64();
    let mb = s.bytes as f64 / 1e6;
    println!(
        "write: {} events, {:.1} MB in {:.2} s: {:.0} events/s, {:.0} MB/s (incl. fsync)",
        s.records,
        mb,
        wt,
        s.records as f64 / wt,
        mb / wt
    );

    // Framing only: blocks, packets, exported-PDU tags; the JSON text is handed out uncopied.
    let t0 = Instant::now();
    let mut r = CaptureReader::open(&path)?;
    let mut json_bytes = 0u64;
    while let Some(rec) = r.next_json() {
        json_bytes += std::hint::black_box(rec?.1).len() as u64;
    }
    let ft = t0.elapsed().as_secs_f64();
    println!(
        "read:  framing only: {:.2} s: {:.0} MB/s ({:.1} MB of JSON)",
        ft,
        mb / ft,
        json_bytes as f64 / 1e6
    );

    // The JSON parse itself, without building events (serde_json's ceiling).
    let t0 = Instant::now();
    let mut r = CaptureReader::open(&path)?;
    while let Some(rec) = r.next_json() {
        let _: serde::de::IgnoredAny = serde_json::from_slice(rec?.1)?;
    }
    let pt = t0.elapsed().as_secs_f64();
    println!(
        "read:  framing + JSON syntax only (IgnoredAny): {:.2} s: {:.0} MB/s",
        pt,
        mb / pt
    );

    // serde's own Deserialize for Stamped on every record (what the reader falls back to).
    let t0 = Instant::now();
    let mut r = CaptureReader::open(&path)?;
    while let Some(rec) = r.next_json() {
        let ev: pm2_trace::event::Stamped = serde_json::from_slice(rec?.1)?;
        std::hint::black_box(ev);
    }
    let gt = t0.elapsed().as_secs_f64();
    println!(
        "read:  framing + serde's derived Stamped decode: {:.2} s: {:.0} MB/s",
        gt,
        mb / gt
    );

    let t0 = Instant::now();
    let mut r = CaptureReader::open(&path)?;
    let mut count = 0u64;
    for ev in r.by_ref() {
        std::hint::black_box(ev?);
        count += 1;
    }
    let rt = t0.elapsed().as_secs_f64();
    println!(
        "read:  {count} events (full decode to Stamped) in {:.2} s: {:.0} events/s, {:.0} MB/s (framing + JSON decode)",
        rt,
        count as f64 / rt,
        mb / rt
    );
    assert_eq!(count, s.records);
    std::fs::remove_file(&path)?;
    Ok(())
}
