//! Secrets never reach a capture in clear.
//!
//! Environment values (in restartProcessId requests, getMonitorData replies, bus events and
//! process environments) are replaced by a keyed hash: HMAC-SHA256 under a random key made
//! for this capture and never stored. Equal values still compare equal inside one capture
//! and a changed value shows as a changed hash, so "which keys changed" survives, while the
//! values cannot be recovered or guessed offline.

use crate::event::Event;
use crate::wire::json::scan;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    /// HMAC-SHA256 keyed with the capture's key, cloned for each value (the key schedule is
    /// done once).
    mac: Hmac<Sha256>,
    /// Hashes already computed, by value: a poller's replies repeat the same environment
    /// every time. Bounded: emptied when full.
    seen: Mutex<HashMap<Box<str>, Box<str>>>,
    /// Large objects redacted before, by their text: a poller's replies repeat each app's
    /// `pm2_env` between restarts, so it is looked up, not walked and hashed again.
    /// Bounded by [`MEMO_MAX_BYTES`]: emptied when full.
    memo: Mutex<Memo>,
}

/// Objects at least this long are remembered once redacted.
const MEMO_MIN: usize = 512;
/// Text kept by the memo, at most (its keys and redacted copies).
const MEMO_MAX_BYTES: usize = 16 << 20;

/// An object's redacted text and its tape; None when redaction changed nothing.
type Redacted = Option<(Arc<str>, Arc<[(u32, u32)]>)>;

#[derive(Default)]
struct Memo {
    /// By [`Memo::sample`] of an object's text: (the text, its depth, what it became).
    objects: HashMap<u64, Vec<(Box<str>, usize, Redacted)>>,
    bytes: usize,
}

impl Memo {
    /// A hash of a text's length and its first and last 256 bytes: enough to tell apart
    /// the objects a reply holds (the whole text is compared on a match), without hashing
    /// every byte of every object on every reply.
    ///
    /// The mixing is FxHash's (a rotate, an xor and a multiply per eight bytes): this runs
    /// for every object of every reply, and SipHash over those bytes was a tenth of the
    /// recorder loop's time. The buckets' keys were never secret (the old hasher had fixed
    /// keys), and a match is always confirmed on the whole text.
    fn sample(v: &str) -> u64 {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let b = v.as_bytes();
        let mut h = (b.len() as u64).wrapping_mul(K);
        let head = &b[..b.len().min(256)];
        let tail = &b[b.len().saturating_sub(256)..];
        for part in [head, tail] {
            let mut words = part.chunks_exact(8);
            for w in &mut words {
                let w = u64::from_le_bytes(w.try_into().expect("eight bytes"));
                h = (h.rotate_left(5) ^ w).wrapping_mul(K);
            }
            let mut last = [0u8; 8];
            let rest = words.remainder();
            last[..rest.len()].copy_from_slice(rest);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(last)).wrapping_mul(K);
        }
        h
    }

    fn get(&self, v: &str, depth: usize) -> Option<Redacted> {
        self.objects
            .get(&Memo::sample(v))?
            .iter()
            .find(|(text, d, _)| *d == depth && **text == *v)
            .map(|(_, _, r)| r.clone())
    }

    fn put(&mut self, v: &str, depth: usize, redacted: Redacted) {
        let size = v.len() + redacted.as_ref().map_or(0, |r| r.0.len());
        if size > MEMO_MAX_BYTES / 16 {
            return;
        }
        if self.bytes + size > MEMO_MAX_BYTES {
            *self = Memo::default();
        }
        self.bytes += size;
        let bucket = self.objects.entry(Memo::sample(v)).or_default();
        bucket.retain(|(text, d, _)| !(*d == depth && **text == *v));
        bucket.push((v.into(), depth, redacted));
    }
}

/// Values whose hash is kept for reuse, and the longest value kept (so a few MB at most).
const SEEN_MAX: usize = 16_384;
const SEEN_VALUE_MAX: usize = 256;

/// Nesting below which a payload is walked; a deeper value is hashed whole (no pm2 payload
/// comes near; a hostile client's must not exhaust the stack).
const MAX_DEPTH: usize = 128;

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
        Redactor::keyed(mode, key)
    }

    fn keyed(mode: RedactMode, key: [u8; 32]) -> Self {
        Redactor {
            mode,
            mac: <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key"),
            seen: Mutex::new(HashMap::new()),
            memo: Mutex::new(Memo::default()),
        }
    }

    /// A redactor with a given key, for tests.
    #[cfg(test)]
    pub(crate) fn with_key(mode: RedactMode, key: [u8; 32]) -> Self {
        Redactor::keyed(mode, key)
    }

    /// The keyed hash standing for `value`.
    pub(crate) fn hash(&self, value: &str) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = seen.get(value) {
            return h.to_string();
        }
        let mut mac = self.mac.clone();
        mac.update(value.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = String::with_capacity(REDACTED_PREFIX.len() + 13);
        out.push_str(REDACTED_PREFIX);
        for b in &tag[..6] {
            use std::fmt::Write;
            let _ = write!(out, "{b:02x}");
        }
        out.push('>');
        // Only short values are kept: a client's payload is not to be trusted with memory.
        if value.len() <= SEEN_VALUE_MAX {
            if seen.len() >= SEEN_MAX {
                seen.clear();
            }
            seen.insert(value.into(), out.as_str().into());
        }
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

    /// Redact an event in place before it is stored. JSON arguments are rewritten on their
    /// text: only the values that change are replaced, no tree is built.
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
                        let doc = j.doc();
                        let mut out = Rewrite::new(doc);
                        if daemon_log {
                            if doc.text().starts_with('{') {
                                for (k, child) in doc.members(doc.text()) {
                                    if scan::unescape(k) != "data" {
                                        self.json(&mut out, child, false, 1);
                                    }
                                }
                            }
                        } else {
                            self.json(&mut out, doc.text(), false, 0);
                        }
                        if let Some((text, tape)) = out.finish() {
                            j.set_valid_text(text, Some(tape));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Redact a JSON value from PM2 (`v`, a slice of the text `out` rewrites): env objects,
    /// pm2_env objects, and (mode `all`) every free-text string.
    fn json(&self, out: &mut Rewrite, v: &str, inside_env: bool, depth: usize) {
        if depth > MAX_DEPTH {
            return self.replace_whole(out, v);
        }
        match v.as_bytes().first() {
            Some(b'{') if v.len() >= MEMO_MIN && !inside_env => {
                let memo = || self.memo.lock().unwrap_or_else(|e| e.into_inner());
                let hit = memo().get(v, depth);
                match hit {
                    Some(None) => out.remembered += 1,
                    Some(Some((text, tape))) => {
                        out.remembered += 1;
                        out.replace_json(v, text, tape);
                    }
                    None => {
                        let first = out.edits.len();
                        let inner = out.remembered;
                        self.object(out, v, inside_env, depth);
                        // Only the innermost large objects are remembered (an app's
                        // `pm2_env`): an object holding a remembered one (a getMonitorData
                        // entry, whose `monit` changes every poll) would come back different
                        // each time, and its copies would push the `pm2_env`s out.
                        if out.remembered == inner {
                            let redacted = out.redacted(v, first);
                            memo().put(v, depth, redacted);
                            out.remembered += 1;
                        }
                    }
                }
            }
            Some(b'{') => self.object(out, v, inside_env, depth),
            Some(b'[') => {
                for item in out.doc.items(v) {
                    self.json(out, item, inside_env, depth + 1);
                }
            }
            _ => {}
        }
    }

    /// [`Redactor::json`] of an object.
    fn object(&self, out: &mut Rewrite, v: &str, inside_env: bool, depth: usize) {
        {
            {
                let members: Vec<(std::borrow::Cow<str>, &str)> = out
                    .doc
                    .members(v)
                    .map(|(k, child)| (scan::unescape(k), child))
                    .collect();
                let has = |key: &str| members.iter().any(|(k, _)| k == key);
                let pm2_env = has("pm_id") && (has("pm_exec_path") || has("exec_interpreter"));
                for (k, child) in &members {
                    let k: &str = k;
                    let env_like = inside_env || k == "env" || k.starts_with("env_");
                    if env_like || (pm2_env && !PM2_CONFIG_KEYS.contains(&k)) {
                        self.env_tree(out, k, child, depth + 1);
                    } else if self.mode == RedactMode::All && FREE_TEXT_KEYS.contains(&k) {
                        self.all_strings(out, child, depth + 1);
                    } else if self.mode == RedactMode::All && k == "raw" {
                        // `process:msg`: what an app sent with `process.send`, except the
                        // protocol word `ready` (wait_ready, reloads).
                        if !(child.starts_with('"') && scan::unescape(child) == "ready") {
                            self.all_strings(out, child, depth + 1);
                        }
                    } else {
                        self.json(out, child, false, depth + 1);
                    }
                }
            }
        }
    }

    /// Every string below a free-text key (mode `all`).
    fn all_strings(&self, out: &mut Rewrite, v: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return self.replace_whole(out, v);
        }
        match v.as_bytes().first() {
            Some(b'"') => {
                let s = scan::unescape(v);
                if !s.starts_with(REDACTED_PREFIX) {
                    out.replace(v, &self.hash(&s));
                }
            }
            Some(b'[') => out
                .doc
                .items(v)
                .for_each(|i| self.all_strings(out, i, depth + 1)),
            Some(b'{') => out
                .doc
                .members(v)
                .for_each(|(_, c)| self.all_strings(out, c, depth + 1)),
            _ => {}
        }
    }

    /// Everything below an environment key: scalars hashed, structure kept.
    fn env_tree(&self, out: &mut Rewrite, key: &str, v: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return self.replace_whole(out, v);
        }
        match v.as_bytes().first() {
            Some(b'{') => {
                for (k, child) in out.doc.members(v) {
                    self.env_tree(out, &scan::unescape(k), child, depth + 1);
                }
            }
            Some(b'[') => out
                .doc
                .items(v)
                .for_each(|i| self.env_tree(out, key, i, depth + 1)),
            Some(b'"') => {
                let s = scan::unescape(v);
                if !s.starts_with(REDACTED_PREFIX) {
                    let red = self.env_value(key, &s);
                    if red != s {
                        out.replace(v, &red);
                    }
                }
            }
            Some(b't' | b'f' | b'n') | None => {}
            Some(_) => {
                // A number, as a tree would print it (`1e3` is `1000.0`).
                let text = serde_json::from_str::<serde_json::Number>(v)
                    .map(|n| n.to_string())
                    .unwrap_or_else(|_| v.to_owned());
                let red = self.env_value(key, &text);
                if red != text {
                    out.replace(v, &red);
                }
            }
        }
    }

    /// A value nested deeper than [`MAX_DEPTH`]: hashed whole, as one string.
    fn replace_whole(&self, out: &mut Rewrite, v: &str) {
        out.replace(v, &self.hash(v));
    }
}

/// A JSON text being rewritten: replacements of slices of it (in order, not overlapping)
/// by strings, applied in one copy at the end.
struct Rewrite<'a> {
    /// The text, walked with its tape.
    doc: scan::Doc<'a>,
    text: &'a str,
    /// Byte range replaced, and the JSON text that replaces it.
    edits: Vec<scan::Edit>,
    /// Objects found in the memo or put into it so far.
    remembered: usize,
}

impl<'a> Rewrite<'a> {
    fn new(doc: scan::Doc<'a>) -> Rewrite<'a> {
        Rewrite {
            doc,
            text: doc.text(),
            edits: Vec::new(),
            remembered: 0,
        }
    }

    /// Replace `slice` (a slice of the text) by the JSON string `with`.
    fn replace(&mut self, slice: &str, with: &str) {
        let start = slice.as_ptr() as usize - self.text.as_ptr() as usize;
        let json = serde_json::to_string(with).expect("a string always serialises");
        self.edits.push(scan::Edit {
            range: start..start + slice.len(),
            with: json.into(),
            tape: Arc::new([]),
        });
    }

    /// Replace `slice` by the JSON text `with`, whose tape is `tape`.
    fn replace_json(&mut self, slice: &str, with: Arc<str>, tape: Arc<[(u32, u32)]>) {
        let start = slice.as_ptr() as usize - self.text.as_ptr() as usize;
        self.edits.push(scan::Edit {
            range: start..start + slice.len(),
            with,
            tape,
        });
    }

    /// What `slice` became with the edits from number `first` on (all inside it), and its
    /// tape; None when nothing in it changed.
    fn redacted(&self, slice: &'a str, first: usize) -> Redacted {
        let edits = &self.edits[first..];
        if edits.is_empty() {
            return None;
        }
        let start = slice.as_ptr() as usize - self.text.as_ptr() as usize;
        let local: Vec<scan::Edit> = edits
            .iter()
            .map(|e| scan::Edit {
                range: e.range.start - start..e.range.end - start,
                with: e.with.clone(),
                tape: e.tape.clone(),
            })
            .collect();
        let tape = self.doc.tape_of(slice);
        let (text, tape) = scan::Doc::new(slice, &tape).splice(&local);
        Some((text.into(), tape.into()))
    }

    /// The rewritten text and its tape, if anything was replaced.
    fn finish(self) -> Option<(String, scan::Tape)> {
        (!self.edits.is_empty()).then(|| self.doc.splice(&self.edits))
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use crate::event::WireMessage;
    use crate::wire::amp::{Arg, Message};
    use serde_json::{Map, Value};

    /// The tree-walking redactor this module had before it rewrote text: the model the
    /// text rewriting must agree with.
    struct Model<'a>(&'a Redactor);

    impl Model<'_> {
        fn env_value(&self, key: &str, value: &str) -> String {
            self.0.env_value(key, value)
        }
        fn hash(&self, value: &str) -> String {
            self.0.hash(value)
        }
        /// Redact a JSON value from PM2: env objects, pm2_env objects, and (mode `all`) every
        /// free-text string.
        fn json(&self, v: &mut Value, inside_env: bool) {
            match v {
                Value::Object(map) => {
                    let pm2_env = is_pm2_env(map);
                    for (k, child) in map.iter_mut() {
                        let env_like = inside_env || k == "env" || k.starts_with("env_");
                        if env_like || (pm2_env && !PM2_CONFIG_KEYS.contains(&k.as_str())) {
                            self.env_tree(k, child);
                        } else if self.0.mode == RedactMode::All
                            && FREE_TEXT_KEYS.contains(&k.as_str())
                        {
                            self.all_strings(child);
                        } else if self.0.mode == RedactMode::All && k == "raw" {
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

    /// (text rewritten by `red`, the model's tree) for payload `v`, as a daemon log
    /// message (`log:PM2`) or not.
    pub(super) fn redact_both(red: &Redactor, v: &Value, log: bool) -> (Value, Value) {
        let mut want = v.clone();
        let model = Model(red);
        match (&mut want, log) {
            (Value::Object(m), true) => {
                for (k, child) in m.iter_mut() {
                    if k != "data" {
                        model.json(child, false);
                    }
                }
            }
            (_, true) => {}
            (w, false) => model.json(w, false),
        }
        let mut args = vec![Arg::Json(
            crate::wire::json::Json::parse(v.to_string().as_bytes()).unwrap(),
        )];
        if log {
            args.insert(0, Arg::Str("log:PM2".into()));
        }
        let mut ev = Event::BusMessage {
            msg: WireMessage(Message::new(args)),
        };
        red.event(&mut ev);
        let Event::BusMessage { msg } = ev else {
            unreachable!()
        };
        let got = msg.0.args.last().unwrap().as_payload().unwrap();
        // What is stored is valid JSON.
        let got = serde_json::from_str(&got.to_string()).unwrap();
        (got, want)
    }

    /// Redact `v` the way an RPC message carrying it is redacted.
    pub(super) fn redact(red: &Redactor, v: &mut Value) {
        let mut ev = Event::BusMessage {
            msg: WireMessage(Message::new(vec![Arg::json(v.clone())])),
        };
        // From text, as a message from the wire or a capture.
        if let Event::BusMessage { msg } = &mut ev {
            let text = msg.0.args[0].as_payload().unwrap().to_string();
            msg.0.args[0] = Arg::Json(crate::wire::json::Json::parse(text.as_bytes()).unwrap());
        }
        red.event(&mut ev);
        let Event::BusMessage { msg } = ev else {
            unreachable!()
        };
        *v = msg.0.args[0].as_json().unwrap().clone();
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::redact;
    use super::*;
    use serde_json::json;

    fn r(mode: RedactMode) -> Redactor {
        Redactor::with_key(mode, [7; 32])
    }

    #[test]
    fn restart_request_env_is_hashed_keys_kept() {
        let mut v = json!({"type":"call","method":"restartProcessId","args":[{"id":0,"env":{
            "DB_PASSWORD":"hunter2","name":"web","current_conf":{"env":{"API_KEY":"sk-123"}}}}]});
        redact(&r(RedactMode::Values), &mut v);
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
        redact(&r(RedactMode::Values), &mut v);
        assert_ne!(v["SECRET"], "s3cr3t");
        assert_eq!(v["status"], "online");
        assert_eq!(v["restart_time"], 3);
        assert_eq!(v["pm_exec_path"], "/app.js");
    }

    /// Only short values' hashes are kept for reuse: a client's long values cannot grow it.
    #[test]
    fn long_values_are_hashed_not_kept() {
        let red = r(RedactMode::Values);
        let long = "v".repeat(SEEN_VALUE_MAX + 1);
        assert_eq!(red.hash(&long), red.hash(&long));
        assert!(red.seen.lock().unwrap().is_empty());
        red.hash("short");
        assert_eq!(red.seen.lock().unwrap().len(), 1);
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
        redact(&r(RedactMode::All), &mut v);
        assert!(v["data"].as_str().unwrap().starts_with(REDACTED_PREFIX));
        assert_eq!(v["method"], "restartProcessId");
        assert_eq!(v["event"], "exit");
        assert_eq!(v["status"], "errored");
        assert_eq!(v["process"]["name"], "web");
        // An app's process.send message is its own text; `ready` is pm2's protocol.
        let mut m = json!({"raw": "token=s3cret", "process": {"pm_id": 0}});
        redact(&r(RedactMode::All), &mut m);
        assert!(m["raw"].as_str().unwrap().starts_with(REDACTED_PREFIX));
        let mut o = json!({"raw": {"secret": "x"}});
        redact(&r(RedactMode::All), &mut o);
        assert!(o["raw"]["secret"]
            .as_str()
            .unwrap()
            .starts_with(REDACTED_PREFIX));
        let mut ready = json!({"raw": "ready", "process": {"pm_id": 0}});
        redact(&r(RedactMode::All), &mut ready);
        assert_eq!(ready["raw"], "ready");
    }
}

#[cfg(test)]
mod agreement {
    use super::tests_support::*;
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    const KEYS: &[&str] = &[
        "env",
        "env_production",
        "pm_id",
        "pm_exec_path",
        "exec_interpreter",
        "name",
        "status",
        "data",
        "raw",
        "args",
        "PORT",
        "SECRET",
        "restart_time",
        "process",
        "a",
        "k\"q",
        "é",
    ];
    const STRINGS: &[&str] = &["ready", "<redacted:00>", "hunter2", "", "a\"b\\c\n", "é😀"];

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            prop::sample::select(STRINGS).prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            prop::sample::select(&[1.5f64, -0.25, 1e3, 3e-7][..]).prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(Value::Null),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|m| {
                    Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        })
    }

    proptest! {
        /// Rewriting the text gives what walking a tree gave, in every mode, also for the
        /// daemon's log messages.
        #[test]
        fn text_rewrite_agrees_with_the_tree_model(v in value(), all in any::<bool>(), log in any::<bool>()) {
            let mode = if all { RedactMode::All } else { RedactMode::Values };
            let red = Redactor::with_key(mode, [3; 32]);
            let (got, want) = redact_both(&red, &v, log);
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn deep_payloads_are_hashed_below_the_limit_not_walked() {
        let red = Redactor::with_key(RedactMode::Values, [3; 32]);
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let text = format!(r#"{{"env":{{"SECRET":"s3cret","deep":{deep}}}}}"#);
        let mut ev = Event::BusMessage {
            msg: crate::event::WireMessage(crate::wire::amp::Message::new(vec![
                crate::wire::amp::Arg::Json(
                    crate::wire::json::Json::parse(text.as_bytes()).unwrap(),
                ),
            ])),
        };
        red.event(&mut ev);
        let Event::BusMessage { msg } = ev else {
            unreachable!()
        };
        let out = msg.0.args[0].as_payload().unwrap().to_string();
        assert!(!out.contains("s3cret"));
        assert!(out.len() < 2_000, "the deep value is one hash now");
    }
}

#[cfg(test)]
mod memo {
    use super::*;
    use crate::event::WireMessage;
    use crate::wire::amp::{Arg, Message};
    use crate::wire::json::Json;
    use serde_json::{json, Value};

    fn redact_text(red: &Redactor, text: &str) -> Json {
        let mut ev = Event::BusMessage {
            msg: WireMessage(Message::new(vec![Arg::Json(
                Json::parse(text.as_bytes()).unwrap(),
            )])),
        };
        red.event(&mut ev);
        let Event::BusMessage { msg } = ev else {
            unreachable!()
        };
        msg.0.args[0].as_payload().unwrap().clone()
    }

    /// A remembered object comes out as it did the first time, with a tape that walks it as
    /// scanning does, in the same payload and in the next one.
    #[test]
    fn a_remembered_object_is_redacted_the_same() {
        let env: serde_json::Map<String, Value> = (0..40)
            .map(|i| (format!("VAR_{i}"), json!(format!("secret-{i}"))))
            .collect();
        let proc_ = json!({"pid": 7, "name": "web", "pm2_env": {
            "pm_id": 0, "name": "web", "pm_exec_path": "/app.js", "status": "online",
            "SECRET": "s3cr3t", "env": env, "axm_monitor": {"a": {"value": 1}}}});
        let one = json!([[proc_.clone()]]).to_string();
        let two = json!([[proc_.clone(), proc_]]).to_string();
        let fresh = Redactor::with_key(RedactMode::Values, [9; 32]);
        let want = redact_text(&fresh, &one);
        let want_proc = want.value()[0][0].clone();
        assert!(!want.to_string().contains("s3cr3t") && !want.to_string().contains("secret-3"));
        let red = Redactor::with_key(RedactMode::Values, [9; 32]);
        let got = redact_text(&red, &two);
        assert_eq!(got.value()[0][0], want_proc);
        assert_eq!(got.value()[0][1], want_proc);
        let again = redact_text(&red, &two);
        assert_eq!(again.to_string(), got.to_string());
        // The tape of the spliced text finds every container's end.
        fn walk(n: &crate::wire::json::Node) -> Value {
            if let Some(m) = n.members() {
                return Value::Object(m.map(|(k, v)| (k.into_owned(), walk(&v))).collect());
            }
            if let Some(items) = n.items() {
                return Value::Array(items.iter().map(walk).collect());
            }
            n.scalar().unwrap()
        }
        for j in [&got, &again] {
            assert_eq!(walk(&j.node()), *j.value(), "{j}");
        }
    }

    /// A poller's replies: each entry's `monit` changes every time, its `pm2_env` does not.
    /// The `pm2_env`s are remembered, the entries holding them are not (they would never be
    /// found again, and their copies would fill the memo).
    #[test]
    fn only_the_innermost_large_objects_are_remembered() {
        let env: serde_json::Map<String, Value> = (0..40)
            .map(|i| (format!("VAR_{i}"), json!(format!("secret-{i}"))))
            .collect();
        let reply = |poll: u64| {
            let procs: Vec<Value> = (0..3)
                .map(|id| {
                    json!({"pid": 7 + id, "name": format!("web-{id}"),
                        "monit": {"cpu": poll, "memory": 1000 + poll},
                        "pm2_env": {"pm_id": id, "name": format!("web-{id}"),
                            "pm_exec_path": "/app.js", "status": "online", "env": env}})
                })
                .collect();
            json!([procs]).to_string()
        };
        let red = Redactor::with_key(RedactMode::Values, [9; 32]);
        let fresh = Redactor::with_key(RedactMode::Values, [9; 32]);
        for poll in 0..4 {
            let got = redact_text(&red, &reply(poll));
            assert!(!got.to_string().contains("secret-3"));
            assert_eq!(got.value(), redact_text(&fresh, &reply(poll)).value());
        }
        let memo = red.memo.lock().unwrap();
        let kept: Vec<&str> = memo
            .objects
            .values()
            .flatten()
            .map(|(text, _, _)| &**text)
            .collect();
        assert_eq!(kept.len(), 3, "one per pm2_env");
        assert!(kept
            .iter()
            .all(|t| t.contains("pm_exec_path") && !t.contains("monit")));
    }
}
