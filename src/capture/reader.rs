//! Reading a capture back: streaming, bounded, never panicking on hostile bytes.
//!
//! The block framing (type, length, trailing length) is parsed here and checked before any
//! buffer grows: a length that is not a multiple of 4, below 12 or above
//! [`MAX_BLOCK_LEN`] is [`CaptureError::Corrupt`]. The read buffer grows only as bytes
//! actually arrive from the file, so a lying length field in a short file costs nothing.
//! Section headers and interface descriptions are decoded with `pcap-file`; Enhanced
//! Packet Blocks (the hot path) are decoded here, in place, without copying the record.

use super::members::{msg, opt, or_null, plain_str, serde, whole, Fields, InOrder, Members};
use super::{
    tag, CaptureError, FRAGMENT_HEADER_LEN, FRAGMENT_MAGIC, LINKTYPE_WIRESHARK_UPPER_PDU,
    MAX_BLOCK_LEN, MAX_RECORD_LEN,
};
use crate::event::{CaptureInfo, Event, Source, Stamped};
use crate::wire::json::scan;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::blocks::section_header::SectionHeaderOption;
use pcap_file::pcapng::{Block, PcapNgParser};
use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

const SHB_TYPE: u32 = 0x0A0D_0D0A;
const IDB_TYPE: u32 = 1;
const EPB_TYPE: u32 = 6;
const INITIAL_BUFFER: usize = 1024 * 1024;
/// More interfaces than this in one section is corruption (pm2-trace writes four).
const MAX_INTERFACES: usize = 1 << 16;
/// A little-endian section header without options, to set up pcap-file's block parser.
const MINIMAL_SHB: [u8; 28] = [
    0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 28, 0, 0, 0,
];

/// Where a capture ends inside a block or a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// Offset of the incomplete block (or of the first fragment of an incomplete record):
    /// everything before it was read.
    pub offset: u64,
    /// Length of the file as read.
    pub file_len: u64,
    /// Whole event records read before it.
    pub records: u64,
}

/// What the section header says about the program that wrote the capture.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SectionHeader {
    /// `shb_userappl`, e.g. `pm2-trace 0.1.0`.
    pub user_appl: Option<String>,
    /// `shb_os`: the kernel.
    pub os: Option<String>,
    /// `shb_hardware`: the host.
    pub hardware: Option<String>,
}

struct Reassembly {
    offset: u64,
    interface: u32,
    count: u32,
    total: u32,
    next: u32,
    data: Vec<u8>,
}

/// Reads a capture written by [`CaptureWriter`](super::CaptureWriter). Iterate it for the
/// events; see the module documentation for the guarantees.
pub struct CaptureReader {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`; `pos` is the file offset of `buf[start]`.
    start: usize,
    end: usize,
    pos: u64,
    eof: bool,
    /// A section header was read (interfaces and packets may follow).
    in_section: bool,
    /// Per interface of the current section: the source, or None for one we don't know.
    interfaces: Vec<Option<Source>>,
    header: SectionHeader,
    /// The capture-info record (set before `open` returns).
    info: CaptureInfo,
    have_info: bool,
    records: u64,
    skipped: u64,
    frag: Option<Reassembly>,
    /// The last reassembled fragmented record.
    assembled: Vec<u8>,
    truncated: Option<Truncation>,
    done: bool,
    /// The tape of the record being decoded, kept for the next one.
    tape: scan::Tape,
}

impl std::fmt::Debug for CaptureReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader")
            .field("path", &self.path)
            .field("offset", &self.pos)
            .field("records", &self.records)
            .field("skipped", &self.skipped)
            .field("truncated", &self.truncated)
            .finish_non_exhaustive()
    }
}

/// What one step of reading produced.
enum Step {
    /// A whole JSON record at `offset`: in `buf[at]`, or in `assembled` when `at` is None.
    Json {
        offset: u64,
        at: Option<std::ops::Range<usize>>,
    },
    Nothing,
    End,
}

/// What one JSON record turned out to be.
enum Decoded {
    Info(CaptureInfo),
    Event(Stamped),
    Skip,
}

#[derive(serde::Deserialize)]
struct InfoRecord {
    capture_info: CaptureInfo,
}

/// Just enough of a record to tell why it did not parse.
#[derive(serde::Deserialize)]
struct Probe<'a> {
    #[serde(rename = "type", borrow, default)]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    capture_info: Option<serde::de::IgnoredAny>,
}

/// An error from reading an event's tags alone: whether serde met a variant name the event
/// schema does not have (a type written by a newer pm2-trace), told by serde's own
/// `unknown_variant` hook rather than by the wording of its message.
#[derive(Debug)]
enum TagError {
    UnknownVariant,
    Other,
}

impl std::fmt::Display for TagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TagError::UnknownVariant => "unknown variant",
            TagError::Other => "other error",
        })
    }
}

impl std::error::Error for TagError {}

impl serde::de::Error for TagError {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        TagError::Other
    }
    fn unknown_variant(_: &str, _: &'static [&'static str]) -> Self {
        TagError::UnknownVariant
    }
}

/// Whether a record's `type` (and, for `proc`, its `kind`) names an event this version does
/// not know: such a record is skipped, not an error.
fn unknown_event_type(ty: &str, kind: Option<&str>) -> bool {
    use serde::de::value::MapDeserializer;
    use serde::Deserialize;
    let mut tags = vec![("type", ty)];
    if let (Some(kind), "proc") = (kind, ty) {
        tags.push(("kind", kind));
    }
    // Only the tags are given: a known type fails later, on its missing fields.
    let tags = MapDeserializer::<_, TagError>::new(tags.into_iter());
    matches!(Event::deserialize(tags), Err(TagError::UnknownVariant))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl CaptureReader {
    /// Open a capture: read its section header, interfaces and the capture-info record.
    pub fn open(path: &Path) -> Result<CaptureReader, CaptureError> {
        let file = File::open(path).map_err(|error| CaptureError::Io {
            path: path.to_owned(),
            offset: 0,
            op: "cannot open capture",
            error,
        })?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let initial = (len as usize).clamp(4096, INITIAL_BUFFER);
        let mut r = CaptureReader {
            path: path.to_owned(),
            file,
            buf: vec![0; initial],
            start: 0,
            end: 0,
            pos: 0,
            eof: false,
            in_section: false,
            interfaces: Vec::new(),
            header: SectionHeader::default(),
            info: CaptureInfo::default(),
            have_info: false,
            records: 0,
            skipped: 0,
            frag: None,
            assembled: Vec::new(),
            truncated: None,
            done: false,
            tape: scan::Tape::new(),
        };
        r.read_first_section_header()?;
        loop {
            match r.step() {
                Ok(Step::Json { offset, at }) => {
                    let json = match at {
                        Some(range) => &r.buf[range],
                        None => &r.assembled[..],
                    };
                    match decode_json(&r.path, offset, json, false, &mut r.skipped, &mut r.tape) {
                        Ok(Decoded::Info(info)) => {
                            r.info = info;
                            r.have_info = true;
                            return Ok(r);
                        }
                        Ok(_) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(Step::Nothing) => {}
                Ok(Step::End) => {
                    let (offset, what) = match r.truncated {
                        Some(t) => (t.offset, "the capture ends inside a block before its capture-info record (truncated)"),
                        None => (r.pos, "the capture ends before its capture-info record"),
                    };
                    return Err(r.corrupt(offset, what));
                }
                Err(e) => return Err(e.into_inner()),
            }
        }
    }

    /// The capture's metadata (its first record).
    pub fn info(&self) -> &CaptureInfo {
        &self.info
    }

    /// What the section header says about the writer.
    pub fn section_header(&self) -> &SectionHeader {
        &self.header
    }

    /// The path being read.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Set when the file ended inside a block (or inside a fragmented record): where, and
    /// how many whole records were read before. Known once iteration has ended.
    pub fn truncated(&self) -> Option<Truncation> {
        self.truncated
    }

    /// File offset of the next block to read (the end of everything read so far).
    pub fn offset(&self) -> u64 {
        self.pos
    }

    /// Records, blocks and interfaces skipped because this version does not know them.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Event records read so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The next record's JSON text, undecoded and uncopied (fragmented records are
    /// reassembled first), with the offset of its first block; an alternative to iterating
    /// for consumers that decode lazily or pass records through. Unlike the iterator, it
    /// does not look at the record's `type`: records of unknown types come out too. Errors
    /// and the end of the file behave as for the iterator.
    pub fn next_json(&mut self) -> Option<Result<(u64, &[u8]), CaptureError>> {
        while !self.done {
            match self.step() {
                Ok(Step::Json { offset, at }) => {
                    self.records += 1;
                    let json = match at {
                        Some(range) => &self.buf[range],
                        None => &self.assembled[..],
                    };
                    return Some(Ok((offset, json)));
                }
                Ok(Step::Nothing) => {}
                Ok(Step::End) => self.done = true,
                Err(Fail::Record(e)) => return Some(Err(e)),
                Err(Fail::Fatal(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }

    fn corrupt(&self, offset: u64, what: impl Into<String>) -> CaptureError {
        CaptureError::Corrupt {
            path: self.path.clone(),
            offset,
            what: what.into(),
        }
    }

    /// A corrupt record inside intact block framing: reading can go on after it.
    fn rec(&self, offset: u64, what: impl Into<String>) -> Fail {
        Fail::Record(self.corrupt(offset, what))
    }

    /// Make at least `n` unconsumed bytes available; false when the file ends first.
    /// Grows the buffer only as bytes arrive, and never beyond `n` (checked by callers).
    fn fill(&mut self, n: usize) -> Result<bool, CaptureError> {
        while self.end - self.start < n {
            if self.eof {
                return Ok(false);
            }
            if self.end == self.buf.len() {
                if self.start > 0 {
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                } else {
                    let grown = (self.buf.len() * 2).min(n).max(self.buf.len() + 1);
                    self.buf.resize(grown, 0);
                }
                if self.end == self.buf.len() {
                    continue;
                }
            }
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(CaptureError::Io {
                        path: self.path.clone(),
                        offset: self.pos + (self.end - self.start) as u64,
                        op: "cannot read capture",
                        error,
                    })
                }
            }
        }
        Ok(true)
    }

    fn file_len_so_far(&self) -> u64 {
        self.pos + (self.end - self.start) as u64
    }

    fn set_truncated(&mut self, offset: u64) {
        let offset = self.frag.as_ref().map_or(offset, |f| f.offset);
        self.truncated = Some(Truncation {
            offset,
            file_len: self.file_len_so_far(),
            records: self.records,
        });
    }

    /// Read the section header that must open the file.
    fn read_first_section_header(&mut self) -> Result<(), CaptureError> {
        let have = self.fill(12)?;
        let avail = self.end - self.start;
        if !have {
            return Err(if avail == 0 {
                self.corrupt(0, "the file is empty, not a pcapng capture")
            } else {
                self.corrupt(
                    0,
                    format!(
                        "the file is only {avail} bytes long, not a pcapng capture (truncated?)"
                    ),
                )
            });
        }
        let b = &self.buf[self.start..self.start + 12];
        if le32(b, 0) != SHB_TYPE {
            let magic = [b[0], b[1], b[2], b[3]];
            let what = match magic {
                [0xd4, 0xc3, 0xb2, 0xa1] | [0xa1, 0xb2, 0xc3, 0xd4] | [0x4d, 0x3c, 0xb2, 0xa1] | [0xa1, 0xb2, 0x3c, 0x4d] => {
                    "this is a classic pcap file, not pcapng: not a pm2-trace capture".to_owned()
                }
                _ => format!(
                    "not a pcapng capture: it does not start with a section header block (first bytes {:02x} {:02x} {:02x} {:02x})",
                    magic[0], magic[1], magic[2], magic[3]
                ),
            };
            return Err(self.corrupt(0, what));
        }
        Ok(())
    }

    /// Read the next block's framing; returns (type, offset, range of the whole block in buf).
    /// None at the end of the file (with `truncated` set when it ended inside a block).
    fn next_block(&mut self) -> Result<Option<(u32, u64, std::ops::Range<usize>)>, CaptureError> {
        let offset = self.pos;
        if !self.fill(8)? {
            // Ends inside a block header, or between the fragments of a record.
            if self.end > self.start || self.frag.is_some() {
                self.set_truncated(offset);
            }
            return Ok(None);
        }
        let s = self.start;
        let ty = le32(&self.buf, s);
        if ty == SHB_TYPE {
            if !self.fill(12)? {
                self.set_truncated(offset);
                return Ok(None);
            }
            let s = self.start;
            match &self.buf[s + 8..s + 12] {
                [0x4d, 0x3c, 0x2b, 0x1a] => {}
                [0x1a, 0x2b, 0x3c, 0x4d] => {
                    return Err(self.corrupt(
                        offset,
                        "big-endian pcapng section: not supported (pm2-trace writes little-endian captures)",
                    ))
                }
                m => {
                    return Err(self.corrupt(
                        offset,
                        format!(
                            "section header with a bad byte-order magic {:02x}{:02x}{:02x}{:02x}: not a pcapng capture",
                            m[0], m[1], m[2], m[3]
                        ),
                    ))
                }
            }
        }
        let s = self.start;
        let len = le32(&self.buf, s + 4) as usize;
        if len < 12 || len % 4 != 0 || len > MAX_BLOCK_LEN {
            return Err(self.corrupt(
                offset,
                format!(
                    "block of type {ty:#x} has an impossible length {len} (must be a multiple of 4, at least 12 and at most {MAX_BLOCK_LEN})"
                ),
            ));
        }
        if !self.fill(len)? {
            self.set_truncated(offset);
            return Ok(None);
        }
        let s = self.start;
        let trailer = le32(&self.buf, s + len - 4) as usize;
        if trailer != len {
            return Err(self.corrupt(
                offset,
                format!(
                    "block of type {ty:#x}: length {len} at its start but {trailer} at its end"
                ),
            ));
        }
        self.start += len;
        self.pos += len as u64;
        Ok(Some((ty, offset, s..s + len)))
    }

    /// Read one block and interpret it.
    fn step(&mut self) -> Result<Step, Fail> {
        let Some((ty, offset, range)) = self.next_block()? else {
            return Ok(Step::End);
        };
        match ty {
            SHB_TYPE => {
                self.read_section_header(offset, range)?;
                Ok(Step::Nothing)
            }
            IDB_TYPE => {
                self.interface(offset, range)?;
                Ok(Step::Nothing)
            }
            EPB_TYPE => self.packet(offset, range),
            _ => {
                // Interface statistics, name resolution, custom and future blocks.
                if ty != 4 && ty != 5 {
                    self.skipped += 1;
                }
                Ok(Step::Nothing)
            }
        }
    }

    fn read_section_header(
        &mut self,
        offset: u64,
        range: std::ops::Range<usize>,
    ) -> Result<(), CaptureError> {
        if self.frag.is_some() {
            return Err(self.corrupt(offset, "a new section starts inside a fragmented record"));
        }
        let block = &self.buf[range];
        if block.len() < 28 {
            return Err(self.corrupt(offset, "section header block too short"));
        }
        let major = u16::from_le_bytes([block[12], block[13]]);
        if major != 1 {
            return Err(self.corrupt(
                offset,
                format!("pcapng major version {major} is not supported (only 1)"),
            ));
        }
        let header = match PcapNgParser::new(block) {
            Ok((_, parser)) => {
                let mut h = SectionHeader::default();
                for opt in &parser.section().options {
                    match opt {
                        SectionHeaderOption::UserApplication(s) => {
                            h.user_appl = Some(s.to_string())
                        }
                        SectionHeaderOption::OS(s) => h.os = Some(s.to_string()),
                        SectionHeaderOption::Hardware(s) => h.hardware = Some(s.to_string()),
                        _ => {}
                    }
                }
                h
            }
            Err(e) => return Err(self.corrupt(offset, format!("bad section header block: {e}"))),
        };
        self.header = header;
        self.in_section = true;
        self.interfaces.clear();
        Ok(())
    }

    fn interface(
        &mut self,
        offset: u64,
        range: std::ops::Range<usize>,
    ) -> Result<(), CaptureError> {
        if !self.in_section {
            return Err(self.corrupt(offset, "interface description before any section header"));
        }
        if self.interfaces.len() >= MAX_INTERFACES {
            return Err(self.corrupt(
                offset,
                format!("more than {MAX_INTERFACES} interfaces in one section"),
            ));
        }
        // A fresh parser for each block: pcap-file's parser keeps a copy of every interface
        // it sees, which would grow with the file.
        let Ok((_, mut parser)) = PcapNgParser::new(&MINIMAL_SHB) else {
            return Err(self.corrupt(offset, "internal: cannot set up the block parser"));
        };
        let source = match parser.next_block(&self.buf[range]) {
            Ok((_, Block::InterfaceDescription(idb))) => {
                let name = idb.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfName(n) => Some(n.as_ref()),
                    _ => None,
                });
                let ours = u32::from(idb.linktype) == LINKTYPE_WIRESHARK_UPPER_PDU;
                name.and_then(|n| Source::ALL.into_iter().find(|s| s.name() == n))
                    .filter(|_| ours)
            }
            Ok(_) => return Err(self.corrupt(offset, "bad interface description block")),
            Err(e) => {
                return Err(self.corrupt(offset, format!("bad interface description block: {e}")))
            }
        };
        if source.is_none() {
            self.skipped += 1;
        }
        self.interfaces.push(source);
        Ok(())
    }

    fn packet(&mut self, offset: u64, range: std::ops::Range<usize>) -> Result<Step, Fail> {
        let body = &self.buf[range.start + 8..range.end - 4];
        if body.len() < 20 {
            return Err(self.rec(offset, "enhanced packet block too short"));
        }
        let interface = le32(body, 0);
        let caplen = le32(body, 12) as usize;
        if caplen > body.len() - 20 {
            return Err(self.rec(
                offset,
                format!(
                    "packet's captured length {caplen} exceeds its block ({} bytes of body)",
                    body.len() - 20
                ),
            ));
        }
        let data = &body[20..20 + caplen];
        match self.interfaces.get(interface as usize) {
            None => {
                return Err(self.rec(
                    offset,
                    format!("packet on interface {interface}, which was never described"),
                ))
            }
            Some(None) => {
                self.skipped += 1;
                return Ok(Step::Nothing);
            }
            Some(Some(_)) => {}
        }
        // Exported-PDU tags: big-endian (tag, length, value), up to the end-of-options tag.
        let mut at = 0usize;
        let mut dissector: &[u8] = b"";
        loop {
            if data.len() - at < 4 {
                return Err(self.rec(offset, "packet's exported-PDU tags are not terminated"));
            }
            let t = be16(data, at);
            let l = be16(data, at + 2) as usize;
            at += 4;
            if data.len() - at < l {
                return Err(self.rec(
                    offset,
                    format!("exported-PDU tag {t} of {l} bytes runs past the packet"),
                ));
            }
            if t == tag::END_OF_OPT {
                at += l;
                break;
            }
            if t == tag::DISSECTOR_NAME {
                dissector = &data[at..at + l];
                while let [rest @ .., 0] = dissector {
                    dissector = rest;
                }
            }
            at += l;
        }
        let payload = &data[at..];
        if dissector == b"json" {
            if let Some(f) = &self.frag {
                let what = format!(
                    "a record starts inside the fragmented record that began at byte {}",
                    f.offset
                );
                return Err(self.rec(offset, what));
            }
            let data_start = range.start + 8 + 20;
            return Ok(Step::Json {
                offset,
                at: Some(data_start + at..data_start + caplen),
            });
        }
        if dissector == b"data" && payload.starts_with(FRAGMENT_MAGIC) {
            let data_start = range.start + 8 + 20;
            let result = self.fragment(offset, interface, data_start + at..data_start + caplen);
            if result.is_err() {
                self.frag = None;
            }
            return result;
        }
        self.skipped += 1;
        Ok(Step::Nothing)
    }

    /// One fragment of a record too big for one packet; `payload` is its range in `buf`.
    fn fragment(
        &mut self,
        offset: u64,
        interface: u32,
        payload: std::ops::Range<usize>,
    ) -> Result<Step, Fail> {
        let p = &self.buf[payload];
        if p.len() < FRAGMENT_HEADER_LEN {
            return Err(self.rec(offset, "fragment header too short"));
        }
        let index = be32(p, 8);
        let count = be32(p, 12);
        let total = be32(p, 16);
        let piece = &p[FRAGMENT_HEADER_LEN..];
        if index == 0 {
            if let Some(f) = &self.frag {
                let what = format!(
                    "a record starts inside the fragmented record that began at byte {}",
                    f.offset
                );
                return Err(self.rec(offset, what));
            }
            if count < 2 || total as usize > MAX_RECORD_LEN || (piece.len() as u64) > total as u64 {
                return Err(self.rec(
                    offset,
                    format!("bad first fragment: {count} parts, {total} bytes in all (limit {MAX_RECORD_LEN})"),
                ));
            }
            let mut data = Vec::with_capacity(piece.len() * 2);
            data.extend_from_slice(piece);
            self.frag = Some(Reassembly {
                offset,
                interface,
                count,
                total,
                next: 1,
                data,
            });
            return Ok(Step::Nothing);
        }
        let Some(f) = self.frag.as_mut() else {
            return Err(self.rec(
                offset,
                format!("fragment {index} of a record whose first part is missing"),
            ));
        };
        if f.interface != interface || f.count != count || f.total != total || f.next != index {
            let what = format!(
                "fragment {index}/{count} ({total} bytes) does not continue the record that began at byte {} (expected part {} of {}, {} bytes)",
                f.offset, f.next, f.count, f.total
            );
            return Err(self.rec(offset, what));
        }
        if f.data.len() + piece.len() > f.total as usize {
            return Err(self.rec(offset, "fragments exceed their record's stated length"));
        }
        f.data.extend_from_slice(piece);
        f.next += 1;
        if f.next < f.count {
            return Ok(Step::Nothing);
        }
        let Some(f) = self.frag.take() else {
            return Ok(Step::Nothing);
        };
        if f.data.len() != f.total as usize {
            return Err(self.rec(f.offset, "fragmented record shorter than its stated length"));
        }
        self.assembled = f.data;
        Ok(Step::Json {
            offset: f.offset,
            at: None,
        })
    }
}

/// Why a step failed: one record (reading can go on) or the file's framing (it cannot).
enum Fail {
    Record(CaptureError),
    Fatal(CaptureError),
}

impl From<CaptureError> for Fail {
    fn from(e: CaptureError) -> Fail {
        Fail::Fatal(e)
    }
}

impl Fail {
    fn into_inner(self) -> CaptureError {
        match self {
            Fail::Record(e) | Fail::Fatal(e) => e,
        }
    }
}

/// Entries of the tape a reader keeps from one record to the next (beyond, a huge record's
/// tape is let go).
const MAX_KEPT_TAPE: usize = 1 << 16;

/// Decode the common event types straight from the record's validated text, without the
/// buffering serde's flattened, internally tagged `Stamped` needs (which would also build a
/// tree of every payload). Each variant is built with a struct literal whose field types
/// come from `Event` itself: a field added to, removed from or retyped in `Event` fails to
/// compile here or decodes as declared, never drifts. The members are read in the order
/// pm2-trace writes them, else by name (see [`members`]). Returns None for anything it does
/// not handle exactly (other types, a missing or mistyped field, a repeated key), which
/// then takes the general path, so the result is always what `Stamped`'s own `Deserialize`
/// gives.
fn fast_decode(json: &[u8], tape: &mut scan::Tape) -> Option<Stamped> {
    if let Some(ev) = bus_message_as_written(json, tape) {
        return Some(ev);
    }
    let text = scan::validate_into(json, tape).ok()?;
    let doc = scan::Doc::new(text, tape);
    if let Some(mut m) = InOrder::new(doc, text) {
        if let (Some(t), Some(ty)) = (m.take("t"), m.take("type")) {
            if let Some(event) = event(&plain_str(ty)?, text, &mut m) {
                if m.finished() {
                    return Some(Stamped {
                        t: whole(t)?,
                        event,
                    });
                }
            }
        }
    }
    let mut f = Fields::new(doc);
    if !f.read(text) {
        return None;
    }
    let event = event(&f.str("type")?, text, &mut &f)?;
    Some(Stamped {
        t: whole(or_null(f.raw("t")))?,
        event,
    })
}

/// A bus message's record exactly as pm2-trace writes it, an event name and a payload:
/// `{"t":T,"type":"bus_message","msg":[{"s":"NAME"},{"j":PAYLOAD}]}` with `T` plain digits
/// and `NAME` a string without escapes. Most records of a busy app's capture are such (its
/// output lines), so only the payload is validated and walked: the bytes around it are
/// compared with what the writer puts there, which is valid JSON of that one shape. None
/// for anything else (whitespace, other members or order, escapes, another message),
/// which then takes the general path.
fn bus_message_as_written(json: &[u8], tape: &mut scan::Tape) -> Option<Stamped> {
    use crate::event::WireMessage;
    use crate::wire::amp::{Arg, Message};
    use crate::wire::json::Json;
    let rest = json.strip_prefix(b"{\"t\":")?;
    let mut t = 0u64;
    let mut digits = 0;
    while let Some(d) = rest
        .get(digits)
        .map(|c| c.wrapping_sub(b'0'))
        .filter(|&d| d <= 9)
    {
        // More than 19 digits may not fit: serde decides.
        if digits == 19 {
            return None;
        }
        t = t * 10 + u64::from(d);
        digits += 1;
    }
    // JSON writes no leading zero.
    if digits == 0 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let rest = rest[digits..].strip_prefix(b",\"type\":\"bus_message\",\"msg\":[{\"s\":\"")?;
    let name_end = rest
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    if rest[name_end] != b'"' {
        return None;
    }
    let name = scan::utf8(&rest[..name_end]).ok()?;
    let payload = rest[name_end..]
        .strip_prefix(b"\"},{\"j\":")?
        .strip_suffix(b"}]}")?;
    let text = scan::validate_into_remembering(payload, tape).ok()?;
    // The payload alone, without whitespace around it.
    if text.len() != payload.len() {
        return None;
    }
    let args = vec![
        Arg::Str(name.to_owned()),
        Arg::Json(Json::from_valid(text.into(), Some(tape.clone()))),
    ];
    Some(Stamped {
        t,
        event: Event::BusMessage {
            msg: WireMessage(Message::new(args)),
        },
    })
}

/// The event of type `ty` whose members after its `type` are `m`, in record `text`.
fn event<'a>(ty: &str, text: &'a str, m: &mut dyn Members<'a>) -> Option<Event> {
    let d = m.doc();
    Some(match ty {
        "note" => Event::Note {
            level: serde(or_null(m.take("level")))?,
            text: serde(or_null(m.take("text")))?,
        },
        "rpc_connect" => Event::RpcConnect {
            conn: whole(or_null(m.take("conn")))?,
            peer: serde(or_null(m.take("peer")))?,
        },
        "rpc_refused" => Event::RpcRefused {
            peer: serde(or_null(m.take("peer")))?,
            reason: serde(or_null(m.take("reason")))?,
        },
        "rpc_message" => Event::RpcMessage {
            conn: whole(or_null(m.take("conn")))?,
            dir: serde(or_null(m.take("dir")))?,
            msg: msg(d, m.take("msg"))?,
            ask: opt(m.take("ask"), whole)?,
            asked: serde(or_null(m.take("asked")))?,
        },
        "rpc_undecodable" => Event::RpcUndecodable {
            conn: whole(or_null(m.take("conn")))?,
            dir: serde(or_null(m.take("dir")))?,
            offset: serde(or_null(m.take("offset")))?,
            error: serde(or_null(m.take("error")))?,
        },
        "rpc_close" => Event::RpcClose {
            conn: whole(or_null(m.take("conn")))?,
            to_client_bytes: serde(or_null(m.take("to_client_bytes")))?,
            to_daemon_bytes: serde(or_null(m.take("to_daemon_bytes")))?,
            // Declared `#[serde(default)]`: absent is empty.
            unanswered: match m.take("unanswered") {
                None => Vec::new(),
                Some(raw) => serde(raw)?,
            },
        },
        "bus_message" => Event::BusMessage {
            msg: msg(d, m.take("msg"))?,
        },
        "bus_link" => Event::BusLink {
            up: serde(or_null(m.take("up")))?,
            detail: serde(or_null(m.take("detail")))?,
        },
        "recording_stopped" => Event::RecordingStopped {
            reason: serde(or_null(m.take("reason")))?,
        },
        "proc" => Event::Proc(Box::new(super::proc_record::proc_event(m)?)),
        // Its own tagged type, decoded from the record (whose `t` and `type` it ignores)
        // with one level of serde's buffering instead of three.
        "log_line" => {
            m.take_rest();
            Event::LogLine(serde_json::from_str(text).ok()?)
        }
        _ => return None,
    })
}

/// Decode one JSON record: the capture info (first), an event, or something to skip.
fn decode_json(
    path: &Path,
    offset: u64,
    json: &[u8],
    have_info: bool,
    skipped: &mut u64,
    tape: &mut scan::Tape,
) -> Result<Decoded, CaptureError> {
    let corrupt = |what: String| CaptureError::Corrupt {
        path: path.to_owned(),
        offset,
        what,
    };
    if !have_info {
        return match serde_json::from_slice::<InfoRecord>(json) {
            Ok(r) => Ok(Decoded::Info(r.capture_info)),
            Err(e) => Err(corrupt(format!(
                "the first record is not a valid capture-info record: {e}"
            ))),
        };
    }
    let fast = fast_decode(json, tape);
    if tape.capacity() > MAX_KEPT_TAPE {
        *tape = scan::Tape::new();
    }
    if let Some(ev) = fast {
        return Ok(Decoded::Event(ev));
    }
    match serde_json::from_slice::<Stamped>(json) {
        Ok(ev) => Ok(Decoded::Event(ev)),
        Err(err) => {
            let probe: Probe = match serde_json::from_slice(json) {
                Ok(p) => p,
                Err(e) => return Err(corrupt(format!("record is not a JSON object: {e}"))),
            };
            let skip = match &probe.ty {
                None => probe.capture_info.is_some(),
                Some(ty) => unknown_event_type(ty, probe.kind.as_deref()),
            };
            if skip {
                *skipped += 1;
                Ok(Decoded::Skip)
            } else {
                Err(corrupt(format!(
                    "record does not match the event schema: {err}"
                )))
            }
        }
    }
}

impl Iterator for CaptureReader {
    type Item = Result<Stamped, CaptureError>;

    /// The next event. A record that cannot be decoded yields an error and reading goes on
    /// with the next one; broken block framing yields an error and ends the iteration. The
    /// iteration also ends at the end of the file; see [`CaptureReader::truncated`].
    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.step() {
                Ok(Step::Json { offset, at }) => {
                    let json = match at {
                        Some(range) => &self.buf[range],
                        None => &self.assembled[..],
                    };
                    match decode_json(
                        &self.path,
                        offset,
                        json,
                        true,
                        &mut self.skipped,
                        &mut self.tape,
                    ) {
                        Ok(Decoded::Event(ev)) => {
                            self.records += 1;
                            return Some(Ok(ev));
                        }
                        Ok(_) => {}
                        // A record that failed to decode: go on after it.
                        Err(e) => return Some(Err(e)),
                    }
                }
                Ok(Step::Nothing) => {}
                Ok(Step::End) => self.done = true,
                // A record that failed to decode leaves the framing intact: go on after it.
                Err(Fail::Record(e)) => return Some(Err(e)),
                // Broken framing or I/O: nothing after it can be trusted.
                Err(Fail::Fatal(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// Random access, for viewers that re-read an event they saw before.
impl CaptureReader {
    /// Continue reading at `offset`, a value [`CaptureReader::offset`] returned before an
    /// event was read: the next event read is that one again. The interfaces read so far
    /// stay in force (pm2-trace writes one section).
    pub fn seek(&mut self, offset: u64) -> Result<(), CaptureError> {
        use std::io::Seek;
        self.file
            .seek(io::SeekFrom::Start(offset))
            .map_err(|error| CaptureError::Io {
                path: self.path.clone(),
                offset,
                op: "cannot seek in capture",
                error,
            })?;
        self.start = 0;
        self.end = 0;
        self.pos = offset;
        self.eof = false;
        self.frag = None;
        self.truncated = None;
        self.done = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unknown types are told from known ones by serde's unknown-variant hook, not by the
    /// wording of its error message.
    #[test]
    fn unknown_event_types_are_told_by_type() {
        assert!(unknown_event_type("daemon_replaced", None));
        assert!(unknown_event_type("proc", Some("cgroup_moved")));
        for known in ["note", "rpc_message", "bus_link", "recording_stopped"] {
            assert!(!unknown_event_type(known, None), "{known}");
            // Only `proc` reads `kind`.
            assert!(!unknown_event_type(known, Some("cgroup_moved")), "{known}");
        }
        assert!(!unknown_event_type("proc", Some("exit")));
        // A known type whose fields do not fit stays an error naming the file and offset.
        let mut skipped = 0;
        let e = decode_json(
            Path::new("x.pcapng"),
            64,
            br#"{"t":1,"type":"note","level":"loud","text":"x"}"#,
            true,
            &mut skipped,
            &mut scan::Tape::new(),
        );
        match e {
            Err(CaptureError::Corrupt {
                offset: 64, what, ..
            }) => {
                assert!(what.contains("does not match the event schema"), "{what}")
            }
            _ => panic!("a known type with a bad field must be an error"),
        }
        assert_eq!(skipped, 0);
    }

    /// The fast path gives exactly what serde's derived decoding gives, or falls back.
    #[test]
    fn fast_decode_agrees_with_derived_decoding() {
        let records = [
            r#"{"t":1,"type":"note","level":"info","text":"hi"}"#,
            r#"{"t":1,"type":"note","level":"info","text":"hi","conn":3}"#,
            r#"{"t":1,"type":"note","level":"info","text":"hi","future_field":[1]}"#,
            r#"{"type":"note","text":"hi","level":"warning","t":2}"#,
            r#"{"t":1,"type":"note","level":"info"}"#,
            r#"{"t":1,"type":"note","level":"loud","text":"x"}"#,
            r#"{"t":1,"type":"rpc_connect","conn":1,"peer":{"pid":1,"uid":2,"gid":3}}"#,
            r#"{"t":1,"type":"rpc_connect","conn":1,"peer":null}"#,
            r#"{"t":1,"type":"rpc_connect","conn":1}"#,
            r#"{"t":1,"type":"rpc_refused","peer":{"pid":1,"uid":2,"gid":3},"reason":"r"}"#,
            r#"{"t":1,"type":"rpc_refused","peer":null,"reason":"r"}"#,
            r#"{"t":1,"type":"rpc_message","conn":1,"dir":"to_daemon","msg":[{"j":{"a":1}},{"s":"x"},{"b64":"AAE="}]}"#,
            r#"{"t":1,"type":"rpc_message","conn":1,"dir":"to_client","msg":[{"q":1}]}"#,
            r#"{"t":1,"type":"rpc_undecodable","conn":1,"dir":"to_client","offset":9,"error":"e"}"#,
            r#"{"t":1,"type":"rpc_close","conn":1,"to_client_bytes":1,"to_daemon_bytes":2}"#,
            r#"{"t":1,"type":"bus_message","msg":[]}"#,
            r#"{"t":1,"type":"bus_link","up":false,"detail":"d"}"#,
            r#"{"t":1,"type":"proc","kind":"exit","pid":3,"detail":"d"}"#,
            r#"{"t":1,"type":"recording_stopped","reason":"full"}"#,
            r#"{"t":1,"type":"from_the_future","reason":"x"}"#,
            r#"{"t":-1,"type":"note","level":"info","text":"hi"}"#,
            r#"{"t":1,"type":"note","level":"info","text":"a","text":"b"}"#,
            r#"{"t":5,"type":"rpc_message","conn":1,"dir":"to_client","msg":[{"j":{"args":[]}},{"s":"1"}],"ask":3,"asked":{"t":2,"method":"restartProcessId","pm_id":0}}"#,
            r#"{"t":5,"type":"rpc_message","conn":1,"dir":"to_daemon","msg":[],"ask":4}"#,
            r#"{"t":5,"type":"rpc_close","conn":1,"to_client_bytes":1,"to_daemon_bytes":2,"unanswered":["getMonitorData"]}"#,
            r#"{"t":5,"type":"rpc_message","conn":1,"dir":"to_client","msg":[],"asked":{"t":"x","method":"m"}}"#,
            // Numbers and strings read in place, or by serde when they are not plain.
            r#"{"t":12345678901234567890,"type":"note","level":"info","text":"hi"}"#,
            r#"{"t":123456789012345678901,"type":"note","level":"info","text":"hi"}"#,
            r#"{"t":1e3,"type":"note","level":"info","text":"hi"}"#,
            r#"{"t":1.0,"type":"note","level":"info","text":"hi"}"#,
            r#"{"t":1,"type":"n\u006fte","level":"info","text":"hi"}"#,
            r#"{"t":1,"type":"bus_message","msg":[{"s":"log:\u006fut"},{"s":"a\"b"}]}"#,
            r#"{"t":1,"type":"rpc_close","conn":-1,"to_client_bytes":1,"to_daemon_bytes":2}"#,
            // Process events, each kind, and what does not fit one.
            r#"{"t":1,"type":"proc","kind":"lost","why":"x"}"#,
            r#"{"t":1,"type":"proc","kind":"l\u006fst","why":"x"}"#,
            r#"{"t":1,"type":"proc","kind":"lost"}"#,
            r#"{"t":1,"type":"proc","kind":"cgroup_moved","why":"x"}"#,
            r#"{"t":1,"type":"proc","kind":"exit","who":{"pid":5,"start":null,"ppid":1,"app":null,"how":null,"daemon":false,"cmd":null},"status":{"kind":"signal","sig":9,"name":"SIGKILL","core":false},"status_from":null,"via":"netlink","timing":{"how":"kernel","kernel_ns":1,"observed_ns":2},"lived_ns":null,"held":["0.0.0.0:80"],"in_tree":true}"#,
            r#"{"t":1,"type":"proc","kind":"exit","who":{"pid":5,"start":null,"ppid":1,"app":null,"how":null,"daemon":false,"cmd":null},"status":{"kind":"code","code":0},"via":"netlink","timing":{"how":"kernel","kernel_ns":1,"observed_ns":2},"in_tree":null}"#,
            r#"{"t":1,"type":"proc","kind":"fork","parent":-3,"who":{"pid":5,"start":7,"ppid":1,"app":null,"how":null,"daemon":false,"cmd":"x"},"via":"netlink","timing":{"how":"wakeup","observed_ns":2}}"#,
            r#"{"t":1,"type":"bus_message","msg":[{"s":1}]}"#,
            r#"{"t":1,"type":"bus_message","msg":[{"j":1,"s":"x"}]}"#,
            r#"{"t":1,"type":"bus_message","msg":[{"\u0073":"x"}]}"#,
            r#"{"t":1,"type":"bus_message","msg":[["s","x"]]}"#,
            r#"{"t":1,"type":"bus_message","msg":[{}]}"#,
            r#"{"t":1,"type":"bus_message","msg":[{"b64":"AA\u0045="},{"b64":1}]}"#,
            // Messages not written compactly are walked.
            r#"{"t":1,"type":"bus_message","msg":[ {"s":"x"}, {"j":{"a":1}} ]}"#,
            r#"{"t":1,"type":"bus_message","msg":[{"s": "x"},{"j":1},{"b64":"AAE="}]}"#,
            r#"{"t":1,"type":"bus_message","msg":[{"s":"x"},{"j" :1}]}"#,
            // `unanswered` is a list when present: null is not one.
            r#"{"t":5,"type":"rpc_close","conn":1,"to_client_bytes":1,"to_daemon_bytes":2,"unanswered":null}"#,
        ];
        for json in records {
            let derived = serde_json::from_slice::<Stamped>(json.as_bytes()).ok();
            if let Some(fast) = fast_decode(json.as_bytes(), &mut scan::Tape::new()) {
                assert_eq!(Some(fast), derived, "{json}");
            }
        }
        // And the fast path is taken for the common, well-formed records.
        assert!(fast_decode(records[0].as_bytes(), &mut scan::Tape::new()).is_some());
        assert!(fast_decode(records[11].as_bytes(), &mut scan::Tape::new()).is_some());
        // The recorder's pairing (ask, asked, unanswered) takes the fast path too.
        for paired in &records[22..25] {
            assert!(
                fast_decode(paired.as_bytes(), &mut scan::Tape::new()).is_some(),
                "{paired}"
            );
        }
        // So do numbers, strings and process events, escaped or not.
        for plain in [26, 30, 31, 33, 34, 37, 39, 46, 47, 48] {
            assert!(
                fast_decode(records[plain].as_bytes(), &mut scan::Tape::new()).is_some(),
                "{}",
                records[plain]
            );
        }
    }

    /// A bus message's record as the writer writes it takes its own path, which gives what
    /// serde's derived decoding gives; records that differ from that shape anywhere around
    /// the payload are left to the general path, which then decodes them as serde does.
    #[test]
    fn bus_messages_as_written_decode_as_derived() {
        let written: [&[u8]; 6] = [
            br#"{"t":7,"type":"bus_message","msg":[{"s":"log:out"},{"j":{"data":"GET / 200\n","at":1764086502000,"process":{"pm_id":0,"name":"web","rev":null,"namespace":"default"}}}]}"#,
            br#"{"t":0,"type":"bus_message","msg":[{"s":"process:event"},{"j":{"event":"exit"}}]}"#,
            "{\"t\":1234567890123456789,\"type\":\"bus_message\",\"msg\":[{\"s\":\"é\"},{\"j\":[1,{\"a\":[]}]}]}".as_bytes(),
            br#"{"t":1,"type":"bus_message","msg":[{"s":""},{"j":"x"}]}"#,
            br#"{"t":1,"type":"bus_message","msg":[{"s":"a"},{"j":null}]}"#,
            br#"{"t":9,"type":"bus_message","msg":[{"s":"log:err"},{"j":{"data":"\u00e9\"","x":{"y":{"z":[[[]]]}}}}]}"#,
        ];
        for json in written {
            let derived = serde_json::from_slice::<Stamped>(json).unwrap();
            let mut tape = scan::Tape::new();
            let fast = bus_message_as_written(json, &mut tape);
            assert_eq!(
                fast.as_ref(),
                Some(&derived),
                "{}",
                String::from_utf8_lossy(json)
            );
            assert_eq!(fast_decode(json, &mut tape), Some(derived));
        }
        let other: [&[u8]; 22] = [
            // Not JSON's numbers, or not plainly written, or too long to be read in place.
            br#"{"t":01,"type":"bus_message","msg":[{"s":"a"},{"j":1}]}"#,
            br#"{"t":-1,"type":"bus_message","msg":[{"s":"a"},{"j":1}]}"#,
            br#"{"t":1.5,"type":"bus_message","msg":[{"s":"a"},{"j":1}]}"#,
            br#"{"t":1e3,"type":"bus_message","msg":[{"s":"a"},{"j":1}]}"#,
            br#"{"t":,"type":"bus_message","msg":[{"s":"a"},{"j":1}]}"#,
            br#"{"t":12345678901234567890,"type":"bus_message","msg":[{"s":"a"},{"j":1}]}"#,
            br#"{"t":99999999999999999999,"type":"bus_message","msg":[{"s":"a"},{"j":1}]}"#,
            // The name escaped, with a control character or not UTF-8.
            br#"{"t":1,"type":"bus_message","msg":[{"s":"log:\u006fut"},{"j":1}]}"#,
            b"{\"t\":1,\"type\":\"bus_message\",\"msg\":[{\"s\":\"a\tb\"},{\"j\":1}]}",
            b"{\"t\":1,\"type\":\"bus_message\",\"msg\":[{\"s\":\"\xff\"},{\"j\":1}]}",
            // The payload: whitespace around it, not JSON, not UTF-8, two values.
            br#"{"t":1,"type":"bus_message","msg":[{"s":"a"},{"j": {"b":1} }]}"#,
            br#"{"t":1,"type":"bus_message","msg":[{"s":"a"},{"j":{"b":}}]}"#,
            b"{\"t\":1,\"type\":\"bus_message\",\"msg\":[{\"s\":\"a\"},{\"j\":\"\xff\"}]}",
            br#"{"t":1,"type":"bus_message","msg":[{"s":"a"},{"j":1 2}]}"#,
            // Other arguments, members, order, whitespace or types.
            br#"{"t":1,"type":"bus_message","msg":[{"s":"a"},{"j":1},{"s":"b"}]}"#,
            br#"{"t":1,"type":"bus_message","msg":[{"s":"a"},{"j":{"b":1}},{"j":{"c":[]}}]}"#,
            br#"{"t":1,"type":"bus_message","msg":[{"s":"a"},{"j":1}],"x":[{"y":{}}]}"#,
            br#"{"t":1,"type":"bus_message","msg":[{"s":"a"},{"j":1}],"msg":[]}"#,
            br#"{"t":1,"type":"bus_message","msg":[{"s":"a"},{"j":1}]} "#,
            br#"{"t":1,"type":"bus_message","msg":[{"s":"a"},{"b64":"AA=="}]}"#,
            br#"{"type":"bus_message","t":1,"msg":[{"s":"a"},{"j":1}]}"#,
            br#"{"t":1,"type":"bus_link","msg":[{"s":"a"},{"j":1}]}"#,
        ];
        for json in other {
            let text = String::from_utf8_lossy(json);
            let mut tape = scan::Tape::new();
            assert_eq!(bus_message_as_written(json, &mut tape), None, "{text}");
            let derived = serde_json::from_slice::<Stamped>(json).ok();
            if let Some(fast) = fast_decode(json, &mut tape) {
                assert_eq!(Some(fast), derived, "{text}");
            }
        }
    }

    /// Every record of every shipped capture decodes the same through the fast path as
    /// through serde's derived decoding, and takes the fast path.
    #[test]
    fn fast_decode_agrees_on_every_shipped_capture() {
        use crate::wire::amp::Arg;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures");
        let mut checked = 0;
        let mut bus_as_written = 0;
        let mut tape = scan::Tape::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "bin") {
                continue;
            }
            let mut r = CaptureReader::open(&path).unwrap();
            while let Some(rec) = r.next_json() {
                let (offset, json) = rec.unwrap();
                let derived = serde_json::from_slice::<Stamped>(json).unwrap();
                // One tape for every record, as the reader keeps it.
                let fast = fast_decode(json, &mut tape);
                assert_eq!(
                    fast.as_ref(),
                    Some(&derived),
                    "{} offset {offset}",
                    path.display()
                );
                // A bus message of a name and a payload, as the writer writes it, takes the
                // path of its own.
                if let Event::BusMessage { msg } = &derived.event {
                    if let [Arg::Str(_), Arg::Json(_)] = &msg.0.args[..] {
                        assert!(
                            bus_message_as_written(json, &mut tape).is_some(),
                            "{} offset {offset}",
                            path.display()
                        );
                        bus_as_written += 1;
                    }
                }
                checked += 1;
            }
        }
        assert!(checked > 1000, "only {checked} records in captures/");
        assert!(
            bus_as_written > 500,
            "only {bus_as_written} bus messages in captures/"
        );
    }

    /// The records of the shipped captures (both directories) up to 20 kB, as values
    /// (getMonitorData replies of 150 kB are left out: they only make each case slower).
    fn small_records() -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for path in crate::capture::shipped_captures() {
            let mut r = CaptureReader::open(&path).unwrap();
            while let Some(rec) = r.next_json() {
                let json = rec.unwrap().1;
                if json.len() <= 20_000 {
                    out.push(serde_json::from_slice(json).unwrap());
                }
            }
        }
        out
    }

    /// How [`mutated_text`] writes a value back: `edit` names what to change in the text as
    /// it is written (counted in writing order), so that keys can repeat or be escaped,
    /// which a `Value` cannot say.
    #[derive(Debug, Clone, Copy)]
    enum TextEdit {
        /// Write the first member of the n-th object twice.
        RepeatKey(usize),
        /// Write the n-th key with its first character as a `\u` escape.
        EscapeKey(usize),
        /// Write the n-th string value with its first character as a `\u` escape.
        EscapeString(usize),
        /// Write the n-th number as `-0`.
        NegativeZero(usize),
        /// Spaces around every `:` and `,`.
        Spaced,
    }

    fn mutated_text(v: &serde_json::Value, edit: TextEdit) -> String {
        use serde_json::Value;
        struct W {
            out: String,
            objects: usize,
            keys: usize,
            strings: usize,
            numbers: usize,
            edit: TextEdit,
        }
        fn escaped(s: &str) -> String {
            let mut c = s.chars();
            match c.next() {
                Some(first) if (first as u32) < 0x10000 => {
                    let rest = serde_json::to_string(c.as_str()).unwrap();
                    format!("\"\\u{:04x}{}", first as u32, &rest[1..])
                }
                _ => serde_json::to_string(s).unwrap(),
            }
        }
        impl W {
            fn sep(&self) -> &'static str {
                if matches!(self.edit, TextEdit::Spaced) {
                    " , "
                } else {
                    ","
                }
            }
            fn colon(&self) -> &'static str {
                if matches!(self.edit, TextEdit::Spaced) {
                    " : "
                } else {
                    ":"
                }
            }
            fn value(&mut self, v: &Value) {
                match v {
                    Value::Object(m) => {
                        let n = self.objects;
                        self.objects += 1;
                        self.out.push('{');
                        let mut members: Vec<(&String, &Value)> = m.iter().collect();
                        if matches!(self.edit, TextEdit::RepeatKey(k) if k == n) {
                            if let Some(&first) = members.first() {
                                members.push(first);
                            }
                        }
                        for (i, (k, v)) in members.into_iter().enumerate() {
                            if i > 0 {
                                self.out.push_str(self.sep());
                            }
                            let kn = self.keys;
                            self.keys += 1;
                            if matches!(self.edit, TextEdit::EscapeKey(e) if e == kn) {
                                self.out.push_str(&escaped(k));
                            } else {
                                self.out.push_str(&serde_json::to_string(k).unwrap());
                            }
                            self.out.push_str(self.colon());
                            self.value(v);
                        }
                        self.out.push('}');
                    }
                    Value::Array(a) => {
                        self.out.push('[');
                        for (i, v) in a.iter().enumerate() {
                            if i > 0 {
                                self.out.push_str(self.sep());
                            }
                            self.value(v);
                        }
                        self.out.push(']');
                    }
                    Value::String(s) => {
                        let n = self.strings;
                        self.strings += 1;
                        if matches!(self.edit, TextEdit::EscapeString(e) if e == n) {
                            self.out.push_str(&escaped(s));
                        } else {
                            self.out.push_str(&serde_json::to_string(s).unwrap());
                        }
                    }
                    Value::Number(x) => {
                        let n = self.numbers;
                        self.numbers += 1;
                        if matches!(self.edit, TextEdit::NegativeZero(e) if e == n) {
                            self.out.push_str("-0");
                        } else {
                            self.out.push_str(&x.to_string());
                        }
                    }
                    other => self.out.push_str(&other.to_string()),
                }
            }
        }
        let mut w = W {
            out: String::new(),
            objects: 0,
            keys: 0,
            strings: 0,
            numbers: 0,
            edit,
        };
        w.value(v);
        w.out
    }

    /// Values put in place of another by the property test: each JSON type, numbers at
    /// the edges of the fields' ranges, objects that look like the tagged types.
    fn replacements() -> Vec<serde_json::Value> {
        use serde_json::json;
        vec![
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(1),
            json!(-1),
            json!(1.5),
            json!(65536),
            json!(2147483648u64),
            json!(-2147483649i64),
            json!(4294967296u64),
            json!(u64::MAX),
            json!(-9223372036854775807i64),
            json!("x"),
            json!(""),
            json!("netlink"),
            json!("tcp"),
            json!("a\"b"),
            json!([]),
            json!(["a"]),
            json!([1]),
            json!({}),
            json!({"kind": "start"}),
            json!({"kind": "code", "code": 1}),
            json!({"how": "wakeup", "observed_ns": 1}),
            json!({"from": "environ"}),
            json!({"from": "ancestry", "parent": 1}),
            json!({"pid": 1, "ppid": 2}),
            json!({"pm2_home": "/h", "pm_id": 0, "name": "web"}),
        ]
    }

    /// Every member and every value of `v`, as paths (keys and indexes), depth first.
    fn paths(
        v: &serde_json::Value,
        at: &mut Vec<serde_json::Value>,
        out: &mut Vec<Vec<serde_json::Value>>,
    ) {
        out.push(at.clone());
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    at.push(serde_json::Value::from(k.as_str()));
                    paths(x, at, out);
                    at.pop();
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    at.push(serde_json::Value::from(i));
                    paths(x, at, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }

    fn at_path<'v>(
        v: &'v mut serde_json::Value,
        path: &[serde_json::Value],
    ) -> &'v mut serde_json::Value {
        path.iter().fold(v, |v, k| match k {
            serde_json::Value::String(k) => &mut v[k.as_str()],
            k => &mut v[k.as_u64().unwrap() as usize],
        })
    }

    /// A record as the shipped captures hold them (half the time a process-watcher record,
    /// the type read in most detail), then damaged: values removed, replaced by others of
    /// any type or range, members added, keys repeated or escaped, strings escaped, `-0`,
    /// whitespace. Whatever the fast path decodes is what serde's derived decoding gives;
    /// undamaged records all take the fast path.
    #[test]
    fn records_decode_as_derived_when_damaged() {
        use proptest::prelude::*;
        let records = small_records();
        let procs: Vec<&serde_json::Value> =
            records.iter().filter(|v| v["type"] == "proc").collect();
        assert!(procs.len() > 1000, "only {} process records", procs.len());
        let mut tape = scan::Tape::new();
        for v in &records {
            let text = serde_json::to_string(v).unwrap();
            let derived = serde_json::from_str::<Stamped>(&text).unwrap();
            assert_eq!(
                fast_decode(text.as_bytes(), &mut tape),
                Some(derived),
                "{text}"
            );
        }
        let pool = replacements();
        let edits = prop_oneof![
            any::<usize>().prop_map(TextEdit::RepeatKey),
            any::<usize>().prop_map(TextEdit::EscapeKey),
            any::<usize>().prop_map(TextEdit::EscapeString),
            any::<usize>().prop_map(TextEdit::NegativeZero),
            Just(TextEdit::Spaced),
        ];
        // (which path, what to do: 0 remove, 1 replace, 2 add a member; which replacement)
        let changes = proptest::collection::vec((any::<usize>(), 0u8..3, any::<usize>()), 0..3);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 4000,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner
            .run(
                &(any::<usize>(), changes, proptest::option::of(edits)),
                |(pick, changes, edit)| {
                    let mut v = if pick % 2 == 0 {
                        procs[pick / 2 % procs.len()].clone()
                    } else {
                        records[pick / 2 % records.len()].clone()
                    };
                    for (at, what, with) in changes {
                        let mut all = Vec::new();
                        paths(&v, &mut Vec::new(), &mut all);
                        // Never the record's `type` (its own path decides other types).
                        all.retain(|p| p.first().is_none_or(|k| k != "type"));
                        let Some(path) = all.get(at % all.len().max(1)).cloned() else {
                            continue;
                        };
                        let replacement = pool[with % pool.len()].clone();
                        match (what, path.split_last()) {
                            (0, Some((last, parent))) => match at_path(&mut v, parent) {
                                serde_json::Value::Object(m) => {
                                    m.remove(last.as_str().unwrap_or_default());
                                }
                                serde_json::Value::Array(a) => {
                                    a.remove(last.as_u64().unwrap() as usize);
                                }
                                _ => {}
                            },
                            (2, _) => {
                                if let serde_json::Value::Object(m) = at_path(&mut v, &path) {
                                    m.insert("added".into(), replacement);
                                }
                            }
                            _ => *at_path(&mut v, &path) = replacement,
                        }
                    }
                    let text = match edit {
                        Some(e) => {
                            // Counted within what the text has.
                            let n = |k: usize| k % 64;
                            mutated_text(
                                &v,
                                match e {
                                    TextEdit::RepeatKey(k) => TextEdit::RepeatKey(n(k)),
                                    TextEdit::EscapeKey(k) => TextEdit::EscapeKey(n(k)),
                                    TextEdit::EscapeString(k) => TextEdit::EscapeString(n(k)),
                                    TextEdit::NegativeZero(k) => TextEdit::NegativeZero(n(k)),
                                    TextEdit::Spaced => TextEdit::Spaced,
                                },
                            )
                        }
                        None => serde_json::to_string(&v).unwrap(),
                    };
                    let derived = serde_json::from_str::<Stamped>(&text).ok();
                    if let Some(fast) = fast_decode(text.as_bytes(), &mut scan::Tape::new()) {
                        prop_assert_eq!(Some(fast), derived, "{}", text);
                    }
                    Ok(())
                },
            )
            .unwrap();
    }
}
