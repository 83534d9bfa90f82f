//! Which files hold a log: the live file and its rotated copies, oldest first.
//!
//! Rotated names recognised, for a live file `DIR/NAME.log`:
//! - pm2-logrotate: `DIR/NAME__<date>.log`, compressed `DIR/NAME__<date>.log.gz`
//!   (pm2-logrotate's `app.js`: the `.log` suffix is cut, `__` + the date appended);
//! - logrotate(8): `DIR/NAME.log.<n>`, `DIR/NAME.log-<date>`, each optionally `.gz`.
//!
//! Copies are ordered by modification time (a rotated copy is written when it is rotated,
//! so its mtime is the instant of its last line), the live file last.

use crate::safe_dir::SafeDir;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One file of a log, and the directory it is opened through.
#[derive(Debug, Clone)]
pub struct LogFileInfo {
    pub path: PathBuf,
    /// Its name in `dir`.
    pub name: OsString,
    /// The directory, opened once ([`SafeDir`]): the file is opened and re-checked through
    /// its descriptor, never by path.
    pub dir: Arc<SafeDir>,
    /// gzip-compressed (`.gz`).
    pub compressed: bool,
    /// A rotated copy (not the live file).
    pub rotated: bool,
    /// Last modification, ms since the epoch.
    pub mtime_ms: Option<i64>,
    pub size: u64,
}

impl LogFileInfo {
    /// Open it for reading: no symlink, a regular file with one link, owned by the
    /// directory's owner or root ([`SafeDir::open_read`]).
    pub fn open(&self) -> Result<File, String> {
        self.dir.open_read(&self.name).map_err(|e| e.to_string())
    }

    /// (device, inode, length) of what is at its name now, `None` when nothing is.
    pub fn identity_now(&self) -> Option<(u64, u64, u64)> {
        let st = self.dir.stat(&self.name).ok()??;
        Some((st.st_dev, st.st_ino, st.st_size as u64))
    }
}

/// A file that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unreadable {
    pub path: PathBuf,
    pub error: String,
}

/// Whether `candidate` (a file name in the same directory) is a rotated copy of `live`.
pub fn is_rotation_of(live: &str, candidate: &str) -> bool {
    if candidate == live {
        return false;
    }
    let c = candidate.strip_suffix(".gz").unwrap_or(candidate);
    // pm2-logrotate: NAME__<date>.log
    if let Some(stem) = live.strip_suffix(".log") {
        if let Some(date) = c
            .strip_prefix(stem)
            .and_then(|r| r.strip_prefix("__"))
            .and_then(|r| r.strip_suffix(".log"))
        {
            return !date.is_empty()
                && date
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b"-_:T.".contains(&b));
        }
    }
    // logrotate: NAME.log.<n> or NAME.log-<date>
    if let Some(rest) = c.strip_prefix(live) {
        if let Some(n) = rest.strip_prefix('.').or_else(|| rest.strip_prefix('-')) {
            return !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_digit() || b == b'-' || b == b'_');
        }
    }
    // A compressed live name (`NAME.log.gz`) is a rotated copy too.
    candidate != c && c == live
}

fn mtime_ms(st: &rustix::fs::Stat) -> i64 {
    st.st_mtime * 1000 + st.st_mtime_nsec as i64 / 1_000_000
}

/// The live file `live` (if it exists) and its rotated copies, oldest first; what could not
/// be listed or is not a regular file is returned as [`Unreadable`].
pub fn with_rotations(live: &Path) -> (Vec<LogFileInfo>, Vec<Unreadable>) {
    let mut files = Vec::new();
    let mut bad = Vec::new();
    let Some(name) = live.file_name().and_then(|n| n.to_str()) else {
        return (files, bad);
    };
    let dir = match SafeDir::open_parent(live) {
        Ok((d, _)) => Arc::new(d),
        Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => return (files, bad),
        Err(e) => {
            bad.push(Unreadable {
                path: live.to_path_buf(),
                error: e.to_string(),
            });
            return (files, bad);
        }
    };
    let mut names: Vec<(String, bool)> = match dir.entries() {
        Ok(list) => list
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter(|n| is_rotation_of(name, n))
            .map(|n| (n, true))
            .collect(),
        Err(e) => {
            bad.push(Unreadable {
                path: dir.path().to_path_buf(),
                error: format!("cannot list the directory for rotated copies: {e}"),
            });
            Vec::new()
        }
    };
    names.push((name.to_owned(), false));
    for (n, rotated) in names {
        let path = dir.display(&n);
        match dir.stat(&n) {
            Ok(Some(st)) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_file() => files
                .push(LogFileInfo {
                    compressed: n.ends_with(".gz"),
                    rotated,
                    mtime_ms: Some(mtime_ms(&st)),
                    size: st.st_size as u64,
                    name: n.into(),
                    dir: dir.clone(),
                    path,
                }),
            Ok(Some(_)) => bad.push(Unreadable {
                path,
                error: "not a regular file (a symlink or special file is not followed)".into(),
            }),
            Ok(None) => {}
            Err(e) => bad.push(Unreadable {
                path,
                error: e.to_string(),
            }),
        }
    }
    // Oldest first, the live file last.
    files.sort_by(|a, b| {
        a.rotated
            .cmp(&b.rotated)
            .reverse()
            .then(a.mtime_ms.cmp(&b.mtime_ms))
            .then(a.path.cmp(&b.path))
    });
    (files, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names() {
        for c in [
            "pm2__2026-11-25_00-00-00.log",
            "pm2__2026-11-25_00-00-00.log.gz",
            "pm2.log.1",
            "pm2.log.2.gz",
            "pm2.log-20261125",
            "pm2.log-20261125.gz",
            "pm2.log.gz",
        ] {
            assert!(is_rotation_of("pm2.log", c), "{c}");
        }
        for c in [
            "pm2.log",
            "pm2.pid",
            "pm2-other.log",
            "pm2__.log",
            "pm2.log.bak",
            "web-out__2026-11-25_00-00-00.log",
            "pm2.log.1.txt",
        ] {
            assert!(!is_rotation_of("pm2.log", c), "{c}");
        }
        assert!(is_rotation_of(
            "web-error.log",
            "web-error__2026-11-25_00-00-00.log"
        ));
        assert!(!is_rotation_of("web.log", "web-error__2026.log"));
    }

    #[test]
    fn oldest_first_live_last() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("pm2.log");
        let old = dir.path().join("pm2__2026-11-24_00-00-00.log");
        let older = dir.path().join("pm2.log.2.gz");
        std::fs::write(&older, b"").unwrap();
        std::fs::write(&old, b"x").unwrap();
        std::fs::write(&live, b"y").unwrap();
        std::fs::write(dir.path().join("pm2.pid"), b"1").unwrap();
        let t =
            |s: i64| std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s as u64);
        std::fs::File::options()
            .write(true)
            .open(&older)
            .unwrap()
            .set_modified(t(1000))
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(t(2000))
            .unwrap();
        let (files, bad) = with_rotations(&live);
        assert!(bad.is_empty(), "{bad:?}");
        let names: Vec<_> = files
            .iter()
            .map(|f| f.path.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["pm2.log.2.gz", "pm2__2026-11-24_00-00-00.log", "pm2.log"]
        );
        assert!(files[0].compressed && files[0].rotated);
        assert!(!files[2].rotated);
    }

    #[test]
    fn symlinked_live_file_is_named_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("target"), b"secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join("pm2.log")).unwrap();
        let (files, bad) = with_rotations(&dir.path().join("pm2.log"));
        assert!(files.is_empty());
        assert_eq!(bad.len(), 1);
        assert!(bad[0].error.contains("not followed"));
    }
}
