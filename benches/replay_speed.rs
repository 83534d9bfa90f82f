//! Replay speed and memory: a large capture made from the records of a real capture (events
//! repeated with shifted times and connection ids), replayed by the release binary with its
//! output thrown away; throughput and peak memory (ru_maxrss) of the replay process.
//!
//! Run: `cargo bench --bench replay_speed`. Size: PM2_TRACE_BENCH_MB (default 1024).
//! Source: PM2_TRACE_BENCH_SOURCE, else the first capture in captures/.

use pm2_trace::capture::{CaptureReader, CaptureWriter};
use pm2_trace::event::{Event, Stamped};
use std::path::PathBuf;
use std::time::Instant;

fn source() -> PathBuf {
    if let Some(p) = std::env::var_os("PM2_TRACE_BENCH_SOURCE") {
        return p.into();
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("captures");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("captures/ is missing")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    found.sort();
    found.into_iter().next().expect("no capture in captures/")
}

#[path = "support/child.rs"]
mod child;
use child::run;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let src = source();
    let mut reader = CaptureReader::open(&src).expect("source capture");
    let info = reader.info().clone();
    let events: Vec<Stamped> = reader.by_ref().filter_map(Result::ok).collect();
    assert!(!events.is_empty());
    let first = events.first().unwrap().t;
    let span = events.last().unwrap().t - first + 1_000_000;
    let target_mb: u64 = std::env::var("PM2_TRACE_BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::Builder::new()
        .prefix("p2t-replay-")
        .tempdir()
        .unwrap();
    // PM2_TRACE_BENCH_KEEP=FILE keeps the generated capture there (for profiling).
    let big = std::env::var_os("PM2_TRACE_BENCH_KEEP")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("big.bin"));
    let t0 = Instant::now();
    let mut w = CaptureWriter::create(&big, &info, true).unwrap();
    let mut round = 0u64;
    'fill: loop {
        for ev in &events {
            let mut ev = ev.clone();
            ev.t += round * span;
            match &mut ev.event {
                Event::RpcMessage { conn, .. }
                | Event::RpcConnect { conn, .. }
                | Event::RpcClose { conn, .. } => *conn += round * 1_000_000,
                Event::RecordingStopped { .. } => continue,
                _ => {}
            }
            w.write(&ev, "").unwrap();
        }
        round += 1;
        if w.committed() >= target_mb << 20 {
            break 'fill;
        }
    }
    let summary = w.finish().unwrap();
    let gen_s = t0.elapsed().as_secs_f64();
    let size = std::fs::metadata(&big).unwrap().len();
    eprintln!(
        "generated {:.0} MB ({} records, {round} copies of {}) in {gen_s:.1} s",
        size as f64 / 1e6,
        summary.records,
        src.display()
    );
    let path = big.to_str().unwrap();
    let (text_s, text_rss, st1) = run(&["replay", path]);
    let (json_s, json_rss, st2) = run(&["replay", "--json", path]);
    assert!(st1 == 0 && st2 == 0, "replay failed");
    let mbps = |s: f64| size as f64 / 1e6 / s;
    println!("| figure | target | measured | reference |");
    println!("|---|---|---|---|");
    println!("| replay (text) of a {:.0} MB capture, decode + timeline + rules | >= 500 MB/s | {:.0} MB/s | {text_s:.1} s |", size as f64 / 1e6, mbps(text_s));
    println!(
        "| replay --json of the same capture | >= 500 MB/s | {:.0} MB/s | {json_s:.1} s |",
        mbps(json_s)
    );
    println!(
        "| peak memory of replay (text / json) | < 100 MB | {:.0} MB / {:.0} MB | ru_maxrss |",
        text_rss as f64 / 1024.0,
        json_rss as f64 / 1024.0
    );
}
