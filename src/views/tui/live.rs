//! Following a live source (`pm2-trace record --tui`): the view takes events as they are
//! written, like any view, through a channel; it knows nothing of how they are recorded.
//! The recorder implements [`LiveSource`] (`record::record_tui`).

use super::{app, color_wanted, run_loop, term, App, Model};
use crate::event::{CaptureInfo, Stamped};
use crate::timeline::Entry;
use std::sync::mpsc::{Sender, TryRecvError};
use std::time::{Duration, Instant};

/// What a live source sends the view, in order.
// Nearly every message is an event; boxing it would cost an allocation each, for the one
// small `Ended`.
#[allow(clippy::large_enum_variant)]
pub enum LiveMsg {
    /// One event as written, with the timeline entries made of it; the first carries the
    /// capture's metadata.
    Event {
        info: Option<Box<CaptureInfo>>,
        ev: Stamped,
        entries: Vec<Entry>,
    },
    /// The source ended (the last message): `why` is shown; `quit` ends the view too (it was
    /// asked to stop, by `q` or a signal, or it failed).
    Ended { why: String, quit: bool },
}

/// Something the view follows live: the recorder.
pub trait LiveSource {
    /// Start it, once the terminal is taken over (what it prints to stderr meanwhile is
    /// shown after the view ends). It sends what it sees to `feed`, and ends with
    /// [`LiveMsg::Ended`].
    fn start(&mut self, feed: Sender<LiveMsg>) -> anyhow::Result<()>;
    /// Ask it to stop (`q` pressed, or the terminal failed); it still ends with
    /// [`LiveMsg::Ended`].
    fn stop(&mut self, why: &str);
}

/// Show `source` live under the title `name` until it ends and is asked to quit, or `q` is
/// pressed once it has ended. `q` while it runs stops it; the view ends once it has ended
/// (the recorder has then restored the daemon's socket and closed the capture).
pub fn run_live(name: String, source: &mut dyn LiveSource) -> anyhow::Result<()> {
    let mut term = term::Term::enter()?;
    let diverted = term::divert_stderr().ok();
    let (tx, rx) = std::sync::mpsc::channel::<LiveMsg>();
    source.start(tx)?;
    let mut app = App::new(Model::live(CaptureInfo::default(), name), color_wanted());
    app.live = Some(app::LiveState::Recording);
    app.follow = true;
    let mut ended = false;
    let mut we_stopped = false;
    let mut last_rules = Instant::now();
    let result = run_loop(&mut term, &mut app, |app| {
        let mut changed = false;
        let mut quit = false;
        let start = Instant::now();
        while !ended && start.elapsed() < Duration::from_millis(30) {
            match rx.try_recv() {
                Ok(msg) => {
                    changed = true;
                    quit = take(app, msg, &mut ended);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    // Gone without a word (its thread panicked).
                    let why = "the live source ended without saying why".into();
                    changed = true;
                    quit = take(app, LiveMsg::Ended { why, quit: true }, &mut ended);
                }
            }
        }
        if app.model.findings_stale() && last_rules.elapsed() >= Duration::from_millis(500) {
            app.model.refresh_findings();
            last_rules = Instant::now();
            changed = true;
        }
        if app.quit && !we_stopped && !ended {
            we_stopped = true;
            app.quit = false;
            source.stop("q pressed in the TUI");
            app.live = Some(app::LiveState::Stopping);
            changed = true;
        }
        (changed, quit || (ended && app.quit))
    });
    if !ended {
        // The terminal failed (the loop ends otherwise only after the source): still stop
        // the source cleanly, and wait for its end before giving the terminal back.
        source.stop("the TUI failed");
        while let Ok(msg) = rx.recv() {
            if let LiveMsg::Ended { .. } = msg {
                break;
            }
        }
    }
    drop(term);
    if let Some(d) = diverted {
        // The recorder's messages name paths in a PM2_HOME another user may own.
        for l in d.lines() {
            eprintln!("{}", crate::views::terminal_safe::terminal_safe(&l));
        }
    }
    result
}

/// Show one message; true when the view should end.
fn take(app: &mut App, msg: LiveMsg, ended: &mut bool) -> bool {
    match msg {
        LiveMsg::Event { info, ev, entries } => {
            if let Some(i) = info {
                app.model.set_info(*i);
            }
            app.model.push_live(ev, &entries);
            false
        }
        LiveMsg::Ended { why, quit } => {
            *ended = true;
            app.model.refresh_findings();
            app.live = Some(app::LiveState::Ended(why));
            quit
        }
    }
}
