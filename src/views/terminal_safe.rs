//! **Untrusted text is shown, never obeyed.** [`terminal_safe`] is the one function every
//! view (text replay, the live view while recording, the TUI, `explain`) passes text
//! through before it reaches a terminal, when that text came from outside pm2-trace: app
//! output and names, paths, command lines, environment keys, daemon log lines, RPC
//! arguments, capture headers. Captures are handed around; whoever wrote into one must not
//! be able to set the reader's window title, write their clipboard (OSC 52), plant
//! hyperlinks (OSC 8), move the cursor, ring the bell or reorder what they read with a
//! bidirectional override.
//!
//! Colour comes only from pm2-trace itself: views add their own escape sequences around
//! text that has already been made safe. `--json` output keeps the exact text (JSON
//! escapes control characters itself).

use std::borrow::Cow;

/// `s` with every character that a terminal would act on replaced by a visible stand-in:
///
/// - ESC as `\e` (so `ESC ] 0 ; title BEL` shows as `\e]0;title^G`);
/// - the other C0 controls (tab and newline included) and DEL in caret notation: `^G`,
///   `^I`, `^J`, `^?`;
/// - C1 controls (U+0080 to U+009F, e.g. the one-byte CSI U+009B) as `<U+009B>`;
/// - bidirectional controls (U+202A to U+202E, U+2066 to U+2069, and the marks U+200E,
///   U+200F, U+061C) as `<U+202E>`.
///
/// Everything else is kept as is; text with nothing to replace is returned borrowed.
pub fn terminal_safe(s: &str) -> Cow<'_, str> {
    // Printable ASCII (most text) has nothing to replace: told by its bytes alone.
    if printable_ascii(s.as_bytes()) || !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        push_safe(&mut out, c);
    }
    Cow::Owned(out)
}

/// Whether every byte of `b` is printable ASCII (0x20 to 0x7e): eight bytes at a time (the
/// TUI passes every row's words through here when it loads a capture).
fn printable_ascii(b: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut words = b.chunks_exact(8);
    for w in words.by_ref() {
        let w = u64::from_ne_bytes(w.try_into().expect("eight bytes"));
        // A byte below 0x20 (borrowing when 0x20 is taken from it), or one above 0x7e (its
        // high bit set once 1 is added to it, or already set): each test is exact for
        // "some byte is", which is all that is asked.
        let below = w.wrapping_sub(0x20 * ONES) & !w & HIGHS;
        let above = (w.wrapping_add(ONES) | w) & HIGHS;
        if below | above != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|b| (0x20..0x7f).contains(b))
}

/// [`terminal_safe`] for text whose line breaks are meant (multi-line detail): `\n` is
/// kept, everything else as in [`terminal_safe`].
pub fn terminal_safe_lines(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c != '\n' && needs_escape(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if c == '\n' {
            out.push(c);
        } else {
            push_safe(&mut out, c);
        }
    }
    Cow::Owned(out)
}

/// Whether `c` must not reach a terminal raw.
pub(crate) fn needs_escape(c: char) -> bool {
    matches!(c,
        '\0'..='\x1f' | '\x7f' | '\u{80}'..='\u{9f}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

fn push_safe(out: &mut String, c: char) {
    use std::fmt::Write;
    match c {
        '\x1b' => out.push_str("\\e"),
        '\0'..='\x1f' => {
            out.push('^');
            out.push((c as u8 + b'@') as char);
        }
        '\x7f' => out.push_str("^?"),
        c if needs_escape(c) => {
            let _ = write!(out, "<U+{:04X}>", c as u32);
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time test says what the byte-at-a-time one says, for every byte at
    /// every position of a word and of the tail.
    #[test]
    fn printable_ascii_reads_words_as_bytes() {
        for len in [1usize, 7, 8, 9, 16, 21] {
            for at in 0..len {
                for bad in 0..=255u8 {
                    let mut b = vec![b'a'; len];
                    b[at] = bad;
                    let want = b.iter().all(|c| (0x20..0x7f).contains(c));
                    assert_eq!(printable_ascii(&b), want, "{len} {at} {bad:#x}");
                }
            }
        }
        assert!(printable_ascii(b""));
        assert!(printable_ascii(b" ~ plain words, 0-9 ~ "));
    }

    #[test]
    fn plain_text_is_borrowed() {
        let s = "web:0 restarted, pid 123 — ok ✓ 日本";
        assert!(matches!(terminal_safe(s), Cow::Borrowed(_)));
        assert_eq!(terminal_safe(s), s);
    }

    #[test]
    fn escape_sequences_become_visible() {
        assert_eq!(terminal_safe("\x1b]0;PWNED\x07"), "\\e]0;PWNED^G");
        assert_eq!(
            terminal_safe("\x1b]52;c;aGVsbG8=\x07"),
            "\\e]52;c;aGVsbG8=^G"
        );
        assert_eq!(
            terminal_safe("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"),
            "\\e]8;;http://x\\e\\link\\e]8;;\\e\\"
        );
        assert_eq!(terminal_safe("\x1b[31mred\x1b[0m"), "\\e[31mred\\e[0m");
        assert_eq!(terminal_safe("a\tb\r\nc\x7f\0"), "a^Ib^M^Jc^?^@");
        assert_eq!(terminal_safe("\u{9b}2J"), "<U+009B>2J");
        assert_eq!(terminal_safe("evil\u{202e}txt.exe"), "evil<U+202E>txt.exe");
        assert_eq!(terminal_safe("\u{2066}x\u{2069}"), "<U+2066>x<U+2069>");
    }

    #[test]
    fn nothing_a_terminal_acts_on_survives() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let safe = terminal_safe(&all);
        assert!(!safe.chars().any(needs_escape));
        assert!(!safe.contains('\x1b') && !safe.contains('\x07'));
        // Printable text around the stand-ins is unchanged.
        assert!(safe.contains("abcdefghijklmnopqrstuvwxyz"));
    }

    #[test]
    fn line_breaks_kept_only_when_asked() {
        assert_eq!(terminal_safe_lines("a\nb\x1b[2J"), "a\nb\\e[2J");
        assert_eq!(terminal_safe_lines("a\r\nb"), "a^M\nb");
        assert!(matches!(terminal_safe_lines("a\nb"), Cow::Borrowed(_)));
    }
}
