//! Writing a capture: whole blocks only, cut back and marked on a write error.
//!
//! Records are serialised (with `pcap-file`) into a buffer of whole blocks and written with
//! positioned writes at the end of the last whole record on disk (`committed`). When a write
//! fails (disk full, file size limit, I/O error) the file is truncated back to the last whole
//! record, an [`Event::RecordingStopped`] marker is appended when at all possible, and every
//! later write is refused. The recorder keeps forwarding traffic regardless.
//!
//! Disk-full safety: the writer keeps space reserved beyond the end of the file
//! (`fallocate(FALLOC_FL_KEEP_SIZE)`, best effort), so that on `ENOSPC` the stop marker still
//! fits. Under a file size limit (`EFBIG`, see [`super::ignore_sigxfsz`]) it retreats record by
//! record until the marker fits below the limit.

use super::{
    tag, CaptureError, FRAGMENT_HEADER_LEN, FRAGMENT_MAGIC, MAX_COMMENT_LEN, MAX_PACKET_LEN,
    MAX_RECORD_LEN,
};
use crate::event::{mono_now, CaptureInfo, Direction, Event, Source, Stamped};
use crate::safe_dir::{SafeDir, SafeDirError};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness};
use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Buffered whole blocks are written once they reach this many bytes (or on `flush`).
const FLUSH_AT: usize = 256 * 1024;
/// Space kept reserved past the data about to be written, for the stop marker.
const MARKER_RESERVE: u64 = 64 * 1024;
/// How much is reserved ahead at a time.
const RESERVE_STEP: u64 = 1024 * 1024;
/// epb_flags direction bits.
const EPB_FLAG_INBOUND: u32 = 0b01;
const EPB_FLAG_OUTBOUND: u32 = 0b10;

/// What [`CaptureWriter::finish`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureSummary {
    /// Events written (whole records on disk, the capture-info record and the stop marker
    /// not counted).
    pub records: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// Records refused because they exceeded [`MAX_RECORD_LEN`](super::MAX_RECORD_LEN).
    pub too_large: u64,
    /// Why recording stopped early (a write failure), if it did; the capture then ends with
    /// a `recording_stopped` marker when one could be written.
    pub stopped: Option<String>,
}

/// Writes one capture file. See the module documentation.
pub struct CaptureWriter {
    path: PathBuf,
    file: File,
    info: CaptureInfo,
    /// pcap-file's writer over our buffer of whole, not yet written blocks.
    pw: PcapNgWriter<Vec<u8>>,
    /// End offset (in the buffer) of each whole record in it, and whether it is an event.
    ends: Vec<(usize, bool)>,
    /// File length up to the last whole record written.
    committed: u64,
    /// Events on disk.
    records: u64,
    /// Space reserved (fallocate, keep size) up to this offset.
    reserved_end: u64,
    too_large: u64,
    stopped: Option<String>,
    /// A write failure from `flush`, not yet returned to the caller.
    unreported: Option<CaptureError>,
    finished: bool,
    /// Scratch buffers, reused for every record.
    payload: Vec<u8>,
    frag: Vec<u8>,
}

impl std::fmt::Debug for CaptureWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureWriter")
            .field("path", &self.path)
            .field("committed", &self.committed)
            .field("records", &self.records)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize)]
struct InfoRecord<'a> {
    capture_info: &'a CaptureInfo,
}

fn source_index(s: Source) -> u32 {
    Source::ALL.iter().position(|x| *x == s).unwrap_or(0) as u32
}

fn interface_description(s: Source) -> &'static str {
    match s {
        Source::Recorder => "pm2-trace recorder: capture info, notes, faults",
        Source::Rpc => "PM2 rpc.sock: AMP messages between pm2 clients and the daemon",
        Source::Bus => "PM2 pub.sock: the daemon's event bus",
        Source::Proc => "operating system: process events and snapshots",
        Source::Logs => "log files (explain only, never in a capture)",
    }
}

/// `comment`, cut to at most [`MAX_COMMENT_LEN`] bytes at a character boundary.
fn clip_comment(comment: &str) -> Cow<'_, str> {
    if comment.len() <= MAX_COMMENT_LEN {
        return Cow::Borrowed(comment);
    }
    let mut end = MAX_COMMENT_LEN - '…'.len_utf8();
    while !comment.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &comment[..end]))
}

/// Append one exported-PDU TLV: big-endian tag and length, the value padded with NULs to
/// a multiple of 4 bytes (the padding is counted in the length, as Wireshark writes it).
fn push_tlv(out: &mut Vec<u8>, tag: u16, value: &[u8]) {
    let padded = value.len().div_ceil(4) * 4;
    out.extend_from_slice(&tag.to_be_bytes());
    out.extend_from_slice(&(padded as u16).to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (padded - value.len()), 0);
}

/// The exported-PDU tags in front of every packet: the dissector for the body and the text
/// for Wireshark's Protocol column. (`COL_INFO_TEXT`, tag 36, is not used: Wireshark 4.0
/// shows it as an unknown tag, and the JSON dissector overwrites the Info column anyway;
/// the human-readable text is the packet comment.)
fn push_tags(out: &mut Vec<u8>, dissector: &str) {
    push_tlv(out, tag::DISSECTOR_NAME, dissector.as_bytes());
    push_tlv(out, tag::COL_PROT_TEXT, b"pm2-trace");
    push_tlv(out, tag::END_OF_OPT, b"");
}

fn wall_timestamp(info: &CaptureInfo, t: u64) -> Duration {
    let ns = info.wall_ns(t).clamp(0, u64::MAX as i128) as u64;
    Duration::from_nanos(ns)
}

/// Create the capture file: in its directory opened with [`SafeDir::open`], as a new file
/// (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600). With `overwrite`, an existing entry of that
/// name is removed first (`unlinkat`: a symlink or a hard link is unlinked, never written
/// through).
fn open_new(path: &Path, overwrite: bool) -> Result<File, CaptureError> {
    let io_err = |op: &'static str, error: io::Error| CaptureError::Io {
        path: path.to_owned(),
        offset: 0,
        op,
        error,
    };
    let fs_err = |op: &'static str, e: SafeDirError| {
        let error = match e {
            SafeDirError::Io { error, .. } => error,
            other => io::Error::new(io::ErrorKind::PermissionDenied, other.to_string()),
        };
        io_err(op, error)
    };
    let (dir, name) =
        SafeDir::open_parent(path).map_err(|e| fs_err("cannot open the capture's directory", e))?;
    if overwrite {
        let existing = dir
            .stat(&name)
            .map_err(|e| fs_err("cannot inspect the existing capture", e))?;
        if let Some(st) = existing {
            // Only a regular file is replaced: a symlink, FIFO or device the user named is
            // refused, as without --force.
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Err(io_err(
                    "cannot create capture: not a regular file (a symbolic link, FIFO or device; refusing to replace it)",
                    io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
                ));
            }
            match dir.unlink(&name) {
                Ok(()) => {}
                Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => {}
                Err(e) => return Err(fs_err("cannot replace the existing capture", e)),
            }
        }
    }
    dir.create_excl(&name, 0o600).map_err(|e| {
        let op = match e.io_kind() {
            Some(io::ErrorKind::AlreadyExists) => {
                "cannot create capture: the file already exists (refusing to overwrite)"
            }
            _ => "cannot create capture",
        };
        fs_err(op, e)
    })
}

impl CaptureWriter {
    /// Create the capture at `path` (mode 0600 from the start; `O_EXCL` unless `overwrite`;
    /// never through a symlink), write the section header, one interface per source and the
    /// capture-info record, and flush them.
    pub fn create(
        path: &Path,
        info: &CaptureInfo,
        overwrite: bool,
    ) -> Result<CaptureWriter, CaptureError> {
        let file = open_new(path, overwrite)?;
        let pw_err = |e: pcap_file::PcapError| CaptureError::Io {
            path: path.to_owned(),
            offset: 0,
            op: "cannot encode the capture header",
            error: io::Error::other(e.to_string()),
        };

        let mut options = vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
            "pm2-trace {}",
            env!("CARGO_PKG_VERSION")
        )))];
        if !info.kernel.is_empty() {
            options.push(SectionHeaderOption::OS(Cow::Owned(info.kernel.clone())));
        }
        if !info.host.is_empty() {
            options.push(SectionHeaderOption::Hardware(Cow::Owned(info.host.clone())));
        }
        let shb = SectionHeaderBlock {
            endianness: Endianness::Little,
            major_version: 1,
            minor_version: 0,
            section_length: -1,
            options,
        };
        let mut pw =
            PcapNgWriter::with_section_header(Vec::with_capacity(FLUSH_AT + MAX_PACKET_LEN), shb)
                .map_err(pw_err)?;
        for s in Source::ALL {
            let idb = InterfaceDescriptionBlock {
                linktype: DataLink::WIRESHARK_UPPER_PDU,
                snaplen: 0,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Borrowed(s.name())),
                    InterfaceDescriptionOption::IfDescription(Cow::Borrowed(
                        interface_description(s),
                    )),
                    // pcap-file writes EPB timestamps in nanoseconds.
                    InterfaceDescriptionOption::IfTsResol(9),
                ],
            };
            pw.write_pcapng_block(idb).map_err(pw_err)?;
        }
        let header_len = pw.get_ref().len();

        let mut w = CaptureWriter {
            path: path.to_owned(),
            file,
            info: info.clone(),
            pw,
            ends: Vec::new(),
            committed: 0,
            records: 0,
            reserved_end: 0,
            too_large: 0,
            stopped: None,
            unreported: None,
            finished: false,
            payload: Vec::new(),
            frag: Vec::new(),
        };
        w.ends.push((header_len, false));
        let comment = format!(
            "pm2-trace {} capture info: host {}, pm2 {}, PM2_HOME {}, redaction {}",
            info.tool_version,
            if info.host.is_empty() {
                "?"
            } else {
                &info.host
            },
            info.pm2_version.as_deref().unwrap_or("?"),
            info.pm2_home,
            info.redaction
        );
        let ts = wall_timestamp(info, info.mono_ref_ns);
        w.encode_record(Source::Recorder, ts, None, &comment, |out| {
            serde_json::to_writer(out, &InfoRecord { capture_info: info })
        })?;
        w.ends.push((w.pw.get_ref().len(), false));
        w.write_out()?;
        Ok(w)
    }

    /// File length up to the last whole record written to disk.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// The file's length once the records buffered so far are written.
    pub fn len_with_buffered(&self) -> u64 {
        self.committed + self.pw.get_ref().len() as u64
    }

    /// Why recording stopped, once a write has failed.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Append one event with a human-readable `comment` (shown by Wireshark/tshark).
    ///
    /// The record goes to a buffer of whole blocks that is written once it is large enough,
    /// on [`flush`](Self::flush) and on [`finish`](Self::finish). An event whose JSON exceeds
    /// [`MAX_RECORD_LEN`](super::MAX_RECORD_LEN) is refused with
    /// [`CaptureError::TooLarge`] and the capture goes on. A write failure is returned
    /// once as [`CaptureError::WriteFailed`] (by this call, or by the next one when it
    /// happened in [`flush`](Self::flush)); after it every call returns
    /// [`CaptureError::Stopped`].
    pub fn write(&mut self, ev: &Stamped, comment: &str) -> Result<(), CaptureError> {
        if let Some(e) = self.unreported.take() {
            return Err(e);
        }
        self.check_stopped()?;
        let flags = match &ev.event {
            Event::RpcMessage { dir, .. } | Event::RpcUndecodable { dir, .. } => Some(match dir {
                Direction::ToDaemon => EPB_FLAG_INBOUND,
                Direction::ToClient => EPB_FLAG_OUTBOUND,
            }),
            _ => None,
        };
        let ts = wall_timestamp(&self.info, ev.t);
        self.encode_record(ev.event.source(), ts, flags, comment, |out| {
            serde_json::to_writer(out, ev)
        })?;
        self.ends.push((self.pw.get_ref().len(), true));
        if self.pw.get_ref().len() >= FLUSH_AT {
            self.write_out()?;
        }
        Ok(())
    }

    /// Write all buffered records to the file (no fsync); call it periodically so that a
    /// crash loses little. A failure here (disk full, …) closes the capture with the stop
    /// marker like any write failure, and is returned by the next
    /// [`write`](Self::write) or by [`finish`](Self::finish).
    pub fn flush(&mut self) {
        if self.stopped.is_some() {
            return;
        }
        if let Err(e) = self.write_out() {
            self.unreported = Some(e);
        }
    }

    /// Write the buffer out now.
    fn write_out(&mut self) -> Result<(), CaptureError> {
        self.check_stopped()?;
        let buf = std::mem::take(self.pw.get_mut());
        let ends = std::mem::take(&mut self.ends);
        let result = self.write_buffer(&buf, &ends);
        // Give the (cleared) allocation back for reuse.
        let mut buf = buf;
        buf.clear();
        *self.pw.get_mut() = buf;
        let mut ends = ends;
        ends.clear();
        self.ends = ends;
        result
    }

    /// Flush, fsync and close. Returns what was written; an error if a write failure has not
    /// been returned yet (it happened in this last flush or in [`flush`](Self::flush)), or
    /// if the fsync failed. A failure returned earlier shows in [`CaptureSummary::stopped`].
    pub fn finish(mut self) -> Result<CaptureSummary, CaptureError> {
        self.finished = true;
        if let Some(e) = self.unreported.take() {
            let _ = self.file.sync_all();
            return Err(e);
        }
        if self.stopped.is_none() {
            if let Err(e) = self.write_out() {
                let _ = self.file.sync_all();
                return Err(e);
            }
        }
        // Drop space reserved past the end of the data (truncating to the same length frees
        // preallocated blocks beyond it).
        let _ = self.file.set_len(self.committed);
        self.file.sync_all().map_err(|error| CaptureError::Io {
            path: self.path.clone(),
            offset: self.committed,
            op: "cannot fsync the capture",
            error,
        })?;
        Ok(CaptureSummary {
            records: self.records,
            bytes: self.committed,
            too_large: self.too_large,
            stopped: self.stopped.clone(),
        })
    }

    fn check_stopped(&self) -> Result<(), CaptureError> {
        match &self.stopped {
            Some(reason) => Err(CaptureError::Stopped {
                path: self.path.clone(),
                offset: self.committed,
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Serialise one record (exported-PDU tags + JSON from `body`) as one Enhanced Packet
    /// Block, or as fragments when it does not fit one packet, appending to the buffer.
    fn encode_record(
        &mut self,
        source: Source,
        ts: Duration,
        flags: Option<u32>,
        comment: &str,
        body: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
    ) -> Result<(), CaptureError> {
        let comment = clip_comment(comment);
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        push_tags(&mut payload, "json");
        let tags_len = payload.len();
        let result = self.encode_payload(&mut payload, tags_len, source, ts, flags, &comment, body);
        if payload.capacity() > 4 * MAX_PACKET_LEN {
            payload = Vec::new(); // don't keep a huge one-off record's allocation
        }
        self.payload = payload;
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn encode_payload(
        &mut self,
        payload: &mut Vec<u8>,
        tags_len: usize,
        source: Source,
        ts: Duration,
        flags: Option<u32>,
        comment: &str,
        body: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
    ) -> Result<(), CaptureError> {
        let offset = self.committed + self.pw.get_ref().len() as u64;
        body(payload).map_err(|e| CaptureError::Io {
            path: self.path.clone(),
            offset,
            op: "cannot encode event as JSON",
            error: io::Error::other(e),
        })?;
        let json_len = payload.len() - tags_len;
        if json_len > MAX_RECORD_LEN {
            self.too_large += 1;
            return Err(CaptureError::TooLarge {
                path: self.path.clone(),
                offset,
                size: json_len as u64,
                limit: MAX_RECORD_LEN as u64,
            });
        }
        let interface_id = source_index(source);
        if payload.len() <= MAX_PACKET_LEN {
            return self.push_epb(interface_id, ts, payload, comment, flags);
        }
        // Fragments: each packet carries a "data" dissector tag (Wireshark shows raw bytes),
        // a fragment header and a slice of the JSON.
        let json = &payload[tags_len..];
        let chunk = MAX_PACKET_LEN - FRAGMENT_HEADER_LEN - 256;
        let count = json.len().div_ceil(chunk);
        let mut frag = std::mem::take(&mut self.frag);
        let mut result = Ok(());
        for (i, piece) in json.chunks(chunk).enumerate() {
            let part_comment = format!("{comment} [record part {}/{count}]", i + 1);
            frag.clear();
            push_tags(&mut frag, "data");
            frag.extend_from_slice(FRAGMENT_MAGIC);
            frag.extend_from_slice(&(i as u32).to_be_bytes());
            frag.extend_from_slice(&(count as u32).to_be_bytes());
            frag.extend_from_slice(&(json.len() as u32).to_be_bytes());
            frag.extend_from_slice(piece);
            result = self.push_epb(interface_id, ts, &frag, &part_comment, flags);
            if result.is_err() {
                break;
            }
        }
        frag.clear();
        self.frag = frag;
        result
    }

    fn push_epb(
        &mut self,
        interface_id: u32,
        ts: Duration,
        data: &[u8],
        comment: &str,
        flags: Option<u32>,
    ) -> Result<(), CaptureError> {
        let mut options = Vec::with_capacity(2);
        if !comment.is_empty() {
            options.push(EnhancedPacketOption::Comment(Cow::Borrowed(comment)));
        }
        if let Some(f) = flags {
            options.push(EnhancedPacketOption::Flags(f));
        }
        let epb = EnhancedPacketBlock {
            interface_id,
            timestamp: ts,
            original_len: data.len() as u32,
            data: Cow::Borrowed(data),
            options,
        };
        let before = self.pw.get_ref().len();
        self.pw.write_pcapng_block(epb).map(|_| ()).map_err(|e| {
            // Only an invalid interface id can fail here (writing into a Vec cannot).
            self.pw.get_mut().truncate(before);
            CaptureError::Io {
                path: self.path.clone(),
                offset: self.committed + before as u64,
                op: "cannot encode packet block",
                error: io::Error::other(e.to_string()),
            }
        })
    }

    /// Keep space reserved on disk past the data about to be written (best effort).
    fn reserve(&mut self, upcoming: u64) {
        if self.committed + upcoming + MARKER_RESERVE <= self.reserved_end {
            return;
        }
        // Generous first; when space is short, at least room for what comes plus the marker;
        // failing that, room for the marker right after the last whole record.
        for len in [
            upcoming + RESERVE_STEP,
            upcoming + MARKER_RESERVE,
            MARKER_RESERVE,
        ] {
            // SAFETY: fallocate on a descriptor we own; failure (unsupported, no space) is fine.
            let rc = unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_KEEP_SIZE,
                    self.committed as libc::off_t,
                    len as libc::off_t,
                )
            };
            if rc == 0 {
                self.reserved_end = self.reserved_end.max(self.committed + len);
                return;
            }
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP) {
                return;
            }
        }
    }

    fn write_buffer(&mut self, buf: &[u8], ends: &[(usize, bool)]) -> Result<(), CaptureError> {
        if buf.is_empty() {
            return Ok(());
        }
        self.reserve(buf.len() as u64);
        let mut written = 0usize;
        let error = loop {
            match self
                .file
                .write_at(&buf[written..], self.committed + written as u64)
            {
                Ok(0) => break io::Error::new(io::ErrorKind::WriteZero, "write returned 0 bytes"),
                Ok(n) => {
                    written += n;
                    if written == buf.len() {
                        self.committed += buf.len() as u64;
                        self.records += ends.iter().filter(|e| e.1).count() as u64;
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break e,
            }
        };
        Err(self.fail(error, written, ends))
    }

    /// A write failed after `written` bytes of the buffer reached the file: cut back to the
    /// last whole record, append the stop marker (retreating record by record if it does not
    /// fit), and stop.
    fn fail(&mut self, error: io::Error, written: usize, ends: &[(usize, bool)]) -> CaptureError {
        let base = self.committed;
        let failed_at = base + written as u64;
        let whole = ends.iter().take_while(|e| e.0 <= written).count();
        let buffered_events = ends.iter().filter(|e| e.1).count() as u64;
        // Candidate cut points: after each fully written record, latest first, then `base`.
        let mut candidates: Vec<usize> = ends[..whole].iter().rev().map(|e| e.0).collect();
        candidates.push(0);
        let mut marker_at = None;
        let mut truncate_failed = None;
        for &cut in &candidates {
            let at = base + cut as u64;
            if let Err(e) = self.file.set_len(at) {
                truncate_failed = Some(e);
                break;
            }
            let kept = ends
                .iter()
                .take_while(|e| e.0 <= cut)
                .filter(|e| e.1)
                .count() as u64;
            let reason = format!(
                "write error at byte {failed_at} of {}: {error}; {} buffered event(s) after this point were not recorded",
                self.path.display(),
                buffered_events - kept
            );
            if let Some(len) = self.write_marker(at, &reason) {
                marker_at = Some((at, len, kept, reason));
                break;
            }
        }
        let outcome = match marker_at {
            Some((at, len, kept, reason)) => {
                self.committed = at + len;
                self.records += kept;
                self.stopped = Some(reason);
                format!(
                    "capture cut back to its last whole record at byte {at} and closed with a recording_stopped marker; {} buffered event(s) lost",
                    buffered_events - kept
                )
            }
            None => {
                // No marker fits: keep the whole records that did reach the file.
                let cut = if truncate_failed.is_some() {
                    written
                } else {
                    ends[..whole].last().map_or(0, |e| e.0)
                };
                let at = base + cut as u64;
                let _ = self.file.set_len(at);
                let kept = ends
                    .iter()
                    .take_while(|e| e.0 <= cut)
                    .filter(|e| e.1)
                    .count() as u64;
                self.committed = at;
                self.records += kept;
                let what = match &truncate_failed {
                    Some(e) => format!("the file could not be cut back ({e}); it may end in a partial record"),
                    None => format!("capture cut back to its last whole record at byte {at}; no stop marker could be written"),
                };
                self.stopped = Some(format!("write error at byte {failed_at}: {error}; {what}"));
                format!("{what}; {} buffered event(s) lost", buffered_events - kept)
            }
        };
        CaptureError::WriteFailed {
            path: self.path.clone(),
            offset: self.committed,
            error,
            outcome,
        }
    }

    /// Write a `recording_stopped` record at `at`; its length on success.
    fn write_marker(&mut self, at: u64, reason: &str) -> Option<u64> {
        let ev = Stamped {
            t: mono_now(),
            event: Event::RecordingStopped {
                reason: reason.to_owned(),
            },
        };
        let comment = format!("recording stopped: {reason}");
        self.pw.get_mut().clear();
        let ts = wall_timestamp(&self.info, ev.t);
        if self
            .encode_record(Source::Recorder, ts, None, &comment, |out| {
                serde_json::to_writer(out, &ev)
            })
            .is_err()
        {
            return None;
        }
        let block = std::mem::take(self.pw.get_mut());
        let ok = self.file.write_all_at(&block, at).is_ok();
        let len = block.len() as u64;
        *self.pw.get_mut() = block;
        self.pw.get_mut().clear();
        if ok {
            Some(len)
        } else {
            let _ = self.file.set_len(at);
            None
        }
    }
}

impl Drop for CaptureWriter {
    /// Best effort: write what is buffered when the writer is dropped without `finish`.
    fn drop(&mut self) {
        if !self.finished && self.stopped.is_none() {
            let _ = self.write_out();
            let _ = self.file.set_len(self.committed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_padding_counts_in_length() {
        let mut out = Vec::new();
        push_tlv(&mut out, 33, b"pm2-trace");
        assert_eq!(&out[..4], &[0, 33, 0, 12]);
        assert_eq!(&out[4..13], b"pm2-trace");
        assert_eq!(&out[13..], &[0, 0, 0]);
    }

    #[test]
    fn comments_are_clipped_on_char_boundary() {
        let long = "é".repeat(MAX_COMMENT_LEN);
        let c = clip_comment(&long);
        assert!(c.len() <= MAX_COMMENT_LEN);
        assert!(c.ends_with('…'));
        assert_eq!(clip_comment("short"), "short");
    }
}
