//! Runs Debian's `tshark` on a capture the way the tests need it: the capture on stdin
//! (captures are 0600), as `nobody` when we are root (as root tshark warns on stderr that
//! running as root "could be dangerous", and reads root's preferences), UTC times and a
//! fixed locale. Asserts that tshark succeeded and printed nothing on stderr; fails with a
//! message naming the package when tshark is missing.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// `tshark <pre> -r - <args>` on `capture`: its standard output.
pub fn run(pre: &[String], capture: &Path, args: &[&str], locale: &str) -> String {
    let file =
        std::fs::File::open(capture).unwrap_or_else(|e| panic!("{}: {e}", capture.display()));
    let mut cmd = Command::new("tshark");
    cmd.args(pre)
        .arg("-r")
        .arg("-")
        .args(args)
        .stdin(Stdio::from(file));
    cmd.env("TZ", "UTC").env("LC_ALL", locale);
    if unsafe { libc::geteuid() } == 0 {
        // nobody's home (/nonexistent): tshark reads no personal preferences.
        cmd.uid(65534).gid(65534).env("HOME", "/nonexistent");
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("tshark is missing: install Debian's tshark package (apt-get install -y tshark)")
        }
        Err(e) => panic!("cannot run tshark: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tshark {args:?} on {} failed: {}\n{stderr}",
        capture.display(),
        out.status
    );
    assert_eq!(
        stderr,
        "",
        "tshark {args:?} printed warnings on {}",
        capture.display()
    );
    String::from_utf8(out.stdout).expect("tshark prints UTF-8")
}
