//! How soon an exit reaches the timeline after the kernel's event: the netlink watcher
//! tracks this benchmark's own children (it plays the daemon); 300 short children exit while
//! snapshots are requested every 20 ms (the recorder's heaviest work on the watcher thread).
//! Each exit carries the kernel's timestamp and the instant the watcher read it.
//!
//! Run: `cargo bench --bench exit_latency` (prints a table row; asserts nothing).

use pm2_trace::event::proc::SnapshotReason;
use pm2_trace::event::proc::{ProcEvent, Timing};
use pm2_trace::event::{Event, EventSink};
use pm2_trace::sources::procwatch::{no_redaction, ProcWatcher, WatchConfig, WatchMode};
use std::time::{Duration, Instant};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mut cfg = WatchConfig::new(home.path());
    cfg.mode = WatchMode::Netlink;
    cfg.daemon_pid = Some(std::process::id() as i32);
    let (sink, mut rx) = EventSink::channel(1 << 16);
    let w = ProcWatcher::start(cfg, sink, no_redaction())
        .expect("the netlink watcher needs root or CAP_NET_ADMIN");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let snapper = {
        let (h, stop) = (w.handle(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                h.request_snapshot(SnapshotReason::RestartRequested { pm_id: None });
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // A few long-lived children, so snapshots have something to read.
    let mut sleepers: Vec<_> = (0..20)
        .map(|_| {
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    for _ in 0..300 {
        let _ = std::process::Command::new("true").status();
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = snapper.join();
    for s in sleepers.iter_mut() {
        let _ = s.kill();
        let _ = s.wait();
    }
    w.stop();
    let mut delays = Vec::new();
    let mut snapshots = 0;
    while let Some(ev) = rx.try_recv() {
        let Event::Proc(p) = ev.event else { continue };
        match *p {
            ProcEvent::Exit {
                timing:
                    Timing::Kernel {
                        kernel_ns,
                        observed_ns,
                    },
                ..
            } => delays.push(observed_ns.saturating_sub(kernel_ns) as f64 / 1e3),
            ProcEvent::Snapshot(_) => snapshots += 1,
            _ => {}
        }
    }
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = delays.len().max(1);
    let p = |q: usize| {
        delays
            .get((n * q / 100).min(n - 1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let under = delays.iter().filter(|d| **d < 1000.0).count() as f64 / n as f64 * 100.0;
    eprintln!(
        "{} exits, {snapshots} snapshots in {:.1} s",
        delays.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "| exit read by the watcher after the kernel's event (placed at the kernel's timestamp) | < 1 ms | median {:.0} µs, p99 {:.0} µs, {under:.1}% under 1 ms | {} exits during {snapshots} snapshots |",
        p(50),
        p(99),
        delays.len()
    );
}
