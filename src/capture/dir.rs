//! A capture directory (`record --dir`): segment files, incident files, and reading the
//! segments of one stream back as one timeline.
//!
//! Names (all UTC, so that `ls` sorts them in time order):
//!
//! - `segment-<stream>-<YYYYmmddTHHMMSS.mmmZ>-<seq>.pcapng`: one segment of the stream
//!   recording one PM2 home (`<stream>` is that home's path with `/` turned into `_`);
//!   each segment is a complete capture that replays on its own.
//! - `incident-<YYYYmmddTHHMMSSZ>-<app>.pcapng`: the events around one finding.
//!
//! A segment covers the time from its start (in its name) to the start of the next segment
//! of its stream (the last one: to its modification time). [`select`] picks the segments
//! that overlap a window from the names alone, so a window of an hour in a week of
//! segments reads an hour's worth of files.

use super::{CaptureError, CaptureReader};
use crate::event::{CaptureInfo, Stamped};
use std::path::{Path, PathBuf};

/// File name prefix of segments.
pub const SEGMENT_PREFIX: &str = "segment-";
/// File name prefix of incident files.
pub const INCIDENT_PREFIX: &str = "incident-";
/// Extension of every file the recorder writes in a directory.
pub const EXTENSION: &str = ".pcapng";

/// Events are written in time order within a reorder window, so a segment may hold events
/// from slightly before its start (in its name); windows are widened by this much when
/// choosing segments.
const SLACK_NS: i128 = 10_000_000_000;

/// One segment file, as its name describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub path: PathBuf,
    pub stream: String,
    /// Wall clock (ns since the epoch, UTC) when the segment was started.
    pub start_ns: i128,
    pub seq: u64,
    pub bytes: u64,
    /// Wall clock of the segment's last change (ns since the epoch).
    pub modified_ns: i128,
}

/// The name of a stream recording the PM2 home `home`: its path, `/` turned into `_`, and
/// anything outside `[A-Za-z0-9._]` too (`/home/app/.pm2` -> `home_app_.pm2`).
pub fn stream_name(home: &Path) -> String {
    let s: String = home
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_matches('_');
    if s.is_empty() {
        "root".into()
    } else {
        s.into()
    }
}

/// `20261126T031204.123Z` for wall-clock nanoseconds.
pub fn utc_stamp_ms(wall_ns: i128) -> String {
    let dt = utc(wall_ns);
    dt.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// `20261126T031204Z` for wall-clock nanoseconds.
pub fn utc_stamp(wall_ns: i128) -> String {
    utc(wall_ns).format("%Y%m%dT%H%M%SZ").to_string()
}

fn utc(wall_ns: i128) -> chrono::DateTime<chrono::Utc> {
    let secs = wall_ns.div_euclid(1_000_000_000) as i64;
    let sub = wall_ns.rem_euclid(1_000_000_000) as u32;
    chrono::DateTime::from_timestamp(secs, sub).unwrap_or_default()
}

/// File name of segment `seq` of `stream`, started at `start_ns`.
pub fn segment_file_name(stream: &str, start_ns: i128, seq: u64) -> String {
    format!(
        "{SEGMENT_PREFIX}{stream}-{}-{seq:06}{EXTENSION}",
        utc_stamp_ms(start_ns)
    )
}

/// Read a segment's name back: (stream, start, seq). `None` for anything else.
pub fn parse_segment_name(name: &str) -> Option<(String, i128, u64)> {
    let rest = name.strip_prefix(SEGMENT_PREFIX)?.strip_suffix(EXTENSION)?;
    let (rest, seq) = rest.rsplit_once('-')?;
    let (stream, stamp) = rest.rsplit_once('-')?;
    if stream.is_empty() || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let dt = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.3fZ").ok()?;
    let start = dt.and_utc().timestamp_nanos_opt()? as i128;
    Some((stream.to_owned(), start, seq.parse().ok()?))
}

/// Whether `name` is an incident file's name.
pub fn is_incident_name(name: &str) -> bool {
    name.starts_with(INCIDENT_PREFIX) && name.ends_with(EXTENSION)
}

fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
}

/// Every segment in `dir`, oldest first (by start, then stream and sequence). Files that
/// vanish while listing (rotation by a running recorder) are left out.
pub fn list_segments(dir: &Path) -> Result<Vec<Segment>, CaptureError> {
    let rd = std::fs::read_dir(dir).map_err(|error| CaptureError::Io {
        path: dir.to_owned(),
        offset: 0,
        op: "cannot list the capture directory",
        error,
    })?;
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let name = ent.file_name();
        let Some((stream, start_ns, seq)) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        // symlink_metadata: a symlink planted in the directory is not a segment.
        let Ok(meta) = std::fs::symlink_metadata(ent.path()) else {
            continue;
        };
        if !meta.file_type().is_file() {
            continue;
        }
        out.push(Segment {
            path: ent.path(),
            stream,
            start_ns,
            seq,
            bytes: meta.len(),
            modified_ns: mtime_ns(&meta),
        });
    }
    out.sort_by(|a, b| (a.start_ns, &a.stream, a.seq).cmp(&(b.start_ns, &b.stream, b.seq)));
    Ok(out)
}

/// Every incident file in `dir`, oldest first (by name, which starts with its UTC time).
pub fn list_incidents(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, u64)> = rd
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(is_incident_name))
        .filter_map(|e| {
            let m = std::fs::symlink_metadata(e.path()).ok()?;
            m.file_type().is_file().then(|| (e.path(), m.len()))
        })
        .collect();
    out.sort();
    out
}

/// The streams present in a list of segments, in order of first appearance.
pub fn streams(segments: &[Segment]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in segments {
        if !out.contains(&s.stream) {
            out.push(s.stream.clone());
        }
    }
    out
}

/// When each segment of one stream ends: the next one's start, or for the last its
/// modification time. `segments` must be of one stream, oldest first.
fn ends(segments: &[&Segment]) -> Vec<i128> {
    (0..segments.len())
        .map(|i| match segments.get(i + 1) {
            Some(next) => next.start_ns,
            None => segments[i].modified_ns.max(segments[i].start_ns),
        })
        .collect()
}

/// The segments of `stream` that may hold events between `since` and `until` (wall-clock
/// ns; `None` is open), oldest first.
pub fn select<'a>(
    segments: &'a [Segment],
    stream: &str,
    since: Option<i128>,
    until: Option<i128>,
) -> Vec<&'a Segment> {
    let mine: Vec<&Segment> = segments.iter().filter(|s| s.stream == stream).collect();
    let ends = ends(&mine);
    mine.into_iter()
        .zip(ends)
        .filter(|(s, end)| {
            since.is_none_or(|t| *end + SLACK_NS >= t)
                && until.is_none_or(|t| s.start_ns - SLACK_NS <= t)
        })
        .map(|(s, _)| s)
        .collect()
}

/// What reading a directory found wrong, besides the events.
#[derive(Debug, Default)]
pub struct DirReport {
    /// Segments read, in order.
    pub files: Vec<PathBuf>,
    /// Segments that ended inside a record: (file, offset, whole records before it). The
    /// last segment of a running recorder normally does.
    pub truncated: Vec<(PathBuf, u64, u64)>,
    /// The first damaged record or unreadable segment.
    pub error: Option<CaptureError>,
    /// Damaged records passed over.
    pub damaged: u64,
    pub records: u64,
    pub skipped: u64,
}

/// The events of several segments (of one stream), in order, as one capture: every event
/// is placed on the clock of the first segment's [`CaptureInfo`] (segments written by
/// another recorder run, e.g. after a reboot, are moved by their wall-clock references),
/// and only events inside the window are yielded.
pub struct DirEvents {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<(CaptureReader, i128)>,
    info: CaptureInfo,
    since: Option<i128>,
    until: Option<i128>,
    pub report: DirReport,
}

impl DirEvents {
    /// Open the segments `files` (oldest first). The first one that opens gives the
    /// timeline's [`CaptureInfo`]; none opening is an error naming the first.
    pub fn open(
        files: Vec<PathBuf>,
        since: Option<i128>,
        until: Option<i128>,
    ) -> Result<DirEvents, CaptureError> {
        let mut report = DirReport::default();
        let mut files = files.into_iter();
        let mut first_err = None;
        for f in files.by_ref() {
            match CaptureReader::open(&f) {
                Ok(r) => {
                    let info = r.info().clone();
                    report.files.push(f);
                    return Ok(DirEvents {
                        files,
                        current: Some((r, 0)),
                        info,
                        since,
                        until,
                        report,
                    });
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| CaptureError::Io {
            path: PathBuf::new(),
            offset: 0,
            op: "no segment to read",
            error: std::io::Error::new(std::io::ErrorKind::NotFound, "no segment in the window"),
        }))
    }

    /// The first segment's capture info: the clock every event is placed on.
    pub fn info(&self) -> &CaptureInfo {
        &self.info
    }

    /// Monotonic shift that puts events of a capture with `other` info on our clock.
    fn shift(&self, other: &CaptureInfo) -> i128 {
        let ours = self.info.wall_ref_ns - self.info.mono_ref_ns as i128;
        let theirs = other.wall_ref_ns - other.mono_ref_ns as i128;
        theirs - ours
    }

    fn finish_current(&mut self) {
        if let Some((r, _)) = self.current.take() {
            self.report.records += r.records();
            self.report.skipped += r.skipped();
            if let Some(t) = r.truncated() {
                self.report
                    .truncated
                    .push((r.path().to_owned(), t.offset, t.records));
            }
        }
    }
}

impl Iterator for DirEvents {
    type Item = Stamped;
    fn next(&mut self) -> Option<Stamped> {
        loop {
            if self.current.is_none() {
                let f = self.files.next()?;
                match CaptureReader::open(&f) {
                    Ok(r) => {
                        let shift = self.shift(r.info());
                        self.report.files.push(f);
                        self.current = Some((r, shift));
                    }
                    Err(e) => {
                        // Deleted by rotation meanwhile, or damaged: go on with the next.
                        if !matches!(&e, CaptureError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound)
                        {
                            self.report.damaged += 1;
                            self.report.error.get_or_insert(e);
                        }
                        continue;
                    }
                }
            }
            let (reader, shift) = self.current.as_mut()?;
            let shift = *shift;
            match reader.next() {
                Some(Ok(mut ev)) => {
                    ev.shift(shift);
                    let wall = self.info.wall_ns(ev.t);
                    if self.since.is_some_and(|s| wall < s) {
                        continue;
                    }
                    if self.until.is_some_and(|u| wall > u) {
                        // Later segments are later still.
                        self.finish_current();
                        self.files = Vec::new().into_iter();
                        return None;
                    }
                    return Some(ev);
                }
                Some(Err(e)) => {
                    self.report.damaged += 1;
                    self.report.error.get_or_insert(e);
                }
                None => self.finish_current(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let t = 1_795_000_000_123_000_000i128;
        let name = segment_file_name("home_app_.pm2", t, 42);
        assert!(name.starts_with("segment-home_app_.pm2-"), "{name}");
        assert_eq!(
            parse_segment_name(&name),
            Some(("home_app_.pm2".into(), t, 42))
        );
        // A stream name with dashes still parses (split from the right).
        let name = segment_file_name("a-b", t, 1);
        assert_eq!(parse_segment_name(&name), Some(("a-b".into(), t, 1)));
        for bad in [
            "segment-x.pcapng",
            "segment--20261126T031204.123Z-000001.pcapng",
            "segment-x-20261126T031204.123Z-.pcapng",
            "segment-x-notatime-000001.pcapng",
            "incident-20261126T031204Z-api.pcapng",
            "segment-x-20261126T031204.123Z-000001.pcap",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
        assert!(is_incident_name("incident-20261126T031204Z-api.pcapng"));
        assert!(!is_incident_name(&segment_file_name("x", t, 1)));
    }

    #[test]
    fn stream_names_are_file_name_safe() {
        assert_eq!(stream_name(Path::new("/home/app/.pm2")), "home_app_.pm2");
        assert_eq!(stream_name(Path::new("/")), "root");
        assert_eq!(stream_name(Path::new("/tmp/a b/-x")), "tmp_a_b__x");
    }

    fn seg(stream: &str, start_s: i128, seq: u64) -> Segment {
        Segment {
            path: PathBuf::from(format!("{stream}-{seq}")),
            stream: stream.into(),
            start_ns: start_s * 1_000_000_000,
            seq,
            bytes: 1,
            modified_ns: (start_s + 50) * 1_000_000_000,
        }
    }

    #[test]
    fn select_reads_only_overlapping_segments() {
        let s = 1_000_000_000i128;
        let segs = vec![
            seg("a", 0, 1),
            seg("b", 10, 1),
            seg("a", 100, 2),
            seg("a", 200, 3),
            seg("a", 300, 4),
        ];
        let names = |v: Vec<&Segment>| v.iter().map(|s| s.seq).collect::<Vec<_>>();
        assert_eq!(names(select(&segs, "a", None, None)), vec![1, 2, 3, 4]);
        assert_eq!(
            names(select(&segs, "a", Some(150 * s), Some(180 * s))),
            vec![2]
        );
        assert_eq!(
            names(select(&segs, "a", Some(150 * s), Some(250 * s))),
            vec![2, 3]
        );
        // The last segment lasts until its modification time.
        assert_eq!(names(select(&segs, "a", Some(340 * s), None)), vec![4]);
        assert!(select(&segs, "a", Some(400 * s), None).is_empty());
        assert_eq!(names(select(&segs, "b", None, Some(5 * s))), vec![1]);
    }

    /// A segment of another recorder run is moved onto the first one's clock, and so is the
    /// instant a paired reply names of its request: the timeline finds that request.
    #[test]
    fn a_later_runs_replies_still_name_their_requests() {
        use crate::capture::CaptureWriter;
        use crate::event::{Asked, Direction, Event, WireMessage};
        use crate::wire::rpc::{encode_call, encode_reply};
        let dir = tempfile::tempdir().unwrap();
        let run = |name: &str, mono_ref: u64, events: Vec<Stamped>| {
            let info = CaptureInfo {
                wall_ref_ns: 1_800_000_000_000_000_000,
                mono_ref_ns: mono_ref,
                rpc_paired: true,
                ..CaptureInfo::default()
            };
            let path = dir.path().join(name);
            let mut w = CaptureWriter::create(&path, &info, false).unwrap();
            for ev in &events {
                w.write(ev, "").unwrap();
            }
            w.finish().unwrap();
            path
        };
        let rpc = |t, dir, msg, asked: Option<u64>| Stamped {
            t,
            event: Event::RpcMessage {
                conn: 1,
                dir,
                msg: WireMessage(msg),
                ask: Some(1),
                asked: asked.map(|t| {
                    Box::new(Asked {
                        t,
                        method: "stopProcessId".into(),
                        pm_id: Some(0),
                    })
                }),
            },
        };
        let first = run("1", 1_000, vec![]);
        // The second run's clock started 500 ns later against the same wall time.
        let second = run(
            "2",
            1_500,
            vec![
                rpc(
                    2_000,
                    Direction::ToDaemon,
                    encode_call("stopProcessId", vec![serde_json::json!(0)], "1"),
                    None,
                ),
                rpc(
                    2_700,
                    Direction::ToClient,
                    encode_reply(vec![], "1"),
                    Some(2_000),
                ),
            ],
        );
        let events = DirEvents::open(vec![first, second], None, None).unwrap();
        let info = events.info().clone();
        let tl = crate::timeline::replay(&info, events, |_| Ok::<(), ()>(())).unwrap();
        assert_eq!(tl.requests.len(), 1);
        assert_eq!(tl.requests[0].asked, 1_500);
        assert_eq!(tl.requests[0].answered, Some(2_200));
    }
}
