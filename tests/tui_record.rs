//! `pm2-trace record --tui` against a real daemon (pm2 7.0.4), in a real terminal (tmux):
//! events show up while a restart happens, and q stops the recording cleanly (the daemon's
//! socket is given back, the capture is complete and replays).

#[path = "support/pm2.rs"]
mod pm2;
#[path = "support/recorder.rs"]
mod recorder;
#[path = "tui_support/tmux.rs"]
mod tmux;

use pm2::Pm2;
use std::path::Path;
use std::time::{Duration, Instant};
use tmux::Tmux;

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// The number in the status line's `N events`.
fn events_shown(screen: &str) -> Option<u64> {
    let line = screen.lines().rev().find(|l| l.contains(" events"))?;
    let before = line.split(" events").next()?;
    before.rsplit(' ').next()?.parse().ok()
}

#[test]
fn record_tui_shows_a_restart_live_and_q_stops_cleanly() {
    let pm2 = Pm2::start("7.0.4");
    pm2.start_app("web", "well-behaved.js", pm2::free_port(), &[]);
    pm2.wait_for_status("web", "online", Duration::from_secs(15))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let cap = pm2.home().join("live.bin");
    let err = pm2.home().join("live.stderr");
    let status = pm2.home().join("live.status");
    let cmd = format!(
        "env -u PM2_HOME NO_COLOR=1 {} record --pm2-home {} -o {} --force --tui 2>{}; echo $? > {}; sleep 60",
        q(&recorder::bin()),
        q(pm2.home()),
        q(&cap),
        q(&err),
        q(&status)
    );
    let t = Tmux::start(&cmd, 120, 40);
    let s = t.wait_for("the recording to start", Duration::from_secs(15), |s| {
        s.contains("● REC") && s.contains("subscribed to the event bus")
    });
    assert!(
        recorder::aside(pm2.home()).exists(),
        "the proxy is in place while the TUI records: {s}"
    );
    let before = events_shown(&s).expect("event count in the status line");

    // A restart while the view is up: its events arrive.
    pm2.cmd_ok(&["restart", "web"]);
    pm2.wait_for_status("web", "online", Duration::from_secs(15))
        .unwrap();
    let s = t.wait_for("the restart's events", Duration::from_secs(10), |s| {
        s.contains("getMonitorData") && events_shown(s).is_some_and(|n| n > before + 10)
    });
    assert!(s.contains("pm2 requests"), "{s}");
    // The restart is on the timeline and can be found and opened while recording.
    t.keys(&["/"]);
    t.type_text("restartProcessId web:0");
    t.keys(&["Enter"]);
    let s = t.wait_for(
        "the restart in the event list",
        Duration::from_secs(5),
        |s| s.contains("restartProcessId web:0 -> new pid"),
    );
    assert!(s.contains("● REC"), "still recording: {s}");
    assert!(
        s.contains("web:0 #1"),
        "the new generation has its lane: {s}"
    );

    // q: stop the recording, give the socket back, finish the capture, leave the TUI.
    t.keys(&["q"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !status.exists() {
        assert!(
            Instant::now() < deadline,
            "record --tui did not end after q: {}",
            t.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let code = std::fs::read_to_string(&status).unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert_eq!(code.trim(), "0", "exit status; stderr: {stderr}");
    assert!(
        stderr.contains("q pressed in the TUI") && stderr.contains("daemon socket:"),
        "the summary is printed once the terminal is back: {stderr}"
    );
    assert!(
        !recorder::aside(pm2.home()).exists(),
        "rpc.sock.pm2-trace-daemon left behind"
    );
    let out = pm2.cmd(&["ls"]);
    assert!(out.status.success(), "pm2 works after the recording");
    assert_eq!(pm2.status("web").as_deref(), Some("online"));
    let replayed = recorder::replay_text(&cap);
    assert!(
        replayed.contains("restartProcessId web:0 -> new pid"),
        "the capture replays with the restart: {replayed}"
    );
    let s = t.screen();
    assert!(!s.contains("● REC"), "the TUI is gone: {s}");
}

/// The pid of our `pm2-trace record` writing to `cap` (found through /proc).
fn recorder_pid(cap: &Path) -> Option<i32> {
    let want = cap.display().to_string();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "record")
            && args.iter().any(|a| a == &want)
            && args.iter().any(|a| a == "--tui")
        {
            return Some(pid);
        }
    }
    None
}

#[test]
fn sigterm_ends_record_tui_with_the_terminal_and_socket_restored() {
    let pm2 = Pm2::start("7.0.4");
    pm2.start_app("web", "well-behaved.js", pm2::free_port(), &[]);
    pm2.wait_for_status("web", "online", Duration::from_secs(15))
        .unwrap();
    let cap = pm2.home().join("term.bin");
    let status = pm2.home().join("term.status");
    let stty = pm2.home().join("term.stty");
    let cmd = format!(
        "env -u PM2_HOME {} record --pm2-home {} -o {} --force --tui 2>/dev/null; echo $? > {}; stty -a > {}; sleep 60",
        q(&recorder::bin()),
        q(pm2.home()),
        q(&cap),
        q(&status),
        q(&stty)
    );
    let t = Tmux::start(&cmd, 100, 30);
    t.wait_for("the recording to start", Duration::from_secs(15), |s| {
        s.contains("● REC")
    });
    let pid = recorder_pid(&cap).expect("the recorder's pid");
    // SAFETY: a signal to the recorder this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&stty)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "record --tui did not end on SIGTERM: {}",
            t.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_to_string(&status).unwrap().trim(), "0");
    let modes = std::fs::read_to_string(&stty).unwrap();
    let words: Vec<&str> = modes.split_whitespace().collect();
    for m in ["icanon", "echo", "isig"] {
        assert!(words.contains(&m), "terminal mode {m} restored: {modes}");
    }
    assert!(!recorder::aside(pm2.home()).exists(), "socket restored");
    assert!(pm2.cmd(&["ls"]).status.success());
    recorder::replay_text(&cap);
}
