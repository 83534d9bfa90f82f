//! What the timeline needs from a process-watcher event, read from its serialized form.
//!
//! The process watcher's [`ProcEvent`] type is owned by the watcher; reading it through
//! serde keeps the timeline working whatever variants it grows. Understood shapes: the
//! fields at top level (`{"kind": "exit", "pid": 5}`) or in a `who` object with an `app`
//! (`{"kind": "exit", "who": {"pid": 5, "app": {"pm_id": 0, "generation": 3}},
//! "status": {"kind": "code", "code": 1}, "timing": {"how": "kernel"}}`).

use super::model::{AppSnapshot, OtherHolder, OtherSocket, SnapProcess, SnapSocket, SnapWhy};
use crate::event::proc::{shorten, Snapshot, SnapshotReason};
use crate::event::{MonoNs, ProcEvent};
use crate::pm2::meaning::json_text;
use serde_json::Value;
use std::collections::BTreeMap;

/// Processes kept per app and snapshot.
pub const SNAP_PROCESSES: usize = 64;
/// Sockets kept per app and snapshot.
pub const SNAP_SOCKETS: usize = 64;

/// The facts of one process-watcher event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcFacts {
    /// The variant: `exit`, `fork`, `exec`, `tracked`, ...
    pub(crate) kind: Option<String>,
    pub(crate) pid: Option<i64>,
    /// The app the watcher tied the process to.
    pub(crate) pm_id: Option<u64>,
    pub(crate) name: Option<String>,
    /// pm2's restart_time of the generation the process belongs to.
    pub(crate) generation: Option<u64>,
    /// For exits: `code 1`, `signal SIGKILL`.
    pub(crate) exit_status: Option<String>,
    pub(crate) cmd: Option<String>,
    /// The time is the kernel's (or a wakeup at the instant), not a later observation.
    pub(crate) exact: bool,
    /// The parent: the forking process of a `fork`, else the parent pid the event names.
    pub(crate) parent: Option<i64>,
    /// For exits: listening addresses it held at its last snapshot.
    pub(crate) held: Vec<String>,
    /// For exits: whether its ancestry still led to the pm2 daemon.
    pub(crate) in_tree: Option<bool>,
    /// The process is the pm2 daemon.
    pub(crate) daemon: bool,
}

impl ProcFacts {
    /// Facts of a typed event, read straight from its fields (the serialized route of
    /// [`ProcFacts::from_value`] cost a tenth of replay's time).
    pub fn of(event: &ProcEvent) -> ProcFacts {
        use crate::event::proc::{ExitStatus, Timing, Who};
        let (kind, who, parent, timing): (&str, &Who, Option<i32>, Option<&Timing>) = match event {
            ProcEvent::Tracked { who, timing, .. } => ("tracked", who, None, Some(timing)),
            ProcEvent::Fork {
                parent,
                who,
                timing,
                ..
            } => ("fork", who, Some(*parent), Some(timing)),
            ProcEvent::Exec { who, timing, .. } => ("exec", who, None, Some(timing)),
            ProcEvent::Attributed { who } => ("attributed", who, None, None),
            ProcEvent::Exit { who, timing, .. } => ("exit", who, None, Some(timing)),
            // Snapshots, mode reports and losses carry no single process: none of their
            // fields is one [`ProcFacts::from_value`] reads, only their kind.
            ProcEvent::Snapshot(_) => return ProcFacts::kind_only("snapshot"),
            ProcEvent::Mode { .. } => return ProcFacts::kind_only("mode"),
            ProcEvent::Lost { .. } => return ProcFacts::kind_only("lost"),
        };
        let (exit_status, held, in_tree) = match event {
            ProcEvent::Exit {
                status,
                held,
                in_tree,
                ..
            } => (
                Some(match status {
                    ExitStatus::Code { code } => format!("code {code}"),
                    ExitStatus::Signal { name, .. } => format!("signal {name}"),
                    ExitStatus::Unknown { .. } => "unknown".to_owned(),
                }),
                held.iter().take(SNAP_SOCKETS).cloned().collect(),
                *in_tree,
            ),
            _ => (None, Vec::new(), None),
        };
        ProcFacts {
            kind: Some(kind.to_owned()),
            pid: Some(i64::from(who.pid)),
            pm_id: who.app.as_ref().map(|a| a.pm_id),
            name: who.app.as_ref().map(|a| a.name.clone()),
            generation: who.app.as_ref().and_then(|a| a.generation),
            exit_status,
            cmd: who.cmd.clone(),
            exact: matches!(timing, Some(Timing::Kernel { .. } | Timing::Wakeup { .. })),
            parent: parent.or(Some(who.ppid)).map(i64::from).filter(|p| *p > 0),
            held,
            in_tree,
            daemon: who.daemon,
        }
    }

    fn kind_only(kind: &str) -> ProcFacts {
        ProcFacts {
            kind: Some(kind.to_owned()),
            ..ProcFacts::default()
        }
    }

    pub fn from_value(v: &Value) -> ProcFacts {
        let who = v.get("who").filter(|w| w.is_object()).unwrap_or(v);
        let app = who
            .get("app")
            .filter(|a| a.is_object())
            .or_else(|| v.get("app").filter(|a| a.is_object()));
        let num = |x: Option<&Value>| x.and_then(Value::as_i64);
        let unum = |x: Option<&Value>| x.and_then(Value::as_u64);
        let pid = num(who.get("pid")).or_else(|| num(v.get("pid")));
        let pm_id = unum(app.and_then(|a| a.get("pm_id"))).or_else(|| unum(v.get("pm_id")));
        let exit_status = match v.get("status") {
            Some(Value::Object(s)) => match s.get("kind").and_then(Value::as_str) {
                Some("code") => s.get("code").map(|c| format!("code {}", json_text(c))),
                Some("signal") => s
                    .get("name")
                    .or_else(|| s.get("sig"))
                    .map(|n| format!("signal {}", json_text(n))),
                Some(other) => Some(other.to_owned()),
                None => None,
            },
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let how = v
            .get("timing")
            .and_then(|t| t.get("how"))
            .and_then(Value::as_str);
        ProcFacts {
            kind: v
                .get("kind")
                .or_else(|| v.get("type"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            pid,
            pm_id,
            name: app
                .and_then(|a| a.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            generation: unum(app.and_then(|a| a.get("generation"))),
            exit_status,
            cmd: who.get("cmd").and_then(Value::as_str).map(str::to_owned),
            exact: matches!(how, Some("kernel" | "wakeup")),
            parent: num(v.get("parent"))
                .or_else(|| num(who.get("ppid")))
                .filter(|p| *p > 0),
            held: v
                .get("held")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .take(SNAP_SOCKETS)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            in_tree: v.get("in_tree").and_then(Value::as_bool),
            daemon: who.get("daemon").and_then(Value::as_bool).unwrap_or(false),
        }
    }

    pub(crate) fn is_exit(&self) -> bool {
        self.kind.as_deref() == Some("exit")
    }
}

/// A snapshot as the model keeps it: one view per app it shows (the app it was taken for,
/// or every app with a process in it when it names none), each holding that app's
/// processes and the sockets they hold (bounded by [`SNAP_PROCESSES`], [`SNAP_SOCKETS`]).
pub fn snapshot_views(t: MonoNs, snap: &Snapshot) -> Vec<(u64, AppSnapshot)> {
    let why = match &snap.reason {
        SnapshotReason::Start => SnapWhy::Start,
        SnapshotReason::StopRequested { .. } => SnapWhy::StopRequested,
        SnapshotReason::RestartRequested { .. } => SnapWhy::RestartRequested,
        SnapshotReason::NewGeneration {
            pid, generation, ..
        } => SnapWhy::NewGeneration {
            pid: pid.map(i64::from),
            generation: *generation,
        },
        SnapshotReason::EarlyExit {
            pid,
            generation,
            lived_ms,
            ..
        } => SnapWhy::EarlyExit {
            pid: i64::from(*pid),
            generation: *generation,
            lived_ms: *lived_ms,
        },
        SnapshotReason::Requested { why, .. } => SnapWhy::Other {
            why: shorten(why, 200),
        },
    };
    let scope = snap.reason.pm_id();
    let mut views: BTreeMap<u64, AppSnapshot> = BTreeMap::new();
    fn view<'a>(
        views: &'a mut BTreeMap<u64, AppSnapshot>,
        scope: Option<u64>,
        t: MonoNs,
        why: &SnapWhy,
        pm_id: u64,
    ) -> Option<&'a mut AppSnapshot> {
        if scope.is_some_and(|s| s != pm_id) {
            return None;
        }
        if !views.contains_key(&pm_id) && views.len() >= 256 {
            return None;
        }
        Some(views.entry(pm_id).or_insert_with(|| AppSnapshot {
            t,
            why: why.clone(),
            processes: Vec::new(),
            sockets: Vec::new(),
            others: Vec::new(),
            paths: Vec::new(),
        }))
    }
    if let Some(id) = scope {
        view(&mut views, scope, t, &why, id);
    }
    for p in &snap.processes {
        let Some(app) = &p.app else { continue };
        if let Some(v) = view(&mut views, scope, t, &why, app.pm_id) {
            if v.processes.len() < SNAP_PROCESSES {
                v.processes.push(SnapProcess {
                    pid: i64::from(p.pid),
                    ppid: i64::from(p.ppid),
                    generation: app.generation,
                    in_tree: p.in_tree,
                    state: p.state.clone(),
                    cmd: shorten(&p.cmdline.join(" "), 200),
                });
            }
        }
    }
    for h in &snap.sockets {
        let Some(app) = &h.app else { continue };
        if h.daemon {
            continue;
        }
        if let Some(v) = view(&mut views, scope, t, &why, app.pm_id) {
            if v.sockets.len() < SNAP_SOCKETS {
                v.sockets.push(SnapSocket {
                    proto: h.proto.name().to_owned(),
                    addr: h.addr.clone(),
                    port: h.port,
                    pid: i64::from(h.pid),
                    generation: app.generation,
                    in_tree: h.in_tree,
                    master: false,
                });
            }
        }
    }
    if let Some(id) = scope {
        if let Some(v) = views.get_mut(&id) {
            others_and_paths(v, id, snap);
        }
    }
    views.into_iter().collect()
}

/// For a snapshot about app `pm_id`: the sockets other apps of the daemon and processes
/// elsewhere on the host held, and where the app's replaced generation started from.
fn others_and_paths(v: &mut AppSnapshot, pm_id: u64, snap: &Snapshot) {
    for h in &snap.sockets {
        let Some(app) = &h.app else { continue };
        if h.daemon || app.pm_id == pm_id || v.others.len() >= SNAP_SOCKETS {
            continue;
        }
        v.others.push(OtherSocket {
            proto: h.proto.name().to_owned(),
            addr: h.addr.clone(),
            port: h.port,
            pid: i64::from(h.pid),
            holder: OtherHolder::App {
                name: app.name.clone(),
                pm_id: app.pm_id,
                generation: app.generation,
                in_tree: h.in_tree,
            },
        });
    }
    for h in &snap.host {
        let Some(first) = h.holders.first() else {
            continue;
        };
        if v.others.len() >= SNAP_SOCKETS * 4 {
            break;
        }
        v.others.push(OtherSocket {
            proto: h.proto.clone(),
            addr: h.addr.clone(),
            port: h.port,
            pid: i64::from(first.pid),
            holder: OtherHolder::Host(first.clone()),
        });
    }
    v.paths = snap
        .paths
        .iter()
        .filter(|p| p.app.as_ref().is_none_or(|a| a.pm_id == pm_id))
        .take(SNAP_PROCESSES)
        .cloned()
        .collect();
}

/// Words for a process-watcher event, from its serialized form: `exit pid=123 detail=...`.
pub fn proc_summary(event: &ProcEvent) -> String {
    event.summary()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Read from the typed event, the facts are those of its serialized form, for every
    /// process event of every shipped capture.
    #[test]
    fn typed_and_serialized_facts_agree_on_every_shipped_capture() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("captures");
        let mut kinds = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "bin") {
                continue;
            }
            for ev in crate::capture::CaptureReader::open(&path).unwrap() {
                if let crate::event::Event::Proc(p) = ev.unwrap().event {
                    let typed = ProcFacts::of(&p);
                    let serialized = ProcFacts::from_value(&serde_json::to_value(&p).unwrap());
                    assert_eq!(typed, serialized, "{}: {p:?}", path.display());
                    kinds.insert(typed.kind.unwrap());
                }
            }
        }
        for k in ["snapshot", "mode", "exit", "fork", "exec", "tracked"] {
            assert!(kinds.contains(k), "no {k} event in captures/: {kinds:?}");
        }
    }

    #[test]
    fn flat_shape() {
        let f = ProcFacts::from_value(&json!({"kind": "exit", "pid": 7, "detail": "x"}));
        assert_eq!(
            (f.kind.as_deref(), f.pid, f.pm_id),
            (Some("exit"), Some(7), None)
        );
        assert!(f.is_exit());
    }

    /// The shape the process watcher is being written with.
    #[test]
    fn watcher_shape() {
        let v = json!({"kind": "exit",
            "who": {"pid": 4242, "start": 1, "ppid": 1, "cmd": "node server.js", "daemon": false,
                    "app": {"pm2_home": "/h", "pm_id": 0, "name": "web", "generation": 3, "unique_id": null},
                    "how": {"from": "environ"}},
            "status": {"kind": "signal", "sig": 9, "name": "SIGKILL", "core": false},
            "via": "netlink", "timing": {"how": "kernel", "kernel_ns": 5, "observed_ns": 6},
            "lived_ns": 100, "held": [], "in_tree": false});
        let f = ProcFacts::from_value(&v);
        assert_eq!(f.pid, Some(4242));
        assert_eq!(
            (f.pm_id, f.name.as_deref(), f.generation),
            (Some(0), Some("web"), Some(3))
        );
        assert_eq!(f.exit_status.as_deref(), Some("signal SIGKILL"));
        assert_eq!(f.cmd.as_deref(), Some("node server.js"));
        assert!(f.exact && f.is_exit());
        let c = ProcFacts::from_value(
            &json!({"kind": "exit", "who": {"pid": 1}, "status": {"kind": "code", "code": 3},
            "timing": {"how": "between", "not_before_ns": 1, "observed_ns": 2}}),
        );
        assert_eq!(c.exit_status.as_deref(), Some("code 3"));
        assert!(!c.exact);
        assert_eq!(ProcFacts::from_value(&json!(null)), ProcFacts::default());
        // Exit facts the rules read: what it held, whether it was in pm2's tree, its parent.
        assert_eq!(f.held, Vec::<String>::new());
        assert_eq!(f.in_tree, Some(false));
        assert_eq!(f.parent, Some(1));
        let fork = ProcFacts::from_value(&json!({"kind": "fork", "parent": 10,
            "who": {"pid": 11, "ppid": 10}}));
        assert_eq!(fork.parent, Some(10));
        let held = ProcFacts::from_value(&json!({"kind": "exit", "who": {"pid": 11, "ppid": 1},
            "held": ["127.0.0.1:80"], "in_tree": true}));
        assert_eq!(held.held, ["127.0.0.1:80"]);
        assert_eq!(held.in_tree, Some(true));
    }

    fn snap(reason: SnapshotReason) -> Snapshot {
        use crate::event::proc::{AppRef, ProcSnap, Proto, SocketHold};
        let app = |pm_id: u64, gen: u64| AppRef {
            pm2_home: "/h".into(),
            pm_id,
            name: format!("app{pm_id}"),
            generation: Some(gen),
            unique_id: None,
        };
        let proc_ = |pid: i32, a: Option<AppRef>, in_tree: bool| ProcSnap {
            pid,
            ppid: 1,
            pgid: pid,
            sid: pid,
            start: 1,
            state: "S".into(),
            cmdline: vec!["node".into(), "/srv/a.js".into()],
            app: a,
            how: None,
            daemon: false,
            in_tree,
        };
        let hold = |pid: i32, a: Option<AppRef>, daemon: bool| SocketHold {
            proto: Proto::Tcp,
            addr: format!("127.0.0.1:{}", 3000 + pid),
            port: Some(3000 + pid as u16),
            inode: 1,
            pid,
            start: 1,
            app: a,
            daemon,
            in_tree: false,
        };
        Snapshot {
            reason,
            processes: vec![
                proc_(5, Some(app(0, 0)), false),
                proc_(6, Some(app(0, 1)), true),
                proc_(7, Some(app(1, 4)), true),
                proc_(8, None, true),
            ],
            sockets: vec![
                hold(5, Some(app(0, 0)), false),
                hold(7, Some(app(1, 4)), false),
                hold(9, None, true),
            ],
            env: vec![],
            notes: vec![],
            cost_us: 1,
            host: vec![],
            paths: vec![],
        }
    }

    #[test]
    fn snapshots_become_one_view_per_app() {
        let s = snap(SnapshotReason::NewGeneration {
            pm_id: 0,
            pid: Some(6),
            generation: Some(1),
        });
        let v = snapshot_views(42, &s);
        assert_eq!(v.len(), 1, "only the app it was taken for: {v:?}");
        let (id, view) = &v[0];
        assert_eq!(*id, 0);
        assert_eq!(view.t, 42);
        assert_eq!(
            view.why,
            SnapWhy::NewGeneration {
                pid: Some(6),
                generation: Some(1)
            }
        );
        assert_eq!(view.processes.len(), 2);
        assert_eq!(view.processes[0].generation, Some(0));
        assert!(!view.processes[0].in_tree);
        assert_eq!(view.processes[0].cmd, "node /srv/a.js");
        assert_eq!(view.sockets.len(), 1);
        assert_eq!(
            (
                view.sockets[0].pid,
                view.sockets[0].port,
                view.sockets[0].generation
            ),
            (5, Some(3005), Some(0))
        );
        // A snapshot for every app: one view per app seen, the daemon's sockets left out.
        let all = snapshot_views(1, &snap(SnapshotReason::Start));
        let ids: Vec<u64> = all.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, [0, 1]);
        assert!(all.iter().all(|(_, v)| v.why == SnapWhy::Start));
        assert_eq!(all[1].1.sockets.len(), 1);
    }
}
