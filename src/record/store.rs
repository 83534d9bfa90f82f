//! Where a recording's events go: one capture file (`--output`) or a directory of segments
//! (`--dir`, see [`super::segments`]).

use crate::capture::writer::{CaptureSummary, CaptureWriter};
use crate::capture::CaptureError;
use crate::event::{CaptureInfo, Stamped};
use std::path::PathBuf;

/// The capture side of a recording. A recording session calls [`Store::begin`] once its
/// [`CaptureInfo`] is known, then `write`s events in time order, `flush`es periodically
/// and [`Store::end`]s. A directory store outlives sessions (the daemon restarts, the
/// recorder follows it) and starts a new segment at each `begin`.
pub trait Store: Send {
    fn begin(&mut self, info: &CaptureInfo) -> Result<(), CaptureError>;
    /// Append one event. A write failure the store cannot recover from is returned once
    /// ([`CaptureError::WriteFailed`]); the recorder then stops writing to this store.
    fn write(&mut self, ev: &Stamped, comment: &str) -> Result<(), CaptureError>;
    fn flush(&mut self);
    fn end(&mut self) -> Result<CaptureSummary, CaptureError>;
    /// What to call the output in messages.
    fn describe(&self) -> String;
}

/// One capture file, as `record --output` has always written.
pub struct FileStore {
    path: PathBuf,
    overwrite: bool,
    writer: Option<CaptureWriter>,
}

impl FileStore {
    pub fn new(path: PathBuf, overwrite: bool) -> FileStore {
        FileStore {
            path,
            overwrite,
            writer: None,
        }
    }
}

fn not_begun(path: &std::path::Path) -> CaptureError {
    CaptureError::Io {
        path: path.to_owned(),
        offset: 0,
        op: "capture not created",
        error: std::io::Error::other("the store was not begun"),
    }
}

impl Store for FileStore {
    fn begin(&mut self, info: &CaptureInfo) -> Result<(), CaptureError> {
        self.writer = Some(CaptureWriter::create(&self.path, info, self.overwrite)?);
        Ok(())
    }

    fn write(&mut self, ev: &Stamped, comment: &str) -> Result<(), CaptureError> {
        match self.writer.as_mut() {
            Some(w) => w.write(ev, comment),
            None => Err(not_begun(&self.path)),
        }
    }

    fn flush(&mut self) {
        if let Some(w) = self.writer.as_mut() {
            w.flush();
        }
    }

    fn end(&mut self) -> Result<CaptureSummary, CaptureError> {
        match self.writer.take() {
            Some(w) => w.finish(),
            None => Err(not_begun(&self.path)),
        }
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}
