//! The daemon's own view of its apps, read without changing anything: `getMonitorData` over
//! `rpc.sock` when a daemon answers, else the last `dump.pm2` (`pm2 save`, or pm2's periodic
//! dump), else nothing.
//!
//! Connecting to a unix socket never starts a daemon (only the pm2 CLI does that), and
//! `getMonitorData` is a read: pm2's `God.getMonitorData` copies the process list. No
//! other message is ever sent.

use crate::pm2::meaning::MonitorProc;
use crate::safe_dir::SafeDir;
use crate::wire::amp::Decoder;
use crate::wire::rpc;
use serde::Serialize;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Largest reply or dump read (getMonitorData carries every app's environment).
const MAX_STATE: usize = 256 << 20;

/// One app as the daemon (or its dump) describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppState {
    #[serde(flatten)]
    pub proc: MonitorProc,
    /// `pm_cwd`: where the app is started.
    pub cwd: Option<String>,
    /// `exec_interpreter` (`node`, `none`, a path).
    pub interpreter: Option<String>,
    pub out_log: Option<PathBuf>,
    pub err_log: Option<PathBuf>,
    /// `log_date_format` (`--time` sets `YYYY-MM-DDTHH:mm:ss`).
    pub log_date_format: Option<String>,
    /// `axm_options` / `listen_timeout`, `wait_ready`: reload settings.
    pub wait_ready: Option<bool>,
    pub listen_timeout: Option<u64>,
}

impl AppState {
    fn from_value(v: &Value) -> AppState {
        let env = v.get("pm2_env").unwrap_or(v);
        let s = |k: &str| env.get(k).and_then(Value::as_str).map(str::to_owned);
        AppState {
            proc: MonitorProc::from_value(v),
            cwd: s("pm_cwd"),
            interpreter: s("exec_interpreter"),
            out_log: s("pm_out_log_path").map(PathBuf::from),
            err_log: s("pm_err_log_path").map(PathBuf::from),
            log_date_format: s("log_date_format"),
            wait_ready: env.get("wait_ready").and_then(Value::as_bool),
            listen_timeout: env.get("listen_timeout").and_then(Value::as_u64),
        }
    }
}

/// Where the state came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum StateOrigin {
    /// A live daemon answered `getMonitorData` on this socket.
    Daemon { socket: PathBuf },
    /// No daemon answered; `dump.pm2` as last saved.
    Dump {
        path: PathBuf,
        saved_ms: Option<i64>,
    },
    /// Neither.
    None,
}

/// The daemon's apps, and what could not be read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DaemonState {
    pub origin: StateOrigin,
    pub apps: Vec<AppState>,
    /// What was tried and failed, in words.
    pub problems: Vec<String>,
}

/// Ask the daemon behind `rpc` for `getMonitorData`; read `dump` when none answers.
pub fn read_state(rpc: &Path, dump: &Path, timeout: Duration) -> DaemonState {
    let mut problems = Vec::new();
    match monitor_data(rpc, timeout) {
        Ok(list) => {
            return DaemonState {
                origin: StateOrigin::Daemon {
                    socket: rpc.to_path_buf(),
                },
                apps: list.iter().map(AppState::from_value).collect(),
                problems,
            }
        }
        Err(e) => problems.push(e),
    }
    match read_dump(dump) {
        Ok((list, saved_ms)) => DaemonState {
            origin: StateOrigin::Dump {
                path: dump.to_path_buf(),
                saved_ms,
            },
            apps: list
                .iter()
                // dump.pm2 holds the pm2_env objects themselves.
                .map(|e| AppState::from_value(&serde_json::json!({ "pm2_env": e })))
                .collect(),
            problems,
        },
        Err(e) => {
            problems.push(e);
            DaemonState {
                origin: StateOrigin::None,
                apps: Vec::new(),
                problems,
            }
        }
    }
}

/// `getMonitorData` on `sock`: the list of process objects.
pub fn monitor_data(sock: &Path, timeout: Duration) -> Result<Vec<Value>, String> {
    let what = |e: std::io::Error| format!("{}: {e}", sock.display());
    // Through the socket's directory, opened once: the socket file is taken without
    // following a symlink, connected by inode, and must be served by the directory's owner.
    let hint = |kind: Option<std::io::ErrorKind>| match kind {
        Some(std::io::ErrorKind::ConnectionRefused) | Some(std::io::ErrorKind::NotFound) => {
            " (no daemon is running)"
        }
        Some(std::io::ErrorKind::PermissionDenied) => {
            " (not allowed: the daemon belongs to another user; run as that user or root)"
        }
        _ => "",
    };
    let mut s = SafeDir::open_parent(sock)
        .and_then(|(dir, name)| dir.open_socket(name))
        .and_then(|r| r.connect())
        .map_err(|e| format!("{e}{}", hint(e.io_kind())))?;
    let deadline = Instant::now() + timeout;
    s.set_write_timeout(Some(timeout)).map_err(what)?;
    let id = format!("{}:explain", std::process::id());
    let req = rpc::encode_call("getMonitorData", vec![serde_json::json!({})], &id);
    s.write_all(&req.encode()).map_err(what)?;
    let mut dec = Decoder::new(MAX_STATE);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        while let Some(m) = dec.next() {
            let m = m.map_err(|e| format!("{}: reply undecodable: {e}", sock.display()))?;
            let Some(r) = rpc::parse_reply(&m) else {
                continue;
            };
            if r.id != id {
                continue;
            }
            return match r.outcome {
                Ok(args) => match args.first().map(|a| a.value()) {
                    Some(Value::Array(list)) => Ok(list),
                    _ => Err(format!(
                        "{}: getMonitorData reply is not a list",
                        sock.display()
                    )),
                },
                Err(e) => Err(format!(
                    "{}: getMonitorData failed: {}",
                    sock.display(),
                    e.message
                )),
            };
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "{}: no reply to getMonitorData within {timeout:?}",
                sock.display()
            ));
        }
        s.set_read_timeout(Some(left)).map_err(what)?;
        let n = s.read(&mut buf).map_err(what)?;
        if n == 0 {
            return Err(format!(
                "{}: the daemon closed the connection without a reply",
                sock.display()
            ));
        }
        dec.push(&buf[..n]);
    }
}

fn read_dump(path: &Path) -> Result<(Vec<Value>, Option<i64>), String> {
    let (dir, name) = SafeDir::open_parent(path).map_err(|e| e.to_string())?;
    let f = dir.open_read(name).map_err(|e| e.to_string())?;
    let meta = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let saved_ms = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64);
    let mut bytes = Vec::new();
    f.take(MAX_STATE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() > MAX_STATE {
        return Err(format!("{}: larger than {MAX_STATE} bytes", path.display()));
    }
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: not pm2's JSON dump: {e}", path.display()))?;
    match v {
        Value::Array(list) => Ok((list, saved_ms)),
        _ => Err(format!("{}: not a list of apps", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_daemon_no_dump_says_why() {
        let d = tempfile::tempdir().unwrap();
        let st = read_state(
            &d.path().join("rpc.sock"),
            &d.path().join("dump.pm2"),
            Duration::from_millis(200),
        );
        assert_eq!(st.origin, StateOrigin::None);
        assert_eq!(st.problems.len(), 2);
        assert!(
            st.problems[0].contains("no daemon is running"),
            "{:?}",
            st.problems
        );
    }

    #[test]
    fn dump_is_read() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("dump.pm2"),
            r#"[{"name":"web","pm_id":0,"status":"online","pm_cwd":"/srv/app","pm_exec_path":"/srv/app/a.js",
                "exec_interpreter":"node","pm_err_log_path":"/h/logs/web-error.log","restart_time":3}]"#,
        )
        .unwrap();
        let st = read_state(
            &d.path().join("rpc.sock"),
            &d.path().join("dump.pm2"),
            Duration::from_millis(200),
        );
        assert!(matches!(st.origin, StateOrigin::Dump { .. }));
        let a = &st.apps[0];
        assert_eq!(a.proc.name.as_deref(), Some("web"));
        assert_eq!(a.proc.pm_id, Some(0));
        assert_eq!(a.proc.restart_time, Some(3));
        assert_eq!(a.cwd.as_deref(), Some("/srv/app"));
        assert_eq!(
            a.err_log.as_deref(),
            Some(Path::new("/h/logs/web-error.log"))
        );
    }

    #[test]
    fn garbage_dump_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("dump.pm2"), b"\xff\x00{[").unwrap();
        let st = read_state(
            &d.path().join("rpc.sock"),
            &d.path().join("dump.pm2"),
            Duration::from_millis(200),
        );
        assert_eq!(st.origin, StateOrigin::None);
        assert!(st.problems[1].contains("not pm2's JSON dump"));
    }

    /// A fake daemon answering one getMonitorData: the only message sent is that call.
    #[test]
    fn asks_only_get_monitor_data() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("rpc.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut dec = Decoder::new(1 << 20);
            let mut buf = [0u8; 4096];
            loop {
                let n = c.read(&mut buf).unwrap();
                dec.push(&buf[..n]);
                if let Some(m) = dec.next() {
                    let m = m.unwrap();
                    let call = rpc::parse_call(&m).unwrap();
                    let reply = rpc::encode_reply(
                        vec![
                            serde_json::json!([{"name":"web","pm_id":0,"pid":42,"pm2_env":{"status":"online"}}]),
                        ],
                        &call.id,
                    );
                    c.write_all(&reply.encode()).unwrap();
                    return call.method.into_owned();
                }
            }
        });
        let st = read_state(&sock, &d.path().join("dump.pm2"), Duration::from_secs(5));
        assert_eq!(t.join().unwrap(), "getMonitorData");
        assert!(matches!(st.origin, StateOrigin::Daemon { .. }));
        assert_eq!(st.apps[0].proc.pid, Some(42));
        assert_eq!(st.apps[0].proc.status.as_deref(), Some("online"));
    }
}
