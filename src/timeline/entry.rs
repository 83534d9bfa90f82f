//! One timeline entry: an observation with its PM2 meaning, in words.

use super::procfacts::proc_summary;
use crate::event::{push_i64, push_u64, Direction, MonoNs, NoteLevel, PeerCred, ProcEvent, Source};
use crate::pm2::daemon_log::DaemonLogLine;
use crate::pm2::meaning::{
    json_text, BusEvent, MonitorProc, Pm2Call, ProcessEvent, ProcessEventKind, Stream, Target,
};
use serde::{Deserialize, Serialize};

/// The app an entry is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AppRef {
    pub pm_id: u64,
    pub name: Option<std::sync::Arc<str>>,
}

impl std::fmt::Display for AppRef {
    /// `web:0` as pm2 writes it; `#0` while the name is unknown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{n}:{}", self.pm_id),
            None => write!(f, "#{}", self.pm_id),
        }
    }
}

impl AppRef {
    /// What [`Display`](std::fmt::Display) writes, appended to `out` without the formatting
    /// machinery (the TUI describes each of a million app output lines with it).
    pub(crate) fn write_into(&self, out: &mut String) {
        match &self.name {
            Some(n) => {
                out.push_str(n);
                out.push(':');
            }
            None => out.push('#'),
        }
        push_u64(out, self.pm_id);
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Error { message: String },
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// When the recorder observed it (CLOCK_MONOTONIC ns).
    pub t: MonoNs,
    pub source: Source,
    pub app: Option<AppRef>,
    pub kind: EntryKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EntryKind {
    /// A pm2 client sent a request to the daemon.
    RequestAsked {
        conn: u64,
        id: String,
        /// The request's number, given where it is paired with its reply (the interpreter):
        /// from 1, in the order requests are asked, over all connections. Its reply names it.
        ask: u64,
        call: Pm2Call,
    },
    /// The daemon answered a request (`method` is `None` when the request was not seen,
    /// e.g. it was sent before the capture began).
    RequestAnswered {
        conn: u64,
        id: String,
        /// The number of the request this answers (its `RequestAsked`'s `ask`); `None` when
        /// it pairs with no request seen.
        ask: Option<u64>,
        method: Option<String>,
        latency_ns: Option<u64>,
        outcome: Outcome,
        /// The process a restart/start/reload/prepare answered with, if it has a pid.
        new_pid: Option<i64>,
        /// The apps in the reply: every entry of getMonitorData, or the one process of a
        /// restart/stop/... reply.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        procs: Vec<MonitorProc>,
        /// Short words about any other result (`7.0.4` for getVersion).
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<String>,
    },
    /// An RPC message that is neither a request nor a reply.
    RpcOther {
        conn: u64,
        dir: Direction,
        raw: String,
    },
    /// A bus event: `process:event` or one this tool does not know (logs are split out).
    Bus(BusEvent),
    /// A line the daemon wrote to pm2.log (seen as `log:PM2` on the bus).
    Daemon {
        at: Option<i64>,
        log: DaemonLogLine,
    },
    /// A line of an app's stdout/stderr (seen as `log:out`/`log:err` on the bus).
    AppLog {
        stream: Stream,
        at: Option<i64>,
        line: String,
    },
    /// The bus subscription came up or went down.
    BusLink {
        up: bool,
        detail: String,
    },
    /// What the operating system showed.
    Proc {
        event: Box<ProcEvent>,
    },
    ConnOpened {
        conn: u64,
        peer: Option<PeerCred>,
    },
    /// A connection ended; `unanswered` lists the methods still waiting for a reply.
    ConnClosed {
        conn: u64,
        to_client_bytes: u64,
        to_daemon_bytes: u64,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        unanswered: Vec<String>,
    },
    Refused {
        peer: PeerCred,
        reason: String,
    },
    Undecodable {
        conn: u64,
        dir: Direction,
        offset: u64,
        error: String,
    },
    Note {
        level: NoteLevel,
        text: String,
    },
    RecordingStopped {
        reason: String,
    },
}

impl EntryKind {
    /// A successful getMonitorData reply listing `procs`, paired with no request: what
    /// `explain` reads from the daemon now, and the rules' tests.
    pub(crate) fn monitor_data(conn: u64, id: &str, procs: Vec<MonitorProc>) -> EntryKind {
        EntryKind::RequestAnswered {
            conn,
            id: id.to_owned(),
            ask: None,
            method: Some("getMonitorData".into()),
            latency_ns: None,
            outcome: Outcome::Ok,
            new_pid: None,
            procs,
            result: None,
        }
    }
}

/// How serious an entry looks on its own, for colouring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tone {
    Plain,
    Quiet,
    Good,
    Warn,
    Bad,
}

/// A latency in words (`0.6 ms`, `412 ms`, `12.5 s`), appended to `out`.
fn push_ms(out: &mut String, ns: u64) {
    use std::fmt::Write as _;
    let ms = ns as f64 / 1e6;
    if ms < 10.0 {
        let _ = write!(out, "{ms:.1} ms");
    } else if ms < 10_000.0 {
        push_u64(out, ms.round() as u64);
        out.push_str(" ms");
    } else {
        let _ = write!(out, "{:.1} s", ms / 1000.0);
    }
}

/// The start of JSON text `text` holding more than `chars` characters (all of it when it
/// is shorter): what [`shorten`] needs to give the same words as for the whole text,
/// without counting the characters of a large payload only to keep its first words.
fn text_start(text: &str, chars: usize) -> &str {
    // A character is at most four bytes: this many bytes hold more than `chars` of them.
    let mut cut = (4 * (chars + 1)).min(text.len());
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    &text[..cut]
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

impl Entry {
    fn app_words(&self, target: Option<&Target>) -> String {
        match (&self.app, target) {
            (Some(a), _) => a.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => "?".into(),
        }
    }

    /// [`Entry::describe`] written at the end of `out` (an app's output line, most of a
    /// long capture's entries, without a string of its own).
    pub fn describe_into(&self, out: &mut String) {
        match &self.kind {
            EntryKind::AppLog { stream, line, .. } => {
                match &self.app {
                    Some(a) => a.write_into(out),
                    None => out.push('?'),
                }
                out.push_str(if *stream == Stream::Err {
                    " stderr: "
                } else {
                    " stdout: "
                });
                out.push_str(line);
            }
            // The restart story's most frequent words (a fifth of the bench's rows), written
            // in place: through `format!` they cost some 2300 instructions a row.
            EntryKind::RequestAnswered {
                method,
                latency_ns,
                outcome,
                new_pid,
                procs,
                result,
                ..
            } => {
                out.push_str(
                    method
                        .as_deref()
                        .unwrap_or("reply to a request sent before the capture"),
                );
                if let Some(a) = &self.app {
                    out.push(' ');
                    a.write_into(out);
                }
                out.push_str(" -> ");
                match outcome {
                    Outcome::Error { message } => {
                        out.push_str("error \"");
                        out.push_str(&shorten(message, 120));
                        out.push('"');
                    }
                    Outcome::Ok => match (method.as_deref(), new_pid) {
                        (Some("getMonitorData"), _) => monitor_words_into(out, procs),
                        (_, Some(pid)) => {
                            out.push_str("new pid ");
                            push_i64(out, *pid);
                        }
                        _ => match (procs.first(), result) {
                            (Some(p), _) => out.push_str(p.status.as_deref().unwrap_or("done")),
                            (None, Some(r)) => out.push_str(r),
                            (None, None) => out.push_str("ok"),
                        },
                    },
                }
                if let Some(l) = latency_ns {
                    out.push_str(" after ");
                    push_ms(out, *l);
                }
            }
            EntryKind::ConnOpened { conn, peer } => {
                out.push_str("client connected (conn ");
                push_u64(out, *conn);
                if let Some(p) = peer {
                    out.push_str(", pid ");
                    push_i64(out, i64::from(p.pid));
                    out.push_str(" uid ");
                    push_u64(out, u64::from(p.uid));
                }
                out.push(')');
            }
            EntryKind::ConnClosed {
                conn, unanswered, ..
            } => {
                out.push_str("client disconnected (conn ");
                push_u64(out, *conn);
                out.push(')');
                if !unanswered.is_empty() {
                    out.push_str(" without replies to ");
                    out.push_str(&unanswered.join(", "));
                }
            }
            _ => out.push_str(&self.describe()),
        }
    }

    /// What happened, in words: `restartProcessId web:0 -> new pid 4242 after 412 ms`.
    pub fn describe(&self) -> String {
        let app = || self.app.as_ref().map(|a| a.to_string());
        match &self.kind {
            EntryKind::RequestAsked { call, .. } => self.describe_call(call),
            EntryKind::RpcOther { dir, raw, .. } => {
                let d = if *dir == Direction::ToDaemon {
                    "to daemon"
                } else {
                    "to client"
                };
                format!(
                    "message {d}, neither request nor reply: {}",
                    shorten(raw, 120)
                )
            }
            EntryKind::Bus(BusEvent::ProcessEvent(e)) => self.describe_process_event(e),
            EntryKind::Bus(BusEvent::Other { name, payload }) => {
                format!(
                    "bus {name} {}",
                    shorten(text_start(payload.text(), 100), 100)
                )
            }
            EntryKind::Bus(BusEvent::Log { data, .. }) => shorten(data.trim_end(), 200),
            EntryKind::Bus(b @ BusEvent::ProcessMsg { text, .. }) => {
                let who = app().map(|a| format!("{a} ")).unwrap_or_default();
                if b.is_ready_message() {
                    format!("{who}sent ready (process.send('ready'))")
                } else {
                    match text {
                        Some(t) => format!("{who}sent a message: {}", shorten(t, 100)),
                        None => format!("{who}sent a message"),
                    }
                }
            }
            EntryKind::Bus(BusEvent::DaemonLog { lines, .. }) => lines
                .iter()
                .map(|l| l.describe())
                .collect::<Vec<_>>()
                .join("; "),
            EntryKind::Daemon { log, .. } => {
                let who = match log {
                    DaemonLogLine::Other { .. } => None,
                    _ => app(),
                };
                match who {
                    Some(a) => format!("{a} {}", log.describe()),
                    None => log.describe(),
                }
            }
            // Written in place by `describe_into`.
            EntryKind::AppLog { .. }
            | EntryKind::RequestAnswered { .. }
            | EntryKind::ConnOpened { .. }
            | EntryKind::ConnClosed { .. } => {
                let mut s = String::new();
                self.describe_into(&mut s);
                s
            }
            EntryKind::BusLink { up: true, detail } => {
                format!("subscribed to the event bus ({detail})")
            }
            EntryKind::BusLink { up: false, detail } => format!("event bus lost: {detail}"),
            EntryKind::Proc { event } => proc_summary(event),
            EntryKind::Refused { peer, reason } => {
                format!("client pid {} uid {} refused: {reason}", peer.pid, peer.uid)
            }
            EntryKind::Undecodable {
                conn,
                dir,
                offset,
                error,
            } => {
                let d = if *dir == Direction::ToDaemon {
                    "to daemon"
                } else {
                    "to client"
                };
                format!("conn {conn} {d}: undecodable from byte {offset} on ({error}); bytes still forwarded")
            }
            EntryKind::Note { text, .. } => text.clone(),
            EntryKind::RecordingStopped { reason } => {
                format!("recording stopped: {reason}; later events are missing")
            }
        }
    }

    fn describe_call(&self, call: &Pm2Call) -> String {
        match call {
            Pm2Call::RestartProcessId { target, .. } | Pm2Call::ReloadProcessId { target, .. } => {
                let mut s = format!("{} {}", call.method(), self.app_words(target.as_ref()));
                let n = call.env_vars().len();
                if n > 0 {
                    s.push_str(&format!(
                        " with {n} env value{}",
                        if n == 1 { "" } else { "s" }
                    ));
                }
                if let Pm2Call::ReloadProcessId { graceful, .. } = call {
                    // What the daemon does with it (lib/God/Reload.js), when in cluster mode.
                    s.push_str(if *graceful {
                        " (graceful: new worker first, the old one asked to shut down)"
                    } else {
                        " (new worker first, then the old one is stopped)"
                    });
                }
                s
            }
            Pm2Call::StopProcessId { target }
            | Pm2Call::StartProcessId { target }
            | Pm2Call::DeleteProcessId { target } => {
                format!("{} {}", call.method(), self.app_words(target.as_ref()))
            }
            Pm2Call::NotifyByProcessId {
                id,
                action_name,
                manually,
            } => format!(
                "notifyByProcessId {} {action_name}{}",
                self.app_words(id.as_ref()),
                if *manually { " (manually)" } else { "" }
            ),
            Pm2Call::GetMonitorData => "getMonitorData".into(),
            Pm2Call::Prepare { names } => format!("prepare (start) {}", names.join(", ")),
            Pm2Call::Other { method, args } => {
                let a: Vec<String> = args.iter().map(|v| shorten(&json_text(v), 60)).collect();
                if a.iter().all(|s| s == "{}") {
                    method.clone()
                } else {
                    format!("{method} {}", a.join(" "))
                }
            }
        }
    }

    fn describe_process_event(&self, e: &ProcessEvent) -> String {
        let who = self.app_words(None);
        let manually = if e.manually { " (manually)" } else { "" };
        match &e.event {
            ProcessEventKind::Exit => {
                let mut s = match (e.old, e.pm_id) {
                    (true, Some(id)) => format!("{who} outgoing worker _old_{id} exit event"),
                    _ => format!("{who} exit event"),
                };
                let mut parts = Vec::new();
                if let Some(c) = e.exit_code {
                    parts.push(format!("code {c}"));
                }
                if let Some(sig) = &e.signal {
                    parts.push(format!("signal {sig}"));
                }
                if let Some(st) = &e.status {
                    parts.push(format!("status {st}"));
                }
                if let Some(u) = e.unstable_restarts.filter(|u| *u > 0) {
                    parts.push(format!(
                        "{u} unstable restart{}",
                        if u == 1 { "" } else { "s" }
                    ));
                }
                if !parts.is_empty() {
                    s.push_str(&format!(" ({})", parts.join(", ")));
                }
                s
            }
            ProcessEventKind::Online => format!("{who} online{manually}"),
            ProcessEventKind::RestartOverlimit => {
                let n = e
                    .unstable_restarts
                    .map(|u| format!(" ({u})"))
                    .unwrap_or_default();
                format!("{who} errored: restart overlimit, too many unstable restarts{n}")
            }
            other => {
                let st = e
                    .status
                    .as_deref()
                    .map(|s| format!(", status {s}"))
                    .unwrap_or_default();
                format!("{who} {}{manually}{st}", other.as_str())
            }
        }
    }

    /// The tone of the entry on its own, for colouring.
    pub(crate) fn tone(&self) -> Tone {
        match &self.kind {
            EntryKind::RequestAnswered {
                outcome: Outcome::Error { .. },
                ..
            } => Tone::Bad,
            EntryKind::RequestAsked {
                call: Pm2Call::GetMonitorData,
                ..
            }
            | EntryKind::RequestAnswered {
                method: Some(_),
                new_pid: None,
                ..
            } => Tone::Quiet,
            EntryKind::RequestAnswered { .. } | EntryKind::RequestAsked { .. } => Tone::Plain,
            EntryKind::Bus(BusEvent::ProcessEvent(e)) => match e.event {
                ProcessEventKind::RestartOverlimit => Tone::Bad,
                ProcessEventKind::Online => Tone::Good,
                ProcessEventKind::Exit if e.exit_code.unwrap_or(0) != 0 => Tone::Warn,
                _ => Tone::Plain,
            },
            EntryKind::Daemon { log, .. } => match log {
                DaemonLogLine::TooManyUnstableRestarts { .. }
                | DaemonLogLine::CouldNotBeStopped { .. }
                | DaemonLogLine::CouldNotBeKilled { .. } => Tone::Bad,
                DaemonLogLine::SigkillAfterTimeout { .. } => Tone::Warn,
                DaemonLogLine::Exited { code, signal, .. } if *code != 0 || signal == "SIGKILL" => {
                    Tone::Warn
                }
                DaemonLogLine::Online { .. } => Tone::Good,
                DaemonLogLine::KillRetry { .. } => Tone::Quiet,
                _ => Tone::Plain,
            },
            EntryKind::AppLog {
                stream: Stream::Err,
                ..
            } => Tone::Warn,
            EntryKind::AppLog { .. } | EntryKind::ConnOpened { .. } => Tone::Quiet,
            EntryKind::ConnClosed { unanswered, .. } => {
                if unanswered.is_empty() {
                    Tone::Quiet
                } else {
                    Tone::Warn
                }
            }
            EntryKind::Refused { .. }
            | EntryKind::Undecodable { .. }
            | EntryKind::RecordingStopped { .. }
            | EntryKind::BusLink { up: false, .. } => Tone::Bad,
            EntryKind::Note {
                level: NoteLevel::Error,
                ..
            } => Tone::Bad,
            EntryKind::Note {
                level: NoteLevel::Warning,
                ..
            } => Tone::Warn,
            _ => Tone::Plain,
        }
    }
}

/// A getMonitorData reply in words, appended to `out`: `2 apps: web:0 online pid 42, ...`.
fn monitor_words_into(out: &mut String, procs: &[MonitorProc]) {
    if procs.is_empty() {
        out.push_str("no apps");
        return;
    }
    let n = procs.len();
    push_u64(out, n as u64);
    out.push_str(if n == 1 { " app: " } else { " apps: " });
    for (k, p) in procs.iter().take(6).enumerate() {
        if k > 0 {
            out.push_str(", ");
        }
        match (&p.name, p.pm_id) {
            (Some(name), Some(i)) => {
                out.push_str(name);
                out.push(':');
                push_u64(out, i);
            }
            (Some(name), None) => out.push_str(name),
            (None, Some(i)) => {
                out.push('#');
                push_u64(out, i);
            }
            (None, None) => out.push('?'),
        }
        out.push(' ');
        out.push_str(p.status.as_deref().unwrap_or("?"));
        if let Some(pid) = p.pid.filter(|p| *p > 0) {
            out.push_str(" pid ");
            push_i64(out, pid);
        }
    }
    if n > 6 {
        out.push_str(", ");
        push_u64(out, (n - 6) as u64);
        out.push_str(" more");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An app is written into a row's words as its `Display` writes it.
    #[test]
    fn apps_written_as_displayed() {
        for pm_id in [0, 7, 10, 99, 12345, u64::MAX] {
            for name in [None, Some("web"), Some(""), Some("api-é")] {
                let a = AppRef {
                    pm_id,
                    name: name.map(Into::into),
                };
                let mut out = String::from("x");
                a.write_into(&mut out);
                assert_eq!(out, format!("x{a}"));
            }
        }
    }

    /// An unknown bus event's words are the same from the start of its payload's text as
    /// from the whole text: short and long payloads, multi-byte and escaped characters,
    /// lengths around the cut.
    #[test]
    fn payload_words_from_the_start_of_the_text() {
        let mut payloads = vec![
            json!(null),
            json!({}),
            json!({"a": 1}),
            json!({"k": "é".repeat(500)}),
            json!({"k": "\u{1F600}".repeat(300), "n": [1, 2, 3]}),
            json!({"esc": "\n\t\"\\\u{1b}".repeat(200)}),
        ];
        for n in 90..110 {
            payloads.push(json!({ "s": "x".repeat(n) }));
            payloads.push(json!({ "s": "ü".repeat(n) }));
        }
        for p in payloads {
            let text = p.to_string();
            let whole = shorten(&text, 100);
            assert_eq!(shorten(text_start(&text, 100), 100), whole, "{p}");
        }
    }

    /// Words written in place: a getMonitorData reply with more apps than are named, a
    /// connection closed with requests unanswered, latencies in each of their three forms.
    #[test]
    fn words_written_in_place() {
        let entry = |kind| Entry {
            t: 1,
            source: Source::Rpc,
            app: None,
            kind,
        };
        let procs: Vec<MonitorProc> = (0..8u64)
            .map(|i| MonitorProc {
                pm_id: Some(i),
                name: (i != 3).then(|| format!("app{i}")),
                pid: Some(if i == 1 { 0 } else { 100 + i as i64 }),
                status: (i != 2).then(|| "online".to_owned()),
                ..MonitorProc::default()
            })
            .collect();
        let answered = |method: &str, latency_ns, procs: Vec<MonitorProc>| {
            entry(EntryKind::RequestAnswered {
                conn: 1,
                id: "1".into(),
                ask: Some(1),
                method: Some(method.into()),
                latency_ns: Some(latency_ns),
                outcome: Outcome::Ok,
                new_pid: None,
                procs,
                result: None,
            })
        };
        assert_eq!(
            answered("getMonitorData", 612_345, procs).describe(),
            "getMonitorData -> 8 apps: app0:0 online pid 100, app1:1 online, app2:2 ? pid 102, \
             #3 online pid 103, app4:4 online pid 104, app5:5 online pid 105, 2 more after 0.6 ms"
        );
        assert_eq!(
            answered("getMonitorData", 412_600_000, Vec::new()).describe(),
            "getMonitorData -> no apps after 413 ms"
        );
        assert_eq!(
            answered("getVersion", 12_345_000_000, Vec::new()).describe(),
            "getVersion -> ok after 12.3 s"
        );
        let closed = entry(EntryKind::ConnClosed {
            conn: 4,
            to_client_bytes: 0,
            to_daemon_bytes: 0,
            unanswered: vec!["stopProcessId".into(), "getVersion".into()],
        });
        assert_eq!(
            closed.describe(),
            "client disconnected (conn 4) without replies to stopProcessId, getVersion"
        );
        let opened = entry(EntryKind::ConnOpened {
            conn: 2,
            peer: Some(PeerCred {
                pid: -1,
                uid: 1000,
                gid: 0,
            }),
        });
        assert_eq!(
            opened.describe(),
            "client connected (conn 2, pid -1 uid 1000)"
        );
    }
}
