//! TEMPORARY stub (JSON lines) until the pcapng writer lands.
use crate::event::{CaptureInfo, Stamped};
use std::io::Write;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CaptureError(String);

#[derive(Debug, Default)]
pub struct CaptureSummary {
    pub records: u64,
    pub bytes: u64,
}

pub struct CaptureWriter {
    f: std::io::BufWriter<std::fs::File>,
    n: u64,
}

impl CaptureWriter {
    pub fn create(path: &Path, info: &CaptureInfo, overwrite: bool) -> Result<CaptureWriter, CaptureError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).mode(0o600);
        if overwrite { o.create(true).truncate(true); } else { o.create_new(true); }
        let f = o.open(path).map_err(|e| CaptureError(format!("{}: {e}", path.display())))?;
        let mut w = CaptureWriter { f: std::io::BufWriter::new(f), n: 0 };
        serde_json::to_writer(&mut w.f, info).map_err(|e| CaptureError(e.to_string()))?;
        let _ = w.f.write_all(b"\n");
        Ok(w)
    }
    pub fn write(&mut self, ev: &Stamped, _comment: &str) -> Result<(), CaptureError> {
        serde_json::to_writer(&mut self.f, ev).map_err(|e| CaptureError(e.to_string()))?;
        self.f.write_all(b"\n").map_err(|e| CaptureError(e.to_string()))?;
        self.n += 1;
        Ok(())
    }
    pub fn flush(&mut self) { let _ = self.f.flush(); }
    pub fn finish(mut self) -> Result<CaptureSummary, CaptureError> {
        self.f.flush().map_err(|e| CaptureError(e.to_string()))?;
        Ok(CaptureSummary { records: self.n, bytes: 0 })
    }
}
