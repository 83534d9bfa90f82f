//! The interpreter: stored events in, timeline entries out, one event at a time.
//!
//! It keeps only what naming needs: the app names and scripts per pm_id, and which pid belongs
//! to which app. All of it is bounded.
//!
//! It does not pair requests with replies: the recorder did, as it decoded them, and each RPC
//! event carries the result (a request's number `ask`; a reply's `ask` and `asked`, the
//! request it answers). Entries pass it on (`RequestAsked { ask }`, `RequestAnswered { ask }`),
//! so the timeline and the TUI follow it too. Only events recorded before the recorder
//! paired (a request without a number: every capture in `captures/`, users' older files, or
//! the older segments of a directory) are paired here, by the same [`Pairing`].

use super::entry::{AppRef, Entry, EntryKind, Outcome};
use super::procfacts::ProcFacts;
use crate::event::{CaptureInfo, Direction, Event, MonoNs, ProcEvent, Source, Stamped};
use crate::pm2::daemon_log::{parse_message, DaemonLogLine};
use crate::pm2::exchange::{Paired, Pairing, ReplyProcs, Rpc};
use crate::pm2::meaning::Stream;
use crate::pm2::meaning::{json_text, BusEvent, MonitorProc};
use crate::sources::logs::{LogLine, LogStream};
use crate::wire::amp::{Arg, Message};
use crate::wire::json::{Json, Node};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// pid -> pm_id associations kept.
const MAX_PIDS: usize = 65_536;
/// Apps (pm_ids) named at once.
const MAX_APPS: usize = 65_536;
/// Lines taken from one log message; the rest are summarised.
const MAX_LINES_PER_MESSAGE: usize = 1000;
/// Longest log line shown, in characters.
const MAX_LINE_CHARS: usize = 2000;

/// Turns stored events into timeline entries.
pub struct Interpreter {
    /// The recorder's pairing, for events that do not carry it (a capture, or a segment of
    /// one, recorded before the recorder paired): made at the first request without a
    /// number, so it pairs only what came without the recorder's pairing.
    unpaired: Option<Pairing>,
    names: BTreeMap<u64, Arc<str>>,
    /// Script -> the one pm_id running it; `None` when several do (the instances of a
    /// cluster app), so a line naming only the script names no app.
    scripts: HashMap<String, Option<u64>>,
    pids: HashMap<i64, u64>,
    /// Apps with a `Stopping` line whose kill is not yet confirmed.
    stopping: BTreeSet<u64>,
    /// Scripts of apps known by name only (dump.pm2 keeps no pm_id).
    script_names: HashMap<String, String>,
    /// The app of the last `starting` line: a spawn error that follows names no app.
    last_starting: Option<u64>,
}

impl Interpreter {
    pub fn new(_info: &CaptureInfo) -> Interpreter {
        Interpreter {
            unpaired: None,
            names: BTreeMap::new(),
            scripts: HashMap::new(),
            pids: HashMap::new(),
            stopping: BTreeSet::new(),
            script_names: HashMap::new(),
            last_starting: None,
        }
    }

    /// The entries one event produces.
    pub fn push(&mut self, ev: &Stamped) -> Vec<Entry> {
        let mut out = Vec::new();
        self.push_into(ev, &mut out);
        out
    }

    fn app(&self, pm_id: u64) -> AppRef {
        AppRef {
            pm_id,
            name: self.names.get(&pm_id).cloned(),
        }
    }

    /// [`Interpreter::app`], given the name the event itself carried (learnt just before):
    /// kept rather than copied when it is the one known.
    fn app_named(&self, pm_id: u64, name: Option<Arc<str>>) -> AppRef {
        match name {
            Some(n) if self.names.get(&pm_id) == Some(&n) => AppRef {
                pm_id,
                name: Some(n),
            },
            _ => self.app(pm_id),
        }
    }

    fn learn(&mut self, pm_id: Option<u64>, name: Option<&str>) {
        let (Some(id), Some(n)) = (pm_id, name) else {
            return;
        };
        if self.names.get(&id).map(|k| &**k) != Some(n)
            && (self.names.len() < MAX_APPS || self.names.contains_key(&id))
        {
            self.names.insert(id, n.into());
        }
    }

    fn learn_pid(&mut self, pid: i64, pm_id: u64) {
        if pid <= 0 {
            return;
        }
        if self.pids.len() >= MAX_PIDS {
            self.pids.clear();
        }
        self.pids.insert(pid, pm_id);
    }

    fn learn_proc(&mut self, p: &MonitorProc) {
        self.learn(p.pm_id, p.name.as_deref());
        if let Some(id) = p.pm_id {
            if let Some(pid) = p.pid {
                self.learn_pid(pid, id);
            }
            if let Some(s) = &p.exec_path {
                self.learn_script(s, id);
            }
        }
    }

    fn learn_script(&mut self, script: &str, pm_id: u64) {
        let room = self.scripts.len() < MAX_APPS;
        match self.scripts.get_mut(script) {
            Some(known) if *known != Some(pm_id) => *known = None,
            Some(_) => {}
            None if room => {
                self.scripts.insert(script.to_owned(), Some(pm_id));
            }
            None => {}
        }
    }

    /// Add the entries one event produces to `out`.
    pub fn push_into(&mut self, ev: &Stamped, out: &mut Vec<Entry>) {
        let t = ev.t;
        let source = ev.event.source();
        let plain = |kind: EntryKind| Entry {
            t,
            source,
            app: None,
            kind,
        };
        match &ev.event {
            Event::Note { level, text } => out.push(plain(EntryKind::Note {
                level: *level,
                text: text.clone(),
            })),
            Event::RecordingStopped { reason } => out.push(plain(EntryKind::RecordingStopped {
                reason: reason.clone(),
            })),
            Event::RpcConnect { conn, peer } => {
                out.push(plain(EntryKind::ConnOpened {
                    conn: *conn,
                    peer: *peer,
                }));
            }
            Event::RpcRefused { peer, reason } => out.push(plain(EntryKind::Refused {
                peer: *peer,
                reason: reason.clone(),
            })),
            Event::RpcUndecodable {
                conn,
                dir,
                offset,
                error,
            } => out.push(plain(EntryKind::Undecodable {
                conn: *conn,
                dir: *dir,
                offset: *offset,
                error: error.clone(),
            })),
            Event::RpcClose {
                conn,
                to_client_bytes,
                to_daemon_bytes,
                unanswered,
            } => {
                let mut unanswered = unanswered.clone();
                if let Some(pairing) = &mut self.unpaired {
                    unanswered.extend(pairing.close(*conn));
                }
                out.push(plain(EntryKind::ConnClosed {
                    conn: *conn,
                    to_client_bytes: *to_client_bytes,
                    to_daemon_bytes: *to_daemon_bytes,
                    unanswered,
                }));
            }
            Event::RpcMessage {
                conn,
                dir,
                msg,
                ask,
                asked,
            } => {
                let rpc = Rpc::decode(*dir, &msg.0);
                let paired = match (&rpc, ask, &mut self.unpaired) {
                    // Every request the recorder decodes has a number: one without was
                    // recorded before the recorder paired, and is paired here.
                    (Rpc::Call { .. }, None, unpaired) => unpaired
                        .get_or_insert_with(Pairing::new)
                        .pair(t, *conn, &rpc),
                    (Rpc::Reply(_), None, Some(pairing)) => pairing.pair(t, *conn, &rpc),
                    (Rpc::Call { .. }, Some(_), unpaired) => {
                        // Paired by a recorder from here on: what older requests were left
                        // waiting belongs to another recording and answers nothing here.
                        *unpaired = None;
                        Paired {
                            ask: *ask,
                            asked: None,
                        }
                    }
                    _ => Paired {
                        ask: *ask,
                        asked: asked.as_deref().cloned(),
                    },
                };
                self.rpc(t, *conn, *dir, &msg.0, rpc, paired, out)
            }
            Event::BusMessage { msg } => self.bus(t, &msg.0, out),
            Event::BusLink { up, detail } => out.push(plain(EntryKind::BusLink {
                up: *up,
                detail: detail.clone(),
            })),
            Event::Proc(p) => {
                let app = self.proc_app(p);
                out.push(Entry {
                    t,
                    source,
                    app,
                    kind: EntryKind::Proc { event: p.clone() },
                });
            }
            Event::LogLine(l) => self.log_line(t, l, out),
        }
    }

    /// [`Interpreter::push_into`] for an event the caller is done with once interpreted: a
    /// process event moves into its entry instead of being copied (the TUI's loader; a
    /// copy of a process event, with its command line and sockets, cost some 1650
    /// instructions, 63k of them in the bench's million events). `ev` is left holding an
    /// event without content.
    pub(crate) fn push_taking(&mut self, ev: &mut Stamped, out: &mut Vec<Entry>) {
        if !matches!(ev.event, Event::Proc(_)) {
            return self.push_into(ev, out);
        }
        let empty = Event::RecordingStopped {
            reason: String::new(),
        };
        let Event::Proc(p) = std::mem::replace(&mut ev.event, empty) else {
            unreachable!("a process event, matched above")
        };
        let app = self.proc_app(&p);
        out.push(Entry {
            t: ev.t,
            source: Source::Proc,
            app,
            kind: EntryKind::Proc { event: p },
        });
    }

    /// What a process-watcher event teaches about apps, and the app it belongs to.
    fn proc_app(&mut self, p: &ProcEvent) -> Option<AppRef> {
        let f = ProcFacts::of(p);
        if let (Some(id), Some(name)) = (f.pm_id, f.name.as_deref()) {
            self.learn(Some(id), Some(name));
        }
        if let (Some(id), Some(pid)) = (f.pm_id, f.pid) {
            self.learn_pid(pid, id);
        }
        f.pm_id
            .or_else(|| f.pid.and_then(|pid| self.pids.get(&pid).copied()))
            .map(|i| self.app(i))
    }

    /// What the daemon says about an app, learnt outside the events (explain asks the
    /// daemon, or reads dump.pm2): names, pids and scripts for attributing log lines.
    pub fn learn_app(&mut self, p: &MonitorProc) {
        self.learn_proc(p);
        if let (None, Some(n), Some(s)) = (p.pm_id, &p.name, &p.exec_path) {
            if self.script_names.len() < MAX_APPS {
                self.script_names.insert(s.clone(), n.clone());
            }
        }
    }

    /// A line of pm2.log (parsed as the bus's `log:PM2` is) or of an app's log.
    fn log_line(&mut self, t: MonoNs, l: &LogLine, out: &mut Vec<Entry>) {
        match l.stream {
            LogStream::Daemon => {
                let log = match parse_message(&l.text) {
                    DaemonLogLine::Other { text } => DaemonLogLine::Other {
                        text: cap_line(&text),
                    },
                    log => log,
                };
                let app = self.daemon_app(&log);
                out.push(Entry {
                    t,
                    source: Source::Logs,
                    app,
                    kind: EntryKind::Daemon { at: l.at_ms, log },
                });
            }
            LogStream::Out | LogStream::Err => {
                let app = l.app.as_ref().and_then(|a| {
                    let id = a.pm_id.or_else(|| {
                        self.names
                            .iter()
                            .find(|(_, n)| ***n == *a.name)
                            .map(|(i, _)| *i)
                    })?;
                    self.learn(Some(id), Some(&a.name));
                    Some(self.app(id))
                });
                let stream = if l.stream == LogStream::Out {
                    Stream::Out
                } else {
                    Stream::Err
                };
                out.push(Entry {
                    t,
                    source: Source::Logs,
                    app,
                    kind: EntryKind::AppLog {
                        stream,
                        at: l.at_ms,
                        line: cap_line(&l.text),
                    },
                });
            }
        }
    }

    /// The entry of RPC message `msg`, decoded (`rpc`) and paired.
    #[allow(clippy::too_many_arguments)]
    fn rpc(
        &mut self,
        t: MonoNs,
        conn: u64,
        dir: Direction,
        msg: &Message,
        rpc: Rpc,
        paired: Paired,
        out: &mut Vec<Entry>,
    ) {
        let source = Source::Rpc;
        match rpc {
            // A message that is neither a request nor a reply is kept, shown raw.
            Rpc::Other => out.push(Entry {
                t,
                source,
                app: None,
                kind: EntryKind::RpcOther {
                    conn,
                    dir,
                    raw: raw_words(msg),
                },
            }),
            Rpc::Call { call, meaning } => {
                let app = meaning.target_id().map(|i| self.app(i));
                out.push(Entry {
                    t,
                    source,
                    app,
                    kind: EntryKind::RequestAsked {
                        conn,
                        id: call.id,
                        // Every request the recorder decoded has a number.
                        ask: paired.ask.unwrap_or_default(),
                        call: meaning,
                    },
                });
            }
            Rpc::Reply(reply) => {
                let Paired { ask, asked } = paired;
                let method = asked.as_ref().map(|a| a.method.clone());
                let latency_ns = asked.as_ref().map(|a| t.saturating_sub(a.t));
                let (outcome, procs, new_pid, result) = match &reply.outcome {
                    Err(e) => (
                        Outcome::Error {
                            message: e.message.clone(),
                        },
                        Vec::new(),
                        None,
                        None,
                    ),
                    Ok(args) => {
                        let read = ReplyProcs::read(method.as_deref(), args);
                        let new_pid = read.new_pid();
                        let procs = read.procs();
                        let result = if procs.is_empty() {
                            result_words(args)
                        } else {
                            None
                        };
                        (Outcome::Ok, procs, new_pid, result)
                    }
                };
                for p in &procs {
                    self.learn_proc(p);
                }
                let pm_id = asked.as_ref().and_then(|a| a.pm_id).or_else(|| {
                    (method.as_deref() != Some("getMonitorData"))
                        .then(|| procs.first().and_then(|p| p.pm_id))
                        .flatten()
                });
                let app = pm_id.map(|i| self.app(i));
                out.push(Entry {
                    t,
                    source,
                    app,
                    kind: EntryKind::RequestAnswered {
                        conn,
                        id: reply.id,
                        ask,
                        method,
                        latency_ns,
                        outcome,
                        new_pid,
                        procs,
                        result,
                    },
                });
            }
        }
    }

    fn bus(&mut self, t: MonoNs, msg: &Message, out: &mut Vec<Entry>) {
        let source = Source::Bus;
        let Some(ev) = BusEvent::from_message(msg) else {
            let kind = EntryKind::Bus(BusEvent::Other {
                name: "(not an event)".into(),
                payload: Json::from(serde_json::Value::String(raw_words(msg))),
            });
            out.push(Entry {
                t,
                source,
                app: None,
                kind,
            });
            return;
        };
        match ev {
            BusEvent::ProcessEvent(pe) => {
                self.learn(pe.pm_id, pe.name.as_deref());
                if let (Some(id), Some(s)) = (pe.pm_id, &pe.exec_path) {
                    self.learn_script(s, id);
                }
                if let Some(id) = pe.pm_id {
                    for p in &pe.tree_pids {
                        self.learn_pid(*p, id);
                    }
                }
                let app = pe.pm_id.map(|i| self.app(i));
                out.push(Entry {
                    t,
                    source,
                    app,
                    kind: EntryKind::Bus(BusEvent::ProcessEvent(pe)),
                });
            }
            BusEvent::Log {
                stream,
                pm_id,
                name,
                at,
                mut data,
            } => {
                self.learn(pm_id, name.as_deref());
                let app = pm_id.map(|i| self.app_named(i, name));
                let entry = |app, line| Entry {
                    t,
                    source,
                    app,
                    kind: EntryKind::AppLog { stream, at, line },
                };
                // One line short enough to keep whole (most output): the data is the line,
                // without a copy.
                if let Some(line) = single_line(&data) {
                    if line.len() <= MAX_LINE_CHARS {
                        data.truncate(line.len());
                        out.push(entry(app, data));
                        return;
                    }
                }
                let mut n = 0usize;
                let mut lines = data.lines();
                for line in lines.by_ref().take(MAX_LINES_PER_MESSAGE) {
                    n += 1;
                    out.push(entry(app.clone(), cap_line(line)));
                }
                let rest = lines.count();
                if rest > 0 {
                    let line = format!("[{rest} more lines in this chunk not shown]");
                    out.push(entry(app.clone(), line));
                }
                if n == 0 {
                    out.push(entry(app, String::new()));
                }
            }
            BusEvent::DaemonLog { at, lines } => {
                for log in lines.into_iter().take(MAX_LINES_PER_MESSAGE) {
                    let app = self.daemon_app(&log);
                    let log = match log {
                        DaemonLogLine::Other { text } => DaemonLogLine::Other {
                            text: cap_line(&text),
                        },
                        l => l,
                    };
                    out.push(Entry {
                        t,
                        source,
                        app,
                        kind: EntryKind::Daemon { at, log },
                    });
                }
            }
            BusEvent::ProcessMsg {
                pm_id, ref name, ..
            } => {
                self.learn(pm_id, name.as_deref());
                let app = pm_id.map(|i| self.app(i));
                out.push(Entry {
                    t,
                    source,
                    app,
                    kind: EntryKind::Bus(ev),
                });
            }
            other => out.push(Entry {
                t,
                source,
                app: None,
                kind: EntryKind::Bus(other),
            }),
        }
    }

    /// The app a daemon log line is about; learns names and pids from it.
    fn daemon_app(&mut self, log: &DaemonLogLine) -> Option<AppRef> {
        match log {
            DaemonLogLine::SpawnFailed { .. } => return self.last_starting.map(|i| self.app(i)),
            DaemonLogLine::MemoryRestart { id } => return Some(self.app(*id)),
            DaemonLogLine::WatchRestart { app, .. } => {
                let id = self
                    .names
                    .iter()
                    .find(|(_, n)| ***n == **app)
                    .map(|(i, _)| *i)?;
                return Some(self.app(id));
            }
            DaemonLogLine::Starting { id, .. } => self.last_starting = Some(*id),
            _ => {}
        }
        if let Some((name, id)) = log.app() {
            self.learn(Some(id), Some(name));
            match log {
                DaemonLogLine::Stopping { .. } => {
                    self.stopping.insert(id);
                }
                DaemonLogLine::CouldNotBeStopped { .. } => {
                    self.stopping.remove(&id);
                }
                _ => {}
            }
            if let Some(pid) = log.pid() {
                if !matches!(log, DaemonLogLine::StaleExitIgnored { .. }) {
                    self.learn_pid(pid, id);
                }
            }
            return Some(self.app(id));
        }
        if let DaemonLogLine::TooManyUnstableRestarts { script, .. } = log {
            let id = match self.scripts.get(script) {
                Some(known) => *known,
                // Known by name only (dump.pm2 keeps no pm_id).
                None => self.script_names.get(script).and_then(|name| {
                    self.names
                        .iter()
                        .find(|(_, n)| ***n == **name)
                        .map(|(i, _)| *i)
                }),
            };
            return id.map(|i| self.app(i));
        }
        if let DaemonLogLine::ReloadBecameRestart { id } = log {
            return Some(self.app(*id));
        }
        let pid = log.pid()?;
        let id = match self.pids.get(&pid) {
            Some(id) => *id,
            // A kill line for a pid not seen before: the app being stopped, if only one is.
            None if self.stopping.len() == 1 => {
                let id = *self.stopping.iter().next()?;
                self.learn_pid(pid, id);
                id
            }
            None => return None,
        };
        if matches!(
            log,
            DaemonLogLine::TreeKilled { .. }
                | DaemonLogLine::ProcessKilled { .. }
                | DaemonLogLine::CouldNotBeKilled { .. }
        ) {
            self.stopping.remove(&id);
        }
        Some(self.app(id))
    }
}

/// The one line `data` holds, as `str::lines` gives it, when it holds exactly one (a line
/// ending is optional); one search for a newline instead of walking the lines.
fn single_line(data: &str) -> Option<&str> {
    // Most output lines are short: a plain loop finds the newline sooner than a search
    // call does.
    let newline = if data.len() <= SHORT_LINE {
        data.bytes().position(|c| c == b'\n')
    } else {
        data.find('\n')
    };
    let line = match newline {
        None if data.is_empty() => return None,
        None => return Some(data),
        Some(end) if end + 1 == data.len() => &data[..end],
        Some(_) => return None,
    };
    Some(line.strip_suffix('\r').unwrap_or(line))
}

/// Data of at most this many bytes is searched for a newline byte by byte.
const SHORT_LINE: usize = 64;

fn cap_line(line: &str) -> String {
    if line.len() <= MAX_LINE_CHARS {
        return line.to_owned();
    }
    let mut s: String = line.chars().take(MAX_LINE_CHARS).collect();
    s.push('…');
    s
}

/// A message as short text, for ones that fit no known shape.
fn raw_words(msg: &Message) -> String {
    let parts: Vec<String> = msg
        .args
        .iter()
        .map(|a| match a {
            Arg::Json(v) => cap_line(&format!("j:{v}")),
            Arg::Str(s) => cap_line(&format!("s:{s}")),
            Arg::Raw(b) => format!("<{} raw bytes>", b.len()),
        })
        .collect();
    cap_line(&parts.join(" "))
}

/// Words for a reply that carries no process: `7.0.4`, `{"success":true}`.
fn result_words(args: &[Node]) -> Option<String> {
    match args {
        [] => None,
        [v] => match v.scalar() {
            Some(s) if s.is_string() || s.is_number() || s.is_boolean() => Some(json_text(&s)),
            _ => {
                let s = v.value().to_string();
                (s.len() <= 80).then_some(s)
            }
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::CaptureReader;

    /// The one-line fast path takes a chunk of output as one line exactly when `str::lines`
    /// gives one line, and gives that line.
    #[test]
    fn a_single_line_is_what_lines_gives() {
        for data in [
            "", "a", "a\n", "a\r\n", "a\r", "\n", "\r\n", "\r", "a\r\r\n", "a\n\n", "a\nb", "\na",
            "a\rb\n", "é\n", "\n\n",
        ] {
            // Short and long data (searched differently), the newline at either side of
            // where the search changes.
            for pad in [0, 60, 61, 62, 63, 64, 65, 100] {
                let data = format!("{}{data}", "x".repeat(pad));
                let mut lines = data.lines();
                let want = match (lines.next(), lines.next()) {
                    (Some(line), None) => Some(line),
                    _ => None,
                };
                assert_eq!(single_line(&data), want, "{data:?}");
            }
        }
    }

    /// An app's output becomes one entry per line (the one-line fast path included), each
    /// line as `str::lines` splits it and cut to its bound.
    #[test]
    fn app_output_is_split_into_lines() {
        use crate::event::WireMessage;
        let long = "é".repeat(MAX_LINE_CHARS + 1);
        let exact = "x".repeat(MAX_LINE_CHARS);
        for data in [
            "a",
            "a\n",
            "a\r\n",
            "a\r",
            "",
            "\n",
            "\r\n",
            "a\nb",
            "a\n\nb\n",
            "\na",
            "a\rb\n",
            &long,
            &exact,
            &format!("{exact}x\n"),
        ] {
            let msg = Message::new(vec![
                Arg::Str("log:out".into()),
                Arg::json(
                    serde_json::json!({"process": {"pm_id": 0, "name": "web"}, "data": data, "at": 5}),
                ),
            ]);
            let ev = Stamped {
                t: 1,
                event: Event::BusMessage {
                    msg: WireMessage(msg),
                },
            };
            let mut interp = Interpreter::new(&CaptureInfo::default());
            let got: Vec<String> = interp
                .push(&ev)
                .into_iter()
                .map(|e| match e.kind {
                    EntryKind::AppLog { line, at, .. } => {
                        assert_eq!(at, Some(5));
                        assert_eq!(e.app.and_then(|a| a.name).as_deref(), Some("web"));
                        line
                    }
                    other => panic!("{other:?}"),
                })
                .collect();
            let mut want: Vec<String> = data.lines().map(cap_line).collect();
            if want.is_empty() {
                want.push(String::new());
            }
            assert_eq!(got, want, "{data:?}");
        }
    }

    /// The shipped captures recorded before the tap paired (all but those recorded since,
    /// which the tap paired): read, they are paired by the interpreter. Paired as the tap
    /// pairs (the same [`Pairing`], its result stored in the events), each gives the same
    /// entries: the interpreter reads the method, the latency, the app and what a close left
    /// unanswered from the events alone.
    #[test]
    fn shipped_captures_read_the_same_paired_by_the_tap_or_when_read() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/captures");
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "bin"))
            .collect();
        paths.sort();
        assert!(paths.len() >= 10, "captures in {dir}: {paths:?}");
        let mut answered = 0;
        for path in paths {
            let r = CaptureReader::open(&path).unwrap();
            let info = r.info().clone();
            if info.rpc_paired {
                continue;
            }
            let events: Vec<Stamped> = r.map(Result::unwrap).collect();
            let mut tap = Pairing::new();
            let paired: Vec<Stamped> = events
                .iter()
                .cloned()
                .map(|mut ev| {
                    let t = ev.t;
                    match &mut ev.event {
                        Event::RpcMessage { conn, dir, msg, .. } => {
                            let p = tap.pair(t, *conn, &Rpc::decode(*dir, &msg.0));
                            if let Event::RpcMessage { ask, asked, .. } = &mut ev.event {
                                (*ask, *asked) = (p.ask, p.asked.map(Box::new));
                            }
                        }
                        Event::RpcClose {
                            conn, unanswered, ..
                        } => *unanswered = tap.close(*conn),
                        _ => {}
                    }
                    ev
                })
                .collect();
            let mut interp = Interpreter::new(&info);
            let read: Vec<Entry> = events.iter().flat_map(|e| interp.push(e)).collect();
            let tap_info = CaptureInfo {
                rpc_paired: true,
                ..info
            };
            let mut interp = Interpreter::new(&tap_info);
            let stored: Vec<Entry> = paired.iter().flat_map(|e| interp.push(e)).collect();
            assert_eq!(read, stored, "{}", path.display());
            answered += read
                .iter()
                .filter(|e| matches!(e.kind, EntryKind::RequestAnswered { ask: Some(_), .. }))
                .count();
        }
        assert!(answered > 100, "{answered} replies paired");
    }

    /// One stream of events from an older capture (no pairing stored) then a newer one
    /// (paired by the recorder), as a directory of segments across an upgrade gives: the
    /// older requests are paired here, the newer ones read from their events, and a newer
    /// reply that answers nothing is not paired with an older request.
    #[test]
    fn older_events_are_paired_here_and_newer_ones_read() {
        use crate::event::{Asked, Direction, WireMessage};
        use crate::wire::rpc::{encode_call, encode_reply};
        let rpc = |t, conn, dir, msg, ask, asked: Option<Asked>| Stamped {
            t,
            event: Event::RpcMessage {
                conn,
                dir,
                msg: WireMessage(msg),
                ask,
                asked: asked.map(Box::new),
            },
        };
        let stop = || encode_call("stopProcessId", vec![serde_json::json!(0)], "1");
        let done = || encode_reply(vec![], "1");
        let events = [
            // Older: nothing stored; a request left waiting on connection 2.
            rpc(1, 1, Direction::ToDaemon, stop(), None, None),
            rpc(2, 1, Direction::ToClient, done(), None, None),
            rpc(3, 2, Direction::ToDaemon, stop(), None, None),
            // Newer, numbered from 1 again.
            rpc(10, 1, Direction::ToDaemon, stop(), Some(1), None),
            rpc(
                12,
                1,
                Direction::ToClient,
                done(),
                Some(1),
                Some(Asked {
                    t: 10,
                    method: "stopProcessId".into(),
                    pm_id: Some(0),
                }),
            ),
            rpc(13, 2, Direction::ToClient, done(), None, None),
        ];
        let mut interp = Interpreter::new(&CaptureInfo::default());
        let answers: Vec<_> = events
            .iter()
            .flat_map(|e| interp.push(e))
            .filter_map(|e| match e.kind {
                EntryKind::RequestAnswered {
                    ask,
                    method,
                    latency_ns,
                    ..
                } => Some((e.t, ask, method, latency_ns)),
                _ => None,
            })
            .collect();
        assert_eq!(
            answers,
            vec![
                (2, Some(1), Some("stopProcessId".into()), Some(1)),
                (12, Some(1), Some("stopProcessId".into()), Some(2)),
                (13, None, None, None),
            ]
        );
    }
}
