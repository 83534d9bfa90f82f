//! The interactive timeline: `pm2-trace tui FILE` and `pm2-trace record --tui`.
//!
//! ```text
//! ┌ Timeline ───────────────────────────────── 1 col = 66.8 ms · -0.07s → +4.08s ┐
//! │time             ▼+0s ◆◆  ◆    |+1s           |+2s           |+3◆   ◆       | │
//! │pm2 requests     │    ├┤                                                      │
//! │daemon           ·    xxo·x ·x ·x·x ·x xo·x ·x·xo·x ·x·x ·xo·x ·xo ·E         │
//! │web:0 #0,4,8,1… ━━━━━━xcode 0┈┈┈S━xcode 1┈S━━xcode 1┈S━xcode 1┈┈So━━Eerrored┈ │
//! │web:0 #1,5,9,13  │     S━━xcode 1 S━━xcode 1 S━xcode 1 S━━xcode 1             │
//! │web:0 #2,6,10,…  │        S━━xcode 1 S━xcode 1 So━xcode 1 S━━xcode 1          │
//! │web:0 #3,7,11,…  │           S━━x      So━xcode 1 S━━xcode 1 S━━xcode 1       │
//! └ S spawn o online i SIGINT K SIGKILL x exit E errored ────────────────────────┘
//! ┌ Findings 1/3 ────────────────────────────┐┌ Detail · event ──────────────────┐
//! │E web:0 address-held-by-previous-generati…││process watcher: netlink: kernel  │
//! │E web:0 crash-loop-errored: web:0 went er…││process connector, fork/exec/exit │
//! └──────────────────────────────────────────┘│filter; verified: a test child's  │
//! ┏ Events 1/564 ━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓│exit arrived after 1 ms           │
//! ┃  +0.013s proc process watcher: netlink: …┃│+0.012807s  proc                  │
//! ┃  +0.013s rec  recording: proxy on /tmp/p…┃│                                  │
//! ┃  +0.013s bus  subscribed to the event bu…┃│▾ event {                         │
//! ┃  +0.014s proc tracking pid 30369 (pm2 da…┃│    "type": "proc",               │
//! ┃  +0.014s proc tracking pid 30404 web:0 g…┃│    "kind": "mode",               │
//! ┃  +0.014s proc tracking pid 30389 web:0 g…┃│  ▾ "report": {                   │
//! ┃  +0.015s proc snapshot (watcher start): …┃│      "mode": "netlink",          │
//! ┃  +0.327s rpc  client connected (conn 1, …┃│      "why": "kernel process conn…│
//! ┗━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┛└──────────────────────────── 1/15 ┘
//!  crash-loop-5.4.3.bin · 564 events · time since start            ? help  q quit
//! ```
//!
//! (80x24, a crash loop: the old generation's child keeps the port while every new
//! generation exits with code 1; `?` lists the keys.)
//!
//! - [`model::Model`]: the rows (one per timeline entry, compact, in time order), the
//!   [`Timeline`](crate::timeline::Timeline) for the lanes, the findings; raw events stay
//!   in the file and are re-read for the detail pane.
//! - [`app::App`]: the view state and what keys and the mouse do.
//! - [`draw::draw`]: one frame; only what is visible is looked at.
//! - [`run_file`] / [`run_live`]: the terminal loop, for a file and for a live source (the
//!   recorder feeds it events through a channel, as it feeds any view: `live.rs`).

pub mod app;
mod detail;
pub(crate) mod doc;
pub mod draw;
mod live;
pub(crate) mod model;
mod raw;
mod search;
mod term;
mod util;

pub use app::{App, Pane};
pub use live::{run_live, LiveMsg, LiveSource};
pub use model::Model;

use crossterm::event::{self, Event as TermEvent};
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

/// Whether to use colour: `NO_COLOR` unset (or empty).
pub(crate) fn color_wanted() -> bool {
    crate::views::text::color_wanted(std::io::stdout().is_terminal())
}

/// Apply one terminal event to the app.
pub(crate) fn handle_event(app: &mut App, ev: TermEvent) {
    match ev {
        TermEvent::Key(k) => app.key(k),
        TermEvent::Mouse(m) => app.mouse(m),
        _ => {}
    }
}

/// How long one turn of the loop takes in what a loading capture's threads produced, before
/// it looks at keys and frames.
pub const LOAD_PUMP: Duration = Duration::from_millis(30);
/// While data streams in (a capture loading, a live recording), a frame at most this often.
pub const STREAM_REDRAW: Duration = Duration::from_millis(50);

/// Run the loop: `tick` feeds the model (returns true when it changed something) and says
/// when to end (`Some(())`); keys and mouse go to the app; a frame is drawn after changes.
fn run_loop(
    term: &mut term::Term,
    app: &mut App,
    mut tick: impl FnMut(&mut App) -> (bool, bool),
) -> anyhow::Result<()> {
    let mut dirty = true;
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    #[cfg(feature = "test-hooks")]
    let test_panic = std::env::var_os("PM2_TRACE_TEST_PANIC").is_some();
    loop {
        let (changed, end) = tick(app);
        if end {
            return Ok(());
        }
        dirty |= changed;
        // While data streams in, redraw at most ~20 times a second.
        if dirty && (!changed || last_draw.elapsed() >= STREAM_REDRAW) {
            term.terminal.draw(|f| draw::draw(f, app))?;
            last_draw = Instant::now();
            dirty = false;
            // For the tests: a panic with the terminal taken over must give it back.
            #[cfg(feature = "test-hooks")]
            if test_panic {
                panic!("test panic (PM2_TRACE_TEST_PANIC is set)");
            }
        }
        if event::poll(input_wait(app))? {
            // Take every pending event before drawing again (key repeat, wheel bursts).
            loop {
                handle_event(app, event::read()?);
                dirty = true;
                if !event::poll(Duration::ZERO)? {
                    break;
                }
            }
        }
    }
}

/// How long the loop waits for a key before its next turn. A loading capture's turn already
/// waits on the loader ([`App::pump_loader`]), so keys are only looked at: waiting for them
/// too left the loader's threads stalled on their full queue for 40 ms of every 70 (the TUI
/// opened 1M events in 1.9 to 2.6 s, where the bench, which never waited, said 0.9 to 1.2 s).
fn input_wait(app: &App) -> Duration {
    if app.loader.is_some() {
        Duration::ZERO
    } else if app.live.is_some() {
        // A live turn takes what has arrived without waiting.
        Duration::from_millis(40)
    } else {
        Duration::from_millis(500)
    }
}

/// `pm2-trace tui FILE`: explore a capture.
pub fn run_file(path: &Path) -> anyhow::Result<()> {
    // A file that is no capture fails here, before the terminal is touched.
    let (model, loader) = Model::open(path)?;
    let mut app = App::loading(model, loader, color_wanted());
    let mut term = term::Term::enter()?;
    run_loop(&mut term, &mut app, |app| {
        if app.quit {
            return (false, true);
        }
        let loading = app.loader.is_some();
        if loading {
            app.pump_loader();
        }
        (loading, false)
    })?;
    drop(term);
    Ok(())
}

/// `pm2-trace tui DIR`: the segments of a `record --dir` directory (or the window of them
/// `w` selects) as one capture. They are read before the terminal is taken over.
pub fn run_dir(dir: &Path, w: &crate::replay::Window) -> anyhow::Result<()> {
    let mut events = crate::replay::dir_events(dir, w)?;
    let info = events.info().clone();
    let mut model = Model::live(info.clone(), dir.display().to_string());
    let mut interp = crate::timeline::Interpreter::new(&info);
    let mut entries = Vec::new();
    for ev in events.by_ref() {
        entries.clear();
        interp.push_into(&ev, &mut entries);
        model.push_live(ev, &entries);
    }
    model.refresh_findings();
    let mut app = App::new(model, color_wanted());
    app.loaded();
    let mut term = term::Term::enter()?;
    run_loop(&mut term, &mut app, |app| (false, app.quit))?;
    drop(term);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While a capture loads, the loop never sleeps waiting for keys: the loader's turn
    /// waits on the loader instead. After the load it waits as before.
    #[test]
    fn a_loading_capture_is_never_kept_waiting_for_keys() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("captures/drain-child-restart-5.4.3.bin");
        let (model, loader) = Model::open(&path).unwrap();
        let mut app = App::loading(model, loader, false);
        assert_eq!(input_wait(&app), Duration::ZERO);
        let t = std::time::Instant::now();
        while !app.pump_loader() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the capture never loaded"
            );
        }
        assert!(app.loader.is_none());
        assert_eq!(input_wait(&app), Duration::from_millis(500));
        assert!(!app.model.findings.is_empty());
    }
}
