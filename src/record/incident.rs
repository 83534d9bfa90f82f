//! Incidents (`record --dir`): the rules run live, and each finding that becomes final
//! gets a capture file of its own, a line for the journal and, optionally, a command.
//!
//! - [`Detector`] runs on a thread of its own, fed with the timeline entries the recorder
//!   makes (through a bounded queue that never blocks the recorder). Once a second it runs
//!   the rules ([`crate::rules::analyze`], every rule the crate has) on a timeline of the
//!   last [`EPOCH`] or so: two timelines overlap by half an epoch, so memory stays flat on
//!   a recorder that runs for months and every finding shorter than half an epoch is seen
//!   whole by one of them.
//! - A finding at or above `--incident-level` is final once `--after` has passed since its
//!   last evidence (plus [`SETTLE`], for the recorder's reorder window and flush); until
//!   then each analysis replaces it with its latest form.
//! - The incident file is cut from the stream's segments on disk (read through
//!   [`crate::capture::dir`]): `--before` before the first evidence to `--after` after the
//!   last. It is created 0600 with `O_EXCL|O_NOFOLLOW` in the directory, is never touched
//!   by `--keep`, and the oldest beyond `--keep-incidents` are deleted.
//! - `--on-incident CMD` runs through `sh -c` with the file and the summary in the
//!   environment and the finding's JSON on stdin, in a process group of its own that is
//!   killed after `--on-incident-timeout`; a failure is logged. It runs on the incident
//!   thread, never on the recorder's.

use crate::capture::dir::{self, DirEvents};
use crate::capture::CaptureWriter;
use crate::event::{CaptureInfo, Event, MonoNs, NoteLevel, Stamped};
use crate::rules::{Finding, Severity};
use crate::timeline::{Entry, Timeline};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Length of one live timeline; two overlap by half of it.
pub const EPOCH: Duration = Duration::from_secs(600);
/// Added to `--after` before a finding is final: the recorder writes events after a reorder
/// window (up to 2.5 s) and flushes every 0.5 s.
pub const SETTLE: Duration = Duration::from_secs(4);
/// A timeline reports only findings that began this long after it started (earlier ones
/// it may have seen only in part; the older timeline saw them whole).
const WARM_UP: Duration = Duration::from_secs(60);
/// Entries waiting for the detector; beyond this they are dropped (and counted).
const QUEUE: usize = 4096;

/// What `record --dir` was told about incidents.
#[derive(Debug, Clone)]
pub struct IncidentConfig {
    pub level: Severity,
    pub before: Duration,
    pub after: Duration,
    pub keep_incidents: usize,
    pub on_incident: Option<String>,
    pub command_timeout: Duration,
}

enum Msg {
    Session(Box<CaptureInfo>),
    Entries(Vec<Entry>),
}

/// The recorder's end: hands entries to the detector thread without ever waiting.
pub struct DetectorHandle {
    tx: Option<SyncSender<Msg>>,
    thread: Option<std::thread::JoinHandle<()>>,
    session: Option<(Option<i32>, MonoNs)>,
    dropped: u64,
}

impl DetectorHandle {
    /// Give the detector what the recorder just wrote.
    pub fn on_event(&mut self, info: &CaptureInfo, entries: &[Entry]) {
        let Some(tx) = self.tx.as_ref() else { return };
        let session = (info.daemon_pid, info.mono_ref_ns);
        if self.session != Some(session) {
            self.session = Some(session);
            // A new session must not be lost: wait for room (the detector is quick).
            let _ = tx.send(Msg::Session(Box::new(info.clone())));
        }
        if entries.is_empty() {
            return;
        }
        match tx.try_send(Msg::Entries(entries.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped += 1,
            Err(TrySendError::Disconnected(_)) => self.tx = None,
        }
    }

    /// End the detector: findings still waiting for their `--after` are written with what
    /// was recorded. Call after the segments were closed.
    pub fn finish(mut self) -> u64 {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.dropped
    }
}

/// One finding waiting to become final.
struct Pending {
    finding: Finding,
    info: CaptureInfo,
    first: MonoNs,
    last: MonoNs,
}

struct Live {
    tl: Timeline,
    started: MonoNs,
}

/// The detector thread's state.
pub struct Detector {
    cfg: IncidentConfig,
    dir: PathBuf,
    stream: String,
    info: Option<CaptureInfo>,
    /// Oldest first.
    timelines: VecDeque<Live>,
    pending: HashMap<String, Pending>,
    /// Keys already written (the most recent 10,000).
    done: VecDeque<String>,
    dirty: bool,
}

impl Detector {
    /// Start the detector thread for the stream `stream` of `dir`.
    pub fn spawn(cfg: IncidentConfig, dir: PathBuf, stream: String) -> DetectorHandle {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let det = Detector {
            cfg,
            dir,
            stream,
            info: None,
            timelines: VecDeque::new(),
            pending: HashMap::new(),
            done: VecDeque::new(),
            dirty: false,
        };
        let thread = std::thread::Builder::new()
            .name("incidents".into())
            .spawn(move || det.run(rx))
            .ok();
        DetectorHandle {
            tx: Some(tx),
            thread,
            session: None,
            dropped: 0,
        }
    }

    fn run(mut self, rx: Receiver<Msg>) {
        crate::sched::idle_class();
        let mut last_check = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(250)) {
                Ok(Msg::Session(info)) => {
                    // A new daemon: its pm_ids and clock reference are new.
                    self.timelines.clear();
                    self.info = Some(*info);
                }
                Ok(Msg::Entries(es)) => self.apply(&es),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_check.elapsed() >= Duration::from_secs(1) {
                last_check = Instant::now();
                self.check(crate::event::mono_now(), false);
            }
        }
        self.check(crate::event::mono_now(), true);
    }

    fn apply(&mut self, entries: &[Entry]) {
        let Some(info) = self.info.as_ref() else {
            return;
        };
        let Some(t) = entries.first().map(|e| e.t) else {
            return;
        };
        let epoch = EPOCH.as_nanos() as u64;
        if self.timelines.is_empty()
            || self
                .timelines
                .back()
                .is_some_and(|l| t.saturating_sub(l.started) >= epoch / 2)
        {
            self.timelines.push_back(Live {
                tl: Timeline::new(info),
                started: t,
            });
        }
        while self.timelines.len() > 2 {
            self.timelines.pop_front();
        }
        for l in self.timelines.iter_mut() {
            for e in entries {
                l.tl.apply(e);
            }
        }
        self.dirty = true;
    }

    fn key(f: &Finding, first: MonoNs) -> String {
        format!(
            "{}|{}|{}|{}",
            f.kind,
            f.app.as_deref().unwrap_or(""),
            f.pm_id.map_or(-1, |p| p as i64),
            first / 1_000_000_000
        )
    }

    /// Run the rules when something new arrived, and write the findings that became final
    /// (all that are waiting, when `closing`).
    fn check(&mut self, now: MonoNs, closing: bool) {
        if self.dirty {
            self.dirty = false;
            if let Some(info) = self.info.clone() {
                let warm = WARM_UP.as_nanos() as u64;
                let n = self.timelines.len();
                let mut found: Vec<(String, Finding, MonoNs, MonoNs)> = Vec::new();
                for (i, l) in self.timelines.iter().enumerate() {
                    let oldest = i == 0;
                    for f in crate::rules::analyze(&l.tl) {
                        if f.severity < self.cfg.level {
                            continue;
                        }
                        let Some(first) = f.evidence.iter().map(|e| e.t).min() else {
                            continue;
                        };
                        let last = f.evidence.iter().map(|e| e.t).max().unwrap_or(first);
                        // A younger timeline speaks only of what began after it warmed up.
                        if !oldest && n > 1 && first < l.started + warm {
                            continue;
                        }
                        let key = Self::key(&f, first);
                        if !found.iter().any(|(k, ..)| *k == key) {
                            found.push((key, f, first, last));
                        }
                    }
                }
                for (key, f, first, last) in found {
                    if self.done.contains(&key) {
                        continue;
                    }
                    let p = self.pending.entry(key).or_insert_with(|| Pending {
                        finding: f.clone(),
                        info: info.clone(),
                        first,
                        last,
                    });
                    p.finding = f;
                    p.last = p.last.max(last);
                }
            }
        }
        let wait = (self.cfg.after + SETTLE).as_nanos() as u64;
        let ready: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| closing || now >= p.last.saturating_add(wait))
            .map(|(k, _)| k.clone())
            .collect();
        for key in ready {
            let Some(p) = self.pending.remove(&key) else {
                continue;
            };
            // Findings of the same app whose windows overlap are one incident (a cause and
            // its consequence, e.g. restart-env-changed and crash-loop-errored).
            let (before, after) = (
                self.cfg.before.as_nanos() as u64,
                self.cfg.after.as_nanos() as u64,
            );
            let mut group = vec![(key, p)];
            loop {
                let (lo, hi) = group.iter().fold((u64::MAX, 0), |(lo, hi), (_, p)| {
                    (lo.min(p.first), hi.max(p.last))
                });
                let app = group[0].1.finding.app.clone();
                let more: Vec<String> = self
                    .pending
                    .iter()
                    .filter(|(_, q)| {
                        q.finding.app == app
                            && q.first <= hi.saturating_add(after)
                            && q.last.saturating_add(after) >= lo.saturating_sub(before)
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                if more.is_empty() {
                    break;
                }
                for k in more {
                    if let Some(q) = self.pending.remove(&k) {
                        group.push((k, q));
                    }
                }
            }
            // Most severe first, then the earliest (the cause before its consequence).
            group.sort_by(|a, b| {
                b.1.finding
                    .severity
                    .cmp(&a.1.finding.severity)
                    .then(a.1.first.cmp(&b.1.first))
            });
            let findings: Vec<&Pending> = group.iter().map(|(_, p)| p).collect();
            self.write(&findings);
            for (k, _) in group {
                self.done.push_back(k);
            }
            while self.done.len() > 10_000 {
                self.done.pop_front();
            }
        }
    }

    /// Write one incident for `group` (the findings of one app, most severe first).
    fn write(&self, group: &[&Pending]) {
        let p = group[0];
        let first = group.iter().map(|q| q.first).min().unwrap_or(p.first);
        let last = group.iter().map(|q| q.last).max().unwrap_or(p.last);
        let since = p.info.wall_ns(first) - self.cfg.before.as_nanos() as i128;
        let until = p.info.wall_ns(last) + self.cfg.after.as_nanos() as i128;
        let findings: Vec<&Finding> = group.iter().map(|q| &q.finding).collect();
        match write_incident(
            &self.dir,
            &self.stream,
            &findings,
            &p.info,
            first,
            since,
            until,
        ) {
            Ok((path, events)) => {
                println!("{}", journal_line(&findings, &path, events));
                let _ = std::io::stdout().flush();
                enforce_keep(&self.dir, self.cfg.keep_incidents);
                if let Some(cmd) = &self.cfg.on_incident {
                    run_command(cmd, &findings, &path, self.cfg.command_timeout);
                }
            }
            Err(e) => eprintln!(
                "pm2-trace: cannot write the incident file for {} ({}): {e:#}",
                p.finding.kind,
                p.finding.app.as_deref().unwrap_or("?")
            ),
        }
    }
}

/// One line per incident, for the journal: severity, kinds, app, the file, the summary of
/// the most severe finding.
pub fn journal_line(findings: &[&Finding], path: &Path, events: u64) -> String {
    let f = findings[0];
    let summary: String = f
        .summary
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let kinds: Vec<&str> = findings.iter().map(|f| f.kind.as_str()).collect();
    format!(
        "pm2-trace: incident: {} {} app={} file={} events={events}: {summary}",
        f.severity.name().to_uppercase(),
        kinds.join("+"),
        f.app.as_deref().unwrap_or("-"),
        path.display()
    )
}

fn safe_name(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("app{s}")
    } else {
        s
    }
}

/// Cut the incident's window out of the stream's segments into a new file; returns its
/// path and how many events it holds.
fn write_incident(
    dir: &Path,
    stream: &str,
    findings: &[&Finding],
    session: &CaptureInfo,
    first: MonoNs,
    since: i128,
    until: i128,
) -> anyhow::Result<(PathBuf, u64)> {
    let segments = dir::list_segments(dir)?;
    let files: Vec<PathBuf> = dir::select(&segments, stream, Some(since), Some(until))
        .into_iter()
        .map(|s| s.path.clone())
        .collect();
    let mut events = DirEvents::open(files, Some(since), Some(until))?;
    let info = events.info().clone();
    let base = format!(
        "{}{}-{}",
        dir::INCIDENT_PREFIX,
        dir::utc_stamp(session.wall_ns(first)),
        safe_name(findings[0].app.as_deref().unwrap_or("daemon"))
    );
    // Written under a hidden name, then linked into place whole (never replacing a file):
    // whoever sees an incident file sees all of it.
    let tmp = dir.join(format!(".{base}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut w = CaptureWriter::create(&tmp, &info, false)?;
    let result = copy_events(&mut w, &mut events, findings).and_then(|count| {
        w.finish()?;
        let mut n = 1;
        loop {
            let name = if n == 1 {
                format!("{base}{}", dir::EXTENSION)
            } else {
                format!("{base}-{n}{}", dir::EXTENSION)
            };
            let path = dir.join(name);
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => return Ok((path, count)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => return Err(anyhow::anyhow!("cannot link {}: {e}", path.display())),
            }
        }
    });
    let _ = std::fs::remove_file(&tmp);
    result
}

/// The incident's events, after one note per finding.
fn copy_events(
    w: &mut CaptureWriter,
    events: &mut DirEvents,
    findings: &[&Finding],
) -> anyhow::Result<u64> {
    let mut count = 0u64;
    let mut noted = false;
    for ev in events.by_ref() {
        if !noted {
            noted = true;
            for f in findings {
                let note = Stamped {
                    t: ev.t,
                    event: Event::Note {
                        level: NoteLevel::Warning,
                        text: format!("incident: {} {}: {}", f.severity.name(), f.kind, f.summary),
                    },
                };
                w.write(&note, &super::comment::comment(&note.event, &[]))?;
            }
        }
        match w.write(&ev, &super::comment::comment(&ev.event, &[])) {
            Ok(()) => count += 1,
            Err(crate::capture::CaptureError::TooLarge { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(count)
}

/// Delete the oldest incident files beyond `keep`.
fn enforce_keep(dir: &Path, keep: usize) {
    let list = dir::list_incidents(dir);
    let excess = list.len().saturating_sub(keep);
    for (path, _) in list.into_iter().take(excess) {
        let _ = std::fs::remove_file(path);
    }
}

/// Run `--on-incident` (see the module documentation): stdin gets the most severe
/// finding's JSON; `PM2_TRACE_KINDS` lists every finding of the incident.
fn run_command(cmd: &str, findings: &[&Finding], path: &Path, timeout: Duration) {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let f = findings[0];
    let kinds: Vec<&str> = findings.iter().map(|f| f.kind.as_str()).collect();
    let json = serde_json::to_vec(f).unwrap_or_default();
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .env("PM2_TRACE_INCIDENT_FILE", path)
        .env("PM2_TRACE_SUMMARY", &f.summary)
        .env("PM2_TRACE_KIND", &f.kind)
        .env("PM2_TRACE_KINDS", kinds.join(" "))
        .env("PM2_TRACE_SEVERITY", f.severity.name())
        .env("PM2_TRACE_APP", f.app.as_deref().unwrap_or(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pm2-trace: --on-incident: cannot run `{cmd}`: {e}");
            return;
        }
    };
    // The finding on stdin from a thread of its own: a command that does not read it
    // must not hold the incident thread beyond its time limit.
    if let Some(mut stdin) = child.stdin.take() {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&json);
        });
    }
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return,
            Ok(Some(status)) => {
                eprintln!(
                    "pm2-trace: --on-incident `{cmd}` failed ({status}) for {}",
                    path.display()
                );
                return;
            }
            Ok(None) if Instant::now() >= deadline => {
                // SAFETY: signalling the process group we created for the command.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                eprintln!(
                    "pm2-trace: --on-incident `{cmd}` did not finish within {} s and was killed",
                    timeout.as_secs_f64()
                );
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                eprintln!("pm2-trace: --on-incident `{cmd}`: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding() -> Finding {
        Finding {
            kind: "crash-loop-errored".into(),
            severity: Severity::Error,
            app: Some("web/../x".into()),
            pm_id: Some(0),
            summary: "web:0 ended errored\nafter 16 restarts".into(),
            chain: vec![],
            evidence: vec![],
            remedy: String::new(),
        }
    }

    #[test]
    fn journal_line_is_one_line() {
        let mut second = finding();
        second.kind = "restart-env-changed".into();
        let l = journal_line(&[&finding(), &second], Path::new("/d/incident-x.pcapng"), 3);
        assert!(!l.contains('\n'));
        assert!(
            l.contains("ERROR crash-loop-errored+restart-env-changed app=web/../x file=/d/incident-x.pcapng"),
            "{l}"
        );
    }

    #[test]
    fn app_names_cannot_leave_the_directory() {
        assert_eq!(safe_name("web/../x"), "web_.._x");
        assert_eq!(safe_name(".."), "app..");
        assert_eq!(safe_name(""), "app");
    }

    #[test]
    fn the_command_gets_env_and_stdin_and_a_time_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let cmd = format!(
            "cat > {0}.json; printf '%s|%s|%s' \"$PM2_TRACE_KIND\" \"$PM2_TRACE_INCIDENT_FILE\" \"$PM2_TRACE_SEVERITY\" > {0}",
            out.display()
        );
        run_command(
            &cmd,
            &[&finding()],
            Path::new("/d/i.pcapng"),
            Duration::from_secs(10),
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "crash-loop-errored|/d/i.pcapng|error"
        );
        let json: Finding =
            serde_json::from_slice(&std::fs::read(format!("{}.json", out.display())).unwrap())
                .unwrap();
        assert_eq!(json, finding());
        // A command that hangs is killed at its limit, with its children.
        let start = Instant::now();
        run_command(
            "sleep 30 & sleep 30",
            &[&finding()],
            Path::new("/d/i"),
            Duration::from_millis(300),
        );
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn keep_incidents_deletes_the_oldest() {
        let tmp = tempfile::tempdir().unwrap();
        for t in ["20261126T031204Z", "20261126T041204Z", "20261127T031204Z"] {
            std::fs::write(tmp.path().join(format!("incident-{t}-a.pcapng")), b"x").unwrap();
        }
        enforce_keep(tmp.path(), 2);
        let left: Vec<_> = dir::list_incidents(tmp.path())
            .into_iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            left,
            vec![
                "incident-20261126T041204Z-a.pcapng",
                "incident-20261127T031204Z-a.pcapng"
            ]
        );
    }
}
