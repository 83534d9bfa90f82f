//! Smoke test of the real-PM2 harness (tests/support/pm2.rs): for each pinned pm2
//! version, start a daemon in a throw-away home, start tests/apps/well-behaved.js,
//! restart it, check it is online with a new pid, then drop the harness and check
//! that no God daemon and no process of that PM2_HOME is left.
#[path = "support/pm2.rs"]
mod pm2;

use std::time::{Duration, Instant};

fn smoke(version: &str) {
    let pm2 = pm2::Pm2::start(version);
    let home = pm2.home().to_path_buf();
    assert!(
        home.join("rpc.sock").as_os_str().len() < 108,
        "socket path too long: {}",
        home.display()
    );
    let daemons = pm2.god_daemons_for_home();
    assert_eq!(
        daemons.len(),
        1,
        "exactly one God daemon for {}: {daemons:?}",
        home.display()
    );
    assert_eq!(
        Some(daemons[0]),
        pm2.daemon_pid(),
        "pm2.pid names the God daemon"
    );
    if let Some(reaper) = pm2.reaper_pid() {
        assert_eq!(
            pm2::ppid(daemons[0]),
            Some(reaper),
            "the daemon is reparented to the harness's subreaper"
        );
    }

    let port = pm2::free_port();
    pm2.start_app("web", "well-behaved.js", port, &[]);
    let before = pm2
        .wait_for_status("web", "online", Duration::from_secs(10))
        .unwrap();
    let pid0 = before["pid"].as_i64().unwrap();
    assert!(pid0 > 0);
    assert_eq!(before["pm2_env"]["restart_time"], 0);
    // the app serves on the port it was given
    let t = Instant::now();
    while !pm2::port_open(port) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "well-behaved never listened on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // the app carries this home in its environment (that is how Drop finds it)
    assert!(
        pm2.processes().contains(&(pid0 as i32)),
        "app pid {pid0} has PM2_HOME of this home"
    );

    let out = pm2.cmd(&["restart", "web"]);
    pm2::assert_ok(&out, &["restart", "web"]);
    let after = pm2
        .wait_for_status("web", "online", Duration::from_secs(10))
        .unwrap();
    let pid1 = after["pid"].as_i64().unwrap();
    assert_ne!(pid0, pid1, "restart gave a new pid");
    assert_eq!(after["pm2_env"]["restart_time"], 1);
    // and the CLI view agrees with the socket view
    let jl = pm2.jlist();
    let web = jl
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "web")
        .unwrap();
    assert_eq!(web["pm2_env"]["status"], "online");
    assert_eq!(web["pid"].as_i64(), Some(pid1));
    let log = pm2.log();
    assert!(log.contains("Stopping app:web id:0"), "pm2.log:\n{log}");
    assert!(log.contains("App [web:0] online"), "pm2.log:\n{log}");

    drop(pm2);
    assert!(
        pm2::god_daemons_for_home(&home).is_empty(),
        "God daemon of {} still running",
        home.display()
    );
    let left = pm2::processes_with_home(&home);
    assert!(
        left.is_empty(),
        "processes with PM2_HOME={} left: {left:?}",
        home.display()
    );
    assert!(!pm2::pid_alive(pid1 as i32), "app pid {pid1} still alive");
    assert!(!home.exists(), "temp home {} not removed", home.display());
}

#[test]
fn pm2_5_4_3_restart_well_behaved() {
    smoke("5.4.3");
}

#[test]
fn pm2_7_0_4_restart_well_behaved() {
    smoke("7.0.4");
}

/// The Drop clean-up also catches a server that escaped pm2's process tree by a
/// double fork (it is reparented away from the daemon and outside the tree pm2 would
/// kill), and does so without waiting for its drain.
#[test]
fn drop_kills_double_forked_server() {
    let pm2 = pm2::Pm2::start("7.0.4");
    let home = pm2.home().to_path_buf();
    let port = pm2::free_port();
    pm2.start_app("web", "double-fork-server.js", port, &[]);
    pm2.wait_for_status("web", "online", Duration::from_secs(10))
        .unwrap();
    let t = Instant::now();
    while !pm2::port_open(port) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "server never listened on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    drop(pm2);
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "drop took {:?}",
        t.elapsed()
    );
    assert!(pm2::processes_of_home(&home).is_empty());
    assert!(
        !pm2::port_open(port),
        "double-forked server still holds {port}"
    );
}

/// Drop also runs when a test panics: the daemon and the app of that home go away.
#[test]
fn drop_cleans_up_after_a_panicking_test() {
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::panic::catch_unwind(move || {
        let pm2 = pm2::Pm2::start("7.0.4");
        pm2.start_app("web", "well-behaved.js", pm2::free_port(), &[]);
        let app = pm2
            .wait_for_status("web", "online", Duration::from_secs(10))
            .unwrap();
        tx.send((
            pm2.home().to_path_buf(),
            app["pid"].as_i64().unwrap() as i32,
        ))
        .unwrap();
        panic!("deliberate panic with a live daemon");
    });
    assert!(r.is_err());
    let (home, app_pid) = rx.recv().unwrap();
    assert!(pm2::god_daemons_for_home(&home).is_empty());
    assert!(pm2::processes_with_home(&home).is_empty());
    assert!(!pm2::pid_alive(app_pid));
    assert!(!home.exists());
}

/// A command that would hang is killed at its timeout.
#[test]
fn run_with_timeout_kills_a_hanging_command() {
    let t = Instant::now();
    let out = pm2::run_with_timeout(
        std::process::Command::new("sh").args(["-c", "sleep 30 & sleep 30"]),
        Duration::from_millis(300),
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TIMEOUT"));
}
