//! Makes the captures the TUI snapshot tests read (`tests/tui_captures/`), from real
//! daemons. Not part of the normal run (they are committed); regenerate with
//! `cargo test --test tui_fixtures -- --ignored --test-threads 1`.

#[path = "support/pm2.rs"]
mod pm2;
#[path = "support/recorder.rs"]
mod recorder;

use pm2::Pm2;
use recorder::Recorder;
use std::path::PathBuf;
use std::time::Duration;

fn out_dir() -> PathBuf {
    let d = pm2::repo_root().join("tests/tui_captures");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// slow-drain-child on 5.4.3: `pm2 restart web` ends errored (EADDRINUSE crash loop).
#[test]
#[ignore = "regenerates committed fixtures"]
fn make_crash_loop_543() {
    let pm2 = Pm2::start("5.4.3");
    let port = pm2::free_port();
    pm2.start_app_env(
        "web",
        "slow-drain-child.js",
        port,
        &[("DRAIN_MS", "12000")],
        &[],
    );
    pm2.wait_for_status("web", "online", Duration::from_secs(15))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let tmp = pm2.home().join("crash-loop.bin");
    let rec = Recorder::start(pm2.home(), &tmp, &["--quiet"]);
    pm2.cmd(&["restart", "web"]);
    pm2.wait_for_status("web", "errored", Duration::from_secs(30))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(rec.stop().success());
    std::fs::copy(&tmp, out_dir().join("crash-loop-5.4.3.bin")).unwrap();
}

/// well-behaved on 7.0.4: a clean restart.
#[test]
#[ignore = "regenerates committed fixtures"]
fn make_restart_704() {
    let pm2 = Pm2::start("7.0.4");
    pm2.start_app("web", "well-behaved.js", pm2::free_port(), &[]);
    pm2.wait_for_status("web", "online", Duration::from_secs(15))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let tmp = pm2.home().join("restart.bin");
    let rec = Recorder::start(pm2.home(), &tmp, &["--quiet"]);
    pm2.cmd_ok(&["restart", "web"]);
    pm2.wait_for_status("web", "online", Duration::from_secs(15))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(rec.stop().success());
    std::fs::copy(&tmp, out_dir().join("restart-7.0.4.bin")).unwrap();
}
