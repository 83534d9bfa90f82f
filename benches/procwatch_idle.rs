//! Idle CPU of the process watcher with N quiet pm2-like apps (default 100).
//!
//!     cargo bench --bench procwatch_idle            # 10 s per mode
//!     PROCWATCH_BENCH_SECS=5 PROCWATCH_BENCH_APPS=200 cargo bench --bench procwatch_idle
//!
//! A stand-in daemon (sh) starts N `sleep` processes, each with the environment pm2 gives
//! an app (PM2_HOME, pm_id, name, restart_time), so the watcher tracks 1 + N processes.
//! The watcher runs in this process; its CPU is this process's user + system time
//! (`/proc/self/stat` utime + stime, and getrusage for finer resolution) over the
//! measuring window, after start-up (verification, first scan and snapshot) settled.
//! Whatever else the host does (forks elsewhere reach the netlink watcher and are
//! dropped) is part of the measurement, as it would be in production.
#![allow(dead_code)]

use pm2_trace::event::EventSink;
use pm2_trace::sources::procwatch::{no_redaction, sys, ProcWatcher, WatchConfig, WatchMode};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Measured {
    pub mode: String,
    pub apps: usize,
    pub secs: f64,
    /// Percent of one core, from getrusage.
    pub cpu_pct: f64,
    /// Percent of one core, from /proc/self/stat utime+stime (clock-tick resolution).
    pub cpu_pct_stat: f64,
    /// Percent of one core used by the watcher thread alone (/proc/self/task/<tid>/stat).
    pub cpu_pct_thread: f64,
    pub events: usize,
    pub tracked: usize,
}

fn self_stat_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let rest = &s[s.rfind(')').expect("stat comm") + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields 14 and 15 (utime, stime) are rest[11], rest[12]
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// utime + stime (ticks) of the watcher thread, found by its name.
fn watcher_thread_ticks() -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
    {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == "pm2-trace-procw" {
            let s = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            if let Some(i) = s.rfind(')') {
                let f: Vec<&str> = s[i + 1..].split_whitespace().collect();
                total += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

/// Start `apps` quiet app processes under a stand-in daemon, run a watcher in `mode`,
/// measure its CPU over `secs` seconds.
pub fn measure(mode: WatchMode, apps: usize, secs: f64) -> Measured {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let script = format!(
        "i=0; while [ $i -lt {apps} ]; do pm_id=$i name=app$i restart_time=0 unique_id=u$i PM2_HOME='{}' \
         sleep 100000 & i=$((i+1)); done; echo up; wait",
        home.display()
    );
    let mut daemon = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn sh");
    let pgid = daemon.id() as i32;
    {
        use std::io::BufRead;
        let mut line = String::new();
        let mut r = std::io::BufReader::new(daemon.stdout.take().unwrap());
        r.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "up");
    }
    let (sink, mut rx) = EventSink::channel(100_000);
    let mut cfg = WatchConfig::new(&home);
    cfg.daemon_pid = Some(pgid);
    cfg.mode = mode;
    let w = ProcWatcher::start(cfg, sink, no_redaction()).expect("watcher");
    let mode_name = w.mode().mode.name().to_string();
    // Let start-up settle (first scan, start snapshot), then drain its events.
    std::thread::sleep(Duration::from_millis(1000));
    let mut events = 0;
    let mut tracked = 0;
    while let Some(e) = rx.try_recv() {
        events += 1;
        if let pm2_trace::event::Event::Proc(p) = e.event {
            if matches!(*p, pm2_trace::event::ProcEvent::Tracked { .. }) {
                tracked += 1;
            }
        }
    }
    let c0 = sys::process_cpu_ns();
    let s0 = self_stat_ticks();
    let w0 = watcher_thread_ticks();
    let t0 = Instant::now();
    // Sleep in small steps, draining events as a recorder would.
    while t0.elapsed().as_secs_f64() < secs {
        std::thread::sleep(Duration::from_millis(250));
        while rx.try_recv().is_some() {
            events += 1;
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let c1 = sys::process_cpu_ns();
    let s1 = self_stat_ticks();
    let w1 = watcher_thread_ticks();
    w.stop();
    // SAFETY: kill the stand-in daemon's process group (it and its sleeps), which we created.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = daemon.wait();
    let tck = sys::clk_tck() as f64;
    Measured {
        mode: mode_name,
        apps,
        secs: wall,
        cpu_pct: (c1 - c0) as f64 / 1e9 / wall * 100.0,
        cpu_pct_stat: (s1 - s0) as f64 / tck / wall * 100.0,
        cpu_pct_thread: (w1 - w0) as f64 / tck / wall * 100.0,
        events,
        tracked,
    }
}

pub fn print(m: &Measured) {
    println!(
        "procwatch idle: mode {:<8} apps {:>4} tracked {:>4}  {:>5.1} s  CPU of the process {:.3}% of a core \
         (getrusage; {:.2}% from /proc/self/stat), of the watcher thread {:.2}%  (target < 1%)",
        m.mode, m.apps, m.tracked, m.secs, m.cpu_pct, m.cpu_pct_stat, m.cpu_pct_thread
    );
    println!(
        "| idle CPU of the process watcher ({}), {} quiet apps | < 1% of a core | {:.3}% | watcher thread {:.2}%, {:.0} s window |",
        m.mode, m.apps, m.cpu_pct, m.cpu_pct_thread, m.secs
    );
}

fn main() {
    let secs: f64 = std::env::var("PROCWATCH_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let apps: usize = std::env::var("PROCWATCH_BENCH_APPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    for mode in [WatchMode::Netlink, WatchMode::Pidfd] {
        let m = measure(mode, apps, secs);
        print(&m);
    }
}
