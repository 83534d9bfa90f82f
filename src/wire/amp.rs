//! Axon over AMP: the framing PM2 uses on `rpc.sock` and `pub.sock`.
//!
//! One message is one header byte `(version << 4) | argc`, then `argc` arguments, each a
//! 32-bit big-endian length followed by that many bytes. An argument starting `j:` is JSON,
//! `s:` a UTF-8 string, anything else a raw buffer.
//!
//! [`Decoder`] is a streaming decoder: feed it chunks split anywhere, take whole messages
//! out. It never allocates more than `max_message` bytes for one message: a larger length
//! field, or a header with a version other than 1, marks the stream undecodable.

use super::json::Json;
use std::fmt;

/// The AMP protocol version axon speaks.
pub(crate) const AMP_VERSION: u8 = 1;
/// Default upper bound for one message (all its arguments together).
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// One argument of an AMP message.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// `j:` followed by valid JSON, kept as text until a tree is asked for.
    Json(Json),
    /// `s:` followed by valid UTF-8.
    Str(String),
    /// Anything else, kept byte for byte (also `j:`/`s:` arguments whose body is not
    /// valid JSON or UTF-8).
    Raw(Vec<u8>),
}

impl Arg {
    /// Classify one argument's bytes.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Arg {
        if let Some(body) = bytes.strip_prefix(b"j:") {
            if let Some(v) = Json::parse(body) {
                return Arg::Json(v);
            }
        } else if let Some(body) = bytes.strip_prefix(b"s:") {
            if let Ok(s) = std::str::from_utf8(body) {
                return Arg::Str(s.to_owned());
            }
        }
        Arg::Raw(bytes.to_vec())
    }

    /// A `j:` argument from its body (the bytes after `j:`), kept in that very buffer when
    /// it is JSON with no surrounding whitespace.
    fn from_json_body(body: Vec<u8>) -> Arg {
        match Json::parse_owned(body) {
            Ok(v) => Arg::Json(v),
            Err(body) => {
                let mut raw = Vec::with_capacity(body.len() + 2);
                raw.extend_from_slice(b"j:");
                raw.extend_from_slice(&body);
                Arg::from_bytes(&raw)
            }
        }
    }

    /// The bytes of this argument as they go on the wire (without the length field).
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        match self {
            Arg::Json(v) => {
                let text = v.text();
                let mut out = Vec::with_capacity(text.len() + 2);
                out.extend_from_slice(b"j:");
                out.extend_from_slice(text.as_bytes());
                out
            }
            Arg::Str(s) => {
                let mut out = Vec::with_capacity(s.len() + 2);
                out.extend_from_slice(b"s:");
                out.extend_from_slice(s.as_bytes());
                out
            }
            Arg::Raw(b) => b.clone(),
        }
    }

    /// A JSON argument as a tree (built on first use).
    #[cfg(test)]
    pub(crate) fn as_json(&self) -> Option<&serde_json::Value> {
        self.as_payload().map(Json::value)
    }

    /// A JSON argument as it was decoded, to read through views.
    pub(crate) fn as_payload(&self) -> Option<&Json> {
        match self {
            Arg::Json(v) => Some(v),
            _ => None,
        }
    }

    /// A JSON argument made from a tree.
    pub fn json(v: serde_json::Value) -> Arg {
        Arg::Json(v.into())
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Arg::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// One whole AMP message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    pub(crate) args: Vec<Arg>,
}

impl Message {
    pub fn new(args: Vec<Arg>) -> Self {
        Message { args }
    }

    /// Encode to wire bytes. Panics only if there are more than 15 arguments or an
    /// argument exceeds 4 GiB, which no caller in this crate produces. `explain` encodes its
    /// one getMonitorData request with it; the recorder forwards bytes, it never re-encodes.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.args.len() <= 15, "AMP carries at most 15 arguments");
        let bodies: Vec<Vec<u8>> = self.args.iter().map(Arg::to_bytes).collect();
        let total: usize = 1 + bodies.iter().map(|b| 4 + b.len()).sum::<usize>();
        let mut out = Vec::with_capacity(total);
        out.push((AMP_VERSION << 4) | self.args.len() as u8);
        for b in bodies {
            out.extend_from_slice(
                &(u32::try_from(b.len()).expect("argument over 4 GiB")).to_be_bytes(),
            );
            out.extend_from_slice(&b);
        }
        out
    }
}

/// Why a stream cannot be decoded any further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("byte {offset}: header 0x{header:02x} has AMP version {version}, expected 1")]
    BadVersion {
        offset: u64,
        header: u8,
        version: u8,
    },
    #[error("byte {offset}: argument length {len} exceeds the limit of {limit} bytes")]
    TooLong { offset: u64, len: u64, limit: usize },
}

impl DecodeError {
    /// Stream offset of the byte where the problem was found.
    pub(crate) fn offset(&self) -> u64 {
        match self {
            DecodeError::BadVersion { offset, .. } | DecodeError::TooLong { offset, .. } => *offset,
        }
    }
}

/// Streaming AMP decoder.
pub struct Decoder {
    buf: Vec<u8>,
    /// Read position in `buf`.
    pos: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// Bytes that must be buffered (from `pos`) before parsing is worth trying again.
    need: usize,
    max_message: usize,
    failed: Option<DecodeError>,
    /// The large JSON first argument of the message being received, gathered where its text
    /// will be kept (see [`Big`]).
    big: Option<Big>,
    /// A first argument at least this long is gathered as a [`Big`].
    direct_min: usize,
}

/// A message's first argument, `j:` and at least [`DIRECT_MIN`] bytes, whose body is copied
/// from the pushed chunks straight into the buffer its text is then kept in (from
/// [`super::json::pool`]), instead of into the stream buffer and from there into the text.
/// The message's first seven bytes (header, length, `j:`) stay in the stream buffer at
/// `pos`; the arguments after it follow them there.
struct Big {
    body: Vec<u8>,
    /// The body's length (the argument's, less `j:`).
    want: usize,
}

/// First arguments at least this long are gathered in place ([`Big`]).
const DIRECT_MIN: usize = 64 * 1024;

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_MESSAGE)
    }
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("buffered", &(self.buf.len() - self.pos))
            .field("offset", &self.offset())
            .field("failed", &self.failed)
            .finish()
    }
}

impl Decoder {
    pub(crate) fn new(max_message: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            pos: 0,
            base: 0,
            need: 1,
            max_message,
            failed: None,
            big: None,
            direct_min: DIRECT_MIN,
        }
    }

    /// A decoder gathering first arguments of at least `direct_min` bytes in place (tests
    /// exercise that path with small messages).
    #[cfg(test)]
    fn with_direct_min(max_message: usize, direct_min: usize) -> Self {
        Decoder {
            direct_min,
            ..Decoder::new(max_message)
        }
    }

    /// Stream offset of the first byte not yet consumed as part of a whole message.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Bytes buffered that do not yet form a whole message.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.buf.len() - self.pos + self.big.as_ref().map_or(0, |b| b.body.len())
    }

    /// Append a chunk of the stream. After a failure the bytes are dropped: the caller
    /// keeps the raw stream if it wants it.
    pub fn push(&mut self, mut chunk: &[u8]) {
        if self.failed.is_some() {
            self.base += chunk.len() as u64;
            return;
        }
        if let Some(big) = &mut self.big {
            let take = (big.want - big.body.len()).min(chunk.len());
            big.body.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
        }
        if self.pos > 0 && self.pos == self.buf.len() {
            self.base += self.pos as u64;
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 && self.pos * 2 > self.buf.len() {
            self.base += self.pos as u64;
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole message, `None` when more bytes are needed, or the error that made
    /// the stream undecodable (returned once; `None` afterwards).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<Message, DecodeError>> {
        if self.failed.is_some() {
            return None;
        }
        if self.big.is_some() {
            return self.next_big();
        }
        let avail = self.buf.len() - self.pos;
        if avail < self.need {
            return None;
        }
        match self.scan() {
            Scan::Incomplete(need) => {
                self.need = need;
                self.start_big();
                None
            }
            Scan::Failed(e) => Some(Err(self.fail(e))),
            Scan::Whole(len) => {
                let start = self.pos;
                let frame = &self.buf[start..start + len];
                let argc = (frame[0] & 0x0f) as usize;
                let mut args = Vec::with_capacity(argc);
                let mut p = 1;
                for _ in 0..argc {
                    let n = u32::from_be_bytes([frame[p], frame[p + 1], frame[p + 2], frame[p + 3]])
                        as usize;
                    p += 4;
                    args.push(Arg::from_bytes(&frame[p..p + n]));
                    p += n;
                }
                self.pos += len;
                self.need = 1;
                Some(Ok(Message { args }))
            }
        }
    }

    /// The stream is undecodable from here: drop what is buffered.
    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.failed = Some(e.clone());
        let gathered = self.big.take().map_or(0, |b| b.body.len());
        self.base += (self.buf.len() + gathered) as u64;
        self.buf = Vec::new();
        self.pos = 0;
        e
    }

    /// The message at `pos` is incomplete: when its first argument is large JSON and still
    /// arriving, gather the rest of it in place from now on ([`Big`]).
    fn start_big(&mut self) {
        let data = &self.buf[self.pos..];
        if data.len() < 7 || data[0] & 0x0f == 0 || &data[5..7] != b"j:" {
            return;
        }
        let n = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        // (A length over the limit was refused by the scan.)
        if n < self.direct_min.max(2) || data.len() >= 5 + n {
            return;
        }
        let want = n - 2;
        let mut body = super::json::pool::take(want).into_bytes();
        body.extend_from_slice(&data[7..]);
        self.buf.truncate(self.pos + 7);
        self.big = Some(Big { body, want });
    }

    /// [`Decoder::next`] while a first argument is gathered in place: once it is whole, the
    /// arguments after it (in `buf`, after the message's first seven bytes).
    fn next_big(&mut self) -> Option<Result<Message, DecodeError>> {
        let big = self.big.as_ref()?;
        if big.body.len() < big.want {
            return None;
        }
        let at = self.offset();
        let data = &self.buf[self.pos..];
        let argc = (data[0] & 0x0f) as usize;
        // Positions in `data` (7 onwards); the message's own positions are `want` further.
        let mut p = 7usize;
        for _ in 1..argc {
            if data.len() < p + 4 {
                return None;
            }
            let n = u32::from_be_bytes([data[p], data[p + 1], data[p + 2], data[p + 3]]) as usize;
            let in_message = p + big.want;
            if in_message + 4 + n > self.max_message {
                let e = DecodeError::TooLong {
                    offset: at + in_message as u64,
                    len: n as u64,
                    limit: self.max_message,
                };
                return Some(Err(self.fail(e)));
            }
            p += 4;
            if data.len() < p + n {
                return None;
            }
            p += n;
        }
        let big = self.big.take()?;
        let mut args = Vec::with_capacity(argc);
        args.push(Arg::from_json_body(big.body));
        let mut q = 7;
        for _ in 1..argc {
            let n = u32::from_be_bytes([data[q], data[q + 1], data[q + 2], data[q + 3]]) as usize;
            q += 4;
            args.push(Arg::from_bytes(&data[q..q + n]));
            q += n;
        }
        self.pos += p;
        self.base += big.want as u64;
        self.need = 1;
        Some(Ok(Message { args }))
    }

    /// Find the extent of the message at `pos` without copying.
    fn scan(&self) -> Scan {
        let data = &self.buf[self.pos..];
        let at = self.offset();
        let header = data[0];
        let version = header >> 4;
        if version != AMP_VERSION {
            return Scan::Failed(DecodeError::BadVersion {
                offset: at,
                header,
                version,
            });
        }
        let argc = (header & 0x0f) as usize;
        let mut p = 1usize;
        for _ in 0..argc {
            if data.len() < p + 4 {
                return Scan::Incomplete(p + 4);
            }
            let n = u32::from_be_bytes([data[p], data[p + 1], data[p + 2], data[p + 3]]) as usize;
            if p + 4 + n > self.max_message {
                return Scan::Failed(DecodeError::TooLong {
                    offset: at + p as u64,
                    len: n as u64,
                    limit: self.max_message,
                });
            }
            p += 4;
            if data.len() < p + n {
                return Scan::Incomplete(p + n);
            }
            p += n;
        }
        Scan::Whole(p)
    }
}

enum Scan {
    Incomplete(usize),
    Failed(DecodeError),
    Whole(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The getVersion request from the field notes, byte for byte.
    pub(crate) const GET_VERSION: &[u8] = b"\x12\x00\x00\x00\x33j:{\"type\":\"call\",\"method\":\"getVersion\",\"args\":[{}]}\x00\x00\x00\x08s:3334:0";

    #[test]
    fn decodes_field_note_vector() {
        let mut d = Decoder::default();
        d.push(GET_VERSION);
        let m = d.next().unwrap().unwrap();
        assert_eq!(m.args.len(), 2);
        assert_eq!(m.args[0].as_json().unwrap()["method"], "getVersion");
        assert_eq!(m.args[1].as_str(), Some("3334:0"));
        assert!(d.next().is_none());
        assert_eq!(m.encode(), GET_VERSION);
    }

    #[test]
    fn every_split_point() {
        let mut stream = GET_VERSION.to_vec();
        stream.extend_from_slice(GET_VERSION);
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                for mut d in [Decoder::default(), Decoder::with_direct_min(1 << 20, 4)] {
                    let mut got = 0;
                    for chunk in [&stream[..a], &stream[a..b], &stream[b..]] {
                        d.push(chunk);
                        while let Some(m) = d.next() {
                            m.unwrap();
                            got += 1;
                        }
                    }
                    assert_eq!(got, 2, "split at {a},{b}");
                    assert_eq!(d.pending(), 0);
                }
            }
        }
    }

    #[test]
    fn absurd_length_is_refused_without_allocating() {
        let mut d = Decoder::new(1024);
        d.push(&[0x11, 0xff, 0xff, 0xff, 0xff]);
        let e = d.next().unwrap().unwrap_err();
        assert!(matches!(e, DecodeError::TooLong { offset: 1, .. }), "{e}");
        assert!(d.next().is_none());
    }

    #[test]
    fn bad_version_names_offset() {
        let mut d = Decoder::default();
        d.push(GET_VERSION);
        d.push(b"GET / HTTP/1.1\r\n");
        assert!(d.next().unwrap().is_ok());
        let e = d.next().unwrap().unwrap_err();
        assert_eq!(e.offset(), GET_VERSION.len() as u64);
    }

    #[test]
    fn raw_and_non_utf8_args_are_kept() {
        let m = Message::new(vec![
            Arg::Raw(vec![0xff, 0xfe]),
            Arg::Raw(b"s:\xff".to_vec()),
            Arg::Raw(b"j:{".to_vec()),
        ]);
        let mut d = Decoder::default();
        d.push(&m.encode());
        assert_eq!(d.next().unwrap().unwrap(), m);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn arg() -> impl Strategy<Value = Arg> {
            prop_oneof![
                any::<String>().prop_map(Arg::Str),
                // JSON long enough to be gathered in place, with an escape or not.
                ("[a-z\\\\\"é ]{0,60}", 0usize..3).prop_map(|(t, pad)| {
                    let text = format!(
                        "{}{}",
                        " ".repeat(pad % 2),
                        serde_json::to_string(&t).unwrap()
                    );
                    Arg::from_bytes(format!("j:{text}").as_bytes())
                }),
                proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| {
                    let mut v = b"j:".to_vec();
                    v.extend(b);
                    Arg::from_bytes(&v)
                }),
                proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| Arg::from_bytes(&b)),
                (any::<i64>(), "[a-z]{0,8}")
                    .prop_map(|(n, k)| Arg::json(serde_json::json!({ k: n }))),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// Random bytes, split anywhere: never a panic, never more than the limit held.
            #[test]
            fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), cut in 0usize..512) {
                let mut d = Decoder::new(256);
                let cut = cut.min(data.len());
                for chunk in [&data[..cut], &data[cut..]] {
                    d.push(chunk);
                    while let Some(r) = d.next() {
                        if let Err(e) = r {
                            prop_assert!(e.offset() <= data.len() as u64);
                        }
                    }
                    prop_assert!(d.pending() <= 512);
                }
            }

            /// Gathering large first arguments in place changes nothing that can be seen:
            /// the same messages, errors, error offsets and stream offsets as the plain path,
            /// for valid messages (some with a large JSON first argument) and garbage, in any
            /// chunking, and nothing held beyond the limit.
            #[test]
            fn in_place_gathering_decodes_as_the_plain_path(
                msgs in proptest::collection::vec(proptest::collection::vec(arg(), 0..4), 0..5),
                garbage in proptest::collection::vec(any::<u8>(), 0..64),
                junk_at in 0usize..6,
                steps in proptest::collection::vec(1usize..40, 1..8),
                limit in prop_oneof![Just(DEFAULT_MAX_MESSAGE), 8usize..200],
            ) {
                let mut stream = Vec::new();
                for (i, m) in msgs.into_iter().enumerate() {
                    if i == junk_at {
                        stream.extend_from_slice(&garbage);
                    }
                    stream.extend(Message::new(m).encode());
                }
                let mut plain = Decoder::new(limit);
                let mut direct = Decoder::with_direct_min(limit, 4);
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let mut at = 0;
                let mut k = 0;
                while at < stream.len() {
                    let n = steps[k % steps.len()].min(stream.len() - at);
                    k += 1;
                    for (d, out) in [(&mut plain, &mut a), (&mut direct, &mut b)] {
                        d.push(&stream[at..at + n]);
                        while let Some(m) = d.next() {
                            out.push(m);
                        }
                    }
                    at += n;
                    prop_assert_eq!(&a, &b);
                    prop_assert_eq!(plain.offset(), direct.offset());
                    prop_assert!(direct.pending() <= stream.len());
                }
            }

            /// Any messages, encoded back to back and fed in random chunk sizes, come back.
            #[test]
            fn roundtrip_in_any_chunking(msgs in proptest::collection::vec(proptest::collection::vec(arg(), 0..4), 1..6),
                                         step in 1usize..40) {
                let msgs: Vec<Message> = msgs.into_iter().map(Message::new).collect();
                let stream: Vec<u8> = msgs.iter().flat_map(Message::encode).collect();
                let mut d = Decoder::default();
                let mut got = Vec::new();
                for chunk in stream.chunks(step) {
                    d.push(chunk);
                    while let Some(m) = d.next() {
                        got.push(m.unwrap());
                    }
                }
                prop_assert_eq!(got, msgs);
            }
        }
    }
}
