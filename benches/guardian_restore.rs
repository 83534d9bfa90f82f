//! How long pm2 goes without its daemon socket when the recorder is SIGKILLed: from the
//! SIGKILL to the daemon's socket being back under `rpc.sock` (restored by the guardian),
//! against a real pm2 7.0.4 daemon, 20 times.
//!
//! Run: `cargo bench --bench guardian_restore` (prints a table row; asserts nothing).

#[path = "../tests/support/pm2.rs"]
mod pm2;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let daemon = pm2::Pm2::start("7.0.4");
    let aside = daemon.home().join("rpc.sock.pm2-trace-daemon");
    let mut times = Vec::new();
    for i in 0..20 {
        let mut rec = Command::new(env!("CARGO_BIN_EXE_pm2-trace"))
            .args([
                "record",
                "--quiet",
                "--force",
                "--proc",
                "off",
                "--pm2-home",
            ])
            .arg(daemon.home())
            .arg("-o")
            .arg(daemon.home().join(format!("g{i}.bin")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while !aside.exists() {
            assert!(Instant::now() < end, "recorder did not interpose");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        let _ = rec.kill();
        while aside.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "socket not restored"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        let _ = rec.wait();
        // Let the guardian finish relaying and exit before the next round.
        std::thread::sleep(Duration::from_millis(600));
    }
    assert!(daemon.cmd(&["ls"]).status.success());
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "| daemon socket restored after SIGKILL of the recorder (guardian) | < 1 s | median {:.2} ms, max {:.2} ms | {} runs, real pm2 7.0.4; {} God daemon(s) after |",
        times[times.len() / 2],
        times[times.len() - 1],
        times.len(),
        daemon.god_daemons_for_home().len()
    );
}
