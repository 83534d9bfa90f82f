//! Running the release `pm2-trace` binary from a benchmark, measured.

use std::process::{Command, Stdio};
use std::time::Instant;

/// Run the binary with `args`, output thrown away; (seconds, peak RSS in kB, exit status).
#[allow(dead_code)]
pub fn run(args: &[&str]) -> (f64, i64, i32) {
    let (secs, _, rss, status) = run_cpu(args);
    (secs, rss, status)
}

/// [`run`], with the CPU time (user + system) the child used: (seconds, CPU seconds, peak
/// RSS in kB, exit status).
pub fn run_cpu(args: &[&str]) -> (f64, f64, i64, i32) {
    let t0 = Instant::now();
    // Reaped by wait4 below, which also gives the peak memory.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(env!("CARGO_BIN_EXE_pm2-trace"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, with out-pointers to locals.
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    (t0.elapsed().as_secs_f64(), cpu, usage.ru_maxrss, status)
}
