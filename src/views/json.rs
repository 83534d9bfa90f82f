//! The timeline as one JSON document, written as it goes:
//!
//! ```json
//! {"capture": {...CaptureInfo...},
//!  "events": [{"t": ..., "rel_ns": ..., "wall": "...", "source": "rpc",
//!              "app": {"pm_id": 0, "name": "web"}, "type": "request_answered", ...,
//!              "description": "restartProcessId web:0 -> new pid 4242 after 412 ms"}, ...],
//!  "findings": [...]}
//! ```
//!
//! Entries are written one by one; the document is never held in memory.

use crate::event::{CaptureInfo, MonoNs, Stamped};
use crate::rules::{self, Finding};
use crate::timeline::{self, AppRef, Entry, EntryKind, Timeline};
use serde::Serialize;
use std::io::{self, Write};

/// An entry as JSON.
#[derive(Serialize)]
pub struct EntryJson<'a> {
    /// CLOCK_MONOTONIC ns when observed.
    pub t: MonoNs,
    /// ns since the capture started.
    pub rel_ns: i128,
    /// RFC 3339 UTC wall clock.
    pub wall: String,
    pub source: &'static str,
    pub app: Option<&'a AppRef>,
    #[serde(flatten)]
    pub kind: &'a EntryKind,
    /// The entry in words, as the text view shows it.
    pub description: String,
}

impl<'a> EntryJson<'a> {
    pub fn new(info: &CaptureInfo, e: &'a Entry) -> EntryJson<'a> {
        let ns = info.wall_ns(e.t);
        let wall = chrono::DateTime::from_timestamp(
            ns.div_euclid(1_000_000_000) as i64,
            ns.rem_euclid(1_000_000_000) as u32,
        )
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string())
        .unwrap_or_default();
        EntryJson {
            t: e.t,
            rel_ns: e.t as i128 - info.mono_ref_ns as i128,
            wall,
            source: e.source.name(),
            app: e.app.as_ref(),
            kind: &e.kind,
            description: e.describe(),
        }
    }
}

fn json_err(e: serde_json::Error) -> io::Error {
    io::Error::other(e)
}

/// Writes the document: [`JsonView::begin`], [`JsonView::entry`] per entry, [`JsonView::finish`].
pub struct JsonView<W: Write> {
    out: W,
    info: CaptureInfo,
    first: bool,
}

impl<W: Write> JsonView<W> {
    /// Write `{"capture": ..., "events": [`.
    pub fn begin(mut out: W, info: &CaptureInfo) -> io::Result<JsonView<W>> {
        out.write_all(b"{\"capture\":")?;
        serde_json::to_writer(&mut out, info).map_err(json_err)?;
        out.write_all(b",\"events\":[")?;
        Ok(JsonView {
            out,
            info: info.clone(),
            first: true,
        })
    }

    pub fn entry(&mut self, e: &Entry) -> io::Result<()> {
        self.out
            .write_all(if self.first { b"\n" } else { b",\n" })?;
        self.first = false;
        serde_json::to_writer(&mut self.out, &EntryJson::new(&self.info, e)).map_err(json_err)
    }

    /// Write `], "findings": [...]}` and a newline.
    pub fn finish(mut self, findings: &[Finding]) -> io::Result<W> {
        self.out.write_all(b"\n],\"findings\":")?;
        let mut sorted: Vec<&Finding> = findings.iter().collect();
        sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));
        serde_json::to_writer(&mut self.out, &sorted).map_err(json_err)?;
        self.out.write_all(b"}\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Replay `events` as one JSON document to `out`. Returns the timeline and the findings.
pub fn replay_json<W: Write>(
    info: &CaptureInfo,
    events: impl IntoIterator<Item = Stamped>,
    out: W,
) -> io::Result<(Timeline, Vec<Finding>)> {
    let mut view = JsonView::begin(out, info)?;
    let tl = timeline::replay(info, events, |e| view.entry(e))?;
    let findings = rules::analyze(&tl);
    view.finish(&findings)?;
    Ok((tl, findings))
}
