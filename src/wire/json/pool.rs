//! Large text buffers kept for reuse between the tap decoder, which makes a payload's text
//! ([`super::Json::parse`]), and the recorder loop, which redacts it ([`super::scan::Doc::splice`])
//! and drops it once written.
//!
//! A getMonitorData reply's text is megabytes; made in a fresh allocation each time, its
//! pages come from the kernel zeroed, one fault per page (half of the tap decoder's time at
//! 0.4 GB/s, and a fifth of the recorder loop's). Buffers given back here are taken again
//! warm. Only texts of at least [`POOL_MIN`] bytes use the pool (smaller ones are served
//! from the allocator's own warm pages), it holds at most [`POOL_BUFFERS`] buffers of at most
//! [`POOL_MAX_CAPACITY`] bytes and [`POOL_MAX_BYTES`] in all, [`trim`] frees what went
//! unused for a while (the recorder calls it twice a second), and a buffer taken is always
//! emptied first: a text only ever holds the bytes written into it after it was taken.

use crate::spare::Spare;
use std::sync::Mutex;

/// Texts shorter than this are allocated as usual.
pub(crate) const POOL_MIN: usize = 64 * 1024;
/// Buffers kept at most, and their bytes at most (the ones given back beyond are freed). The
/// recorder loop gives texts back in bursts (every event old enough, each turn of its loop:
/// 50 MB in 50 ms at 1 GB/s), while the tap decoder takes them one by one; and its reorder
/// window holds 200 ms of texts, two per redacted reply (hundreds of MB at 1 GB/s). Bounded
/// like the tap's copies in flight (256 MB): with 64 MB, at 0.5 GB/s the tap decoder's
/// fresh texts still faulted in zeroed pages (`clear_page_erms`, 505 samples against 307
/// at this bound, the recorder loop's 159 against 82, one interleaved pair of perf runs).
/// What a burst leaves is freed by [`trim`] within a second of the traffic's end.
const POOL_BUFFERS: usize = 256;
const POOL_MAX_BYTES: usize = 256 << 20;
/// The largest buffer kept (a bigger one is freed: memory held stays bounded).
const POOL_MAX_CAPACITY: usize = 32 << 20;

/// The buffers kept, and the sum of their capacities.
struct Pool {
    kept: Spare<String>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    kept: Spare::new(),
    bytes: 0,
});

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    fn take(&mut self) -> Option<String> {
        let s = self.kept.take();
        self.bytes -= s.as_ref().map_or(0, String::capacity);
        s
    }

    fn keep(&mut self, text: String) {
        let cap = text.capacity();
        if self.kept.len() < POOL_BUFFERS && self.bytes + cap <= POOL_MAX_BYTES {
            self.bytes += cap;
            self.kept.put(text);
        }
    }

    /// The buffers not taken since the last trim, to free (outside the lock).
    fn trim(&mut self) -> Vec<String> {
        let freed = self.kept.trim();
        self.bytes -= freed.iter().map(String::capacity).sum::<usize>();
        freed
    }
}

/// An empty string with room for `len` bytes: a kept buffer when `len` is large.
pub(crate) fn take(len: usize) -> String {
    if len >= POOL_MIN {
        let kept = pool().take();
        if let Some(mut s) = kept {
            s.clear();
            s.reserve(len);
            return s;
        }
    }
    String::with_capacity(len)
}

/// `text` in a buffer of its own (taken from the pool when large).
pub(crate) fn copy(text: &str) -> Box<str> {
    let mut s = take(text.len());
    s.push_str(text);
    // A pooled buffer is cut to the text's length; the allocator shrinks a large block in
    // place.
    s.into_boxed_str()
}

/// Keep `text`'s buffer for reuse, when it is worth keeping.
pub(crate) fn give(text: String) {
    let cap = text.capacity();
    if !(POOL_MIN..=POOL_MAX_CAPACITY).contains(&cap) {
        return;
    }
    pool().keep(text);
}

/// Free the buffers that were not taken since the last call (none the first time): call it
/// at a steady pace, so that what a burst of large payloads left is not held for good.
pub(crate) fn trim() {
    let freed = pool().trim();
    drop(freed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer given back and taken again holds only what is written after: a long text
    /// then a shorter one, never the first one's tail.
    #[test]
    fn a_reused_buffer_holds_only_the_new_text() {
        let long = "a".repeat(3 * POOL_MIN);
        let short = "b".repeat(POOL_MIN + 7);
        // Other tests may use the pool at the same time: whatever buffer comes back, the
        // text must be exactly the one copied.
        for _ in 0..2 * POOL_BUFFERS {
            give(String::from(&*copy(&long)));
        }
        for _ in 0..2 * POOL_BUFFERS {
            let c = copy(&short);
            assert_eq!(&*c, short.as_str());
            give(String::from(c));
        }
        let t = take(POOL_MIN);
        assert!(t.is_empty());
        assert!(t.capacity() >= POOL_MIN);
    }

    /// Through the users of the pool: a payload parsed, recycled, then a shorter one parsed
    /// and redacted (spliced) in reused buffers reads exactly as itself.
    #[test]
    fn payloads_in_reused_buffers_are_themselves() {
        let doc = |n: usize, fill: char| {
            let v: String = std::iter::repeat_n(fill, n).collect();
            format!("{{\"a\":\"{v}\",\"b\":[1,2,3]}}")
        };
        let long = super::super::Json::parse(doc(4 * POOL_MIN, 'x').as_bytes()).unwrap();
        long.recycle();
        let text = doc(POOL_MIN + 3, 'y');
        let mut short = super::super::Json::parse(text.as_bytes()).unwrap();
        assert_eq!(short.text(), text);
        assert_eq!(short.value()["b"], serde_json::json!([1, 2, 3]));
        let d = short.doc();
        let at = text.find("[1,2,3]").unwrap();
        let (spliced, tape) = d.splice(&[super::super::scan::Edit {
            range: at..at + 7,
            with: "\"z\"".into(),
            tape: std::sync::Arc::new([]),
        }]);
        assert_eq!(spliced, text.replace("[1,2,3]", "\"z\""));
        short.set_valid_text(spliced, Some(tape));
        assert_eq!(short.value()["b"], "z");
        assert!(short.text().starts_with("{\"a\":\"yyy"));
    }

    /// A trim frees the buffers that sat unused since the one before, and only those.
    #[test]
    fn trims_free_what_was_not_needed_since_the_last() {
        let mut p = Pool {
            kept: Spare::new(),
            bytes: 0,
        };
        for _ in 0..5 {
            p.keep(String::with_capacity(POOL_MIN));
        }
        assert!(
            p.trim().is_empty(),
            "nothing is known unused at the first trim"
        );
        p.take().unwrap();
        p.take().unwrap();
        p.keep(String::with_capacity(POOL_MIN));
        // Of the 5, at least 3 sat unused.
        assert_eq!(p.trim().len(), 3);
        assert_eq!(p.kept.len(), 1);
        assert_eq!(p.bytes, p.kept.iter().next().unwrap().capacity());
        assert_eq!(p.trim().len(), 1, "unused since the last trim");
        assert_eq!((p.kept.len(), p.bytes), (0, 0));
    }

    #[test]
    fn small_and_huge_buffers_are_not_kept() {
        let before = pool().kept.len();
        give(String::with_capacity(POOL_MIN - 1));
        give(String::with_capacity(POOL_MAX_CAPACITY + 1));
        assert!(pool().kept.len() <= before);
        let pool = pool();
        assert!(pool.bytes <= POOL_MAX_BYTES);
        assert_eq!(
            pool.bytes,
            pool.kept.iter().map(String::capacity).sum::<usize>()
        );
    }
}
