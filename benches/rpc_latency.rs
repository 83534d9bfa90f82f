//! Added latency of the recorder's proxy per RPC round trip, measured in one run against a
//! real PM2 7.0.4 daemon: direct, through `pm2-trace record`, through plain `socat`, and
//! through `socat -x -v` (the usual way to sniff a unix socket).
//!
//! Run: `cargo bench --bench rpc_latency` (prints a table; asserts nothing).

#[path = "../tests/support/pm2.rs"]
#[allow(dead_code)]
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

fn round_trips(path: &Path, n: usize) -> Vec<f64> {
    let mut s = UnixStream::connect(path).expect("connect");
    let mut dec = Decoder::default();
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let req = rpc::encode_call("getVersion", vec![serde_json::json!({})], &format!("bench:{i}")).encode();
        let t0 = Instant::now();
        s.write_all(&req).unwrap();
        loop {
            if let Some(m) = dec.next() {
                m.unwrap();
                break;
            }
            let k = s.read(&mut buf).unwrap();
            assert!(k > 0, "connection closed");
            dec.push(&buf[..k]);
        }
        out.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    out
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn measure(name: &str, path: &Path) -> (f64, f64) {
    round_trips(path, WARMUP);
    let (med, p99) = stats(round_trips(path, ROUNDS));
    eprintln!("  {name:<22} median {med:8.1} µs   p99 {p99:8.1} µs");
    (med, p99)
}

fn wait_for(path: &Path) {
    let end = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(path).is_err() {
        assert!(Instant::now() < end, "{} never came up", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let pm2 = pm2::Pm2::start("7.0.4");
    let rpc_sock = pm2.rpc_sock();
    eprintln!("rpc round trip (getVersion), pm2 7.0.4, {ROUNDS} rounds after {WARMUP} warm-up, one connection each:");
    let direct = measure("direct", &rpc_sock);

    let socat_path = pm2.home().join("socat.sock");
    let mut socat = Command::new("socat")
        .arg(format!("UNIX-LISTEN:{},fork", socat_path.display()))
        .arg(format!("UNIX-CONNECT:{}", rpc_sock.display()))
        .stderr(Stdio::null())
        .spawn()
        .expect("socat is missing: apt-get install socat");
    wait_for(&socat_path);
    let socat_plain = measure("socat", &socat_path);
    let _ = socat.kill();
    let _ = std::fs::remove_file(&socat_path);

    let mut socat_v = Command::new("socat")
        .args(["-x", "-v"])
        .arg(format!("UNIX-LISTEN:{},fork", socat_path.display()))
        .arg(format!("UNIX-CONNECT:{}", rpc_sock.display()))
        .stderr(Stdio::null())
        .spawn()
        .expect("socat is missing");
    wait_for(&socat_path);
    let socat_xv = measure("socat -x -v", &socat_path);
    let _ = socat_v.kill();

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
    let aside = pm2.home().join("rpc.sock.pm2-trace-daemon");
    let end = Instant::now() + Duration::from_secs(10);
    while !aside.exists() {
        assert!(Instant::now() < end, "recorder did not interpose");
        std::thread::sleep(Duration::from_millis(20));
    }
    let traced = measure("pm2-trace record", &rpc_sock);
    unsafe { libc::kill(rec.id() as i32, libc::SIGINT) };
    let _ = rec.wait();
    let cap_len = std::fs::metadata(&cap).map(|m| m.len()).unwrap_or(0);

    let added = |x: (f64, f64)| (x.0 - direct.0, x.1 - direct.1);
    let (t_med, t_p99) = added(traced);
    let (s_med, _) = added(socat_plain);
    let (v_med, _) = added(socat_xv);
    println!("figure,target,measured,reference");
    println!("added median latency (pm2-trace),< 20 µs,{t_med:.1} µs,socat {s_med:.1} µs / socat -x -v {v_med:.1} µs");
    println!("added p99 latency (pm2-trace),< 100 µs,{t_p99:.1} µs,");
    println!("ratio to socat -x -v added median,< 0.33,{:.2},", t_med / v_med);
    println!("capture written,,{cap_len} bytes,");
}
