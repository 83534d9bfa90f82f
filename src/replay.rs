//! `pm2-trace replay FILE`: capture → timeline → findings → a view.

use crate::capture::{CaptureError, CaptureReader};
use crate::event::Stamped;
use crate::rules::{Finding, Severity};
use crate::views;
use std::io::IsTerminal;
use std::path::Path;

/// How a replay ended, for the exit code and the last words on stderr.
#[derive(Debug)]
pub struct ReplayOutcome {
    pub findings: Vec<Finding>,
    pub records: u64,
    /// The file ended inside a record: (offset, whole records read before it).
    pub truncated: Option<(u64, u64)>,
    /// The first damaged part of the file (reading goes on past damaged records; damaged
    /// framing ends it).
    pub error: Option<CaptureError>,
    /// Damaged records passed over.
    pub damaged: u64,
    pub skipped: u64,
}

/// Yields the events the reader can decode, passing over damaged records and keeping the
/// first error for afterwards. The reader itself ends at damaged framing.
struct SkipDamaged<'a> {
    reader: &'a mut CaptureReader,
    error: &'a mut Option<CaptureError>,
    damaged: &'a mut u64,
}

impl Iterator for SkipDamaged<'_> {
    type Item = Stamped;
    fn next(&mut self) -> Option<Stamped> {
        loop {
            match self.reader.next()? {
                Ok(ev) => return Some(ev),
                Err(e) => {
                    *self.damaged += 1;
                    self.error.get_or_insert(e);
                }
            }
        }
    }
}

/// Which part of a capture to replay: wall-clock ns since the epoch, `None` open, and which
/// stream of a directory.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub since: Option<i128>,
    pub until: Option<i128>,
    pub stream: Option<String>,
}

/// The segments of a directory a window selects (of its only stream, or of `w.stream`),
/// read as one capture. An error names the streams when there are several to choose from.
pub fn dir_events(dir: &Path, w: &Window) -> anyhow::Result<crate::capture::dir::DirEvents> {
    use crate::capture::dir;
    let segments = dir::list_segments(dir)?;
    let streams = dir::streams(&segments);
    let stream = match (&w.stream, streams.as_slice()) {
        (Some(s), _) if streams.contains(s) => s.clone(),
        (Some(s), _) => anyhow::bail!(
            "{}: no stream {s}; streams: {}",
            dir.display(),
            streams.join(", ")
        ),
        (None, [only]) => only.clone(),
        (None, []) => anyhow::bail!(
            "{}: no segments (segment-*.pcapng) in this directory",
            dir.display()
        ),
        (None, _) => anyhow::bail!(
            "{} holds {} streams (one per PM2 home): {}; choose one with --stream NAME",
            dir.display(),
            streams.len(),
            streams.join(", ")
        ),
    };
    let files: Vec<_> = dir::select(&segments, &stream, w.since, w.until)
        .into_iter()
        .map(|s| s.path.clone())
        .collect();
    if files.is_empty() {
        anyhow::bail!(
            "{}: no segment of {stream} in the chosen window",
            dir.display()
        );
    }
    Ok(dir::DirEvents::open(files, w.since, w.until)?)
}

/// Replay `path` (a capture file, or a directory written by `record --dir`) to stdout.
pub fn replay_window(path: &Path, json: bool, w: &Window) -> anyhow::Result<ReplayOutcome> {
    if !path.is_dir() {
        return replay_file(path, json, w);
    }
    let mut events = dir_events(path, w)?;
    let info = events.info().clone();
    let stdout = std::io::stdout();
    let out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let result = if json {
        views::json::replay_json(&info, events.by_ref(), out)
    } else {
        let color = views::text::color_wanted(std::io::stdout().is_terminal());
        views::text::replay_text(&info, events.by_ref(), out, color)
    };
    let findings = match result {
        Ok((_, f)) => f,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let r = std::mem::take(&mut events.report);
    // The last segment of a running recorder normally ends inside a record; report it as
    // truncated only when it is the only one.
    let truncated = r.truncated.last().map(|(_, off, n)| (*off, *n));
    Ok(ReplayOutcome {
        findings,
        records: r.records,
        truncated,
        error: r.error,
        damaged: r.damaged,
        skipped: r.skipped,
    })
}

/// Replay `path` to stdout as text (coloured on a terminal unless NO_COLOR) or JSON.
pub fn replay(path: &Path, json: bool) -> anyhow::Result<ReplayOutcome> {
    replay_file(path, json, &Window::default())
}

fn replay_file(path: &Path, json: bool, w: &Window) -> anyhow::Result<ReplayOutcome> {
    let mut reader = CaptureReader::open(path)?;
    let info = reader.info().clone();
    let mut error = None;
    let mut damaged = 0;
    let stdout = std::io::stdout();
    let out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let (since, until) = (w.since, w.until);
    let events = SkipDamaged {
        reader: &mut reader,
        error: &mut error,
        damaged: &mut damaged,
    }
    .filter(|ev| {
        let wall = info.wall_ns(ev.t);
        since.is_none_or(|s| wall >= s) && until.is_none_or(|u| wall <= u)
    });
    let result = if json {
        views::json::replay_json(&info, events, out)
    } else {
        let color = views::text::color_wanted(std::io::stdout().is_terminal());
        views::text::replay_text(&info, events, out, color)
    };
    let (_timeline, findings) = match result {
        Ok(r) => r,
        // A closed pipe (`| head`) is not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            (crate::timeline::Timeline::new(&info), Vec::new())
        }
        Err(e) => return Err(e.into()),
    };
    Ok(ReplayOutcome {
        findings,
        records: reader.records(),
        truncated: reader.truncated().map(|t| (t.offset, t.records)),
        error,
        damaged,
        skipped: reader.skipped(),
    })
}

/// Exit code for `--fail-on`: 1 when a finding is at least that severe.
pub fn exit_code(outcome: &ReplayOutcome, fail_on: Option<Severity>) -> u8 {
    if outcome.error.is_some() {
        return 2;
    }
    match fail_on {
        Some(level) if outcome.findings.iter().any(|f| f.severity >= level) => 1,
        _ => 0,
    }
}

/// Read a time for `--since`/`--until`: `2026-11-26 03:00[:05]`, `2026-11-26T03:00:00Z`
/// (RFC 3339 with any offset), or a time of day `03:20[:05]` (on `day`'s date, else
/// today). Without an offset the time is local. Returns wall-clock ns since the epoch.
pub fn parse_when(s: &str, day: Option<i128>) -> Result<i128, String> {
    use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
    let t = s.trim();
    let ns = |dt: DateTime<chrono::Utc>| dt.timestamp_nanos_opt().map(i128::from);
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return ns(dt.to_utc()).ok_or_else(|| format!("`{s}` is out of range"));
    }
    let local = |n: NaiveDateTime| {
        Local
            .from_local_datetime(&n)
            .earliest()
            .and_then(|d| ns(d.to_utc()))
            .ok_or_else(|| format!("`{s}` does not exist in the local time zone"))
    };
    let t_no_z = t.strip_suffix('Z');
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Some(u) = t_no_z {
            if let Ok(n) = NaiveDateTime::parse_from_str(u, fmt) {
                return ns(n.and_utc()).ok_or_else(|| format!("`{s}` is out of range"));
            }
        }
        if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
            return local(n);
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return local(d.and_time(NaiveTime::MIN));
    }
    for fmt in ["%H:%M:%S", "%H:%M"] {
        if let Ok(time) = NaiveTime::parse_from_str(t, fmt) {
            let date = match day {
                Some(d) => DateTime::from_timestamp((d / 1_000_000_000) as i64, 0)
                    .map(|u| u.with_timezone(&Local).date_naive())
                    .unwrap_or_else(|| Local::now().date_naive()),
                None => Local::now().date_naive(),
            };
            return local(date.and_time(time));
        }
    }
    Err(format!(
        "`{s}` is not a time like '2026-11-26 03:00', '2026-11-26T03:00:00Z' or '03:20'"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        let z = parse_when("2026-11-26T03:00:00Z", None).unwrap();
        assert_eq!(z, 1_795_662_000 * 1_000_000_000);
        assert_eq!(parse_when("2026-11-26 03:00Z", None).unwrap(), z);
        assert_eq!(parse_when("2026-11-26T05:00:00+02:00", None).unwrap(), z);
        // A time of day takes the date of `day` (local time on both sides).
        let local = parse_when("2026-11-26 03:00", None).unwrap();
        assert_eq!(
            parse_when("03:20", Some(local)).unwrap() - local,
            20 * 60 * 1_000_000_000
        );
        assert!(parse_when("yesterday", None).is_err());
        assert!(parse_when("25:00", None).is_err());
    }
}
