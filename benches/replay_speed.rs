//! Replay speed and memory: the release binary replays a large capture (text, then `--json`)
//! with its output thrown away; throughput and peak memory (ru_maxrss) of the replay
//! process, beside the peer, tshark, reading the first tenth of the same capture's records
//! (interleaved in the same run, twice; the better run of each is kept).
//!
//! The capture (default): recorded by `pm2-trace record` from a real pm2 7.0.4 daemon with
//! 20 apps, two getMonitorData pollers and a restart every 500 ms, at least
//! PM2_TRACE_BENCH_MB (default 550) MB; made once and cached under `target/bench-captures/`
//! (how, exactly: benches/support/real_capture.rs).
//!
//! PM2_TRACE_BENCH_SYNTHETIC=1: the older synthetic capture instead, the records of a small
//! capture repeated with shifted times and connection ids (PM2_TRACE_BENCH_SOURCE, else the
//! first capture in captures/; default 1024 MB). PM2_TRACE_BENCH_KEEP=FILE keeps it there.
//!
//! Run: `cargo bench --bench replay_speed` (prints numbers, asserts only that replay succeeds);
//! `-- --capture-only` makes (or finds) the capture, prints its path and stops.

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
#[path = "support/real_capture.rs"]
mod real_capture;
use child::run_cpu;

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

/// Copy the first `bytes` of `src`'s records into `dst` (whole records, rewritten by the
/// writer); the number of records.
fn prefix(src: &Path, dst: &Path, bytes: u64) -> u64 {
    let mut r = CaptureReader::open(src).expect("open the capture");
    let info = r.info().clone();
    let mut w = CaptureWriter::create(dst, &info, true).unwrap();
    for ev in r.by_ref() {
        w.write(&ev.expect("capture record"), "").unwrap();
        if w.committed() >= bytes {
            break;
        }
    }
    w.finish().unwrap().records
}

/// The synthetic capture: (big, small for tshark, words saying what it is).
fn synthetic(dir: &Path) -> (PathBuf, PathBuf, String) {
    let src = source();
    let mut reader = CaptureReader::open(&src).expect("source capture");
    let info = reader.info().clone();
    let events: Vec<Stamped> = reader.by_ref().filter_map(Result::ok).collect();
    assert!(!events.is_empty());
    let target_mb: u64 = std::env::var("PM2_TRACE_BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let big = std::env::var_os("PM2_TRACE_BENCH_KEEP")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("big.bin"));
    let t0 = Instant::now();
    let (records, round) = generate(&big, &info, &events, target_mb << 20);
    eprintln!(
        "generated {} records ({round} copies of {}) in {:.1} s",
        records,
        src.display(),
        t0.elapsed().as_secs_f64()
    );
    let small = dir.join("small.bin");
    generate(&small, &info, &events, (target_mb << 20) / 10);
    let what = format!("synthetic: {} repeated", src.display());
    (big, small, what)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("p2t-replay-")
        .tempdir()
        .unwrap();
    let (big, small, what) = if std::env::var_os("PM2_TRACE_BENCH_SYNTHETIC").is_some() {
        synthetic(dir.path())
    } else {
        let mb: u64 = std::env::var("PM2_TRACE_BENCH_MB")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(550);
        let big = real_capture::real_capture(mb * 1_000_000);
        let small = dir.path().join("small.bin");
        let size = std::fs::metadata(&big).unwrap().len();
        prefix(&big, &small, size / 10);
        let what = format!(
            "recorded from a real pm2 {} daemon, {} apps, getMonitorData pollers",
            real_capture::VERSION,
            real_capture::APPS
        );
        (big, small, what)
    };
    let size = std::fs::metadata(&big).unwrap().len();
    eprintln!(
        "capture: {} ({:.0} MB, {what})",
        big.display(),
        size as f64 / 1e6
    );
    if std::env::args().any(|a| a == "--capture-only") {
        return;
    }
    let path = big.to_str().unwrap();
    let small_size = std::fs::metadata(&small).unwrap().len();
    let mut text = (f64::MAX, 0.0, 0, 0);
    let mut json = (f64::MAX, 0.0, 0, 0);
    let mut tshark: Option<f64> = None;
    for _ in 0..2 {
        let r = run_cpu(&["replay", path]);
        text = if r.0 < text.0 { r } else { text };
        let r = run_cpu(&["replay", "--json", path]);
        json = if r.0 < json.0 { r } else { json };
        if let Some(s) = run_tshark(small.to_str().unwrap()) {
            tshark = Some(tshark.map_or(s, |b: f64| b.min(s)));
        }
    }
    let ((text_s, text_cpu, text_rss, st1), (json_s, json_cpu, json_rss, st2)) = (text, json);
    assert!(st1 == 0 && st2 == 0, "replay failed");
    let mbps = |s: f64| size as f64 / 1e6 / s;
    let tshark_words = match tshark {
        Some(s) => format!(
            "tshark -r {:.0} MB/s on the first {:.0} MB of its records, interleaved",
            small_size as f64 / 1e6 / s,
            small_size as f64 / 1e6
        ),
        None => "tshark not installed".to_owned(),
    };
    println!("| figure | target | measured | reference |");
    println!("|---|---|---|---|");
    println!("| replay (text) of a {:.0} MB capture ({what}), decode + timeline + rules | >= 500 MB/s | {:.0} MB/s | {text_s:.1} s ({:.0} MB/s of CPU time: {text_cpu:.1} s); {tshark_words} |", size as f64 / 1e6, mbps(text_s), mbps(text_cpu));
    println!(
        "| replay --json of the same capture | >= 500 MB/s | {:.0} MB/s | {json_s:.1} s ({:.0} MB/s of CPU time: {json_cpu:.1} s) |",
        mbps(json_s),
        mbps(json_cpu)
    );
    println!(
        "| peak memory of replay (text / json) | < 100 MB | {:.0} MB / {:.0} MB | ru_maxrss |",
        text_rss as f64 / 1024.0,
        json_rss as f64 / 1024.0
    );
}
