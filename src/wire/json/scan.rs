//! A hand-written JSON scanner: strict validation in one pass over the bytes, then cheap
//! walks over text already validated.
//!
//! Payloads are large (a getMonitorData reply carries every app's environment) and only a
//! dozen of their fields are ever read, so the text is validated once, when it enters the
//! program (an AMP argument, a capture record), and afterwards only boundaries are found:
//! [`skip`] jumps over a value without looking at what is inside its strings but the quotes
//! and backslashes, eight bytes at a time.
//!
//! [`validate`] accepts exactly RFC 8259 JSON (as serde_json does, including its leniency on
//! unpaired `\u` surrogates, which [`unescape`] turns into U+FFFD). It keeps its own stack of
//! open containers, so nesting depth costs memory in proportion to the input, never the
//! call stack.

use std::borrow::Cow;

/// Why a text is not JSON, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalid {
    /// Byte offset of the problem in the text given.
    pub(crate) offset: usize,
    pub(crate) what: &'static str,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.offset)
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Bit 7 of a byte is set in the result for a byte of `w` that is a quote, a backslash or a
/// control character (below 0x20): the bytes that end a run of plain string content. The
/// lowest flagged byte is always a true one; bytes above it may be flagged falsely.
#[inline(always)]
fn specials(w: u64) -> u64 {
    let q = w ^ (ONES * b'"' as u64);
    let b = w ^ (ONES * b'\\' as u64);
    let quote = q.wrapping_sub(ONES) & !q;
    let backslash = b.wrapping_sub(ONES) & !b;
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    (quote | backslash | control) & HIGHS
}

/// One bit per byte of the 16 at `b[i..i + 16]` (which must be inside `b`): set for a
/// quote, a backslash or a control byte. SSE2, which every x86-64 has.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn specials16(b: &[u8], i: usize) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    assert!(i + 16 <= b.len());
    // SAFETY: SSE2 is part of the x86-64 baseline; the load reads `b[i..i + 16]`, inside
    // `b` (asserted above; the callers' loop conditions let the compiler drop the check),
    // unaligned.
    unsafe {
        let v = _mm_loadu_si128(b.as_ptr().add(i).cast());
        let q = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let s = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // Unsigned v <= 0x1f exactly when max(v, 0x1f) == 0x1f.
        let below_space = _mm_set1_epi8(0x1f);
        let c = _mm_cmpeq_epi8(_mm_max_epu8(v, below_space), below_space);
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(q, s), c)) as u32
    }
}

/// [`specials16`] of the 64 bytes of `block`: bit k for byte k.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn specials64(block: &[u8; 64]) -> u64 {
    (0..4).fold(0u64, |mask, k| {
        mask | (specials16(block, 16 * k) as u64) << (16 * k)
    })
}

/// Position of the first quote, backslash or control byte at or after `i` (or `b.len()`):
/// sixteen bytes at a time with SSE2 (every x86-64 has it), then eight at a time.
#[inline(always)]
fn plain_run_end(b: &[u8], mut i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        while i + 16 <= b.len() {
            let m = specials16(b, i);
            if m != 0 {
                return i + m.trailing_zeros() as usize;
            }
            i += 16;
        }
        // Fewer than 16 bytes left: the sixteen that end the text, the first ones (before
        // `i`) shifted out.
        if i < b.len() && b.len() >= 16 {
            let m = specials16(b, b.len() - 16) >> (16 - (b.len() - i));
            return if m != 0 {
                i + m.trailing_zeros() as usize
            } else {
                b.len()
            };
        }
    }
    while i + 8 <= b.len() {
        let w = u64::from_le_bytes(b[i..i + 8].try_into().expect("eight bytes"));
        let m = specials(w);
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !is_special(b[i]) {
        i += 1;
    }
    i
}

/// A quote, a backslash or a control byte: what ends a run of plain string content.
#[inline(always)]
fn is_special(c: u8) -> bool {
    c == b'"' || c == b'\\' || c < 0x20
}

/// Where the quotes, backslashes and control bytes are in the 64 bytes of the text from
/// `base`, one bit per byte, for validation: a string is most often shorter than that
/// (keys, environment values), and several are found with one look at the bytes instead
/// of a new scan from each string's start.
struct Specials {
    base: usize,
    /// Bit k: byte `base + k` is special; past the text's end, the bit of its end is set
    /// (so a run never goes beyond it).
    mask: u64,
}

impl Specials {
    fn new() -> Specials {
        // No block yet: `base` far from any position.
        Specials {
            base: usize::MAX / 2,
            mask: 0,
        }
    }

    /// [`plain_run_end`]: the first quote, backslash or control byte at or after `i` (or
    /// `b.len()`).
    #[inline(always)]
    fn run_end(&mut self, b: &[u8], mut i: usize) -> usize {
        loop {
            let off = i.wrapping_sub(self.base);
            if off < 64 {
                let m = self.mask >> off;
                if m != 0 {
                    return i + m.trailing_zeros() as usize;
                }
                i = self.base + 64;
            }
            self.load(b, i);
        }
    }

    /// The mask of the 64 bytes from `i` (fewer at the text's end).
    #[inline(never)]
    fn load(&mut self, b: &[u8], i: usize) {
        self.base = i;
        #[cfg(target_arch = "x86_64")]
        if let Some(block) = b.get(i..i + 64) {
            // As an array: the sixteen-byte loads need no bound checks.
            self.mask = specials64(block.try_into().expect("64 bytes"));
            return;
        }
        self.mask = Specials::tail(b, i);
    }

    /// The mask of the last bytes of the text, from `i` (fewer than 64).
    #[inline(never)]
    fn tail(b: &[u8], i: usize) -> u64 {
        // From the 64 bytes that end the text, when it has as many (a text's end is most
        // often inside its last block): the bytes before `i` shifted out.
        #[cfg(target_arch = "x86_64")]
        if b.len() >= 64 && i < b.len() {
            let n = b.len() - i;
            let last = specials64(b[b.len() - 64..].try_into().expect("64 bytes"));
            return last >> (64 - n) | 1 << n;
        }
        let rest = b.get(i..).unwrap_or(&[]);
        let n = rest.len().min(64);
        let mut mask = 0u64;
        let mut k = 0;
        #[cfg(target_arch = "x86_64")]
        {
            while k + 16 <= n {
                mask |= (specials16(b, i + k) as u64) << k;
                k += 16;
            }
            // The last bytes (fewer than 16) from the sixteen that end the text, when it
            // has as many: a text's end is most often inside its last block.
            if k < n && b.len() >= 16 {
                let m = specials16(b, b.len() - 16) >> (16 - (n - k));
                mask |= (m as u64) << k;
                k = n;
            }
        }
        for (j, &c) in rest[k..n].iter().enumerate() {
            if is_special(c) {
                mask |= 1 << (k + j);
            }
        }
        if n < 64 {
            mask |= 1 << n;
        }
        mask
    }
}

#[inline(always)]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            break;
        }
        i += 1;
    }
    i
}

/// Validate the string whose opening quote is at `i`; the position after its closing quote.
/// Inlined where it is used (most strings are one plain run: keys, names); what follows a
/// first escape is validated by [`string_from`].
#[inline(always)]
fn string(b: &[u8], i: usize, sp: &mut Specials) -> Result<usize, Invalid> {
    let end = sp.run_end(b, i + 1);
    if b.get(end) == Some(&b'"') {
        return Ok(end + 1);
    }
    string_from(b, end, sp)
}

/// The rest of a string from `i`, the end of a plain run (an escape, the closing quote, a
/// control character or the end of the text): the position after its closing quote.
#[inline(never)]
fn string_from(b: &[u8], mut i: usize, sp: &mut Specials) -> Result<usize, Invalid> {
    let bad = |offset, what| Err(Invalid { offset, what });
    loop {
        match b.get(i) {
            None => return bad(i, "unterminated string"),
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => match b.get(i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                Some(b'u') => {
                    let hex = b.get(i + 2..i + 6);
                    if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                        return bad(i, "invalid \\u escape");
                    }
                    i += 6;
                }
                Some(_) => return bad(i, "invalid escape"),
                None => return bad(i, "unterminated string"),
            },
            Some(_) => return bad(i, "control character in a string"),
        }
        i = sp.run_end(b, i);
    }
}

/// The end of the run of ASCII digits from `i`: eight bytes at a time while eight are
/// left (pids, times and sizes are most of a payload's numbers), then byte by byte.
#[inline(always)]
fn digits_end(b: &[u8], mut i: usize) -> usize {
    while let Some(w) = b.get(i..i + 8) {
        // A byte is a digit when its XOR with '0' is at most 9: adding 0x76 sets bit 7 of
        // the others (those already at 0x80 or more have it set in `x`). A carry only
        // reaches bytes above a flagged one, so the lowest flagged byte is a true one.
        let x = u64::from_le_bytes(w.try_into().expect("eight bytes")) ^ (ONES * b'0' as u64);
        let other = (x.wrapping_add(ONES * 0x76) | x) & HIGHS;
        if other != 0 {
            return i + (other.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// Validate the number starting at `start`; the position after it.
#[inline(always)]
fn number(b: &[u8], start: usize) -> Result<usize, Invalid> {
    let bad = |offset| {
        Err(Invalid {
            offset,
            what: "invalid number",
        })
    };
    let i = start + usize::from(b.get(start) == Some(&b'-'));
    let mut i = match b.get(i) {
        Some(b'0') => i + 1,
        Some(b'1'..=b'9') => digits_end(b, i + 1),
        _ => return bad(start),
    };
    // Most numbers are whole: they end here.
    match b.get(i) {
        Some(b'.') => {
            let j = digits_end(b, i + 1);
            if j == i + 1 {
                return bad(i);
            }
            i = j;
            if !matches!(b.get(i), Some(b'e' | b'E')) {
                return Ok(i);
            }
        }
        Some(b'e' | b'E') => {}
        _ => return Ok(i),
    }
    // An exponent at `i`.
    let from = i + 1 + usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
    let j = digits_end(b, from);
    if j == from {
        return bad(i);
    }
    Ok(j)
}

/// One replacement for [`Doc::splice`]: a byte range of the text, the JSON text that takes
/// its place, and that text's tape (empty for a scalar).
/// The text and tape are shared: a remembered redaction is placed in every reply that
/// repeats it without being copied for each.
pub(crate) struct Edit {
    pub(crate) range: std::ops::Range<usize>,
    pub(crate) with: std::sync::Arc<str>,
    pub(crate) tape: std::sync::Arc<[(u32, u32)]>,
}

/// Where containers end: `(start, end)` byte positions of every object and array of at
/// least [`TAPE_MIN`] bytes, in the order they start. Made while validating; a walk that
/// meets such a container jumps to its end instead of scanning it again, so reading a
/// field three objects deep costs a walk over the members on the way, not over the bytes.
pub(crate) type Tape = Vec<(u32, u32)>;

/// Containers shorter than this are scanned when skipped (cheaper than a lookup); it also
/// bounds the tape of text without nesting to a quarter of the text's size. (At 64, the
/// `process` object of every app output line, some 60 bytes, was scanned each time a
/// reader passed it: a twentieth of the interpreter's work on a busy app's capture.)
const TAPE_MIN: usize = 32;

/// Validate one value starting at `i` (no leading whitespace); the position after it.
/// The bytes must already be known to be UTF-8 (strings are not checked for it here).
/// Containers are recorded in `tape` (when positions fit in 32 bits).
fn value_at<const REMEMBER: bool>(b: &[u8], i: usize, tape: &mut Tape) -> Result<usize, Invalid> {
    thread_local! {
        /// The stack of open containers, kept for the next value (one per record read).
        static STACK: std::cell::Cell<Vec<(bool, usize, usize)>> =
            const { std::cell::Cell::new(Vec::new()) };
        /// The object remembered for the next text (when validating with `REMEMBER`).
        static REMEMBERED: std::cell::Cell<Remembered> =
            const { std::cell::Cell::new(Remembered { text: Vec::new(), tape: Vec::new() }) };
    }
    let mut stack = STACK.take();
    stack.clear();
    let end = if REMEMBER {
        let mut remembered = REMEMBERED.take();
        let end = containers::<true>(b, i, tape, &mut stack, &mut remembered);
        REMEMBERED.set(remembered);
        end
    } else {
        containers::<false>(b, i, tape, &mut stack, &mut Remembered::default())
    };
    STACK.set(stack);
    end
}

/// The first object inside the last text validated on this thread that held one (at most
/// [`REMEMBERED_MAX`] bytes), with its tape: the same bytes met again at the same place (an
/// app's `process` object in each of its output lines, as a busy app writes them one after
/// another) are that same valid object, taken whole instead of validated again. Text equal
/// to a valid JSON value is that value wherever it stands (a value's end is told by its own
/// bytes), so what is accepted, refused and taped does not change.
#[derive(Default)]
struct Remembered {
    text: Vec<u8>,
    /// Its containers' tape, counted from its start.
    tape: Tape,
}

impl Remembered {
    /// When the text at `i` starts with the remembered object: the position after it, its
    /// tape placed in `tape` (when the text is taped).
    #[inline(never)]
    fn at(&self, b: &[u8], i: usize, tape: Option<&mut Tape>) -> Option<usize> {
        if self.text.is_empty() || !b[i..].starts_with(&self.text) {
            return None;
        }
        if let Some(tape) = tape {
            let at = i as u32;
            tape.extend(self.tape.iter().map(|&(s, e)| (s + at, e + at)));
        }
        Some(i + self.text.len())
    }

    /// Remember `text`, an object just validated at `start`, with `tape`, its part of the
    /// text's tape (when it is not too long).
    #[inline(never)]
    fn keep(&mut self, text: &[u8], tape: &[(u32, u32)], start: usize) {
        if text.len() > REMEMBERED_MAX {
            return;
        }
        self.text.clear();
        self.text.extend_from_slice(text);
        self.tape.clear();
        let at = start as u32;
        self.tape
            .extend(tape.iter().map(|&(s, e)| (s - at, e - at)));
    }
}

/// Longer objects are not remembered (comparing them would cost much of validating them).
const REMEMBERED_MAX: usize = 256;

/// [`value_at`] with its stack of open containers (and, when `REMEMBER`, the remembered
/// object: not for every text, as it slows the validation of large ones a little).
fn containers<const REMEMBER: bool>(
    b: &[u8],
    i: usize,
    tape: &mut Tape,
    stack: &mut Vec<(bool, usize, usize)>,
    remembered: &mut Remembered,
) -> Result<usize, Invalid> {
    let taped = u32::try_from(b.len()).is_ok();
    // Open containers: (is an object, start, its entry in the tape).
    let open = |stack: &mut Vec<(bool, usize, usize)>, tape: &mut Tape, object: bool, at: usize| {
        stack.push((object, at, tape.len()));
        if taped {
            tape.push((at as u32, 0));
        }
    };
    // The start of the first object inside the outermost container, once met (then
    // compared with the remembered one, and remembered in its place when it differs).
    let mut first_inner = usize::MAX;
    let mut inner_seen = false;
    let mut i = i;
    let sp = &mut Specials::new();
    'value: loop {
        // A value starts at i.
        let end = match b.get(i) {
            Some(b'"') => string(b, i, sp)?,
            Some(b'{') => 'object: {
                if REMEMBER && !inner_seen && stack.len() == 1 {
                    inner_seen = true;
                    first_inner = i;
                    if let Some(end) = remembered.at(b, i, taped.then_some(&mut *tape)) {
                        // Not remembered again.
                        first_inner = usize::MAX;
                        break 'object end;
                    }
                }
                let j = skip_ws(b, i + 1);
                if b.get(j) == Some(&b'}') {
                    j + 1
                } else {
                    open(stack, tape, true, i);
                    i = member_key(b, j, sp)?;
                    continue 'value;
                }
            }
            Some(b'[') => {
                let j = skip_ws(b, i + 1);
                if b.get(j) == Some(&b']') {
                    j + 1
                } else {
                    open(stack, tape, false, i);
                    i = j;
                    continue 'value;
                }
            }
            Some(b't') if b[i..].starts_with(b"true") => i + 4,
            Some(b'f') if b[i..].starts_with(b"false") => i + 5,
            Some(b'n') if b[i..].starts_with(b"null") => i + 4,
            Some(b'-' | b'0'..=b'9') => number(b, i)?,
            Some(_) => {
                return Err(Invalid {
                    offset: i,
                    what: "expected a value",
                })
            }
            None => {
                return Err(Invalid {
                    offset: i,
                    what: "unexpected end",
                })
            }
        };
        // After a value: close containers or go on to the next member/item.
        i = end;
        loop {
            let Some(&(object, _, _)) = stack.last() else {
                return Ok(i);
            };
            // Compact text (no whitespace: as pm2 and pm2-trace write it) goes on to the
            // next member's key without the skips.
            if object && b.get(i) == Some(&b',') && b.get(i + 1) == Some(&b'"') {
                i = member_key(b, i + 1, sp)?;
                if b.get(i) == Some(&b'"') {
                    i = string(b, i, sp)?;
                    continue;
                }
                continue 'value;
            }
            let j = skip_ws(b, i);
            match (b.get(j), object) {
                (Some(b','), true) => {
                    i = member_key(b, skip_ws(b, j + 1), sp)?;
                    // Most members' values are strings (an environment's): validated here,
                    // staying in this object, without the dispatch on the value's kind.
                    if b.get(i) == Some(&b'"') {
                        i = string(b, i, sp)?;
                        continue;
                    }
                    continue 'value;
                }
                (Some(b','), false) => {
                    i = skip_ws(b, j + 1);
                    continue 'value;
                }
                (Some(b'}'), true) | (Some(b']'), false) => {
                    let (_, start, entry) = stack.pop().expect("a container is open");
                    i = j + 1;
                    if taped {
                        // Containers inside a short one are shorter: already popped, so
                        // this one is the last entry.
                        if i - start < TAPE_MIN {
                            tape.truncate(entry);
                        } else {
                            tape[entry].1 = i as u32;
                        }
                    }
                    if REMEMBER && first_inner == start && taped {
                        remembered.keep(&b[start..i], &tape[entry.min(tape.len())..], start);
                    }
                }
                (None, _) => {
                    return Err(Invalid {
                        offset: j,
                        what: "unexpected end",
                    })
                }
                (Some(_), true) => {
                    return Err(Invalid {
                        offset: j,
                        what: "expected ',' or '}'",
                    })
                }
                (Some(_), false) => {
                    return Err(Invalid {
                        offset: j,
                        what: "expected ',' or ']'",
                    })
                }
            }
        }
    }
}

/// Validate `"key" :` at `i`; the position of the value after it.
#[inline(always)]
fn member_key(b: &[u8], i: usize, sp: &mut Specials) -> Result<usize, Invalid> {
    if b.get(i) != Some(&b'"') {
        return Err(Invalid {
            offset: i,
            what: "expected a string key",
        });
    }
    let end = string(b, i, sp)?;
    // Compact text: the colon right after the key, the value right after it.
    if b.get(end) == Some(&b':') && b.get(end + 1).is_some_and(|&c| c > b' ') {
        return Ok(end + 1);
    }
    let j = skip_ws(b, end);
    if b.get(j) != Some(&b':') {
        return Err(Invalid {
            offset: j,
            what: "expected ':'",
        });
    }
    Ok(skip_ws(b, j + 1))
}

/// Validate that `b` is exactly one JSON value, with optional whitespace around it: the
/// value's text (without that whitespace) and its containers' [`Tape`], positions counted
/// from the start of that text.
pub(crate) fn validate(b: &[u8]) -> Result<(&str, Tape), Invalid> {
    let mut tape = Tape::new();
    let text = validate_into(b, &mut tape)?;
    Ok((text, tape))
}

/// [`validate`], the tape written into `tape` (cleared first), for a reader that validates
/// one text after another and keeps no tape: no allocation once `tape` has grown.
pub(crate) fn validate_into<'b>(b: &'b [u8], tape: &mut Tape) -> Result<&'b str, Invalid> {
    validate_str_into::<false>(utf8(b)?, tape)
}

/// [`validate_into`] for one small text after another of the same kind (a capture's app
/// output lines): the first object inside the text, when it repeats the one of the last
/// such text validated on this thread (an app's `process` object), is compared instead of
/// validated again (see [`Remembered`]). The same verdicts, offsets and tapes.
pub(crate) fn validate_into_remembering<'b>(
    b: &'b [u8],
    tape: &mut Tape,
) -> Result<&'b str, Invalid> {
    validate_str_into::<true>(utf8(b)?, tape)
}

/// `b` as text, when it is UTF-8. Most texts are ASCII (pm2's payloads, a capture's
/// records): told sixteen bytes at a time, then the general check only for the others.
pub(crate) fn utf8(b: &[u8]) -> Result<&str, Invalid> {
    if all_ascii(b) {
        // SAFETY: every byte is below 0x80, and ASCII text is UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(b) });
    }
    std::str::from_utf8(b).map_err(|e| Invalid {
        offset: e.valid_up_to(),
        what: "invalid UTF-8",
    })
}

/// Whether every byte of `b` is below 0x80: 64 bytes at a time (SSE2, which every x86-64
/// has), the last ones in the sixteen that end `b`.
#[inline]
fn all_ascii(b: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if b.len() >= 16 {
        use std::arch::x86_64::{_mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128};
        let high = |i: usize| {
            assert!(i + 16 <= b.len());
            // SAFETY: SSE2 is part of the x86-64 baseline; the load reads `b[i..i + 16]`,
            // inside `b` (asserted above), unaligned.
            unsafe { _mm_loadu_si128(b.as_ptr().add(i).cast()) }
        };
        let mut i = 0;
        while i + 64 <= b.len() {
            // SAFETY: SSE2 (x86-64 baseline), on values already loaded.
            let any = unsafe {
                let v = _mm_or_si128(
                    _mm_or_si128(high(i), high(i + 16)),
                    _mm_or_si128(high(i + 32), high(i + 48)),
                );
                _mm_movemask_epi8(v)
            };
            if any != 0 {
                return false;
            }
            i += 64;
        }
        while i + 16 <= b.len() {
            // SAFETY: as above.
            if unsafe { _mm_movemask_epi8(high(i)) } != 0 {
                return false;
            }
            i += 16;
        }
        // SAFETY: as above (`b` has at least 16 bytes).
        return i == b.len() || unsafe { _mm_movemask_epi8(high(b.len() - 16)) } == 0;
    }
    b.is_ascii()
}

/// [`validate`] of a text already known to be UTF-8.
pub(crate) fn validate_str(text: &str) -> Result<(&str, Tape), Invalid> {
    let mut tape = Tape::new();
    let valid = validate_str_into::<false>(text, &mut tape)?;
    Ok((valid, tape))
}

fn validate_str_into<'b, const REMEMBER: bool>(
    text: &'b str,
    tape: &mut Tape,
) -> Result<&'b str, Invalid> {
    tape.clear();
    let b = text.as_bytes();
    let start = skip_ws(b, 0);
    let end = value_at::<REMEMBER>(b, start, tape)?;
    let rest = skip_ws(b, end);
    if rest != b.len() {
        return Err(Invalid {
            offset: rest,
            what: "trailing characters",
        });
    }
    if start > 0 {
        for e in tape.iter_mut() {
            e.0 -= start as u32;
            e.1 -= start as u32;
        }
    }
    Ok(&text[start..end])
}

// ---- Walks over validated text. They never panic on other text: they stop at its end.

/// The end of the string whose opening quote is at `i`, in validated text.
#[inline]
fn skip_string(b: &[u8], mut i: usize) -> usize {
    i += 1;
    loop {
        i = plain_run_end(b, i);
        match b.get(i) {
            Some(b'"') => return i + 1,
            Some(b'\\') => i += 2,
            Some(_) => i += 1,
            None => return b.len(),
        }
    }
}

/// The end of the value starting at `i` (no leading whitespace) in validated text, scanned.
fn skip(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        Some(b'"') => skip_string(b, i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut i = i;
            while let Some(&c) = b.get(i) {
                match c {
                    b'"' => {
                        i = skip_string(b, i);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            b.len()
        }
        Some(_) => {
            let mut i = i;
            // Most scalars are whole numbers: their digits first, one test each.
            while let Some(&c) = b.get(i) {
                if c.wrapping_sub(b'0') > 9 {
                    break;
                }
                i += 1;
            }
            while let Some(&c) = b.get(i) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                i += 1;
            }
            i
        }
        None => i,
    }
}

/// A validated JSON text with its [`Tape`] (empty when not known: walks then scan).
#[derive(Clone, Copy)]
pub(crate) struct Doc<'a> {
    text: &'a str,
    tape: &'a [(u32, u32)],
}

impl<'a> Doc<'a> {
    pub(crate) fn new(text: &'a str, tape: &'a [(u32, u32)]) -> Doc<'a> {
        Doc { text, tape }
    }

    pub(crate) fn text(&self) -> &'a str {
        self.text
    }

    /// Where slice `v` of the text starts in it.
    pub(crate) fn offset(&self, v: &str) -> usize {
        let at = (v.as_ptr() as usize).wrapping_sub(self.text.as_ptr() as usize);
        assert!(
            at <= self.text.len() && at + v.len() <= self.text.len(),
            "a slice of another text"
        );
        at
    }

    /// The end of the value starting at `i`.
    #[inline]
    pub(crate) fn skip(&self, i: usize) -> usize {
        let b = self.text.as_bytes();
        if matches!(b.get(i), Some(b'{' | b'[')) {
            if let Ok(k) = self.tape.binary_search_by_key(&(i as u32), |e| e.0) {
                return self.tape[k].1 as usize;
            }
        }
        skip(b, i)
    }

    /// The members of object `v` (a slice of the text starting with `{`): each key's raw
    /// text (with its quotes) and its value's text.
    pub(crate) fn members(&self, v: &'a str) -> Members<'a> {
        let at = self.offset(v);
        Members {
            doc: *self,
            i: skip_ws(self.text.as_bytes(), at + 1),
            end: at + v.len(),
        }
    }

    /// The members of object `v` from the one whose key starts `from` bytes into `v` (where
    /// an earlier walk found a member start), as [`Doc::members`] gives them.
    pub(crate) fn members_from(&self, v: &'a str, from: usize) -> Members<'a> {
        let at = self.offset(v);
        Members {
            doc: *self,
            i: at + from,
            end: at + v.len(),
        }
    }

    /// The member of each item of array `v` (a slice of the text starting with `[`) whose
    /// items are all objects of one member, read from the bytes of compact text (no
    /// whitespace: `[{"s":"log:out"},{"j":{...}}]`, as pm2-trace stores a message) without
    /// walking each item twice. An `Err` item says the text is not so written (a longer
    /// object, whitespace): walk it with [`Doc::items`] and [`Doc::members`] instead.
    pub(crate) fn single_members(&self, v: &'a str) -> SingleMembers<'a> {
        let at = self.offset(v);
        SingleMembers {
            doc: *self,
            i: at + 1,
            end: at + v.len(),
            done: false,
        }
    }

    /// The items of array `v` (a slice of the text starting with `[`).
    pub(crate) fn items(&self, v: &'a str) -> Items<'a> {
        let at = self.offset(v);
        Items {
            doc: *self,
            i: skip_ws(self.text.as_bytes(), at + 1),
            end: at + v.len(),
        }
    }

    /// The text with `edits` applied (byte ranges of the text, in order, not overlapping,
    /// each replaced by a JSON text with that text's own tape), and the new text's tape:
    /// this one shifted (containers inside a replaced range dropped) with the edits' tapes
    /// placed where they landed, without scanning again.
    pub(crate) fn splice(&self, edits: &[Edit]) -> (String, Tape) {
        let grow: isize = edits
            .iter()
            .map(|e| e.with.len() as isize - e.range.len() as isize)
            .sum();
        let mut out = super::pool::take((self.text.len() as isize + grow).max(0) as usize);
        let mut at = 0;
        // Where each edit's text landed.
        let mut bases = Vec::with_capacity(edits.len());
        for e in edits {
            out.push_str(&self.text[at..e.range.start]);
            bases.push(out.len() as u32);
            out.push_str(&e.with);
            at = e.range.end;
        }
        out.push_str(&self.text[at..]);
        if u32::try_from(out.len()).is_err() {
            return (out, Tape::new());
        }
        // One pass over this tape and the edits, both in the order they start: a container
        // inside a replaced range is dropped; one before an edit keeps its start and one after
        // it moves by what the edits before it added; an end moves by what the edits ending
        // at or before it added; each edit's own tape is placed where its text landed, before
        // the first container starting after it (the result is in start order).
        let mut ends = Vec::with_capacity(edits.len());
        let mut sum = 0isize;
        for e in edits {
            sum += e.with.len() as isize - e.range.len() as isize;
            ends.push((e.range.end, sum));
        }
        let shift_end = |p: usize, k: usize, before: isize| {
            // Edits `..k` end at or before any position past them; the rest only if found.
            if edits.get(k).is_none_or(|e| p < e.range.end) {
                return (p as isize + before) as u32;
            }
            let n = ends.partition_point(|&(end, _)| end <= p);
            (p as isize + ends[n - 1].1) as u32
        };
        let placed: usize = edits.iter().map(|e| e.tape.len()).sum();
        let mut tape = Tape::with_capacity(self.tape.len() + placed);
        let mut k = 0;
        let mut before = 0isize;
        let place = |tape: &mut Tape, k: usize| {
            let base = bases[k];
            tape.extend(edits[k].tape.iter().map(|&(s, t)| (s + base, t + base)));
        };
        for &(s, e) in self.tape {
            let s = s as usize;
            while k < edits.len() && edits[k].range.end <= s {
                place(&mut tape, k);
                before = ends[k].1;
                k += 1;
            }
            if edits.get(k).is_some_and(|x| x.range.start <= s) {
                continue;
            }
            tape.push((
                (s as isize + before) as u32,
                shift_end(e as usize, k, before),
            ));
        }
        for k in k..edits.len() {
            place(&mut tape, k);
        }
        (out, tape)
    }

    /// The part of the tape inside slice `v`, counted from `v`'s start.
    pub(crate) fn tape_of(&self, v: &str) -> Tape {
        let at = self.offset(v);
        let from = self.tape.partition_point(|e| (e.0 as usize) < at);
        self.tape[from..]
            .iter()
            .take_while(|e| (e.0 as usize) < at + v.len())
            .map(|&(s, e)| (s - at as u32, e - at as u32))
            .collect()
    }
}

/// Iterator of [`Doc::members`].
pub(crate) struct Members<'a> {
    doc: Doc<'a>,
    i: usize,
    end: usize,
}

impl<'a> Iterator for Members<'a> {
    /// (key with its quotes, value)
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        let b = self.doc.text.as_bytes();
        if self.i >= self.end || b.get(self.i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(b, self.i);
        // Compact text (as pm2 and pm2-trace write it) has the value right after the colon.
        let v = match (b.get(key_end), b.get(key_end + 1)) {
            (Some(b':'), Some(&c)) if c > b' ' => key_end + 1,
            _ => skip_ws(b, skip_ws(b, key_end) + 1),
        };
        let v_end = match b.get(v) {
            Some(b'"') => skip_string(b, v),
            _ => self.doc.skip(v),
        }
        .min(self.end);
        let key = self.doc.text.get(self.i..key_end)?;
        let value = self.doc.text.get(v..v_end)?;
        self.i = match (b.get(v_end), b.get(v_end + 1)) {
            (Some(b','), Some(b'"')) => v_end + 1,
            _ => {
                let next = skip_ws(b, v_end);
                if b.get(next) == Some(&b',') {
                    skip_ws(b, next + 1)
                } else {
                    self.end
                }
            }
        };
        Some((key, value))
    }
}

/// Iterator of [`Doc::single_members`].
pub(crate) struct SingleMembers<'a> {
    doc: Doc<'a>,
    /// Where the next item (or the closing `]`) starts.
    i: usize,
    end: usize,
    done: bool,
}

impl<'a> Iterator for SingleMembers<'a> {
    /// (key with its quotes, value), as [`Members`] gives them; `Err` when the text is not
    /// compact one-member objects.
    type Item = Result<(&'a str, &'a str), ()>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let b = self.doc.text.as_bytes();
        let i = self.i;
        if i + 1 == self.end && b.get(i) == Some(&b']') {
            self.done = true;
            return None;
        }
        let found = (|| {
            if b.get(i) != Some(&b'{') || b.get(i + 1) != Some(&b'"') {
                return None;
            }
            let key_end = skip_string(b, i + 1);
            if b.get(key_end) != Some(&b':') || b.get(key_end + 1).is_none_or(|&c| c <= b' ') {
                return None;
            }
            let v_end = self.doc.skip(key_end + 1);
            if v_end >= self.end || b[v_end] != b'}' {
                return None;
            }
            self.i = match b.get(v_end + 1) {
                Some(b',') => v_end + 2,
                Some(b']') => v_end + 1,
                _ => return None,
            };
            let key = self.doc.text.get(i + 1..key_end)?;
            let value = self.doc.text.get(key_end + 1..v_end)?;
            Some((key, value))
        })();
        if found.is_none() {
            self.done = true;
        }
        Some(found.ok_or(()))
    }
}

/// Iterator of [`Doc::items`].
pub(crate) struct Items<'a> {
    doc: Doc<'a>,
    i: usize,
    end: usize,
}

impl<'a> Iterator for Items<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let b = self.doc.text.as_bytes();
        if self.i >= self.end || matches!(b.get(self.i), None | Some(b']')) {
            return None;
        }
        let end = self.doc.skip(self.i).min(self.end);
        let item = self.doc.text.get(self.i..end)?;
        let next = skip_ws(b, end);
        self.i = if b.get(next) == Some(&b',') {
            skip_ws(b, next + 1)
        } else {
            self.end
        };
        Some(item)
    }
}

/// The content of a validated string literal `s` (with its quotes): borrowed when it has
/// no escapes. An unpaired surrogate escape becomes U+FFFD.
pub(crate) fn unescape(s: &str) -> Cow<'_, str> {
    let inner = s
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(s);
    unescape_inner(inner)
}

/// The value of validated JSON text `raw` when it is a whole number written without sign,
/// fraction or exponent in at most 19 digits (pids, times, counts: always a `u64`), which
/// reads in place as serde_json reads it; `None` for anything else.
pub(crate) fn plain_u64(raw: &str) -> Option<u64> {
    if !(1..=19).contains(&raw.len()) {
        return None;
    }
    // Nineteen digits cannot overflow: read them in one pass (`str::parse` checks each step).
    let mut n = 0u64;
    for c in raw.bytes() {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + u64::from(d);
    }
    Some(n)
}

/// [`unescape`] of the text between a validated string literal's quotes.
pub(crate) fn unescape_inner(inner: &str) -> Cow<'_, str> {
    let b = inner.as_bytes();
    // The next backslash at or after `i`, sixteen bytes at a time.
    let backslash = |mut i: usize| loop {
        i = plain_run_end(b, i);
        if b.get(i).is_none_or(|&c| c == b'\\') {
            return i;
        }
        i += 1;
    };
    let mut at = backslash(0);
    if at == b.len() {
        return Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let hex = |at: usize| {
        inner
            .get(at..at + 4)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    // Runs without a backslash are copied whole; `i` is where the next one starts, `at`
    // the backslash that ends it.
    let mut i = 0;
    while at < b.len() {
        out.push_str(&inner[i..at]);
        let escaped = inner[at + 1..].chars().next();
        i = at + 2;
        match escaped {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let Some(hi) = hex(at + 2) else {
                    return Cow::Owned(out);
                };
                i = at + 6;
                let mut code = hi;
                if (0xD800..0xDC00).contains(&hi) && inner.get(at + 6..at + 8) == Some("\\u") {
                    if let Some(lo) = hex(at + 8).filter(|lo| (0xDC00..0xE000).contains(lo)) {
                        code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        i = at + 12;
                    }
                }
                out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
            }
            Some(other) => {
                out.push(other);
                i = at + 1 + other.len_utf8();
            }
            None => return Cow::Owned(out),
        }
        at = backslash(i);
    }
    out.push_str(&inner[i..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whole numbers read in place as `str::parse` reads them (when at most 19 digits, all
    /// digits); anything else is not a plain whole number.
    #[test]
    fn plain_u64_reads_as_parse_does() {
        for raw in [
            "0",
            "7",
            "007",
            "1764086502000",
            "9999999999999999999",
            "1234567890123456789",
        ] {
            assert_eq!(plain_u64(raw), Some(raw.parse::<u64>().unwrap()), "{raw}");
        }
        for raw in [
            "",
            "18446744073709551615",
            "-1",
            "+1",
            "1.0",
            "1e3",
            "1a",
            "/",
            ":",
            " 1",
            "null",
        ] {
            assert_eq!(plain_u64(raw), None, "{raw}");
        }
    }

    /// The unescaping as it was first written, a character at a time: the reference the
    /// run-copying one is held to.
    fn unescape_by_chars(s: &str) -> Cow<'_, str> {
        let inner = s
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(s);
        if !inner.contains('\\') {
            return Cow::Borrowed(inner);
        }
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.char_indices();
        let hex = |at: usize| {
            inner
                .get(at..at + 4)
                .and_then(|h| u32::from_str_radix(h, 16).ok())
        };
        while let Some((i, c)) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next().map(|(_, e)| e) {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('b') => out.push('\u{8}'),
                Some('f') => out.push('\u{c}'),
                Some('u') => {
                    let Some(hi) = hex(i + 2) else { break };
                    for _ in 0..4 {
                        chars.next();
                    }
                    let mut code = hi;
                    if (0xD800..0xDC00).contains(&hi) && inner.get(i + 6..i + 8) == Some("\\u") {
                        if let Some(lo) = hex(i + 8).filter(|lo| (0xDC00..0xE000).contains(lo)) {
                            code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                            for _ in 0..6 {
                                chars.next();
                            }
                        }
                    }
                    out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                }
                Some(other) => out.push(other),
                None => break,
            }
        }
        Cow::Owned(out)
    }

    #[test]
    fn unescape_copies_runs_as_the_reference_reads_characters() {
        let cases = [
            r#""plain""#,
            r#""a\nb""#,
            r#""GET /x 200 5 ms\n""#,
            r#""\"q\" \\ \/ \b\f\r\t""#,
            r#""é\u00e9\ud83d\ude00 end""#,
            r#""\ud800""#,
            r#""\ud800\u0041""#,
            r#""\udc00\ud800""#,
            r#""\u12""#,
            r#""tail\""#,
            r#""\x\é""#,
            r#""\u+123x""#,
            r#""\ud83d\ude0""#,
            r#""ok\u0041\u00""#,
            "no quotes \\n",
            r#""""#,
            r#""\\""#,
            r#""é\"é""#,
        ];
        for c in cases {
            assert_eq!(unescape(c), unescape_by_chars(c), "{c}");
        }
    }

    fn ok(s: &str) -> bool {
        validate(s.as_bytes()).is_ok()
    }

    #[test]
    fn accepts_what_serde_json_accepts_and_rejects_the_rest() {
        let cases = [
            "0",
            "-0",
            "1.5e10",
            "-12.0E-3",
            "1E+2",
            "true",
            "false",
            "null",
            r#""""#,
            r#""a\"b\\c\/\b\f\n\r\t\u00e9\ud83d\ude00""#,
            r#""\ud800""#,
            "[]",
            "{}",
            " [1, [2, [3]], {\"a\": {\"b\": []}}] ",
            r#"{"a":1,"a":2}"#,
            "\"é\u{1F600}\"",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "tru",
            "nul",
            "[1,]",
            "[,1]",
            "{\"a\"}",
            "{\"a\":}",
            "{a:1}",
            "{\"a\":1,}",
            "[1 2]",
            "\"a",
            "\"\\x\"",
            "\"\\u12\"",
            "\"a\u{1}b\"",
            "[1]]",
            "{}{}",
            "",
            "   ",
            "[",
            "{\"a\":1",
            "\"\\",
            "NaN",
            "Infinity",
            "[1,\n2\t]\r\n",
            "\"\u{7f}\"",
            "1.0e+",
            "-a",
        ];
        for c in cases {
            let serde = serde_json::from_str::<serde::de::IgnoredAny>(c).is_ok();
            assert_eq!(ok(c), serde, "{c:?}");
        }
        assert!(validate(b"\"\xff\"").is_err(), "invalid UTF-8");
    }

    /// `b` with each edit applied: at a position (modulo the length), a byte of `table`
    /// put in place of the one there (0), inserted (1), or the one there removed (2).
    fn damage(b: &mut Vec<u8>, edits: &[(usize, u8, u8)], table: &[u8]) {
        for &(at, op, byte) in edits {
            let at = at % (b.len() + 1);
            let byte = table[byte as usize % table.len()];
            match op {
                0 if at < b.len() => b[at] = byte,
                1 => b.insert(at, byte),
                _ if at < b.len() => {
                    b.remove(at);
                }
                _ => {}
            }
        }
    }

    proptest::proptest! {
        /// On JSON texts with a byte changed, inserted or removed, the validator agrees with
        /// serde_json (at depths serde_json's recursion limit allows), and the walks agree
        /// with a tree on what is valid.
        #[test]
        fn agrees_with_serde_json_on_damaged_texts(
            v in json_value(),
            edits in proptest::collection::vec((proptest::prelude::any::<usize>(), 0u8..3, proptest::prelude::any::<u8>()), 0..3),
        ) {
            let mut b = serde_json::to_vec(&v).unwrap();
            damage(&mut b, &edits, b"{}[]\",:0-eE.tfn \\u\x01");
            // As a raw value (what was kept before this scanner): numbers out of f64's range
            // are valid JSON, as serde_json says of them.
            let serde = serde_json::from_slice::<&serde_json::value::RawValue>(&b);
            let ours = validate(&b);
            proptest::prop_assert_eq!(ours.is_ok(), serde.is_ok(), "{}", String::from_utf8_lossy(&b));
            let tree = serde_json::from_slice::<serde_json::Value>(&b);
            if let (Ok((text, tape)), Ok(tree)) = (ours, tree) {
                proptest::prop_assert_eq!(walk_to_tree(Doc::new(text, &tape), text), tree);
            }
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z\\\"\u{0}-\u{1f}é😀]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 80, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::vec(("[a-z\"]{0,70}", inner), 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A tree made by walking validated text (keys unescaped, scalars by serde_json).
    fn walk_to_tree(d: Doc, v: &str) -> serde_json::Value {
        use serde_json::Value;
        match v.as_bytes()[0] {
            b'{' => Value::Object(
                d.members(v)
                    .map(|(k, c)| (unescape(k).into_owned(), walk_to_tree(d, c)))
                    .collect(),
            ),
            b'[' => Value::Array(d.items(v).map(|c| walk_to_tree(d, c)).collect()),
            b'"' => Value::String(unescape(v).into_owned()),
            _ => serde_json::from_str(v).unwrap(),
        }
    }

    #[test]
    fn deep_nesting_uses_no_call_stack() {
        let deep = "[".repeat(1_000_000) + &"]".repeat(1_000_000);
        assert!(ok(&deep));
        assert!(!ok(&deep[..deep.len() - 1]));
    }

    /// Numbers as the validator first read them, a byte at a time: the reference the
    /// eight-digits-at-a-time reading is held to, end and error offset alike.
    fn number_by_bytes(b: &[u8], mut i: usize) -> Result<usize, Invalid> {
        let digits = |b: &[u8], mut i: usize| {
            let from = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            (i, i > from)
        };
        let bad = |offset| {
            Err(Invalid {
                offset,
                what: "invalid number",
            })
        };
        let start = i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = digits(b, i).0,
            _ => return bad(start),
        }
        if b.get(i) == Some(&b'.') {
            let (j, any) = digits(b, i + 1);
            if !any {
                return bad(i);
            }
            i = j;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            let mut j = i + 1;
            if matches!(b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            let (j, any) = digits(b, j);
            if !any {
                return bad(i);
            }
            i = j;
        }
        Ok(i)
    }

    /// Every text of up to four bytes from the characters that matter to a number, and
    /// runs of up to 40 digits with any of them (or a byte next to the digits in ASCII, or
    /// one above 0x7f) anywhere: read to the same end, or refused at the same offset, as
    /// the reference reads them; and whole texts accepted as serde_json accepts them.
    #[test]
    fn numbers_read_as_the_reference_reads_them() {
        let alphabet: &[u8] = b"0019-+.eE/:a \xff";
        let mut texts: Vec<Vec<u8>> = vec![Vec::new()];
        let mut last = texts.clone();
        for _ in 0..4 {
            last = last
                .iter()
                .flat_map(|t| {
                    alphabet.iter().map(move |&c| {
                        let mut t = t.clone();
                        t.push(c);
                        t
                    })
                })
                .collect();
            texts.extend(last.iter().cloned());
        }
        for n in 1..=40 {
            let run: Vec<u8> = (0..n).map(|k| b'1' + (k % 9) as u8).collect();
            for at in 0..=n {
                for &c in b"./:e-a,}\x80\xff 0" {
                    let mut t = run.clone();
                    t.insert(at, c);
                    texts.push(t.clone());
                    texts.push([b"-".as_slice(), &t].concat());
                    texts.push([b"0.".as_slice(), &t].concat());
                    texts.push([b"1e".as_slice(), &t].concat());
                }
            }
        }
        for t in &texts {
            for from in 0..t.len().min(3) {
                assert_eq!(
                    number(t, from),
                    number_by_bytes(t, from),
                    "{:?} from {from}",
                    String::from_utf8_lossy(t)
                );
            }
            let serde = serde_json::from_slice::<&serde_json::value::RawValue>(t).is_ok();
            assert_eq!(
                validate(t).is_ok(),
                serde,
                "{:?}",
                String::from_utf8_lossy(t)
            );
        }
    }

    /// Raw JSON text (not written by serde_json): strings with every escape, valid and
    /// lone surrogates, multi-byte characters and runs longer than a 64-byte block;
    /// numbers at the edges of every reading (signs, zeros, exponents, 8 digits and
    /// around, beyond u64 and f64); whitespace of every kind between tokens.
    fn raw_json() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        const NUMBERS: &[&str] = &[
            "0",
            "-0",
            "0.0",
            "-0.0e-0",
            "1E+2",
            "2e-3",
            "1e400",
            "-1e-400",
            "1234567",
            "12345678",
            "123456789",
            "1764086502063",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "1.7976931348623157e308",
            "5e-324",
            "0.1234567890123",
        ];
        const PIECES: &[&str] = &[
            "a",
            "é",
            "😀",
            "\\\"",
            "\\\\",
            "\\/",
            "\\b",
            "\\f",
            "\\n",
            "\\r",
            "\\t",
            "\\u00e9",
            "\\uD83D\\uDE00",
            "\\ud800",
            "\\uDFFF",
            "\u{7f}",
            "GET /api/items/637 200 55 ms",
            "{}[],:",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        ];
        const SPACES: &[&str] = &["", "", "", " ", "\n", "\t ", "\r\n  "];
        let string = proptest::collection::vec(proptest::sample::select(PIECES), 0..5)
            .prop_map(|p| format!("\"{}\"", p.concat()));
        let leaf = prop_oneof![
            proptest::sample::select(NUMBERS).prop_map(str::to_owned),
            proptest::sample::select(&["true", "false", "null"][..]).prop_map(str::to_owned),
            string.clone(),
        ];
        let ws = proptest::sample::select(SPACES);
        leaf.prop_recursive(5, 64, 6, move |inner| {
            let item =
                (ws.clone(), inner.clone(), ws.clone()).prop_map(|(a, v, b)| format!("{a}{v}{b}"));
            prop_oneof![
                proptest::collection::vec(item.clone(), 0..6)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                proptest::collection::vec((string.clone(), ws.clone(), item), 0..6).prop_map(
                    |members| {
                        let m: Vec<String> = members
                            .iter()
                            .map(|(k, w, v)| format!("{k}{w}:{v}"))
                            .collect();
                        format!("{{{}}}", m.join(","))
                    }
                ),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Raw texts, whole or damaged (a byte changed, inserted or removed: structure,
        /// escapes, digits, control bytes, bytes that are not UTF-8), at any offset from
        /// a 64-byte block: accepted exactly when serde_json accepts them, and read by the
        /// walks as serde_json reads them.
        #[test]
        fn agrees_with_serde_json_on_raw_and_damaged_texts(
            text in raw_json(),
            pad in 0usize..70,
            edits in proptest::collection::vec((proptest::prelude::any::<usize>(), 0u8..3, proptest::prelude::any::<u8>()), 0..3),
        ) {
            let mut b = format!("{}{text}{}", " ".repeat(pad), " ".repeat(pad % 7)).into_bytes();
            damage(&mut b, &edits, b"{}[]\",:0-+eE.tfnu\\/ \t\n\x00\x1f\x7f\x80\xc3\xed\xff");
            let serde = serde_json::from_slice::<&serde_json::value::RawValue>(&b);
            let ours = validate(&b);
            proptest::prop_assert_eq!(ours.is_ok(), serde.is_ok(), "{}", String::from_utf8_lossy(&b));
            match ours {
                Ok((text, tape)) => {
                    for &(s, e) in &tape {
                        proptest::prop_assert_eq!(skip(text.as_bytes(), s as usize), e as usize);
                    }
                    if let Ok(tree) = serde_json::from_slice::<serde_json::Value>(&b) {
                        proptest::prop_assert_eq!(walk_to_tree(Doc::new(text, &tape), text), tree);
                    }
                }
                Err(e) => proptest::prop_assert!(e.offset <= b.len()),
            }
        }
    }

    proptest::proptest! {
        /// Texts validated one after another remembering their first inner object (texts
        /// that share it, whole or damaged around it or inside it, at other places, inside
        /// strings, nested deeper, longer than what is remembered) give exactly what plain
        /// validation gives: the value, the tape, or the error and its offset.
        #[test]
        fn remembering_validates_as_plain_validation(
            inner in raw_json(),
            texts in proptest::collection::vec((0u8..6, raw_json(), proptest::collection::vec((proptest::prelude::any::<usize>(), 0u8..3, proptest::prelude::any::<u8>()), 0..2)), 1..8),
        ) {
            let object = format!("{{\"pm_id\":0,\"name\":\"web\",\"x\":{inner}}}");
            let mut tape = Tape::new();
            for (shape, other, edits) in texts {
                let text = match shape {
                    0 => format!("{{\"process\":{object},\"data\":{other},\"at\":1}}"),
                    1 => format!("[{object},{other}]"),
                    2 => format!("{{\"a\":{other},\"process\":{object}}}"),
                    3 => format!("{{\"s\":\"{}\",\"p\":{object}}}", object.replace('"', "\\\"")),
                    4 => format!("[[{object}],{object}]"),
                    _ => format!("{{\"process\":{object}{other}}}"),
                };
                let mut b = text.into_bytes();
                damage(&mut b, &edits, b"{}[]\",:0 \\\x01\xff");
                let plain = validate(&b);
                let remembering = validate_into_remembering(&b, &mut tape).map(|t| (t, tape.clone()));
                proptest::prop_assert_eq!(remembering, plain, "{}", String::from_utf8_lossy(&b));
            }
        }
    }

    /// An app's output lines, validated one after another remembering their `process`
    /// object: each one's tape is the one plain validation makes, whether the object is the
    /// last one's or another app's, long enough to be taped or not, first or not.
    #[test]
    fn output_lines_remembering_their_process_tape_as_plainly() {
        let web = r#"{"pm_id":0,"name":"web","rev":null,"namespace":"default"}"#;
        let api = r#"{"pm_id":1,"name":"api","rev":null,"namespace":"default","x":{"nested":"deep enough to be taped"}}"#;
        let short = r#"{"pm_id":2}"#;
        let mut tape = Tape::new();
        for process in [web, web, api, api, web, short, short, api, api] {
            for line in [
                format!(r#"{{"process":{process},"data":"GET /x 200 5 ms\n","at":1764086502063}}"#),
                format!(r#"{{"data":"x","at":1,"process":{process}}}"#),
                format!(r#"  {{"process":{process},"data":"y"}} "#),
            ] {
                let got = validate_into_remembering(line.as_bytes(), &mut tape).unwrap();
                let (want, want_tape) = validate(line.as_bytes()).unwrap();
                assert_eq!((got, &tape), (want, &want_tape), "{line}");
            }
        }
    }

    /// Errors at depth, after long strings and numbers, and in the last bytes of a text
    /// (fewer than a block) are told at their byte.
    #[test]
    fn errors_deep_and_at_the_end_say_where() {
        let n = 100_000;
        let deep = "[".repeat(n) + "1,]" + &"]".repeat(n);
        assert_eq!(
            validate(deep.as_bytes()),
            Err(Invalid {
                offset: n + 2,
                what: "expected a value"
            })
        );
        let long = format!("{{\"a\":\"{}\",\"b\":12345678901234567x}}", "y".repeat(100));
        let at = long.find('x').unwrap();
        assert_eq!(
            validate(long.as_bytes()),
            Err(Invalid {
                offset: at,
                what: "expected ',' or '}'"
            })
        );
        for len in 60..140 {
            let mut t = format!("[\"{}\u{1}\"]", "z".repeat(len));
            assert_eq!(
                validate(t.as_bytes()),
                Err(Invalid {
                    offset: len + 2,
                    what: "control character in a string"
                }),
                "{len}"
            );
            t.truncate(len + 2);
            assert_eq!(
                validate(t.as_bytes()),
                Err(Invalid {
                    offset: len + 2,
                    what: "unterminated string"
                }),
                "{len}"
            );
        }
    }

    #[test]
    fn errors_say_where() {
        let e = validate(br#"{"a": [1, 2,, 3]}"#).unwrap_err();
        assert_eq!(e.offset, 12);
        assert_eq!(e.what, "expected a value");
    }

    #[test]
    fn walks_find_members_items_and_ends() {
        let t = r#"{ "a" : "x\"}y" , "b":[1,{"c":"]"}, "d"], "e\u0041":{}, "n":-1.5e3}"#;
        assert!(ok(t));
        let bare = Doc::new(t, &[]);
        let m: Vec<_> = bare.members(t).collect();
        let (text, tape) = validate(format!("  {t}\n").as_bytes())
            .map(|(x, tp)| (x.to_owned(), tp))
            .unwrap();
        assert_eq!(text, t);
        assert_eq!(
            tape,
            vec![(0, t.len() as u32)],
            "only containers of 64 bytes or more"
        );
        assert_eq!(Doc::new(t, &tape).members(t).collect::<Vec<_>>(), m);
        assert_eq!(
            m,
            vec![
                (r#""a""#, r#""x\"}y""#),
                (r#""b""#, r#"[1,{"c":"]"}, "d"]"#),
                (r#""e\u0041""#, "{}"),
                (r#""n""#, "-1.5e3"),
            ]
        );
        let it: Vec<_> = bare.items(m[1].1).collect();
        assert_eq!(it, vec!["1", r#"{"c":"]"}"#, r#""d""#]);
        assert_eq!(Doc::new("[ ]", &[]).items("[ ]").count(), 0);
        assert_eq!(Doc::new("{ }", &[]).members("{ }").count(), 0);
        assert_eq!(unescape(m[2].0), "eA");
        assert_eq!(
            unescape(r#""\ud83d\ude00 \ud800 \n""#),
            "\u{1F600} \u{FFFD} \n"
        );
        assert!(matches!(unescape(r#""plain""#), Cow::Borrowed("plain")));
    }

    #[test]
    fn the_tape_gives_the_same_walks_as_scanning() {
        let long = "x".repeat(70);
        let t = format!(
            r#"{{"a":{{"b":["{long}",{{"c":"{long}"}},[]],"d":{{}}}},"e":[[["{long}"]]],"f":"}}"}}"#
        );
        let (text, tape) = validate(t.as_bytes()).unwrap();
        assert!(tape.len() >= 5, "{tape:?}");
        for &(s, e) in &tape {
            assert_eq!(skip(text.as_bytes(), s as usize), e as usize);
            assert!(e as usize - s as usize >= TAPE_MIN);
        }
        let bare = Doc::new(text, &[]);
        let taped = Doc::new(text, &tape);
        fn walk(d: Doc, v: &str, out: &mut Vec<String>) {
            if v.starts_with('{') {
                for (k, c) in d.members(v) {
                    out.push(k.to_owned());
                    walk(d, c, out);
                }
            } else if v.starts_with('[') {
                for c in d.items(v) {
                    walk(d, c, out);
                }
            } else {
                out.push(v.to_owned());
            }
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        walk(bare, text, &mut a);
        walk(taped, text, &mut b);
        assert_eq!(a, b);
        let inner = taped.members(text).next().unwrap().1;
        let sub = taped.tape_of(inner);
        let (mut c, mut d) = (Vec::new(), Vec::new());
        walk(Doc::new(inner, &sub), inner, &mut c);
        walk(Doc::new(inner, &[]), inner, &mut d);
        assert_eq!(c, d);
        assert!(!sub.is_empty());
    }

    proptest::proptest! {
        /// A spliced text's shifted tape walks it as scanning it does.
        #[test]
        fn spliced_tapes_walk_as_scanning(v in json_value(), picks in proptest::collection::vec(proptest::prelude::any::<u16>(), 0..6), long in proptest::prelude::any::<bool>()) {
            let text = serde_json::to_string(&v).unwrap();
            let (text, tape) = validate(text.as_bytes()).unwrap();
            // Scalars of the text, in order, to replace.
            fn scalars<'a>(d: Doc<'a>, v: &'a str, out: &mut Vec<&'a str>) {
                match v.as_bytes()[0] {
                    b'{' => d.members(v).for_each(|(_, c)| scalars(d, c, out)),
                    b'[' => d.items(v).for_each(|c| scalars(d, c, out)),
                    _ => out.push(v),
                }
            }
            let doc = Doc::new(text, &tape);
            let mut all = Vec::new();
            scalars(doc, text, &mut all);
            let mut chosen: Vec<usize> = picks.iter().filter(|_| !all.is_empty()).map(|p| *p as usize % all.len()).collect();
            chosen.sort();
            chosen.dedup();
            let with = if long { format!("\"{}\"", "z".repeat(90)) } else { "1".to_owned() };
            let edits: Vec<_> = chosen.iter().map(|&i| {
                let at = doc.offset(all[i]);
                Edit { range: at..at + all[i].len(), with: with.as_str().into(), tape: Tape::new().into() }
            }).collect();
            let (new, new_tape) = doc.splice(&edits);
            proptest::prop_assert!(validate(new.as_bytes()).is_ok());
            proptest::prop_assert_eq!(walk_to_tree(Doc::new(&new, &new_tape), &new), walk_to_tree(Doc::new(&new, &[]), &new));
            for &(s, e) in &new_tape {
                proptest::prop_assert_eq!(skip(new.as_bytes(), s as usize), e as usize);
            }
        }
    }

    /// The spliced text's tape as `Doc::splice` made it before its one-pass merge (each
    /// container tested against the edits by binary search, the edits' tapes appended and
    /// the whole sorted): the reference the merge is held to.
    fn splice_tape_reference(d: &Doc, edits: &[Edit]) -> Tape {
        let mut out_len = 0usize;
        let mut at = 0;
        let mut placed = Tape::new();
        for e in edits {
            out_len += e.range.start - at;
            let base = out_len as u32;
            placed.extend(e.tape.iter().map(|&(s, t)| (s + base, t + base)));
            out_len += e.with.len();
            at = e.range.end;
        }
        let mut ends = Vec::new();
        let mut sum = 0isize;
        for e in edits {
            sum += e.with.len() as isize - e.range.len() as isize;
            ends.push((e.range.end, sum));
        }
        let shift = |p: usize| {
            let k = ends.partition_point(|&(end, _)| end <= p);
            if k == 0 {
                p
            } else {
                (p as isize + ends[k - 1].1) as usize
            }
        };
        let inside = |p: usize| {
            let k = edits.partition_point(|e| e.range.end <= p);
            edits.get(k).is_some_and(|e| e.range.start <= p)
        };
        let mut tape: Tape = d
            .tape
            .iter()
            .filter(|&&(s, _)| !inside(s as usize))
            .map(|&(s, e)| (shift(s as usize) as u32, shift(e as usize) as u32))
            .collect();
        tape.extend(placed);
        tape.sort_unstable_by_key(|e| e.0);
        tape
    }

    proptest::proptest! {
        /// Values of any kind (scalars, objects, arrays) replaced by a scalar or by a JSON
        /// text with its own tape: the one-pass merge gives the reference's tape, in start
        /// order, each entry a container's true end.
        #[test]
        fn spliced_tapes_merge_as_the_reference_sorts(v in json_value(), picks in proptest::collection::vec(proptest::prelude::any::<u16>(), 0..8), big in proptest::prelude::any::<bool>()) {
            let text = serde_json::to_string(&v).unwrap();
            let (text, tape) = validate(text.as_bytes()).unwrap();
            fn values<'a>(d: Doc<'a>, v: &'a str, out: &mut Vec<&'a str>) {
                out.push(v);
                match v.as_bytes()[0] {
                    b'{' => d.members(v).for_each(|(_, c)| values(d, c, out)),
                    b'[' => d.items(v).for_each(|c| values(d, c, out)),
                    _ => {}
                }
            }
            let doc = Doc::new(text, &tape);
            let mut all = Vec::new();
            values(doc, text, &mut all);
            // Chosen values, in order, none inside another.
            let mut chosen: Vec<(usize, usize)> = picks
                .iter()
                .map(|p| all[*p as usize % all.len()])
                .map(|v| (doc.offset(v), doc.offset(v) + v.len()))
                .collect();
            chosen.sort();
            let mut edits: Vec<Edit> = Vec::new();
            let (with, with_tape) = if big {
                let w = serde_json::json!({"env": {"A": "x".repeat(40), "B": [1, 2, {"c": "y".repeat(40)}]}}).to_string();
                let t = validate(w.as_bytes()).unwrap().1;
                (w, t)
            } else {
                ("1".to_owned(), Tape::new())
            };
            for (s, e) in chosen {
                if edits.last().is_some_and(|l| s < l.range.end) {
                    continue;
                }
                edits.push(Edit { range: s..e, with: with.as_str().into(), tape: with_tape.clone().into() });
            }
            let (new, new_tape) = doc.splice(&edits);
            proptest::prop_assert_eq!(&new_tape, &splice_tape_reference(&doc, &edits));
            proptest::prop_assert!(new_tape.windows(2).all(|w| w[0].0 < w[1].0));
            for &(s, e) in &new_tape {
                proptest::prop_assert_eq!(skip(new.as_bytes(), s as usize), e as usize);
            }
        }
    }

    /// What the walk finds in each item of an array, when every item is an object of one
    /// member; None otherwise.
    fn single_members_walked<'a>(d: Doc<'a>, v: &'a str) -> Option<Vec<(&'a str, &'a str)>> {
        d.items(v)
            .map(|item| {
                if !item.starts_with('{') {
                    return None;
                }
                let mut m = d.members(item);
                match (m.next(), m.next()) {
                    (Some(kv), None) => Some(kv),
                    _ => None,
                }
            })
            .collect()
    }

    proptest::proptest! {
        /// Reading the items' single members from compact bytes gives what the walk gives,
        /// or says the text is not so written: never something else. Compact messages as
        /// pm2-trace stores them are read from their bytes.
        #[test]
        fn single_members_read_as_walked(items in proptest::collection::vec(("[a-z\"]{0,4}", json_value(), 1usize..3), 0..5), spaced in proptest::prelude::any::<bool>()) {
            let text = serde_json::to_string(&items.iter().map(|(k, v, n)| {
                let mut m = serde_json::Map::new();
                for i in 0..*n {
                    m.insert(format!("{k}{}", "x".repeat(i)), v.clone());
                }
                serde_json::Value::Object(m)
            }).collect::<Vec<_>>()).unwrap();
            let text = if spaced { text.replace(',', " , ").replace(':', ": ") } else { text };
            let (text, tape) = validate(text.as_bytes()).unwrap();
            for d in [Doc::new(text, &tape), Doc::new(text, &[])] {
                let read: Result<Vec<_>, ()> = d.single_members(text).collect();
                let walked = single_members_walked(d, text);
                match read {
                    Ok(read) => proptest::prop_assert_eq!(Some(read), walked),
                    Err(()) => proptest::prop_assert!(spaced || walked.is_none(), "{}", text),
                }
            }
        }
    }

    #[test]
    fn compact_messages_are_read_from_their_bytes() {
        for t in [
            r#"[{"s":"log:out"},{"j":{"process":{"pm_id":0,"name":"web"},"data":"x\n","at":1}}]"#,
            r#"[{"j":[1,{"a":"}"}]},{"s":"a\"]}"},{"b64":"AAE="}]"#,
            "[]",
        ] {
            let (text, tape) = validate(t.as_bytes()).unwrap();
            let d = Doc::new(text, &tape);
            let read: Result<Vec<_>, ()> = d.single_members(text).collect();
            assert_eq!(read.ok(), single_members_walked(d, text), "{t}");
        }
        for not_compact in [
            r#"[ {"s":"x"}]"#,
            r#"[{"s": "x"}]"#,
            r#"[{"s":"x","j":1}]"#,
            "[1]",
            "[ ]",
        ] {
            let (text, tape) = validate(not_compact.as_bytes()).unwrap();
            let read: Result<Vec<_>, ()> = Doc::new(text, &tape).single_members(text).collect();
            assert!(read.is_err(), "{not_compact}");
        }
    }

    #[test]
    fn deep_big_containers_tape_in_linear_time() {
        let n = 200_000;
        let deep = "[".repeat(n) + &"0,".repeat(40) + "0" + &"]".repeat(n);
        let (_, tape) = validate(deep.as_bytes()).unwrap();
        assert!(!tape.is_empty());
    }

    #[test]
    fn walks_stop_at_the_end_of_text_that_is_not_json() {
        for t in [
            "{\"a",
            "{\"a\":",
            "{\"a\":[1,",
            "[\"",
            "{\"a\":1,\"b",
            "[{[{",
            "{\"\\",
        ] {
            let _ = Doc::new(t, &[]).members(t).count();
            let _ = Doc::new(t, &[]).items(t).count();
            let _ = skip(t.as_bytes(), 0);
        }
    }

    #[test]
    fn plain_runs_stop_at_every_special_byte() {
        for n in 0..40 {
            for special in [b'"', b'\\', 0x1f, 0x00, 0x0a] {
                for from in [0, 1, 7] {
                    let mut v = vec![b'a'; n + from];
                    v.push(special);
                    v.extend_from_slice(b"zzzzzzzzzz");
                    assert_eq!(plain_run_end(&v, from), n + from, "{n} {special} {from}");
                }
            }
            // Bytes that are not special: space, DEL, UTF-8 continuation and lead bytes.
            for plain in [b' ', 0x7f, 0x80, 0xc3, 0xff, b'!', b'#', b']'] {
                let mut v = vec![plain; n];
                v.push(b'"');
                assert_eq!(plain_run_end(&v, 0), n, "{n} {plain}");
            }
            assert_eq!(plain_run_end(&vec![b'a'; n], 0), n);
            let mut v = "é".repeat(n).into_bytes();
            v.push(b'"');
            assert_eq!(plain_run_end(&v, 0), v.len() - 1);
        }
    }

    /// Texts told ASCII sixteen bytes at a time are those `is_ascii` tells, whatever their
    /// length and wherever their one non-ASCII byte is; validation reads the others as
    /// `from_utf8` does.
    #[test]
    fn ascii_is_told_as_is_ascii_tells() {
        for len in 0..200 {
            let plain = vec![b'a'; len];
            assert!(all_ascii(&plain), "{len}");
            for at in 0..len {
                for high in [0x80u8, 0xc3, 0xff] {
                    let mut v = plain.clone();
                    v[at] = high;
                    assert!(!all_ascii(&v), "{len} {at}");
                    assert_eq!(utf8(&v).ok(), std::str::from_utf8(&v).ok(), "{len} {at}");
                }
            }
        }
        assert_eq!(utf8("\"é\"".as_bytes()), Ok("\"é\""));
        assert_eq!(
            validate(b"\"\xff\""),
            Err(Invalid {
                offset: 1,
                what: "invalid UTF-8"
            })
        );
    }

    /// The validator's block masks find what [`plain_run_end`] finds, from every position of
    /// texts around two blocks long with special bytes anywhere (at block edges, at the end,
    /// none), whatever block was looked at before.
    #[test]
    fn block_masks_find_the_runs_plain_scans_find() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in (0..140).chain([191, 192, 193, 255, 256, 257]) {
            for _ in 0..20 {
                let v: Vec<u8> = (0..len)
                    .map(|_| match next() % 24 {
                        0 => b'"',
                        1 => b'\\',
                        2 => (next() % 0x20) as u8,
                        3 => 0xc3,
                        4 => 0x7f,
                        _ => b'a' + (next() % 26) as u8,
                    })
                    .collect();
                let mut sp = Specials::new();
                for from in 0..=len {
                    // Jump about as validation does: forwards mostly, sometimes back.
                    let at = if next() % 5 == 0 {
                        (next() as usize) % (len + 1)
                    } else {
                        from
                    };
                    assert_eq!(
                        sp.run_end(&v, at),
                        plain_run_end(&v, at),
                        "{len} {at} {v:?}"
                    );
                }
            }
        }
    }
}
