//! `record --dir`: the always-on flight recorder. One stream per PM2 home, each on a
//! thread of its own: it follows its home's daemons ([`super::follow`]) into segments
//! ([`super::segments`]) and feeds the live rules that write incidents
//! ([`super::incident`]). All streams share one directory and one disk budget.

use super::incident::{Detector, IncidentConfig};
use super::segments::{Budget, Retention, SegmentWriter};
use super::store::Store;
use super::{RecordOptions, Stopper};
use std::path::PathBuf;

/// What `record --dir` was told.
#[derive(Debug, Clone)]
pub struct DirOptions {
    pub dir: PathBuf,
    pub budget: Budget,
    pub incidents: IncidentConfig,
    /// One stream per home.
    pub homes: Vec<PathBuf>,
}

/// Record every home of `d` into `d.dir` until `stop` is asked. `template` gives the
/// options every session shares (redaction, process watching, ...).
pub fn record_dir(template: &RecordOptions, d: &DirOptions, stop: Stopper) -> anyhow::Result<()> {
    let retention = Retention::open(&d.dir, d.budget.clone())?;
    eprintln!(
        "pm2-trace: recording {} PM2 home(s) into {} (segments of {} KiB, keeping {} MiB{}); incidents at {} and above; SIGINT/SIGTERM to stop",
        d.homes.len(),
        d.dir.display(),
        d.budget.segment_bytes() >> 10,
        d.budget.keep >> 20,
        d.budget
            .keep_for
            .map(|k| format!(" and {} s", k.as_secs()))
            .unwrap_or_default(),
        d.incidents.level.name(),
    );
    let mut threads = Vec::new();
    for home in &d.homes {
        let home = home.clone();
        let mut template = template.clone();
        template.interpret = true;
        let retention = retention.clone();
        let incidents = d.incidents.clone();
        let stop = stop.clone();
        let dir = d.dir.clone();
        threads.push(
            std::thread::Builder::new()
                .name("stream".into())
                .spawn(move || {
                    let mut store = SegmentWriter::new(retention, &home);
                    let mut detector = Detector::spawn(incidents, dir, store.stream().to_owned());
                    let mut on_event = |info: &crate::event::CaptureInfo,
                                        _ev: &crate::event::Stamped,
                                        entries: &[crate::timeline::Entry]| {
                        detector.on_event(info, entries)
                    };
                    let out = super::follow::follow(&home, &template, &stop, &mut store, &mut on_event);
                    let summary = store.end();
                    let lost = store.lost;
                    drop(store);
                    let dropped = detector.finish();
                    let summary = match summary {
                        Ok(s) => format!("{} events in {} bytes of segments", s.records, s.bytes),
                        Err(e) => format!("{e}"),
                    };
                    eprintln!(
                        "pm2-trace: [{}] {}; {} session(s), {summary}; daemon socket: {}",
                        home.display(),
                        out.stop_reason,
                        out.sessions,
                        if out.last_restore.is_empty() { "not interposed" } else { &out.last_restore }
                    );
                    if lost + out.lost_taps + out.dropped_events + dropped > 0 {
                        eprintln!(
                            "pm2-trace: [{}] warning: not recorded: {lost} events while no segment could be written, {} RPC copies and {} events while the recorder fell behind, {dropped} batches the incident detector could not take",
                            home.display(),
                            out.lost_taps,
                            out.dropped_events
                        );
                    }
                })?,
        );
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
