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
pub(crate) struct EntryJson<'a> {
    /// CLOCK_MONOTONIC ns when observed.
    pub(crate) t: MonoNs,
    /// ns since the capture started.
    pub(crate) rel_ns: i128,
    /// RFC 3339 UTC wall clock.
    pub(crate) wall: String,
    pub(crate) source: &'static str,
    pub(crate) app: Option<&'a AppRef>,
    #[serde(flatten)]
    pub(crate) kind: &'a EntryKind,
    /// The entry in words, as the text view shows it.
    pub(crate) description: String,
}

impl<'a> EntryJson<'a> {
    pub(crate) fn new(info: &CaptureInfo, e: &'a Entry) -> EntryJson<'a> {
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
pub(crate) struct JsonView<W: Write> {
    out: W,
    info: CaptureInfo,
    first: bool,
}

impl<W: Write> JsonView<W> {
    /// Write `{"capture": ..., "events": [`.
    pub(crate) fn begin(mut out: W, info: &CaptureInfo) -> io::Result<JsonView<W>> {
        out.write_all(b"{\"capture\":")?;
        serde_json::to_writer(&mut out, info).map_err(json_err)?;
        out.write_all(b",\"events\":[")?;
        Ok(JsonView {
            out,
            info: info.clone(),
            first: true,
        })
    }

    pub(crate) fn entry(&mut self, e: &Entry) -> io::Result<()> {
        self.out
            .write_all(if self.first { b"\n" } else { b",\n" })?;
        self.first = false;
        serde_json::to_writer(&mut self.out, &EntryJson::new(&self.info, e)).map_err(json_err)
    }

    /// Write `], "findings": [...]}` and a newline.
    pub(crate) fn finish(mut self, findings: &[Finding]) -> io::Result<W> {
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
pub(crate) fn replay_json<W: Write>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::tests::load_fixture;
    use serde_json::Value;

    #[test]
    fn one_document_with_every_entry() {
        let (info, events) = load_fixture("pm2-7.0.4");
        let mut n = 0usize;
        let _ = crate::timeline::replay(&info, events.clone(), |_| {
            n += 1;
            Ok::<(), ()>(())
        });
        let mut out = Vec::new();
        let (_, findings) = replay_json(&info, events, &mut out).unwrap();
        // The fixture's crash app loops into errored (the rules' own tests check the rest).
        assert!(findings.iter().any(|f| f.kind == "crash-loop-errored"));
        let doc: Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(doc["capture"]["pm2_version"], "7.0.4");
        assert_eq!(
            doc["capture"]["mono_ref_ns"].as_u64(),
            Some(info.mono_ref_ns)
        );
        let evs = doc["events"].as_array().unwrap();
        assert_eq!(evs.len(), n);
        let listed = doc["findings"].as_array().unwrap();
        assert_eq!(listed.len(), findings.len());
        assert_eq!(listed[0]["severity"], "error");
        // A paired restart reply, with its words and the new process.
        let r = evs
            .iter()
            .find(|e| e["type"] == "request_answered" && e["method"] == "restartProcessId")
            .unwrap();
        assert_eq!(r["app"]["name"], "web");
        assert_eq!(r["source"], "rpc");
        assert!(r["new_pid"].as_i64().unwrap() > 0);
        assert!(r["latency_ns"].as_u64().unwrap() > 0);
        assert!(r["description"]
            .as_str()
            .unwrap()
            .starts_with("restartProcessId web:0 -> new pid "));
        assert!(r["wall"].as_str().unwrap().starts_with("2026-11-25T15:35:"));
        // Requests show env keys, never values.
        let upd = evs
            .iter()
            .find(|e| {
                e["type"] == "request_asked"
                    && e["call"]["env"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k == "FOO"))
            })
            .expect("the --update-env restart");
        assert_eq!(upd["call"]["call"], "restartProcessId");
        assert!(!upd.to_string().contains("\"bar\""), "{upd}");
        // Bus events, daemon lines and app output keep their typed fields.
        assert!(evs.iter().any(|e| e["type"] == "bus"
            && e["bus"] == "process_event"
            && e["event"] == "restart overlimit"));
        assert!(evs
            .iter()
            .any(|e| e["type"] == "daemon" && e["log"]["line"] == "sigkill_after_timeout"));
        assert!(evs
            .iter()
            .any(|e| e["type"] == "app_log" && e["stream"] == "err"));
        assert!(evs
            .iter()
            .all(|e| e["description"].is_string() && e["t"].is_u64()));
    }

    #[test]
    fn empty_capture_is_a_valid_document() {
        let info = CaptureInfo::default();
        let mut out = Vec::new();
        replay_json(&info, Vec::new(), &mut out).unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc["events"], Value::Array(vec![]));
        assert_eq!(doc["findings"], Value::Array(vec![]));
    }
}
