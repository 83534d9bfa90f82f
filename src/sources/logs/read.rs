//! Reading one log file as lines, streaming, within a time window.
//!
//! - Bytes are read through a fixed buffer; a line longer than [`MAX_LINE`] keeps its first
//!   [`MAX_LINE`] bytes and says it was cut; memory stays bounded whatever the file holds.
//! - Bytes that are not UTF-8 are replaced (U+FFFD), never rejected.
//! - A plain file is read only from the window's start: a binary search over byte offsets
//!   finds the first stamped line at or after it ([`seek_since`]). A compressed copy cannot
//!   be searched and is decompressed as a stream, lines before the window skipped.
//! - The file is read through one descriptor up to the length it had when opened, so a
//!   logrotate that renames, truncates or rewrites it mid-read ends the read early or lets
//!   it finish on the old inode; [`LineReader::finish`] says which.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

/// Longest line kept, in bytes; the rest of a longer line is skipped.
pub const MAX_LINE: usize = 64 * 1024;
/// Bytes read per probe of the binary search.
const PROBE: usize = 64 * 1024;

/// One line as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    /// Byte offset of the line's start in the (decompressed) file.
    pub offset: u64,
    pub text: String,
    /// Longer than [`MAX_LINE`]: only its start is in `text`.
    pub cut: bool,
    /// The file ended without a newline after it (a line being written, or cut off).
    pub partial: bool,
}

/// Reads lines from any byte stream.
pub struct LineReader<R: Read> {
    r: BufReader<R>,
    offset: u64,
    /// Stop after this many bytes (the length when opened), if known.
    limit: Option<u64>,
    error: Option<String>,
}

impl<R: Read> LineReader<R> {
    /// `start` is the offset of the first byte `r` yields.
    pub fn new(r: R, start: u64, limit: Option<u64>) -> LineReader<R> {
        LineReader {
            r: BufReader::with_capacity(1 << 16, r),
            offset: start,
            limit,
            error: None,
        }
    }

    /// Offset of the next byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The read error that ended the file early, with its offset, if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The next line, or `None` at the end (or at an error, kept in [`LineReader::error`]).
    pub fn next_line(&mut self) -> Option<RawLine> {
        let start = self.offset;
        let mut bytes: Vec<u8> = Vec::new();
        let mut cut = false;
        loop {
            if self.limit.is_some_and(|l| self.offset >= l) {
                break;
            }
            let buf = match self.r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.error = Some(format!("read error at byte {}: {e}", self.offset));
                    break;
                }
            };
            if buf.is_empty() {
                break;
            }
            let room = self
                .limit
                .map_or(buf.len(), |l| buf.len().min((l - self.offset) as usize));
            let buf = &buf[..room];
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            let keep = take - usize::from(done);
            let space = MAX_LINE.saturating_sub(bytes.len());
            if keep > space {
                cut = true;
            }
            bytes.extend_from_slice(&buf[..keep.min(space)]);
            self.r.consume(take);
            self.offset += take as u64;
            if done {
                return Some(finish_line(start, bytes, cut, false));
            }
        }
        if self.offset == start {
            return None;
        }
        Some(finish_line(start, bytes, cut, true))
    }
}

fn finish_line(offset: u64, mut bytes: Vec<u8>, cut: bool, partial: bool) -> RawLine {
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    let text = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    RawLine {
        offset,
        text,
        cut,
        partial,
    }
}

/// The first line start at or after `at` in `f` (`at` itself when it is 0 or follows a
/// newline), with the stamp of the first stamped line from there, reading at most
/// [`PROBE`] bytes.
fn probe(
    f: &mut File,
    at: u64,
    len: u64,
    stamp: &mut dyn FnMut(&str) -> Option<i64>,
) -> Option<(u64, Option<i64>)> {
    let from = at.saturating_sub(1);
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut buf = vec![0u8; PROBE.min((len - from) as usize)];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let buf = &buf[..n];
    // Skip to the start of a line.
    let first = if at == 0 {
        0
    } else {
        buf.iter().position(|&b| b == b'\n')? + 1
    };
    let line_start = from + first as u64;
    let mut pos = first;
    while pos < buf.len() {
        let end = buf[pos..].iter().position(|&b| b == b'\n').map(|i| pos + i);
        let Some(end) = end else { break };
        if let Some(ms) = stamp(&String::from_utf8_lossy(&buf[pos..end])) {
            return Some((line_start, Some(ms)));
        }
        pos = end + 1;
    }
    Some((line_start, None))
}

/// Offset of a line start at or before the first line stamped at or after `since_ms`, found
/// by binary search over a file whose lines are in time order; `stamp` reads a line's time
/// (None for unstamped lines, which are passed over). Costs about 20 reads of 64 KiB on a
/// gigabyte.
pub fn seek_since(
    f: &mut File,
    len: u64,
    since_ms: i64,
    stamp: &mut dyn FnMut(&str) -> Option<i64>,
) -> u64 {
    let (mut lo, mut hi) = (0u64, len);
    while hi - lo > PROBE as u64 {
        let mid = lo + (hi - lo) / 2;
        match probe(f, mid, len, stamp) {
            Some((start, Some(ms))) if ms < since_ms => lo = start.max(lo),
            Some((_, Some(_))) => hi = mid,
            // No stamp within a probe: cannot tell; read from lo.
            _ => break,
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(bytes: &[u8], limit: Option<u64>) -> Vec<RawLine> {
        let mut r = LineReader::new(bytes, 0, limit);
        let mut out = Vec::new();
        while let Some(l) = r.next_line() {
            out.push(l);
        }
        out
    }

    #[test]
    fn lines_partial_and_crlf() {
        let ls = all(b"a\r\nbb\n\nccc", None);
        let t: Vec<_> = ls.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(t, ["a", "bb", "", "ccc"]);
        assert_eq!(ls[1].offset, 3);
        assert!(ls[3].partial && !ls[2].partial);
    }

    #[test]
    fn huge_line_is_cut_not_held() {
        let mut b = vec![b'x'; MAX_LINE * 3];
        b.extend_from_slice(b"\nnext\n");
        let ls = all(&b, None);
        assert_eq!(ls.len(), 2);
        assert!(ls[0].cut);
        assert_eq!(ls[0].text.len(), MAX_LINE);
        assert_eq!(ls[1].text, "next");
        assert_eq!(ls[1].offset, (MAX_LINE * 3 + 1) as u64);
    }

    #[test]
    fn binary_garbage_is_replaced() {
        let ls = all(b"\xff\xfe ok \x00\x80\nfine\n", None);
        assert_eq!(ls.len(), 2);
        assert!(ls[0].text.contains('\u{fffd}'));
        assert_eq!(ls[1].text, "fine");
    }

    #[test]
    fn limit_stops_at_the_length_when_opened() {
        let ls = all(b"one\ntwo\nthree\n", Some(6));
        let t: Vec<_> = ls.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(t, ["one", "tw"]);
        assert!(ls[1].partial);
    }

    #[test]
    fn seek_finds_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let mut text = String::new();
        for i in 0..200_000u64 {
            text.push_str(&format!("{i:08} line\n"));
            if i % 7 == 0 {
                text.push_str("   continuation without stamp\n");
            }
        }
        std::fs::write(&p, &text).unwrap();
        let len = text.len() as u64;
        let mut f = File::open(&p).unwrap();
        let mut stamp = |s: &str| s.get(..8).and_then(|d| d.parse::<i64>().ok());
        for since in [0i64, 1, 5000, 123_456, 199_999, 300_000] {
            let off = seek_since(&mut f, len, since, &mut stamp);
            let mut r = LineReader::new(&text.as_bytes()[off as usize..], off, None);
            // Every line before `off` is older than the window...
            let before = &text[..off as usize];
            assert!(
                before.lines().filter_map(&mut stamp).all(|s| s < since),
                "since {since}"
            );
            // ... and the window's first line is at most one probe away.
            let mut skipped = 0u64;
            while let Some(l) = r.next_line() {
                if stamp(&l.text).is_some_and(|s| s >= since) {
                    break;
                }
                skipped += l.text.len() as u64 + 1;
            }
            assert!(
                skipped <= 2 * PROBE as u64,
                "since {since}: skipped {skipped}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_bytes_any_limit(bytes in prop::collection::vec(any::<u8>(), 0..4096), limit in prop::option::of(0u64..5000)) {
            let ls = all(&bytes, limit);
            let end = limit.map_or(bytes.len() as u64, |l| l.min(bytes.len() as u64));
            // Lines start at increasing offsets inside what was read; a line is never
            // longer than MAX_LINE.
            let mut prev: Option<u64> = None;
            for l in &ls {
                prop_assert!(prev.is_none_or(|p| l.offset > p));
                prop_assert!(l.offset < end.max(1));
                prop_assert!(l.text.len() <= MAX_LINE * 3);
                prev = Some(l.offset);
            }
            let mut r = LineReader::new(&bytes[..], 0, limit);
            while r.next_line().is_some() {}
            prop_assert_eq!(r.offset(), end);
        }
    }
}
