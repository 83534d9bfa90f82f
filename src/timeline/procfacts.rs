//! What the timeline needs from a process-watcher event, read from its serialized form.
//!
//! The process watcher's [`ProcEvent`] type is owned by the watcher; reading it through
//! serde keeps the timeline working whatever variants it grows. Understood shapes: the
//! fields at top level (`{"kind": "exit", "pid": 5}`) or in a `who` object with an `app`
//! (`{"kind": "exit", "who": {"pid": 5, "app": {"pm_id": 0, "generation": 3}},
//! "status": {"kind": "code", "code": 1}, "timing": {"how": "kernel"}}`).

use crate::event::ProcEvent;
use crate::pm2::meaning::json_text;
use serde_json::Value;

/// The facts of one process-watcher event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcFacts {
    /// The variant: `exit`, `fork`, `exec`, `tracked`, ...
    pub kind: Option<String>,
    pub pid: Option<i64>,
    /// The app the watcher tied the process to.
    pub pm_id: Option<u64>,
    pub name: Option<String>,
    /// pm2's restart_time of the generation the process belongs to.
    pub generation: Option<u64>,
    /// For exits: `code 1`, `signal SIGKILL`.
    pub exit_status: Option<String>,
    pub cmd: Option<String>,
    /// The time is the kernel's (or a wakeup at the instant), not a later observation.
    pub exact: bool,
}

impl ProcFacts {
    pub fn of(event: &ProcEvent) -> ProcFacts {
        match serde_json::to_value(event) {
            Ok(v) => ProcFacts::from_value(&v),
            Err(_) => ProcFacts::default(),
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
        }
    }

    pub fn is_exit(&self) -> bool {
        self.kind.as_deref() == Some("exit")
    }
}

/// Words for a process-watcher event, from its serialized form: `exit pid=123 detail=...`.
pub fn proc_summary(event: &ProcEvent) -> String {
    event.summary()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    }
}
