//! The system as it is now, for `explain`: whether an app's script, cwd and interpreter
//! exist and where the symlinks on those paths point; which processes of the daemon's apps
//! are alive (their generation from `restart_time` in their environment); and who holds a
//! listening address, host-wide.
//!
//! Everything is read from `/proc` and `lstat`/`readlink`: nothing is opened through a path
//! another user controls, nothing is changed. What cannot be read (another user's
//! `/proc/<pid>/environ` or `fd/` without root) is counted and said.

use crate::sources::procwatch::procfs::{
    list_pids, parse_inet_line, parse_pm2_env, parse_unix_line, read_cmdline, read_environ,
    socket_inodes, Pm2Env,
};
use crate::sources::procwatch::Proto;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// What `lstat` shows of one path now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathCheck {
    /// `script`, `cwd`, `interpreter`.
    pub what: String,
    pub path: String,
    /// `Some(false)`: it does not exist now; `None`: could not tell (`error`).
    pub exists: Option<bool>,
    /// The first component that is missing, when it does not exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_from: Option<String>,
    /// Symlinks met on the way, with where each points now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub symlinks: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PathCheck {
    /// `/srv/app/current -> releases/41`, joined.
    pub fn symlink_words(&self) -> String {
        self.symlinks
            .iter()
            .map(|(l, t)| format!("{l} -> {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Most symlinks followed on one path.
const MAX_LINKS: usize = 40;

/// Check `path` now: walk it component by component with `lstat`, noting symlinks (and
/// following them, as the kernel would) until it exists or a component is missing.
pub fn check_path(what: &str, path: &str) -> PathCheck {
    let mut check = PathCheck {
        what: what.to_owned(),
        path: path.to_owned(),
        exists: None,
        missing_from: None,
        symlinks: Vec::new(),
        error: None,
    };
    if !Path::new(path).is_absolute() {
        check.error = Some("not an absolute path".into());
        return check;
    }
    let mut todo: Vec<PathBuf> = Path::new(path)
        .components()
        .rev()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut cur = PathBuf::from("/");
    let mut links = 0;
    while let Some(part) = todo.pop() {
        match Path::new(&part).components().next() {
            Some(Component::RootDir) => {
                cur = PathBuf::from("/");
                continue;
            }
            Some(Component::CurDir) | None => continue,
            Some(Component::ParentDir) => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let next = cur.join(&part);
        match std::fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    check.error = Some(format!("more than {MAX_LINKS} symlinks"));
                    return check;
                }
                let target = match std::fs::read_link(&next) {
                    Ok(t) => t,
                    Err(e) => {
                        check.error = Some(format!("{}: {e}", next.display()));
                        return check;
                    }
                };
                check
                    .symlinks
                    .push((next.display().to_string(), target.display().to_string()));
                // Resolve the target in place of this component.
                for c in target.components().rev() {
                    todo.push(PathBuf::from(c.as_os_str()));
                }
            }
            Ok(_) => cur = next,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                check.exists = Some(false);
                check.missing_from = Some(next.display().to_string());
                return check;
            }
            Err(e) => {
                check.error = Some(format!("{}: {e}", next.display()));
                return check;
            }
        }
    }
    check.exists = Some(true);
    check
}

/// An interpreter named without a path (`node`) is looked up on `path_var`.
pub fn check_interpreter(name: &str, path_var: Option<&str>) -> Option<PathCheck> {
    if name.is_empty() || name == "none" {
        return None;
    }
    if name.contains('/') {
        return Some(check_path("interpreter", name));
    }
    for dir in path_var
        .unwrap_or("/usr/local/bin:/usr/bin:/bin")
        .split(':')
    {
        let p = Path::new(dir).join(name);
        if p.is_absolute() {
            let c = check_path("interpreter", &p.display().to_string());
            if c.exists == Some(true) {
                return Some(c);
            }
        }
    }
    Some(PathCheck {
        what: "interpreter".into(),
        path: name.to_owned(),
        exists: Some(false),
        missing_from: Some(format!("{name} (not on PATH)")),
        symlinks: Vec::new(),
        error: None,
    })
}

/// A live process that belongs to a pm2 app (its environment says so).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppProcess {
    pub pid: i64,
    pub pm_id: u64,
    pub name: Option<String>,
    /// pm2's restart_time of the generation it was started in.
    pub restart_time: Option<u64>,
    pub pm2_home: String,
    pub cmd: String,
}

/// Who holds an address now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "holder", rename_all = "snake_case")]
pub enum HolderKind {
    /// A process of one of this daemon's apps.
    ThisDaemon {
        pm_id: u64,
        name: Option<String>,
        restart_time: Option<u64>,
    },
    /// A process of an app of another pm2 daemon.
    OtherDaemon {
        pm2_home: String,
        pm_id: u64,
        name: Option<String>,
    },
    /// A process started by a systemd unit.
    SystemdUnit { unit: String },
    /// Any other process.
    Process,
    /// The socket is held, but no readable process has it open (another user's, without
    /// root).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub addr: String,
    pub pid: Option<i64>,
    pub cmd: Option<String>,
    #[serde(flatten)]
    pub kind: HolderKind,
}

/// One scan of /proc.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ProcScan {
    /// Processes of this daemon's apps.
    pub apps: Vec<AppProcess>,
    /// Processes whose environment could not be read (not ours, no root).
    pub unreadable_environ: u64,
    #[serde(skip)]
    envs: HashMap<i64, Pm2Env>,
    #[serde(skip)]
    cmds: HashMap<i64, String>,
}

fn same_home(a: &str, home: &Path) -> bool {
    let a = Path::new(a);
    a == home
        || std::fs::canonicalize(a)
            .ok()
            .zip(std::fs::canonicalize(home).ok())
            .is_some_and(|(x, y)| x == y)
}

/// Read every process's pm2 keys; keep this daemon's (`home`) app processes.
pub fn scan(home: &Path) -> ProcScan {
    let proc_root = Path::new("/proc");
    let mut pids = Vec::new();
    let _ = list_pids(proc_root, &mut pids);
    let me = std::process::id() as i32;
    let mut s = ProcScan::default();
    for pid in pids {
        if pid == me {
            continue;
        }
        let env = match read_environ(proc_root, pid) {
            Ok((b, _)) => parse_pm2_env(&b),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                s.unreadable_environ += 1;
                continue;
            }
            Err(_) => continue,
        };
        if env.pm_id.is_none() || env.pm2_home.is_none() {
            continue;
        }
        let cmd = read_cmdline(proc_root, pid)
            .map(|c| c.join(" "))
            .unwrap_or_default();
        if env.pm2_home.as_deref().is_some_and(|h| same_home(h, home)) {
            s.apps.push(AppProcess {
                pid: pid as i64,
                pm_id: env.pm_id.unwrap_or(0),
                name: env.name.clone(),
                restart_time: env.restart_time,
                pm2_home: env.pm2_home.clone().unwrap_or_default(),
                cmd: cmd.clone(),
            });
        }
        s.cmds.insert(pid as i64, cmd);
        s.envs.insert(pid as i64, env);
    }
    s
}

/// Listening sockets now (this network namespace): address -> socket inodes.
fn listening() -> Vec<(String, u16, u64)> {
    let mut out = Vec::new();
    for (proto, file) in [
        (Proto::Tcp, "/proc/net/tcp"),
        (Proto::Tcp6, "/proc/net/tcp6"),
        (Proto::Udp, "/proc/net/udp"),
        (Proto::Udp6, "/proc/net/udp6"),
    ] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for l in text.lines().skip(1) {
            if let Some(sk) = parse_inet_line(proto, l) {
                if sk.is_listening() {
                    out.push((sk.addr_string(), sk.port, sk.inode));
                }
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/unix") {
        for l in text.lines().skip(1) {
            if let Some(u) = parse_unix_line(l) {
                if u.is_bound_listener() {
                    out.push((u.path.unwrap_or_default(), 0, u.inode));
                }
            }
        }
    }
    out
}

fn systemd_unit(pid: i64) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .filter_map(|l| l.rsplit(':').next())
        .flat_map(|p| p.split('/'))
        .filter(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .map(str::to_owned)
        .next_back()
        .filter(|u| u.ends_with(".service"))
}

/// Who holds each of `addrs` now (`127.0.0.1:4000`, `:::4000`, a port alone as `:4000`, or
/// a unix socket path): host-wide, through every readable process's descriptors.
pub fn holders(addrs: &[String], home: &Path, scan: &ProcScan) -> Vec<Holder> {
    let socks = listening();
    let mut want: Vec<(String, u64)> = Vec::new();
    for a in addrs {
        let port = a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
        for (addr, p, ino) in &socks {
            let hit = if a.starts_with('/') || a.starts_with('@') {
                addr == a
            } else {
                port.is_some_and(|x| x == *p && *p != 0)
            };
            if hit {
                want.push((addr.clone(), *ino));
            }
        }
    }
    if want.is_empty() {
        return Vec::new();
    }
    let mut by_ino: HashMap<u64, i64> = HashMap::new();
    let mut pids = Vec::new();
    let _ = list_pids(Path::new("/proc"), &mut pids);
    for pid in pids {
        if let Ok(inos) = socket_inodes(Path::new("/proc"), pid) {
            for i in inos {
                by_ino.entry(i).or_insert(pid as i64);
            }
        }
    }
    want.into_iter()
        .map(|(addr, ino)| {
            let pid = by_ino.get(&ino).copied();
            let kind = match pid.and_then(|p| scan.envs.get(&p)) {
                Some(e) if e.pm2_home.as_deref().is_some_and(|h| same_home(h, home)) => {
                    HolderKind::ThisDaemon {
                        pm_id: e.pm_id.unwrap_or(0),
                        name: e.name.clone(),
                        restart_time: e.restart_time,
                    }
                }
                Some(e) => HolderKind::OtherDaemon {
                    pm2_home: e.pm2_home.clone().unwrap_or_default(),
                    pm_id: e.pm_id.unwrap_or(0),
                    name: e.name.clone(),
                },
                None => match pid {
                    Some(p) => match systemd_unit(p) {
                        Some(unit) => HolderKind::SystemdUnit { unit },
                        None => HolderKind::Process,
                    },
                    None => HolderKind::Unknown,
                },
            };
            let cmd = pid.and_then(|p| {
                scan.cmds
                    .get(&p)
                    .cloned()
                    .or_else(|| read_cmdline(Path::new("/proc"), p as i32).map(|c| c.join(" ")))
            });
            Holder {
                addr,
                pid,
                cmd,
                kind,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("releases/2")).unwrap();
        std::fs::write(root.join("releases/2/app.js"), b"").unwrap();
        std::os::unix::fs::symlink("releases/2", root.join("current")).unwrap();
        let c = check_path("script", &root.join("current/app.js").display().to_string());
        assert_eq!(c.exists, Some(true), "{c:?}");
        assert_eq!(c.symlinks.len(), 1);
        assert!(c.symlinks[0].0.ends_with("/current") && c.symlinks[0].1 == "releases/2");
        // The release is deleted: the link now points nowhere.
        std::fs::remove_dir_all(root.join("releases/2")).unwrap();
        let c = check_path("script", &root.join("current/app.js").display().to_string());
        assert_eq!(c.exists, Some(false));
        assert!(
            c.missing_from.as_deref().unwrap().ends_with("releases/2"),
            "{c:?}"
        );
        let c = check_path("cwd", &root.join("nope/x").display().to_string());
        assert!(c.missing_from.unwrap().ends_with("/nope"));
        // A loop ends.
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let c = check_path("cwd", &root.join("loop").display().to_string());
        assert!(c.error.unwrap().contains("symlinks"));
    }

    #[test]
    fn interpreter_on_path() {
        let c = check_interpreter("sh", Some("/nonexistent:/bin:/usr/bin")).unwrap();
        assert_eq!(c.exists, Some(true));
        let c = check_interpreter("no-such-interp", Some("/bin")).unwrap();
        assert_eq!(c.exists, Some(false));
        assert!(check_interpreter("none", None).is_none());
    }

    #[test]
    fn holder_of_a_listening_socket_is_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let d = tempfile::tempdir().unwrap();
        let s = scan(d.path());
        let h = holders(&[format!("127.0.0.1:{port}")], d.path(), &s);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[0].pid, Some(std::process::id() as i64));
        assert!(matches!(
            h[0].kind,
            HolderKind::Process | HolderKind::SystemdUnit { .. }
        ));
    }
}
