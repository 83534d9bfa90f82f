//! Where a running generation was started from, and whether those paths still exist: the
//! facts behind `start-path-missing` (a deploy that re-points a `current` symlink and
//! deletes the old release under an app pm2 started from the resolved path).
//!
//! From `/proc` alone (nothing resolved): the working directory and the executable as the
//! kernel names them (`/srv/app/releases/1 (deleted)` when the directory is gone), the
//! script argument from the command line, and `PWD` from the environment, the logical
//! directory the operator started pm2 from (`cd current && pm2 start app.js` leaves
//! `PWD=/srv/app/current`, while pm2 stores the resolved `releases/1`).
//!
//! From the filesystem: whether the script and the interpreter exist, and which components
//! of `PWD` are symlinks and where they point now. Those names belong to the app's owner, so
//! the lookups run on a short-lived thread whose filesystem uid and gid are the process's
//! own (`setfsuid`/`setfsgid` act on the calling thread only; leaving uid 0 also clears the
//! thread's filesystem capabilities): root sees exactly what the app's user could see,
//! and nothing is opened, only `lstat`ed or `readlink`ed.

use super::procfs;
use crate::event::proc::{AppRef, LinkNow, StartPaths};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const DELETED: &str = " (deleted)";

/// A `/proc/<pid>/{cwd,exe}` link: the path and whether the kernel marks it deleted.
fn proc_link(proc_root: &Path, pid: i32, name: &str) -> Option<(String, bool)> {
    let target = std::fs::read_link(proc_root.join(pid.to_string()).join(name)).ok()?;
    let s = String::from_utf8_lossy(target.as_os_str().as_bytes()).into_owned();
    Some(match s.strip_suffix(DELETED) {
        Some(p) => (p.to_owned(), true),
        None => (s, false),
    })
}

/// Real uid and gid from `/proc/<pid>/status`.
fn owner(proc_root: &Path, pid: i32) -> Option<(u32, u32)> {
    let (b, _) =
        procfs::read_bounded(&proc_root.join(pid.to_string()).join("status"), 8 << 10).ok()?;
    let text = String::from_utf8_lossy(&b);
    let first = |key: &str| -> Option<u32> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((first("Uid:")?, first("Gid:")?))
}

/// The script among a command line's arguments: the first absolute path after the
/// interpreter that is not an option (`node --max-old-space-size=512 /srv/app.js`), or the
/// program itself when it was started without an interpreter.
fn script_of(cmdline: &[String]) -> Option<String> {
    cmdline
        .iter()
        .skip(1)
        .find(|a| a.starts_with('/'))
        .cloned()
        .or_else(|| {
            cmdline
                .first()
                .filter(|p| p.starts_with('/') && !p.ends_with("/node"))
                .cloned()
        })
}

/// What the filesystem says, looked up as the app's user.
struct FsFacts {
    script_exists: Option<bool>,
    exe_exists: Option<bool>,
    cwd_exists: Option<bool>,
    links: Vec<LinkNow>,
}

/// The paths to look up.
struct Lookups {
    script: Option<String>,
    exe: Option<String>,
    /// Only for a process that is gone (for a live one the kernel says it).
    cwd: Option<String>,
    start_dir: Option<String>,
}

/// Symlinks among the components of `dir` and where each points now (at most 40 components).
fn links_on(dir: &Path) -> Vec<LinkNow> {
    let mut out = Vec::new();
    let mut prefix = PathBuf::from("/");
    for comp in dir.components().skip(1).take(40) {
        prefix.push(comp);
        let Ok(md) = std::fs::symlink_metadata(&prefix) else {
            break;
        };
        if md.file_type().is_symlink() {
            if let Ok(t) = std::fs::read_link(&prefix) {
                out.push(LinkNow {
                    link: prefix.to_string_lossy().into_owned(),
                    target: t.to_string_lossy().into_owned(),
                });
            }
        }
    }
    out
}

fn exists(p: &str) -> Option<bool> {
    match std::fs::symlink_metadata(p) {
        Ok(_) => Some(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
        Err(_) => None, // permission: not known
    }
}

/// Run the filesystem lookups as `uid`/`gid` (when we are root; otherwise as ourselves,
/// which grants nothing more than we have).
fn lookup_as(uid: u32, gid: u32, l: Lookups) -> Result<FsFacts, String> {
    let t = std::thread::Builder::new()
        .name("pm2-trace-paths".into())
        .spawn(move || {
            // SAFETY: setfsgid/setfsuid change only this thread's filesystem ids; the
            // thread ends right after the lookups.
            unsafe {
                libc::setfsgid(gid);
                libc::setfsuid(uid);
            }
            // setfsuid returns the previous id and cannot report failure: check it took.
            let (now_uid, now_gid) =
                unsafe { (libc::setfsuid(u32::MAX), libc::setfsgid(u32::MAX)) };
            if (now_uid as u32 != uid || now_gid as u32 != gid) && unsafe { libc::geteuid() } == 0 {
                return Err(format!(
                    "could not take uid {uid}/gid {gid} to look at the app's paths"
                ));
            }
            Ok(FsFacts {
                script_exists: l.script.as_deref().and_then(exists),
                exe_exists: l.exe.as_deref().and_then(exists),
                cwd_exists: l.cwd.as_deref().and_then(exists),
                links: l
                    .start_dir
                    .as_deref()
                    .map(|d| links_on(Path::new(d)))
                    .unwrap_or_default(),
            })
        })
        .map_err(|e| format!("no thread for the path lookups: {e}"))?;
    t.join()
        .map_err(|_| "the path lookups panicked".to_owned())?
}

/// What `/proc` says of a process's start paths, read while it runs: enough to describe
/// where it was started from after it is gone (a restart may find it already killed).
#[derive(Debug, Clone)]
pub struct ProcPaths {
    pub pid: i32,
    cwd: Option<(String, bool)>,
    exe: Option<(String, bool)>,
    script: Option<String>,
    /// Real uid and gid, the identity the filesystem lookups take.
    owner: Option<(u32, u32)>,
}

/// Read process `pid`'s paths from `/proc`; `None` when it is gone or not ours to read.
pub fn read(proc_root: &Path, pid: i32) -> Option<ProcPaths> {
    let cwd = proc_link(proc_root, pid, "cwd");
    let exe = proc_link(proc_root, pid, "exe");
    if cwd.is_none() && exe.is_none() {
        return None;
    }
    let cmdline = procfs::read_cmdline(proc_root, pid).unwrap_or_default();
    Some(ProcPaths {
        pid,
        cwd,
        exe,
        script: script_of(&cmdline),
        owner: owner(proc_root, pid),
    })
}

/// Start paths from `/proc` facts and the filesystem as it is now. `gone`: the process has
/// exited since `pp` was read, so the kernel cannot mark its directory or executable
/// deleted any more; a path that no longer exists says it instead.
pub fn complete(pp: ProcPaths, app: Option<AppRef>, pwd: Option<String>, gone: bool) -> StartPaths {
    let (cwd, mut cwd_deleted) = pp.cwd.unzip();
    let (exe, mut exe_deleted) = pp.exe.unzip();
    let pwd = pwd.filter(|p| p.starts_with('/'));
    // Only a logical start directory that differs from the resolved one can hold a symlink.
    let start_dir = pwd.filter(|p| Some(p) != cwd.as_ref());
    let mut notes = Vec::new();
    let facts = match pp.owner {
        Some((uid, gid)) => {
            let lookups = Lookups {
                script: pp.script.clone(),
                exe: exe.clone(),
                cwd: if gone { cwd.clone() } else { None },
                start_dir: start_dir.clone(),
            };
            match lookup_as(uid, gid, lookups) {
                Ok(f) => Some(f),
                Err(e) => {
                    notes.push(e);
                    None
                }
            }
        }
        None => {
            notes.push(format!("owner of pid {} unreadable", pp.pid));
            None
        }
    };
    if gone {
        notes.push(format!(
            "pid {} had exited: its paths as read while it ran, checked against the filesystem now",
            pp.pid
        ));
    }
    let (script_exists, exe_exists, symlinks) = match facts {
        Some(f) => {
            if f.cwd_exists == Some(false) {
                cwd_deleted = Some(true);
            }
            if gone && f.exe_exists == Some(false) {
                exe_deleted = Some(true);
            }
            (f.script_exists, f.exe_exists, f.links)
        }
        None => (None, None, Vec::new()),
    };
    StartPaths {
        pid: pp.pid,
        app,
        cwd,
        cwd_deleted: cwd_deleted.unwrap_or(false),
        exe,
        exe_deleted: exe_deleted.unwrap_or(false),
        exe_exists,
        script: pp.script,
        script_exists,
        start_dir,
        symlinks,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_argument() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            script_of(&v(&[
                "node",
                "--max-old-space-size=512",
                "/srv/a/app.js",
                "x"
            ])),
            Some("/srv/a/app.js".into())
        );
        assert_eq!(
            script_of(&v(&["/srv/bin/server", "-p", "80"])),
            Some("/srv/bin/server".into())
        );
        assert_eq!(script_of(&v(&["/usr/bin/node", "app.js"])), None);
        assert_eq!(script_of(&[]), None);
    }

    /// A process whose directory was deleted after it started, reached through a symlink
    /// that now points to another directory: the probe sees both.
    #[test]
    fn deleted_release_behind_a_switched_symlink() {
        let base = std::env::temp_dir().join(format!("p2t-paths-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let r1 = base.join("releases/1");
        let r2 = base.join("releases/2");
        std::fs::create_dir_all(&r1).unwrap();
        std::fs::create_dir_all(&r2).unwrap();
        std::os::unix::fs::symlink("releases/1", base.join("current")).unwrap();
        let current = base.join("current");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&current)
            .env("PWD", &current)
            .spawn()
            .unwrap();
        // As the watcher reads a generation's main when it appears.
        let early = read(Path::new("/proc"), child.id() as i32).expect("read while it runs");
        std::fs::remove_file(&current).unwrap();
        std::os::unix::fs::symlink("releases/2", &current).unwrap();
        std::fs::remove_dir_all(&r1).unwrap();
        let pwd = Some(current.to_string_lossy().into_owned());
        let p = read(Path::new("/proc"), child.id() as i32)
            .map(|pp| complete(pp, None, pwd.clone(), false));
        let _ = child.kill();
        let _ = child.wait();
        // Killed before the restart's snapshot (pm2 7): the facts read while it ran, and
        // the filesystem now, tell the same.
        let gone = complete(early, None, pwd, true);
        let _ = std::fs::remove_dir_all(&base);
        let p = p.expect("probe");
        assert!(gone.cwd_deleted, "{gone:?}");
        assert_eq!(gone.cwd, p.cwd);
        assert_eq!(gone.symlinks, p.symlinks);
        assert_eq!(gone.exe_exists, Some(true), "{gone:?}");
        assert!(!gone.exe_deleted, "{gone:?}");
        assert!(
            gone.notes.iter().any(|n| n.contains("had exited")),
            "{gone:?}"
        );
        assert_eq!(p.cwd.as_deref(), r1.to_str());
        assert!(p.cwd_deleted, "{p:?}");
        assert!(!p.exe_deleted, "{p:?}");
        assert_eq!(p.exe_exists, Some(true), "{p:?}");
        assert_eq!(p.start_dir.as_deref(), current.to_str());
        assert_eq!(
            p.symlinks,
            vec![LinkNow {
                link: current.to_string_lossy().into_owned(),
                target: "releases/2".into()
            }],
            "{p:?}"
        );
        assert!(p.notes.is_empty(), "{p:?}");
    }
}
