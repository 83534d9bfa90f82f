//! Finding the PM2 daemon: its home, its pid, its sockets, and the other daemons on the host.
//!
//! - `PM2_HOME` is `--pm2-home`, else the `PM2_HOME` environment variable, else `~/.pm2`
//!   (pm2's `paths.js`).
//! - Every God daemon on the host is visible from `/proc/*/cmdline`: its process title is
//!   `PM2 v<version>: God Daemon (<PM2_HOME>)`.
//! - The socket paths are `<home>/rpc.sock` and `<home>/pub.sock`, unless the daemon was
//!   started with `PM2_DAEMON_RPC_PORT` / `PM2_DAEMON_PUB_PORT` (unix socket paths despite
//!   the names); the daemon's own environment (`/proc/<pid>/environ`) says which.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where the home came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeSource {
    /// `--pm2-home`.
    Flag,
    /// The `PM2_HOME` environment variable.
    Env,
    /// `~/.pm2`.
    Default,
    /// The only God daemon running on the host, when the default home has none.
    OnlyDaemon,
}

impl HomeSource {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            HomeSource::Flag => "--pm2-home",
            HomeSource::Env => "PM2_HOME",
            HomeSource::Default => "default ~/.pm2",
            HomeSource::OnlyDaemon => "the only PM2 daemon running on this host",
        }
    }
}

/// The files of one PM2 home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pm2Home {
    pub dir: PathBuf,
    pub source: HomeSource,
}

impl Pm2Home {
    pub fn new(dir: impl Into<PathBuf>, source: HomeSource) -> Pm2Home {
        Pm2Home {
            dir: dir.into(),
            source,
        }
    }
    /// `<home>/rpc.sock`, without overrides; see [`Sockets`].
    pub(crate) fn rpc_sock(&self) -> PathBuf {
        self.dir.join("rpc.sock")
    }
    pub(crate) fn pub_sock(&self) -> PathBuf {
        self.dir.join("pub.sock")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("cannot tell where PM2_HOME is: HOME is not set; pass --pm2-home DIR")]
    NoHomeDir,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Fs(#[from] crate::safe_dir::SafeDirError),
    /// What the file holds is not quoted: it may be anything its owner put there.
    #[error("{path}: expected a process id, found {len} bytes that are not one")]
    BadPidFile { path: PathBuf, len: usize },
    #[error("no PM2 daemon is running for {home} ({how}){others}")]
    NotRunning {
        home: PathBuf,
        how: &'static str,
        others: String,
    },
    #[error(
        "no PM2 daemon is running for {home} ({how}), and {count} daemons run on this host:\n{list}\nchoose one with --pm2-home DIR"
    )]
    Ambiguous {
        home: PathBuf,
        how: &'static str,
        count: usize,
        list: String,
    },
}

/// Resolve PM2_HOME: `flag`, else `PM2_HOME` from `env`, else `$HOME/.pm2`.
/// `env` looks up an environment variable (pass `|k| std::env::var_os(k)`).
pub fn resolve_home(
    flag: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Pm2Home, HomeError> {
    if let Some(dir) = flag {
        return Ok(Pm2Home::new(absolute(dir), HomeSource::Flag));
    }
    if let Some(dir) = env("PM2_HOME").filter(|d| !d.is_empty()) {
        return Ok(Pm2Home::new(absolute(Path::new(&dir)), HomeSource::Env));
    }
    let home = env("HOME")
        .filter(|d| !d.is_empty())
        .ok_or(HomeError::NoHomeDir)?;
    Ok(Pm2Home::new(
        Path::new(&home).join(".pm2"),
        HomeSource::Default,
    ))
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// A PM2 God daemon running on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GodDaemon {
    pub pid: i32,
    pub version: String,
    pub home: PathBuf,
    /// Owner of the process.
    pub(crate) uid: u32,
}

impl std::fmt::Display for GodDaemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} (pm2 {}, uid {}) home {}",
            self.pid,
            self.version,
            self.uid,
            self.home.display()
        )
    }
}

/// Read a God daemon's process title from a `/proc/<pid>/cmdline`:
/// `PM2 v7.0.4: God Daemon (/home/app/.pm2)` -> ("7.0.4", "/home/app/.pm2").
pub(crate) fn parse_god_title(cmdline: &[u8]) -> Option<(String, PathBuf)> {
    // The title replaces argv; what follows its first NUL is padding or old arguments.
    let end = cmdline
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(cmdline.len());
    let title = std::str::from_utf8(&cmdline[..end]).ok()?.trim_end();
    let rest = title.strip_prefix("PM2 v")?;
    let (version, rest) = rest.split_once(": God Daemon (")?;
    let home = rest.strip_suffix(')')?;
    if version.is_empty() || version.contains(char::is_whitespace) || home.is_empty() {
        return None;
    }
    Some((version.to_owned(), PathBuf::from(home)))
}

/// Every God daemon visible in `proc_root` (normally `/proc`), by pid.
pub(crate) fn list_daemons_in(proc_root: &Path) -> Vec<GodDaemon> {
    use std::os::unix::fs::MetadataExt;
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ent in dir.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(ent.path().join("cmdline")) else {
            continue;
        };
        let Some((version, home)) = parse_god_title(&cmdline) else {
            continue;
        };
        let uid = std::fs::metadata(ent.path())
            .map(|m| m.uid())
            .unwrap_or(u32::MAX);
        out.push(GodDaemon {
            pid,
            version,
            home,
            uid,
        });
    }
    out.sort_by_key(|d| d.pid);
    out
}

/// Every God daemon on this host.
pub fn list_daemons() -> Vec<GodDaemon> {
    list_daemons_in(Path::new("/proc"))
}

/// Read `pm2.pid` in `home`: through [`SafeDir::read_file`](crate::safe_dir::SafeDir::read_file)
/// (never through a symlink; only a regular file of the directory's owner or root, at most
/// 64 bytes). An error never quotes the file.
pub fn read_pid_file(home: &crate::safe_dir::SafeDir) -> Result<i32, HomeError> {
    let bytes = home.read_file("pm2.pid", 64)?;
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| HomeError::BadPidFile {
            path: home.display("pm2.pid"),
            len: bytes.len(),
        })
}

/// Whether process `pid` exists (also when it belongs to another user).
pub fn is_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The socket paths a daemon listens on, and where that came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sockets {
    pub rpc: PathBuf,
    pub pub_: PathBuf,
    /// `default`, `daemon environment` or `environment`.
    pub origin: &'static str,
}

/// Socket paths for `home`: the daemon's own `PM2_DAEMON_RPC_PORT`/`PM2_DAEMON_PUB_PORT`
/// when its environment is readable and sets them, else the same variables in `env`,
/// else `<home>/rpc.sock` and `<home>/pub.sock`.
pub(crate) fn sockets(
    home: &Pm2Home,
    daemon_pid: Option<i32>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Sockets {
    if let Some(pid) = daemon_pid {
        if let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) {
            let (rpc, pub_) = (
                environ_get(&environ, "PM2_DAEMON_RPC_PORT"),
                environ_get(&environ, "PM2_DAEMON_PUB_PORT"),
            );
            if rpc.is_some() || pub_.is_some() {
                return Sockets {
                    rpc: rpc.map(PathBuf::from).unwrap_or_else(|| home.rpc_sock()),
                    pub_: pub_.map(PathBuf::from).unwrap_or_else(|| home.pub_sock()),
                    origin: "daemon environment",
                };
            }
            return Sockets {
                rpc: home.rpc_sock(),
                pub_: home.pub_sock(),
                origin: "default",
            };
        }
    }
    let (rpc, pub_) = (env("PM2_DAEMON_RPC_PORT"), env("PM2_DAEMON_PUB_PORT"));
    if rpc.is_some() || pub_.is_some() {
        return Sockets {
            rpc: rpc.map(PathBuf::from).unwrap_or_else(|| home.rpc_sock()),
            pub_: pub_.map(PathBuf::from).unwrap_or_else(|| home.pub_sock()),
            origin: "environment",
        };
    }
    Sockets {
        rpc: home.rpc_sock(),
        pub_: home.pub_sock(),
        origin: "default",
    }
}

/// Value of `key` in a NUL-separated `environ` block.
pub(crate) fn environ_get(environ: &[u8], key: &str) -> Option<String> {
    environ.split(|&b| b == 0).find_map(|kv| {
        let rest = kv.strip_prefix(key.as_bytes())?.strip_prefix(b"=")?;
        Some(String::from_utf8_lossy(rest).into_owned())
    })
}

/// A running daemon, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub home: Pm2Home,
    pub pid: i32,
    /// From the process title, when the daemon was found in /proc.
    pub version: Option<String>,
    pub sockets: Sockets,
}

/// Find the daemon to trace: the one for the resolved home (its `pm2.pid`, alive, or a God
/// daemon whose title names that home). When the home was not chosen explicitly and has no
/// daemon, the only daemon on the host is taken; several are an error that lists them.
pub fn locate(
    flag: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString> + Copy,
    daemons: &[GodDaemon],
) -> Result<Located, HomeError> {
    let home = resolve_home(flag, env)?;
    if let Some(found) = daemon_for(&home, daemons) {
        let sockets = sockets(&home, Some(found.0), env);
        return Ok(Located {
            home,
            pid: found.0,
            version: found.1,
            sockets,
        });
    }
    let list = |ds: &[GodDaemon]| {
        ds.iter()
            .map(|d| format!("  {d}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    match (home.source, daemons) {
        (HomeSource::Default, [only]) => {
            let home = Pm2Home::new(only.home.clone(), HomeSource::OnlyDaemon);
            let sockets = sockets(&home, Some(only.pid), env);
            Ok(Located {
                home,
                pid: only.pid,
                version: Some(only.version.clone()),
                sockets,
            })
        }
        (HomeSource::Default, ds) if ds.len() > 1 => Err(HomeError::Ambiguous {
            home: home.dir,
            how: home.source.describe(),
            count: ds.len(),
            list: list(ds),
        }),
        (_, ds) => {
            let others = if ds.is_empty() {
                String::from("; no PM2 daemon runs on this host")
            } else {
                format!(
                    "; PM2 daemons on this host:\n{}\nchoose one with --pm2-home DIR",
                    list(ds)
                )
            };
            Err(HomeError::NotRunning {
                home: home.dir,
                how: home.source.describe(),
                others,
            })
        }
    }
}

/// The live daemon of `home`: from `pm2.pid`, else from the process titles.
fn daemon_for(home: &Pm2Home, daemons: &[GodDaemon]) -> Option<(i32, Option<String>)> {
    let by_title = |pid: Option<i32>| {
        daemons
            .iter()
            .find(|d| same_path(&d.home, &home.dir) && pid.is_none_or(|p| p == d.pid))
    };
    let pid = crate::safe_dir::SafeDir::open(&home.dir)
        .map_err(HomeError::from)
        .and_then(|d| read_pid_file(&d));
    if let Ok(pid) = pid {
        if is_alive(pid) {
            return Some((pid, by_title(Some(pid)).map(|d| d.version.clone())));
        }
    }
    by_title(None).map(|d| (d.pid, Some(d.version.clone())))
}

fn same_path(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.components().eq(b.components()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(
        pairs: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<OsString> + Copy {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn home_resolution_order() {
        let env = env_of(&[("PM2_HOME", "/srv/pm2"), ("HOME", "/home/u")]);
        assert_eq!(
            resolve_home(Some(Path::new("/x")), env).unwrap(),
            Pm2Home::new("/x", HomeSource::Flag)
        );
        assert_eq!(
            resolve_home(None, env).unwrap(),
            Pm2Home::new("/srv/pm2", HomeSource::Env)
        );
        let env = env_of(&[("HOME", "/home/u")]);
        assert_eq!(
            resolve_home(None, env).unwrap(),
            Pm2Home::new("/home/u/.pm2", HomeSource::Default)
        );
        assert!(matches!(
            resolve_home(None, env_of(&[])),
            Err(HomeError::NoHomeDir)
        ));
    }

    #[test]
    fn god_titles() {
        assert_eq!(
            parse_god_title(b"PM2 v7.0.4: God Daemon (/tmp/x/home)\0\0\0"),
            Some(("7.0.4".into(), PathBuf::from("/tmp/x/home")))
        );
        assert_eq!(
            parse_god_title(b"PM2 v5.4.3: God Daemon (/home/a b/.pm2)"),
            Some(("5.4.3".into(), PathBuf::from("/home/a b/.pm2")))
        );
        assert_eq!(parse_god_title(b"node\0/usr/bin/pm2\0"), None);
        assert_eq!(parse_god_title(b"PM2 v7.0.4: God Daemon ()"), None);
        assert_eq!(parse_god_title(b"\xff\xfe"), None);
        assert_eq!(parse_god_title(b""), None);
    }

    #[test]
    fn environ_lookup() {
        let e = b"A=1\0PM2_DAEMON_RPC_PORT=/tmp/r.sock\0PM2_DAEMON_RPC_PORTX=no\0";
        assert_eq!(
            environ_get(e, "PM2_DAEMON_RPC_PORT").as_deref(),
            Some("/tmp/r.sock")
        );
        assert_eq!(environ_get(e, "B"), None);
    }

    #[test]
    fn pid_files() {
        use crate::safe_dir::SafeDir;
        let dir = tempfile::tempdir().unwrap();
        let home = SafeDir::open(dir.path()).unwrap();
        let p = dir.path().join("pm2.pid");
        std::fs::write(&p, "1234\n").unwrap();
        assert_eq!(read_pid_file(&home).unwrap(), 1234);
        std::fs::write(&p, "\x1b]0;garbage\x07").unwrap();
        let e = read_pid_file(&home).unwrap_err().to_string();
        assert!(e.contains("pm2.pid") && !e.contains("garbage"), "{e}");
        // A symlink to another file: refused, and what it points at is neither read nor quoted.
        std::fs::remove_file(&p).unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, "secret words").unwrap();
        std::os::unix::fs::symlink(&other, &p).unwrap();
        let e = read_pid_file(&home).unwrap_err().to_string();
        assert!(e.contains("pm2.pid") && !e.contains("secret"), "{e}");
        std::fs::remove_file(&p).unwrap();
        assert!(read_pid_file(&home)
            .unwrap_err()
            .to_string()
            .contains("pm2.pid"));
    }

    #[test]
    fn liveness() {
        assert!(is_alive(std::process::id() as i32));
        assert!(!is_alive(0));
        assert!(!is_alive(-1));
    }

    #[test]
    fn locating_with_fake_daemons() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("h");
        std::fs::create_dir(&home).unwrap();
        let me = std::process::id() as i32;
        std::fs::write(home.join("pm2.pid"), me.to_string()).unwrap();
        let d = |pid, h: &str| GodDaemon {
            pid,
            version: "7.0.4".into(),
            home: PathBuf::from(h),
            uid: 0,
        };
        // Explicit home with a live pid file.
        let l = locate(Some(&home), env_of(&[]), &[]).unwrap();
        assert_eq!((l.pid, l.home.source), (me, HomeSource::Flag));
        assert_eq!(l.sockets.rpc, home.join("rpc.sock"));
        // Default home without a daemon, one daemon elsewhere: taken, and said so.
        let env = env_of(&[("HOME", "/nonexistent-home-for-test")]);
        let l = locate(None, env, &[d(me, "/srv/pm2")]).unwrap();
        assert_eq!(
            (l.home.source, l.home.dir.as_path()),
            (HomeSource::OnlyDaemon, Path::new("/srv/pm2"))
        );
        // Several: an error naming each.
        let e = locate(None, env, &[d(11, "/a"), d(12, "/b"), d(13, "/c")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("3 daemons run on this host")
                && e.contains("/b")
                && e.contains("--pm2-home"),
            "{e}"
        );
        // Explicit home without a daemon: an error, listing the others.
        let e = locate(Some(Path::new("/nonexistent-x")), env, &[d(11, "/a")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no PM2 daemon is running for /nonexistent-x (--pm2-home)")
                && e.contains("/a"),
            "{e}"
        );
        // A home found by title only (no pid file).
        let l = locate(Some(Path::new("/a")), env, &[d(11, "/a")]).unwrap();
        assert_eq!((l.pid, l.version.as_deref()), (11, Some("7.0.4")));
    }

    /// The /proc scan finds real daemons (any that run on this host) without failing on
    /// processes it cannot read.
    #[test]
    fn scan_proc() {
        for d in list_daemons() {
            assert!(d.pid > 0 && !d.version.is_empty(), "{d}");
        }
        assert!(list_daemons_in(Path::new("/nonexistent")).is_empty());
    }
}
