//! Small text helpers: times and wrapping.

use crate::event::{CaptureInfo, MonoNs};
use crate::views::terminal_safe;

/// `+1.234s` since the capture started, or the UTC wall clock `16:01:42.865Z`, with
/// `decimals` digits of the second (0..=9).
pub(crate) fn fmt_time(info: &CaptureInfo, t: MonoNs, wall: bool, decimals: usize) -> String {
    fmt_time_f(info, t as f64, wall, decimals)
}

/// [`fmt_time`] for a time that may fall between nanoseconds or before zero.
pub(crate) fn fmt_time_f(info: &CaptureInfo, t: f64, wall: bool, decimals: usize) -> String {
    let decimals = decimals.min(9);
    let unit = 10f64.powi(9 - decimals as i32);
    if wall {
        let ns = info.wall_ref_ns as f64 + (t - info.mono_ref_ns as f64);
        let ns = (ns / unit).round() as i128 * unit as i128;
        let secs = ns.div_euclid(1_000_000_000) as i64;
        let sub = ns.rem_euclid(1_000_000_000) as u32;
        match chrono::DateTime::from_timestamp(secs, sub) {
            Some(dt) => {
                let frac = if decimals > 0 {
                    format!(".{:0width$}", sub / unit as u32, width = decimals)
                } else {
                    String::new()
                };
                format!("{}{frac}Z", dt.format("%H:%M:%S"))
            }
            None => "??:??:??Z".into(),
        }
    } else {
        let d = t - info.mono_ref_ns as f64;
        let sign = if d < 0.0 { "-" } else { "+" };
        let units = (d.abs() / unit).round() as u128;
        let per_sec = 10u128.pow(decimals as u32);
        if decimals > 0 {
            format!(
                "{sign}{}.{:0width$}s",
                units / per_sec,
                units % per_sec,
                width = decimals
            )
        } else {
            format!("{sign}{}s", units)
        }
    }
}

/// A duration in words: `250 µs`, `12 ms`, `1.5 s`, `3 min`.
pub(crate) fn fmt_span(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        trim(format!("{:.1}", ns / 1e3)) + " µs"
    } else if ns < 1e9 {
        trim(format!("{:.1}", ns / 1e6)) + " ms"
    } else if ns < 120e9 {
        trim(format!("{:.1}", ns / 1e9)) + " s"
    } else if ns < 7200e9 {
        trim(format!("{:.1}", ns / 60e9)) + " min"
    } else {
        trim(format!("{:.1}", ns / 3600e9)) + " h"
    }
}

fn trim(s: String) -> String {
    match s.strip_suffix(".0") {
        Some(t) => t.to_owned(),
        None => s,
    }
}

/// Break `text` into lines of at most `width` characters, at spaces when possible.
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(8);
    let mut out = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        let mut len = 0;
        for word in para.split(' ') {
            let wl = word.chars().count();
            if len > 0 && len + 1 + wl > width {
                out.push(std::mem::take(&mut line));
                len = 0;
            }
            if len > 0 {
                line.push(' ');
                len += 1;
            }
            if wl > width {
                // A word longer than the line: cut it.
                for c in word.chars() {
                    if len == width {
                        out.push(std::mem::take(&mut line));
                        len = 0;
                    }
                    line.push(c);
                    len += 1;
                }
            } else {
                line.push_str(word);
                len += wl;
            }
        }
        out.push(line);
    }
    out
}

/// Cut `s` to `width` characters, ending with `…` when cut.
///
/// Text is made terminal-safe first ([`terminal_safe`]): everything the TUI writes to the
/// screen with dynamic text goes through here or through [`super::doc::Doc::spans`].
pub(crate) fn fit(s: &str, width: usize) -> String {
    let s = &*terminal_safe(s);
    if s.chars().count() <= width {
        s.to_owned()
    } else if width == 0 {
        String::new()
    } else {
        let mut o: String = s.chars().take(width - 1).collect();
        o.push('…');
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let info = CaptureInfo {
            mono_ref_ns: 1_000_000_000,
            wall_ref_ns: 1_764_086_502_000_000_000,
            ..Default::default()
        };
        assert_eq!(fmt_time(&info, 2_234_567_890, false, 3), "+1.235s");
        assert_eq!(fmt_time(&info, 2_234_567_890, false, 6), "+1.234568s");
        assert_eq!(fmt_time(&info, 500_000_000, false, 1), "-0.5s");
        assert_eq!(fmt_time(&info, 2_234_567_890, false, 0), "+1s");
        assert_eq!(fmt_time(&info, 2_234_567_890, true, 3), "16:01:43.235Z");
    }

    #[test]
    fn wrapping() {
        assert_eq!(wrap("aaa bbb ccc", 8), vec!["aaa bbb", "ccc"]);
        assert_eq!(wrap("abcdefghijkl", 8), vec!["abcdefgh", "ijkl"]);
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fmt_span(2_500_000.0), "2.5 ms");
        assert_eq!(fmt_span(10e9), "10 s");
    }
}
