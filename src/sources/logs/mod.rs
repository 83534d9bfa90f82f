//! The log source: `pm2.log` and each app's out/err logs (rotated and compressed copies
//! too) read back as typed events, each line placed by its own timestamp with the precision
//! that timestamp has.
//!
//! [`LogSet::read`] streams every log within a time window and yields one merged sequence
//! of [`LogLine`]s in time order; lines without any timestamp (app logs written without
//! `--time`) cannot be placed, and are kept apart as each log's last lines
//! ([`LogReport::undated`]). Nothing here panics on what a file holds, and nothing is held
//! whole in memory: lines are cut at [`read::MAX_LINE`] bytes, undated tails are bounded.

pub mod files;
pub mod read;
pub mod stamp;

use crate::pm2::daemon_log::split_prefix;
use files::{LogFileInfo, Unreadable};
use read::{LineReader, RawLine};
use serde::{Deserialize, Serialize};
use stamp::{json_line, split_app_stamp, LinePrecision, StampCache};
use std::collections::{BinaryHeap, VecDeque};
use std::io::Read;
use std::path::PathBuf;

/// Which log a line is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// `pm2.log`: the daemon's own lines.
    Daemon,
    /// An app's stdout log.
    Out,
    /// An app's stderr log.
    Err,
}

/// The app a log belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogApp {
    pub name: String,
    pub pm_id: Option<u64>,
}

/// One line of a log, as a typed event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub stream: LogStream,
    /// For app logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<LogApp>,
    /// Index of the file in [`LogReport::files`].
    pub file: u32,
    /// Byte offset of the line in that (decompressed) file.
    pub offset: u64,
    /// The line's own time, ms since the epoch (None: undated).
    pub at_ms: Option<i64>,
    pub precision: LinePrecision,
    /// The stamp was carried over from an earlier line of the same file (a continuation
    /// line, such as a stack trace's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inherited: bool,
    /// pm2.log level (`log`, `error`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// The line without its stamp prefix.
    pub text: String,
    /// The line was longer than [`read::MAX_LINE`] bytes and is cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
}

/// One log to read: the live file (its rotated copies are found next to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSpec {
    pub stream: LogStream,
    pub app: Option<LogApp>,
    pub live: PathBuf,
}

/// What was read of one file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    pub stream: LogStream,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<LogApp>,
    pub compressed: bool,
    pub rotated: bool,
    pub size: u64,
    /// Bytes read (decompressed); 0 when the whole file was older than the window.
    pub bytes_read: u64,
    /// Where reading began (after the binary search for the window's start).
    pub read_from: u64,
    pub lines: u64,
    /// The finest precision seen in its stamps (`undated` when it has none).
    pub precision: LinePrecision,
    /// Why reading stopped early, or what changed under the reader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Skipped: last modified before the window.
    pub skipped_older: bool,
}

/// The last lines of an app log that carries no timestamps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UndatedTail {
    pub app: LogApp,
    pub stream: LogStream,
    pub file: u32,
    /// Bytes at the end of the file that were read for it.
    pub bytes_read: u64,
    pub lines: Vec<String>,
}

/// Everything about the reading that a reader of the result must know.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LogReport {
    pub files: Vec<FileReport>,
    pub unreadable: Vec<Unreadable>,
    pub undated: Vec<UndatedTail>,
}

/// Lines kept of an undated log (its last ones).
pub const UNDATED_LINES: usize = 200;
/// Bytes read at the end of an undated log.
pub const UNDATED_BYTES: u64 = 4 << 20;
/// Bytes at the end of an app log probed for stamps.
const SNIFF_BYTES: u64 = 64 << 10;

/// The logs to read and the window.
pub struct LogSet {
    pub specs: Vec<LogSpec>,
    /// Lines stamped before this (ms since the epoch) are skipped; rotated copies last
    /// modified before it are not opened.
    pub since_ms: Option<i64>,
}

/// One log's files, read one after the other.
struct Chain {
    stream: LogStream,
    app: Option<LogApp>,
    files: VecDeque<(u32, LogFileInfo)>,
    cur: Option<Open>,
    cache: StampCache,
    last: Option<(i64, LinePrecision)>,
}

struct Open {
    idx: u32,
    info: LogFileInfo,
    reader: LineReader<Box<dyn Read>>,
    /// (dev, ino) and length when opened, to tell a rewrite.
    ident: Option<(u64, u64)>,
    len: u64,
}

fn identity(f: &std::fs::File) -> Option<(u64, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata().ok()?;
    Some((m.dev(), m.ino(), m.len()))
}

impl LogSet {
    /// Read every log; `sink` gets each dated line in time order. Returns the report.
    pub fn read(&self, mut sink: impl FnMut(LogLine)) -> LogReport {
        let mut report = LogReport::default();
        let mut chains: Vec<Chain> = Vec::new();
        for spec in &self.specs {
            let (found, bad) = files::with_rotations(&spec.live);
            report.unreadable.extend(bad);
            let mut chain = Chain {
                stream: spec.stream,
                app: spec.app.clone(),
                files: VecDeque::new(),
                cur: None,
                cache: StampCache::default(),
                last: None,
            };
            // An app log with no stamp near its end is undated: keep its tail apart.
            if spec.stream != LogStream::Daemon {
                if let Some(live) = found.iter().find(|f| !f.rotated) {
                    if !self.sniff_dated(live, &mut report) {
                        let idx = report.files.len() as u32;
                        report.files.push(file_report(live, spec));
                        self.read_undated(idx, live, spec, &mut report);
                        continue;
                    }
                }
            }
            for f in found {
                let idx = report.files.len() as u32;
                let mut fr = file_report(&f, spec);
                if f.rotated && self.since_ms.zip(f.mtime_ms).is_some_and(|(s, m)| m < s) {
                    fr.skipped_older = true;
                    report.files.push(fr);
                    continue;
                }
                report.files.push(fr);
                chain.files.push_back((idx, f));
            }
            chains.push(chain);
        }
        // Merge by time: a heap of each chain's next line.
        let mut heads: Vec<Option<LogLine>> = Vec::with_capacity(chains.len());
        let mut heap = BinaryHeap::new();
        for (i, c) in chains.iter_mut().enumerate() {
            let l = c.next(self.since_ms, &mut report);
            if let Some(l) = &l {
                heap.push(std::cmp::Reverse((l.at_ms.unwrap_or(i64::MIN), i)));
            }
            heads.push(l);
        }
        while let Some(std::cmp::Reverse((_, i))) = heap.pop() {
            let Some(line) = heads[i].take() else {
                continue;
            };
            sink(line);
            let next = chains[i].next(self.since_ms, &mut report);
            if let Some(l) = &next {
                heap.push(std::cmp::Reverse((l.at_ms.unwrap_or(i64::MIN), i)));
            }
            heads[i] = next;
        }
        report
    }

    /// Whether the end of `f` holds a stamped line.
    fn sniff_dated(&self, f: &LogFileInfo, report: &mut LogReport) -> bool {
        let Ok(mut file) = f.open() else {
            return true; // named as unreadable when the chain opens it
        };
        let from = f.size.saturating_sub(SNIFF_BYTES);
        let mut r = match seek_to(&mut file, from) {
            Ok(()) => LineReader::new(Box::new(file) as Box<dyn Read>, from, Some(f.size)),
            Err(e) => {
                report.unreadable.push(Unreadable {
                    path: f.path.clone(),
                    error: e.to_string(),
                });
                return false;
            }
        };
        let mut cache = StampCache::default();
        if from > 0 {
            r.next_line();
        }
        let mut any = false;
        while let Some(l) = r.next_line() {
            any = true;
            if json_line(&l.text).is_some_and(|(s, _)| s.is_some())
                || split_app_stamp(&l.text, &mut cache).is_some()
            {
                return true;
            }
        }
        // An empty log has nothing to place either way: treat it as dated (read nothing).
        !any
    }

    fn read_undated(&self, idx: u32, f: &LogFileInfo, spec: &LogSpec, report: &mut LogReport) {
        let mut tail: VecDeque<String> = VecDeque::new();
        let from = f.size.saturating_sub(UNDATED_BYTES);
        let Some(mut file) = open_or_note(f, idx, report) else {
            return;
        };
        let fr = &mut report.files[idx as usize];
        if let Err(e) = seek_to(&mut file, from) {
            fr.problem = Some(e.to_string());
            return;
        }
        let mut r = LineReader::new(file, from, Some(f.size));
        if from > 0 {
            r.next_line();
        }
        let mut lines = 0;
        while let Some(l) = r.next_line() {
            lines += 1;
            let text = json_line(&l.text).map(|(_, m)| m).unwrap_or(l.text);
            if tail.len() >= UNDATED_LINES {
                tail.pop_front();
            }
            tail.push_back(text);
        }
        fr.read_from = from;
        fr.bytes_read = r.offset() - from;
        fr.lines = lines;
        fr.precision = LinePrecision::Undated;
        fr.problem = r.error().map(str::to_owned);
        report.undated.push(UndatedTail {
            app: spec.app.clone().unwrap_or(LogApp {
                name: "?".into(),
                pm_id: None,
            }),
            stream: spec.stream,
            file: idx,
            bytes_read: fr.bytes_read,
            lines: tail.into(),
        });
    }
}

/// Open `f`, or note in the report (as file `idx`'s problem, and as unreadable) why not.
fn open_or_note(f: &LogFileInfo, idx: u32, report: &mut LogReport) -> Option<std::fs::File> {
    match f.open() {
        Ok(file) => Some(file),
        Err(e) => {
            report.files[idx as usize].problem = Some(format!("cannot open: {e}"));
            report.unreadable.push(Unreadable {
                path: f.path.clone(),
                error: e,
            });
            None
        }
    }
}

fn seek_to(f: &mut std::fs::File, at: u64) -> std::io::Result<()> {
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(at)).map(|_| ())
}

fn file_report(f: &LogFileInfo, spec: &LogSpec) -> FileReport {
    FileReport {
        path: f.path.clone(),
        stream: spec.stream,
        app: spec.app.clone(),
        compressed: f.compressed,
        rotated: f.rotated,
        size: f.size,
        bytes_read: 0,
        read_from: 0,
        lines: 0,
        precision: LinePrecision::Undated,
        problem: None,
        skipped_older: false,
    }
}

/// The time of a line of `stream`, for the binary search.
fn line_ms(stream: LogStream, text: &str, cache: &mut StampCache) -> Option<i64> {
    match stream {
        LogStream::Daemon => cache.parse(&split_prefix(text).0?.stamp).map(|s| s.ms),
        _ => split_app_stamp(text, cache)
            .map(|(s, _)| s.ms)
            .or_else(|| json_line(text).and_then(|(s, _)| s).map(|s| s.ms)),
    }
}

impl Chain {
    /// Open the next file of the chain; false when none is left.
    fn open_next(&mut self, since_ms: Option<i64>, report: &mut LogReport) -> bool {
        while let Some((idx, f)) = self.files.pop_front() {
            let Some(mut file) = open_or_note(&f, idx, report) else {
                continue;
            };
            let fr = &mut report.files[idx as usize];
            let id = identity(&file);
            let len = id.map_or(f.size, |i| i.2);
            if f.compressed {
                let gz = flate2::read::MultiGzDecoder::new(file);
                self.cur = Some(Open {
                    idx,
                    info: f,
                    reader: LineReader::new(Box::new(gz), 0, None),
                    ident: id.map(|i| (i.0, i.1)),
                    len,
                });
                return true;
            }
            let stream = self.stream;
            let mut cache = StampCache::default();
            let start = match since_ms {
                Some(s) if len > 0 => {
                    read::seek_since(&mut file, len, s, &mut |t| line_ms(stream, t, &mut cache))
                }
                _ => 0,
            };
            if let Err(e) = seek_to(&mut file, start) {
                fr.problem = Some(e.to_string());
                continue;
            }
            fr.read_from = start;
            // The search returns a line start: nothing to skip.
            let reader = LineReader::new(Box::new(file) as Box<dyn Read>, start, Some(len));
            self.cur = Some(Open {
                idx,
                info: f,
                reader,
                ident: id.map(|i| (i.0, i.1)),
                len,
            });
            return true;
        }
        false
    }

    /// Close the current file, noting what changed under it.
    fn close(&mut self, report: &mut LogReport) {
        let Some(o) = self.cur.take() else { return };
        let fr = &mut report.files[o.idx as usize];
        fr.bytes_read = o.reader.offset() - fr.read_from;
        if let Some(e) = o.reader.error() {
            fr.problem = Some(e.to_owned());
            report.unreadable.push(Unreadable {
                path: fr.path.clone(),
                error: e.to_owned(),
            });
            return;
        }
        if fr.compressed {
            return;
        }
        // Rotated or rewritten while we read: another inode at the path, or shorter now.
        match o.info.identity_now() {
            Some((dev, ino, len_now)) => {
                if o.ident.is_some_and(|(d, i)| (d, i) != (dev, ino)) {
                    fr.problem = Some(
                        "replaced while being read (rotated): lines written since are not read"
                            .into(),
                    );
                } else if len_now < o.len {
                    fr.problem = Some(format!(
                        "shrank from {} to {len_now} bytes while being read (truncated by a rotation)",
                        o.len,
                    ));
                } else if o.reader.offset() < o.len {
                    fr.problem = Some(format!(
                        "ended at byte {} of {} (the file changed while being read)",
                        o.reader.offset(),
                        o.len
                    ));
                }
            }
            None => {
                fr.problem = Some("removed while being read (rotated)".into());
            }
        }
    }

    /// The next line in the window, or `None` when the chain is done.
    fn next(&mut self, since_ms: Option<i64>, report: &mut LogReport) -> Option<LogLine> {
        loop {
            if self.cur.is_none() && !self.open_next(since_ms, report) {
                return None;
            }
            let o = self.cur.as_mut()?;
            let Some(raw) = o.reader.next_line() else {
                self.close(report);
                continue;
            };
            let idx = o.idx;
            let line = self.line(idx, raw);
            let fr = &mut report.files[idx as usize];
            fr.lines += 1;
            if line.precision < fr.precision {
                fr.precision = line.precision;
            }
            if since_ms.is_some_and(|s| line.at_ms.is_none_or(|t| t < s)) {
                continue;
            }
            return Some(line);
        }
    }

    fn line(&mut self, file: u32, raw: RawLine) -> LogLine {
        let (stamp, level, text) = match self.stream {
            LogStream::Daemon => match split_prefix(&raw.text) {
                (Some(p), msg) => (self.cache.parse(&p.stamp), Some(p.level), msg.to_owned()),
                (None, msg) => (None, None, msg.to_owned()),
            },
            _ => match json_line(&raw.text) {
                Some((st, msg)) => (st, None, msg),
                None => match split_app_stamp(&raw.text, &mut self.cache) {
                    Some((st, rest)) => (Some(st), None, rest.to_owned()),
                    None => (None, None, raw.text.clone()),
                },
            },
        };
        let (at_ms, precision, inherited) = match stamp {
            Some(s) => {
                self.last = Some((s.ms, s.precision));
                (Some(s.ms), s.precision, false)
            }
            None => match self.last {
                Some((ms, p)) => (Some(ms), p, true),
                None => (None, LinePrecision::Undated, false),
            },
        };
        LogLine {
            stream: self.stream,
            app: self.app.clone(),
            file,
            offset: raw.offset,
            at_ms,
            precision,
            inherited,
            level,
            text,
            cut: raw.cut,
        }
    }
}

#[cfg(test)]
mod tests;
