//! Interposing on `rpc.sock`, and making sure the daemon gets its name back.
//!
//! Interposition never leaves `rpc.sock` missing, not even for an instant:
//!
//! 1. the proxy listens on a temporary name beside `rpc.sock`, with the daemon socket's
//!    owner, group and mode;
//! 2. the daemon's socket gets a second name, `rpc.sock.pm2-trace-daemon` (a hard link);
//! 3. `rename(temporary, rpc.sock)` atomically points `rpc.sock` at the proxy.
//!
//! Restoring is one atomic `rename(rpc.sock.pm2-trace-daemon, rpc.sock)`. Should the
//! recorder die without restoring (SIGKILL, OOM killer), a guardian process does it: a
//! copy of this binary started in its own session, holding the read end of a pipe whose
//! write end only the recorder holds. When the recorder dies the pipe reports EOF, the
//! guardian renames the daemon's socket back and relays any client that had already
//! queued on the proxy's socket, then exits. A recorder that finishes normally restores
//! the name itself and tells the guardian, by one byte, that nothing is left to do.
//!
//! A lock file (`pm2-trace.lock` in PM2_HOME, held by recorder and guardian) tells a new
//! recorder whether another one is still at work; a leftover `rpc.sock.pm2-trace-daemon`
//! without a lock holder is a stale interposition from a crash, repaired at start.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Second name of the daemon's socket while the proxy holds `rpc.sock`.
pub(crate) const ASIDE_SUFFIX: &str = ".pm2-trace-daemon";
/// Name of the lock file in PM2_HOME.
pub(crate) const LOCK_NAME: &str = "pm2-trace.lock";

/// Byte the recorder sends the guardian when it restored the socket itself.
const DONE: u8 = b'D';

#[derive(Debug, thiserror::Error)]
pub enum InterposeError {
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("{0} is not a unix socket")]
    NotASocket(PathBuf),
    #[error("no PM2 daemon answers on {path} ({source}); refusing to interpose, since a pm2 command would then start a second daemon. Start pm2 first (e.g. `pm2 ping`).")]
    DaemonNotListening { path: PathBuf, source: io::Error },
    #[error("another pm2-trace is recording this daemon (lock {0} is held); stop it first")]
    Busy(PathBuf),
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> InterposeError + 'a {
    move |source| InterposeError::Io {
        path: path.to_owned(),
        what,
        source,
    }
}

/// The paths and identities of one interposition.
#[derive(Debug, Clone)]
pub(crate) struct Interposition {
    /// `rpc.sock`, where clients connect.
    pub(crate) rpc_path: PathBuf,
    /// The daemon's socket under its second name.
    pub(crate) aside_path: PathBuf,
    /// Inode of the proxy's socket file, to recognise it later.
    pub(crate) proxy_ino: u64,
}

/// `rpc.sock.pm2-trace-daemon` beside `rpc_path`.
pub(crate) fn aside_path_of(rpc_path: &Path) -> PathBuf {
    let mut name: OsString = rpc_path.file_name().unwrap_or_default().to_owned();
    name.push(ASIDE_SUFFIX);
    rpc_path.with_file_name(name)
}

/// An exclusive lock on `<dir>/pm2-trace.lock`, held while recording.
pub struct RecorderLock {
    file: File,
}

impl RecorderLock {
    pub fn acquire(dir: &Path) -> Result<RecorderLock, InterposeError> {
        let path = dir.join(LOCK_NAME);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path, "cannot open lock file"))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(InterposeError::Busy(path));
        }
        Ok(RecorderLock { file })
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// What `repair_stale` found.
#[derive(Debug, PartialEq, Eq)]
pub enum StaleState {
    Clean,
    /// A crashed recorder's leftover was undone; the text says what was done.
    Repaired(String),
}

/// Undo what a crashed recorder left behind. Call with the lock held.
pub fn repair_stale(rpc_path: &Path) -> Result<StaleState, InterposeError> {
    let aside = aside_path_of(rpc_path);
    let aside_meta = match std::fs::symlink_metadata(&aside) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(StaleState::Clean),
        Err(e) => return Err(io_err(&aside, "cannot inspect")(e)),
    };
    let rpc_meta = std::fs::symlink_metadata(rpc_path).ok();
    if rpc_meta.as_ref().map(|m| m.ino()) == Some(aside_meta.ino()) {
        std::fs::remove_file(&aside).map_err(io_err(&aside, "cannot remove leftover link"))?;
        return Ok(StaleState::Repaired(format!(
            "removed leftover second name {}",
            aside.display()
        )));
    }
    if UnixStream::connect(&aside).is_ok() {
        // The daemon still listens under the second name: give it its name back.
        std::fs::rename(&aside, rpc_path)
            .map_err(io_err(rpc_path, "cannot restore daemon socket"))?;
        return Ok(StaleState::Repaired(format!(
            "{} pointed at a dead proxy; gave it back to the daemon",
            rpc_path.display()
        )));
    }
    // The daemon behind the leftover is gone too; whatever rpc.sock is now, keep it.
    std::fs::remove_file(&aside).map_err(io_err(&aside, "cannot remove leftover link"))?;
    Ok(StaleState::Repaired(format!(
        "removed {} (its daemon is gone)",
        aside.display()
    )))
}

/// Put a proxy listener in front of the daemon listening on `rpc_path`.
pub(crate) fn interpose(rpc_path: &Path) -> Result<(UnixListener, Interposition), InterposeError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(rpc_path).map_err(io_err(rpc_path, "cannot stat"))?;
    if !meta.file_type().is_socket() {
        return Err(InterposeError::NotASocket(rpc_path.to_owned()));
    }
    UnixStream::connect(rpc_path).map_err(|source| InterposeError::DaemonNotListening {
        path: rpc_path.to_owned(),
        source,
    })?;

    let aside = aside_path_of(rpc_path);
    let mut tmp_name: OsString = rpc_path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(format!(".pm2-trace-{}.tmp", std::process::id()));
    let tmp = rpc_path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(io_err(&tmp, "cannot listen"))?;
    let cleanup = |e| {
        let _ = std::fs::remove_file(&tmp);
        e
    };
    std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()))
        .map_err(io_err(
            &tmp,
            "cannot give the proxy socket the daemon socket's owner",
        ))
        .map_err(cleanup)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(io_err(
            &tmp,
            "cannot give the proxy socket the daemon socket's mode",
        ))
        .map_err(cleanup)?;
    let proxy_ino = std::fs::metadata(&tmp)
        .map_err(io_err(&tmp, "cannot stat"))
        .map_err(cleanup)?
        .ino();
    std::fs::hard_link(rpc_path, &aside)
        .map_err(io_err(
            &aside,
            "cannot give the daemon socket a second name",
        ))
        .map_err(cleanup)?;
    if let Err(e) = std::fs::rename(&tmp, rpc_path) {
        let _ = std::fs::remove_file(&aside);
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(rpc_path, "cannot put the proxy in place")(e));
    }
    Ok((
        listener,
        Interposition {
            rpc_path: rpc_path.to_owned(),
            aside_path: aside,
            proxy_ino,
        },
    ))
}

impl Interposition {
    /// Give `rpc.sock` back to the daemon. Safe to call more than once, and safe when the
    /// daemon went away meanwhile (then the leftover second name is removed and whatever
    /// now holds `rpc.sock`, e.g. a new daemon, is left alone). Returns what was done.
    pub(crate) fn restore(&self) -> io::Result<&'static str> {
        let current = std::fs::symlink_metadata(&self.rpc_path)
            .ok()
            .map(|m| m.ino());
        let aside = std::fs::symlink_metadata(&self.aside_path)
            .ok()
            .map(|m| m.ino());
        match (current, aside) {
            (_, None) => Ok("nothing to restore"),
            (Some(c), Some(_)) if c == self.proxy_ino => {
                std::fs::rename(&self.aside_path, &self.rpc_path)?;
                Ok("daemon socket restored")
            }
            (None, Some(_)) => {
                // The daemon unlinked `rpc.sock` when it exited (libuv does on close).
                std::fs::remove_file(&self.aside_path)?;
                Ok("daemon had exited; removed its leftover second name")
            }
            (Some(_), Some(_)) => {
                std::fs::remove_file(&self.aside_path)?;
                Ok("rpc.sock belongs to someone else now (a new daemon?); removed our second name")
            }
        }
    }
}

/// The recorder's end of the guardian: dropping it without `release` lets the guardian act.
pub(crate) struct Guardian {
    pipe_write: File,
    child: std::process::Child,
}

impl Guardian {
    /// Start the guardian process (this same binary, hidden subcommand `__guard`).
    pub(crate) fn spawn(
        ip: &Interposition,
        listener: &UnixListener,
        lock: &RecorderLock,
    ) -> io::Result<Guardian> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 fills the two-element array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned here.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        let (r, l, k) = (read_end.as_raw_fd(), listener.as_raw_fd(), lock.fd());
        let exe = std::env::current_exe()?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("__guard")
            .arg(&ip.rpc_path)
            .arg(&ip.aside_path)
            .arg(ip.proxy_ino.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        // SAFETY: only async-signal-safe calls (dup2, setsid) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Move the three out of the way first, so that placing one on 3..5 cannot
                // overwrite another; dup2 then leaves the targets without FD_CLOEXEC.
                let mut high = [0; 3];
                for (i, from) in [r, l, k].into_iter().enumerate() {
                    high[i] = libc::fcntl(from, libc::F_DUPFD_CLOEXEC, 10);
                    if high[i] < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                for (from, to) in high.into_iter().zip(3..) {
                    if libc::dup2(from, to) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(read_end);
        Ok(Guardian {
            pipe_write: write_end,
            child,
        })
    }

    /// The recorder restored the socket itself: the guardian exits without acting.
    pub(crate) fn release(mut self) {
        use std::io::Write;
        let _ = self.pipe_write.write_all(&[DONE]);
        drop(self.pipe_write);
        let _ = self.child.wait();
    }
}

/// Body of the guardian process: fd 3 = pipe from the recorder, fd 4 = the proxy's listening
/// socket, fd 5 = the recorder lock. Returns the process exit code.
pub fn guardian_main(rpc_path: PathBuf, aside_path: PathBuf, proxy_ino: u64) -> i32 {
    // SAFETY: these descriptors were set up by `Guardian::spawn` before exec.
    let mut pipe = unsafe { File::from_raw_fd(3) };
    let listener = unsafe { UnixListener::from_raw_fd(4) };
    let _lock = unsafe { File::from_raw_fd(5) };
    // Ignore terminal signals: the guardian must outlive Ctrl-C aimed at the recorder.
    // SAFETY: setting signal dispositions to SIG_IGN.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    let mut byte = [0u8; 1];
    let done = loop {
        match pipe.read(&mut byte) {
            Ok(0) => break false,
            Ok(_) if byte[0] == DONE => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break false,
        }
    };
    if done {
        return 0;
    }
    let ip = Interposition {
        rpc_path,
        aside_path: aside_path.clone(),
        proxy_ino,
    };
    let restored = ip.restore();
    eprintln!(
        "pm2-trace guardian: recorder gone; {}",
        restored.as_ref().map(|s| *s).unwrap_or("restore failed")
    );
    // Clients that queued on the proxy before the rename: relay them to the daemon.
    let _ = listener.set_nonblocking(true);
    let target = ip.rpc_path.clone();
    let mut idle_since = Instant::now();
    let mut relays = Vec::new();
    while idle_since.elapsed() < Duration::from_millis(500) {
        match listener.accept() {
            Ok((client, _)) => {
                idle_since = Instant::now();
                let _ = client.set_nonblocking(false);
                if let Ok(daemon) = UnixStream::connect(&target) {
                    relays.push(relay(client, daemon));
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    for r in relays {
        let _ = r.join();
    }
    0
}

fn relay(client: UnixStream, daemon: UnixStream) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (Ok(mut c_r), Ok(mut d_w)) = (client.try_clone(), daemon.try_clone()) else {
            return; // out of descriptors: the client sees its connection close
        };
        let t = std::thread::spawn(move || {
            let _ = io::copy(&mut c_r, &mut d_w);
            let _ = d_w.shutdown(std::net::Shutdown::Write);
        });
        let (mut d_r, mut c_w) = (daemon, client);
        let _ = io::copy(&mut d_r, &mut c_w);
        let _ = c_w.shutdown(std::net::Shutdown::Write);
        let _ = t.join();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpose_and_restore_keep_the_name_alive() {
        let dir = tempfile::tempdir().unwrap();
        let rpc = dir.path().join("rpc.sock");
        let daemon = UnixListener::bind(&rpc).unwrap();
        std::fs::set_permissions(&rpc, std::fs::Permissions::from_mode(0o660)).unwrap();
        let daemon_ino = std::fs::metadata(&rpc).unwrap().ino();
        let (_proxy, ip) = interpose(&rpc).unwrap();
        let m = std::fs::metadata(&rpc).unwrap();
        assert_eq!(m.ino(), ip.proxy_ino);
        assert_eq!(m.mode() & 0o7777, 0o660);
        assert_eq!(std::fs::metadata(&ip.aside_path).unwrap().ino(), daemon_ino);
        assert_eq!(ip.restore().unwrap(), "daemon socket restored");
        assert_eq!(std::fs::metadata(&rpc).unwrap().ino(), daemon_ino);
        assert!(!ip.aside_path.exists());
        assert_eq!(ip.restore().unwrap(), "nothing to restore");
        drop(daemon);
    }

    #[test]
    fn refuses_without_a_listening_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let rpc = dir.path().join("rpc.sock");
        drop(UnixListener::bind(&rpc).unwrap());
        assert!(matches!(
            interpose(&rpc),
            Err(InterposeError::DaemonNotListening { .. })
        ));
    }

    #[test]
    fn stale_interposition_is_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let rpc = dir.path().join("rpc.sock");
        let _daemon = UnixListener::bind(&rpc).unwrap();
        let (proxy, _ip) = interpose(&rpc).unwrap();
        drop(proxy); // the recorder died: rpc.sock is a dead socket now
        assert!(UnixStream::connect(&rpc).is_err());
        assert!(matches!(
            repair_stale(&rpc).unwrap(),
            StaleState::Repaired(_)
        ));
        assert!(UnixStream::connect(&rpc).is_ok());
        assert_eq!(repair_stale(&rpc).unwrap(), StaleState::Clean);
    }
}
