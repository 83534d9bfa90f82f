//! Typed PM2 meaning of RPC calls, replies and bus messages.
//!
//! Shapes were read from pm2 5.4.3 and 7.0.4 (`lib/API.js`, `lib/Client.js`,
//! `lib/Daemon.js`, `lib/God/ActionMethods.js`, `lib/Event.js`, `lib/Utility.js`) and checked
//! against real traffic (tests/fixtures/pm2-*.jsonl):
//!
//! - `restartProcessId` / `reloadProcessId` / `softReloadProcessId`: `[{"id": <pm_id>, "env": {...}}]`.
//!   `env` is the CLI's env sections (`current_conf`, `<app name>`, ...); with `--update-env`
//!   also the caller's whole environment. The daemon merges only non-object values into the
//!   app's environment (`Utility.extend` skips values that stringify to `[object Object]`).
//! - `stopProcessId`, `deleteProcessId`, `startProcessId`: `[<pm_id>]` (a bare number; the
//!   daemon's stopProcessId also accepts `{"id": n}`). The CLI never sends startProcessId:
//!   `pm2 start <existing app>` sends restartProcessId; the daemon calls startProcessId itself.
//! - `notifyByProcessId`: `[{"id": <pm_id>, "action_name": "restart", "manually": true}]`.
//! - `getMonitorData` reply: `[[{"pid", "name", "pm_id", "monit", "pm2_env": {...}}]]`; status,
//!   restart_time, unstable_restarts, pm_uptime, created_at, exec_mode, treekill, and (only when
//!   configured) kill_timeout, min_uptime, max_restarts live in `pm2_env`.
//! - `restartProcessId` reply: the new ChildProcess, cloned: `pid` at top level and at
//!   `_handle.pid` (both 5.4.3 and 7.0.4), also `process.pid`; `pm2_env` as above.
//! - bus: `[s:<event>, j:<payload>]`; `process:event` payload `{event, manually, at, process}`
//!   where `process` is the pm2_env without `env` (7.x adds `_tree_pids`); `log:out` /
//!   `log:err` / `log:PM2` payload `{process: {pm_id, name}, at, data}`.

use super::daemon_log::{self, DaemonLogLine};
use crate::wire::amp::Message;
use crate::wire::json::{scan, Json, KeySet, Node, Walks};
use crate::wire::rpc::Call;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What a request names as its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Target {
    /// A pm_id (what the CLI sends after resolving names).
    Id(u64),
    /// Anything else (a name, `all`, ...), as text.
    Name(String),
}

impl Target {
    fn from_value(v: &Value) -> Option<Target> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .map(Target::Id)
                .or_else(|| Some(Target::Name(n.to_string()))),
            Value::String(s) => Some(
                s.trim()
                    .parse()
                    .map(Target::Id)
                    .unwrap_or_else(|_| Target::Name(s.clone())),
            ),
            Value::Object(o) => o.get("id").and_then(Target::from_value),
            _ => None,
        }
    }

    /// [`Target::from_value`] of a view: an object's `id`, else the scalar.
    fn from_node(v: &Node) -> Option<Target> {
        if v.is_object() {
            return v.get("id").as_ref().and_then(Target::from_node);
        }
        Target::from_value(&v.scalar()?)
    }

    pub(crate) fn pm_id(&self) -> Option<u64> {
        match self {
            Target::Id(n) => Some(*n),
            Target::Name(_) => None,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Id(n) => write!(f, "{n}"),
            Target::Name(s) => write!(f, "{s}"),
        }
    }
}

/// A pm2 client's request, with its PM2 meaning.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "call")]
pub enum Pm2Call {
    #[serde(rename = "restartProcessId")]
    RestartProcessId {
        target: Option<Target>,
        env: Option<SentEnv>,
    },
    /// `reloadProcessId`, or `softReloadProcessId` when `graceful`.
    #[serde(rename = "reloadProcessId")]
    ReloadProcessId {
        target: Option<Target>,
        env: Option<SentEnv>,
        graceful: bool,
    },
    #[serde(rename = "stopProcessId")]
    StopProcessId { target: Option<Target> },
    #[serde(rename = "startProcessId")]
    StartProcessId { target: Option<Target> },
    #[serde(rename = "deleteProcessId")]
    DeleteProcessId { target: Option<Target> },
    #[serde(rename = "notifyByProcessId")]
    NotifyByProcessId {
        id: Option<Target>,
        action_name: String,
        manually: bool,
    },
    #[serde(rename = "getMonitorData")]
    GetMonitorData,
    /// `prepare`: start apps from a configuration (`pm2 start app.js`); the app names.
    #[serde(rename = "prepare")]
    Prepare { names: Vec<String> },
    /// Any other method, kept with its arguments.
    #[serde(rename = "other")]
    Other { method: String, args: Vec<Value> },
}

/// The `env` a restart or reload sends, without its values (they may be secrets; with
/// `--update-env` it is the caller's whole environment): each key in the order sent, with
/// the [`text_hash`] of a value the daemon merges into the app's environment, `None` for an
/// object (an env section, which pm2's `Utility.extend` skips). Serialized as its keys.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SentEnv(Vec<(String, Option<u64>)>);

impl SentEnv {
    fn of(env: &Node) -> Option<SentEnv> {
        Some(SentEnv(
            env.members()?
                .map(|(k, v)| {
                    (
                        k.into_owned(),
                        (!v.is_object()).then(|| text_hash(&v.text())),
                    )
                })
                .collect(),
        ))
    }
}

impl Serialize for SentEnv {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(k, _)| k))
    }
}

fn env_of(v: Option<&Node>) -> Option<SentEnv> {
    SentEnv::of(&v?.get("env")?)
}

impl Pm2Call {
    /// The meaning of a decoded request.
    pub(crate) fn from_call(call: &Call) -> Pm2Call {
        let a = call.args.first();
        let target = || a.and_then(Target::from_node);
        let member = |k: &str| a.and_then(|a| a.get(k));
        match &*call.method {
            "restartProcessId" => Pm2Call::RestartProcessId {
                target: target(),
                env: env_of(a),
            },
            "reloadProcessId" | "softReloadProcessId" => Pm2Call::ReloadProcessId {
                target: target(),
                env: env_of(a),
                graceful: call.method == "softReloadProcessId",
            },
            "stopProcessId" => Pm2Call::StopProcessId { target: target() },
            "startProcessId" => Pm2Call::StartProcessId { target: target() },
            "deleteProcessId" => Pm2Call::DeleteProcessId { target: target() },
            "notifyByProcessId" => Pm2Call::NotifyByProcessId {
                id: member("id").as_ref().and_then(Target::from_node),
                action_name: member("action_name").map(|n| n.text()).unwrap_or_default(),
                // pm2 checks only that `manually` is defined.
                manually: member("manually").is_some_and(|m| m.scalar() != Some(Value::Null)),
            },
            "getMonitorData" => Pm2Call::GetMonitorData,
            "prepare" => {
                let confs: Vec<Node> = match a {
                    Some(list) => list.items().unwrap_or_else(|| vec![list.clone()]),
                    None => Vec::new(),
                };
                let names = confs
                    .iter()
                    .filter_map(|c| c.get("name")?.as_str())
                    .map(|n| n.into_owned())
                    .collect();
                Pm2Call::Prepare { names }
            }
            _ => Pm2Call::Other {
                method: call.method.clone().into_owned(),
                args: call.args.iter().map(Node::value).collect(),
            },
        }
    }

    /// The RPC method name.
    pub(crate) fn method(&self) -> &str {
        match self {
            Pm2Call::RestartProcessId { .. } => "restartProcessId",
            Pm2Call::ReloadProcessId {
                graceful: false, ..
            } => "reloadProcessId",
            Pm2Call::ReloadProcessId { graceful: true, .. } => "softReloadProcessId",
            Pm2Call::StopProcessId { .. } => "stopProcessId",
            Pm2Call::StartProcessId { .. } => "startProcessId",
            Pm2Call::DeleteProcessId { .. } => "deleteProcessId",
            Pm2Call::NotifyByProcessId { .. } => "notifyByProcessId",
            Pm2Call::GetMonitorData => "getMonitorData",
            Pm2Call::Prepare { .. } => "prepare",
            Pm2Call::Other { method, .. } => method,
        }
    }

    /// The app the call acts on, if it names one pm_id.
    pub(crate) fn target_id(&self) -> Option<u64> {
        match self {
            Pm2Call::RestartProcessId { target, .. }
            | Pm2Call::ReloadProcessId { target, .. }
            | Pm2Call::StopProcessId { target }
            | Pm2Call::StartProcessId { target }
            | Pm2Call::DeleteProcessId { target } => target.as_ref().and_then(Target::pm_id),
            Pm2Call::NotifyByProcessId { id, .. } => id.as_ref().and_then(Target::pm_id),
            _ => None,
        }
    }

    /// Whether the call changes an app's processes (restart, reload, stop, start, delete).
    pub(crate) fn is_action(&self) -> bool {
        matches!(
            self,
            Pm2Call::RestartProcessId { .. }
                | Pm2Call::ReloadProcessId { .. }
                | Pm2Call::StopProcessId { .. }
                | Pm2Call::StartProcessId { .. }
                | Pm2Call::DeleteProcessId { .. }
        )
    }

    /// The environment values the daemon would merge into the app's environment, as
    /// [`text_hash`]es: the non-object entries of `env` (pm2's `Utility.extend` skips
    /// objects).
    pub(crate) fn env_vars(&self) -> Vec<(&str, u64)> {
        match self {
            Pm2Call::RestartProcessId { env: Some(env), .. }
            | Pm2Call::ReloadProcessId { env: Some(env), .. } => env
                .0
                .iter()
                .filter_map(|(k, h)| Some((k.as_str(), (*h)?)))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// JSON value as plain text: strings without quotes.
pub(crate) fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Hashes of environment values, by key: enough to tell which keys changed without keeping
/// (or ever showing) the values.
pub(crate) type EnvFingerprint = BTreeMap<String, u64>;

/// Fingerprint the non-object values of an environment object (its members as text).
fn env_fingerprint<'a>(env: impl Iterator<Item = (Cow<'a, str>, Node<'a>)>) -> EnvFingerprint {
    env.filter(|(_, v)| !v.is_object())
        .map(|(k, v)| (k.clone().into_owned(), text_hash(&v.text())))
        .collect()
}

/// Apps a [`Memo`] remembers (beyond, it starts afresh).
const MEMO_APPS: usize = 4096;
/// Texts a [`Memo`] remembers per app, the latest first: replies of different methods
/// describe one app with texts that alternate (a getMonitorData entry and a restart's reply
/// differ), each repeated as long as the app does not change.
const MEMO_TEXTS_PER_APP: usize = 4;
/// Text a [`Memo`] keeps in all (beyond, it starts afresh), and the longest it keeps: a
/// capture's pm_ids and payloads are not to be trusted with memory.
const MEMO_BYTES: usize = 16 << 20;
const MEMO_TEXT_MAX: usize = 1 << 20;

/// Per pm_id, the last texts read and what was read from them. A poller's getMonitorData
/// replies repeat each app's `pm2_env` (and its `env`) unchanged between restarts, so the
/// text is compared (bytes) instead of walked and read again.
struct Memo<T>(HashMap<u64, Vec<(Box<str>, T)>>, usize);

/// What was remembered for `text` in `known` (texts the latest first), which moves to the
/// front; None when it is not there.
fn recall<T: Clone>(known: &mut [(Box<str>, T)], text: &str) -> Option<T> {
    let i = known.iter().position(|(t, _)| **t == *text)?;
    known[..=i].rotate_right(1);
    Some(known[0].1.clone())
}

impl<T: Clone> Memo<T> {
    fn new() -> Memo<T> {
        Memo(HashMap::new(), 0)
    }

    /// What `read` makes of `text` for app `id`: remembered when the text is one of the
    /// app's last few.
    fn read(&mut self, id: u64, text: &str, read: impl FnOnce() -> Option<T>) -> Option<T> {
        if let Some(v) = self.0.get_mut(&id).and_then(|known| recall(known, text)) {
            return Some(v);
        }
        let v = read()?;
        if text.len() > MEMO_TEXT_MAX {
            return Some(v);
        }
        if (self.0.len() >= MEMO_APPS && !self.0.contains_key(&id))
            || self.1 + text.len() > MEMO_BYTES
        {
            self.0.clear();
            self.1 = 0;
        }
        self.1 += text.len();
        let known = self.0.entry(id).or_default();
        if known.len() >= MEMO_TEXTS_PER_APP {
            if let Some((old, _)) = known.pop() {
                self.1 -= old.len();
            }
        }
        known.insert(0, (text.into(), v.clone()));
        Some(v)
    }
}

thread_local! {
    /// What each app's `pm2_env` said, by pm_id (the ids excepted).
    static PM2_ENV_MEMO: RefCell<Memo<MonitorProc>> = RefCell::new(Memo::new());
    /// Each app's `pm2_env.env` fingerprint, shared by every reading of the same text.
    static ENV_MEMO: RefCell<Memo<Arc<EnvFingerprint>>> = RefCell::new(Memo::new());
}

thread_local! {
    /// The last `pm2_env`s read (getMonitorData entries, replies), for [`Pm2EnvFields::of`].
    static PM2_ENV_WALKS: RefCell<Walks<PM2_ENV_N>> = const { RefCell::new(Walks::new()) };
    /// The last `process` objects of `process:event`s read.
    static PROCESS_WALKS: RefCell<Walks<PM2_ENV_N>> = const { RefCell::new(Walks::new()) };
}

/// `process` objects of app output lines remembered, and the longest one remembered.
const LINE_PROCS: usize = 8;
const LINE_PROC_MAX: usize = 1024;

/// The pm_id and name an app output line's `process` object gives.
type LineApp = (Option<u64>, Option<Arc<str>>);

thread_local! {
    /// The `process` objects of the last bus messages read for their app alone (app output
    /// lines, process messages), the latest first, with the pm_id and name they give: each
    /// of a busy app's output lines carries the same one, compared (bytes) instead of walked.
    static LINE_PROC_MEMO: RefCell<Vec<(Box<str>, LineApp)>> =
        const { RefCell::new(Vec::new()) };
}

/// The pm_id and name a bus message's `process` object gives (an app output line's, a
/// process message's).
fn line_app(process: Option<&Node>) -> LineApp {
    let Some(p) = process else {
        return (None, None);
    };
    let read = || (u64_of(p.get("pm_id")), str_of(p.get("name")).map(Arc::from));
    let text = p.raw();
    if text.len() > LINE_PROC_MAX {
        return read();
    }
    LINE_PROC_MEMO.with_borrow_mut(|memo| {
        if let Some(known) = recall(memo, text) {
            return known;
        }
        let app = read();
        memo.truncate(LINE_PROCS - 1);
        memo.insert(0, (text.into(), app.clone()));
        app
    })
}

/// An object's member `key` (the last of that name) and its JSON text.
fn member_text<'a>(obj: &Node<'a>, key: &str) -> Option<(Node<'a>, &'a str)> {
    let v = obj.get(key)?;
    let text = v.raw();
    Some((v, text))
}

/// The fingerprint of app `pm_id`'s environment, `pm2_env`'s member `env` (None: not an
/// object).
fn env_of_app(pm_id: Option<u64>, env: &Node) -> Option<Arc<EnvFingerprint>> {
    let text = env.raw();
    let fresh = || env.members().map(|m| Arc::new(env_fingerprint(m)));
    match pm_id {
        Some(id) => ENV_MEMO.with_borrow_mut(|memo| memo.read(id, text, fresh)),
        None => fresh(),
    }
}

/// A stable 64-bit hash of a JSON value as pm2 would stringify it into the environment
/// (its text: a string without quotes, anything else as compact JSON; [`Node::text`]).
fn text_hash(text: &str) -> u64 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(text.as_bytes());
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// One app as the daemon describes it: a `getMonitorData` entry, or the process in a
/// `restartProcessId` / `stopProcessId` reply. Fields the daemon did not send are `None`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MonitorProc {
    pub pm_id: Option<u64>,
    pub(crate) name: Option<String>,
    /// OS pid; 0 when pm2 has no process for the app (stopped, errored).
    pub(crate) pid: Option<i64>,
    pub(crate) status: Option<String>,
    pub(crate) restart_time: Option<u64>,
    pub(crate) unstable_restarts: Option<u64>,
    /// Start of the current process, ms since the epoch (daemon clock).
    pub(crate) pm_uptime: Option<i64>,
    /// ms since the epoch (daemon clock); reset by restart, null after `errored`.
    pub(crate) created_at: Option<i64>,
    pub(crate) exec_mode: Option<String>,
    /// ms; pm2's default (1600, or PM2_KILL_TIMEOUT) applies when `None`.
    pub(crate) kill_timeout: Option<u64>,
    pub(crate) treekill: Option<bool>,
    /// ms; pm2's default 1000 applies when `None`.
    pub(crate) min_uptime: Option<u64>,
    /// pm2's default 16 applies when `None`.
    pub(crate) max_restarts: Option<u64>,
    /// `--wait-ready`: pm2 waits for the app's `process.send('ready')` before online.
    pub(crate) wait_ready: Option<bool>,
    /// ms; how long pm2 waits for `ready` (wait_ready) or for a reload's new worker to
    /// listen; pm2's default 3000 applies when `None`.
    pub(crate) listen_timeout: Option<u64>,
    /// `pm_exec_path`: the script, as the daemon names it in "too many unstable restarts".
    pub(crate) exec_path: Option<String>,
    /// `pm_cwd`: the working directory pm2 starts the app in.
    pub(crate) cwd: Option<String>,
    /// `exec_interpreter` (`node`, `python3`, `none`).
    pub(crate) interpreter: Option<String>,
    /// Restart settings (restart_delay, backoff, memory limit, watch).
    pub(crate) restarts: RestartSettings,
    /// Fingerprint of `pm2_env.env` (values hashed), shared by every reading of the same
    /// environment text.
    #[serde(skip)]
    pub(crate) env: Option<Arc<EnvFingerprint>>,
}

/// How an app restarts by itself, from its `pm2_env` (getMonitorData or a bus event).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RestartSettings {
    /// ms between an exit and the restart (`restart_delay`).
    pub restart_delay: Option<u64>,
    /// ms of the first delay of an exponential backoff (`exp_backoff_restart_delay`).
    pub exp_backoff_restart_delay: Option<u64>,
    /// bytes (`max_memory_restart`).
    pub max_memory_restart: Option<u64>,
    /// `watch` is on.
    pub watch: Option<bool>,
    /// ms; pm2's default 1000 applies when `None`.
    pub min_uptime: Option<u64>,
    /// pm2's default 16 applies when `None`.
    pub max_restarts: Option<u64>,
}

impl RestartSettings {
    fn from_fields(f: &Pm2EnvFields) -> RestartSettings {
        let get = |k: K| f.get(k);
        RestartSettings {
            restart_delay: u64_of(get(K::RestartDelay)).filter(|d| *d > 0),
            exp_backoff_restart_delay: u64_of(get(K::ExpBackoffRestartDelay)).filter(|d| *d > 0),
            max_memory_restart: u64_of(get(K::MaxMemoryRestart)).filter(|d| *d > 0),
            watch: get(K::Watch).and_then(|w| match w.items() {
                Some(a) => Some(!a.is_empty()),
                None => match w.scalar()? {
                    Value::Bool(b) => Some(b),
                    Value::String(s) => Some(!s.is_empty()),
                    _ => None,
                },
            }),
            min_uptime: u64_of(get(K::MinUptime)),
            max_restarts: u64_of(get(K::MaxRestarts)),
        }
    }
}

/// Declares [`K`], the members of a `pm2_env` the timeline reads, and [`PM2_ENV_KEYS`], their
/// names in the same order.
macro_rules! pm2_env_keys {
    ($($k:ident = $name:literal),* $(,)?) => {
        /// A member of a `pm2_env` (or of a `process:event`'s `process`: the same object
        /// without `env`) that the timeline reads.
        #[derive(Debug, Clone, Copy)]
        enum K { $($k),* }
        /// How many members [`K`] names.
        const PM2_ENV_N: usize = [$($name),*].len();
        /// The names of [`K`]'s members, in its order.
        const PM2_ENV_KEYS: KeySet<PM2_ENV_N> = KeySet::new([$($name),*]);
    };
}

pm2_env_keys! {
    PmId = "pm_id",
    Name = "name",
    Status = "status",
    RestartTime = "restart_time",
    UnstableRestarts = "unstable_restarts",
    PmUptime = "pm_uptime",
    CreatedAt = "created_at",
    ExecMode = "exec_mode",
    KillTimeout = "kill_timeout",
    Treekill = "treekill",
    MinUptime = "min_uptime",
    MaxRestarts = "max_restarts",
    WaitReady = "wait_ready",
    ListenTimeout = "listen_timeout",
    ExecPath = "pm_exec_path",
    Cwd = "pm_cwd",
    Interpreter = "exec_interpreter",
    RestartDelay = "restart_delay",
    ExpBackoffRestartDelay = "exp_backoff_restart_delay",
    MaxMemoryRestart = "max_memory_restart",
    Watch = "watch",
    Env = "env",
    ExitCode = "exit_code",
    Signal = "signal",
    ExitSignal = "exit_signal",
    TreePids = "_tree_pids",
}

/// The [`K`] members of a `pm2_env` (each the last of its name, as [`Node::get`] finds it).
/// A `pm2_env` carries every environment variable of the app (a hundred members and more)
/// and is read again whenever any of its values changed: its members are found in one walk
/// ([`Node::pick_set_after`]) instead of a member list and a lookup per name.
struct Pm2EnvFields<'a>([Option<Node<'a>>; PM2_ENV_N]);

impl<'a> Pm2EnvFields<'a> {
    /// The members of `obj` (none when there is no object), walked only where it differs
    /// from the objects read before with `walks` ([`Node::pick_set_after`]).
    fn of(
        obj: Option<&Node<'a>>,
        walks: &'static std::thread::LocalKey<RefCell<Walks<PM2_ENV_N>>>,
    ) -> Pm2EnvFields<'a> {
        match obj {
            Some(o) => walks
                .with_borrow_mut(|w| o.pick_set_after(&PM2_ENV_KEYS, w))
                .map(Pm2EnvFields)
                .unwrap_or_else(|| Pm2EnvFields::by_name(o)),
            None => Pm2EnvFields(std::array::from_fn(|_| None)),
        }
    }

    /// The members of `obj`, each looked up by name (the general path, for objects
    /// [`Node::pick_set_after`] does not read).
    fn by_name(obj: &Node<'a>) -> Pm2EnvFields<'a> {
        Pm2EnvFields(PM2_ENV_KEYS.keys().map(|k| obj.get(k)))
    }

    fn get(&self, k: K) -> Option<Node<'a>> {
        self.0[k as usize].clone()
    }
}

fn u64_of(v: Option<Node>) -> Option<u64> {
    let v = v?;
    if let Some(n) = scan::plain_u64(v.raw()) {
        return Some(n);
    }
    match v.scalar()? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.is_finite())
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn i64_of(v: Option<Node>) -> Option<i64> {
    let v = v?;
    // A whole number beyond i64 reads through the tree (as a float, saturated).
    if let Some(n) = scan::plain_u64(v.raw()).and_then(|n| i64::try_from(n).ok()) {
        return Some(n);
    }
    match v.scalar()? {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A pm_id as the bus sends it: a number, or `"_old_<n>"` for the outgoing worker of a
/// cluster reload (second value `true`).
fn pm_id_of(v: Option<Node>) -> (Option<u64>, bool) {
    let Some(v) = v else { return (None, false) };
    match v.as_str() {
        Some(s) if s.starts_with("_old_") => (s[5..].trim().parse().ok(), true),
        _ => (u64_of(Some(v)), false),
    }
}

impl BusEvent {
    /// Whether this is an app's `process.send('ready')`.
    pub fn is_ready_message(&self) -> bool {
        matches!(self, BusEvent::ProcessMsg { text: Some(t), .. } if t == "ready")
    }
}

fn str_of(v: Option<Node>) -> Option<String> {
    v?.as_str().map(Cow::into_owned)
}

fn bool_of(v: Option<Node>) -> Option<bool> {
    match v?.scalar()? {
        Value::Bool(b) => Some(b),
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

impl MonitorProc {
    /// Read one process object (top level `pid`/`name`/`pm_id` plus `pm2_env`).
    pub(crate) fn from_node(v: &Node) -> MonitorProc {
        let env = member_text(v, "pm2_env");
        let (pid, pm_id, name) = MonitorProc::ids_in(v, env.as_ref().map(|e| &e.0));
        let read = |env: Option<&Node>| MonitorProc::from_pm2_env(pm_id, env);
        let mut p = match (pm_id, &env) {
            (Some(id), Some((env, text))) => PM2_ENV_MEMO
                .with_borrow_mut(|memo| memo.read(id, text, || Some(read(Some(env)))))
                .unwrap_or_default(),
            _ => read(env.as_ref().map(|e| &e.0)),
        };
        p.pid = pid;
        p.pm_id = pm_id;
        p.name = name;
        p
    }

    /// What a process object's `pm2_env` says of app `pm_id` (its ids left out).
    fn from_pm2_env(pm_id: Option<u64>, env: Option<&Node>) -> MonitorProc {
        MonitorProc::from_fields(pm_id, &Pm2EnvFields::of(env, &PM2_ENV_WALKS))
    }

    /// [`MonitorProc::from_pm2_env`] of the members read.
    fn from_fields(pm_id: Option<u64>, f: &Pm2EnvFields) -> MonitorProc {
        let env_get = |k: K| f.get(k);
        MonitorProc {
            pm_id: None,
            name: None,
            pid: None,
            status: str_of(env_get(K::Status)),
            restart_time: u64_of(env_get(K::RestartTime)),
            unstable_restarts: u64_of(env_get(K::UnstableRestarts)),
            pm_uptime: i64_of(env_get(K::PmUptime)),
            created_at: i64_of(env_get(K::CreatedAt)),
            exec_mode: str_of(env_get(K::ExecMode)),
            kill_timeout: u64_of(env_get(K::KillTimeout)),
            treekill: bool_of(env_get(K::Treekill)),
            min_uptime: u64_of(env_get(K::MinUptime)),
            max_restarts: u64_of(env_get(K::MaxRestarts)),
            wait_ready: bool_of(env_get(K::WaitReady)),
            listen_timeout: u64_of(env_get(K::ListenTimeout)),
            exec_path: str_of(env_get(K::ExecPath)),
            cwd: str_of(env_get(K::Cwd)),
            interpreter: str_of(env_get(K::Interpreter)),
            restarts: RestartSettings::from_fields(f),
            env: env_get(K::Env).and_then(|e| env_of_app(pm_id, &e)),
        }
    }

    /// Only the pid, pm_id and name of a process object, read as [`MonitorProc::from_node`]
    /// reads them (what the process watcher's hints need, on the tap thread).
    pub(crate) fn ids_of(v: &Node) -> (Option<i64>, Option<u64>, Option<String>) {
        MonitorProc::ids_in(v, v.get("pm2_env").as_ref())
    }

    /// [`MonitorProc::ids_of`] with the object's `pm2_env` already found.
    fn ids_in<'a>(
        v: &Node<'a>,
        env: Option<&Node<'a>>,
    ) -> (Option<i64>, Option<u64>, Option<String>) {
        let get = |k: &str| v.get(k).or_else(|| env.and_then(|e| e.get(k)));
        let pid = i64_of(v.get("pid"))
            .or_else(|| i64_of(v.get("_handle").and_then(|h| h.get("pid"))))
            .or_else(|| i64_of(v.get("process").and_then(|p| p.get("pid"))));
        (pid, u64_of(get("pm_id")), str_of(get("name")))
    }

    /// [`MonitorProc::from_node`] of a tree (for state read once, not the replay path).
    pub(crate) fn from_value(v: &Value) -> MonitorProc {
        MonitorProc::from_node(&Json::from(v.clone()).node())
    }

    /// The process objects a reply to `method` names: every object of a `getMonitorData`
    /// list (`[[proc, ...]]`), else the one process a reply returns (restartProcessId,
    /// startProcessId, stopProcessId, reloadProcessId, prepare): the first object argument,
    /// or the first object of a first array argument, if it has a `pm2_env` or a `pid`. Read
    /// through [`super::exchange::ReplyProcs`] by the interpreter and the watcher's hints.
    pub(crate) fn nodes_in_reply<'a>(method: Option<&str>, args: &[Node<'a>]) -> Vec<Node<'a>> {
        if method == Some("getMonitorData") {
            return match args.first().and_then(Node::items) {
                Some(mut list) => {
                    list.retain(Node::is_object);
                    list
                }
                None => Vec::new(),
            };
        }
        let Some(first) = args.first() else {
            return Vec::new();
        };
        let v = match first.items() {
            Some(mut a) => {
                if a.is_empty() {
                    return Vec::new();
                }
                a.swap_remove(0)
            }
            None => first.clone(),
        };
        if !v.is_object() || (v.get("pm2_env").is_none() && v.get("pid").is_none()) {
            return Vec::new();
        }
        vec![v]
    }

    /// The process a reply that returns one carries (see [`MonitorProc::nodes_in_reply`]).
    #[cfg(test)]
    pub(crate) fn from_reply(args: &[Node]) -> Option<MonitorProc> {
        MonitorProc::nodes_in_reply(None, args)
            .first()
            .map(MonitorProc::from_node)
    }
}

/// `process:event`'s `event` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEventKind {
    Exit,
    Online,
    Restart,
    Stop,
    RestartOverlimit,
    Start,
    Delete,
    Reload,
    Other(String),
}

impl ProcessEventKind {
    pub(crate) fn parse(s: &str) -> ProcessEventKind {
        match s {
            "exit" => ProcessEventKind::Exit,
            "online" => ProcessEventKind::Online,
            "restart" => ProcessEventKind::Restart,
            "stop" => ProcessEventKind::Stop,
            "restart overlimit" => ProcessEventKind::RestartOverlimit,
            "start" => ProcessEventKind::Start,
            "delete" => ProcessEventKind::Delete,
            "reload" => ProcessEventKind::Reload,
            other => ProcessEventKind::Other(other.to_owned()),
        }
    }

    /// The name pm2 uses.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            ProcessEventKind::Exit => "exit",
            ProcessEventKind::Online => "online",
            ProcessEventKind::Restart => "restart",
            ProcessEventKind::Stop => "stop",
            ProcessEventKind::RestartOverlimit => "restart overlimit",
            ProcessEventKind::Start => "start",
            ProcessEventKind::Delete => "delete",
            ProcessEventKind::Reload => "reload",
            ProcessEventKind::Other(s) => s,
        }
    }
}

impl Serialize for ProcessEventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A `process:event` from the bus.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessEvent {
    pub event: ProcessEventKind,
    /// True when a client asked for it (notifyByProcessId, or a start).
    pub manually: bool,
    /// ms since the epoch, daemon clock.
    pub at: Option<i64>,
    pub(crate) pm_id: Option<u64>,
    /// The event is about the outgoing worker of a cluster reload: pm2 names it
    /// `_old_<pm_id>` while the new worker takes its id.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) old: bool,
    pub(crate) name: Option<String>,
    /// The app's status when the event was emitted (e.g. `launching` for online in 7.x,
    /// `stopping` for the exit during a stop).
    pub(crate) status: Option<String>,
    /// The last exit code the daemon recorded for the app.
    pub(crate) exit_code: Option<i64>,
    /// Not sent by pm2 5.4.3 or 7.0.4; kept in case a version does.
    pub(crate) signal: Option<String>,
    pub(crate) restart_time: Option<u64>,
    pub(crate) unstable_restarts: Option<u64>,
    /// ms since the epoch: start of the process at the time of the event.
    pub(crate) pm_uptime: Option<i64>,
    /// 7.x: the process tree pids pm2 found at the last kill.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) tree_pids: Vec<i64>,
    /// `pm_exec_path`.
    pub(crate) exec_path: Option<String>,
    /// `pm_cwd`: the app's working directory (what `--watch` watches, and what pm2's watch
    /// lines name paths relative to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cwd: Option<String>,
    /// Restart settings from the event's pm2_env.
    #[serde(default)]
    pub(crate) restarts: Box<RestartSettings>,
}

/// Which output of an app a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Out,
    Err,
}

/// One message from the event bus, with its meaning.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "bus", rename_all = "snake_case")]
pub enum BusEvent {
    ProcessEvent(Box<ProcessEvent>),
    /// `log:out` / `log:err`: a chunk of an app's output (may hold several lines).
    Log {
        stream: Stream,
        pm_id: Option<u64>,
        name: Option<Arc<str>>,
        at: Option<i64>,
        data: String,
    },
    /// `process:msg`: a message an app sent to pm2 with `process.send` (not `{type, data}`,
    /// which pm2 publishes under its own type). `process.send('ready')` is how an app tells a
    /// `--wait-ready` pm2 (and a reload) that it is ready.
    ProcessMsg {
        pm_id: Option<u64>,
        name: Option<Arc<str>>,
        at: Option<i64>,
        /// The message when it is a string (at most 200 characters).
        text: Option<String>,
    },
    /// `log:PM2`: what the daemon wrote to pm2.log, one entry per line.
    DaemonLog {
        at: Option<i64>,
        lines: Vec<DaemonLogLine>,
    },
    /// Any other event, kept raw: its payload's text, with no tree built unless a view
    /// asks for one.
    Other {
        name: String,
        payload: Json,
    },
}

impl BusEvent {
    /// Read a bus message `[s:<event name>, j:<payload>]`. `None` if it is not shaped so.
    pub(crate) fn from_message(msg: &Message) -> Option<BusEvent> {
        let name = msg.args.first()?.as_str()?;
        match msg.args.get(1).and_then(|a| a.as_payload()) {
            Some(payload) => Some(BusEvent::from_parts(name, payload.node())),
            None => {
                let null = Json::from(Value::Null);
                Some(BusEvent::from_parts(name, null.node()))
            }
        }
    }

    /// Interpret an event name and its payload.
    pub(crate) fn from_parts(name: &str, payload: Node) -> BusEvent {
        // An app's output line (most of a busy app's bus messages): its three members read
        // in one walk, without the member list a lookup by name keeps.
        if let "log:out" | "log:err" = name {
            if let Some([at, process, data]) = payload.pick(["at", "process", "data"]) {
                return BusEvent::output_line(name, at, process.as_ref(), data);
            }
        }
        let at = i64_of(payload.get("at"));
        let proc_ = payload.get("process");
        match name {
            "process:event" => {
                let Some(ev) = payload.get("event").map(|e| e.text()) else {
                    return BusEvent::Other {
                        name: name.to_owned(),
                        payload: payload.to_json(),
                    };
                };
                let fields = Pm2EnvFields::of(proc_.as_ref(), &PROCESS_WALKS);
                let field = |k: K| fields.get(k);
                let tree_pids = field(K::TreePids)
                    .and_then(|t| t.items())
                    .map(|a| {
                        a.into_iter()
                            .take(4096)
                            .filter_map(|p| i64_of(Some(p)))
                            .collect()
                    })
                    .unwrap_or_default();
                let (pm_id, old) = pm_id_of(field(K::PmId));
                BusEvent::ProcessEvent(Box::new(ProcessEvent {
                    event: ProcessEventKind::parse(&ev),
                    manually: payload
                        .get("manually")
                        .and_then(|m| m.scalar())
                        .is_some_and(|m| m == Value::Bool(true)),
                    at,
                    pm_id,
                    old,
                    name: str_of(field(K::Name)),
                    status: str_of(field(K::Status)),
                    exit_code: i64_of(field(K::ExitCode)),
                    signal: str_of(field(K::Signal)).or_else(|| str_of(field(K::ExitSignal))),
                    restart_time: u64_of(field(K::RestartTime)),
                    unstable_restarts: u64_of(field(K::UnstableRestarts)),
                    pm_uptime: i64_of(field(K::PmUptime)),
                    tree_pids,
                    exec_path: str_of(field(K::ExecPath)),
                    cwd: str_of(field(K::Cwd)),
                    restarts: Box::new(RestartSettings::from_fields(&fields)),
                }))
            }
            "log:out" | "log:err" => {
                BusEvent::output_line(name, payload.get("at"), proc_.as_ref(), payload.get("data"))
            }
            "process:msg" => {
                let (pm_id, app) = line_app(proc_.as_ref());
                BusEvent::ProcessMsg {
                    pm_id,
                    name: app,
                    at,
                    text: payload
                        .get("raw")
                        .and_then(|r| r.as_str())
                        .map(|s| s.chars().take(200).collect()),
                }
            }
            "log:PM2" => {
                let data = payload.get("data").map(|d| d.text()).unwrap_or_default();
                let lines = data
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(daemon_log::parse)
                    .collect();
                BusEvent::DaemonLog { at, lines }
            }
            _ => BusEvent::Other {
                name: name.to_owned(),
                payload: payload.to_json(),
            },
        }
    }
}

impl BusEvent {
    /// An app's output line (`log:out`, `log:err`) from its payload's members.
    fn output_line(
        name: &str,
        at: Option<Node>,
        process: Option<&Node>,
        data: Option<Node>,
    ) -> BusEvent {
        let (pm_id, app) = line_app(process);
        BusEvent::Log {
            stream: if name == "log:out" {
                Stream::Out
            } else {
                Stream::Err
            },
            pm_id,
            name: app,
            at: i64_of(at),
            data: data.map(|d| d.text()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output line's payload read in one walk ([`Node::pick`]) gives what reading its
    /// members by name gives, for the output lines of every shipped capture and for
    /// payloads that differ from them (members repeated, escaped, missing, of other types;
    /// not an object); plain payloads take the walk.
    #[test]
    fn output_lines_read_in_one_walk_as_by_name() {
        let mut payloads: Vec<String> = vec![
            r#"{"data":"a\n","at":1,"process":{"pm_id":0,"name":"web"}}"#.into(),
            r#"{"process":{"pm_id":0,"name":"web","rev":null,"namespace":"default"},"data":"GET / 200\n","at":1764086502000}"#.into(),
            r#"{"data":"a","data":"b","at":1,"at":2,"process":{"pm_id":1},"process":{"pm_id":2,"name":"x"}}"#.into(),
            r#"{"d\u0061ta":"escaped","data":"plain","at":1}"#.into(),
            r#"{"data":"plain","d\u0061ta":"escaped"}"#.into(),
            r#"{"data":"x","\u0061t":5,"at":6}"#.into(),
            r#"{"at":"12","data":{"a":[1]},"process":"web"}"#.into(),
            r#"{"at":-1.5,"data":7,"process":[]}"#.into(),
            r#"{"data":"\u00e9\"\t","other":{"at":3,"data":"inner"}}"#.into(),
            r#"{}"#.into(),
            r#"[{"data":"x"}]"#.into(),
            r#""data""#.into(),
            r#"null"#.into(),
        ];
        for path in crate::capture::shipped_captures() {
            for ev in crate::capture::CaptureReader::open(&path).unwrap() {
                if let crate::event::Event::BusMessage { msg } = ev.unwrap().event {
                    if let [Arg::Str(name), Arg::Json(j)] = &msg.0.args[..] {
                        if name.starts_with("log:") {
                            payloads.push(j.text().to_owned());
                        }
                    }
                }
            }
        }
        assert!(payloads.len() > 100, "{}", payloads.len());
        for p in &payloads {
            let j = Json::parse(p.as_bytes()).unwrap();
            let n = j.node();
            for name in ["log:out", "log:err"] {
                let by_name = BusEvent::output_line(
                    name,
                    n.get("at"),
                    n.get("process").as_ref(),
                    n.get("data"),
                );
                assert_eq!(BusEvent::from_parts(name, j.node()), by_name, "{p}");
            }
        }
        let walked = |p: &str| {
            let j = Json::parse(p.as_bytes()).unwrap();
            let walked = j.node().pick(["at", "process", "data"]).is_some();
            walked
        };
        assert!(walked(&payloads[0]) && walked(&payloads[1]) && walked(&payloads[2]));
        assert!(!walked(&payloads[3]) && !walked(&payloads[10]));
    }

    thread_local! {
        static TEST_WALKS: RefCell<Walks<PM2_ENV_N>> = const { RefCell::new(Walks::new()) };
    }

    /// Every object of the shipped captures (their `pm2_env`s, `process:event` processes,
    /// replies), read in the captures' order, each walked where it differs from the objects
    /// read before it, and objects that differ from them (members repeated, escaped, nested,
    /// missing) give the same `pm2_env` members as looked up by name; the captures'
    /// `pm2_env`s take the walk.
    #[test]
    fn pm2_env_members_read_in_one_walk_as_by_name() {
        fn objects<'a>(n: &Node<'a>, out: &mut Vec<Node<'a>>) {
            if let Some(members) = n.members() {
                out.push(n.clone());
                for (_, v) in members {
                    objects(&v, out);
                }
            } else if let Some(items) = n.items() {
                for v in &items {
                    objects(v, out);
                }
            }
        }
        let mut texts: Vec<String> = vec![
            r#"{"status":"online","status":"errored","pm_id":3,"env":{"status":"inner"}}"#.into(),
            r#"{"st\u0061tus":"escaped","status":"plain","restart_time":2}"#.into(),
            r#"{"status":"plain","st\u0061tus":"escaped"}"#.into(),
            r#"{"STATUS":"x","name":7,"watch":["a"],"_tree_pids":[1,2],"exit_code":-1}"#.into(),
            r#"{}"#.into(),
        ];
        for path in crate::capture::shipped_captures() {
            for ev in crate::capture::CaptureReader::open(&path).unwrap() {
                let msg = match ev.unwrap().event {
                    crate::event::Event::BusMessage { msg } => msg,
                    crate::event::Event::RpcMessage { msg, .. } => msg,
                    _ => continue,
                };
                for a in &msg.0.args {
                    if let Arg::Json(j) = a {
                        texts.push(j.text().to_owned());
                    }
                }
            }
        }
        let (mut checked, mut walked_envs) = (0, 0);
        for t in &texts {
            let j = Json::parse(t.as_bytes()).unwrap();
            let mut all = Vec::new();
            objects(&j.node(), &mut all);
            for o in &all {
                let (of, by_name) = (
                    Pm2EnvFields::of(Some(o), &TEST_WALKS),
                    Pm2EnvFields::by_name(o),
                );
                for (a, b) in of.0.iter().zip(&by_name.0) {
                    assert_eq!(
                        a.as_ref().map(Node::raw),
                        b.as_ref().map(Node::raw),
                        "{}",
                        o.raw()
                    );
                }
                checked += 1;
                if let Some(env) = o.get("pm2_env") {
                    let mut fresh = Walks::new();
                    assert!(
                        env.pick_set_after(&PM2_ENV_KEYS, &mut fresh).is_some(),
                        "{}",
                        env.raw()
                    );
                    walked_envs += 1;
                }
            }
        }
        assert!(
            checked > 1000 && walked_envs > 100,
            "{checked} objects, {walked_envs} pm2_envs"
        );
    }

    /// Whole numbers read in place give what the tree gives; the rest still reads through
    /// the tree (signs, fractions, strings, numbers too long for the type).
    #[test]
    fn numbers_read_in_place_as_the_tree_reads_them() {
        for raw in [
            "0",
            "7",
            "1764086502000",
            "999999999999999999",
            "9223372036854775807",
            "9223372036854775808",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "1.5",
            "1e3",
            "\"12\"",
            "null",
        ] {
            let j = Json::parse(raw.as_bytes()).unwrap();
            let tree: Value = serde_json::from_str(raw).unwrap();
            let want_u64 = match &tree {
                Value::Number(n) => n.as_u64().or_else(|| {
                    n.as_f64()
                        .filter(|f| *f >= 0.0 && f.is_finite())
                        .map(|f| f as u64)
                }),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            let want_i64 = match &tree {
                Value::Number(n) => n
                    .as_i64()
                    .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            assert_eq!(u64_of(Some(j.node())), want_u64, "{raw}");
            assert_eq!(i64_of(Some(j.node())), want_i64, "{raw}");
        }
    }

    /// An app output line's `process` object gives the same pm_id and name whether it is
    /// read or remembered: objects that repeat, alternate beyond what is kept, differ only
    /// in a member the lines do not read, have escapes or odd types, or are too long to keep.
    #[test]
    fn line_apps_remembered_read_as_when_walked() {
        let mut texts: Vec<String> = vec![
            r#"{"pm_id":0,"name":"web","rev":null,"namespace":"default"}"#.into(),
            r#"{"namespace":"default","rev":null,"name":"web","pm_id":0}"#.into(),
            r#"{"namespace":"other","rev":null,"name":"web","pm_id":0}"#.into(),
            r#"{"pm_id":"3","name":"web"}"#.into(),
            r#"{"pm_id":1.5,"name":7}"#.into(),
            r#"{"pm_id":2,"name":"a","name":"b"}"#.into(),
            r#"{}"#.into(),
            r#"[1]"#.into(),
            r#""web""#.into(),
            r#"null"#.into(),
            format!(r#"{{"pm_id":4,"name":"{}"}}"#, "x".repeat(LINE_PROC_MAX)),
        ];
        texts.extend((0..2 * LINE_PROCS).map(|i| format!(r#"{{"pm_id":{i},"name":"app{i}"}}"#)));
        let read = |t: &str| {
            let j = Json::parse(t.as_bytes()).unwrap();
            let n = j.node();
            (u64_of(n.get("pm_id")), str_of(n.get("name")).map(Arc::from))
        };
        for round in 0..3 {
            for t in texts.iter().chain(texts.iter().rev()) {
                let j = Json::parse(t.as_bytes()).unwrap();
                assert_eq!(line_app(Some(&j.node())), read(t), "round {round}: {t}");
            }
        }
        assert_eq!(line_app(None), (None, None));
        LINE_PROC_MEMO.with_borrow(|m| {
            assert!(m.len() <= LINE_PROCS);
            assert!(m.iter().all(|(t, ..)| t.len() <= LINE_PROC_MAX));
        });
    }

    /// A capture's payloads cannot make the memo of repeated pm2_env texts grow without
    /// bound: it keeps at most MEMO_BYTES of text, and no text longer than MEMO_TEXT_MAX.
    #[test]
    fn the_memo_keeps_bounded_text() {
        let mut m = Memo::<u8>::new();
        let big = "x".repeat(MEMO_TEXT_MAX / 2);
        for id in 0..100 {
            assert_eq!(m.read(id, &big, || Some(1)), Some(1));
            let kept: usize = m.0.values().flatten().map(|(t, _)| t.len()).sum();
            assert_eq!(kept, m.1);
            assert!(kept <= MEMO_BYTES, "{kept}");
        }
        m.read(1000, &"y".repeat(MEMO_TEXT_MAX + 1), || Some(2));
        assert!(!m.0.contains_key(&1000));
    }

    /// Texts that alternate for one app are each read once; beyond the few kept per app,
    /// the one least recently seen is read again, and the bytes kept stay counted.
    #[test]
    fn the_memo_keeps_a_few_texts_per_app() {
        let mut m = Memo::<usize>::new();
        let mut reads = 0;
        let texts: Vec<String> = (0..=MEMO_TEXTS_PER_APP)
            .map(|i| "t".repeat(i + 1))
            .collect();
        for _ in 0..3 {
            for t in &texts[..2] {
                assert_eq!(
                    m.read(7, t, || {
                        reads += 1;
                        Some(t.len())
                    }),
                    Some(t.len())
                );
            }
        }
        assert_eq!(reads, 2, "two alternating texts are read once each");
        for t in &texts {
            m.read(7, t, || {
                reads += 1;
                Some(t.len())
            });
        }
        assert_eq!(m.0[&7].len(), MEMO_TEXTS_PER_APP);
        let kept: usize = m.0.values().flatten().map(|(t, _)| t.len()).sum();
        assert_eq!(kept, m.1);
        // The first two were seen least recently: the first was dropped, the latest kept.
        let before = reads;
        m.read(7, &texts[MEMO_TEXTS_PER_APP], || {
            reads += 1;
            Some(0)
        });
        assert_eq!(reads, before);
        m.read(7, &texts[0], || {
            reads += 1;
            Some(0)
        });
        assert_eq!(reads, before + 1);
    }
    use crate::wire::amp::Arg;
    use crate::wire::rpc::parse_call;
    use serde_json::json;

    fn call(method: &str, args: Value) -> Pm2Call {
        let msg = crate::wire::rpc::encode_call(
            method,
            args.as_array().cloned().unwrap_or_default(),
            "1:0",
        );
        Pm2Call::from_call(&parse_call(&msg).unwrap())
    }

    #[test]
    fn a_repeated_pm2_env_is_read_once_and_a_changed_one_again() {
        let proc_ = |status: &str, secret: &str| {
            Json::from(
                json!({"pid": 7, "name": "memo", "pm_id": 90_001, "monit": {"cpu": 1},
                "pm2_env": {"status": status, "restart_time": 2,
                    "env": {"SECRET": secret, "PORT": "80"}}}),
            )
        };
        let a = MonitorProc::from_node(&proc_("online", "x").node());
        let b = MonitorProc::from_node(&proc_("online", "x").node());
        assert_eq!(a, b);
        assert_eq!(a.status.as_deref(), Some("online"));
        assert_eq!(a.pid, Some(7));
        // The same environment text: one fingerprint, shared.
        assert!(Arc::ptr_eq(
            a.env.as_ref().unwrap(),
            b.env.as_ref().unwrap()
        ));
        // A new status with the same environment: read again, same fingerprint.
        let c = MonitorProc::from_node(&proc_("stopping", "x").node());
        assert_eq!(c.status.as_deref(), Some("stopping"));
        assert_eq!(c.env, a.env);
        // A changed value: another fingerprint, for that key only.
        let d = MonitorProc::from_node(&proc_("stopping", "y").node());
        let (old, new) = (a.env.unwrap(), d.env.unwrap());
        assert_ne!(old.get("SECRET"), new.get("SECRET"));
        assert_eq!(old.get("PORT"), new.get("PORT"));
    }

    #[test]
    fn calls_as_the_cli_sends_them() {
        let c = call(
            "restartProcessId",
            json!([{"id": 0, "env": {"current_conf": {"a": 1}, "web": {}, "FOO": "bar"}}]),
        );
        assert_eq!(c.target_id(), Some(0));
        assert_eq!(c.env_vars(), vec![("FOO", text_hash("bar"))]);
        // Shown as its keys, in the order sent; never its values.
        assert_eq!(
            serde_json::to_value(&c).unwrap()["env"],
            json!(["current_conf", "web", "FOO"])
        );
        assert!(c.is_action());
        assert_eq!(
            call("stopProcessId", json!([3])),
            Pm2Call::StopProcessId {
                target: Some(Target::Id(3))
            }
        );
        assert_eq!(
            call("stopProcessId", json!([{"id": 3}])).target_id(),
            Some(3)
        );
        assert_eq!(
            call("deleteProcessId", json!(["web"])),
            Pm2Call::DeleteProcessId {
                target: Some(Target::Name("web".into()))
            }
        );
        assert_eq!(call("startProcessId", json!(["4"])).target_id(), Some(4));
        assert_eq!(
            call(
                "notifyByProcessId",
                json!([{"id": 0, "action_name": "restart", "manually": true}])
            ),
            Pm2Call::NotifyByProcessId {
                id: Some(Target::Id(0)),
                action_name: "restart".into(),
                manually: true
            }
        );
        assert_eq!(call("getMonitorData", json!([{}])), Pm2Call::GetMonitorData);
        assert_eq!(
            call("prepare", json!([{"name": "web", "script": "x"}])),
            Pm2Call::Prepare {
                names: vec!["web".into()]
            }
        );
        let g = call("softReloadProcessId", json!([{"id": 1, "env": {}}]));
        assert_eq!(g.method(), "softReloadProcessId");
        let o = call("stopWatch", json!(["stopProcessId", 0]));
        assert_eq!(
            o,
            Pm2Call::Other {
                method: "stopWatch".into(),
                args: vec![json!("stopProcessId"), json!(0)]
            }
        );
        assert_eq!(o.method(), "stopWatch");
        // Garbage arguments are kept, not dropped.
        assert_eq!(
            call("restartProcessId", json!([])),
            Pm2Call::RestartProcessId {
                target: None,
                env: None
            }
        );
        assert_eq!(call("restartProcessId", json!([null, 5])).target_id(), None);
    }

    #[test]
    fn monitor_entry_fields_and_defaults() {
        let v = json!({"pid": 42, "name": "web", "pm_id": 0, "monit": {},
            "pm2_env": {"status": "online", "restart_time": 2, "unstable_restarts": 0, "pm_uptime": 1000,
                "created_at": 900, "exec_mode": "fork_mode", "treekill": true, "min_uptime": "2000",
                "pm_exec_path": "/srv/web.js", "env": {"A": "1", "web": {}}}});
        let v = Json::from(v);
        let p = MonitorProc::from_node(&v.node());
        assert_eq!(p.pid, Some(42));
        assert_eq!(p.status.as_deref(), Some("online"));
        assert_eq!(p.min_uptime, Some(2000));
        assert_eq!(p.kill_timeout, None);
        assert_eq!(p.env.as_ref().map(|e| e.len()), Some(1));
        // restartProcessId reply: a cloned ChildProcess with the pid in `_handle`.
        let r = json!({"_handle": {"pid": 4242}, "pm2_env": {"pm_id": 0, "name": "web", "restart_time": 3}});
        let r = Json::from(r);
        let p = MonitorProc::from_reply(&[r.node()]).unwrap();
        assert_eq!(
            (p.pid, p.pm_id, p.restart_time),
            (Some(4242), Some(0), Some(3))
        );
        let ok = Json::from(json!({"success": true}));
        assert_eq!(MonitorProc::from_reply(&[ok.node()]), None);
        assert_eq!(MonitorProc::from_reply(&[]), None);
    }

    #[test]
    fn bus_messages() {
        let m = Message::new(vec![
            Arg::Str("process:event".into()),
            Arg::json(
                json!({"event": "restart overlimit", "manually": false, "at": 5,
                "process": {"pm_id": 1, "name": "crash", "status": "errored", "unstable_restarts": 16, "_tree_pids": [7, 8]}}),
            ),
        ]);
        let BusEvent::ProcessEvent(e) = BusEvent::from_message(&m).unwrap() else {
            panic!()
        };
        assert_eq!(e.event, ProcessEventKind::RestartOverlimit);
        assert_eq!(
            (e.pm_id, e.unstable_restarts, e.at),
            (Some(1), Some(16), Some(5))
        );
        assert_eq!(e.tree_pids, vec![7, 8]);
        assert!(!e.old);
        // The outgoing worker of a cluster reload is named `_old_<pm_id>`.
        let BusEvent::ProcessEvent(o) = BusEvent::from_parts("process:event", Json::from(json!({"event": "exit", "at": 6, "process": {"pm_id": "_old_1", "name": "web", "status": "stopping"}})).node()) else {
            panic!()
        };
        assert_eq!((o.pm_id, o.old), (Some(1), true));
        let r = BusEvent::from_parts("process:msg", Json::from(json!({"at": 7, "raw": "ready", "process": {"pm_id": 2, "name": "web", "namespace": "default"}})).node());
        assert!(r.is_ready_message());
        assert!(matches!(
            r,
            BusEvent::ProcessMsg {
                pm_id: Some(2),
                at: Some(7),
                ..
            }
        ));
        assert!(!BusEvent::from_parts(
            "process:msg",
            Json::from(json!({"raw": {"x": 1}, "process": {"pm_id": 2}})).node()
        )
        .is_ready_message());
        let l = BusEvent::from_parts("log:PM2", Json::from(json!({"process": {"pm_id": "PM2"}, "at": 9, "data": "App [web:0] online\nStopping app:web id:0\n"})).node());
        assert_eq!(
            l,
            BusEvent::DaemonLog {
                at: Some(9),
                lines: vec![
                    DaemonLogLine::Online {
                        app: "web".into(),
                        id: 0
                    },
                    DaemonLogLine::Stopping {
                        app: "web".into(),
                        id: 0,
                        old: false
                    }
                ]
            }
        );
        let o = BusEvent::from_parts(
            "log:err",
            Json::from(
                json!({"process": {"pm_id": 1, "name": "crash"}, "at": 3, "data": "boom\n"}),
            )
            .node(),
        );
        assert!(matches!(
            o,
            BusEvent::Log {
                stream: Stream::Err,
                pm_id: Some(1),
                ..
            }
        ));
        assert!(matches!(
            BusEvent::from_parts("pm2:kill", Json::from(json!({})).node()),
            BusEvent::Other { .. }
        ));
        assert!(matches!(
            BusEvent::from_parts("process:event", Json::from(json!(7)).node()),
            BusEvent::Other { .. }
        ));
        assert_eq!(
            BusEvent::from_message(&Message::new(vec![Arg::Raw(vec![1])])),
            None
        );
    }

    /// Any other event keeps its payload's text (no tree): the same JSON as the tree it
    /// was kept as before, its deeper values still readable through the tape.
    #[test]
    fn an_other_event_keeps_its_payload_text() {
        let text = r#"{"at":5,"deps":{"express":"4.18.2","list":[1,2.5,"é",{"k":null}]},"n":-3}"#;
        let outer = format!(r#"{{"wrap":{text}}}"#);
        let json = Json::parse(outer.as_bytes()).unwrap();
        let inner = json.node().get("wrap").unwrap();
        let BusEvent::Other { name, payload } = BusEvent::from_parts("app:deps", inner) else {
            panic!("not Other");
        };
        assert_eq!(name, "app:deps");
        assert_eq!(payload.kept_text(), Some(text));
        let want: Value = serde_json::from_str(text).unwrap();
        assert_eq!(payload.value(), &want);
        assert_eq!(
            payload
                .node()
                .get("deps")
                .and_then(|d| d.get("express"))
                .and_then(|e| e.as_str())
                .as_deref(),
            Some("4.18.2")
        );
        let ev = BusEvent::Other { name, payload };
        assert_eq!(
            serde_json::to_value(&ev).unwrap(),
            json!({"bus": "other", "name": "app:deps", "payload": want})
        );
        assert_eq!(
            serde_json::to_string(&ev).unwrap(),
            format!(r#"{{"bus":"other","name":"app:deps","payload":{text}}}"#)
        );
    }
}
