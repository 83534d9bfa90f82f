//! Interposing on `rpc.sock`, and making sure the daemon gets its name back.
//!
//! Interposition never leaves `rpc.sock` missing, not even for an instant. Every step goes
//! through the socket directory's descriptor ([`SafeDir`]): with root, no name the PM2_HOME
//! owner controls is ever followed.
//!
//! 1. the proxy listens in a private 0700 directory, where it gets the daemon socket's
//!    owner, group and mode;
//! 2. the daemon's socket gets a second name there (a hard link), checked to be the socket
//!    we connected to, then renamed to `rpc.sock.pm2-trace-daemon`;
//! 3. one `renameat` puts the proxy at `rpc.sock`.
//!
//! Restoring puts the daemon's own socket, held by an `O_PATH` descriptor, back at
//! `rpc.sock` with one atomic `renameat` (as root, relinked from that descriptor, so that
//! only that inode can land there). Should the recorder die without restoring (SIGKILL, OOM
//! killer), a guardian process does it: a copy of this binary started in its own session,
//! holding the read end of a pipe whose write end only the recorder holds, and the
//! directory and the daemon's socket as descriptors. When the recorder dies the pipe
//! reports EOF, the guardian restores and relays any client that had already queued on the
//! proxy's socket, then exits. A recorder that finishes normally restores the name itself
//! and tells the guardian, by one byte, that nothing is left to do.
//!
//! A lock file (`pm2-trace.lock` in PM2_HOME, held by recorder and guardian) tells a new
//! recorder whether another one is still at work; a leftover `rpc.sock.pm2-trace-daemon`
//! without a lock holder is a stale interposition from a crash, repaired at start.

use crate::safe_dir::{SafeDir, SafeDirError, SocketRef};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
/// Byte the guardian writes on its stdout once it holds its descriptors and ignores
/// terminal signals: from then on it guards.
const READY: u8 = b'R';
/// How long the recorder waits for the guardian to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum InterposeError {
    #[error(transparent)]
    Fs(#[from] SafeDirError),
    #[error("{0} is not a unix socket")]
    NotASocket(PathBuf),
    #[error("no PM2 daemon answers on {path} ({source}); refusing to interpose, since a pm2 command would then start a second daemon. Start pm2 first (e.g. `pm2 ping`).")]
    DaemonNotListening { path: PathBuf, source: SafeDirError },
    #[error("{0} changed while pm2-trace was interposing (someone else renamed it); nothing was left changed, try again")]
    Changed(PathBuf),
    #[error("another pm2-trace is recording this daemon (lock {0} is held); stop it first")]
    Busy(PathBuf),
}

/// The names and identities of one interposition. Every operation goes through the
/// directory's descriptor ([`SafeDir`]): nothing here resolves a path.
#[derive(Debug)]
pub(crate) struct Interposition {
    dir: SafeDir,
    rpc_name: OsString,
    aside_name: OsString,
    /// `rpc.sock`, where clients connect (for messages).
    pub(crate) rpc_path: PathBuf,
    /// The daemon's socket under its second name (for messages).
    pub(crate) aside_path: PathBuf,
    /// Inode of the proxy's socket file, to recognise it later.
    pub(crate) proxy_ino: u64,
    /// The daemon's own socket, held by inode: the proxy connects through it.
    pub(crate) daemon: SocketRef,
}

/// `rpc.sock.pm2-trace-daemon` for `rpc.sock`.
pub(crate) fn aside_name_of(rpc_name: &OsStr) -> OsString {
    let mut name = rpc_name.to_owned();
    name.push(ASIDE_SUFFIX);
    name
}

/// An exclusive lock on `<home>/pm2-trace.lock`, held while recording.
pub struct RecorderLock {
    file: File,
}

impl RecorderLock {
    /// Lock `pm2-trace.lock` in `home` (created if missing, never through a symlink).
    pub fn acquire(home: &SafeDir) -> Result<RecorderLock, InterposeError> {
        let file = home.open_lock_file(LOCK_NAME, 0o644)?;
        let path = home.display(LOCK_NAME);
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

/// Put the daemon's socket `daemon` (held by inode) back at `rpc_name`. As root, from the
/// descriptor itself ([`SafeDir::relink`]): only that inode can land there, whatever the
/// directory's owner renames meanwhile. Without root (then the directory is our own and
/// nobody races us), by renaming its second name `aside_name`.
fn put_back(
    dir: &SafeDir,
    daemon: &SocketRef,
    aside_name: &OsStr,
    rpc_name: &OsStr,
) -> Result<(), SafeDirError> {
    if crate::safe_dir::euid() == 0 {
        return dir.relink(daemon, rpc_name);
    }
    match dir.stat(aside_name)? {
        Some(st) if (st.st_dev, st.st_ino) == daemon.stat_identity() => {
            dir.rename(aside_name, rpc_name)
        }
        _ => Err(SafeDirError::Io {
            path: dir.display(aside_name),
            what: "the daemon's socket is no longer there",
            error: io::Error::from(io::ErrorKind::NotFound),
        }),
    }
}

/// Undo what a crashed recorder left behind around `rpc_name` in `dir`. Call with the lock
/// held.
pub fn repair_stale(dir: &SafeDir, rpc_name: &OsStr) -> Result<StaleState, InterposeError> {
    let aside = aside_name_of(rpc_name);
    let Some(aside_st) = dir.stat(&aside)? else {
        return Ok(StaleState::Clean);
    };
    let rpc_st = dir.stat(rpc_name)?;
    if rpc_st.map(|m| (m.st_dev, m.st_ino)) == Some((aside_st.st_dev, aside_st.st_ino)) {
        dir.unlink(&aside)?;
        return Ok(StaleState::Repaired(format!(
            "removed leftover second name {}",
            dir.display(&aside).display()
        )));
    }
    let daemon = dir.open_socket(&aside).and_then(|s| s.connect().map(|_| s));
    if let Ok(daemon) = daemon {
        // The daemon still listens under the second name: give it its name back.
        put_back(dir, &daemon, &aside, rpc_name)?;
        dir.unlink_if(&aside, daemon.stat_identity())?;
        return Ok(StaleState::Repaired(format!(
            "{} pointed at a dead proxy; gave it back to the daemon",
            dir.display(rpc_name).display()
        )));
    }
    // The daemon behind the leftover is gone too; whatever rpc.sock is now, keep it.
    dir.unlink(&aside)?;
    Ok(StaleState::Repaired(format!(
        "removed {} (its daemon is gone)",
        dir.display(&aside).display()
    )))
}

/// Put a proxy listener in front of the daemon listening on `rpc_name` in `dir`.
///
/// `daemon_pid`, when known, must be the process listening there.
pub(crate) fn interpose(
    dir: &SafeDir,
    rpc_name: &OsStr,
    daemon_pid: Option<i32>,
) -> Result<(UnixListener, Interposition), InterposeError> {
    let rpc_path = dir.display(rpc_name);
    let daemon = match dir.open_socket(rpc_name) {
        Ok(s) => s.expect_listener(daemon_pid),
        Err(SafeDirError::WrongType { .. }) => return Err(InterposeError::NotASocket(rpc_path)),
        Err(e) => return Err(e.into()),
    };
    daemon
        .connect()
        .map_err(|source| InterposeError::DaemonNotListening {
            path: rpc_path.clone(),
            source,
        })?;
    let (uid, gid, mode) = daemon.access();
    // Owner and mode are set while the socket is private; then it only moves.
    let mut staged = dir.stage_socket(uid, gid, mode)?;
    let proxy_ino = staged.ino();
    let aside = aside_name_of(rpc_name);
    // The second name is made in the private directory, checked to be the daemon's socket
    // there (nobody can swap it), then renamed over whatever waits at the aside name.
    let linked = staged.stage_link(rpc_name)?;
    if (linked.st_dev, linked.st_ino) != daemon.stat_identity() {
        return Err(InterposeError::Changed(rpc_path));
    }
    staged.install_link(&aside)?;
    let listener = match staged.install(rpc_name, true) {
        Ok(l) => l,
        Err(e) => {
            let _ = dir.unlink(&aside);
            return Err(e.into());
        }
    };
    Ok((
        listener,
        Interposition {
            dir: dir.try_clone().map_err(|error| SafeDirError::Io {
                path: dir.path().to_owned(),
                what: "cannot duplicate the directory descriptor",
                error,
            })?,
            aside_path: dir.display(&aside),
            rpc_name: rpc_name.to_owned(),
            aside_name: aside,
            rpc_path,
            proxy_ino,
            daemon,
        },
    ))
}

impl Interposition {
    /// Give `rpc.sock` back to the daemon. Safe to call more than once, and safe when the
    /// daemon went away meanwhile (then the leftover second name is removed and whatever
    /// now holds `rpc.sock`, e.g. a new daemon, is left alone). Whatever someone else did
    /// to the names meanwhile, only the daemon's own socket (held by inode) is ever put at
    /// `rpc.sock`, and the daemon's last name is never removed while it listens. Returns
    /// what was done.
    pub(crate) fn restore(&self) -> Result<&'static str, SafeDirError> {
        let daemon_id = self.daemon.stat_identity();
        let current = self.dir.stat(&self.rpc_name)?.map(|m| (m.st_dev, m.st_ino));
        let drop_aside = || self.dir.unlink_if(&self.aside_name, daemon_id).map(|_| ());
        match current {
            Some(c) if c == daemon_id => {
                drop_aside()?;
                Ok("nothing to restore")
            }
            None if self.daemon.connect().is_err() => {
                // The daemon unlinked `rpc.sock` when it exited (libuv does on close).
                drop_aside()?;
                Ok("daemon had exited; removed its leftover second name")
            }
            Some(c) if c.1 != self.proxy_ino && self.someone_else_listens() => {
                drop_aside()?;
                Ok("rpc.sock belongs to someone else now (a new daemon?); removed our second name")
            }
            _ => {
                put_back(&self.dir, &self.daemon, &self.aside_name, &self.rpc_name)?;
                drop_aside()?;
                Ok("daemon socket restored")
            }
        }
    }

    /// Whether `rpc.sock` is now a socket, not ours, on which the directory's owner listens.
    fn someone_else_listens(&self) -> bool {
        self.dir
            .open_socket(&self.rpc_name)
            .and_then(|s| s.connect())
            .is_ok()
    }
}

/// The recorder's end of the guardian: dropping it without `release` lets the guardian act.
pub(crate) struct Guardian {
    pipe_write: File,
    child: std::process::Child,
}

impl Guardian {
    /// Start the guardian process (`program`, a pm2-trace binary, hidden subcommand
    /// `__guard`) and wait until it says it guards: a program that is not pm2-trace, or
    /// a guardian that cannot take its descriptors, is an error here, not a recording
    /// left unguarded.
    pub(crate) fn spawn(
        program: &Path,
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
        let (d, s) = (ip.dir.as_fd().as_raw_fd(), ip.daemon.as_fd().as_raw_fd());
        let mut cmd = std::process::Command::new(program);
        cmd.arg("__guard")
            .arg(&ip.rpc_path)
            .arg(ip.proxy_ino.to_string())
            .arg(ip.daemon.peer_uid().map_or(-1, i64::from).to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped());
        // SAFETY: only async-signal-safe calls (dup2, setsid) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Move the three out of the way first, so that placing one on 3..5 cannot
                // overwrite another; dup2 then leaves the targets without FD_CLOEXEC.
                let mut high = [0; 5];
                for (i, from) in [r, l, k, d, s].into_iter().enumerate() {
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
        let mut child = cmd.spawn()?;
        drop(read_end);
        let ready = match child.stdout.take() {
            Some(out) => wait_ready(out, READY_TIMEOUT),
            None => Err(io::Error::other("its stdout was not a pipe")),
        };
        if let Err(e) = ready {
            let _ = child.kill();
            let status = child
                .wait()
                .map_or_else(|e| e.to_string(), |s| s.to_string());
            return Err(io::Error::other(format!(
                "{} __guard did not start guarding ({e}; it ended with {status})",
                program.display()
            )));
        }
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
/// socket, fd 5 = the recorder lock, fd 6 = the socket's directory (opened by
/// [`SafeDir::open`]), fd 7 = the daemon's socket file (`O_PATH`). `peer_uid` is -1 or the
/// uid the daemon must run as. Returns the process exit code.
pub fn guardian_main(rpc_path: PathBuf, proxy_ino: u64, peer_uid: i64) -> i32 {
    // SAFETY: these descriptors were set up by `Guardian::spawn` before exec.
    let mut pipe = unsafe { File::from_raw_fd(3) };
    let listener = unsafe { UnixListener::from_raw_fd(4) };
    let _lock = unsafe { File::from_raw_fd(5) };
    let (dir_fd, daemon_fd) = unsafe { (OwnedFd::from_raw_fd(6), OwnedFd::from_raw_fd(7)) };
    let rpc_name = rpc_path.file_name().unwrap_or_default().to_owned();
    let dir_path = rpc_path.parent().unwrap_or(Path::new("/")).to_owned();
    let (dir, daemon) = match (
        SafeDir::from_fd(dir_fd, dir_path),
        SocketRef::from_fd(daemon_fd, rpc_path.clone(), u32::try_from(peer_uid).ok()),
    ) {
        (Ok(d), Ok(s)) => (d, s),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("pm2-trace guardian: {e}");
            return 2;
        }
    };
    // Ignore terminal signals: the guardian must outlive Ctrl-C aimed at the recorder.
    // SAFETY: setting signal dispositions to SIG_IGN.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    // Guarding from here on: tell the recorder, and hand back the pipe it reads that on.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&[READY]).and_then(|()| out.flush());
    }
    // SAFETY: replacing fd 1 by /dev/null; nothing else in this process writes to stdout.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 1);
            libc::close(null);
        }
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
    let aside_name = aside_name_of(&rpc_name);
    let ip = Interposition {
        aside_path: dir.display(&aside_name),
        dir,
        rpc_name,
        aside_name,
        rpc_path,
        proxy_ino,
        daemon,
    };
    let restored = ip.restore();
    eprintln!(
        "pm2-trace guardian: recorder gone; {}",
        restored.as_ref().map(|s| *s).unwrap_or("restore failed")
    );
    // Clients that queued on the proxy before the rename: relay them to the daemon.
    let _ = listener.set_nonblocking(true);
    let mut idle_since = Instant::now();
    let mut relays = Vec::new();
    while idle_since.elapsed() < Duration::from_millis(500) {
        match listener.accept() {
            Ok((client, _)) => {
                idle_since = Instant::now();
                let _ = client.set_nonblocking(false);
                if let Ok(daemon) = ip.daemon.connect() {
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

/// Wait for the guardian's [`READY`] byte on its stdout.
fn wait_ready(mut out: std::process::ChildStdout, timeout: Duration) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: out.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no word from it within {} s", timeout.as_secs()),
            ));
        }
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            continue;
        }
        let mut byte = [0u8; 1];
        return match out.read(&mut byte) {
            Ok(1) if byte[0] == READY => Ok(()),
            Ok(0) => Err(io::Error::other("it closed its stdout without a word")),
            Ok(_) => Err(io::Error::other(format!("it wrote {:?}", byte[0] as char))),
            Err(e) => Err(e),
        };
    }
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
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn rpc() -> &'static OsStr {
        OsStr::new("rpc.sock")
    }

    #[test]
    fn interpose_and_restore_keep_the_name_alive() {
        let tmp = tempfile::tempdir().unwrap();
        let rpc_path = tmp.path().join("rpc.sock");
        let daemon = UnixListener::bind(&rpc_path).unwrap();
        std::fs::set_permissions(&rpc_path, std::fs::Permissions::from_mode(0o660)).unwrap();
        let daemon_ino = std::fs::metadata(&rpc_path).unwrap().ino();
        let dir = SafeDir::open(tmp.path()).unwrap();
        let (_proxy, ip) = interpose(&dir, rpc(), None).unwrap();
        let m = std::fs::metadata(&rpc_path).unwrap();
        assert_eq!(m.ino(), ip.proxy_ino);
        assert_eq!(m.mode() & 0o7777, 0o660);
        assert_eq!(std::fs::metadata(&ip.aside_path).unwrap().ino(), daemon_ino);
        // The proxy reaches the daemon by inode, not by name.
        ip.daemon.connect().unwrap();
        assert_eq!(ip.restore().unwrap(), "daemon socket restored");
        assert_eq!(std::fs::metadata(&rpc_path).unwrap().ino(), daemon_ino);
        assert!(!ip.aside_path.exists());
        assert_eq!(ip.restore().unwrap(), "nothing to restore");
        // Nothing else was left in the directory (no staging directory, no temporary).
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        drop(daemon);
    }

    /// The PM2_HOME owner moved the daemon's second name away and put symlinks at both
    /// names: restoring puts the daemon's own socket back at `rpc.sock` (from the descriptor
    /// held), follows nothing, and removes nothing of the daemon's.
    #[test]
    fn restore_puts_only_the_daemon_back_whatever_was_moved() {
        assert_eq!(
            crate::safe_dir::euid(),
            0,
            "this test needs root (linkat AT_EMPTY_PATH)"
        );
        let tmp = tempfile::tempdir().unwrap();
        let p = |n: &str| tmp.path().join(n);
        let _daemon = UnixListener::bind(p("rpc.sock")).unwrap();
        let daemon_ino = std::fs::metadata(p("rpc.sock")).unwrap().ino();
        let target = p("precious");
        std::fs::write(&target, "keep").unwrap();
        let dir = SafeDir::open(tmp.path()).unwrap();
        let (_proxy, ip) = interpose(&dir, rpc(), None).unwrap();
        std::fs::rename(&ip.aside_path, p("moved-away")).unwrap();
        std::os::unix::fs::symlink(&target, &ip.aside_path).unwrap();
        std::fs::rename(p("rpc.sock"), p("proxy-moved")).unwrap();
        std::os::unix::fs::symlink(&target, p("rpc.sock")).unwrap();
        assert_eq!(ip.restore().unwrap(), "daemon socket restored");
        let m = std::fs::symlink_metadata(p("rpc.sock")).unwrap();
        assert_eq!(m.ino(), daemon_ino);
        assert!(UnixStream::connect(p("rpc.sock")).is_ok());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        // The planted symlink at the second name is the owner's: left alone.
        assert!(std::fs::symlink_metadata(&ip.aside_path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(ip.restore().unwrap(), "nothing to restore");
    }

    #[test]
    fn refuses_without_a_listening_daemon() {
        let tmp = tempfile::tempdir().unwrap();
        drop(UnixListener::bind(tmp.path().join("rpc.sock")).unwrap());
        let dir = SafeDir::open(tmp.path()).unwrap();
        assert!(matches!(
            interpose(&dir, rpc(), None),
            Err(InterposeError::DaemonNotListening { .. })
        ));
        std::fs::remove_file(tmp.path().join("rpc.sock")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("rpc.sock")).unwrap();
        assert!(matches!(
            interpose(&dir, rpc(), None),
            Err(InterposeError::NotASocket(_))
        ));
    }

    #[test]
    fn stale_interposition_is_repaired() {
        let tmp = tempfile::tempdir().unwrap();
        let rpc_path = tmp.path().join("rpc.sock");
        let _daemon = UnixListener::bind(&rpc_path).unwrap();
        let dir = SafeDir::open(tmp.path()).unwrap();
        let (proxy, _ip) = interpose(&dir, rpc(), None).unwrap();
        drop(proxy); // the recorder died: rpc.sock is a dead socket now
        assert!(UnixStream::connect(&rpc_path).is_err());
        assert!(matches!(
            repair_stale(&dir, rpc()).unwrap(),
            StaleState::Repaired(_)
        ));
        assert!(UnixStream::connect(&rpc_path).is_ok());
        assert_eq!(repair_stale(&dir, rpc()).unwrap(), StaleState::Clean);
    }

    #[test]
    fn the_lock_file_is_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, tmp.path().join(LOCK_NAME)).unwrap();
        let dir = SafeDir::open(tmp.path()).unwrap();
        assert!(RecorderLock::acquire(&dir).is_err());
        assert!(!target.exists());
        std::fs::remove_file(tmp.path().join(LOCK_NAME)).unwrap();
        let held = RecorderLock::acquire(&dir).unwrap();
        assert!(matches!(
            RecorderLock::acquire(&dir),
            Err(InterposeError::Busy(_))
        ));
        drop(held);
    }
}
