//! The timeline as text: one line per entry, then the findings.
//!
//! ```text
//! +1.619s  15:34:44.479Z  rpc  web:0  restartProcessId web:0 -> new pid 22782 after 112 ms
//! ```
//!
//! Columns: time since the capture started, wall clock (UTC, `Z`), source, app, words.
//! Colour only when asked for ([`color_wanted`]: a terminal, and `NO_COLOR` unset), and only
//! pm2-trace's own: every piece of recorded text goes through [`terminal_safe`] first.

use crate::event::{CaptureInfo, MonoNs, Source, Stamped};
use crate::rules::{self, Finding, Severity};
use crate::timeline::{self, Entry, Timeline, Tone};
use crate::views::terminal_safe;
use std::io::{self, Write};

/// Whether to colour output: `is_terminal` and the `NO_COLOR` variable unset (or empty).
pub(crate) fn color_wanted(is_terminal: bool) -> bool {
    color_wanted_with(is_terminal, std::env::var_os("NO_COLOR"))
}

/// [`color_wanted`] with the value of `NO_COLOR` given.
pub(crate) fn color_wanted_with(is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

const RESET: &str = "\x1b[0m";

fn tone_color(t: Tone) -> &'static str {
    match t {
        Tone::Plain => "",
        Tone::Quiet => "\x1b[2m",
        Tone::Good => "\x1b[32m",
        Tone::Warn => "\x1b[33m",
        Tone::Bad => "\x1b[1;31m",
    }
}

fn source_color(s: Source) -> &'static str {
    match s {
        Source::Recorder => "\x1b[35m",
        Source::Rpc => "\x1b[36m",
        Source::Bus => "\x1b[34m",
        Source::Proc => "\x1b[33m",
        Source::Logs => "\x1b[34m",
    }
}

/// `+12.345s` (or `-0.002s` before the start).
pub(crate) fn rel_time(info: &CaptureInfo, t: MonoNs) -> String {
    crate::event::offset_text(t, info.mono_ref_ns)
}

/// `15:34:44.479Z`: the wall clock of `t`, UTC.
pub(crate) fn wall_time(info: &CaptureInfo, t: MonoNs) -> String {
    let mut s = String::with_capacity(13);
    push_wall_time(&mut s, info, t);
    s
}

/// [`wall_time`], appended to `out` (written by hand: chrono's formatter was a tenth of a
/// text replay; the same digits, milliseconds truncated as `%.3f` does).
fn push_wall_time(out: &mut String, info: &CaptureInfo, t: MonoNs) {
    use std::fmt::Write as _;
    let ns = info.wall_ns(t);
    let secs = ns.div_euclid(1_000_000_000) as i64;
    let sub = ns.rem_euclid(1_000_000_000) as u32;
    if chrono::DateTime::from_timestamp(secs, sub).is_none() {
        out.push_str("??:??:??.???Z");
        return;
    }
    let day = secs.rem_euclid(86_400);
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}.{:03}Z",
        day / 3600,
        day / 60 % 60,
        day % 60,
        sub / 1_000_000
    );
}

/// Full UTC date and time, for headers.
pub(crate) fn wall_datetime(info: &CaptureInfo, t: MonoNs) -> String {
    let ns = info.wall_ns(t);
    match chrono::DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000) as i64,
        ns.rem_euclid(1_000_000_000) as u32,
    ) {
        Some(dt) => dt.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
        None => "unknown date".into(),
    }
}

/// One entry as one line (no newline).
pub(crate) fn format_entry(info: &CaptureInfo, e: &Entry, color: bool) -> String {
    let mut line = String::new();
    push_entry(&mut line, &mut String::new(), info, e, color);
    line
}

/// [`format_entry`], appended to `out`; `scratch` is a buffer to reuse between calls.
fn push_entry(out: &mut String, scratch: &mut String, info: &CaptureInfo, e: &Entry, color: bool) {
    use std::fmt::Write as _;
    let rel = rel_time(info, e.t);
    let src = e.source.name();
    // The columns as `{rel:>9}  {wall}  {src:<8} {app:<12} {words}` would pad them.
    let pad = |out: &mut String, text: &str, width: usize| {
        let n = text.chars().count();
        out.extend(std::iter::repeat_n(' ', width.saturating_sub(n)));
    };
    pad(out, &rel, 9);
    out.push_str(&rel);
    out.push_str("  ");
    if color {
        out.push_str("\x1b[2m");
    }
    push_wall_time(out, info, e.t);
    if color {
        out.push_str(RESET);
    }
    out.push_str("  ");
    if color {
        out.push_str(source_color(e.source));
    }
    out.push_str(src);
    pad(out, src, 8);
    if color {
        out.push_str(RESET);
        out.push_str(" \x1b[1m");
    } else {
        out.push(' ');
    }
    scratch.clear();
    match &e.app {
        Some(a) => {
            let _ = write!(scratch, "{a}");
        }
        None => scratch.push('-'),
    }
    let app = terminal_safe(scratch);
    out.push_str(&app);
    pad(out, &app, 12);
    if color {
        out.push_str(RESET);
    }
    out.push(' ');
    let described = e.describe();
    let words = if described.contains(['\n', '\r']) {
        std::borrow::Cow::Owned(described.replace(['\n', '\r'], " "))
    } else {
        std::borrow::Cow::Borrowed(described.as_str())
    };
    let tc = if color { tone_color(e.tone()) } else { "" };
    out.push_str(tc);
    out.push_str(&terminal_safe(&words));
    if !tc.is_empty() {
        out.push_str(RESET);
    }
}

/// Writes a timeline as text, entry by entry, then the findings.
pub(crate) struct TextView<W: Write> {
    out: W,
    info: CaptureInfo,
    color: bool,
    entries: u64,
    /// The line being written, and a scratch buffer (kept to reuse their memory).
    line: String,
    scratch: String,
}

impl<W: Write> TextView<W> {
    pub(crate) fn new(out: W, info: &CaptureInfo, color: bool) -> TextView<W> {
        TextView {
            out,
            info: info.clone(),
            color,
            entries: 0,
            line: String::new(),
            scratch: String::new(),
        }
    }

    /// A few lines about the capture, and what the columns mean.
    /// The writer underneath (live views drain it after each entry).
    pub(crate) fn out_mut(&mut self) -> &mut W {
        &mut self.out
    }

    pub(crate) fn header(&mut self) -> io::Result<()> {
        let i = &self.info;
        let pm2 = i.pm2_version.as_deref().unwrap_or("unknown");
        let daemon = i
            .daemon_pid
            .map(|p| format!(", daemon pid {p}"))
            .unwrap_or_default();
        writeln!(
            self.out,
            "capture of pm2 {} at {}{daemon} on {}",
            terminal_safe(pm2),
            terminal_safe(&i.pm2_home),
            terminal_safe(&i.host)
        )?;
        writeln!(
            self.out,
            "started {}; times: +seconds since the start, wall clock UTC",
            wall_datetime(i, i.mono_ref_ns)
        )?;
        writeln!(self.out)
    }

    pub(crate) fn entry(&mut self, e: &Entry) -> io::Result<()> {
        self.entries += 1;
        self.line.clear();
        push_entry(&mut self.line, &mut self.scratch, &self.info, e, self.color);
        self.line.push('\n');
        self.out.write_all(self.line.as_bytes())
    }

    /// The findings, most severe first.
    pub(crate) fn findings(&mut self, findings: &[Finding]) -> io::Result<()> {
        let mut sorted: Vec<&Finding> = findings.iter().collect();
        sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));
        writeln!(self.out)?;
        if sorted.is_empty() {
            return writeln!(self.out, "No findings.");
        }
        writeln!(self.out, "Findings ({}):", sorted.len())?;
        for f in sorted {
            writeln!(self.out)?;
            self.finding(f)?;
        }
        Ok(())
    }

    fn finding(&mut self, f: &Finding) -> io::Result<()> {
        let (c, r) = if self.color {
            let c = match f.severity {
                Severity::Error => "\x1b[1;31m",
                Severity::Warning => "\x1b[1;33m",
                Severity::Info => "\x1b[1;36m",
            };
            (c, RESET)
        } else {
            ("", "")
        };
        let app = match (&f.app, f.pm_id) {
            (Some(a), Some(i)) => format!(" {a}:{i}"),
            (Some(a), None) => format!(" {a}"),
            (None, Some(i)) => format!(" #{i}"),
            (None, None) => String::new(),
        };
        writeln!(
            self.out,
            "{c}{}{r} [{}]{}: {}",
            f.severity.name().to_uppercase(),
            terminal_safe(&f.kind),
            terminal_safe(&app),
            terminal_safe(&f.summary)
        )?;
        if !f.chain.is_empty() {
            writeln!(self.out, "  what happened:")?;
            for (i, step) in f.chain.iter().enumerate() {
                writeln!(self.out, "    {}. {}", i + 1, terminal_safe(step))?;
            }
        }
        if !f.evidence.is_empty() {
            writeln!(self.out, "  evidence:")?;
            for ev in &f.evidence {
                writeln!(
                    self.out,
                    "    {:>9}  {}  {:<8} {}",
                    rel_time(&self.info, ev.t),
                    wall_time(&self.info, ev.t),
                    ev.source.name(),
                    terminal_safe(&ev.what)
                )?;
            }
        }
        if !f.remedy.is_empty() {
            writeln!(self.out, "  remedy: {}", terminal_safe(&f.remedy))?;
        }
        Ok(())
    }

    pub(crate) fn into_inner(self) -> W {
        self.out
    }
}

/// Replay `events` as text to `out`: header, one line per entry as it comes, then the
/// findings. Returns the timeline and the findings (for exit codes).
pub(crate) fn replay_text<W: Write>(
    info: &CaptureInfo,
    events: impl IntoIterator<Item = Stamped>,
    out: W,
    color: bool,
) -> io::Result<(Timeline, Vec<Finding>)> {
    let mut view = TextView::new(out, info, color);
    view.header()?;
    let tl = timeline::replay(info, events, |e| view.entry(e))?;
    let findings = rules::analyze(&tl);
    view.findings(&findings)?;
    view.out.flush()?;
    Ok((tl, findings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Evidence;
    use crate::timeline::tests::load_fixture;
    use crate::timeline::EntryKind;

    #[test]
    fn wall_time_as_chrono_writes_it() {
        let mut info = CaptureInfo {
            mono_ref_ns: 0,
            ..load_fixture("pm2-7.0.4").0
        };
        for wall in [
            0i128,
            1_764_086_502_123_456_789,
            86_399_999_999_999,
            -1_500_000_000,
        ] {
            info.wall_ref_ns = wall;
            let dt = chrono::DateTime::from_timestamp(
                wall.div_euclid(1_000_000_000) as i64,
                wall.rem_euclid(1_000_000_000) as u32,
            )
            .unwrap();
            assert_eq!(wall_time(&info, 0), dt.format("%H:%M:%S%.3fZ").to_string());
        }
    }

    /// The entries of a fixture from the note `pm2 <cmd>` to the next command, as text.
    fn render_section(fixture: &str, cmd: &str) -> String {
        let (info, events) = load_fixture(fixture);
        let mut out = Vec::new();
        let mut on = false;
        timeline::replay(&info, events, |e| {
            if let EntryKind::Note { text, .. } = &e.kind {
                if text.starts_with("pm2 ") {
                    on = text == cmd;
                }
            }
            if on {
                out.push(format_entry(&info, e, false));
            }
            Ok::<(), ()>(())
        })
        .unwrap();
        out.join("\n")
    }

    #[test]
    fn snapshot_restart_704() {
        insta::assert_snapshot!(render_section("pm2-7.0.4", "pm2 restart web"));
    }

    #[test]
    fn snapshot_restart_543() {
        insta::assert_snapshot!(render_section("pm2-5.4.3", "pm2 restart web"));
    }

    #[test]
    fn snapshot_sigkill_704() {
        insta::assert_snapshot!(render_section("pm2-7.0.4", "pm2 restart stubborn"));
    }

    #[test]
    fn snapshot_errored_restart_704() {
        insta::assert_snapshot!(render_section("pm2-7.0.4", "pm2 restart crash"));
    }

    #[test]
    fn colour_only_when_wanted() {
        assert!(color_wanted_with(true, None));
        assert!(color_wanted_with(true, Some("".into())));
        assert!(!color_wanted_with(true, Some("1".into())));
        assert!(!color_wanted_with(false, None));
        let (info, events) = load_fixture("pm2-7.0.4");
        let mut plain = Vec::new();
        let mut coloured = Vec::new();
        timeline::replay(&info, events.into_iter().take(200), |e| {
            plain.push(format_entry(&info, e, false));
            coloured.push(format_entry(&info, e, true));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert!(plain.iter().all(|l| !l.contains('\x1b')));
        assert!(coloured.iter().all(|l| l.contains("\x1b[")));
    }

    #[test]
    fn times() {
        let info = CaptureInfo {
            wall_ref_ns: 1_795_620_935_753_000_000,
            mono_ref_ns: 1_000_000_000,
            ..Default::default()
        };
        assert_eq!(rel_time(&info, 13_345_678_901), "+12.345s");
        assert_eq!(rel_time(&info, 998_000_000), "-0.002s");
        assert_eq!(wall_time(&info, 1_000_000_000), "15:35:35.753Z");
        assert_eq!(
            wall_datetime(&info, 1_000_000_000),
            "2026-11-25 15:35:35.753 UTC"
        );
    }

    #[test]
    fn whole_replay_with_findings() {
        let (info, events) = load_fixture("pm2-5.4.3");
        let (tl, findings) = replay_text(&info, events, Vec::new(), false).unwrap();
        // The fixture's crash app loops into errored (the rules' own tests check the rest).
        assert!(findings.iter().any(|f| f.kind == "crash-loop-errored"));
        assert!(tl.apps.len() == 3);
        let mut view = TextView::new(Vec::new(), &info, false);
        let f = |sev, kind: &str| Finding {
            kind: kind.into(),
            severity: sev,
            app: Some("web".into()),
            pm_id: Some(0),
            summary: format!("{kind} happened."),
            chain: vec!["first this".into(), "then that".into()],
            evidence: vec![Evidence {
                t: info.mono_ref_ns + 1_500_000_000,
                source: Source::Bus,
                what: "web:0 exited".into(),
            }],
            remedy: "do the other thing".into(),
        };
        view.findings(&[
            f(Severity::Info, "a-info"),
            f(Severity::Error, "b-error"),
            f(Severity::Warning, "c-warning"),
        ])
        .unwrap();
        let text = String::from_utf8(view.into_inner()).unwrap();
        insta::assert_snapshot!(text);
        let mut empty = TextView::new(Vec::new(), &info, false);
        empty.findings(&[]).unwrap();
        assert_eq!(
            String::from_utf8(empty.into_inner()).unwrap(),
            "\nNo findings.\n"
        );
    }
}
