//! `record --tui`: the recording, on a thread of its own, feeds the terminal view
//! ([`crate::views::tui::run_live`]) the events it writes, as it feeds any live view.

use super::{RecordOptions, RecordOutcome, Stopper};
use crate::event::{CaptureInfo, Stamped};
use crate::timeline::Entry;
use crate::views::tui::{LiveMsg, LiveSource};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

/// A recording as the TUI's live source.
struct Recording {
    opts: RecordOptions,
    stop: Stopper,
    thread: Option<JoinHandle<anyhow::Result<RecordOutcome>>>,
}

impl LiveSource for Recording {
    fn start(&mut self, feed: Sender<LiveMsg>) -> anyhow::Result<()> {
        let opts = self.opts.clone();
        let stop = self.stop.clone();
        let thread = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || {
                let mut sent_info = false;
                let mut on_event = |info: &CaptureInfo, ev: &Stamped, entries: &[Entry]| {
                    let info = (!sent_info).then(|| Box::new(info.clone()));
                    sent_info = true;
                    let _ = feed.send(LiveMsg::Event {
                        info,
                        ev: ev.clone(),
                        entries: entries.to_vec(),
                    });
                };
                let r = super::record(&opts, stop.clone(), &mut on_event);
                let why = match &r {
                    Ok(o) => o.stop_reason.clone(),
                    Err(e) => format!("{e:#}"),
                };
                // Quit when asked (q, a signal) or when recording could not even start.
                let quit = stop.requested().0 > 0 || r.is_err();
                let _ = feed.send(LiveMsg::Ended { why, quit });
                r
            })?;
        self.thread = Some(thread);
        Ok(())
    }

    fn stop(&mut self, why: &str) {
        self.stop.stop(why);
    }
}

/// Record while the TUI follows the events as they are written. `q` stops the recording;
/// the view ends once the recorder has restored the daemon's socket and closed the capture.
/// Stop requests from signals (through `stop`) end the view too.
pub fn record_tui(opts: &RecordOptions, stop: Stopper) -> anyhow::Result<RecordOutcome> {
    let mut recording = Recording {
        opts: opts.clone(),
        stop,
        thread: None,
    };
    let shown = crate::views::tui::run_live(opts.output.display().to_string(), &mut recording);
    let outcome = recording.thread.take().map(|h| {
        h.join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the recorder thread panicked")))
    });
    shown?;
    outcome.unwrap_or_else(|| Err(anyhow::anyhow!("the recording did not run")))
}
