use super::*;
use proptest::prelude::*;
use std::io::Write;
use std::path::Path;

fn pm2_line(sec: u32, msg: &str) -> String {
    format!("2026-11-25T10:00:{sec:02}: PM2 log: {msg}\n")
}

fn ms_of(sec: u32) -> i64 {
    stamp::parse_stamp(&format!("2026-11-25T10:00:{sec:02}"))
        .unwrap()
        .ms
}

fn set_mtime(p: &Path, secs: u64) {
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .unwrap();
}

fn gz(p: &Path, text: &str) {
    let f = std::fs::File::create(p).unwrap();
    let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap();
}

fn collect(set: &LogSet) -> (Vec<LogLine>, LogReport) {
    let mut out = Vec::new();
    let r = set.read(|l| out.push(l));
    (out, r)
}

fn daemon(dir: &Path) -> LogSpec {
    LogSpec {
        stream: LogStream::Daemon,
        app: None,
        live: dir.join("pm2.log"),
    }
}

fn app(dir: &Path, stream: LogStream, file: &str) -> LogSpec {
    LogSpec {
        stream,
        app: Some(LogApp {
            name: "web".into(),
            pm_id: Some(0),
        }),
        live: dir.join(file),
    }
}

#[test]
fn rotated_compressed_and_live_in_order() {
    let d = tempfile::tempdir().unwrap();
    gz(
        &d.path().join("pm2__2026-11-25_10-00-01.log.gz"),
        &(pm2_line(0, "App [web:0] starting in -fork mode-") + &pm2_line(1, "App [web:0] online")),
    );
    std::fs::write(
        d.path().join("pm2.log.1"),
        pm2_line(2, "Stopping app:web id:0"),
    )
    .unwrap();
    std::fs::write(
        d.path().join("pm2.log"),
        pm2_line(3, "App [web:0] exited with code [1] via signal [SIGINT]")
            + "    at continuation\n"
            + &pm2_line(4, "App [web:0] starting in -fork mode-"),
    )
    .unwrap();
    set_mtime(&d.path().join("pm2__2026-11-25_10-00-01.log.gz"), 1000);
    set_mtime(&d.path().join("pm2.log.1"), 2000);
    let (lines, rep) = collect(&LogSet {
        specs: vec![daemon(d.path())],
        since_ms: None,
    });
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "App [web:0] starting in -fork mode-",
            "App [web:0] online",
            "Stopping app:web id:0",
            "App [web:0] exited with code [1] via signal [SIGINT]",
            "    at continuation",
            "App [web:0] starting in -fork mode-"
        ]
    );
    assert!(lines[4].inherited && lines[4].at_ms == Some(ms_of(3)));
    assert!(lines.iter().all(|l| l.precision == LinePrecision::Second));
    assert_eq!(rep.files.len(), 3);
    assert!(rep.files[0].compressed);
    assert!(rep.unreadable.is_empty(), "{:?}", rep.unreadable);
}

#[test]
fn window_skips_old_rotations_and_old_lines() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("pm2.log.1"), pm2_line(1, "old")).unwrap();
    set_mtime(&d.path().join("pm2.log.1"), 1000);
    std::fs::write(
        d.path().join("pm2.log"),
        pm2_line(2, "before") + &pm2_line(5, "inside"),
    )
    .unwrap();
    let (lines, rep) = collect(&LogSet {
        specs: vec![daemon(d.path())],
        since_ms: Some(ms_of(4)),
    });
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].text, "inside");
    assert!(rep.files[0].skipped_older);
    assert_eq!(rep.files[0].bytes_read, 0);
}

#[test]
fn app_logs_merge_by_time_and_undated_logs_stay_apart() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("pm2.log"),
        pm2_line(1, "App [web:0] starting in -fork mode-") + &pm2_line(3, "App [web:0] online"),
    )
    .unwrap();
    std::fs::write(
        d.path().join("web-error.log"),
        "2026-11-25T10:00:02: Error: listen EADDRINUSE: address already in use 127.0.0.1:4000\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("web-out.log"),
        "listening\n\u{1b}[31mred\u{1b}[0m\n",
    )
    .unwrap();
    let (lines, rep) = collect(&LogSet {
        specs: vec![
            daemon(d.path()),
            app(d.path(), LogStream::Err, "web-error.log"),
            app(d.path(), LogStream::Out, "web-out.log"),
        ],
        since_ms: None,
    });
    let order: Vec<LogStream> = lines.iter().map(|l| l.stream).collect();
    assert_eq!(
        order,
        [LogStream::Daemon, LogStream::Err, LogStream::Daemon]
    );
    assert_eq!(
        lines[1].text,
        "Error: listen EADDRINUSE: address already in use 127.0.0.1:4000"
    );
    assert_eq!(rep.undated.len(), 1);
    assert_eq!(rep.undated[0].lines.len(), 2);
    assert_eq!(rep.undated[0].stream, LogStream::Out);
}

#[test]
fn unreadable_files_are_named() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("pm2.log"), pm2_line(1, "x")).unwrap();
    // A corrupt compressed copy: named, the rest still read.
    std::fs::write(d.path().join("pm2.log.1.gz"), b"\x1f\x8b\x08\x00garbage").unwrap();
    set_mtime(&d.path().join("pm2.log.1.gz"), 1000);
    let (lines, rep) = collect(&LogSet {
        specs: vec![daemon(d.path())],
        since_ms: None,
    });
    assert_eq!(lines.len(), 1);
    assert_eq!(rep.unreadable.len(), 1, "{rep:?}");
    assert!(rep.unreadable[0].path.ends_with("pm2.log.1.gz"));
    assert!(rep.unreadable[0].error.contains("read error at byte"));
}

/// A pm2.log of 50,000 lines, and a set reading it.
fn big_log() -> (tempfile::TempDir, std::path::PathBuf, LogSet) {
    let d = tempfile::tempdir().unwrap();
    let live = d.path().join("pm2.log");
    let mut text = String::new();
    for i in 0..50_000 {
        text.push_str(&pm2_line((i % 60) as u32, &format!("line {i}")));
    }
    std::fs::write(&live, &text).unwrap();
    let set = LogSet {
        specs: vec![daemon(d.path())],
        since_ms: None,
    };
    (d, live, set)
}

/// A rotation that swaps the live file while it is being read: the reader keeps the
/// inode it opened, reads it to the length it had, and says the file was replaced.
#[test]
fn rotated_mid_read() {
    let (d, live, set) = big_log();
    let mut n = 0u64;
    let mut swapped = false;
    let rep = set.read(|_| {
        n += 1;
        if n == 10 && !swapped {
            swapped = true;
            std::fs::rename(&live, d.path().join("pm2__2026-11-25_10-00-00.log")).unwrap();
            std::fs::write(&live, pm2_line(1, "new file")).unwrap();
        }
    });
    assert_eq!(n, 50_000);
    let p = rep.files[0].problem.as_deref().unwrap_or("");
    assert!(p.contains("replaced while being read"), "{p}");
}

#[test]
fn truncated_mid_read() {
    let (_dir, live, set) = big_log();
    let mut n = 0u64;
    let rep = set.read(|_| {
        n += 1;
        if n == 10 {
            // copytruncate
            std::fs::File::options()
                .write(true)
                .open(&live)
                .unwrap()
                .set_len(0)
                .unwrap();
        }
    });
    assert!(n < 50_000, "read {n} lines of a truncated file");
    let p = rep.files[0].problem.as_deref().unwrap_or("");
    assert!(p.contains("shrank") || p.contains("ended at byte"), "{p}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any bytes in any of the logs, any window: no panic, every line within the window
    /// and in time order.
    #[test]
    fn any_content_any_window(
        daemon_bytes in prop::collection::vec(any::<u8>(), 0..3000),
        stamped in prop::collection::vec((0u32..60, "[ -~]{0,30}"), 0..40),
        err_bytes in prop::collection::vec(any::<u8>(), 0..2000),
        since in prop::option::of(0u32..60),
    ) {
        let d = tempfile::tempdir().unwrap();
        let mut sorted = stamped.clone();
        sorted.sort_by_key(|(s, _)| *s);
        let mut text: Vec<u8> = Vec::new();
        for (i, (s, m)) in sorted.iter().enumerate() {
            text.extend_from_slice(pm2_line(*s, m).as_bytes());
            if i == sorted.len() / 2 {
                text.extend_from_slice(&daemon_bytes);
                text.push(b'\n');
            }
        }
        std::fs::write(d.path().join("pm2.log"), &text).unwrap();
        std::fs::write(d.path().join("web-error.log"), &err_bytes).unwrap();
        let since_ms = since.map(ms_of);
        let (lines, _rep) = collect(&LogSet {
            specs: vec![daemon(d.path()), app(d.path(), LogStream::Err, "web-error.log")],
            since_ms,
        });
        let mut prev = i64::MIN;
        for l in &lines {
            let t = l.at_ms.unwrap_or(i64::MIN);
            prop_assert!(t >= prev, "out of order");
            prev = t;
            if let Some(s) = since_ms {
                prop_assert!(l.at_ms.is_some_and(|t| t >= s));
            }
        }
    }
}
