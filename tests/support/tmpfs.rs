//! A small tmpfs mounted for one test (how a full disk looks to a writer), unmounted on drop.
//! Needs root and permission to mount a tmpfs (as on the project's machines and CI).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mount a tmpfs of `size` (mount(8) syntax: `64k`, `2m`) on `dir` (created if missing).
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("create the mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "pm2-trace-test",
            ])
            .arg(dir)
            .output()
            .expect("cannot run mount(8)");
        assert!(
            out.status.success(),
            "this test needs root and permission to mount a tmpfs (mount -t tmpfs failed: {})",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
