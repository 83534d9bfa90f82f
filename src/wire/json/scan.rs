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

/// Position of the first quote, backslash or control byte at or after `i` (or `b.len()`).
#[inline(always)]
fn plain_run_end(b: &[u8], mut i: usize) -> usize {
    while i + 8 <= b.len() {
        let w = u64::from_le_bytes(b[i..i + 8].try_into().expect("eight bytes"));
        let m = specials(w);
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && b[i] != b'"' && b[i] != b'\\' && b[i] >= 0x20 {
        i += 1;
    }
    i
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
fn string(b: &[u8], i: usize) -> Result<usize, Invalid> {
    let bad = |offset, what| Err(Invalid { offset, what });
    let mut i = i + 1;
    loop {
        i = plain_run_end(b, i);
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
    }
}

/// Validate the number starting at `i`; the position after it.
fn number(b: &[u8], mut i: usize) -> Result<usize, Invalid> {
    let digits = |b: &[u8], mut i: usize| {
        let from = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i, i > from)
    };
    let start = i;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(b, i).0,
        _ => {
            return Err(Invalid {
                offset: start,
                what: "invalid number",
            })
        }
    }
    if b.get(i) == Some(&b'.') {
        let (j, any) = digits(b, i + 1);
        if !any {
            return Err(Invalid {
                offset: i,
                what: "invalid number",
            });
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
            return Err(Invalid {
                offset: i,
                what: "invalid number",
            });
        }
        i = j;
    }
    Ok(i)
}

/// Validate one value starting at `i` (no leading whitespace); the position after it.
/// The bytes must already be known to be UTF-8 (strings are not checked for it here).
fn value_at(b: &[u8], i: usize) -> Result<usize, Invalid> {
    // Open containers: true for an object.
    let mut stack: Vec<bool> = Vec::new();
    let mut i = i;
    'value: loop {
        // A value starts at i.
        let end = match b.get(i) {
            Some(b'"') => string(b, i)?,
            Some(b'{') => {
                let j = skip_ws(b, i + 1);
                if b.get(j) == Some(&b'}') {
                    j + 1
                } else {
                    stack.push(true);
                    i = member_key(b, j)?;
                    continue 'value;
                }
            }
            Some(b'[') => {
                let j = skip_ws(b, i + 1);
                if b.get(j) == Some(&b']') {
                    j + 1
                } else {
                    stack.push(false);
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
            let Some(&object) = stack.last() else {
                return Ok(i);
            };
            let j = skip_ws(b, i);
            match (b.get(j), object) {
                (Some(b','), true) => {
                    i = member_key(b, skip_ws(b, j + 1))?;
                    continue 'value;
                }
                (Some(b','), false) => {
                    i = skip_ws(b, j + 1);
                    continue 'value;
                }
                (Some(b'}'), true) | (Some(b']'), false) => {
                    stack.pop();
                    i = j + 1;
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
fn member_key(b: &[u8], i: usize) -> Result<usize, Invalid> {
    if b.get(i) != Some(&b'"') {
        return Err(Invalid {
            offset: i,
            what: "expected a string key",
        });
    }
    let j = skip_ws(b, string(b, i)?);
    if b.get(j) != Some(&b':') {
        return Err(Invalid {
            offset: j,
            what: "expected ':'",
        });
    }
    Ok(skip_ws(b, j + 1))
}

/// Validate that `b` is exactly one JSON value, with optional whitespace around it; the
/// range of the value itself.
pub(crate) fn validate(b: &[u8]) -> Result<std::ops::Range<usize>, Invalid> {
    if let Err(e) = std::str::from_utf8(b) {
        return Err(Invalid {
            offset: e.valid_up_to(),
            what: "invalid UTF-8",
        });
    }
    let start = skip_ws(b, 0);
    let end = value_at(b, start)?;
    let rest = skip_ws(b, end);
    if rest != b.len() {
        return Err(Invalid {
            offset: rest,
            what: "trailing characters",
        });
    }
    Ok(start..end)
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

/// The end of the value starting at `i` (no leading whitespace) in validated text.
pub(crate) fn skip(b: &[u8], i: usize) -> usize {
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

/// The members of the object in validated text `t` (which starts with `{`): each key's raw
/// text (with its quotes) and its value's text.
pub(crate) fn members(t: &str) -> Members<'_> {
    Members {
        t,
        i: skip_ws(t.as_bytes(), 1),
    }
}

/// Iterator of [`members`].
pub(crate) struct Members<'a> {
    t: &'a str,
    i: usize,
}

impl<'a> Iterator for Members<'a> {
    /// (key with its quotes, value)
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        let b = self.t.as_bytes();
        if b.get(self.i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(b, self.i);
        let colon = skip_ws(b, key_end);
        let v = skip_ws(b, colon + 1);
        let v_end = skip(b, v);
        let key = self.t.get(self.i..key_end)?;
        let value = self.t.get(v..v_end)?;
        let next = skip_ws(b, v_end);
        self.i = if b.get(next) == Some(&b',') {
            skip_ws(b, next + 1)
        } else {
            b.len()
        };
        Some((key, value))
    }
}

/// The items of the array in validated text `t` (which starts with `[`).
pub(crate) fn items(t: &str) -> Items<'_> {
    Items {
        t,
        i: skip_ws(t.as_bytes(), 1),
    }
}

/// Iterator of [`items`].
pub(crate) struct Items<'a> {
    t: &'a str,
    i: usize,
}

impl<'a> Iterator for Items<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let b = self.t.as_bytes();
        if matches!(b.get(self.i), None | Some(b']')) {
            return None;
        }
        let end = skip(b, self.i);
        let item = self.t.get(self.i..end)?;
        let next = skip_ws(b, end);
        self.i = if b.get(next) == Some(&b',') {
            skip_ws(b, next + 1)
        } else {
            b.len()
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn deep_nesting_uses_no_call_stack() {
        let deep = "[".repeat(1_000_000) + &"]".repeat(1_000_000);
        assert!(ok(&deep));
        assert!(!ok(&deep[..deep.len() - 1]));
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
        let m: Vec<_> = members(t).collect();
        assert_eq!(
            m,
            vec![
                (r#""a""#, r#""x\"}y""#),
                (r#""b""#, r#"[1,{"c":"]"}, "d"]"#),
                (r#""e\u0041""#, "{}"),
                (r#""n""#, "-1.5e3"),
            ]
        );
        let it: Vec<_> = items(m[1].1).collect();
        assert_eq!(it, vec!["1", r#"{"c":"]"}"#, r#""d""#]);
        assert_eq!(items("[ ]").count(), 0);
        assert_eq!(members("{ }").count(), 0);
        assert_eq!(unescape(m[2].0), "eA");
        assert_eq!(
            unescape(r#""\ud83d\ude00 \ud800 \n""#),
            "\u{1F600} \u{FFFD} \n"
        );
        assert!(matches!(unescape(r#""plain""#), Cow::Borrowed("plain")));
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
            let _ = members(t).count();
            let _ = items(t).count();
            let _ = skip(t.as_bytes(), 0);
        }
    }

    #[test]
    fn plain_runs_stop_at_every_special_byte() {
        for n in 0..20 {
            for special in [b'"', b'\\', 0x1f, 0x00] {
                let mut v = vec![b'a'; n];
                v.push(special);
                v.extend_from_slice(b"zzzzzzzzzz");
                assert_eq!(plain_run_end(&v, 0), n);
            }
            let mut v = "é".repeat(n).into_bytes();
            v.push(b'"');
            assert_eq!(plain_run_end(&v, 0), v.len() - 1);
        }
    }
}
