//! OpenTelemetry export: the timeline's requests as traces and its findings as logs, sent
//! over OTLP/HTTP with protobuf (`--otlp URL` on `replay` and `record`).
//!
//! - [`build`]: timeline and findings → the official OTLP messages;
//! - [`endpoint`]: where they go (flag and `OTEL_EXPORTER_OTLP_*`) and the blocking HTTP
//!   client with retries;
//! - [`live`]: the background exporter of `record --otlp`.
pub mod build;
pub mod endpoint;
pub mod live;

pub use endpoint::{Endpoint, Retry};
pub use live::{ExportStats, LiveExporter};

use crate::event::CaptureInfo;
use crate::rules::Finding;
use crate::timeline::{Entry, Timeline};

/// Collects what an export needs while a view replays a capture: the span-event entries.
#[derive(Default)]
pub struct Collector {
    events: Vec<Entry>,
}

impl Collector {
    pub fn entry(&mut self, e: &Entry) {
        if build::is_span_event(e) {
            self.events.push(e.clone());
        }
    }
}

/// Send a replayed capture's traces and finding logs; fails with the first error.
pub fn export(
    endpoint: &Endpoint,
    info: &CaptureInfo,
    tl: &Timeline,
    findings: &[Finding],
    collected: &Collector,
) -> Result<ExportStats, endpoint::SendError> {
    let client = endpoint::Client::new(Retry::default());
    let requests = build::traced_requests(info, tl);
    let mut stats = ExportStats::default();
    let never = || false;
    if !requests.is_empty() {
        let msg = build::traces(info, tl, &requests, &collected.events);
        client.send(&endpoint.traces, &msg, &never)?;
        stats.traces_sent = requests.len() as u64;
    }
    if !findings.is_empty() {
        let msg = build::logs(info, tl, findings, &requests);
        client.send(&endpoint.logs, &msg, &never)?;
        stats.logs_sent = findings.len() as u64;
    }
    Ok(stats)
}

/// `replay FILE --otlp`: read the capture (passing over damaged records, as replay does),
/// rebuild its timeline and findings, and send them.
pub fn export_file(path: &std::path::Path, endpoint: &Endpoint) -> anyhow::Result<ExportStats> {
    let mut reader = crate::capture::CaptureReader::open(path)?;
    let info = reader.info().clone();
    let events = std::iter::from_fn(|| loop {
        match reader.next()? {
            Ok(ev) => return Some(ev),
            Err(_) => continue,
        }
    });
    let mut collected = Collector::default();
    let tl = crate::timeline::replay(&info, events, |e| {
        collected.entry(e);
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_or_else(|never| match never {});
    let findings = crate::rules::analyze(&tl);
    Ok(export(endpoint, &info, &tl, &findings, &collected)?)
}
