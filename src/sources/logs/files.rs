//! Which files hold a log: the live file and its rotated copies, oldest first.
//!
//! Rotated names recognised, for a live file `DIR/NAME.log`:
//! - pm2-logrotate: `DIR/NAME__<date>.log`, compressed `DIR/NAME__<date>.log.gz`
//!   (pm2-logrotate's `app.js`: the `.log` suffix is cut, `__` + the date appended);
//! - logrotate(8): `DIR/NAME.log.<n>`, `DIR/NAME.log-<date>`, each optionally `.gz`.
//!
//! Copies are ordered by modification time (a rotated copy is written when it is rotated,
//! so its mtime is the instant of its last line), the live file last.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// One file of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFileInfo {
    pub path: PathBuf,
    /// gzip-compressed (`.gz`).
    pub compressed: bool,
    /// A rotated copy (not the live file).
    pub rotated: bool,
    /// Last modification, ms since the epoch.
    pub mtime_ms: Option<i64>,
    pub size: u64,
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

fn mtime_ms(m: &std::fs::Metadata) -> Option<i64> {
    m.modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as i64)
}

/// The live file `live` (if it exists) and its rotated copies, oldest first; directory or
/// metadata errors are returned as [`Unreadable`].
pub fn with_rotations(live: &Path) -> (Vec<LogFileInfo>, Vec<Unreadable>) {
    let mut files = Vec::new();
    let mut bad = Vec::new();
    let (Some(dir), Some(name)) = (live.parent(), live.file_name().and_then(|n| n.to_str())) else {
        return (files, bad);
    };
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            for ent in rd.flatten() {
                let fname = ent.file_name();
                let Some(f) = fname.to_str() else { continue };
                if !is_rotation_of(name, f) {
                    continue;
                }
                let path = ent.path();
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.file_type().is_file() => files.push(LogFileInfo {
                        compressed: f.ends_with(".gz"),
                        rotated: true,
                        mtime_ms: mtime_ms(&m),
                        size: m.len(),
                        path,
                    }),
                    Ok(_) => bad.push(Unreadable {
                        path,
                        error: "not a regular file (a symlink or special file is not followed)"
                            .into(),
                    }),
                    Err(e) => bad.push(Unreadable {
                        path,
                        error: e.to_string(),
                    }),
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bad.push(Unreadable {
            path: dir.to_path_buf(),
            error: format!("cannot list the directory for rotated copies: {e}"),
        }),
    }
    files.sort_by(|a, b| a.mtime_ms.cmp(&b.mtime_ms).then(a.path.cmp(&b.path)));
    match std::fs::symlink_metadata(live) {
        Ok(m) if m.file_type().is_file() => files.push(LogFileInfo {
            path: live.to_path_buf(),
            compressed: false,
            rotated: false,
            mtime_ms: mtime_ms(&m),
            size: m.len(),
        }),
        Ok(_) => bad.push(Unreadable {
            path: live.to_path_buf(),
            error: "not a regular file (a symlink or special file is not followed)".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bad.push(Unreadable {
            path: live.to_path_buf(),
            error: e.to_string(),
        }),
    }
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
