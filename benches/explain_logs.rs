//! `explain` over a large PM2_HOME: a pm2.log of PM2_TRACE_BENCH_MB (default 1024) MB, half
//! of it in pm2-logrotate copies (one gzip-compressed), plus each app's out and error logs
//! (stamped with `--time`) of a quarter of that size together. The release binary reads the
//! whole window (`--since` reaching before the first line) with no daemon running; we print
//! seconds and the process's peak memory (ru_maxrss), and a second run with a one-hour
//! window (the binary search skips the rest).
//!
//! Run: `cargo bench --bench explain_logs`. Files go to a temporary directory under
//! PM2_TRACE_BENCH_DIR (default /tmp), removed afterwards.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

#[path = "support/child.rs"]
mod child;
use child::run;

/// pm2's default stamp (`YYYY-MM-DDTHH:mm:ss`, local time) of second `t`.
fn stamp(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// The lines a crash-looping app leaves in pm2.log, repeated; returns bytes written.
fn write_daemon_log(w: &mut impl Write, start: i64, bytes: u64, apps: usize) -> (u64, i64) {
    let mut n = 0u64;
    let mut t = start;
    let mut i = 0u64;
    while n < bytes {
        let stamp = stamp(t);
        let app = i as usize % apps;
        let lines = [
            format!("{stamp}: PM2 log: App [app{app}:{app}] starting in -fork mode-\n"),
            format!("{stamp}: PM2 log: App [app{app}:{app}] online\n"),
            format!("{stamp}: PM2 log: Stopping app:app{app} id:{app}\n"),
            format!(
                "{stamp}: PM2 log: pid={} msg=failed to kill - retrying in 100ms\n",
                1000 + i
            ),
            format!(
                "{stamp}: PM2 log: App [app{app}:{app}] exited with code [1] via signal [SIGINT]\n"
            ),
            format!(
                "{stamp}: PM2 log: pid={} msg=process tree killed (1 pids)\n",
                1000 + i
            ),
        ];
        for l in &lines {
            w.write_all(l.as_bytes()).unwrap();
            n += l.len() as u64;
        }
        i += 1;
        if i % 4 == 0 {
            t += 1;
        }
    }
    (n, t)
}

fn write_app_log(path: &Path, start: i64, bytes: u64) {
    let mut w = BufWriter::new(std::fs::File::create(path).unwrap());
    let mut n = 0u64;
    let mut t = start;
    let mut i = 0u64;
    while n < bytes {
        let stamp = stamp(t);
        let l = format!("{stamp}: request {i} handled in 3 ms\n");
        w.write_all(l.as_bytes()).unwrap();
        n += l.len() as u64;
        i += 1;
        if i % 20 == 0 {
            t += 1;
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mb: u64 = std::env::var("PM2_TRACE_BENCH_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let base = std::env::var("PM2_TRACE_BENCH_DIR").unwrap_or_else(|_| "/tmp".into());
    let dir = tempfile::Builder::new()
        .prefix("p2t-explain-bench-")
        .tempdir_in(base)
        .unwrap();
    let home = dir.path().join(".pm2");
    std::fs::create_dir_all(home.join("logs")).unwrap();
    let total = mb << 20;
    let apps = 4;
    let start = chrono::Utc::now().timestamp() - 30 * 86400;
    let t_gen = Instant::now();
    // pm2.log: 3/4 of the total, in three parts: a gzip copy, a plain copy, the live file.
    let part = total * 3 / 4 / 3;
    let gz_path = home.join("pm2__2026-01-01_00-00-00.log.gz");
    let mut gz = flate2::write::GzEncoder::new(
        BufWriter::new(std::fs::File::create(&gz_path).unwrap()),
        flate2::Compression::fast(),
    );
    let (_, t1) = write_daemon_log(&mut gz, start, part, apps);
    gz.finish().unwrap().flush().unwrap();
    let mut plain =
        BufWriter::new(std::fs::File::create(home.join("pm2__2026-01-02_00-00-00.log")).unwrap());
    let (_, t2) = write_daemon_log(&mut plain, t1, part, apps);
    plain.flush().unwrap();
    let mut live = BufWriter::new(std::fs::File::create(home.join("pm2.log")).unwrap());
    let (_, t3) = write_daemon_log(&mut live, t2, part, apps);
    live.flush().unwrap();
    drop(live);
    let mtime = |p: &Path, s: i64| {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s as u64))
            .unwrap()
    };
    mtime(&gz_path, t1);
    mtime(&home.join("pm2__2026-01-02_00-00-00.log"), t2);
    // App logs: 1/4 of the total, stamped (`--time`), spread over the same span.
    for a in 0..apps {
        for kind in ["out", "error"] {
            write_app_log(
                &home.join("logs").join(format!("app{a}-{kind}.log")),
                start,
                total / 4 / (apps as u64 * 2),
            );
        }
    }
    let on_disk: u64 = walk(&home);
    eprintln!(
        "generated {} MB of logs ({} MB on disk) in {:.1} s; span {} h",
        mb,
        on_disk >> 20,
        t_gen.elapsed().as_secs_f64(),
        (t3 - start) / 3600
    );
    let home_s = home.to_str().unwrap();
    let since_all = format!("{}h", (chrono::Utc::now().timestamp() - start) / 3600 + 24);
    let (secs, rss, st) = run(&[
        "explain",
        "--pm2-home",
        home_s,
        "--since",
        &since_all,
        "--json",
    ]);
    assert_eq!(st, 0, "explain exited with status {st}");
    let since_hour = format!("{}h", (chrono::Utc::now().timestamp() - t3) / 3600 + 1);
    let (secs_w, rss_w, st_w) = run(&["explain", "--pm2-home", home_s, "--since", &since_hour]);
    assert_eq!(st_w, 0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("| figure | target | measured | reference |");
    println!(
        "| explain over {mb} MB of logs (pm2.log 3/4 incl. gzip + rotated, app logs 1/4), whole window | seconds and peak memory | {secs:.1} s ({:.0} MB/s), peak {} MB | load average {} |",
        mb as f64 / secs,
        rss / 1024,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "| explain, same files, last hour of the log only | reads only the window | {secs_w:.2} s, peak {} MB | binary search over the plain files |",
        rss_w / 1024
    );
}

fn walk(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let m = e.metadata().unwrap();
                    if m.is_dir() {
                        walk(&e.path())
                    } else {
                        m.len()
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
