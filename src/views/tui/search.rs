//! `/` search: the next shown row whose words contain the query (ASCII case ignored).

use super::app::App;

/// Whether `hay` contains `needle` (already lower-case), ignoring ASCII case.
pub(crate) fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    if hay.len() < needle.len() {
        return false;
    }
    let up = first.to_ascii_uppercase();
    let last = hay.len() - needle.len();
    let mut i = 0;
    while i <= last {
        let b = hay[i];
        if (b == first || b == up) && hay[i + 1..i + needle.len()].eq_ignore_ascii_case(rest) {
            return true;
        }
        i += 1;
    }
    false
}

/// The list position of the next (or previous) match after position `start`, wrapping.
pub(crate) fn find(app: &App, query: &str, start: usize, forward: bool) -> Option<usize> {
    let n = app.vis_len();
    if n == 0 || query.is_empty() {
        return None;
    }
    let needle = query.to_ascii_lowercase();
    let needle = needle.as_bytes();
    let hit = |p: usize| contains_ci(app.model.text(app.vis_row(p)).as_bytes(), needle);
    for k in 1..=n {
        let p = if forward {
            (start + k) % n
        } else {
            (start + n - (k % n)) % n
        };
        if hit(p) {
            return Some(p);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::contains_ci;

    #[test]
    fn case_insensitive() {
        assert!(contains_ci(b"restartProcessId web:0", b"restartprocessid"));
        assert!(contains_ci(b"abc", b""));
        assert!(!contains_ci(b"ab", b"abc"));
        assert!(contains_ci(b"xxERRORED", b"errored"));
        assert!(!contains_ci(b"erro", b"errored"));
    }
}
