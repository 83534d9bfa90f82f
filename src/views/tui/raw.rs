//! Where the raw events behind the rows are: left in the capture file (an offset per event,
//! read back on demand) or, while recording, the most recent ones in memory.

use crate::capture::CaptureReader;
use crate::event::Stamped;
use std::collections::VecDeque;
use std::path::PathBuf;

/// Raw events kept in memory while recording live.
pub(crate) const LIVE_KEEP: usize = 200_000;

pub(crate) enum RawStore {
    File {
        path: PathBuf,
        reader: Option<Box<CaptureReader>>,
        offsets: Vec<u64>,
    },
    Memory {
        /// Index of `events[0]`.
        base: u32,
        events: VecDeque<Stamped>,
        added: u32,
    },
}

impl RawStore {
    pub(crate) fn file(path: &std::path::Path) -> RawStore {
        RawStore::File {
            path: path.to_owned(),
            reader: None,
            offsets: Vec::new(),
        }
    }

    pub(crate) fn memory() -> RawStore {
        RawStore::Memory {
            base: 0,
            events: VecDeque::new(),
            added: 0,
        }
    }

    /// Remember where the next raw event is in the file; returns its index.
    pub(crate) fn add_offset(&mut self, offset: u64) -> u32 {
        match self {
            RawStore::File { offsets, .. } => {
                offsets.push(offset);
                (offsets.len() - 1) as u32
            }
            RawStore::Memory { .. } => super::model::NONE,
        }
    }

    /// Keep a live event; returns its index.
    pub(crate) fn add_event(&mut self, ev: Stamped) -> u32 {
        match self {
            RawStore::Memory {
                base,
                events,
                added,
            } => {
                if events.len() >= LIVE_KEEP {
                    events.pop_front();
                    *base += 1;
                }
                events.push_back(ev);
                *added += 1;
                *added - 1
            }
            RawStore::File { .. } => super::model::NONE,
        }
    }

    /// The raw event `i`.
    pub(crate) fn get(&mut self, i: u32) -> Result<Stamped, String> {
        match self {
            RawStore::File {
                path,
                reader,
                offsets,
            } => {
                let offset = *offsets
                    .get(i as usize)
                    .ok_or_else(|| "no raw event for this entry".to_owned())?;
                if reader.is_none() {
                    *reader = Some(Box::new(
                        CaptureReader::open(path).map_err(|e| e.to_string())?,
                    ));
                }
                let r = reader.as_mut().ok_or("no reader")?;
                r.seek(offset).map_err(|e| e.to_string())?;
                match r.next() {
                    Some(Ok(ev)) => Ok(ev),
                    Some(Err(e)) => Err(e.to_string()),
                    None => Err(format!(
                        "{}: no event at byte {offset} any more (was the file changed?)",
                        path.display()
                    )),
                }
            }
            RawStore::Memory { base, events, .. } => {
                if i == super::model::NONE {
                    return Err("no raw event for this entry".into());
                }
                match i.checked_sub(*base) {
                    Some(k) => events
                        .get(k as usize)
                        .cloned()
                        .ok_or_else(|| "no raw event for this entry".into()),
                    None => Err(format!(
                        "the raw event is no longer in memory (the last {LIVE_KEEP} are kept); open the capture with `pm2-trace tui FILE` to see it"
                    )),
                }
            }
        }
    }
}
