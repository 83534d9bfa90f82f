//! What the detail pane shows: a row with its decoded message (and, for a request, the
//! reply too), or a finding with its chain, evidence and remedy.

use super::doc::{Cls, Doc};
use super::model::{Model, RowKind};
use super::util::{fmt_time, wrap};
use crate::event::{Direction, Event, Stamped, WireMessage};
use crate::rules::{Finding, Severity};
use crate::timeline::Tone;
use crate::wire::amp::Arg;
use serde_json::Value;

/// A stored AMP message as JSON: JSON arguments as they are, strings as strings, raw bytes
/// summarised.
pub(crate) fn message_json(m: &WireMessage) -> Value {
    Value::Array(
        m.0.args
            .iter()
            .map(|a| match a {
                Arg::Json(v) => v.value().clone(),
                Arg::Str(s) => Value::String(s.clone()),
                Arg::Raw(b) => {
                    use base64::Engine as _;
                    let shown = &b[..b.len().min(96)];
                    Value::String(format!(
                        "<{} raw bytes, base64: {}{}>",
                        b.len(),
                        base64::engine::general_purpose::STANDARD.encode(shown),
                        if b.len() > shown.len() { "…" } else { "" }
                    ))
                }
            })
            .collect(),
    )
}

fn tone_cls(t: Tone) -> Cls {
    match t {
        Tone::Plain => Cls::Head,
        Tone::Quiet => Cls::Head,
        Tone::Good => Cls::Good,
        Tone::Warn => Cls::Warn,
        Tone::Bad => Cls::Bad,
    }
}

/// A label and the JSON of a raw event.
fn event_json(ev: &Stamped) -> (String, Value) {
    match &ev.event {
        Event::RpcMessage { conn, dir, msg, .. } => {
            let d = match dir {
                Direction::ToDaemon => "to daemon",
                Direction::ToClient => "to client",
            };
            (format!("message (conn {conn}, {d})"), message_json(msg))
        }
        Event::BusMessage { msg } => ("bus message".into(), message_json(msg)),
        other => {
            let mut v = serde_json::to_value(other).unwrap_or(Value::Null);
            if let Value::Object(o) = &mut v {
                o.remove("t");
            }
            ("event".into(), v)
        }
    }
}

/// The document for row `i`.
pub(crate) fn row_doc(model: &mut Model, i: usize, width: usize, wall: bool) -> Doc {
    let mut d = Doc::new();
    let r = *model.row(i);
    let text = model.text(i).to_owned();
    for l in wrap(&text, width) {
        d.line(l, tone_cls(r.tone));
    }
    let mut head = vec![
        (fmt_time(&model.info, r.t, wall, 6), Cls::Dim),
        ("  ".into(), Cls::Plain),
        (r.source.name().to_owned(), Cls::Key),
    ];
    if let Some(a) = model.app_label(r.app) {
        head.push(("  ".into(), Cls::Plain));
        head.push((a, Cls::Plain));
    }
    d.text(head);
    let (ask, answer) = match r.kind {
        RowKind::Ask => (
            Some(i),
            (r.pair != super::model::NONE).then_some(r.pair as usize),
        ),
        RowKind::Answer => (
            (r.pair != super::model::NONE).then_some(r.pair as usize),
            Some(i),
        ),
        _ => (None, None),
    };
    if ask.is_some() || answer.is_some() {
        let mut s = Vec::new();
        if let Some(a) = ask {
            s.push((
                format!("asked {}", fmt_time(&model.info, model.row(a).t, wall, 3)),
                Cls::Dim,
            ));
        }
        match answer {
            Some(b) => {
                let bt = model.row(b).t;
                if let Some(a) = ask {
                    let dt = bt.saturating_sub(model.row(a).t);
                    s.push((
                        format!(
                            ", answered {} ({:.1} ms later)",
                            fmt_time(&model.info, bt, wall, 3),
                            dt as f64 / 1e6
                        ),
                        Cls::Dim,
                    ));
                } else {
                    s.push((
                        format!(
                            "answered {} (request before the capture)",
                            fmt_time(&model.info, bt, wall, 3)
                        ),
                        Cls::Dim,
                    ));
                }
            }
            None => s.push((", no reply (yet)".into(), Cls::Warn)),
        }
        d.text(s);
        d.line("", Cls::Plain);
        for (label, row) in [("request", ask), ("reply", answer)] {
            let Some(row) = row else { continue };
            match model.raw_event(row) {
                Ok(ev) => {
                    let (what, v) = event_json(&ev);
                    let what = what.replacen("message", label, 1);
                    d.json(&what, &v);
                }
                Err(e) => d.line(format!("{label}: {e}"), Cls::Bad),
            }
        }
    } else {
        d.line("", Cls::Plain);
        match model.raw_event(i) {
            Ok(ev) => {
                let (what, v) = event_json(&ev);
                d.json(&what, &v);
            }
            Err(e) => {
                for l in wrap(&e, width) {
                    d.line(l, Cls::Bad);
                }
            }
        }
    }
    d
}

fn severity_cls(s: Severity) -> Cls {
    match s {
        Severity::Info => Cls::Head,
        Severity::Warning => Cls::Warn,
        Severity::Error => Cls::Bad,
    }
}

/// The document for a finding.
pub(crate) fn finding_doc(model: &Model, f: &Finding, width: usize, wall: bool) -> Doc {
    let mut d = Doc::new();
    let mut head = vec![
        (f.severity.name().to_uppercase(), severity_cls(f.severity)),
        ("  ".into(), Cls::Plain),
        (f.kind.clone(), Cls::Head),
    ];
    if let Some(a) = &f.app {
        let who = match f.pm_id {
            Some(id) => format!("{a}:{id}"),
            None => a.clone(),
        };
        head.push(("  ".into(), Cls::Plain));
        head.push((who, Cls::Plain));
    }
    d.text(head);
    for l in wrap(&f.summary, width) {
        d.line(l, Cls::Plain);
    }
    if !f.chain.is_empty() {
        d.line("", Cls::Plain);
        d.line("Why", Cls::Head);
        for (k, step) in f.chain.iter().enumerate() {
            let prefix = format!("{:>2}. ", k + 1);
            for (j, l) in wrap(step, width.saturating_sub(4)).into_iter().enumerate() {
                let p = if j == 0 {
                    prefix.clone()
                } else {
                    "    ".into()
                };
                d.text(vec![(p, Cls::Dim), (l, Cls::Plain)]);
            }
        }
    }
    if !f.evidence.is_empty() {
        d.line("", Cls::Plain);
        d.line("Evidence", Cls::Head);
        for e in &f.evidence {
            let t = fmt_time(&model.info, e.t, wall, 3);
            let lead = format!("{t} {:<5}", e.source.name());
            let lead_w = lead.chars().count() + 1;
            let row = model.find_evidence(e.t, e.source, &e.what);
            for (j, l) in wrap(&e.what, width.saturating_sub(lead_w + 2))
                .into_iter()
                .enumerate()
            {
                let spans = if j == 0 {
                    vec![
                        ("◆ ".into(), Cls::Mark),
                        (lead.clone(), Cls::Dim),
                        (" ".into(), Cls::Plain),
                        (l, Cls::Plain),
                    ]
                } else {
                    vec![(" ".repeat(lead_w + 2), Cls::Plain), (l, Cls::Plain)]
                };
                match row {
                    Some(r) => d.link(spans, r),
                    None => d.text(spans),
                }
            }
        }
        d.line("(Enter on an evidence line shows that event)", Cls::Dim);
    }
    if !f.remedy.is_empty() {
        d.line("", Cls::Plain);
        d.line("Remedy", Cls::Head);
        for l in wrap(&f.remedy, width) {
            d.line(l, Cls::Good);
        }
    }
    d
}
