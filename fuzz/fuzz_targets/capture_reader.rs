//! Fuzz the capture reader: any bytes as a capture file must give records or clear errors,
//! never a panic, and never a large allocation (run with -malloc_limit_mb=64; the reader's
//! largest legitimate buffer is MAX_BLOCK_LEN, about 16 MiB).
//!
//! cargo +nightly fuzz run capture_reader fuzz/corpus/capture_reader -- -malloc_limit_mb=64 -max_total_time=60
#![no_main]

use libfuzzer_sys::fuzz_target;
use pm2_trace::capture::CaptureReader;
use std::path::PathBuf;

fn scratch_path() -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("pm2-trace-fuzz-{}.pcapng", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    thread_local! { static PATH: PathBuf = scratch_path(); }
    PATH.with(|path| {
        std::fs::write(path, data).expect("write scratch capture");
        if let Ok(mut r) = CaptureReader::open(path) {
            for item in r.by_ref() {
                if let Err(e) = item {
                    assert!(
                        e.to_string().contains("at byte"),
                        "error without offset: {e}"
                    );
                }
            }
            let _ = r.truncated();
        }
        if let Ok(mut r) = CaptureReader::open(path) {
            while let Some(rec) = r.next_json() {
                let _ = rec.map(|(_, json)| json.len());
            }
        }
    });
});
