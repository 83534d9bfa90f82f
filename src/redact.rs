//! Secrets never reach a capture in clear.
//!
//! Environment values (in restartProcessId requests, getMonitorData replies, bus events and
//! process environments) are replaced by a keyed hash: HMAC-SHA256 under a random key made
//! for this capture and never stored. Equal values still compare equal inside one capture
//! and a changed value shows as a changed hash, so "which keys changed" survives, while the
//! values cannot be recovered or guessed offline.

use crate::event::Event;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

/// What to redact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RedactMode {
    /// Environment values (keys stay readable); the default.
    #[default]
    Values,
    /// Also every other free-text string: app output lines, arguments, paths.
    All,
    /// Nothing: the capture holds secrets in clear. Use only on a test system.
    None,
}

impl RedactMode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            RedactMode::Values => "values",
            RedactMode::All => "all",
            RedactMode::None => "none",
        }
    }
}

/// Prefix of every redacted value, so readers and tests can recognise them.
pub(crate) const REDACTED_PREFIX: &str = "<redacted:";

/// Keys PM2 sets in an app's environment whose values are identifiers, not secrets.
const PM2_ENV_SAFE: &[&str] = &[
    "pm_id",
    "name",
    "PM2_HOME",
    "unique_id",
    "restart_time",
    "NODE_APP_INSTANCE",
    "pm_uptime",
    "created_at",
    "status",
    "exec_mode",
    "instances",
    "unstable_restarts",
    "pm_exec_path",
    "namespace",
    "version",
    "node_version",
    "PM2_USAGE",
    "PM2_JSON_PROCESSING",
    "autorestart",
    "kill_timeout",
    "min_uptime",
    "max_restarts",
    "treekill",
    "exit_code",
    "vizion_running",
];

/// Keys whose values are free text (app output, arguments, paths, error texts): hashed in
/// mode `all`, while the protocol's own words (methods, events, statuses, names) stay.
const FREE_TEXT_KEYS: &[&str] = &[
    "data",
    "args",
    "node_args",
    "script",
    "pm_exec_path",
    "pm_cwd",
    "cwd",
    "pm_out_log_path",
    "pm_err_log_path",
    "pm_pid_path",
    "pm_log_path",
    "out_file",
    "error_file",
    "log_file",
    "pid_file",
    "exec_interpreter",
    "stack",
    "error",
    "message",
    "axm_options",
];

/// Keys of a `pm2_env` object that are PM2's own configuration or state, not environment
/// variables (lib/API/schema.json plus the fields the daemon sets at run time).
const PM2_CONFIG_KEYS: &[&str] = &[
    "script",
    "name",
    "name_prefix",
    "filter_env",
    "namespace",
    "cwd",
    "args",
    "exec_interpreter",
    "node_args",
    "out_file",
    "error_file",
    "log_file",
    "disable_logs",
    "log_type",
    "log_date_format",
    "time",
    "max_memory_restart",
    "pid_file",
    "restart_delay",
    "exp_backoff_restart_delay",
    "source_map_support",
    "disable_source_map_support",
    "wait_ready",
    "instances",
    "kill_timeout",
    "shutdown_with_message",
    "listen_timeout",
    "cron_restart",
    "merge_logs",
    "vizion",
    "autostart",
    "autorestart",
    "stop_exit_codes",
    "watch_delay",
    "watch",
    "ignore_watch",
    "min_uptime",
    "max_restarts",
    "execute_command",
    "exec_mode",
    "force",
    "append_env_to_name",
    "trace",
    "disable_trace",
    "instance_var",
    "pmx",
    "automation",
    "treekill",
    "port",
    "username",
    "uid",
    "gid",
    "windowsHide",
    "kill_retry_time",
    "pm_id",
    "status",
    "restart_time",
    "unstable_restarts",
    "pm_uptime",
    "created_at",
    "pm_exec_path",
    "pm_cwd",
    "pm_out_log_path",
    "pm_err_log_path",
    "pm_pid_path",
    "km_link",
    "vizion_running",
    "NODE_APP_INSTANCE",
    "unique_id",
    "version",
    "node_version",
    "exit_code",
    "axm_actions",
    "axm_monitor",
    "axm_options",
    "axm_dynamic",
    "_pm2_version",
    "prev_restart_delay",
    "restart_task",
    "versioning",
    "username",
    "windowsHide",
    "PM2_HOME",
    "pm2_home",
    "_km_monitored",
    "_tree_pids",
    "env",
    "merge_logs",
    "increment_var",
];

pub(crate) struct Redactor {
    mode: RedactMode,
    key: [u8; 32],
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Redactor {
    /// A redactor with a fresh random key.
    pub(crate) fn new(mode: RedactMode) -> Self {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).expect("the OS random source is unavailable");
        Redactor { mode, key }
    }

    /// A redactor with a given key, for tests.
    #[cfg(test)]
    pub(crate) fn with_key(mode: RedactMode, key: [u8; 32]) -> Self {
        Redactor { mode, key }
    }

    /// The keyed hash standing for `value`.
    pub(crate) fn hash(&self, value: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(value.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = String::with_capacity(REDACTED_PREFIX.len() + 13);
        out.push_str(REDACTED_PREFIX);
        for b in &tag[..6] {
            out.push_str(&format!("{b:02x}"));
        }
        out.push('>');
        out
    }

    /// The value of environment variable `key` as it may be stored.
    pub(crate) fn env_value(&self, key: &str, value: &str) -> String {
        match self.mode {
            RedactMode::None => value.to_owned(),
            RedactMode::Values if PM2_ENV_SAFE.contains(&key) => value.to_owned(),
            _ => self.hash(value),
        }
    }

    /// Redact an event in place before it is stored.
    pub(crate) fn event(&self, ev: &mut Event) {
        if self.mode == RedactMode::None {
            return;
        }
        match ev {
            Event::RpcMessage { msg, .. } | Event::BusMessage { msg } => {
                // The daemon's own log lines are kept: they are how the daemon explains itself.
                let daemon_log = msg.0.args.first().and_then(|a| a.as_str()) == Some("log:PM2");
                for arg in &mut msg.0.args {
                    if let crate::wire::amp::Arg::Json(j) = arg {
                        let v = j.value_mut();
                        if daemon_log {
                            if let Some(Value::Object(m)) = Some(&mut *v) {
                                for (k, child) in m.iter_mut() {
                                    if k != "data" {
                                        self.json(child, false);
                                    }
                                }
                            }
                        } else {
                            self.json(v, false);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Redact a JSON value from PM2: env objects, pm2_env objects, and (mode `all`) every
    /// free-text string.
    pub(crate) fn json(&self, v: &mut Value, inside_env: bool) {
        match v {
            Value::Object(map) => {
                let pm2_env = is_pm2_env(map);
                for (k, child) in map.iter_mut() {
                    let env_like = inside_env || k == "env" || k.starts_with("env_");
                    if env_like || (pm2_env && !PM2_CONFIG_KEYS.contains(&k.as_str())) {
                        self.env_tree(k, child);
                    } else if self.mode == RedactMode::All && FREE_TEXT_KEYS.contains(&k.as_str()) {
                        self.all_strings(child);
                    } else if self.mode == RedactMode::All && k == "raw" {
                        // `process:msg`: what an app sent with `process.send`, except the
                        // protocol word `ready` (wait_ready, reloads).
                        if child.as_str() != Some("ready") {
                            self.all_strings(child);
                        }
                    } else {
                        self.json(child, false);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.json(i, inside_env)),
            _ => {}
        }
    }

    /// Every string below a free-text key (mode `all`).
    fn all_strings(&self, v: &mut Value) {
        match v {
            Value::String(s) if !s.starts_with(REDACTED_PREFIX) => *s = self.hash(s),
            Value::Array(items) => items.iter_mut().for_each(|i| self.all_strings(i)),
            Value::Object(m) => m.values_mut().for_each(|i| self.all_strings(i)),
            _ => {}
        }
    }

    /// Everything below an environment key: scalars hashed, structure kept.
    fn env_tree(&self, key: &str, v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    self.env_tree(k, child);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.env_tree(key, i)),
            Value::String(s) => {
                if !s.starts_with(REDACTED_PREFIX) {
                    *s = self.env_value(key, s)
                }
            }
            Value::Number(n) => {
                let text = n.to_string();
                let red = self.env_value(key, &text);
                if red != text {
                    *v = Value::String(red);
                }
            }
            Value::Bool(_) | Value::Null => {}
        }
    }
}

fn is_pm2_env(map: &Map<String, Value>) -> bool {
    map.contains_key("pm_id")
        && (map.contains_key("pm_exec_path") || map.contains_key("exec_interpreter"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(mode: RedactMode) -> Redactor {
        Redactor::with_key(mode, [7; 32])
    }

    #[test]
    fn restart_request_env_is_hashed_keys_kept() {
        let mut v = json!({"type":"call","method":"restartProcessId","args":[{"id":0,"env":{
            "DB_PASSWORD":"hunter2","name":"web","current_conf":{"env":{"API_KEY":"sk-123"}}}}]});
        r(RedactMode::Values).json(&mut v, false);
        let text = v.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("sk-123"),
            "{text}"
        );
        assert!(text.contains("DB_PASSWORD") && text.contains("API_KEY"));
        assert_eq!(v["args"][0]["env"]["name"], "web");
        assert_eq!(v["method"], "restartProcessId");
    }

    #[test]
    fn pm2_env_top_level_env_vars_hashed_config_kept() {
        let mut v = json!({"pm_id":0,"name":"web","pm_exec_path":"/app.js","status":"online",
            "SECRET":"s3cr3t","restart_time":3,"kill_timeout":1600});
        r(RedactMode::Values).json(&mut v, false);
        assert_ne!(v["SECRET"], "s3cr3t");
        assert_eq!(v["status"], "online");
        assert_eq!(v["restart_time"], 3);
        assert_eq!(v["pm_exec_path"], "/app.js");
    }

    #[test]
    fn equal_values_equal_hashes_and_none_keeps_clear() {
        let red = r(RedactMode::Values);
        assert_eq!(red.hash("a"), red.hash("a"));
        assert_ne!(red.hash("a"), red.hash("b"));
        assert_ne!(
            red.hash("a"),
            Redactor::with_key(RedactMode::Values, [8; 32]).hash("a")
        );
        assert_eq!(r(RedactMode::None).env_value("K", "v"), "v");
    }

    #[test]
    fn all_mode_hashes_free_text_but_keeps_protocol_words() {
        let mut v = json!({"data": "password=1", "process": {"pm_id": 0, "name": "web"}, "type": "call",
            "method": "restartProcessId", "event": "exit", "status": "errored"});
        r(RedactMode::All).json(&mut v, false);
        assert!(v["data"].as_str().unwrap().starts_with(REDACTED_PREFIX));
        assert_eq!(v["method"], "restartProcessId");
        assert_eq!(v["event"], "exit");
        assert_eq!(v["status"], "errored");
        assert_eq!(v["process"]["name"], "web");
        // An app's process.send message is its own text; `ready` is pm2's protocol.
        let mut m = json!({"raw": "token=s3cret", "process": {"pm_id": 0}});
        r(RedactMode::All).json(&mut m, false);
        assert!(m["raw"].as_str().unwrap().starts_with(REDACTED_PREFIX));
        let mut o = json!({"raw": {"secret": "x"}});
        r(RedactMode::All).json(&mut o, false);
        assert!(o["raw"]["secret"]
            .as_str()
            .unwrap()
            .starts_with(REDACTED_PREFIX));
        let mut ready = json!({"raw": "ready", "process": {"pm_id": 0}});
        r(RedactMode::All).json(&mut ready, false);
        assert_eq!(ready["raw"], "ready");
    }
}
