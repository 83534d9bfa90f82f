//! `explain`'s result as text (what was read, the findings most severe first, then a short
//! timeline of the lines that matter) or as one JSON document
//! `{"source": {...}, "events": [...], "findings": [...]}` whose findings are the same
//! objects as `replay --json`'s.
//!
//! Everything that comes from a log, an app's name or a path is passed through the
//! terminal sanitiser before it is printed as text (JSON escapes control characters).

use crate::explain::{Explained, Kept};
use crate::views::terminal_safe;

fn sanitize(s: &str) -> String {
    terminal_safe(s).into_owned()
}
use crate::rules::Finding;
use crate::views::json::EntryJson;
use crate::views::text::{format_entry, wall_datetime, TextView};
use serde::Serialize;
use std::io::{self, Write};

/// Lines of the short timeline in text.
pub const TEXT_TIMELINE: usize = 40;

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "?".into())
}

fn clean_finding(f: &Finding) -> Finding {
    let mut f = f.clone();
    f.summary = sanitize(&f.summary);
    f.app = f.app.as_deref().map(sanitize);
    f.chain = f.chain.iter().map(|c| sanitize(c)).collect();
    f.remedy = sanitize(&f.remedy);
    for e in &mut f.evidence {
        e.what = sanitize(&e.what);
    }
    f
}

/// The text report; coloured when `is_terminal` and `NO_COLOR` is unset.
pub fn write_text<W: Write>(x: &Explained, mut out: W, is_terminal: bool) -> io::Result<W> {
    let color = crate::views::text::color_wanted(is_terminal);
    let s = &x.source;
    let d = &s.daemon;
    let daemon = match d.pid {
        Some(p) => format!(
            "pm2 {} daemon pid {p}{}",
            d.version.as_deref().unwrap_or("?"),
            d.started_ms
                .map(|m| format!(", started {}", when(m)))
                .unwrap_or_default()
        ),
        None => format!(
            "no running daemon{}",
            d.version
                .as_deref()
                .map(|v| format!(" (pm2.log names pm2 {v})"))
                .unwrap_or_default()
        ),
    };
    writeln!(
        out,
        "pm2-trace explain: {daemon}, PM2_HOME {} ({})",
        sanitize(&d.pm2_home.display().to_string()),
        d.pm2_home_from
    )?;
    let state = match &s.state {
        crate::sources::daemon_state::StateOrigin::Daemon { .. } => {
            "the daemon's state from getMonitorData (read-only)".to_owned()
        }
        crate::sources::daemon_state::StateOrigin::Dump { path, saved_ms } => format!(
            "no daemon answered: the state from {} (saved {})",
            sanitize(&path.display().to_string()),
            saved_ms.map(when).unwrap_or_else(|| "?".into())
        ),
        crate::sources::daemon_state::StateOrigin::None => {
            "no daemon answered and there is no dump.pm2: logs only".into()
        }
    };
    writeln!(
        out,
        "read: logs from {} ({}) to now; {state}",
        when(s.since_ms),
        s.since_from
    )?;
    writeln!(out, "times: {}", s.precision)?;
    let read: Vec<String> = s
        .logs
        .files
        .iter()
        .filter(|f| !f.skipped_older)
        .map(|f| {
            format!(
                "{} ({} lines, {} bytes{}{})",
                sanitize(&f.path.display().to_string()),
                f.lines,
                f.bytes_read,
                if f.compressed { ", gzip" } else { "" },
                f.problem
                    .as_deref()
                    .map(|p| format!("; {}", sanitize(p)))
                    .unwrap_or_default()
            )
        })
        .collect();
    let older = s.logs.files.iter().filter(|f| f.skipped_older).count();
    writeln!(
        out,
        "files: {}{}",
        if read.is_empty() {
            "none".to_owned()
        } else {
            read.join(", ")
        },
        if older > 0 {
            format!("; {older} rotated file(s) older than the window not opened")
        } else {
            String::new()
        }
    )?;
    for a in &s.apps {
        let mut parts = vec![format!(
            "{}",
            a.status
                .as_deref()
                .map(sanitize)
                .unwrap_or_else(|| "status unknown".into())
        )];
        parts.push(match a.pid {
            Some(p) if p > 0 => format!("pid {p}"),
            Some(_) => "no pid".into(),
            None => "pid unknown".into(),
        });
        if let Some(r) = a.restart_time {
            parts.push(format!("restart_time {r}"));
        }
        for p in &a.paths {
            let state = match (p.exists, &p.error) {
                (Some(true), _) => "exists".to_owned(),
                (Some(false), _) => format!(
                    "MISSING (from {})",
                    sanitize(p.missing_from.as_deref().unwrap_or("?"))
                ),
                (None, Some(e)) => format!("cannot tell: {}", sanitize(e)),
                (None, None) => "cannot tell".into(),
            };
            let links = if p.symlinks.is_empty() {
                String::new()
            } else {
                format!(" [{}]", sanitize(&p.symlink_words()))
            };
            parts.push(format!("{} {} {state}{links}", p.what, sanitize(&p.path)));
        }
        if !a.earlier_alive.is_empty() {
            parts.push(format!(
                "{} process(es) of earlier generations alive",
                a.earlier_alive.len()
            ));
        }
        for h in &a.holders {
            parts.push(format!(
                "{} held now by {} ({})",
                sanitize(&h.addr),
                sanitize(&h.holder.describe()),
                h.relation
            ));
        }
        writeln!(
            out,
            "app {}:{}: {}",
            sanitize(&a.name),
            a.pm_id.map_or("?".into(), |i| i.to_string()),
            parts.join("; ")
        )?;
    }
    if !s.not_read.is_empty() {
        writeln!(out, "could not read:")?;
        for n in &s.not_read {
            writeln!(out, "  - {}", sanitize(n))?;
        }
    }
    let findings: Vec<Finding> = x.findings.iter().map(clean_finding).collect();
    let mut tv = TextView::new(out, &x.info, color);
    tv.findings(&findings)?;
    let mut out = tv.into_inner();
    writeln!(out)?;
    let n = x.kept.len();
    if n == 0 {
        writeln!(
            out,
            "Timeline: no pm2.log line about these apps in the window (times: +s since {}).",
            wall_datetime(&x.info, x.info.mono_ref_ns)
        )?;
    } else {
        writeln!(
            out,
            "Timeline: the {} line(s) that matter{} (+s since {}; whole seconds where the log has them):",
            n.min(TEXT_TIMELINE),
            if n > TEXT_TIMELINE {
                format!(", the last {TEXT_TIMELINE} of {n}")
            } else {
                String::new()
            },
            wall_datetime(&x.info, x.info.mono_ref_ns)
        )?;
        for k in &x.kept[n.saturating_sub(TEXT_TIMELINE)..] {
            let file = s
                .logs
                .files
                .get(k.file as usize)
                .and_then(|f| f.path.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            writeln!(
                out,
                "{}  [{}@{}]",
                sanitize(&format_entry(&x.info, &k.entry, false)),
                sanitize(&file),
                k.offset
            )?;
        }
    }
    out.flush()?;
    let _ = color;
    Ok(out)
}

#[derive(Serialize)]
struct KeptJson<'a> {
    #[serde(flatten)]
    entry: EntryJson<'a>,
    file: String,
    offset: u64,
    precision: crate::sources::logs::stamp::LinePrecision,
}

impl<'a> KeptJson<'a> {
    fn new(x: &'a Explained, k: &'a Kept) -> KeptJson<'a> {
        KeptJson {
            entry: EntryJson::new(&x.info, &k.entry),
            file: x
                .source
                .logs
                .files
                .get(k.file as usize)
                .map(|f| f.path.display().to_string())
                .unwrap_or_default(),
            offset: k.offset,
            precision: k.precision,
        }
    }
}

#[derive(Serialize)]
struct Doc<'a> {
    source: &'a crate::explain::SourceInfo,
    events: Vec<KeptJson<'a>>,
    findings: &'a [Finding],
}

/// The JSON document.
pub fn write_json<W: Write>(x: &Explained, mut out: W) -> io::Result<W> {
    let doc = Doc {
        source: &x.source,
        events: x.kept.iter().map(|k| KeptJson::new(x, k)).collect(),
        findings: &x.findings,
    };
    serde_json::to_writer(&mut out, &doc).map_err(io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(out)
}
