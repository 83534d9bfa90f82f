//! From stored events to a timeline a person (and the rules) can read.
//!
//! - [`Interpreter`] turns each [`Stamped`] event into [`Entry`]s: RPC requests paired with
//!   their replies by (connection, id), bus events, daemon log lines and app output, each
//!   with the app it is about (`web:0`) and its meaning in words ([`Entry::describe`]).
//! - [`Timeline`] folds entries into per-app generations and the requests that acted on
//!   them ([`Timeline::apply`]), which the rules read.
//!
//! Both work one event at a time and keep no raw events, so a large capture streams.

mod entry;
mod interp;
mod model;
mod procfacts;

pub use entry::{AppRef, Entry, EntryKind, Outcome, Tone};
pub use interp::Interpreter;
pub(crate) use model::{
    AppTimeline, AutoRestart, AutoRestartCause, EnvChangeKind, Generation, OtherHolder,
    OtherSocket, Precision, Request, SeenProcess, SnapWhy, TimeRef,
};
pub use model::{TimeGrain, Timeline};
#[cfg(test)]
pub(crate) use model::{MAX_GENERATIONS, MAX_STATUSES, STDERR_GENERATIONS};
pub use procfacts::ProcFacts;

use crate::event::{CaptureInfo, Stamped};

/// Interpret `events` in order: each entry goes to `sink` as soon as it is made, and into the
/// returned [`Timeline`]. Stops at the first error of `sink`.
pub fn replay<I, F, E>(info: &CaptureInfo, events: I, mut sink: F) -> Result<Timeline, E>
where
    I: IntoIterator<Item = Stamped>,
    F: FnMut(&Entry) -> Result<(), E>,
{
    let mut interp = Interpreter::new(info);
    let mut tl = Timeline::new(info);
    let mut buf = Vec::new();
    for ev in events {
        buf.clear();
        interp.push_into(&ev, &mut buf);
        for e in &buf {
            tl.apply(e);
            sink(e)?;
        }
    }
    Ok(tl)
}

#[cfg(test)]
pub(crate) mod tests;
