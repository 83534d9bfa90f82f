//! What the always-on recorder (`record --dir`) costs, against a real pm2 7.0.4 daemon:
//!
//! 1. idle: 50 quiet apps, nothing happening for 60 s: the recorder's CPU (recorder and
//!    guardian, from /proc) and its RSS;
//! 2. an hour of traffic in compressed time: 2,000 restarts (`restartProcessId` through the
//!    proxy, four clients at once) while a poller sends `getMonitorData` every 20 ms (3,600
//!    polls is an hour of a 1 s poller), with `--keep 16MB`: RSS sampled every 5 s, the
//!    directory's size sampled every 200 ms, and whether the recorder reports anything it
//!    could not record.
//!
//! Run: `cargo bench --bench always_on` (prints table rows; asserts nothing but that pm2
//! answered throughout). Timings depend on the machine's load: say what else ran.

#[path = "../tests/support/pm2.rs"]
mod pm2;

use serde_json::json;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the ')'.
    let get = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("segment-"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn start_recorder(home: &Path, dir: &Path, extra: &[&str]) -> Child {
    let err = std::fs::File::create(dir.with_extension("stderr")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pm2-trace"))
        .arg("record")
        .arg("--dir")
        .arg(dir)
        .arg("--pm2-home")
        .arg(home)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("start pm2-trace record --dir");
    let aside = home.join("rpc.sock.pm2-trace-daemon");
    let end = Instant::now() + Duration::from_secs(15);
    while !aside.exists() {
        assert!(Instant::now() < end, "recorder did not interpose");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

fn stop(mut child: Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

fn ecosystem(daemon: &pm2::Pm2, n: usize, name: &str) {
    let apps: Vec<_> = (0..n)
        .map(|i| {
            json!({
                "name": format!("{name}{i}"),
                "script": pm2::app_path("well-behaved.js"),
                "env": {"PORT": pm2::free_port().to_string()},
            })
        })
        .collect();
    let eco = daemon.home().join(format!("{name}.json"));
    std::fs::write(&eco, json!({ "apps": apps }).to_string()).unwrap();
    let out = daemon.cmd(&["start", eco.to_str().unwrap()]);
    assert!(out.status.success(), "pm2 start {name}.json");
}

fn idle() {
    let daemon = pm2::Pm2::start("7.0.4");
    ecosystem(&daemon, 50, "q");
    std::thread::sleep(Duration::from_secs(5));
    let dir = daemon.home().join("flight");
    let rec = start_recorder(daemon.home(), &dir, &[]);
    std::thread::sleep(Duration::from_secs(5));
    let pids = || {
        let mut v = vec![rec.id()];
        v.extend(children(rec.id()));
        v
    };
    let t0: u64 = pids().into_iter().map(cpu_ticks).sum();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(60));
    let t1: u64 = pids().into_iter().map(cpu_ticks).sum();
    let secs = start.elapsed().as_secs_f64();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (t1 - t0) as f64 / hz / secs * 100.0;
    let rss = rss_kib(rec.id()) as f64 / 1024.0;
    let disk = dir_bytes(&dir);
    stop(rec);
    assert!(daemon.cmd(&["ls"]).status.success());
    println!(
        "| always-on idle CPU, 50 quiet apps, 60 s (recorder + guardian) | < 0.2% of a core | {cpu:.3}% | {} ticks at {hz} Hz |",
        t1 - t0
    );
    println!("| always-on RSS, 50 quiet apps | < 40 MB | {rss:.1} MB | VmRSS after 65 s |");
    println!(
        "| always-on disk, 50 quiet apps, 65 s | | {} KiB | segments written |",
        disk / 1024
    );
}

fn compressed_hour() {
    let daemon = pm2::Pm2::start("7.0.4");
    ecosystem(&daemon, 8, "r");
    std::thread::sleep(Duration::from_secs(3));
    let dir = daemon.home().join("flight");
    let keep: u64 = 16 << 20;
    let rec = start_recorder(daemon.home(), &dir, &["--keep", "16MB"]);
    let rec_pid = rec.id();
    std::thread::sleep(Duration::from_secs(2));
    let done = AtomicBool::new(false);
    let sock = daemon.rpc_sock();
    let started = Instant::now();
    let (restarts, polls, max_dir, rss) = std::thread::scope(|s| {
        let poller = s.spawn(|| {
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                pm2::rpc_call(
                    &sock,
                    "getMonitorData",
                    json!([{}]),
                    Duration::from_secs(30),
                )
                .expect("getMonitorData through the proxy");
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        });
        let watcher = s.spawn(|| {
            let (mut max_dir, mut rss) = (0u64, Vec::new());
            let mut last_rss = Instant::now() - Duration::from_secs(10);
            while !done.load(Ordering::Relaxed) {
                max_dir = max_dir.max(dir_bytes(&dir));
                if last_rss.elapsed() >= Duration::from_secs(5) {
                    rss.push(rss_kib(rec_pid));
                    last_rss = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (max_dir, rss)
        });
        let restarters: Vec<_> = (0..4)
            .map(|k| {
                let sock = &sock;
                s.spawn(move || {
                    for i in 0..500 {
                        let id = (k * 2 + i % 2) as u64;
                        pm2::rpc_call(
                            sock,
                            "restartProcessId",
                            json!([{"id": id}]),
                            Duration::from_secs(30),
                        )
                        .expect("restartProcessId through the proxy");
                    }
                    500u64
                })
            })
            .collect();
        let restarts: u64 = restarters.into_iter().map(|h| h.join().unwrap()).sum();
        done.store(true, Ordering::Relaxed);
        let polls = poller.join().unwrap();
        let (max_dir, rss) = watcher.join().unwrap();
        (restarts, polls, max_dir, rss)
    });
    let secs = started.elapsed().as_secs_f64();
    let segments = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("segment-"))
        .count();
    stop(rec);
    let err = std::fs::read_to_string(dir.with_extension("stderr")).unwrap_or_default();
    let lost = err
        .lines()
        .find(|l| l.contains("not recorded"))
        .unwrap_or("none reported")
        .to_owned();
    assert!(daemon.cmd(&["ls"]).status.success());
    let rss_mb: Vec<String> = rss
        .iter()
        .map(|k| format!("{:.1}", *k as f64 / 1024.0))
        .collect();
    println!(
        "| compressed hour: {restarts} restarts + {polls} getMonitorData polls in {secs:.0} s | RSS flat | RSS MB every 5 s: {} | |",
        rss_mb.join(" ")
    );
    println!(
        "| compressed hour: largest directory (--keep 16MB, segments of 1 MiB) | <= keep + 1 segment | {:.2} MB | {segments} segments at the end; bound {:.2} MB |",
        max_dir as f64 / 1048576.0,
        (keep + (1 << 20)) as f64 / 1048576.0
    );
    println!(
        "| compressed hour: events the recorder could not record | 0 | {lost} | from its summary |"
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let which = std::env::var("ALWAYS_ON").unwrap_or_default();
    if which.is_empty() || which == "idle" {
        idle();
    }
    if which.is_empty() || which == "hour" {
        compressed_hour();
    }
}
