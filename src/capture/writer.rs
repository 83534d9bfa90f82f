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
//!
//! Disk: the bytes go to the disk directly (`O_DIRECT`), from aligned staging buffers a
//! thread of the writer's own writes out while the next one fills (see [`super::disk`]): a
//! capture is written once and read later, if at all, so it never passes through the page
//! cache. The writer learns of a failed write at its next call (or at a flush, which waits
//! for the disk); records handed over after the failing one are then counted as lost, like
//! buffered ones.
//!
//! Page cache, on a file system without direct I/O: every [`WRITE_BEHIND`] bytes, writeback
//! of the step just written is started (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, no
//! waiting) and the step before it, written back by then, is dropped from the page cache
//! (`posix_fadvise(DONTNEED)`; pages still dirty are kept by the kernel); at
//! [`finish`](CaptureWriter::finish), after the fsync, the whole file is. Without this a recording at hundreds of MB/s fills the page
//! cache with the capture, evicting the observed apps' files, and every new page it
//! writes costs a reclaim: the kernel's copy of the recorder's writes took 0.5 to 2.4 s of
//! CPU per GB on a machine whose memory was full of cache, against about 0.3 s with the
//! pages handed back as they were written.

use super::disk::{write_behind, Direct, Failure};
use super::{
    tag, CaptureError, FRAGMENT_HEADER_LEN, FRAGMENT_MAGIC, MAX_COMMENT_LEN, MAX_PACKET_LEN,
    MAX_RECORD_LEN,
};
use crate::event::{mono_now, CaptureInfo, Direction, Event, Source, Stamped};
use crate::safe_dir::{SafeDir, SafeDirError};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Buffered whole blocks are written once they reach this many bytes (or on `flush`).
const FLUSH_AT: usize = 256 * 1024;
/// Writeback is started, and the step before dropped from the page cache, every this many
/// bytes written.
const WRITE_BEHIND: u64 = 16 << 20;
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
    /// Shared with the direct writes' thread.
    file: Arc<File>,
    /// Direct writes, when the file system takes them (None: written through the page
    /// cache, here).
    direct: Option<Direct>,
    /// End offsets of the records handed to the direct writes and not known to be in the
    /// file yet, and whether each is an event.
    pending: VecDeque<(u64, bool)>,
    /// End offsets of the last records known to be in the file (direct writes), the
    /// latest last, reaching [`MARKER_RESERVE`] back: a stop marker that does not fit after
    /// the last (a file size limit) retreats over them.
    durable: VecDeque<(u64, bool)>,
    info: CaptureInfo,
    /// pcap-file's writer over our buffer of whole, not yet written blocks.
    pw: PcapNgWriter<Vec<u8>>,
    /// End offset (in the buffer) of each whole record in it, and whether it is an event.
    ends: Vec<(usize, bool)>,
    /// File length up to the last whole record written (handed to the direct writes).
    committed: u64,
    /// Events on disk.
    records: u64,
    /// Space reserved (fallocate, keep size) up to this offset.
    reserved_end: u64,
    /// Writeback was started up to this offset ([`WRITE_BEHIND`] steps).
    behind: u64,
    too_large: u64,
    stopped: Option<String>,
    /// A write failure from `flush`, not yet returned to the caller.
    unreported: Option<CaptureError>,
    finished: bool,
    /// Scratch buffers, reused for every record.
    payload: Vec<u8>,
    /// Block headers and trailers of a fragmented record's packets.
    framing: Vec<u8>,
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

/// Where [`CaptureWriter::encode_record`] put a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placed {
    /// Appended to the buffer of whole blocks.
    Buffered,
    /// Written to the file already (with everything buffered before it).
    Written,
}

/// pcapng block type of an Enhanced Packet Block.
const EPB_TYPE: u32 = 6;
/// EPB option codes.
const OPT_COMMENT: u16 = 1;
const OPT_FLAGS: u16 = 2;

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// Length of an EPB's options as pcap-file writes them: the comment (when not empty), the
/// flags, and the end-of-options marker when there is any.
fn epb_options_len(comment: &str, flags: Option<u32>) -> usize {
    let mut len = 0;
    if !comment.is_empty() {
        len += 4 + comment.len() + pad4(comment.len());
    }
    if flags.is_some() {
        len += 8;
    }
    if len > 0 {
        len += 4;
    }
    len
}

/// Total length of an EPB carrying `data_len` bytes of packet data.
fn epb_len(data_len: usize, comment: &str, flags: Option<u32>) -> usize {
    32 + data_len + pad4(data_len) + epb_options_len(comment, flags)
}

/// One Enhanced Packet Block to encode (little-endian section), byte for byte as pcap-file
/// writes it, around packet data given as slices (`data`, one after the other).
struct Epb<'a> {
    interface_id: u32,
    ts: Duration,
    comment: &'a str,
    flags: Option<u32>,
}

impl Epb<'_> {
    /// The part before the packet data.
    fn head(&self, out: &mut Vec<u8>, data: &[&[u8]]) {
        let data_len: usize = data.iter().map(|d| d.len()).sum();
        let block_len = epb_len(data_len, self.comment, self.flags) as u32;
        let ns = self.ts.as_nanos();
        out.extend_from_slice(&EPB_TYPE.to_le_bytes());
        out.extend_from_slice(&block_len.to_le_bytes());
        out.extend_from_slice(&self.interface_id.to_le_bytes());
        out.extend_from_slice(&((ns >> 32) as u32).to_le_bytes());
        out.extend_from_slice(&((ns & 0xFFFF_FFFF) as u32).to_le_bytes());
        out.extend_from_slice(&(data_len as u32).to_le_bytes());
        out.extend_from_slice(&(data_len as u32).to_le_bytes());
    }

    /// The part after the packet data: padding, options, length.
    fn tail(&self, out: &mut Vec<u8>, data: &[&[u8]]) {
        let (comment, flags) = (self.comment, self.flags);
        let data_len: usize = data.iter().map(|d| d.len()).sum();
        out.extend_from_slice(&[0u8; 3][..pad4(data_len)]);
        if !comment.is_empty() {
            out.extend_from_slice(&OPT_COMMENT.to_le_bytes());
            out.extend_from_slice(&(comment.len() as u16).to_le_bytes());
            out.extend_from_slice(comment.as_bytes());
            out.extend_from_slice(&[0u8; 3][..pad4(comment.len())]);
        }
        if let Some(f) = flags {
            out.extend_from_slice(&OPT_FLAGS.to_le_bytes());
            out.extend_from_slice(&4u16.to_le_bytes());
            out.extend_from_slice(&f.to_le_bytes());
        }
        if epb_options_len(comment, flags) > 0 {
            out.extend_from_slice(&[0u8; 4]);
        }
        out.extend_from_slice(&(epb_len(data_len, comment, flags) as u32).to_le_bytes());
    }

    /// The whole block, the data copied in.
    fn push(&self, out: &mut Vec<u8>, data: &[&[u8]]) {
        self.head(out, data);
        for d in data {
            out.extend_from_slice(d);
        }
        self.tail(out, data);
    }
}

/// Payload texts at least this long are written from where they are, not copied into the
/// record being serialised.
const LEAVE_IN_PLACE: usize = 64 * 1024;

/// The texts of an event's large JSON payloads, as kept (a payload held only as a tree is
/// not serialised here to be left in place).
fn large_payloads(ev: &Event) -> Vec<&str> {
    match ev {
        Event::RpcMessage { msg, .. } | Event::BusMessage { msg } => msg
            .0
            .args
            .iter()
            .filter_map(|a| a.as_payload()?.kept_text())
            .filter(|t| t.len() >= LEAVE_IN_PLACE)
            .collect(),
        _ => Vec::new(),
    }
}

/// Where a record's JSON is serialised: into `out`, except that a write of exactly one of
/// `texts` (serde_json writes a kept payload text in one piece) is not copied; its place
/// in `out` is noted in `left` with the text's index.
struct Serialised<'a, 't> {
    out: &'a mut Vec<u8>,
    texts: &'a [&'t str],
    left: Vec<(usize, usize)>,
}

impl io::Write for Serialised<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() >= LEAVE_IN_PLACE {
            let same = |t: &&str| t.as_ptr() == buf.as_ptr() && t.len() == buf.len();
            if let Some(i) = self.texts.iter().position(same) {
                self.left.push((self.out.len(), i));
                return Ok(buf.len());
            }
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `parts` (slices one after the other) cut into runs of `chunk` bytes (the last shorter),
/// each run as the slices (or parts of slices) it is made of.
fn split_slices<'a>(parts: &[&'a [u8]], chunk: usize) -> Vec<Vec<&'a [u8]>> {
    let mut runs = Vec::new();
    let mut run: Vec<&[u8]> = Vec::new();
    let mut room = chunk;
    for part in parts {
        let mut rest: &[u8] = part;
        while !rest.is_empty() {
            let take = rest.len().min(room);
            run.push(&rest[..take]);
            rest = &rest[take..];
            room -= take;
            if room == 0 {
                runs.push(std::mem::take(&mut run));
                room = chunk;
            }
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// The slices of `buf` after its first `skip` bytes.
fn slices_after<'a>(buf: &[&'a [u8]], mut skip: usize) -> Vec<io::IoSlice<'a>> {
    let mut out = Vec::with_capacity(buf.len());
    for s in buf {
        if skip >= s.len() {
            skip -= s.len();
            continue;
        }
        out.push(io::IoSlice::new(&s[skip..]));
        skip = 0;
    }
    out
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
        let file = Arc::new(open_new(path, overwrite)?);
        let direct = Direct::start(&file);
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
            direct,
            pending: VecDeque::new(),
            durable: VecDeque::new(),
            info: info.clone(),
            pw,
            ends: Vec::new(),
            committed: 0,
            records: 0,
            reserved_end: 0,
            behind: 0,
            too_large: 0,
            stopped: None,
            unreported: None,
            finished: false,
            payload: Vec::new(),
            framing: Vec::new(),
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
        w.encode_record(Source::Recorder, ts, None, &comment, None, |out| {
            serde_json::to_writer(out, &InfoRecord { capture_info: info })
        })?;
        w.ends.push((w.pw.get_ref().len(), false));
        w.write_out()?;
        w.sync_direct()?;
        Ok(w)
    }

    /// File length up to the last whole record written (with direct writes: handed to the
    /// disk; in the file once [`flush`](Self::flush) returns).
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
        let texts = large_payloads(&ev.event);
        let placed =
            self.encode_record(ev.event.source(), ts, flags, comment, Some(&texts), |out| {
                serde_json::to_writer(out, ev)
            })?;
        if placed == Placed::Buffered {
            self.ends.push((self.pw.get_ref().len(), true));
            if self.pw.get_ref().len() >= FLUSH_AT {
                self.write_out()?;
            }
        }
        Ok(())
    }

    /// Write all buffered records to the file and wait until they are there (no fsync);
    /// call it periodically so that a crash loses little. A failure here (disk full, …)
    /// closes the capture with the stop marker like any write failure, and is returned by
    /// the next
    /// [`write`](Self::write) or by [`finish`](Self::finish).
    pub fn flush(&mut self) {
        if self.stopped.is_some() {
            return;
        }
        if let Err(e) = self.write_out().and_then(|()| self.sync_direct()) {
            self.unreported = Some(e);
        }
    }

    /// Wait until the direct writes are in the file (the last, partial block written too).
    fn sync_direct(&mut self) -> Result<(), CaptureError> {
        let Some(d) = self.direct.as_mut() else {
            return Ok(());
        };
        match d.flush() {
            Ok(()) => {
                self.confirm();
                Ok(())
            }
            Err(f) => Err(self.fail_direct(f)),
        }
    }

    /// `total` bytes of records ending at `ends` (in them) handed to the direct writes: the
    /// file will hold them, and they count once it does.
    fn hand_over(&mut self, total: usize, ends: &[(usize, bool)]) {
        let start = self.committed;
        self.pending
            .extend(ends.iter().map(|&(end, event)| (start + end as u64, event)));
        self.committed += total as u64;
    }

    /// Count the records the direct writes have put in the file.
    fn confirm(&mut self) {
        if let Some(upto) = self.direct.as_ref().map(Direct::confirmed) {
            self.confirm_upto(upto);
        }
    }

    fn confirm_upto(&mut self, upto: u64) {
        while let Some(&(end, event)) = self.pending.front() {
            if end > upto {
                break;
            }
            self.pending.pop_front();
            self.durable.push_back((end, event));
            self.records += u64::from(event);
        }
        while self.durable.len() > 2 && self.durable[1].0 + MARKER_RESERVE <= end_of(&self.durable)
        {
            self.durable.pop_front();
        }
    }

    /// A direct write failed: stop them (the thread ends; the file takes ordinary writes
    /// again), then cut back to the last whole record and mark the stop, as for a failed
    /// write of the buffer ([`CaptureWriter::fail`]), the records handed over since that
    /// record counting as the buffer's.
    fn fail_direct(&mut self, f: Failure) -> CaptureError {
        drop(self.direct.take());
        self.confirm_upto(f.reached);
        // The records after the oldest one kept count as the buffer's (a marker may take
        // their place); the ones handed over and not in the file are lost.
        let base = self.durable.front().map_or(0, |e| e.0);
        let recent = self.durable.iter().skip(1);
        self.records -= recent.clone().filter(|e| e.1).count() as u64;
        let ends: Vec<(usize, bool)> = recent
            .chain(&self.pending)
            .map(|&(end, event)| ((end - base) as usize, event))
            .collect();
        self.durable.clear();
        self.pending.clear();
        self.committed = base;
        let written = f.reached.saturating_sub(base) as usize;
        self.fail(f.error, written, &ends)
    }

    /// Write the buffer out now.
    fn write_out(&mut self) -> Result<(), CaptureError> {
        self.write_out_with(&[])
    }

    /// Write the buffer out now, followed in the same positioned write by one more event
    /// record made of the `record` slices (a fragmented record, written from where its
    /// pieces are rather than copied into the buffer first).
    fn write_out_with(&mut self, record: &[&[u8]]) -> Result<(), CaptureError> {
        self.check_stopped()?;
        let buf = std::mem::take(self.pw.get_mut());
        let mut ends = std::mem::take(&mut self.ends);
        let mut slices = Vec::with_capacity(1 + record.len());
        slices.push(&buf[..]);
        if !record.is_empty() {
            slices.extend_from_slice(record);
            let len: usize = record.iter().map(|s| s.len()).sum();
            ends.push((buf.len() + len, true));
        }
        let result = self.write_buffer(&slices, &ends);
        // Give the (cleared) allocation back for reuse.
        let mut buf = buf;
        buf.clear();
        *self.pw.get_mut() = buf;
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
            if let Err(e) = self.write_out().and_then(|()| self.sync_direct()) {
                let _ = self.file.sync_all();
                return Err(e);
            }
        }
        // Everything is in the file: end the direct writes' thread.
        drop(self.direct.take());
        // Drop space reserved past the end of the data (truncating to the same length frees
        // preallocated blocks beyond it).
        let _ = self.file.set_len(self.committed);
        self.file.sync_all().map_err(|error| CaptureError::Io {
            path: self.path.clone(),
            offset: self.committed,
            op: "cannot fsync the capture",
            error,
        })?;
        // All on disk: the capture's pages go back to the host.
        let _ = rustix::fs::fadvise(&self.file, 0, None, rustix::fs::Advice::DontNeed);
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
    /// Block, or as fragments when it does not fit one packet, appending to the buffer. With
    /// `direct` (the event's large payload texts), a fragmented record is instead written at
    /// once after the buffer, from where its pieces are: the JSON serialised around those
    /// texts, and the texts themselves, never copied ([`Placed::Written`]).
    fn encode_record(
        &mut self,
        source: Source,
        ts: Duration,
        flags: Option<u32>,
        comment: &str,
        direct: Option<&[&str]>,
        body: impl FnOnce(&mut Serialised) -> serde_json::Result<()>,
    ) -> Result<Placed, CaptureError> {
        let comment = clip_comment(comment);
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        push_tags(&mut payload, "json");
        let tags_len = payload.len();
        let result = self.encode_payload(
            &mut payload,
            tags_len,
            source,
            ts,
            flags,
            &comment,
            direct,
            body,
        );
        if payload.capacity() > MAX_RECORD_LEN / 2 {
            // Don't keep a huge one-off record's allocation; a poller's multi-MB replies
            // reuse theirs (a fresh one each time costs a page fault per page).
            payload = Vec::new();
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
        direct: Option<&[&str]>,
        body: impl FnOnce(&mut Serialised) -> serde_json::Result<()>,
    ) -> Result<Placed, CaptureError> {
        let offset = self.committed + self.pw.get_ref().len() as u64;
        let mut out = Serialised {
            out: payload,
            texts: direct.unwrap_or(&[]),
            left: Vec::new(),
        };
        body(&mut out).map_err(|e| CaptureError::Io {
            path: self.path.clone(),
            offset,
            op: "cannot encode event as JSON",
            error: io::Error::other(e),
        })?;
        let Serialised {
            out: payload,
            left,
            texts,
        } = out;
        // The JSON: what was serialised, with the texts left in place put back between.
        let mut json: Vec<&[u8]> = Vec::with_capacity(1 + 2 * left.len());
        let mut at = tags_len;
        for &(pos, i) in &left {
            json.push(&payload[at..pos]);
            json.push(texts[i].as_bytes());
            at = pos;
        }
        json.push(&payload[at..]);
        let json_len: usize = json.iter().map(|p| p.len()).sum();
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
        if tags_len + json_len <= MAX_PACKET_LEN {
            let epb = Epb {
                interface_id,
                ts,
                comment,
                flags,
            };
            let mut data = vec![&payload[..tags_len]];
            data.extend_from_slice(&json);
            epb.push(self.pw.get_mut(), &data);
            return Ok(Placed::Buffered);
        }
        // Fragments: each packet carries a "data" dissector tag (Wireshark shows raw bytes),
        // a fragment header and a slice of the JSON. Their block headers and trailers are
        // made in `framing`; the slices of the JSON stay where they are.
        let chunk = MAX_PACKET_LEN - FRAGMENT_HEADER_LEN - 256;
        let fragments = split_slices(&json, chunk);
        let count = fragments.len();
        let mut framing = std::mem::take(&mut self.framing);
        framing.clear();
        // (end of the header before piece i, end of the trailer after it) in `framing`.
        let mut bounds = Vec::with_capacity(count);
        for (i, piece) in fragments.iter().enumerate() {
            let part_comment = format!("{comment} [record part {}/{count}]", i + 1);
            let mut head = Vec::with_capacity(64);
            push_tags(&mut head, "data");
            head.extend_from_slice(FRAGMENT_MAGIC);
            head.extend_from_slice(&(i as u32).to_be_bytes());
            head.extend_from_slice(&(count as u32).to_be_bytes());
            head.extend_from_slice(&(json_len as u32).to_be_bytes());
            let mut data = vec![&head[..]];
            data.extend_from_slice(piece);
            let epb = Epb {
                interface_id,
                ts,
                comment: &part_comment,
                flags,
            };
            epb.head(&mut framing, &data);
            framing.extend_from_slice(&head);
            let head_end = framing.len();
            epb.tail(&mut framing, &data);
            bounds.push((head_end, framing.len()));
        }
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(4 * count);
        let mut from = 0;
        for ((head_end, tail_end), piece) in bounds.iter().zip(&fragments) {
            pieces.push(&framing[from..*head_end]);
            pieces.extend_from_slice(piece);
            pieces.push(&framing[*head_end..*tail_end]);
            from = *tail_end;
        }
        let result = if direct.is_some() {
            self.write_out_with(&pieces).map(|()| Placed::Written)
        } else {
            let out = self.pw.get_mut();
            for p in &pieces {
                out.extend_from_slice(p);
            }
            Ok(Placed::Buffered)
        };
        drop((pieces, fragments, json));
        self.framing = framing;
        result
    }

    /// Keep space reserved on disk past the data about to be written (best effort). False
    /// when the space is short: less than the data and the stop marker could be reserved.
    fn reserve(&mut self, upcoming: u64) -> bool {
        let needed = self.committed + upcoming + MARKER_RESERVE;
        if needed <= self.reserved_end {
            return true;
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
                return needed <= self.reserved_end;
            }
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP) {
                return true;
            }
        }
        false
    }

    /// Give back the space reserved past `at`: the marker written there takes it. (Cutting
    /// the file back frees blocks past its end only when the length changes; with direct
    /// writes, space was reserved ahead of data not written yet, past the cut.)
    fn release_beyond(&mut self, at: u64) {
        if self.reserved_end <= at {
            return;
        }
        // SAFETY: fallocate on a descriptor we own; it only frees blocks past `at` (the file
        // keeps its length); failure (unsupported) is fine.
        unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                at as libc::off_t,
                (self.reserved_end - at) as libc::off_t,
            );
        }
        self.reserved_end = at;
    }

    /// Start writeback of each whole [`WRITE_BEHIND`] step written since the last call, and
    /// drop the step before each from the page cache (see the module documentation). Best
    /// effort: a file system without these calls keeps its pages as before.
    fn write_behind(&mut self) {
        if self.direct.is_some() {
            return;
        }
        for (start, drop) in behind_steps(self.behind, self.committed) {
            let step = |at| (at, WRITE_BEHIND);
            write_behind(&self.file, step(start), drop.map(step));
            self.behind = start + WRITE_BEHIND;
        }
    }

    /// Write `buf` (its slices one after the other) at the end of the last whole record, in
    /// positioned vectored writes; `ends` are the records' end offsets in it.
    fn write_buffer(&mut self, buf: &[&[u8]], ends: &[(usize, bool)]) -> Result<(), CaptureError> {
        let total: usize = buf.iter().map(|s| s.len()).sum();
        if total == 0 {
            return Ok(());
        }
        let reserved = self.reserve(total as u64);
        if let (false, Some(d)) = (reserved, self.direct.as_mut()) {
            // Short of space: the writes so far reach the file first, then this one and all
            // after are made here, at once, so that the space kept for the stop marker is
            // past the data actually written (direct writes lag behind the reservations).
            match d.flush() {
                Ok(()) => {
                    self.confirm();
                    drop(self.direct.take());
                    self.reserve(total as u64);
                }
                Err(f) => {
                    self.hand_over(total, ends);
                    return Err(self.fail_direct(f));
                }
            }
        }
        if self.direct.is_some() {
            self.hand_over(total, ends);
            let d = self.direct.as_mut().expect("direct writes");
            return match d.append(buf).and_then(|()| d.write_whole()) {
                Ok(()) => {
                    self.confirm();
                    Ok(())
                }
                Err(f) => Err(self.fail_direct(f)),
            };
        }
        let mut written = 0usize;
        let error = loop {
            let rest = slices_after(buf, written);
            match rustix::io::pwritev(&self.file, &rest, self.committed + written as u64) {
                Ok(0) => break io::Error::new(io::ErrorKind::WriteZero, "write returned 0 bytes"),
                Ok(n) => {
                    written += n;
                    if written == total {
                        self.committed += total as u64;
                        self.write_behind();
                        self.records += ends.iter().filter(|e| e.1).count() as u64;
                        return Ok(());
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => break e.into(),
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
            self.release_beyond(at);
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
            .encode_record(Source::Recorder, ts, None, &comment, None, |out| {
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

/// The end of the last of `ends` (0 when there is none).
fn end_of(ends: &VecDeque<(u64, bool)>) -> u64 {
    ends.back().map_or(0, |e| e.0)
}

/// The [`WRITE_BEHIND`] steps to hand to the disk when writeback was started up to `behind`
/// and the file now holds `committed` bytes: each step's start, and the start of the step
/// before it (to drop from the page cache) when there is one.
fn behind_steps(behind: u64, committed: u64) -> impl Iterator<Item = (u64, Option<u64>)> {
    (behind / WRITE_BEHIND..committed / WRITE_BEHIND).map(|k| {
        let start = k * WRITE_BEHIND;
        (start, start.checked_sub(WRITE_BEHIND))
    })
}

impl Drop for CaptureWriter {
    /// Best effort: write what is buffered when the writer is dropped without `finish`.
    fn drop(&mut self) {
        if !self.finished && self.stopped.is_none() {
            let _ = self.write_out().and_then(|()| self.sync_direct());
            drop(self.direct.take());
            let _ = self.file.set_len(self.committed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};

    #[test]
    fn write_behind_hands_over_each_whole_step_and_drops_the_one_before() {
        const S: u64 = WRITE_BEHIND;
        let steps = |b, c| behind_steps(b, c).collect::<Vec<_>>();
        assert_eq!(steps(0, S - 1), []);
        assert_eq!(steps(0, S), [(0, None)]);
        assert_eq!(steps(S, 2 * S + 5), [(S, Some(0))]);
        // A large write crosses several steps at once.
        assert_eq!(
            steps(S, 4 * S),
            [(S, Some(0)), (2 * S, Some(S)), (3 * S, Some(2 * S))]
        );
        // Cut back after a write failure: nothing to do.
        assert_eq!(steps(3 * S, S), []);
    }

    #[test]
    fn tlv_padding_counts_in_length() {
        let mut out = Vec::new();
        push_tlv(&mut out, 33, b"pm2-trace");
        assert_eq!(&out[..4], &[0, 33, 0, 12]);
        assert_eq!(&out[4..13], b"pm2-trace");
        assert_eq!(&out[13..], &[0, 0, 0]);
    }

    /// The hand-made Enhanced Packet Blocks are byte for byte what pcap-file writes (the
    /// capture format is unchanged), whatever the padding, options and slicing of the data.
    #[test]
    fn epbs_are_encoded_as_pcap_file_encodes_them() {
        let shb = SectionHeaderBlock {
            endianness: Endianness::Little,
            major_version: 1,
            minor_version: 0,
            section_length: -1,
            options: vec![],
        };
        let mut pw = PcapNgWriter::with_section_header(Vec::new(), shb).unwrap();
        for _ in 0..3 {
            let idb = InterfaceDescriptionBlock {
                linktype: DataLink::WIRESHARK_UPPER_PDU,
                snaplen: 0,
                options: vec![InterfaceDescriptionOption::IfTsResol(9)],
            };
            pw.write_pcapng_block(idb).unwrap();
        }
        let data: Vec<u8> = (0..=255u8).cycle().take(1031).collect();
        let times = [
            Duration::ZERO,
            Duration::from_nanos(1_764_000_000_123_456_789),
        ];
        for len in [0usize, 1, 2, 3, 4, 5, 7, 8, 300, 1031] {
            for comment in ["", "a", "ab", "abc", "abcd", "é… [record part 1/3]"] {
                for flags in [None, Some(EPB_FLAG_INBOUND), Some(EPB_FLAG_OUTBOUND)] {
                    for (iface, ts) in times.iter().enumerate() {
                        let mut options = Vec::new();
                        if !comment.is_empty() {
                            options.push(EnhancedPacketOption::Comment(Cow::Borrowed(comment)));
                        }
                        if let Some(f) = flags {
                            options.push(EnhancedPacketOption::Flags(f));
                        }
                        let before = pw.get_ref().len();
                        pw.write_pcapng_block(EnhancedPacketBlock {
                            interface_id: iface as u32,
                            timestamp: *ts,
                            original_len: len as u32,
                            data: Cow::Borrowed(&data[..len]),
                            options,
                        })
                        .unwrap();
                        let theirs = pw.get_ref()[before..].to_vec();
                        let cut = len / 3;
                        let mut ours = Vec::new();
                        let pieces = [&data[..cut], &data[cut..len]];
                        let epb = Epb {
                            interface_id: iface as u32,
                            ts: *ts,
                            comment,
                            flags,
                        };
                        epb.push(&mut ours, &pieces);
                        assert_eq!(
                            ours, theirs,
                            "len {len}, comment {comment:?}, flags {flags:?}"
                        );
                    }
                }
            }
        }
    }

    /// Large payload texts written from where they are make the very bytes that copying
    /// them makes: the same events, once with kept texts (as decoded from the wire) and once
    /// held as trees (serialised by copying), give identical files, and read back the same.
    #[test]
    fn payloads_left_in_place_write_the_same_bytes() {
        use crate::event::WireMessage;
        use crate::wire::amp::{Arg, Message};
        use crate::wire::json::Json;
        let text = |n: usize, tag: &str| {
            let apps: Vec<serde_json::Value> = (0..n)
                .map(
                    |i| serde_json::json!({"pm_id": i, "name": format!("{tag}{i}"), "pad": "é\"x"}),
                )
                .collect();
            serde_json::to_string(&apps).unwrap()
        };
        // Around every size that matters: below the in-place threshold, one packet, many.
        let sizes = [100, 1_700, 2_000, 5_000, 30_000];
        let events = |kept: bool| -> Vec<Stamped> {
            let json = |t: &str| {
                if kept {
                    Json::parse(t.as_bytes()).unwrap()
                } else {
                    Json::from(serde_json::from_str::<serde_json::Value>(t).unwrap())
                }
            };
            let mut evs = Vec::new();
            for (k, n) in sizes.iter().enumerate() {
                let t = text(*n, "app");
                assert!(k < 2 || t.len() >= LEAVE_IN_PLACE, "{}", t.len());
                evs.push(Stamped {
                    t: 1_000 + k as u64,
                    event: Event::RpcMessage {
                        conn: 1,
                        dir: Direction::ToClient,
                        msg: WireMessage(Message::new(vec![
                            Arg::Json(json(&t)),
                            Arg::Str(format!("7:{k}")),
                        ])),
                        ask: Some(k as u64),
                        asked: None,
                    },
                });
                // Two large payloads in one message, and a small one between.
                evs.push(Stamped {
                    t: 2_000 + k as u64,
                    event: Event::BusMessage {
                        msg: WireMessage(Message::new(vec![
                            Arg::Json(json(&text(*n, "a"))),
                            Arg::Json(json("{\"x\":1}")),
                            Arg::Json(json(&text(*n + 7, "b"))),
                        ])),
                    },
                });
            }
            evs
        };
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for kept in [true, false] {
            let path = dir.path().join(format!("kept-{kept}.pcapng"));
            let mut w = CaptureWriter::create(&path, &CaptureInfo::default(), false).unwrap();
            for ev in events(kept) {
                w.write(&ev, "a comment").unwrap();
            }
            w.finish().unwrap();
            files.push(std::fs::read(&path).unwrap());
            let back: Vec<Stamped> = crate::capture::CaptureReader::open(&path)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(back == events(true), "read back differs (kept: {kept})");
        }
        assert!(
            files[0] == files[1],
            "payloads left in place wrote other bytes"
        );
    }

    /// Direct writes make the very file the page-cache path makes: the same events (small,
    /// fragmented, left in place), flushed between at odd offsets, written once each way.
    #[test]
    fn direct_and_cached_writes_make_the_same_file() {
        use crate::event::NoteLevel;
        let exe = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
        let events: Vec<Stamped> = (0..80u64)
            .map(|i| Stamped {
                t: 1_000 + i,
                event: Event::Note {
                    level: NoteLevel::Info,
                    text: "n".repeat(
                        [10, 700, 5_000, 70_000, 300_000, 1_200_000][i as usize % 6] + i as usize,
                    ),
                },
            })
            .collect();
        let mut files = Vec::new();
        for direct in [true, false] {
            let path = dir.path().join(format!("direct-{direct}.pcapng"));
            let mut w = CaptureWriter::create(&path, &CaptureInfo::default(), false).unwrap();
            if direct {
                assert!(
                    w.direct.is_some(),
                    "no direct I/O on the build's file system"
                );
            } else {
                drop(w.direct.take());
            }
            for (i, ev) in events.iter().enumerate() {
                w.write(ev, &format!("note {i}")).unwrap();
                if i % 7 == 3 {
                    w.flush();
                }
            }
            let summary = w.finish().unwrap();
            assert_eq!(summary.records, events.len() as u64);
            files.push(std::fs::read(&path).unwrap());
        }
        assert!(files[0] == files[1], "direct writes made another file");
    }

    #[test]
    fn split_slices_cuts_across_slices() {
        let parts: [&[u8]; 4] = [b"abc", b"", b"defgh", b"i"];
        let runs: Vec<Vec<u8>> = split_slices(&parts, 4)
            .into_iter()
            .map(|r| r.concat())
            .collect();
        assert_eq!(
            runs,
            vec![b"abcd".to_vec(), b"efgh".to_vec(), b"i".to_vec()]
        );
        assert!(split_slices(&[b"" as &[u8]], 4).is_empty());
    }

    #[test]
    fn slices_after_skips_whole_and_partial_slices() {
        let buf: [&[u8]; 3] = [b"abc", b"", b"defg"];
        let text = |skip| -> Vec<u8> {
            slices_after(&buf, skip)
                .iter()
                .flat_map(|s| s.to_vec())
                .collect()
        };
        assert_eq!(text(0), b"abcdefg");
        assert_eq!(text(2), b"cdefg");
        assert_eq!(text(3), b"defg");
        assert_eq!(text(5), b"fg");
        assert_eq!(text(7), b"");
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
