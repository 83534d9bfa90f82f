//! The capture file: pcapng, one interface per source, one JSON event per packet.
//!
//! The layout is documented in `docs/capture-format.md`. In short:
//!
//! - a little-endian Section Header Block naming the tool, kernel and host;
//! - one Interface Description Block per [`Source`](crate::event::Source), in
//!   [`Source::ALL`](crate::event::Source::ALL) order, link type 252
//!   (`LINKTYPE_WIRESHARK_UPPER_PDU`), nanosecond timestamps;
//! - one Enhanced Packet Block per record: Wireshark exported-PDU tags (dissector `json`),
//!   then the JSON of a [`Stamped`](crate::event::Stamped) event. The first record is the
//!   [`CaptureInfo`](crate::event::CaptureInfo), wrapped as `{"capture_info": {...}}`.
//!   Records too big for one packet (Wireshark accepts at most 256 KiB per packet on this
//!   link type) are split into fragments.
//!
//! [`writer::CaptureWriter`] writes whole blocks only and, on a write error, cuts the file
//! back to the last whole block and ends it with an
//! [`Event::RecordingStopped`](crate::event::Event::RecordingStopped) marker.
//! [`reader::CaptureReader`] streams a capture back with bounded memory.
pub mod dir;
mod disk;
mod members;
mod proc_record;
pub(crate) mod reader;
pub(crate) mod writer;

pub use reader::{CaptureReader, SectionHeader, Truncation};
pub use writer::{CaptureSummary, CaptureWriter};

use std::path::PathBuf;

/// Link type of every interface: `LINKTYPE_WIRESHARK_UPPER_PDU`.
pub const LINKTYPE_WIRESHARK_UPPER_PDU: u32 = 252;

/// The largest JSON record (one event) the writer accepts and the reader reassembles.
pub const MAX_RECORD_LEN: usize = 16 * 1024 * 1024;

/// The largest packet (exported-PDU tags plus body) in one Enhanced Packet Block.
/// Wireshark refuses bigger packets on `LINKTYPE_WIRESHARK_UPPER_PDU`
/// (`WTAP_MAX_PACKET_SIZE_STANDARD`), so bigger records are split into fragments.
pub const MAX_PACKET_LEN: usize = 262_144;

/// Comments longer than this (in bytes) are cut at a character boundary, with `…` appended.
pub(crate) const MAX_COMMENT_LEN: usize = 4096;

/// The largest block the reader accepts. Anything bigger is corruption, never an allocation.
pub const MAX_BLOCK_LEN: usize = MAX_RECORD_LEN + 64 * 1024;

/// The shipped captures (`captures/` and `tests/tui_captures/`), for tests that read every
/// record of them.
#[cfg(test)]
pub(crate) fn shipped_captures() -> Vec<PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["captures", "tests/tui_captures"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("a captures directory") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|x| x == "bin") {
                out.push(path);
            }
        }
    }
    out
}

/// Exported-PDU tag numbers (Wireshark `epan/exported_pdu.h` / `wsutil/exported_pdu_tlvs.h`).
pub(crate) mod tag {
    pub(crate) const END_OF_OPT: u16 = 0;
    pub(crate) const DISSECTOR_NAME: u16 = 12;
    pub(crate) const COL_PROT_TEXT: u16 = 33;
}

/// Marker at the start of a fragment's body (after the exported-PDU tags); see the format doc.
pub(crate) const FRAGMENT_MAGIC: &[u8; 8] = b"PM2TFRAG";
/// Fragment header: magic, then big-endian u32 index, u32 count, u32 total JSON length.
pub(crate) const FRAGMENT_HEADER_LEN: usize = 20;

/// Why a capture could not be written or read. Every message names the file and the byte
/// offset it concerns.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// An I/O call failed.
    #[error("{}: {op} (at byte {offset}): {error}", path.display())]
    Io {
        path: PathBuf,
        offset: u64,
        op: &'static str,
        error: std::io::Error,
    },
    /// The bytes are not a capture this version can read.
    #[error("{}: corrupt capture at byte {offset}: {what}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    /// One record was bigger than [`MAX_RECORD_LEN`]; it was not written, the capture goes on.
    #[error(
        "{}: record of {size} bytes at byte {offset} exceeds the limit of {limit} bytes; not written",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        offset: u64,
        size: u64,
        limit: u64,
    },
    /// A write failed: the file was cut back to its last whole record at `offset`, and a
    /// [`RecordingStopped`](crate::event::Event::RecordingStopped) marker was appended when
    /// possible. Returned once, by the call that hit the failure.
    #[error("{}: write failed at byte {offset}: {error}; recording stopped: {outcome}", path.display())]
    WriteFailed {
        path: PathBuf,
        offset: u64,
        error: std::io::Error,
        outcome: String,
    },
    /// The writer stopped after an earlier write failure and refuses further records.
    #[error("{}: recording stopped at byte {offset} after an earlier write failure ({reason}); record not written", path.display())]
    Stopped {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

impl CaptureError {
    /// The byte offset in the file this error concerns.
    pub fn offset(&self) -> u64 {
        match self {
            CaptureError::Io { offset, .. }
            | CaptureError::Corrupt { offset, .. }
            | CaptureError::TooLarge { offset, .. }
            | CaptureError::WriteFailed { offset, .. }
            | CaptureError::Stopped { offset, .. } => *offset,
        }
    }
}

/// Ignore `SIGXFSZ` for the whole process, so that exceeding a file size limit
/// (`ulimit -f`) makes writes fail with `EFBIG` (which the writer handles by closing the
/// capture with a stop marker) instead of killing the recorder. Call once at start.
pub fn ignore_sigxfsz() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no other effect.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}
