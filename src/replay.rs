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

/// Replay `path` to stdout as text (coloured on a terminal unless NO_COLOR) or JSON.
pub fn replay(path: &Path, json: bool) -> anyhow::Result<ReplayOutcome> {
    let mut reader = CaptureReader::open(path)?;
    let info = reader.info().clone();
    let mut error = None;
    let mut damaged = 0;
    let stdout = std::io::stdout();
    let out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let events = SkipDamaged {
        reader: &mut reader,
        error: &mut error,
        damaged: &mut damaged,
    };
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
