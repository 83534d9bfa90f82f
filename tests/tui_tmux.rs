//! The real binary in a real terminal (tmux): open a capture, navigate to its finding and
//! into an event's details, and quit with the terminal given back.

#[path = "tui_support/tmux.rs"]
mod tmux;

use std::path::PathBuf;
use std::time::Duration;
use tmux::Tmux;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pm2-trace"))
}

/// The capture the end-to-end test explores: a shipped one (slow-drain-child restarted on
/// pm2 5.4.3: its old child keeps the port, the new generations crash-loop into errored).
fn capture() -> PathBuf {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("captures/drain-child-restart-5.4.3.bin");
    assert!(
        p.exists(),
        "{} is missing (shipped with the repository)",
        p.display()
    );
    p
}

/// The pid of the `pm2-trace tui` this file's tests run on [`capture`].
fn viewer_pid() -> u32 {
    let want = [
        bin().into_os_string().into_encoded_bytes(),
        b"tui".to_vec(),
        capture().into_os_string().into_encoded_bytes(),
    ];
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|&b| b == 0)
                    .take(3)
                    .map(<[u8]>::to_vec)
                    .eq(want.iter().cloned())
            })
        })
        .expect("the pm2-trace tui process")
}

fn shell_quote(p: &std::path::Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

#[test]
fn navigate_to_a_finding_in_a_real_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("exit-status");
    let cmd = format!(
        "NO_COLOR=1 {} tui {}; echo $? > {}; sleep 30",
        shell_quote(&bin()),
        shell_quote(&capture()),
        shell_quote(&done)
    );
    let t = Tmux::start(&cmd, 120, 40);
    let s = t.wait_for("the capture to load", Duration::from_secs(20), |s| {
        s.contains("events ·") && !s.contains("reading ")
    });
    assert!(s.contains("Timeline"), "{s}");
    assert!(s.contains("web:0 #1"), "a lane per generation: {s}");
    // The viewer faults its memory in 4 KiB pages (src/alloc.rs): huge pages are off for it.
    let status = std::fs::read_to_string(format!("/proc/{}/status", viewer_pid())).unwrap();
    assert!(status.contains("THP_enabled:\t0"), "{status}");

    assert!(s.contains("Findings 1/3"), "three findings listed: {s}");
    assert!(s.contains("address-held-by-previous-generation"), "{s}");

    // n: the first finding; the timeline jumps to its evidence (◆ on the scale and lanes).
    t.keys(&["n"]);
    let s = t.wait_for("a finding to be selected", Duration::from_secs(5), |s| {
        s.lines().nth(1).is_some_and(|scale| scale.contains('◆'))
    });
    assert!(
        s.contains("◆ +"),
        "evidence rows are marked in the event list: {s}"
    );
    // n again: the crash loop; then its details in the detail pane.
    t.keys(&["n"]);
    t.wait_for("the second finding", Duration::from_secs(5), |s| {
        s.contains("Findings 2/3")
    });
    // Events → Detail → Findings, then Enter.
    t.keys(&["Tab", "Tab", "Enter"]);
    let s = t.wait_for("the finding's details", Duration::from_secs(5), |s| {
        s.contains("Detail · finding") && s.contains("ERROR  crash-loop-errored")
    });
    assert!(s.contains("16 starts in a row"), "{s}");
    assert!(s.contains("Why"), "{s}");

    // Search for the restart and open its details: the decoded request.
    t.keys(&["Escape", "/"]);
    t.type_text("restartProcessId web:0");
    t.keys(&["Enter", "Enter"]);
    let s = t.wait_for("the restart's details", Duration::from_secs(5), |s| {
        s.contains("\"method\": \"restartProcessId\"")
    });
    assert!(s.contains("▾ request (conn"), "{s}");

    // The help overlay, then quit: the shell sees the exit status.
    t.keys(&["?"]);
    t.wait_for("the help overlay", Duration::from_secs(5), |s| {
        s.contains("Keys (")
    });
    t.keys(&["Escape", "q"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "pm2-trace tui did not exit on q: {}",
            t.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let status = std::fs::read_to_string(&done).unwrap();
    assert_eq!(status.trim(), "0", "exit status");
    // The terminal is back to the shell: no alternate screen left, no TUI on it.
    let s = t.screen();
    assert!(!s.contains("Timeline"), "the TUI is gone after q: {s}");
}

#[test]
fn a_file_that_is_no_capture_fails_before_touching_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("not-a-capture.bin");
    std::fs::write(&bad, b"hello, not pcapng").unwrap();
    let out = std::process::Command::new(bin())
        .arg("tui")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a pcapng capture"), "{err}");
    assert!(out.stdout.is_empty(), "nothing drawn: {:?}", out.stdout);
}

#[test]
fn no_terminal_is_a_clear_error() {
    let out = std::process::Command::new(bin())
        .arg("tui")
        .arg(capture())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a terminal"), "{err}");
}

#[test]
fn the_terminal_is_restored_after_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("stderr");
    let stty = dir.path().join("stty");
    let cmd = format!(
        "PM2_TRACE_TEST_PANIC=1 {} tui {} 2>{}; echo \"exit=$?\" > {}.status; stty -a > {}; sleep 30",
        shell_quote(&bin()),
        shell_quote(&capture()),
        shell_quote(&err),
        shell_quote(&stty),
        shell_quote(&stty)
    );
    let t = Tmux::start(&cmd, 100, 30);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !stty.exists()
        || std::fs::read_to_string(&stty)
            .unwrap_or_default()
            .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after the panic: {}",
            t.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let status = std::fs::read_to_string(format!("{}.status", stty.display())).unwrap();
    assert_eq!(status.trim(), "exit=101", "a panic exits with 101");
    let e = std::fs::read_to_string(&err).unwrap();
    assert!(
        e.contains("test panic"),
        "the panic message is printed: {e}"
    );
    let modes = std::fs::read_to_string(&stty).unwrap();
    let words: Vec<&str> = modes.split_whitespace().collect();
    for m in ["icanon", "echo", "isig", "opost"] {
        assert!(words.contains(&m), "terminal mode {m} restored: {modes}");
    }
    let s = t.screen();
    assert!(!s.contains("Timeline"), "the alternate screen is left: {s}");
}

/// SGR parameter lists in `s` (the part between `ESC [` and `m`).
fn sgr_params(s: &str) -> Vec<String> {
    s.split("\x1b[")
        .skip(1)
        .filter_map(|p| p.split_once('m').map(|(a, _)| a.to_owned()))
        .collect()
}

fn has_colour(params: &[String]) -> bool {
    params.iter().any(|p| {
        p.split(';').any(|n| {
            n.parse::<u32>().is_ok_and(|n| {
                (30..=38).contains(&n) || (40..=48).contains(&n) || (90..=107).contains(&n)
            })
        })
    })
}

#[test]
fn no_color_is_honoured() {
    for (env, want_colour) in [("NO_COLOR=1", false), ("", true)] {
        let cmd = format!(
            "env -u NO_COLOR {env} {} tui {}; sleep 30",
            shell_quote(&bin()),
            shell_quote(&capture())
        );
        let t = Tmux::start(&cmd, 120, 40);
        t.wait_for("the capture to load", Duration::from_secs(20), |s| {
            s.contains("events ·") && !s.contains("reading ")
        });
        let params = sgr_params(&t.screen_escaped());
        assert_eq!(
            has_colour(&params),
            want_colour,
            "{env}: colours {params:?}"
        );
        t.keys(&["q"]);
    }
}
