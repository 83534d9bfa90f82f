//! The system as it is now, for `explain`: whether an app's script, cwd and interpreter
//! exist and where the symlinks on those paths point; which processes of the daemon's apps
//! are alive (their generation from `restart_time` in their environment). Who holds an
//! address, host-wide, is [`crate::sources::holders`]'s.
//!
//! Everything is read from `/proc` and `lstat`/`readlink`: nothing is opened through a path
//! another user controls, nothing is changed. What cannot be read (another user's
//! `/proc/<pid>/environ` or `fd/` without root) is counted and said.

use crate::sources::holders::same_home;
use crate::sources::procwatch::procfs::{list_pids, parse_pm2_env, read_cmdline, read_environ};
use serde::Serialize;
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

/// One scan of /proc.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ProcScan {
    /// Processes of this daemon's apps.
    pub apps: Vec<AppProcess>,
    /// Processes whose environment could not be read (not ours, no root).
    pub unreadable_environ: u64,
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
        let home_s = home.to_string_lossy();
        if env
            .pm2_home
            .as_deref()
            .is_some_and(|h| same_home(h, &home_s))
        {
            s.apps.push(AppProcess {
                pid: pid as i64,
                pm_id: env.pm_id.unwrap_or(0),
                name: env.name.clone(),
                restart_time: env.restart_time,
                pm2_home: env.pm2_home.clone().unwrap_or_default(),
                cmd,
            });
        }
    }
    s
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
}
