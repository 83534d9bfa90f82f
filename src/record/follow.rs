//! Following one PM2 home across daemon restarts (`record --dir`).
//!
//! `pm2 kill` (and `pm2 update`, a crash, a reboot) ends the daemon a recording session is
//! interposed on. The session then ends as any recording does when its daemon exits: the
//! socket names are put back as they were and the sources stop. This loop then waits,
//! holding no socket at all (so a `pm2` command finds nothing it could mistake for a
//! daemon, and starts one itself if it wants one), and looks every [`POLL`] for a daemon of
//! the same home with a listening `rpc.sock`. When one appears it starts the next session,
//! which interposes on the new socket and writes the next segment of the same stream,
//! beginning with a note saying how long no daemon was recorded and which pm2 version the
//! new daemon runs. The recorder never starts a daemon.

use super::store::Store;
use super::{record_to, Observer, RecordOptions, RecordOutcome, Stopper};
use crate::capture::writer::CaptureSummary;
use crate::capture::CaptureError;
use crate::event::{self, CaptureInfo, Event, NoteLevel, Stamped};
use crate::pm2::home;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a home without a daemon is looked at.
pub const POLL: Duration = Duration::from_millis(100);
/// How long to wait for a just-spawned daemon to set its process title (its pm2 version).
const VERSION_WAIT: Duration = Duration::from_secs(2);

/// Passes everything to `inner`, and writes `pending` notes right after the next `begin`.
struct NotedStore<'a> {
    inner: &'a mut dyn Store,
    pending: Vec<(NoteLevel, String)>,
}

impl Store for NotedStore<'_> {
    fn begin(&mut self, info: &CaptureInfo) -> Result<(), CaptureError> {
        self.inner.begin(info)?;
        for (level, text) in self.pending.drain(..) {
            let ev = Stamped {
                t: event::mono_now(),
                event: Event::Note { level, text },
            };
            self.inner
                .write(&ev, &super::comment::comment(&ev.event, &[]))?;
        }
        Ok(())
    }
    fn write(&mut self, ev: &Stamped, comment: &str) -> Result<(), CaptureError> {
        self.inner.write(ev, comment)
    }
    fn flush(&mut self) {
        self.inner.flush()
    }
    fn end(&mut self) -> Result<CaptureSummary, CaptureError> {
        self.inner.end()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// What following a home did, for the final summary.
#[derive(Debug, Default)]
pub struct FollowOutcome {
    pub sessions: u64,
    pub events: u64,
    pub lost_taps: u64,
    pub dropped_events: u64,
    pub stop_reason: String,
    pub last_restore: String,
}

/// The daemon of `home` when one runs and its `rpc.sock` is a socket.
fn find_daemon(home: &Path) -> Option<home::Located> {
    let located = home::locate(Some(home), |k| std::env::var_os(k), &home::list_daemons()).ok()?;
    use std::os::unix::fs::FileTypeExt;
    let is_sock =
        std::fs::symlink_metadata(&located.sockets.rpc).is_ok_and(|m| m.file_type().is_socket());
    is_sock.then_some(located)
}

fn wall_text(ns: i128) -> String {
    crate::capture::dir::utc_stamp(ns)
}

/// Record `home` into `store` until `stop` is asked: one session per daemon, waiting
/// (holding nothing) while none runs. `template` gives every option but the daemon's.
/// `on_event` sees every event of every session.
pub fn follow(
    home: &Path,
    template: &RecordOptions,
    stop: &Stopper,
    store: &mut dyn Store,
    on_event: &mut dyn Observer,
) -> FollowOutcome {
    let mut out = FollowOutcome::default();
    let started = Instant::now();
    let mut gap_since: Option<(i128, String)> = None;
    let mut said_waiting = false;
    let mut last_error: Option<String> = None;
    let mut version_wait: Option<Instant> = None;
    let name = home.display().to_string();
    loop {
        if let Some(why) = stop.requested().1 {
            out.stop_reason = why;
            return out;
        }
        if template.duration.is_some_and(|d| started.elapsed() >= d) {
            out.stop_reason = "duration elapsed".into();
            return out;
        }
        let Some(located) = find_daemon(home) else {
            if !said_waiting {
                eprintln!("pm2-trace: [{name}] no PM2 daemon runs; waiting for one (pm2-trace never starts one)");
                said_waiting = true;
            }
            std::thread::sleep(POLL);
            continue;
        };
        said_waiting = false;
        // A daemon that has just been spawned has not set its process title yet, and the
        // title is where its pm2 version is read: give it a moment (at most VERSION_WAIT)
        // so the gap note can name the new daemon's version.
        if located.version.is_none() {
            let first = *version_wait.get_or_insert_with(Instant::now);
            if first.elapsed() < VERSION_WAIT {
                std::thread::sleep(POLL);
                continue;
            }
        }
        version_wait = None;
        let mut opts = template.clone();
        opts.pm2_home = located.home.dir.clone();
        opts.rpc_path = located.sockets.rpc.clone();
        opts.pub_path = located.sockets.pub_.clone();
        opts.daemon_pid = Some(located.pid);
        opts.pm2_version = located.version.clone();
        opts.duration = template
            .duration
            .map(|d| d.saturating_sub(started.elapsed()));
        let mut pending = Vec::new();
        let version = located.version.as_deref().unwrap_or("?");
        if let Some((since, why)) = gap_since.take() {
            let now = event::wall_now_ns();
            pending.push((
                NoteLevel::Warning,
                format!(
                    "no PM2 daemon was recorded for {:.3} s, from {} to {} ({why}); recording again: new daemon pid {}, pm2 version {version}",
                    (now - since) as f64 / 1e9,
                    wall_text(since),
                    wall_text(now),
                    located.pid
                ),
            ));
        }
        let mut noted = NotedStore {
            inner: store,
            pending,
        };
        eprintln!(
            "pm2-trace: [{name}] recording PM2 daemon {} (pm2 {version}) into {}",
            located.pid,
            noted.describe()
        );
        let result: anyhow::Result<RecordOutcome> =
            record_to(&opts, stop.clone(), on_event, &mut noted);
        match result {
            Ok(o) => {
                out.sessions += 1;
                out.events += o.events;
                out.lost_taps += o.lost_taps;
                out.dropped_events += o.dropped_events;
                out.last_restore = o.restore.clone();
                last_error = None;
                if !o.daemon_exited {
                    out.stop_reason = o.stop_reason;
                    return out;
                }
                eprintln!(
                    "pm2-trace: [{name}] {}; daemon socket: {}; waiting for the next daemon",
                    o.stop_reason, o.restore
                );
                gap_since = Some((event::wall_now_ns(), o.stop_reason));
            }
            Err(e) => {
                // The daemon vanished while interposing, or is still starting: try again.
                let text = format!("{e:#}");
                if last_error.as_deref() != Some(&text) {
                    eprintln!("pm2-trace: [{name}] cannot record the daemon: {text}; trying again");
                    last_error = Some(text.clone());
                }
                gap_since.get_or_insert((event::wall_now_ns(), text));
                std::thread::sleep(POLL * 5);
            }
        }
    }
}

/// The PM2 homes of every daemon running on the host (`--all`), without duplicates.
pub fn all_homes() -> Vec<PathBuf> {
    let mut homes: Vec<PathBuf> = Vec::new();
    for d in home::list_daemons() {
        if !homes.contains(&d.home) {
            homes.push(d.home);
        }
    }
    homes
}
