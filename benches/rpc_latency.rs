//! Added latency of the recorder's proxy per RPC round trip, measured in one run against a
//! real PM2 7.0.4 daemon: direct, through `pm2-trace record`, through plain `socat`, and
//! through `socat -x -v` (the usual way to sniff a unix socket).
//!
//! And the runtime question of docs/architecture.md (threads or tokio for the proxy): two
//! bare forwarders in this process, same sockets, nothing recorded: two threads per
//! connection with blocking reads (the recorder's design), and tokio (multi-thread runtime,
//! 2 workers, `copy_bidirectional` per connection), and the threads forwarder again with the
//! recorder's short slice (`pm2_trace::sched::short_slice`). Also the recorder's threads per client
//! connection (from /proc/<pid>/task).
//!
//! Run: `cargo bench --bench rpc_latency` (prints a table; asserts nothing).

#[path = "../tests/support/pm2.rs"]
mod pm2;

use pm2_trace::wire::amp::Decoder;
use pm2_trace::wire::rpc;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WARMUP: usize = 300;
const ROUNDS: usize = 3000;

/// One client connection doing getVersion round trips.
struct Client {
    s: UnixStream,
    dec: Decoder,
    buf: Vec<u8>,
    n: u64,
}

impl Client {
    fn connect(path: &Path) -> Client {
        Client {
            s: UnixStream::connect(path).expect("connect"),
            dec: Decoder::default(),
            buf: vec![0u8; 65536],
            n: 0,
        }
    }

    /// One round trip, in microseconds.
    fn round_trip(&mut self) -> f64 {
        self.n += 1;
        let req = rpc::encode_call(
            "getVersion",
            vec![serde_json::json!({})],
            &format!("bench:{}", self.n),
        )
        .encode();
        let t0 = Instant::now();
        self.s.write_all(&req).unwrap();
        loop {
            if let Some(m) = self.dec.next() {
                m.unwrap();
                break;
            }
            let k = self.s.read(&mut self.buf).unwrap();
            assert!(k > 0, "connection closed");
            self.dec.push(&self.buf[..k]);
        }
        t0.elapsed().as_secs_f64() * 1e6
    }
}

fn pct(v: &mut [f64], p: usize) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn wait_for(path: &Path) {
    let end = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(path).is_err() {
        assert!(Instant::now() < end, "{} never came up", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn socat(args: &[&str], listen: &Path, target: &Path) -> std::process::Child {
    let c = Command::new("socat")
        .args(args)
        .arg(format!("UNIX-LISTEN:{},fork", listen.display()))
        .arg(format!("UNIX-CONNECT:{}", target.display()))
        .stderr(Stdio::null())
        .spawn()
        .expect("socat is missing: apt-get install socat");
    wait_for(listen);
    c
}

/// A bare forwarder: two threads per connection, each a blocking copy one way; with `slice`,
/// each asks for the kernel's shortest slice first, as the recorder's forwarding threads do.
fn thread_forwarder(listen: &Path, target: &Path, slice: bool) {
    let l = std::os::unix::net::UnixListener::bind(listen).expect("bind");
    let target = target.to_owned();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let Ok(d) = UnixStream::connect(&target) else {
                continue;
            };
            let (mut c2, mut d2) = (c.try_clone().unwrap(), d.try_clone().unwrap());
            let (mut c, mut d) = (c, d);
            std::thread::spawn(move || {
                if slice {
                    assert!(pm2_trace::sched::short_slice(), "sched_setattr refused");
                }
                let _ = std::io::copy(&mut c, &mut d);
                let _ = d.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                if slice {
                    pm2_trace::sched::short_slice();
                }
                let _ = std::io::copy(&mut d2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    wait_for(listen);
}

/// A bare forwarder on tokio: a multi-thread runtime of 2 workers, one task per connection.
fn tokio_forwarder(listen: &Path, target: &Path) -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()
        .expect("tokio runtime");
    let l = {
        let _g = rt.enter();
        tokio::net::UnixListener::bind(listen).expect("bind")
    };
    let target = target.to_owned();
    rt.spawn(async move {
        loop {
            let Ok((mut c, _)) = l.accept().await else {
                continue;
            };
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut d) = tokio::net::UnixStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut d).await;
                }
            });
        }
    });
    wait_for(listen);
    rt
}

/// Per thread of `pid`: (name, ns on a CPU, ns waiting on a run queue), from schedstat.
fn sched_of(pid: u32) -> Vec<(String, u64, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let p = e.path();
            let name = std::fs::read_to_string(p.join("comm")).ok()?;
            let st = std::fs::read_to_string(p.join("schedstat")).ok()?;
            let mut f = st.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
            Some((name.trim_end().to_owned(), f.next()?, f.next()?))
        })
        .collect()
}

/// (run, wait) ns summed over the threads whose name `pick` accepts, `after` minus `before`.
fn sched_delta(
    before: &[(String, u64, u64)],
    after: &[(String, u64, u64)],
    pick: impl Fn(&str) -> bool,
) -> (u64, u64) {
    let sum = |v: &[(String, u64, u64)]| {
        v.iter()
            .filter(|(n, _, _)| pick(n))
            .fold((0u64, 0u64), |(r, w), (_, a, b)| (r + a, w + b))
    };
    let (a, b) = (sum(after), sum(before));
    (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1))
}

fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let pm2 = pm2::Pm2::start("7.0.4");
    let rpc_sock = pm2.rpc_sock();
    let cap = pm2.home().join("bench.bin");
    let mut rec = Command::new(env!("CARGO_BIN_EXE_pm2-trace"))
        .args(["record", "--quiet", "--force", "--pm2-home"])
        .arg(pm2.home())
        .arg("-o")
        .arg(&cap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // While recording, the daemon itself answers on its second name.
    let daemon = pm2.home().join("rpc.sock.pm2-trace-daemon");
    let end = Instant::now() + Duration::from_secs(10);
    while !daemon.exists() {
        assert!(Instant::now() < end, "recorder did not interpose");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for(&rpc_sock);
    let plain_path = pm2.home().join("socat.sock");
    let verbose_path = pm2.home().join("socat-v.sock");
    let mut s1 = socat(&[], &plain_path, &daemon);
    let mut s2 = socat(&["-x", "-v"], &verbose_path, &daemon);

    let threads_path = pm2.home().join("threads.sock");
    let tokio_path = pm2.home().join("tokio.sock");
    thread_forwarder(&threads_path, &daemon, false);
    let slice_path = pm2.home().join("slice.sock");
    thread_forwarder(&slice_path, &daemon, true);
    let rt = tokio_forwarder(&tokio_path, &daemon);

    let names = [
        "direct",
        "pm2-trace record",
        "socat",
        "socat -x -v",
        "threads (bare)",
        "tokio (bare)",
        "threads, 0.1 ms slice",
    ];
    const PATHS: usize = 7;
    let idle_threads = threads_of(rec.id());
    let mut clients = [
        Client::connect(&daemon),
        Client::connect(&rpc_sock),
        Client::connect(&plain_path),
        Client::connect(&verbose_path),
        Client::connect(&threads_path),
        Client::connect(&tokio_path),
        Client::connect(&slice_path),
    ];
    // The recorder's threads for 10 more open client connections.
    let extra: Vec<Client> = (0..10).map(|_| Client::connect(&rpc_sock)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let per_conn = (threads_of(rec.id()) as f64 - idle_threads as f64) / 11.0;
    drop(extra);
    for c in clients.iter_mut() {
        for _ in 0..WARMUP {
            c.round_trip();
        }
    }
    // Interleaved: each round measures every path once, in a rotating order, so that load on
    // the machine falls on all paths alike; added latency is the per-round difference.
    let mut samples: [Vec<f64>; PATHS] = Default::default();
    let sched_before = sched_of(rec.id());
    for i in 0..ROUNDS {
        for k in 0..PATHS {
            let p = (i + k) % PATHS;
            samples[p].push(clients[p].round_trip());
        }
    }
    let sched_after = sched_of(rec.id());
    drop(clients);
    eprintln!("getVersion round trips against a real pm2 7.0.4 daemon, {ROUNDS} interleaved rounds after {WARMUP} warm-up:");
    let added = |p: usize| -> (f64, f64) {
        let mut d: Vec<f64> = samples[p]
            .iter()
            .zip(&samples[0])
            .map(|(x, y)| x - y)
            .collect();
        (pct(&mut d, 50), pct(&mut d, 99))
    };
    for (p, name) in names.iter().enumerate() {
        let mut v = samples[p].clone();
        let (a_med, a_p99) = if p == 0 { (0.0, 0.0) } else { added(p) };
        eprintln!(
            "  {name:<18} median {:7.1} µs  p99 {:8.1} µs   added: median {a_med:6.1} µs  p99 {a_p99:7.1} µs",
            pct(&mut v, 50),
            pct(&mut v, 99)
        );
    }
    drop(rt);
    for s in [&mut s1, &mut s2] {
        let _ = s.kill();
        let _ = s.wait();
    }
    unsafe { libc::kill(rec.id() as i32, libc::SIGINT) };
    let _ = rec.wait();
    let cap_len = std::fs::metadata(&cap).map(|m| m.len()).unwrap_or(0);
    let (t_med, t_p99) = added(1);
    let (s_med, _) = added(2);
    let (v_med, _) = added(3);
    println!("| figure | target | measured | reference |");
    println!("|---|---|---|---|");
    println!("| added median latency per RPC round trip | < 20 µs | {t_med:.1} µs | socat {s_med:.1} µs, socat -x -v {v_med:.1} µs |");
    println!("| added p99 latency per RPC round trip | < 100 µs | {t_p99:.1} µs | |");
    println!(
        "| added median, ratio to socat -x -v | < 0.33 | {:.2} | |",
        t_med / v_med
    );
    println!(
        "| capture written during the run | | {cap_len} bytes | {} round trips recorded |",
        ROUNDS + WARMUP
    );
    let (th_med, th_p99) = added(4);
    let (tk_med, tk_p99) = added(5);
    let (sl_med, sl_p99) = added(6);
    println!(
        "| bare forwarder, threads: added median / p99 | | {th_med:.1} / {th_p99:.1} µs | tokio (2 workers): {tk_med:.1} / {tk_p99:.1} µs; threads with a 0.1 ms slice: {sl_med:.1} / {sl_p99:.1} µs |"
    );
    println!(
        "| recorder threads per client connection | | {per_conn:.1} | {idle_threads} threads idle |"
    );
    // Where the recorder's time went during the measured rounds (schedstat of its threads).
    let per_rt = |ns: u64| ns as f64 / 1e3 / ROUNDS as f64;
    let (fwd_run, fwd_wait) = sched_delta(&sched_before, &sched_after, |n| n.starts_with("proxy-"));
    let (own_run, own_wait) = sched_delta(&sched_before, &sched_after, |n| {
        n == "tap-decoder" || n == "recorder" || n == "bus"
    });
    println!(
        "| recorder's forwarding threads per round trip: on CPU / waiting on a run queue | | {:.1} / {:.1} µs | its own work (tap decoder, recorder loop, bus; SCHED_IDLE): {:.1} µs on CPU, {:.1} µs waiting |",
        per_rt(fwd_run),
        per_rt(fwd_wait),
        per_rt(own_run),
        per_rt(own_wait)
    );
}
