//! Load through the proxy: many concurrent clients, many sequential connections, a peer
//! the daemon would refuse, and every stop signal.

#[path = "support/pm2.rs"]
mod pm2;
#[path = "support/recorder.rs"]
mod recorder;

use pm2::Pm2;
use pm2_trace::wire::amp::Decoder;
use pm2_trace::wire::rpc;
use recorder::Recorder;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// One RPC call on its own connection, the way a pm2 CLI makes it.
fn call(path: &Path, method: &str, id: &str) -> serde_json::Value {
    let mut s =
        UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&rpc::encode_call(method, vec![serde_json::json!({})], id).encode())
        .unwrap();
    let mut dec = Decoder::default();
    let mut buf = vec![0u8; 65536];
    loop {
        if let Some(m) = dec.next() {
            let m = m.unwrap();
            let reply = rpc::parse_reply(&m).expect("a reply");
            assert_eq!(reply.id, id);
            let args = reply.outcome.expect("no error");
            return serde_json::Value::Array(args.iter().map(|a| a.value()).collect());
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "daemon closed the connection");
        dec.push(&buf[..n]);
    }
}

fn names(monitor: &serde_json::Value) -> Vec<String> {
    monitor[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn concurrent_and_sequential_load() {
    let pm2 = Pm2::start("7.0.4");
    for i in 0..3 {
        pm2.start_app(&format!("app{i}"), "well-behaved.js", pm2::free_port(), &[]);
    }
    let rpc_sock = pm2.rpc_sock();
    let direct_version = call(&rpc_sock, "getVersion", "direct:1");
    let direct_names = names(&call(&rpc_sock, "getMonitorData", "direct:2"));
    let cap = pm2.home().join("cap.bin");
    let rec = Recorder::start(pm2.home(), &cap, &["--quiet"]);

    // 200 concurrent clients, each asking what `pm2 ls` asks.
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let p = rpc_sock.clone();
            std::thread::spawn(move || {
                (
                    call(&p, "getVersion", &format!("c{i}:0")),
                    names(&call(&p, "getMonitorData", &format!("c{i}:1"))),
                )
            })
        })
        .collect();
    for h in handles {
        let (v, n) = h.join().expect("a concurrent client failed");
        assert_eq!(v, direct_version);
        assert_eq!(n, direct_names);
    }

    // 10,000 sequential connections: no fd or memory growth in the recorder.
    let pid = rec.child.id();
    for i in 0..500 {
        call(&rpc_sock, "getVersion", &format!("w:{i}"));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (fd0, rss0) = (fd_count(pid), rss_kb(pid));
    for i in 0..10_000 {
        call(&rpc_sock, "getVersion", &format!("s:{i}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (fd1, rss1) = (fd_count(pid), rss_kb(pid));
    eprintln!("recorder after 10,000 connections: fds {fd0} -> {fd1}, RSS {rss0} kB -> {rss1} kB");
    assert!(fd1 <= fd0 + 2, "fd growth: {fd0} -> {fd1}");
    assert!(
        rss1 < rss0 + 16 * 1024,
        "memory growth: {rss0} kB -> {rss1} kB"
    );
    assert!(rec.stop().success());
    assert!(pm2.cmd(&["ls"]).status.success());
}

#[test]
fn a_peer_the_daemon_refuses_is_refused_by_the_proxy_too() {
    use std::os::unix::fs::PermissionsExt;
    let pm2 = Pm2::start("7.0.4");
    let home = pm2.home().to_owned();
    // Let `nobody` reach the directory, so that only the socket's own rights decide.
    for dir in [home.parent().unwrap(), home.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(pm2.rpc_sock(), std::fs::Permissions::from_mode(0o770)).unwrap();
    let try_as_nobody = |path: &Path| -> bool {
        let script = format!(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect({:?}); sys.exit(0)\nexcept Exception as e:\n print(e); sys.exit(1)",
            path.to_str().unwrap()
        );
        use std::os::unix::process::CommandExt;
        std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .uid(65534)
            .gid(65534)
            .status()
            .expect("python3 is missing")
            .success()
    };
    assert!(
        !try_as_nobody(&pm2.rpc_sock()),
        "precondition: nobody cannot reach the daemon directly"
    );
    let cap = pm2.home().join("cap.bin");
    let rec = Recorder::start(pm2.home(), &cap, &["--quiet"]);
    assert!(
        !try_as_nobody(&pm2.rpc_sock()),
        "nobody must not reach the daemon through the proxy"
    );
    assert!(
        call(&pm2.rpc_sock(), "getVersion", "root:1").is_array(),
        "root still can"
    );
    assert!(rec.stop().success());
}

#[test]
fn every_stop_signal_leaves_pm2_working() {
    let pm2 = Pm2::start("7.0.4");
    pm2.start_app("web", "well-behaved.js", pm2::free_port(), &[]);
    for (n, sigs) in [
        vec![libc::SIGTERM],
        vec![libc::SIGHUP],
        vec![libc::SIGINT, libc::SIGINT],
    ]
    .into_iter()
    .enumerate()
    {
        let cap = pm2.home().join(format!("cap{n}.bin"));
        let mut rec = Recorder::start(pm2.home(), &cap, &["--quiet"]);
        assert!(call(&pm2.rpc_sock(), "getVersion", "x:1").is_array());
        for s in &sigs {
            rec.signal(*s);
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = rec.wait(Duration::from_secs(20));
        assert!(
            status.success(),
            "signals {sigs:?}: {status}: {}",
            rec.stderr()
        );
        assert!(!recorder::aside(pm2.home()).exists());
        assert!(
            pm2.cmd(&["ls"]).status.success(),
            "pm2 works after {sigs:?}"
        );
        assert_eq!(pm2.god_daemons_for_home().len(), 1);
        let replay = recorder::run(&["replay", cap.to_str().unwrap()]);
        assert!(replay.status.success(), "capture readable after {sigs:?}");
    }
}

#[test]
fn a_second_ctrl_c_cuts_a_command_still_in_progress() {
    let pm2 = Pm2::start("7.0.4");
    let cap = pm2.home().join("held.bin");
    let mut rec = Recorder::start(pm2.home(), &cap, &["--quiet"]);
    // A client in the middle of a request: half a message sent, the rest never comes.
    let mut held = UnixStream::connect(pm2.rpc_sock()).unwrap();
    let req = rpc::encode_call("getVersion", vec![serde_json::json!({})], "held:1").encode();
    held.write_all(&req[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    rec.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(100));
    rec.signal(libc::SIGINT);
    let status = rec.wait(Duration::from_secs(20));
    assert!(status.success(), "{}", rec.stderr());
    // The held client sees its connection end instead of hanging on a dead proxy.
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(held.read(&mut buf), Ok(0) | Err(_)));
    assert!(!recorder::aside(pm2.home()).exists());
    assert!(pm2.cmd(&["ls"]).status.success());
    let text = recorder::replay_text(&cap);
    assert!(
        text.contains("still in progress"),
        "the cut is on the record"
    );
}
