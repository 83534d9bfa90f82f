//! Added latency of the recorder's proxy per RPC round trip, measured in one run against a
//! real PM2 7.0.4 daemon: direct, through `pm2-trace record`, through plain `socat`, and
//! through `socat -x -v` (the usual way to sniff a unix socket).
//!
//! And the runtime question of docs/architecture.md (threads or tokio for the proxy): two
//! bare forwarders in this process, same sockets, nothing recorded: two threads per
//! connection with blocking reads (the recorder's design until issue #16's last stop), and tokio (multi-thread runtime,
//! 2 workers, `copy_bidirectional` per connection), and the threads forwarder again with the
//! recorder's short slice (`pm2_trace::sched::short_slice`). Also the recorder's threads per client
//! connection (from /proc/<pid>/task).
//!
//! And, for the design question of issue #16 (with two threads per connection a round trip
//! wakes both), two more bare forwarders with the short slice: one thread per connection
//! polling both sockets (non-blocking, a pending buffer per direction: the recorder's design
//! now), and one thread for all connections on epoll.
//!
//! Run: `cargo bench --bench rpc_latency` (prints a table; asserts nothing).
//! `PM2_TRACE_BENCH_RECORDER=PATH` runs another `pm2-trace` binary as the recorder (for
//! A/B runs against an earlier build, interleaved run by run).

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

/// Accept clients on `listen`, connect each to `target` and hand the two sockets to `pair`.
fn forwarder(listen: &Path, target: &Path, pair: impl Fn(UnixStream, UnixStream) + Send + 'static) {
    let l = std::os::unix::net::UnixListener::bind(listen).expect("bind");
    let target = target.to_owned();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let Ok(d) = UnixStream::connect(&target) else {
                continue;
            };
            pair(c, d);
        }
    });
    wait_for(listen);
}

/// A bare forwarder: two threads per connection, each a blocking copy one way; with `slice`,
/// each asks for the kernel's shortest slice first, as the recorder's forwarding threads did.
fn thread_forwarder(listen: &Path, target: &Path, slice: bool) {
    forwarder(listen, target, move |c, d| {
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
    });
}

/// A bare forwarder with one thread per connection (not one per direction), with the
/// recorder's short slice: both sockets non-blocking, one `poll` on the two, and per
/// direction a buffer of bytes read and not yet written (the direction's reads pause while it
/// holds any, so a blocked direction never blocks the other). A round trip wakes this one
/// thread twice instead of two threads once each. The recorder's own proxy is of this design
/// (`sources::proxy::forward`).
fn poll_forwarder(listen: &Path, target: &Path) {
    forwarder(listen, target, |c, d| {
        std::thread::spawn(move || {
            assert!(pm2_trace::sched::short_slice(), "sched_setattr refused");
            poll_pair([c, d]);
        });
    });
}

/// One connection forwarded both ways by a single thread: direction `i` reads `s[i]` and
/// writes `s[1 - i]`, both sockets non-blocking, each direction with its bytes read and not
/// yet written (`buf[i][from..to]`); a direction reads again only once those are written.
struct Pair {
    s: [UnixStream; 2],
    buf: [Vec<u8>; 2],
    pending: [(usize, usize); 2],
    open: [bool; 2],
}

impl Pair {
    fn new(s: [UnixStream; 2]) -> Pair {
        for x in &s {
            x.set_nonblocking(true).unwrap();
        }
        Pair {
            s,
            buf: [vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]],
            pending: [(0, 0); 2],
            open: [true; 2],
        }
    }

    /// The poll events socket `k` waits for: readable while its direction may read,
    /// writable while the other direction has bytes for it.
    fn interest(&self, k: usize) -> i16 {
        let mut e = 0;
        if self.open[k] && self.pending[k].0 == self.pending[k].1 {
            e |= libc::POLLIN;
        }
        if self.pending[1 - k].0 < self.pending[1 - k].1 {
            e |= libc::POLLOUT;
        }
        e
    }

    fn done(&self) -> bool {
        (0..2).all(|k| self.interest(k) == 0)
    }

    /// Socket `k` is ready (poll said so): read it if its direction may, then write what
    /// either direction has pending.
    #[allow(clippy::needless_range_loop)]
    fn step(&mut self, ready: [bool; 2]) {
        for i in 0..2 {
            if ready[i] && self.open[i] && self.pending[i].0 == self.pending[i].1 {
                match (&self.s[i]).read(&mut self.buf[i]) {
                    Ok(0) => {
                        self.open[i] = false;
                        let _ = self.s[1 - i].shutdown(std::net::Shutdown::Write);
                    }
                    Ok(n) => self.pending[i] = (0, n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.open[i] = false;
                        let _ = self.s[1 - i].shutdown(std::net::Shutdown::Write);
                    }
                }
            }
            while self.pending[i].0 < self.pending[i].1 {
                let (a, b) = self.pending[i];
                match (&self.s[1 - i]).write(&self.buf[i][a..b]) {
                    Ok(n) => self.pending[i].0 += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        // The writing side is gone: drop what is pending, stop reading.
                        self.pending[i] = (0, 0);
                        self.open[i] = false;
                        let _ = self.s[i].shutdown(std::net::Shutdown::Read);
                    }
                }
            }
        }
    }
}

/// Forward both ways on the calling thread, with `poll` on the two sockets, until both
/// directions ended.
fn poll_pair(s: [UnixStream; 2]) {
    use std::os::fd::AsRawFd;
    let mut p = Pair::new(s);
    while !p.done() {
        // A socket waited for by neither direction is left out (a peer's hang-up would
        // otherwise wake the loop again and again).
        let mut fds = [0, 1].map(|k| libc::pollfd {
            fd: if p.interest(k) == 0 {
                -1
            } else {
                p.s[k].as_raw_fd()
            },
            events: p.interest(k),
            revents: 0,
        });
        // SAFETY: two initialized pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue;
        }
        p.step([fds[0].revents != 0, fds[1].revents != 0]);
    }
}

/// A bare forwarder with one thread for all connections, on epoll (level-triggered), with the
/// recorder's short slice; the accept is on the same thread.
#[allow(clippy::needless_range_loop)]
fn epoll_forwarder(listen: &Path, target: &Path) {
    use std::os::fd::AsRawFd;
    let l = std::os::unix::net::UnixListener::bind(listen).expect("bind");
    let target = target.to_owned();
    std::thread::spawn(move || {
        assert!(pm2_trace::sched::short_slice(), "sched_setattr refused");
        // SAFETY: epoll calls on fds this thread owns; events are initialized.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(ep >= 0);
        let ctl = |op, fd, events: u32, token: u64| unsafe {
            let mut ev = libc::epoll_event { events, u64: token };
            libc::epoll_ctl(ep, op, fd, &mut ev);
        };
        let to_epoll = |e: i16| {
            (if e & libc::POLLIN != 0 {
                libc::EPOLLIN as u32
            } else {
                0
            }) | (if e & libc::POLLOUT != 0 {
                libc::EPOLLOUT as u32
            } else {
                0
            })
        };
        ctl(
            libc::EPOLL_CTL_ADD,
            l.as_raw_fd(),
            libc::EPOLLIN as u32,
            u64::MAX,
        );
        let mut conns: std::collections::HashMap<u64, (Pair, [i16; 2])> = Default::default();
        let mut next = 0u64;
        let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), evs.len() as i32, -1) };
            for ev in evs.iter().take(n.max(0) as usize) {
                let token = ev.u64;
                if token == u64::MAX {
                    let Ok((c, _)) = l.accept() else { continue };
                    let Ok(d) = UnixStream::connect(&target) else {
                        continue;
                    };
                    let p = Pair::new([c, d]);
                    let id = next;
                    next += 1;
                    for k in 0..2 {
                        ctl(
                            libc::EPOLL_CTL_ADD,
                            p.s[k].as_raw_fd(),
                            libc::EPOLLIN as u32,
                            id * 2 + k as u64,
                        );
                    }
                    conns.insert(id, (p, [libc::POLLIN; 2]));
                    continue;
                }
                let (id, k) = (token / 2, (token % 2) as usize);
                let Some((p, was)) = conns.get_mut(&id) else {
                    continue;
                };
                let mut ready = [false; 2];
                ready[k] = true;
                p.step(ready);
                if p.done() {
                    for k in 0..2 {
                        if was[k] != 0 {
                            ctl(libc::EPOLL_CTL_DEL, p.s[k].as_raw_fd(), 0, 0);
                        }
                    }
                    conns.remove(&id);
                    continue;
                }
                for k in 0..2 {
                    let now = p.interest(k);
                    if now != was[k] {
                        // Waited for by neither direction: out of the set (a hang-up would
                        // otherwise be reported again and again).
                        let op = match (was[k], now) {
                            (_, 0) => libc::EPOLL_CTL_DEL,
                            (0, _) => libc::EPOLL_CTL_ADD,
                            _ => libc::EPOLL_CTL_MOD,
                        };
                        ctl(op, p.s[k].as_raw_fd(), to_epoll(now), id * 2 + k as u64);
                        was[k] = now;
                    }
                }
            }
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
    // PM2_TRACE_BENCH_RECORDER=PATH measures another build of pm2-trace (a copy of an earlier
    // release binary), for A/B runs of this bench interleaved with the current one.
    let recorder = std::env::var_os("PM2_TRACE_BENCH_RECORDER")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_pm2-trace").into());
    eprintln!("recorder: {}", Path::new(&recorder).display());
    let mut rec = Command::new(&recorder)
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
    let poll_path = pm2.home().join("poll.sock");
    poll_forwarder(&poll_path, &daemon);
    let epoll_path = pm2.home().join("epoll.sock");
    epoll_forwarder(&epoll_path, &daemon);

    let names = [
        "direct",
        "pm2-trace record",
        "socat",
        "socat -x -v",
        "threads (bare)",
        "tokio (bare)",
        "threads, 0.1 ms slice",
        "1 thread/conn, poll",
        "1 thread, epoll",
    ];
    const PATHS: usize = 9;
    let idle_threads = threads_of(rec.id());
    let mut clients = [
        Client::connect(&daemon),
        Client::connect(&rpc_sock),
        Client::connect(&plain_path),
        Client::connect(&verbose_path),
        Client::connect(&threads_path),
        Client::connect(&tokio_path),
        Client::connect(&slice_path),
        Client::connect(&poll_path),
        Client::connect(&epoll_path),
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
    let (po_med, po_p99) = added(7);
    let (ep_med, ep_p99) = added(8);
    println!(
        "| bare forwarder, one thread per connection (poll), 0.1 ms slice: added median / p99 | | {po_med:.1} / {po_p99:.1} µs | one thread for all connections (epoll), 0.1 ms slice: {ep_med:.1} / {ep_p99:.1} µs |"
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
