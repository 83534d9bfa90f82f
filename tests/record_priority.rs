//! Which scheduling class each of the recorder's threads runs in, on a real pm2 7.0.4 daemon
//! recorded twice in a row from one thread (as `record --dir` does when it follows a daemon
//! across restarts): the proxy's forwarding threads run at the caller's normal priority in
//! both sessions, the recorder's own work (tap decoder, the loop that orders and writes
//! events) in the idle class, the bus subscriber (which stamps the daemon's events as they
//! arrive) at normal priority, and the caller's thread is left as it was.
//! The forwarding threads also ask for the kernel's shortest slice, so that they preempt
//! whatever runs when they wake.

#[path = "support/pm2.rs"]
mod pm2;

use pm2_trace::event::{CaptureInfo, Stamped};
use pm2_trace::pm2::home;
use pm2_trace::record::{record, Stopper};
use pm2_trace::wire::amp::Decoder;
use pm2_trace::wire::rpc;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// (scheduling policy, nice) of thread `tid` of this process.
fn class_of(tid: i32) -> (i32, i32) {
    // SAFETY: plain queries on a thread id of this process.
    unsafe {
        (
            libc::sched_getscheduler(tid),
            libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t),
        )
    }
}

fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The time slice (ns) of thread `tid` of this process, from `/proc/self/task/<tid>/sched`.
fn slice_of(tid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/sched")).expect("sched");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("se.slice")?
                .split(':')
                .nth(1)?
                .trim()
                .parse()
                .ok()
        })
        .expect("se.slice in /proc/self/task/<tid>/sched (needs a kernel with EEVDF, Linux 6.6+)")
}

/// This process's threads whose name starts with `prefix`: (tid, name).
fn threads_named(prefix: &str) -> Vec<(i32, String)> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| {
            let tid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
            let name = name.trim_end().to_owned();
            name.starts_with(prefix).then_some((tid, name))
        })
        .collect()
}

/// One getVersion round trip on `s`.
fn get_version(s: &mut UnixStream) {
    let req = rpc::encode_call("getVersion", vec![serde_json::json!({})], "prio:1").encode();
    s.write_all(&req).expect("write");
    let mut dec = Decoder::default();
    let mut buf = vec![0u8; 65536];
    loop {
        if let Some(m) = dec.next() {
            m.expect("reply decodes");
            return;
        }
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "the proxy closed the connection");
        dec.push(&buf[..n]);
    }
}

#[test]
fn forwarding_stays_normal_and_the_recorders_work_is_idle_class_in_every_session() {
    let pm2 = pm2::Pm2::start("7.0.4");
    let daemons = home::list_daemons();
    let loc = home::locate(Some(pm2.home()), |k| std::env::var_os(k), &daemons).expect("locate");
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = |n: u32| {
        pm2.record_options(
            &loc,
            dir.path().join(format!("session-{n}.bin")),
            "record_priority",
            false,
        )
    };
    let sessions = [(opts(1), Stopper::new()), (opts(2), Stopper::new())];
    let stops: Vec<Stopper> = sessions.iter().map(|(_, s)| s.clone()).collect();
    // The caller's thread: both sessions, one after the other; after each it reports its own
    // scheduling class.
    let (tx, rx) = mpsc::channel::<(i32, i32)>();
    let caller = std::thread::spawn(move || {
        for (opts, stop) in sessions {
            let mut on_event = |_: &CaptureInfo, _: &Stamped, _: &[pm2_trace::timeline::Entry]| {};
            record(&opts, stop, &mut on_event).expect("recording");
            tx.send(class_of(gettid())).expect("report");
        }
    });
    let aside = pm2.home().join("rpc.sock.pm2-trace-daemon");
    let normal = (libc::SCHED_OTHER, 0);
    for (n, stop) in stops.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !aside.exists() {
            assert!(
                Instant::now() < deadline,
                "session {n}: the recorder did not interpose within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut client = UnixStream::connect(pm2.rpc_sock()).expect("connect through the proxy");
        get_version(&mut client);
        let forwarding = threads_named("proxy-");
        // The accept thread and this connection's forwarding thread (one per connection).
        assert!(
            forwarding.len() >= 2,
            "session {n}: accept and forwarding threads: {forwarding:?}"
        );
        for (tid, name) in &forwarding {
            assert_eq!(
                class_of(*tid),
                normal,
                "session {n}: {name} must run at normal priority"
            );
            assert_eq!(
                slice_of(*tid),
                pm2_trace::sched::FORWARDING_SLICE_NS,
                "session {n}: {name} must ask for a short slice (sched_setattr's sched_runtime \
                 on a normal thread: Linux 6.12+)"
            );
        }
        for (name, class) in [
            ("tap-decoder", libc::SCHED_IDLE),
            ("recorder", libc::SCHED_IDLE),
            ("bus", libc::SCHED_OTHER),
        ] {
            let deadline = Instant::now() + Duration::from_secs(5);
            let found = loop {
                let found = threads_named(name);
                if !found.is_empty() || Instant::now() > deadline {
                    break found;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            assert!(!found.is_empty(), "session {n}: no {name} thread");
            for (tid, name) in found {
                assert_eq!(
                    class_of(tid).0,
                    class,
                    "session {n}: {name} must be in class {class} (SCHED_OTHER 0, SCHED_IDLE 5)"
                );
            }
        }
        drop(client);
        stop.stop("test done");
        let after = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the session ended");
        assert_eq!(
            after, normal,
            "session {n}: the caller's thread keeps its class"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while aside.exists() {
            assert!(
                Instant::now() < deadline,
                "session {n}: the daemon's socket was not given back"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    caller.join().expect("caller thread");
}
