//! Replay speed and memory: a large capture made from the records of a real capture (events
//! repeated with shifted times and connection ids), replayed by the release binary with its
//! output thrown away; throughput and peak memory (ru_maxrss) of the replay process, beside
//! the peer, tshark, reading a capture made the same way (interleaved in the same run).
//!
//! Run: `cargo bench --bench replay_speed`. Size: PM2_TRACE_BENCH_MB (default 1024).
//! Source: PM2_TRACE_BENCH_SOURCE, else the first capture in captures/.

use pm2_trace::capture::{CaptureReader, CaptureWriter};
use pm2_trace::event::{CaptureInfo, Event, Stamped};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

/// Seconds tshark takes to read and dissect `path` (its output thrown away); None when
/// tshark is not installed.
fn run_tshark(path: &str) -> Option<f64> {
    let t0 = Instant::now();
    let status = Command::new("tshark")
        .args(["-n", "-r", path])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    status.success().then(|| t0.elapsed().as_secs_f64())
}

/// Write a capture of at least `bytes` made of `events` repeated with shifted times and
/// connection ids; (records, copies).
fn generate(path: &Path, info: &CaptureInfo, events: &[Stamped], bytes: u64) -> (u64, u64) {
    let first = events.first().unwrap().t;
    let span = events.last().unwrap().t - first + 1_000_000;
    let mut w = CaptureWriter::create(path, info, true).unwrap();
    let mut round = 0u64;
    loop {
        for ev in events {
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
        if w.committed() >= bytes {
            break;
        }
    }
    (w.finish().unwrap().records, round)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let src = source();
    let mut reader = CaptureReader::open(&src).expect("source capture");
    let info = reader.info().clone();
    let events: Vec<Stamped> = reader.by_ref().filter_map(Result::ok).collect();
    assert!(!events.is_empty());
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
    let (records, round) = generate(&big, &info, &events, target_mb << 20);
    let gen_s = t0.elapsed().as_secs_f64();
    let size = std::fs::metadata(&big).unwrap().len();
    eprintln!(
        "generated {:.0} MB ({} records, {round} copies of {}) in {gen_s:.1} s",
        size as f64 / 1e6,
        records,
        src.display()
    );
    let path = big.to_str().unwrap();
    // The peer, tshark, reads a capture made the same way, a tenth of the size (it is tens
    // of times slower); the three are interleaved, twice, and the better of each is kept.
    let small = dir.path().join("small.bin");
    generate(&small, &info, &events, (target_mb << 20) / 10);
    let small_size = std::fs::metadata(&small).unwrap().len();
    let mut text = (f64::MAX, 0, 0);
    let mut json = (f64::MAX, 0, 0);
    let mut tshark: Option<f64> = None;
    for _ in 0..2 {
        let r = run(&["replay", path]);
        text = if r.0 < text.0 { r } else { text };
        let r = run(&["replay", "--json", path]);
        json = if r.0 < json.0 { r } else { json };
        if let Some(s) = run_tshark(small.to_str().unwrap()) {
            tshark = Some(tshark.map_or(s, |b: f64| b.min(s)));
        }
    }
    let ((text_s, text_rss, st1), (json_s, json_rss, st2)) = (text, json);
    assert!(st1 == 0 && st2 == 0, "replay failed");
    let mbps = |s: f64| size as f64 / 1e6 / s;
    let tshark_words = match tshark {
        Some(s) => format!(
            "tshark -r {:.0} MB/s on a {:.0} MB capture made the same way, interleaved",
            small_size as f64 / 1e6 / s,
            small_size as f64 / 1e6
        ),
        None => "tshark not installed".to_owned(),
    };
    println!("| figure | target | measured | reference |");
    println!("|---|---|---|---|");
    println!("| replay (text) of a {:.0} MB capture, decode + timeline + rules | >= 500 MB/s | {:.0} MB/s | {text_s:.1} s; {tshark_words} |", size as f64 / 1e6, mbps(text_s));
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
