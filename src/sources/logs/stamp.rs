//! Timestamps at the start of log lines, and how precise they are.
//!
//! - `pm2.log`: `<stamp>: PM2 <level>: <message>`; the stamp is `PM2_LOG_DATE_FORMAT`,
//!   by default `YYYY-MM-DDTHH:mm:ss` in the daemon's local time: second precision.
//! - App logs written with `--time` or `log_date_format` (pm2's `ProcessContainer.js` /
//!   `ForkMode.js`): `<dayjs(log_date_format)>: <line>`; `--time` is `YYYY-MM-DDTHH:mm:ss`.
//!   With `log_type: json` each line is `{"message":..,"timestamp":..}`.
//! - Without either, app lines carry no time at all: they are *undated*.
//!
//! Stamps without a zone are read in this process's local time zone (`TZ`), which must be
//! the daemon's for the times to be right; explain says so.

use chrono::{DateTime, Local, NaiveDateTime, TimeZone};
use serde::{Deserialize, Serialize};

/// How precisely a line's own timestamp places it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinePrecision {
    /// Milliseconds (or finer) in the stamp.
    Millisecond,
    /// Whole seconds: pm2.log's default, and `--time`.
    Second,
    /// Whole minutes.
    Minute,
    /// No timestamp: the line cannot be placed on the timeline.
    Undated,
}

impl LinePrecision {
    pub fn words(self) -> &'static str {
        match self {
            LinePrecision::Millisecond => "millisecond",
            LinePrecision::Second => "second",
            LinePrecision::Minute => "minute",
            LinePrecision::Undated => "undated",
        }
    }
}

/// A parsed stamp: ms since the Unix epoch, and its precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub ms: i64,
    pub precision: LinePrecision,
}

/// Longest stamp tried.
const MAX_STAMP: usize = 40;

/// Formats with a zone or offset in them.
const ZONED: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%Y-%m-%d %H:%M:%S%.f %:z",
    "%Y-%m-%d %H:%M:%S%.f %z",
    "%Y-%m-%dT%H:%M%:z",
    "%Y-%m-%d %H:%M %:z",
    "%d/%m/%Y %H:%M:%S %:z",
    "%d/%m/%Y %H:%M %:z",
];

/// Formats in local time.
const NAIVE: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%d/%m/%Y %H:%M:%S%.f",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S%.f",
];

fn precision_of(s: &str) -> LinePrecision {
    // Seconds are present when the time part has two colons.
    let time = s.split(['T', ' ']).nth(1).unwrap_or("");
    let colons = time
        .split(['+', '-', 'Z', ' '])
        .next()
        .unwrap_or("")
        .matches(':')
        .count();
    if colons < 2 {
        LinePrecision::Minute
    } else if time.contains('.') || time.contains(',') {
        LinePrecision::Millisecond
    } else {
        LinePrecision::Second
    }
}

/// The default `YYYY-MM-DDTHH:mm:ss` (or with a space), parsed by hand: it is on every line
/// of a large pm2.log.
fn fast_default(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> Option<u32> {
        let mut v = 0u32;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as u32;
        }
        Some(v)
    };
    chrono::NaiveDate::from_ymd_opt(n(0..4)? as i32, n(5..7)?, n(8..10)?)?.and_hms_opt(
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    )
}

fn local_ms(t: &NaiveDateTime) -> Option<i64> {
    Local
        .from_local_datetime(t)
        .earliest()
        .map(|d| d.timestamp_millis())
}

/// Parse one stamp as pm2 or dayjs would print it. `None` when it is not a date.
pub fn parse_stamp(s: &str) -> Option<Stamp> {
    let s = s.trim();
    if s.len() < 10 || s.len() > MAX_STAMP || !s.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    if let Some(t) = fast_default(s) {
        return Some(Stamp {
            ms: local_ms(&t)?,
            precision: LinePrecision::Second,
        });
    }
    let precision = precision_of(s);
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(Stamp {
            ms: d.timestamp_millis(),
            precision,
        });
    }
    if let Some(rest) = s.strip_suffix('Z') {
        if let Some(t) = NAIVE
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(rest, f).ok())
        {
            return Some(Stamp {
                ms: t.and_utc().timestamp_millis(),
                precision,
            });
        }
    }
    if let Some(d) = ZONED
        .iter()
        .find_map(|f| DateTime::parse_from_str(s, f).ok())
    {
        return Some(Stamp {
            ms: d.timestamp_millis(),
            precision,
        });
    }
    let t = NAIVE
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())?;
    Some(Stamp {
        ms: local_ms(&t)?,
        precision,
    })
}

/// Remembers the last stamp text and its value: consecutive lines of a log mostly share
/// their second, and this makes them cost one comparison.
#[derive(Debug, Default)]
pub struct StampCache {
    text: String,
    value: Option<Stamp>,
}

impl StampCache {
    pub fn parse(&mut self, s: &str) -> Option<Stamp> {
        if !self.text.is_empty() && self.text == s {
            return self.value;
        }
        self.text.clear();
        self.text.push_str(s);
        self.value = parse_stamp(s);
        self.value
    }
}

/// Split an app log line into its leading stamp (pm2's `<stamp>: ` prefix, or a JSON line's
/// `timestamp`) and the rest. `None` when the line has no stamp.
pub fn split_app_stamp<'a>(line: &'a str, cache: &mut StampCache) -> Option<(Stamp, &'a str)> {
    if line.starts_with('{') {
        return None;
    }
    // The stamp ends at the first `: ` whose left side parses as a date (dates contain
    // `: ` never, but `HH:mm:ss` contains `:`).
    let head = &line[..floor_char(line, MAX_STAMP + 2)];
    let mut from = 0;
    while let Some(pos) = head[from..].find(": ") {
        let end = from + pos;
        if let Some(st) = cache.parse(&line[..end]) {
            return Some((st, &line[end + 2..]));
        }
        from = end + 1;
    }
    None
}

/// A JSON log line (`log_type: json`): its stamp and message.
pub fn json_line(line: &str) -> Option<(Option<Stamp>, String)> {
    if !line.starts_with('{') || line.len() > 1 << 20 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let msg = v
        .get("message")?
        .as_str()?
        .trim_end_matches('\n')
        .to_owned();
    let st = v
        .get("timestamp")
        .and_then(|t| t.as_str())
        .and_then(parse_stamp);
    Some((st, msg))
}

/// The largest char boundary at or below `i`.
pub fn floor_char(s: &str, i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    let mut i = i;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn pm2_default_is_local_seconds() {
        let st = parse_stamp("2026-11-25T15:34:44").unwrap();
        assert_eq!(st.precision, LinePrecision::Second);
        let want = local_ms(&fast_default("2026-11-25T15:34:44").unwrap()).unwrap();
        assert_eq!(st.ms, want);
    }

    #[test]
    fn zoned_and_fractional() {
        let st = parse_stamp("2026-11-25T15:34:44.123Z").unwrap();
        assert_eq!(st.ms, utc("2026-11-25T15:34:44.123Z"));
        assert_eq!(st.precision, LinePrecision::Millisecond);
        let st = parse_stamp("2026-11-25 15:34:44.5 +01:00").unwrap();
        assert_eq!(st.ms, utc("2026-11-25T14:34:44.5Z"));
        assert_eq!(st.precision, LinePrecision::Millisecond);
        let st = parse_stamp("25/11/2026 15:35 +00:00").unwrap();
        assert_eq!(st.ms, utc("2026-11-25T15:35:00Z"));
        assert_eq!(st.precision, LinePrecision::Minute);
        let st = parse_stamp("2026-11-25 15:34:44").unwrap();
        assert_eq!(st.precision, LinePrecision::Second);
    }

    #[test]
    fn not_dates() {
        for s in [
            "",
            "hello",
            "12",
            "2026-13-45T99:99:99",
            "Error",
            "9999999999999",
        ] {
            assert_eq!(parse_stamp(s), None, "{s}");
        }
    }

    #[test]
    fn app_prefixes() {
        let mut c = StampCache::default();
        let (st, rest) =
            split_app_stamp("2026-11-25T15:34:44: Error: listen EADDRINUSE: x", &mut c).unwrap();
        assert_eq!(st.precision, LinePrecision::Second);
        assert_eq!(rest, "Error: listen EADDRINUSE: x");
        let (st, rest) = split_app_stamp("2026-11-25 15:34:44.120 +00:00: hi", &mut c).unwrap();
        assert_eq!(st.ms, utc("2026-11-25T15:34:44.120Z"));
        assert_eq!(rest, "hi");
        assert!(split_app_stamp("Error: listen EADDRINUSE: 1.2.3.4:80", &mut c).is_none());
        assert!(split_app_stamp("    at Server.listen (node:net:1)", &mut c).is_none());
    }

    #[test]
    fn json_lines() {
        let (st, msg) = json_line(
            r#"{"message":"boom\n","timestamp":"2026-11-25T15:34:44.120Z","type":"err"}"#,
        )
        .unwrap();
        assert_eq!(st.unwrap().ms, utc("2026-11-25T15:34:44.120Z"));
        assert_eq!(msg, "boom");
        assert!(json_line("{not json").is_none());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let mut c = StampCache::default();
            let _ = parse_stamp(&s);
            let _ = split_app_stamp(&s, &mut c);
            let _ = json_line(&s);
        }

        #[test]
        fn near_dates_never_panic(
            y in 0u32..10000, mo in 0u32..20, d in 0u32..40, h in 0u32..30, mi in 0u32..70,
            sep in prop::sample::select(vec!["T", " ", "/", ""]),
            tail in "[0-9:.+Z ]{0,10}",
        ) {
            let s = format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}{tail}");
            let _ = parse_stamp(&s);
        }
    }
}
