//! Running the release `pm2-trace` binary from a benchmark, measured.

use std::process::{Command, Stdio};
use std::time::Instant;

/// Run the binary with `args`, output thrown away; (seconds, peak RSS in kB, exit status).
pub fn run(args: &[&str]) -> (f64, i64, i32) {
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
    (t0.elapsed().as_secs_f64(), usage.ru_maxrss, status)
}
