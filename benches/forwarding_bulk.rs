//! Bulk forwarding: a getMonitorData reply for 500 apps (made from a real pm2 7.0.4 entry),
//! fetched again and again, direct from a server and through the recorder's proxy, with
//! every tapped copy decoded (AMP framing and JSON) as the recorder does.
//!
//! Run: `cargo bench --bench forwarding_bulk` (prints a table; asserts only "nothing lost").

#[path = "../tests/support/pm2.rs"]
mod pm2;

use pm2_trace::sources::proxy::{tap_channel, Access, Proxy, Tap};
use pm2_trace::wire::amp::Decoder;
use pm2_trace::wire::rpc;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

const APPS: usize = 500;
const SECONDS: f64 = 3.0;

/// A server answering every request on a connection with `reply` (ids are not matched:
/// the client only counts bytes).
fn serve(listener: UnixListener, reply: Vec<u8>) {
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let reply = reply.clone();
            std::thread::spawn(move || {
                let mut dec = Decoder::default();
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    dec.push(&buf[..n]);
                    while let Some(Ok(_)) = dec.next() {
                        if s.write_all(&reply).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
}

/// Fetch the reply repeatedly for `SECONDS`; bytes per second.
fn fetch_rate(path: &Path, reply_len: usize) -> f64 {
    let mut s = UnixStream::connect(path).unwrap();
    let req = rpc::encode_call("getMonitorData", vec![serde_json::json!({})], "b:1").encode();
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let mut total = 0usize;
    while start.elapsed().as_secs_f64() < SECONDS {
        s.write_all(&req).unwrap();
        let mut got = 0;
        while got < reply_len {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got += n;
        }
        total += got;
    }
    total as f64 / start.elapsed().as_secs_f64()
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
    let apps: Vec<serde_json::Value> = (0..APPS)
        .map(|i| {
            let mut e = entry.clone();
            e["pm_id"] = i.into();
            e["name"] = format!("app{i}").into();
            e["pm2_env"]["pm_id"] = i.into();
            e["pm2_env"]["name"] = format!("app{i}").into();
            e
        })
        .collect();
    let reply = rpc::encode_reply(vec![serde_json::Value::Array(apps)], "b:1").encode();

    let dir = tempfile::Builder::new()
        .prefix("p2t-bulk-")
        .tempdir_in("/tmp")
        .unwrap();
    let upstream = dir.path().join("daemon.sock");
    serve(UnixListener::bind(&upstream).unwrap(), reply.clone());
    let direct = fetch_rate(&upstream, reply.len());

    let proxy_path = dir.path().join("proxy.sock");
    let (tap, taps) = tap_channel(1 << 16, 256 << 20);
    let daemon = pm2_trace::safe_dir::SafeDir::open(dir.path())
        .unwrap()
        .open_socket("daemon.sock")
        .unwrap();
    let access = Access::of_socket(&daemon);
    let proxy = Proxy::start(
        UnixListener::bind(&proxy_path).unwrap(),
        daemon,
        access,
        tap,
    )
    .unwrap();
    // The recorder's side: decode every tapped copy fully.
    let recorder = std::thread::spawn(move || {
        let mut dec = Decoder::default();
        let (mut messages, mut bytes) = (0u64, 0u64);
        let mut batch = Vec::new();
        let mut busy = Duration::ZERO;
        while taps.recv_batch(&mut batch) {
            let t0 = Instant::now();
            for t in batch.drain(..) {
                if let Tap::Data {
                    bytes: b,
                    dir: pm2_trace::event::Direction::ToClient,
                    ..
                } = t
                {
                    bytes += b.len() as u64;
                    dec.push(&b);
                    while let Some(m) = dec.next() {
                        m.expect("tapped copies decode");
                        messages += 1;
                    }
                }
            }
            busy += t0.elapsed();
        }
        (messages, bytes, taps.lost(), busy)
    });
    let proxied = fetch_rate(&proxy_path, reply.len());
    drop(proxy);
    let (messages, recorded, lost, busy) = recorder.join().unwrap();
    let mb = |r: f64| r / 1e9;
    println!("| figure | target | measured | reference |");
    println!("|---|---|---|---|");
    println!(
        "| bulk forwarding, getMonitorData of {APPS} apps ({:.1} MB each) | >= 1 GB/s | {:.2} GB/s | direct {:.2} GB/s (ratio {:.2}) |",
        reply.len() as f64 / 1e6,
        mb(proxied),
        mb(direct),
        proxied / direct
    );
    println!(
        "| recorder decode rate of tapped copies (AMP + JSON, one core) | | {:.2} GB/s | {messages} replies, {:.2} GB decoded in {:.2} s busy |",
        recorded as f64 / busy.as_secs_f64() / 1e9,
        recorded as f64 / 1e9,
        busy.as_secs_f64()
    );
    println!(
        "| copies lost (recorder behind; traffic unaffected, loss is noted in the capture) | 0 | {lost} | |"
    );
}
