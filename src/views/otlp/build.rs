//! Timeline and findings → OTLP messages (the official protobuf types of the
//! `opentelemetry-proto` crate; nothing here encodes protobuf by hand).
//!
//! - One trace per pm2 request that acts on an app (restart, reload, stop, start, delete;
//!   and `prepare`, what `pm2 start app.js` sends, once per app it started).
//!   Its root span is the request from ask to answer, named `restartProcessId web:0`; its
//!   window runs from the ask to the next such request on the same app (or the end of what
//!   was seen). Child spans: each generation's life within the window. Span events: the
//!   process watcher's records (exits with their status, forks, snapshots), the daemon's
//!   decisions (its log lines) and its bus events about the app, on the generation span of
//!   the pid they name, else on the root span.
//! - One log record per finding, severity mapped, body = the summary, linked to the trace
//!   of the request it concerns.
//!
//! The text is the timeline's, which is made from the capture's (redacted) events: an export
//! carries nothing the capture does not.

use crate::event::{CaptureInfo, MonoNs};
use crate::rules::{Finding, Severity};
use crate::timeline::{Entry, EntryKind, Generation, ProcFacts, Request, Timeline};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The methods whose requests become traces (and `prepare`, `pm2 start`, for each app it
/// started).
pub const ACTIONS: &[&str] = &[
    "restartProcessId",
    "reloadProcessId",
    "softReloadProcessId",
    "stopProcessId",
    "startProcessId",
    "deleteProcessId",
];

/// Span events kept per span; more are counted in `dropped_events_count`.
const MAX_EVENTS_PER_SPAN: usize = 512;

/// Whether an entry becomes a span event: what the processes did, the daemon's decisions
/// and its events about an app.
pub fn is_span_event(e: &Entry) -> bool {
    matches!(
        e.kind,
        EntryKind::Proc { .. }
            | EntryKind::Daemon { .. }
            | EntryKind::Bus(crate::pm2::meaning::BusEvent::ProcessEvent(_))
    )
}

/// The app an event entry concerns: its own, or the one a snapshot was taken for.
fn event_pm_id(e: &Entry) -> Option<u64> {
    if let Some(a) = &e.app {
        return Some(a.pm_id);
    }
    match &e.kind {
        EntryKind::Proc { event } => match &**event {
            crate::event::ProcEvent::Snapshot(s) => s.reason.pm_id(),
            _ => None,
        },
        _ => None,
    }
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

fn wall(info: &CaptureInfo, t: MonoNs) -> u64 {
    u64::try_from(info.wall_ns(t).max(0)).unwrap_or(u64::MAX)
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// Identifiers of one request's trace: derived from the capture and the request, so an
/// export of the same capture twice gives the same ids (a backend keeps one copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: [u8; 16],
    pub root_span: [u8; 8],
}

impl TraceIds {
    pub fn of(info: &CaptureInfo, r: &Request, pm_id: u64) -> TraceIds {
        let d = digest(&[
            b"pm2-trace request",
            info.host.as_bytes(),
            info.pm2_home.as_bytes(),
            &info.wall_ref_ns.to_be_bytes(),
            &r.conn.to_be_bytes(),
            r.id.as_bytes(),
            &r.asked.to_be_bytes(),
            &pm_id.to_be_bytes(),
        ]);
        let mut trace_id = [0u8; 16];
        trace_id.copy_from_slice(&d[..16]);
        let mut root_span = [0u8; 8];
        root_span.copy_from_slice(&d[16..24]);
        TraceIds {
            trace_id,
            root_span,
        }
    }

    fn child(&self, seq: u32) -> [u8; 8] {
        let d = digest(&[b"generation", &self.trace_id, &seq.to_be_bytes()]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&d[..8]);
        id
    }
}

/// A request that becomes a trace, with the window its spans cover.
#[derive(Debug, Clone)]
pub struct TracedRequest {
    /// Index into [`Timeline::requests`].
    pub index: usize,
    pub pm_id: u64,
    pub start: MonoNs,
    /// The next action on the same app, or the last instant seen.
    pub end: MonoNs,
    pub ids: TraceIds,
}

/// The requests of `tl` that act on an app, each with its window.
pub fn traced_requests(info: &CaptureInfo, tl: &Timeline) -> Vec<TracedRequest> {
    let last = tl.last_t.unwrap_or(0);
    let mut acts: Vec<(usize, &Request, u64)> = Vec::new();
    for (i, r) in tl.requests.iter().enumerate() {
        if ACTIONS.contains(&r.method.as_str()) {
            if let Some(id) = r.pm_id {
                acts.push((i, r, id));
            }
        } else if r.method == "prepare" {
            // `pm2 start app.js`: a trace for each app it started (a generation the model
            // ties to the request, or the process its reply names).
            for (id, app) in &tl.apps {
                let started = |g: &Generation| {
                    g.started_by == Some(i) || (r.new_pid.is_some() && g.pid == r.new_pid)
                };
                if app.generations.iter().any(started) {
                    acts.push((i, r, *id));
                }
            }
        }
    }
    acts.iter()
        .map(|&(index, r, pm_id)| {
            let next = acts
                .iter()
                .filter(|(_, o, id)| *id == pm_id && o.asked > r.asked)
                .map(|(_, o, _)| o.asked)
                .min();
            let end = next
                .unwrap_or(last)
                .max(r.answered.unwrap_or(r.asked))
                .max(r.asked);
            TracedRequest {
                index,
                pm_id,
                start: r.asked,
                end,
                ids: TraceIds::of(info, r, pm_id),
            }
        })
        .collect()
}

/// The app's label as pm2 writes it: `web:0`.
fn app_label(tl: &Timeline, pm_id: u64) -> String {
    match tl.apps.get(&pm_id).and_then(|a| a.name.as_deref()) {
        Some(n) => format!("{n}:{pm_id}"),
        None => format!("#{pm_id}"),
    }
}

fn service_name(tl: &Timeline, pm_id: Option<u64>, app: Option<&str>) -> String {
    app.map(str::to_owned)
        .or_else(|| {
            pm_id.and_then(|id| {
                tl.apps
                    .get(&id)
                    .and_then(|a| a.name.as_deref().map(str::to_owned))
            })
        })
        .unwrap_or_else(|| match pm_id {
            Some(id) => format!("pm2 app #{id}"),
            None => "pm2".into(),
        })
}

/// Resource attributes of one app's telemetry.
fn resource(info: &CaptureInfo, service: &str, pm_id: Option<u64>) -> Resource {
    let mut attributes = vec![s("service.name", service), s("service.namespace", "pm2")];
    if !info.host.is_empty() {
        attributes.push(s("host.name", info.host.clone()));
    }
    if !info.pm2_home.is_empty() {
        attributes.push(s("pm2.home", info.pm2_home.clone()));
    }
    if let Some(v) = &info.pm2_version {
        attributes.push(s("pm2.version", v.clone()));
    }
    if let Some(p) = info.daemon_pid {
        attributes.push(i("pm2.daemon.pid", i64::from(p)));
    }
    if let Some(id) = pm_id {
        attributes.push(i("pm2.pm_id", id as i64));
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "pm2-trace".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// When a generation began and ended, as far as the timeline knows.
fn generation_life(g: &Generation, tl: &Timeline) -> (Option<MonoNs>, Option<MonoNs>) {
    let start = g
        .starting
        .as_ref()
        .or(g.online.as_ref())
        .map(|r| r.t)
        .or(if g.before_capture { tl.first_t } else { None });
    let end = g
        .os_exit
        .as_ref()
        .map(|r| r.t)
        .or(g.exit.as_ref().map(|e| e.at.t));
    (start, end)
}

/// The pid an event entry names, and the exit code and signal it reports.
fn event_facts(e: &Entry) -> (Option<i64>, Option<i64>, Option<String>) {
    use crate::pm2::daemon_log::DaemonLogLine;
    use crate::pm2::meaning::BusEvent;
    match &e.kind {
        EntryKind::Proc { event } => {
            let f = ProcFacts::of(event);
            let (code, sig) = match f.exit_status.as_deref() {
                Some(st) => match st.split_once(' ') {
                    Some(("code", c)) => (c.parse().ok(), None),
                    Some(("signal", n)) => (None, Some(n.to_owned())),
                    _ => (None, None),
                },
                None => (None, None),
            };
            (f.pid, code, sig)
        }
        EntryKind::Daemon { log, .. } => match log {
            DaemonLogLine::Exited { code, signal, .. } => (None, Some(*code), Some(signal.clone())),
            other => (other.pid(), None, None),
        },
        EntryKind::Bus(BusEvent::ProcessEvent(pe)) => (None, pe.exit_code, pe.signal.clone()),
        _ => (None, None, None),
    }
}

fn span_event(info: &CaptureInfo, e: &Entry) -> span::Event {
    let (pid, code, sig) = event_facts(e);
    let mut attributes = vec![s("pm2.source", e.source.name())];
    let kind = match &e.kind {
        EntryKind::Proc { event } => ProcFacts::of(event).kind.unwrap_or_default(),
        EntryKind::Daemon { log, .. } => serde_json::to_value(log)
            .ok()
            .and_then(|v| v.get("line").and_then(|l| l.as_str().map(str::to_owned)))
            .unwrap_or_default(),
        EntryKind::Bus(crate::pm2::meaning::BusEvent::ProcessEvent(pe)) => {
            pe.event.as_str().to_owned()
        }
        _ => String::new(),
    };
    if !kind.is_empty() {
        attributes.push(s("pm2.event", kind));
    }
    if let Some(p) = pid {
        attributes.push(i("process.pid", p));
    }
    if let Some(c) = code {
        attributes.push(i("process.exit.code", c));
    }
    if let Some(sg) = sig {
        attributes.push(s("pm2.signal", sg));
    }
    span::Event {
        time_unix_nano: wall(info, e.t),
        name: e.describe(),
        attributes,
        dropped_attributes_count: 0,
    }
}

fn push_event(span: &mut Span, ev: span::Event) {
    if span.events.len() < MAX_EVENTS_PER_SPAN {
        span.events.push(ev);
    } else {
        span.dropped_events_count += 1;
    }
}

/// The spans of one request's trace: the root span, then one per generation in its window.
/// `events` are the timeline's event entries ([`is_span_event`]), in time order.
pub fn request_spans(
    info: &CaptureInfo,
    tl: &Timeline,
    tr: &TracedRequest,
    events: &[Entry],
) -> Vec<Span> {
    let r = &tl.requests[tr.index];
    let label = app_label(tl, tr.pm_id);
    let mut attributes = vec![
        s("pm2.method", r.method.clone()),
        i("pm2.pm_id", tr.pm_id as i64),
        i("pm2.conn", r.conn as i64),
        s("pm2.request.id", r.id.clone()),
    ];
    if let Some(p) = r.peer_pid {
        attributes.push(i("pm2.client.pid", i64::from(p)));
    }
    if let Some(p) = r.new_pid {
        attributes.push(i("pm2.new_pid", p));
    }
    if !r.env_changes.is_empty() {
        let keys: Vec<AnyValue> = r
            .env_changes
            .iter()
            .map(|c| AnyValue {
                value: Some(any_value::Value::StringValue(c.key.clone())),
            })
            .collect();
        attributes.push(kv(
            "pm2.env.changed_keys",
            any_value::Value::ArrayValue(ArrayValue { values: keys }),
        ));
    }
    let status = match (&r.error, r.answered) {
        (Some(e), _) => Some(Status {
            message: e.clone(),
            code: status::StatusCode::Error as i32,
        }),
        (None, None) => Some(Status {
            message: "no answer seen".into(),
            code: status::StatusCode::Unset as i32,
        }),
        (None, Some(_)) => None,
    };
    let mut root = Span {
        trace_id: tr.ids.trace_id.to_vec(),
        span_id: tr.ids.root_span.to_vec(),
        name: format!("{} {label}", r.method),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: wall(info, r.asked),
        end_time_unix_nano: wall(info, r.answered.unwrap_or(tr.end)),
        attributes,
        status,
        ..Default::default()
    };
    // Generations alive within the window.
    let mut children: Vec<(Span, Option<i64>, MonoNs, MonoNs)> = Vec::new();
    if let Some(app) = tl.apps.get(&tr.pm_id) {
        for g in &app.generations {
            let (start, end) = generation_life(g, tl);
            let start = start.unwrap_or(tr.start).max(tr.start);
            let end = end.unwrap_or(tr.end).min(tr.end);
            if start > end || start > tr.end {
                continue;
            }
            let generation = g.restart_time.unwrap_or(u64::from(g.seq));
            let mut attributes = vec![
                i("pm2.pm_id", tr.pm_id as i64),
                i("pm2.generation", generation as i64),
            ];
            if let Some(pid) = g.pid {
                attributes.push(i("process.pid", pid));
                if let Some(cmd) = app
                    .processes
                    .iter()
                    .find(|p| p.pid == pid)
                    .and_then(|p| p.cmd.clone())
                {
                    attributes.push(s("process.command_line", cmd));
                }
            }
            let exited_in_window = g
                .os_exit
                .as_ref()
                .map(|r| r.t)
                .or(g.exit.as_ref().map(|e| e.at.t))
                .is_some_and(|t| t <= tr.end);
            if exited_in_window {
                if let Some(code) = g.exit.as_ref().and_then(|e| e.code) {
                    attributes.push(i("process.exit.code", code));
                }
                if let Some(st) = &g.os_exit_status {
                    attributes.push(s("pm2.exit.status", st.clone()));
                }
            }
            let pid_words = g.pid.map(|p| format!(" pid {p}")).unwrap_or_default();
            let sp = Span {
                trace_id: tr.ids.trace_id.to_vec(),
                span_id: tr.ids.child(g.seq).to_vec(),
                parent_span_id: tr.ids.root_span.to_vec(),
                name: format!("{label} gen {generation}{pid_words}"),
                kind: span::SpanKind::Internal as i32,
                start_time_unix_nano: wall(info, start),
                end_time_unix_nano: wall(info, end),
                attributes,
                ..Default::default()
            };
            children.push((sp, g.pid, start, end));
        }
    }
    for e in events {
        if e.t < tr.start || e.t > tr.end || event_pm_id(e) != Some(tr.pm_id) {
            continue;
        }
        let (pid, _, _) = event_facts(e);
        let ev = span_event(info, e);
        match children
            .iter_mut()
            .find(|(_, p, _, _)| pid.is_some() && *p == pid)
        {
            Some((sp, _, _, _)) => push_event(sp, ev),
            None => push_event(&mut root, ev),
        }
    }
    let mut out = vec![root];
    out.extend(children.into_iter().map(|(sp, _, _, _)| sp));
    out
}

/// The traces of `requests`, grouped by app (one resource per app, `service.name` = its name).
pub fn traces(
    info: &CaptureInfo,
    tl: &Timeline,
    requests: &[TracedRequest],
    events: &[Entry],
) -> ExportTraceServiceRequest {
    let mut by_app: BTreeMap<u64, Vec<Span>> = BTreeMap::new();
    for tr in requests {
        by_app
            .entry(tr.pm_id)
            .or_default()
            .extend(request_spans(info, tl, tr, events));
    }
    ExportTraceServiceRequest {
        resource_spans: by_app
            .into_iter()
            .map(|(pm_id, spans)| ResourceSpans {
                resource: Some(resource(
                    info,
                    &service_name(tl, Some(pm_id), None),
                    Some(pm_id),
                )),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn severity(s: Severity) -> SeverityNumber {
    match s {
        Severity::Info => SeverityNumber::Info,
        Severity::Warning => SeverityNumber::Warn,
        Severity::Error => SeverityNumber::Error,
    }
}

/// When a finding happened: its first piece of evidence.
pub fn finding_time(f: &Finding) -> Option<MonoNs> {
    f.evidence.iter().map(|e| e.t).min()
}

/// The request a finding concerns: on the same app, the one whose window holds most of its
/// evidence (the earliest on a tie), else the last one asked before its first evidence.
pub fn request_of<'a>(f: &Finding, requests: &'a [TracedRequest]) -> Option<&'a TracedRequest> {
    let id = f.pm_id?;
    let t = finding_time(f)?;
    let same = || requests.iter().filter(move |r| r.pm_id == id);
    let holds = |r: &TracedRequest| {
        f.evidence
            .iter()
            .filter(|e| r.start <= e.t && e.t <= r.end)
            .count()
    };
    let best = same()
        .map(|r| (holds(r), r))
        .filter(|(n, _)| *n > 0)
        .max_by(|(n1, r1), (n2, r2)| n1.cmp(n2).then(r2.start.cmp(&r1.start)))
        .map(|(_, r)| r);
    best.or_else(|| same().filter(|r| r.start <= t).max_by_key(|r| r.start))
}

/// One log record per finding, each under its app's resource.
pub fn logs(
    info: &CaptureInfo,
    tl: &Timeline,
    findings: &[Finding],
    requests: &[TracedRequest],
) -> ExportLogsServiceRequest {
    let mut by_app: BTreeMap<(Option<u64>, String), Vec<LogRecord>> = BTreeMap::new();
    for f in findings {
        let t = finding_time(f).or(tl.last_t).unwrap_or(info.mono_ref_ns);
        let sev = severity(f.severity);
        let mut attributes = vec![
            s("pm2.finding.kind", f.kind.clone()),
            s("pm2.finding.remedy", f.remedy.clone()),
        ];
        if let Some(a) = &f.app {
            attributes.push(s("pm2.app.name", a.clone()));
        }
        if let Some(id) = f.pm_id {
            attributes.push(i("pm2.pm_id", id as i64));
        }
        if !f.chain.is_empty() {
            let steps = f
                .chain
                .iter()
                .map(|c| AnyValue {
                    value: Some(any_value::Value::StringValue(c.clone())),
                })
                .collect();
            attributes.push(kv(
                "pm2.finding.chain",
                any_value::Value::ArrayValue(ArrayValue { values: steps }),
            ));
        }
        let (trace_id, span_id) = match request_of(f, requests) {
            Some(r) => (r.ids.trace_id.to_vec(), r.ids.root_span.to_vec()),
            None => (Vec::new(), Vec::new()),
        };
        let rec = LogRecord {
            time_unix_nano: wall(info, t),
            observed_time_unix_nano: wall(info, tl.last_t.unwrap_or(t).max(t)),
            severity_number: sev as i32,
            severity_text: f.severity.name().to_uppercase(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(f.summary.clone())),
            }),
            attributes,
            trace_id,
            span_id,
            event_name: "pm2.finding".into(),
            ..Default::default()
        };
        let service = service_name(tl, f.pm_id, f.app.as_deref());
        by_app.entry((f.pm_id, service)).or_default().push(rec);
    }
    ExportLogsServiceRequest {
        resource_logs: by_app
            .into_iter()
            .map(|((pm_id, service), log_records)| ResourceLogs {
                resource: Some(resource(info, &service, pm_id)),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope()),
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::tests::load_fixture;

    fn replayed(fixture: &str) -> (CaptureInfo, Timeline, Vec<Entry>, Vec<Finding>) {
        let (info, events) = load_fixture(fixture);
        let mut evs = Vec::new();
        let tl = crate::timeline::replay(&info, events, |e| {
            if is_span_event(e) {
                evs.push(e.clone());
            }
            Ok::<(), ()>(())
        })
        .unwrap();
        let findings = crate::rules::analyze(&tl);
        (info, tl, evs, findings)
    }

    #[test]
    fn one_trace_per_action_request_with_generations_and_events() {
        let (info, tl, evs, findings) = replayed("pm2-7.0.4");
        let reqs = traced_requests(&info, &tl);
        assert!(!reqs.is_empty());
        let t = traces(&info, &tl, &reqs, &evs);
        let spans: Vec<&Span> = t
            .resource_spans
            .iter()
            .flat_map(|r| r.scope_spans.iter().flat_map(|s| s.spans.iter()))
            .collect();
        let roots: Vec<&&Span> = spans
            .iter()
            .filter(|s| s.parent_span_id.is_empty())
            .collect();
        assert_eq!(roots.len(), reqs.len());
        let restart = roots
            .iter()
            .find(|s| s.name == "restartProcessId web:0")
            .expect("a restart of web:0");
        assert!(restart.end_time_unix_nano > restart.start_time_unix_nano);
        let kids: Vec<&&Span> = spans
            .iter()
            .filter(|s| s.parent_span_id == restart.span_id)
            .collect();
        assert!(kids.len() >= 2, "old and new generation: {kids:?}");
        assert!(kids.iter().all(|k| k.trace_id == restart.trace_id));
        let all_events: Vec<&span::Event> = std::iter::once(**restart)
            .chain(kids.iter().map(|k| **k))
            .flat_map(|s| s.events.iter())
            .collect();
        assert!(all_events.iter().any(|e| e.name.contains("exit")));
        assert!(all_events.iter().any(|e| e.name.contains("stopping")));
        // Every trace id is unique per request, and stable across two builds.
        let again = traced_requests(&info, &tl);
        assert_eq!(
            reqs.iter().map(|r| r.ids).collect::<Vec<_>>(),
            again.iter().map(|r| r.ids).collect::<Vec<_>>()
        );
        let l = logs(&info, &tl, &findings, &reqs);
        let recs: Vec<&LogRecord> = l
            .resource_logs
            .iter()
            .flat_map(|r| r.scope_logs.iter().flat_map(|s| s.log_records.iter()))
            .collect();
        assert_eq!(recs.len(), findings.len());
        let crash = recs
            .iter()
            .find(|r| {
                r.attributes.iter().any(|a| {
                    a.key == "pm2.finding.kind"
                        && a.value.as_ref().and_then(|v| v.value.as_ref())
                            == Some(&any_value::Value::StringValue("crash-loop-errored".into()))
                })
            })
            .expect("the crash loop finding");
        assert_eq!(crash.severity_number, SeverityNumber::Error as i32);
        let cf = findings
            .iter()
            .find(|f| f.kind == "crash-loop-errored")
            .unwrap();
        assert_eq!(
            crash.trace_id.len(),
            16,
            "linked to a trace: {cf:?} {:?}",
            reqs.iter()
                .map(|r| (r.pm_id, r.start, r.end))
                .collect::<Vec<_>>()
        );
        assert!(roots.iter().any(|r| r.trace_id == crash.trace_id));
    }
}
