//! `record --dir`: the capture as a series of segment files within a disk budget.
//!
//! Each segment is a complete capture (section header, interfaces, capture info, events),
//! so any one of them replays on its own. A [`SegmentWriter`] writes one stream (one PM2
//! home) and starts a new segment when the current one reaches its size or age, or when a
//! new recording session begins (a new daemon). Before each new segment the shared
//! [`Retention`] deletes the oldest segments of the directory (any stream) until the
//! finished ones plus one segment fit in `--keep`, and every segment older than
//! `--keep-for`. Incident files are never touched by it.
//!
//! A write failure (disk full) ends the current segment the way a single capture ends
//! (cut back to its last whole record, with a stop marker); the writer deletes old
//! segments and tries a new segment [`RETRY_AFTER`] later. Events in between are counted.

use super::store::Store;
use crate::capture::dir::{self, segment_file_name};
use crate::capture::writer::{CaptureSummary, CaptureWriter};
use crate::capture::CaptureError;
use crate::event::{wall_now_ns, CaptureInfo, Stamped};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// After a write failure, how long until a new segment is tried.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);
/// Smallest and largest automatic segment size.
const MIN_SEGMENT: u64 = 64 * 1024;
const MAX_SEGMENT: u64 = 16 * 1024 * 1024;
/// A segment is started at least this often, so `--keep-for` can delete by the hour.
const MAX_SEGMENT_AGE: Duration = Duration::from_secs(3600);
/// How often `--keep-for` is applied between rotations.
const AGE_CHECK_EVERY: Duration = Duration::from_secs(10);

/// The directory's bounds.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Bytes all segments may take (`--keep`).
    pub keep: u64,
    /// Segments older than this are deleted (`--keep-for`).
    pub keep_for: Option<Duration>,
}

impl Budget {
    /// Size of one segment: a sixteenth of the budget, between 64 KiB and 16 MiB.
    pub fn segment_bytes(&self) -> u64 {
        (self.keep / 16).clamp(MIN_SEGMENT, MAX_SEGMENT)
    }

    /// Age at which a segment is ended: a sixteenth of `--keep-for`, at most an hour.
    pub fn segment_age(&self) -> Duration {
        self.keep_for
            .map_or(MAX_SEGMENT_AGE, |d| (d / 16).max(Duration::from_secs(1)))
            .min(MAX_SEGMENT_AGE)
    }
}

/// The directory and its bounds, shared by every stream writing into it.
#[derive(Debug)]
pub struct Retention {
    pub dir: PathBuf,
    pub budget: Budget,
    /// Segments being written (never deleted).
    open: Mutex<HashSet<PathBuf>>,
}

/// What [`Retention::enforce`] deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    pub files: u64,
    pub bytes: u64,
}

impl Retention {
    /// Use `dir` (created 0700 when missing; a symlink is refused).
    pub fn open(dir: &Path, budget: Budget) -> anyhow::Result<Arc<Retention>> {
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => anyhow::bail!(
                "{} exists and is not a directory (a symlink is refused too)",
                dir.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            }
            Err(e) => anyhow::bail!("cannot use {}: {e}", dir.display()),
        }
        Ok(Arc::new(Retention {
            dir: dir.to_owned(),
            budget,
            open: Mutex::new(HashSet::new()),
        }))
    }

    fn set_open(&self, path: &Path, open: bool) {
        if let Ok(mut g) = self.open.lock() {
            if open {
                g.insert(path.to_owned());
            } else {
                g.remove(path);
            }
        }
    }

    /// Delete the oldest finished segments until all segments plus `reserve` bytes fit the
    /// budget, and those older than `--keep-for`.
    pub fn enforce(&self, reserve: u64) -> Deleted {
        let mut deleted = Deleted::default();
        let Ok(segments) = dir::list_segments(&self.dir) else {
            return deleted;
        };
        let open = self.open.lock().map(|g| g.clone()).unwrap_or_default();
        let mut total: u64 = segments.iter().map(|s| s.bytes).sum();
        let too_old = self
            .budget
            .keep_for
            .map(|d| wall_now_ns() - d.as_nanos() as i128);
        for s in &segments {
            if open.contains(&s.path) {
                continue;
            }
            let over = total.saturating_add(reserve) > self.budget.keep;
            let old = too_old.is_some_and(|limit| s.modified_ns < limit);
            if !(over || old) {
                continue;
            }
            if std::fs::remove_file(&s.path).is_ok() {
                deleted.files += 1;
                deleted.bytes += s.bytes;
                total -= s.bytes;
            }
        }
        deleted
    }
}

/// Writes one stream's segments. See the module documentation.
pub struct SegmentWriter {
    retention: Arc<Retention>,
    stream: String,
    next_seq: u64,
    info: Option<CaptureInfo>,
    current: Option<(CaptureWriter, Instant, PathBuf)>,
    /// When the last write failure happened (a new segment is tried after RETRY_AFTER).
    failed_at: Option<Instant>,
    last_age_check: Instant,
    summary: CaptureSummary,
    /// Events that arrived while no segment could be written.
    pub lost: u64,
    /// Since the last failure: (when, why, events lost), noted in the next segment.
    outage: Option<(i128, String, u64)>,
}

impl SegmentWriter {
    /// A writer for the stream recording `home`; numbering goes on after the segments of
    /// that stream already in the directory.
    pub fn new(retention: Arc<Retention>, home: &Path) -> SegmentWriter {
        let stream = dir::stream_name(home);
        let next_seq = dir::list_segments(&retention.dir)
            .unwrap_or_default()
            .iter()
            .filter(|s| s.stream == stream)
            .map(|s| s.seq + 1)
            .max()
            .unwrap_or(1);
        SegmentWriter {
            retention,
            stream,
            next_seq,
            info: None,
            current: None,
            failed_at: None,
            last_age_check: Instant::now(),
            summary: CaptureSummary::default(),
            lost: 0,
            outage: None,
        }
    }

    /// The stream's name (part of each segment's file name).
    pub fn stream(&self) -> &str {
        &self.stream
    }

    fn close_current(&mut self) {
        if let Some((w, _, path)) = self.current.take() {
            match w.finish() {
                Ok(s) => {
                    self.summary.records += s.records;
                    self.summary.bytes += s.bytes;
                    self.summary.too_large += s.too_large;
                }
                Err(e) => {
                    eprintln!("pm2-trace: {e}");
                    self.summary.stopped.get_or_insert(e.to_string());
                    // A segment that could not be closed whole (a full disk found by its last
                    // flush, at rotation) lost events like a failed write: the next segment
                    // says so, and waits as after a failed write.
                    self.outage.get_or_insert((wall_now_ns(), e.to_string(), 0));
                    self.failed_at = Some(Instant::now());
                }
            }
            self.retention.set_open(&path, false);
        }
    }

    /// Start a new segment (after making room for it).
    fn open_next(&mut self) -> Result<(), CaptureError> {
        let Some(info) = self.info.clone() else {
            return Ok(());
        };
        self.retention
            .enforce(self.retention.budget.segment_bytes());
        let mut attempts = 0;
        loop {
            let name = segment_file_name(&self.stream, wall_now_ns(), self.next_seq);
            self.next_seq += 1;
            let path = self.retention.dir.join(name);
            // Marked open before it exists, so another stream's retention never takes it.
            self.retention.set_open(&path, true);
            match CaptureWriter::create(&path, &info, false) {
                Ok(w) => {
                    self.current = Some((w, Instant::now(), path));
                    self.failed_at = None;
                    return Ok(());
                }
                Err(e) => {
                    self.retention.set_open(&path, false);
                    let exists = matches!(&e, CaptureError::Io { error, .. } if error.kind() == std::io::ErrorKind::AlreadyExists);
                    attempts += 1;
                    if !exists || attempts > 3 {
                        // A header that could not be written leaves a stub: take it away.
                        let _ = std::fs::remove_file(&path);
                        return Err(e);
                    }
                }
            }
        }
    }

    fn rotate_due(&self) -> bool {
        self.current.as_ref().is_some_and(|(w, started, _)| {
            w.len_with_buffered() >= self.retention.budget.segment_bytes()
                || started.elapsed() >= self.retention.budget.segment_age()
        })
    }

    /// Make sure a segment is open when one should be; false when none can be.
    fn ensure_open(&mut self) -> bool {
        if self.rotate_due() {
            self.close_current();
        }
        if self.current.is_some() {
            return true;
        }
        if self.failed_at.is_some_and(|t| t.elapsed() < RETRY_AFTER) {
            return false;
        }
        match self.open_next() {
            Ok(()) => {
                self.note_outage();
                self.current.is_some()
            }
            Err(e) => {
                eprintln!(
                    "pm2-trace: cannot start a new segment: {e}; trying again in {} s (pm2 traffic is forwarded meanwhile)",
                    RETRY_AFTER.as_secs()
                );
                self.outage.get_or_insert((wall_now_ns(), e.to_string(), 0));
                self.failed_at = Some(Instant::now());
                false
            }
        }
    }
}

impl SegmentWriter {
    /// After a write failure, say in the new segment what was not recorded.
    fn note_outage(&mut self) {
        let Some((since, why, lost)) = self.outage.take() else {
            return;
        };
        let Some((w, _, _)) = self.current.as_mut() else {
            return;
        };
        let ev = Stamped {
            t: crate::event::mono_now(),
            event: crate::event::Event::Note {
                level: crate::event::NoteLevel::Warning,
                text: format!(
                    "{} not recorded from {} to {}: the capture could not be written ({why})",
                    match lost {
                        0 => "Events were".to_owned(),
                        1 => "1 event was".to_owned(),
                        n => format!("{n} events were"),
                    },
                    dir::utc_stamp(since),
                    dir::utc_stamp(wall_now_ns())
                ),
            },
        };
        let _ = w.write(&ev, &super::comment::comment(&ev.event, &[]));
    }
}

impl Store for SegmentWriter {
    fn begin(&mut self, info: &CaptureInfo) -> Result<(), CaptureError> {
        self.close_current();
        self.info = Some(info.clone());
        self.failed_at = None;
        self.open_next()
    }

    fn write(&mut self, ev: &Stamped, comment: &str) -> Result<(), CaptureError> {
        if !self.ensure_open() {
            self.lost += 1;
            if let Some(o) = self.outage.as_mut() {
                o.2 += 1;
            }
            return Ok(());
        }
        let Some((w, _, _)) = self.current.as_mut() else {
            return Ok(());
        };
        match w.write(ev, comment) {
            Ok(()) => Ok(()),
            Err(e @ CaptureError::TooLarge { .. }) => Err(e),
            Err(e) => {
                // The segment ended with a stop marker; make room and try again later.
                eprintln!("pm2-trace: {e}; a new segment is tried in {} s after deleting the oldest (pm2 traffic is forwarded meanwhile)", RETRY_AFTER.as_secs());
                self.lost += 1;
                self.outage.get_or_insert((wall_now_ns(), e.to_string(), 1));
                self.close_current();
                self.failed_at = Some(Instant::now());
                self.retention
                    .enforce(2 * self.retention.budget.segment_bytes());
                Ok(())
            }
        }
    }

    fn flush(&mut self) {
        if let Some((w, _, _)) = self.current.as_mut() {
            w.flush();
            if let Some(why) = w.stopped() {
                self.outage
                    .get_or_insert((wall_now_ns(), why.to_owned(), 0));
                self.close_current();
                self.failed_at = Some(Instant::now());
            }
        }
        if self.retention.budget.keep_for.is_some()
            && self.last_age_check.elapsed() >= AGE_CHECK_EVERY
        {
            self.last_age_check = Instant::now();
            self.retention.enforce(0);
        }
        if self.rotate_due() {
            self.close_current();
            self.ensure_open();
        }
    }

    fn end(&mut self) -> Result<CaptureSummary, CaptureError> {
        self.close_current();
        Ok(self.summary.clone())
    }

    fn describe(&self) -> String {
        format!("{} (stream {})", self.retention.dir.display(), self.stream)
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        self.close_current();
    }
}

/// Parse a size like `256MB`, `1GB`, `512KB`, `100M` or plain bytes. Units are binary
/// (1 MB = 1024 * 1024 bytes), as in dumpcap's ring buffer.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 256MB, 1GB or 500KB"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        u => return Err(format!("unknown unit `{u}` in `{s}`: use KB, MB, GB or TB")),
    };
    let bytes = n * mult as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{s}` must be a positive size"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, NoteLevel};

    fn info() -> CaptureInfo {
        CaptureInfo {
            tool: "pm2-trace".into(),
            wall_ref_ns: wall_now_ns(),
            mono_ref_ns: crate::event::mono_now(),
            ..Default::default()
        }
    }

    fn note(i: u64, len: usize) -> Stamped {
        Stamped {
            t: crate::event::mono_now(),
            event: Event::Note {
                level: NoteLevel::Info,
                text: format!("{i} {}", "x".repeat(len)),
            },
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("256MB"), Ok(256 << 20));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("512kb"), Ok(512 << 10));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5PB").is_err());
        assert!(parse_size("").is_err());
    }

    /// Writing many times the budget keeps the directory within budget plus one segment,
    /// never deletes incident files, and every segment left replays on its own.
    #[test]
    fn the_budget_holds_and_segments_stand_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dirp = tmp.path().join("d");
        let budget = Budget {
            keep: 1 << 20,
            keep_for: None,
        };
        let seg = budget.segment_bytes();
        assert_eq!(seg, 64 * 1024);
        let ret = Retention::open(&dirp, budget.clone()).unwrap();
        let incident = dirp.join("incident-20261126T031204Z-api.pcapng");
        std::fs::write(&incident, b"kept").unwrap();
        let mut w = SegmentWriter::new(ret.clone(), Path::new("/home/app/.pm2"));
        w.begin(&info()).unwrap();
        let mut max_total = 0;
        for i in 0..20_000u64 {
            w.write(&note(i, 500), "n").unwrap();
            if i % 100 == 0 {
                w.flush();
                let total: u64 = dir::list_segments(&dirp)
                    .unwrap()
                    .iter()
                    .map(|s| s.bytes)
                    .sum();
                max_total = max_total.max(total);
            }
        }
        w.end().unwrap();
        // 20,000 notes of ~600 bytes: about ten times the budget.
        let segs = dir::list_segments(&dirp).unwrap();
        let total: u64 = segs.iter().map(|s| s.bytes).sum();
        assert!(
            max_total <= budget.keep + seg + (256 << 10),
            "{max_total} > bound"
        );
        assert!(total <= budget.keep + seg, "{total}");
        assert!(segs.len() >= 10, "{}", segs.len());
        assert_eq!(std::fs::read(&incident).unwrap(), b"kept");
        // Numbering goes on; the oldest were deleted, so the first left is not 1.
        assert!(segs[0].seq > 1);
        for s in &segs {
            let r = crate::capture::CaptureReader::open(&s.path).unwrap();
            let n = r.inspect(|e| assert!(e.is_ok())).count();
            assert!(n > 0, "{}", s.path.display());
        }
        // A new writer for the same stream numbers after the existing segments.
        let w2 = SegmentWriter::new(ret, Path::new("/home/app/.pm2"));
        assert_eq!(w2.next_seq, segs.last().unwrap().seq + 1);
    }

    #[test]
    fn keep_for_deletes_old_segments() {
        let tmp = tempfile::tempdir().unwrap();
        let ret = Retention::open(
            tmp.path(),
            Budget {
                keep: 1 << 30,
                keep_for: Some(Duration::from_secs(3600)),
            },
        )
        .unwrap();
        let old = tmp.path().join(segment_file_name("s", 0, 1));
        std::fs::write(&old, b"x").unwrap();
        // Two hours ago.
        let then = std::time::SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(then)
            .unwrap();
        let fresh = tmp.path().join(segment_file_name("s", wall_now_ns(), 2));
        std::fs::write(&fresh, b"x").unwrap();
        assert_eq!(ret.enforce(0).files, 1);
        assert!(!old.exists());
        assert!(fresh.exists());
    }

    #[test]
    fn a_symlink_is_not_a_directory_to_write_into() {
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("l");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        let b = Budget {
            keep: 1 << 20,
            keep_for: None,
        };
        assert!(Retention::open(&link, b).is_err());
    }
}
