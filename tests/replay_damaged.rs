//! `pm2-trace replay` on damaged input: truncated, a damaged record, garbage. Always a clear
//! message with the file and byte offset, never a panic; everything readable is replayed.

#[path = "support/recorder.rs"]
mod recorder;

use std::path::PathBuf;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("captures/drain-child-restart-5.4.3.bin")
}

#[test]
fn truncated_capture_replays_up_to_its_last_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(shipped()).unwrap();
    let cut = dir.path().join("cut.bin");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let out = recorder::run(&["replay", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("truncated") && err.contains("cut.bin") && err.contains("at byte"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("restartProcessId"));
}

#[test]
fn a_damaged_record_is_passed_over_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(shipped()).unwrap();
    // Damage the JSON of one record in the middle (framing intact).
    let mid = bytes.len() / 2;
    let at = mid
        + bytes[mid..]
            .windows(6)
            .position(|w| w == b"\"type\"")
            .unwrap();
    bytes[at + 1..at + 5].copy_from_slice(b"\xff\xfe\x00{");
    let damaged = dir.path().join("damaged.bin");
    std::fs::write(&damaged, &bytes).unwrap();
    let whole = recorder::run(&["replay", shipped().to_str().unwrap()]);
    let out = recorder::run(&["replay", damaged.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "damage is an error for scripts");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("damaged.bin") && err.contains("at byte") && err.contains("passed over"),
        "{err}"
    );
    let lines = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).lines().count();
    assert!(
        lines(&out) + 5 >= lines(&whole),
        "the records after the damage are replayed too"
    );
}

#[test]
fn garbage_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"GET / HTTP/1.1\r\n\r\n\x00\xff not a capture").unwrap();
    let out = recorder::run(&["replay", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("junk.bin") && err.contains("byte 0"), "{err}");
    assert!(!err.contains("panicked"));
}
