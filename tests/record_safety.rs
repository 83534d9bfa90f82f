//! The recorder never breaks the pm2 it observes: real daemons, real signals.

#[path = "support/pm2.rs"]
mod pm2;
#[path = "support/recorder.rs"]
mod recorder;

use pm2::Pm2;
use recorder::Recorder;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

fn sigkill_leaves_working_pm2(version: &str) {
    let pm2 = Pm2::start(version);
    let port = pm2::free_port();
    pm2.start_app("web", "well-behaved.js", port, &[]);
    pm2.wait_for_status("web", "online", Duration::from_secs(15))
        .unwrap();
    let cap = pm2.home().join("cap.bin");
    let rec = Recorder::start(pm2.home(), &cap, &["--quiet"]);
    pm2.cmd_ok(&["restart", "web"]);
    let killed = std::time::Instant::now();
    rec.signal(libc::SIGKILL);
    let mut rec = rec;
    rec.wait(Duration::from_secs(5));
    // The guardian gives the daemon its name back (how fast: benches/guardian_restore; this
    // test only bounds it generously, so that a slow CI machine does not fail it).
    let deadline = killed + Duration::from_secs(10);
    while recorder::aside(pm2.home()).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        !recorder::aside(pm2.home()).exists(),
        "daemon socket not restored"
    );
    eprintln!(
        "daemon socket restored {:?} after SIGKILL",
        killed.elapsed()
    );
    let out = pm2.cmd(&["ls"]);
    assert!(
        out.status.success(),
        "pm2 ls failed after SIGKILL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        pm2.god_daemons_for_home().len(),
        1,
        "exactly one God daemon for this home"
    );
    pm2.wait_for_status("web", "online", Duration::from_secs(15))
        .unwrap();
    // The capture is readable up to its last whole record.
    let replay = recorder::run(&["replay", cap.to_str().unwrap()]);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
}

#[test]
fn sigkill_leaves_working_pm2_7() {
    sigkill_leaves_working_pm2("7.0.4");
}

#[test]
fn sigkill_leaves_working_pm2_5() {
    sigkill_leaves_working_pm2("5.4.3");
}

#[test]
fn proxy_socket_has_daemon_sockets_owner_group_and_mode() {
    let pm2 = Pm2::start("7.0.4");
    let rpc = pm2.rpc_sock();
    std::fs::set_permissions(&rpc, std::fs::Permissions::from_mode(0o660)).unwrap();
    std::os::unix::fs::chown(&rpc, Some(0), Some(65534)).unwrap();
    let before = std::fs::metadata(&rpc).unwrap();
    let cap = pm2.home().join("cap.bin");
    let rec = Recorder::start(pm2.home(), &cap, &["--quiet"]);
    let during = std::fs::metadata(&rpc).unwrap();
    assert_ne!(
        during.ino(),
        before.ino(),
        "rpc.sock is the proxy while recording"
    );
    assert_eq!(
        (during.uid(), during.gid(), during.mode() & 0o7777),
        (0, 65534, 0o660)
    );
    let cap_mode = std::fs::metadata(&cap).unwrap().mode() & 0o777;
    assert_eq!(cap_mode, 0o600, "captures are private");
    assert!(rec.stop().success());
    let after = std::fs::metadata(&rpc).unwrap();
    assert_eq!(after.ino(), before.ino(), "the daemon's own socket is back");
    assert!(pm2.cmd(&["ls"]).status.success());
}

#[test]
fn stale_interposition_is_repaired_at_start() {
    let pm2 = Pm2::start("7.0.4");
    let rpc = pm2.rpc_sock();
    let original = std::fs::metadata(&rpc).unwrap().ino();
    // What a crash leaves when the guardian was killed too: rpc.sock is a dead socket and
    // the daemon's socket only has its second name.
    std::fs::hard_link(&rpc, recorder::aside(pm2.home())).unwrap();
    let tmp = pm2.home().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&tmp).unwrap());
    std::fs::rename(&tmp, &rpc).unwrap();
    assert!(std::os::unix::net::UnixStream::connect(&rpc).is_err());
    let cap = pm2.home().join("cap.bin");
    let rec = Recorder::start(pm2.home(), &cap, &["--quiet"]);
    assert!(rec.stop().success());
    let text = recorder::replay_text(&cap);
    assert!(
        text.contains("stale interposition"),
        "the repair is on the record:\n{text}"
    );
    assert_eq!(std::fs::metadata(&rpc).unwrap().ino(), original);
    assert!(pm2.cmd(&["ls"]).status.success());
    assert_eq!(pm2.god_daemons_for_home().len(), 1);
}

#[test]
fn refuses_to_start_without_a_daemon() {
    let dir = tempfile::Builder::new()
        .prefix("p2t-")
        .tempdir_in("/tmp")
        .unwrap();
    let out = recorder::run(&[
        "record",
        "--pm2-home",
        dir.path().to_str().unwrap(),
        "-o",
        dir.path().join("c.bin").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no PM2 daemon") || err.contains("rpc.sock"),
        "{err}"
    );
    assert!(
        !dir.path().join("rpc.sock").exists(),
        "no socket may be left for a second daemon"
    );
}

#[test]
fn an_existing_output_is_refused_before_the_socket_is_touched() {
    let pm2 = Pm2::start("7.0.4");
    let cap = pm2.home().join("exists.bin");
    std::fs::write(&cap, b"precious").unwrap();
    let out = recorder::run(&[
        "record",
        "--pm2-home",
        pm2.home().to_str().unwrap(),
        "-o",
        cap.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read(&cap).unwrap(), b"precious", "no data lost");
    assert!(!recorder::aside(pm2.home()).exists());
    assert!(pm2.cmd(&["ls"]).status.success());
}
