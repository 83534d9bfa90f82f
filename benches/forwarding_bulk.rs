//! Bulk forwarding and recording in full: getMonitorData replies for 500 apps (made from a
//! real pm2 7.0.4 entry; 16 polls in turn, each app's `monit` changing from one to the next
//! as a poller sees it, its `pm2_env` not), fetched again and again through the recorder,
//! and how much of that traffic the recorder takes in full (every copy decoded, redacted and
//! written, none dropped).
//!
//! 1. Forwarding: the fetch rate direct from the server and through the proxy of a whole
//!    recording (`record --quiet --proc off --listen`, in this process: `record::record`),
//!    unpaced, with the threads' CPU time by role (forwarding, tap decoder, recorder loop).
//! 2. Recorded in full: the same recording with the client paced at rising rates; a rate
//!    counts as recorded in full when no copy was dropped, every reply is in the capture, and
//!    the recording had caught up within a second of the traffic's end (the tap's 256 MB
//!    budget would otherwise hide a recorder that falls behind during a short run).
//!
//! The server plays the daemon on a socket of a throw-away PM2_HOME (rpc.sock answering every
//! request with the reply, pub.sock accepting the bus subscriber and saying nothing).
//!
//! The bench runs with the shipped binary's allocator (mimalloc).
//!
//! Run: `cargo bench --bench forwarding_bulk` (prints a table; asserts nothing about speed).
//! PM2_TRACE_BENCH_RATES=0.2,0.4 chooses the paced rates (GB/s); PM2_TRACE_BENCH_REDACT=none
//! (or all) records with that `--redact` instead of the default `values`. Where the time goes
//! inside each thread: `perf record -F 499 --call-graph dwarf` on this bench, then
//! `perf report --comm recorder` (or `tap-decoder`, `proxy-2-down`).

#[path = "../tests/support/pm2.rs"]
mod pm2;

/// The allocator the shipped binary uses (src/main.rs): the recording's large buffers come
/// and go as they do in `pm2-trace record`.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use pm2_trace::event::{CaptureInfo, Direction, Event, Stamped};
use pm2_trace::record::{record, RecordOptions, Stopper};
use pm2_trace::redact::RedactMode;
use pm2_trace::sources::procwatch::WatchMode;
use pm2_trace::wire::amp::Decoder;
use pm2_trace::wire::rpc;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const APPS: usize = 500;
/// Distinct replies the server answers in turn.
const POLLS: usize = 16;
const UNPACED_SECONDS: f64 = 3.0;

/// A server answering the requests on a connection with `replies` in turn (ids are not
/// matched: the client only counts bytes; the replies are all of one length).
fn serve(listener: UnixListener, replies: Arc<Vec<Vec<u8>>>) {
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let replies = replies.clone();
            let server = std::thread::Builder::new().name("server".into());
            let _ = server.spawn(move || {
                let mut dec = Decoder::default();
                let mut buf = vec![0u8; 65536];
                let mut turn = 0;
                loop {
                    let n = match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    dec.push(&buf[..n]);
                    while let Some(Ok(_)) = dec.next() {
                        turn = (turn + 1) % replies.len();
                        if s.write_all(&replies[turn]).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
}

/// pub.sock: accepts the bus subscriber and keeps it connected, silent.
fn silent_bus(listener: UnixListener) {
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
}

/// What one fetching run did.
struct Fetched {
    bytes: u64,
    replies: u64,
    seconds: f64,
}

/// Fetch the reply for `seconds`, at most at `rate` bytes per second if given.
fn fetch(path: &Path, reply_len: usize, seconds: f64, rate: Option<f64>) -> Fetched {
    let mut s = UnixStream::connect(path).unwrap();
    let req = rpc::encode_call("getMonitorData", vec![serde_json::json!({})], "b:1").encode();
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let (mut bytes, mut replies) = (0u64, 0u64);
    while start.elapsed().as_secs_f64() < seconds {
        if let Some(r) = rate {
            let due = Duration::from_secs_f64(bytes as f64 / r);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        s.write_all(&req).unwrap();
        let mut got = 0;
        while got < reply_len {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got += n;
        }
        bytes += got as u64;
        replies += 1;
    }
    Fetched {
        bytes,
        replies,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// CPU seconds of this process's threads by role, from /proc/self/task, sampled every 50 ms
/// (a thread's last sample before it ends counts).
struct CpuSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<HashMap<i32, (String, u64)>>,
}

fn role(name: &str) -> String {
    if name.starts_with("proxy-") {
        "forwarding"
    } else if name == "tap-decoder" {
        "tap decoder"
    } else if name == "recorder" {
        "recorder loop"
    } else if name == "forwarding_bulk" {
        "bench client"
    } else {
        name
    }
    .to_owned()
}

impl CpuSampler {
    fn start() -> CpuSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cpu-sampler".into())
            .spawn(move || {
                let mut seen: HashMap<i32, (String, u64)> = HashMap::new();
                // At least one sample, also when stopped at once (a starting point).
                loop {
                    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
                        let Ok(tid) = e.file_name().to_string_lossy().parse::<i32>() else {
                            continue;
                        };
                        let Ok(stat) =
                            std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
                        else {
                            continue;
                        };
                        // comm is in parentheses and may hold spaces: fields after the last ')'.
                        let Some(close) = stat.rfind(')') else {
                            continue;
                        };
                        let name = stat[stat.find('(').unwrap_or(0) + 1..close].to_owned();
                        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
                        let ticks =
                            f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
                        seen.insert(tid, (name, ticks));
                    }
                    if s.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                seen
            })
            .unwrap();
        CpuSampler { stop, thread }
    }

    /// CPU seconds by role since `before` (an earlier sampler's result, or empty).
    fn finish(self) -> HashMap<i32, (String, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn by_role(
    now: &HashMap<i32, (String, u64)>,
    before: &HashMap<i32, (String, u64)>,
) -> Vec<(String, f64)> {
    // SAFETY: sysconf has no side effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut roles: Vec<(String, f64)> = Vec::new();
    for (tid, (name, ticks)) in now {
        if name == "cpu-sampler" {
            continue;
        }
        let was = before.get(tid).map_or(0, |(_, t)| *t);
        let secs = ticks.saturating_sub(was) as f64 / hz;
        let r = role(name);
        match roles.iter_mut().find(|(n, _)| *n == r) {
            Some((_, s)) => *s += secs,
            None => roles.push((r, secs)),
        }
    }
    roles.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    roles
}

/// One recording while a client fetches through its proxy.
struct Session {
    fetched: Fetched,
    lost_taps: u64,
    dropped_events: u64,
    replies_recorded: u64,
    capture_bytes: u64,
    /// From the traffic's end to the last reply written (events are held 200 ms to be put in
    /// order, so this is at least that).
    catch_up: f64,
    cpu: Vec<(String, f64)>,
}

impl Session {
    fn in_full(&self) -> bool {
        self.lost_taps == 0
            && self.dropped_events == 0
            && self.replies_recorded == self.fetched.replies
            && self.catch_up < 1.0
    }
}

fn redact_mode() -> RedactMode {
    match std::env::var("PM2_TRACE_BENCH_REDACT").as_deref() {
        Ok("none") => RedactMode::None,
        Ok("all") => RedactMode::All,
        _ => RedactMode::Values,
    }
}

fn redact_name() -> &'static str {
    match redact_mode() {
        RedactMode::None => "none",
        RedactMode::All => "all",
        RedactMode::Values => "values",
    }
}

fn session(home: &Path, reply_len: usize, seconds: f64, rate: Option<f64>) -> Session {
    let out = tempfile::Builder::new()
        .prefix("p2t-bulk-capture-")
        .tempdir_in("/tmp")
        .unwrap();
    let listen = home.join("proxy.sock");
    let _ = std::fs::remove_file(&listen);
    let opts = RecordOptions {
        pm2_home: home.to_owned(),
        rpc_path: home.join("rpc.sock"),
        pub_path: home.join("pub.sock"),
        daemon_pid: None,
        pm2_version: Some("7.0.4".into()),
        output: out.path().join("bulk.bin"),
        overwrite: false,
        duration: None,
        listen: Some(listen.clone()),
        redact: redact_mode(),
        proc_mode: WatchMode::Off,
        max_message: pm2_trace::wire::amp::DEFAULT_MAX_MESSAGE,
        command_line: vec!["forwarding_bulk".into()],
        // As `record --quiet`.
        interpret: false,
        // `--listen`: no interposition, so no guardian.
        guardian: None,
    };
    let stop = Stopper::new();
    let replies = Arc::new(AtomicU64::new(0));
    let last_reply = Arc::new(std::sync::Mutex::new(Instant::now()));
    let recorder = {
        let (stop, replies, last_reply) = (stop.clone(), replies.clone(), last_reply.clone());
        let caller = std::thread::Builder::new().name("record-caller".into());
        caller
            .spawn(move || {
                let mut on_event =
                    move |_: &CaptureInfo, ev: &Stamped, _: &[pm2_trace::timeline::Entry]| {
                        if let Event::RpcMessage {
                            dir: Direction::ToClient,
                            ..
                        } = ev.event
                        {
                            replies.fetch_add(1, Ordering::Relaxed);
                            *last_reply.lock().unwrap() = Instant::now();
                        }
                    };
                record(&opts, stop, &mut on_event)
            })
            .unwrap()
    };
    let end = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&listen).is_err() {
        assert!(Instant::now() < end, "the recorder never listened");
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = CpuSampler::start().finish();
    let sampler = CpuSampler::start();
    let fetched = fetch(&listen, reply_len, seconds, rate);
    let traffic_end = Instant::now();
    stop.stop("bench done");
    let outcome = recorder.join().unwrap().expect("recording");
    let last_reply = *last_reply.lock().unwrap();
    let catch_up = last_reply
        .checked_duration_since(traffic_end)
        .map_or(0.0, |d| d.as_secs_f64());
    let cpu = by_role(&sampler.finish(), &before);
    Session {
        fetched,
        lost_taps: outcome.lost_taps,
        dropped_events: outcome.dropped_events,
        replies_recorded: replies.load(Ordering::Relaxed),
        capture_bytes: outcome.capture.bytes,
        catch_up,
        cpu,
    }
}

fn cpu_text(s: &Session) -> String {
    let gb = s.fetched.bytes as f64 / 1e9;
    s.cpu
        .iter()
        .map(|(r, secs)| format!("{r} {:.2} s/GB", secs / gb))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // One real entry from a real daemon, replicated.
    let daemon = pm2::Pm2::start("7.0.4");
    daemon.start_app("web", "well-behaved.js", pm2::free_port(), &[]);
    daemon
        .wait_for_status("web", "online", Duration::from_secs(15))
        .unwrap();
    let real = daemon.monitor_data().expect("getMonitorData");
    let entry = real
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .expect("one app");
    drop(daemon);
    // A poller's replies: each app's `monit` (cpu, memory) changes from one to the next,
    // its `pm2_env` does not. The numbers keep their digit count: all replies are one length.
    let poll = |k: usize| {
        let apps: Vec<serde_json::Value> = (0..APPS)
            .map(|i| {
                let mut e = entry.clone();
                e["pm_id"] = i.into();
                e["name"] = format!("app{i}").into();
                e["pm2_env"]["pm_id"] = i.into();
                e["pm2_env"]["name"] = format!("app{i}").into();
                e["monit"] = serde_json::json!({
                    "memory": 50_000_000 + ((i * 7 + k * 13) % 1000) * 1000,
                    "cpu": 10 + (i + k) % 80,
                });
                e
            })
            .collect();
        rpc::encode_reply(vec![serde_json::Value::Array(apps)], "b:1").encode()
    };
    let replies: Vec<Vec<u8>> = (0..POLLS).map(poll).collect();
    assert!(replies.iter().all(|r| r.len() == replies[0].len()));
    let reply_len = replies[0].len();
    let replies = Arc::new(replies);

    let dir = tempfile::Builder::new()
        .prefix("p2t-bulk-")
        .tempdir_in("/tmp")
        .unwrap();
    let home: PathBuf = dir.path().to_owned();
    serve(
        UnixListener::bind(home.join("rpc.sock")).unwrap(),
        replies.clone(),
    );
    silent_bus(UnixListener::bind(home.join("pub.sock")).unwrap());

    let direct = fetch(&home.join("rpc.sock"), reply_len, UNPACED_SECONDS, None);
    let unpaced = session(&home, reply_len, UNPACED_SECONDS, None);
    let rate = |f: &Fetched| f.bytes as f64 / f.seconds / 1e9;
    eprintln!(
        "unpaced: forwarded {:.2} GB/s, {} replies, {} recorded, {} copies dropped, caught up {:.2} s after; CPU: {}",
        rate(&unpaced.fetched),
        unpaced.fetched.replies,
        unpaced.replies_recorded,
        unpaced.lost_taps,
        unpaced.catch_up,
        cpu_text(&unpaced)
    );

    // Paced: the highest rate recorded in full.
    let rates: Vec<f64> = std::env::var("PM2_TRACE_BENCH_RATES")
        .ok()
        .map(|s| s.split(',').filter_map(|r| r.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0]);
    let mut best: Option<(f64, Session)> = None;
    for r in rates {
        // Long enough that a recorder slower than the rate would overrun the tap's budget.
        let seconds = (0.6 / r).clamp(2.0, 6.0);
        let s = session(&home, reply_len, seconds, Some(r * 1e9));
        eprintln!(
            "paced {r:.2} GB/s for {seconds:.1} s: forwarded {:.2} GB/s, {} replies, {} recorded, {} copies dropped, {} events dropped, caught up {:.2} s after, capture {:.0} MB; CPU: {}",
            rate(&s.fetched),
            s.fetched.replies,
            s.replies_recorded,
            s.lost_taps,
            s.dropped_events,
            s.catch_up,
            s.capture_bytes as f64 / 1e6,
            cpu_text(&s)
        );
        if !s.in_full() {
            break;
        }
        best = Some((rate(&s.fetched), s));
    }

    println!("| figure | target | measured | reference |");
    println!("|---|---|---|---|");
    println!(
        "| bulk forwarding through a recording, getMonitorData of {APPS} apps ({:.1} MB each) | >= 1 GB/s | {:.2} GB/s | direct {:.2} GB/s (ratio {:.2}); {} of {} replies recorded, {} copies dropped |",
        reply_len as f64 / 1e6,
        rate(&unpaced.fetched),
        rate(&direct),
        rate(&unpaced.fetched) / rate(&direct),
        unpaced.replies_recorded,
        unpaced.fetched.replies,
        unpaced.lost_taps
    );
    match &best {
        Some((r, s)) => println!(
            "| recorded in full (no copy dropped, caught up), record --quiet --redact {} | >= 1 GB/s | {r:.2} GB/s | CPU per GB forwarded: {} |",
            redact_name(),
            cpu_text(s)
        ),
        None => println!(
            "| recorded in full (no copy dropped, caught up), record --quiet --redact {} | >= 1 GB/s | below the lowest rate tried | |",
            redact_name()
        ),
    }
    println!("| CPU per GB, unpaced run | | {} | |", cpu_text(&unpaced));
}
