//! **The trust boundary for the filesystem.** Every file, socket or directory operation the
//! tool does inside a directory that someone else may write (PM2_HOME, the directory of
//! `--listen` or of the capture, a socket directory named by `PM2_DAEMON_RPC_PORT`) goes
//! through a [`SafeDir`]. Run as root for a daemon owned by `deploy`, pm2-trace must never
//! let `deploy` redirect one of its operations to a file of root's choosing by swapping a
//! name for a symlink, a hard link or another directory.
//!
//! The rules, each enforced here and nowhere else:
//!
//! - A directory is opened once ([`SafeDir::open`]). On the way to it a symlink is followed
//!   only when it lies in a directory that nobody but root (or the user running pm2-trace)
//!   can change; any other symlink is refused, naming it.
//! - From then on only descriptor-relative calls are made on the directory's descriptor:
//!   `openat` with `O_NOFOLLOW` (plus `O_EXCL` when creating), `renameat`, `linkat`
//!   (never following), `unlinkat`, `fstatat(AT_SYMLINK_NOFOLLOW)`. No path through the
//!   directory is ever resolved again, so renaming the directory or anything in it changes
//!   nothing we act on.
//! - Files read ([`SafeDir::read_file`]) must be regular files with one link, owned by the
//!   directory's owner or by root; errors never echo what such a file contains.
//! - A socket cannot be bound through a descriptor: [`SafeDir::stage_socket`] binds it in a
//!   private 0700 directory created inside this one (only its creator can change what is
//!   inside), gives it its owner and mode there, and [`StagedSocket::install`] moves it into
//!   place with one `renameat`.
//! - Sockets are connected through an `O_PATH|O_NOFOLLOW` descriptor of the socket file
//!   ([`SafeDir::open_socket`]), never by name, and the listening peer must be the
//!   directory's owner.
//!
//! Entry names given to these methods are single path components: a `/`, `.` or `..` is
//! refused.

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Stat};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Component, Path, PathBuf};

/// How many symlinks [`SafeDir::open`] follows before it gives up (as the kernel does).
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum SafeDirError {
    #[error("{path}: {what}: {error}")]
    Io {
        path: PathBuf,
        what: &'static str,
        /// Named `error`, not `source`: the message already says it, once.
        error: io::Error,
    },
    #[error("{path} is a symlink in a directory that uid {dir_owner} can change; refusing to follow it with privilege (pass the real path instead)")]
    UntrustedSymlink { path: PathBuf, dir_owner: u32 },
    #[error("{path}: too many levels of symlinks")]
    SymlinkLoop { path: PathBuf },
    #[error("{path} is not {expected} (found {found})")]
    WrongType {
        path: PathBuf,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{path} is owned by uid {uid}, not by the directory's owner (uid {dir_owner}) or root; not read")]
    WrongOwner {
        path: PathBuf,
        uid: u32,
        dir_owner: u32,
    },
    #[error("{path} has {links} hard links; a file read with privilege must have exactly one")]
    HardLinked { path: PathBuf, links: u64 },
    #[error("{path} is larger than {limit} bytes; not read")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}: the process listening there is uid {uid}, not the directory's owner (uid {dir_owner}); not connecting")]
    WrongPeer {
        path: PathBuf,
        uid: u32,
        dir_owner: u32,
    },
    #[error("{path}: the process listening there is pid {pid}, not the PM2 daemon (pid {daemon}); not connecting")]
    NotTheDaemon {
        path: PathBuf,
        pid: i32,
        daemon: i32,
    },
    #[error("{name:?} is not a single file name")]
    BadName { name: OsString },
}

impl SafeDirError {
    /// The underlying OS error, when there is one (e.g. to tell `NotFound` apart).
    pub(crate) fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            SafeDirError::Io { error, .. } => Some(error.kind()),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, SafeDirError>;

/// The effective uid of this process.
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether `uid` is as trusted as this process: root or ourselves.
fn trusted_uid(uid: u32) -> bool {
    uid == 0 || uid == euid()
}

/// Whether only trusted users can change the entries of a directory with this status:
/// owned by root or us and writable by nobody else; with the sticky bit (like /tmp), others
/// can add entries but not touch ours, so then the entry's owner must be trusted too.
fn trusted_entries(dir: &Stat, entry_owner: u32) -> bool {
    let mode = dir.st_mode;
    trusted_uid(dir.st_uid)
        && (mode & 0o022 == 0 || (mode & 0o1000 != 0 && trusted_uid(entry_owner)))
}

fn file_type_name(st: &Stat) -> &'static str {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "an unknown kind of file",
    }
}

/// One directory, opened once; all operations inside it go through its descriptor.
#[derive(Debug)]
pub struct SafeDir {
    fd: OwnedFd,
    path: PathBuf,
    uid: u32,
    gid: u32,
    dev: u64,
    ino: u64,
}

/// An entry's identity: device and inode.
pub(crate) type Identity = (u64, u64);

fn identity(st: &Stat) -> Identity {
    (st.st_dev, st.st_ino)
}

impl SafeDir {
    /// Open the directory at `path`. Every component is opened with `O_NOFOLLOW`; a symlink
    /// on the way is followed only when it lies in a directory whose entries nobody but root
    /// or this process's user can change (so `/var/run -> /run` is fine, while a symlink in
    /// a user's home is refused, naming it).
    pub fn open(path: &Path) -> Result<SafeDir> {
        let ioerr = |what| {
            move |e: rustix::io::Errno| SafeDirError::Io {
                path: path.to_owned(),
                what,
                error: e.into(),
            }
        };
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let start = if path.is_absolute() { "/" } else { "." };
        let mut cur = rustix::fs::openat(rustix::fs::CWD, start, dir_flags, Mode::empty())
            .map_err(ioerr("cannot open"))?;
        // Components still to walk, last first; symlink targets are spliced in.
        let mut todo: Vec<OsString> = components_rev(path);
        let mut walked = PathBuf::from(start);
        let mut links = 0;
        while let Some(comp) = todo.pop() {
            if comp == "/" {
                cur = rustix::fs::openat(rustix::fs::CWD, "/", dir_flags, Mode::empty())
                    .map_err(ioerr("cannot open /"))?;
                walked = PathBuf::from("/");
                continue;
            }
            if comp == ".." {
                cur = rustix::fs::openat(&cur, "..", dir_flags, Mode::empty())
                    .map_err(ioerr("cannot open a parent directory"))?;
                walked.push("..");
                continue;
            }
            let here = walked.join(&comp);
            match rustix::fs::openat(&cur, comp.as_os_str(), dir_flags, Mode::empty()) {
                Ok(next) => {
                    cur = next;
                    walked = here;
                }
                Err(e) if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR => {
                    let st = rustix::fs::statat(&cur, comp.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| io_at(&here, "cannot inspect", e))?;
                    if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
                        return Err(SafeDirError::WrongType {
                            path: here,
                            expected: "a directory",
                            found: file_type_name(&st),
                        });
                    }
                    let dir_st =
                        rustix::fs::fstat(&cur).map_err(|e| io_at(&walked, "cannot inspect", e))?;
                    if !trusted_entries(&dir_st, st.st_uid) {
                        return Err(SafeDirError::UntrustedSymlink {
                            path: here,
                            dir_owner: dir_st.st_uid,
                        });
                    }
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(SafeDirError::SymlinkLoop { path: here });
                    }
                    let target = rustix::fs::readlinkat(&cur, comp.as_os_str(), Vec::new())
                        .map_err(|e| io_at(&here, "cannot read symlink", e))?;
                    let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
                    todo.extend(components_rev(&target));
                }
                Err(e) => return Err(io_at(&here, "cannot open", e)),
            }
        }
        let st = rustix::fs::fstat(&cur).map_err(|e| io_at(path, "cannot inspect", e))?;
        Ok(SafeDir {
            fd: cur,
            path: path.to_owned(),
            uid: st.st_uid,
            gid: st.st_gid,
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    /// Take over a directory descriptor inherited from the process that opened it with
    /// [`SafeDir::open`] (the guardian gets PM2_HOME this way); `path` is for messages.
    pub(crate) fn from_fd(fd: OwnedFd, path: PathBuf) -> Result<SafeDir> {
        let st = rustix::fs::fstat(&fd).map_err(|e| io_at(&path, "cannot inspect", e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Err(SafeDirError::WrongType {
                path,
                expected: "a directory",
                found: file_type_name(&st),
            });
        }
        Ok(SafeDir {
            fd,
            path,
            uid: st.st_uid,
            gid: st.st_gid,
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    /// Another handle on the same directory.
    pub(crate) fn try_clone(&self) -> io::Result<SafeDir> {
        Ok(SafeDir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
            ..*self
        })
    }

    /// Open the directory that holds `path`, and return it with `path`'s last component
    /// (refused when `path` ends in `..` or has no file name).
    pub(crate) fn open_parent(path: &Path) -> Result<(SafeDir, OsString)> {
        let name = path
            .file_name()
            .ok_or_else(|| SafeDirError::BadName {
                name: path.as_os_str().to_owned(),
            })?
            .to_owned();
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Ok((SafeDir::open(parent)?, name))
    }

    /// The path this directory was opened by (for messages only: it is never resolved again).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `<path>/<name>`, for messages.
    pub(crate) fn display(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.path.join(name.as_ref())
    }

    /// Owner of the directory.
    #[cfg(test)]
    pub(crate) fn owner(&self) -> (u32, u32) {
        (self.uid, self.gid)
    }

    /// Whether someone other than root and this process's user owns the directory (then
    /// its files are not trusted, and sockets must be served by its owner).
    pub(crate) fn owned_by_other(&self) -> bool {
        !trusted_uid(self.uid)
    }

    /// Device and inode of the directory itself.
    pub(crate) fn identity(&self) -> Identity {
        (self.dev, self.ino)
    }

    /// The directory's descriptor (an `O_PATH` descriptor: for `*at` calls only).
    pub(crate) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `/proc/self/fd/<fd>/<name>`: a path that reaches `name` in this very directory,
    /// whatever has been renamed since. Only for `bind` and `connect`, which have no `*at`
    /// form; the last component is still a name in this directory.
    fn proc_path(&self, name: &OsStr) -> PathBuf {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        p.push(name);
        p
    }

    fn err(
        &self,
        name: &OsStr,
        what: &'static str,
    ) -> impl FnOnce(rustix::io::Errno) -> SafeDirError {
        let path = self.display(name);
        move |e| io_at(&path, what, e)
    }

    /// Status of `name` without following it; `None` when there is no such entry.
    pub(crate) fn stat(&self, name: impl AsRef<OsStr>) -> Result<Option<Stat>> {
        let name = check_name(name.as_ref())?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(self.err(name, "cannot inspect")(e)),
        }
    }

    /// Open `name` for reading: not through a symlink, not blocking on a FIFO, and only when
    /// it is a regular file with one link, owned by the directory's owner or by root. What a
    /// refused file holds is never read.
    pub(crate) fn open_read(&self, name: impl AsRef<OsStr>) -> Result<File> {
        let name = check_name(name.as_ref())?;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(self.err(name, "cannot open"))?;
        let st = rustix::fs::fstat(&fd).map_err(self.err(name, "cannot inspect"))?;
        let path = || self.display(name);
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(SafeDirError::WrongType {
                path: path(),
                expected: "a regular file",
                found: file_type_name(&st),
            });
        }
        if st.st_uid != self.uid && st.st_uid != 0 {
            return Err(SafeDirError::WrongOwner {
                path: path(),
                uid: st.st_uid,
                dir_owner: self.uid,
            });
        }
        if st.st_nlink != 1 {
            return Err(SafeDirError::HardLinked {
                path: path(),
                links: st.st_nlink as u64,
            });
        }
        // Back to blocking reads for the caller (regular files never block anyway).
        let _ = rustix::fs::fcntl_setfl(&fd, OFlags::empty());
        Ok(File::from(fd))
    }

    /// Read all of `name` (checked as in [`SafeDir::open_read`]), refusing files larger
    /// than `limit` bytes.
    pub(crate) fn read_file(&self, name: impl AsRef<OsStr>, limit: u64) -> Result<Vec<u8>> {
        let name = name.as_ref();
        let f = self.open_read(name)?;
        let mut buf = Vec::new();
        f.take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|error| SafeDirError::Io {
                path: self.display(name),
                what: "cannot read",
                error,
            })?;
        if buf.len() as u64 > limit {
            return Err(SafeDirError::TooLarge {
                path: self.display(name),
                limit,
            });
        }
        Ok(buf)
    }

    /// The names in this directory (without `.` and `..`), listed through its descriptor
    /// (`explain` looks for a log's rotated copies this way). Nothing is followed or opened.
    pub fn entries(&self) -> Result<Vec<OsString>> {
        let fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_at(&self.path, "cannot list", e))?;
        let mut dir =
            rustix::fs::Dir::read_from(&fd).map_err(|e| io_at(&self.path, "cannot list", e))?;
        let mut out = Vec::new();
        for ent in dir.by_ref() {
            let ent = ent.map_err(|e| io_at(&self.path, "cannot list", e))?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                out.push(OsStr::from_bytes(n).to_owned());
            }
        }
        Ok(out)
    }

    /// Create `name` as a new file (never an existing one, never through a symlink), open
    /// for writing, with `mode`.
    pub(crate) fn create_excl(&self, name: impl AsRef<OsStr>, mode: u32) -> Result<File> {
        let name = check_name(name.as_ref())?;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(self.err(name, "cannot create"))?;
        Ok(File::from(fd))
    }

    /// Open `name` to hold an `flock` on it: the existing regular file, or a new one created
    /// with `mode` (and, when this process is root, given to the directory's owner so the
    /// owner can lock it too). Read-only: nothing is ever written to it.
    pub(crate) fn open_lock_file(&self, name: impl AsRef<OsStr>, mode: u32) -> Result<File> {
        let name = check_name(name.as_ref())?;
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        for _ in 0..8 {
            let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) => {
                    match rustix::fs::openat(
                        &self.fd,
                        name,
                        flags | OFlags::CREATE | OFlags::EXCL,
                        Mode::from_raw_mode(mode),
                    ) {
                        Ok(fd) => {
                            if euid() == 0 && self.uid != 0 {
                                let _ = rustix::fs::fchown(
                                    &fd,
                                    Some(rustix::fs::Uid::from_raw(self.uid)),
                                    Some(rustix::fs::Gid::from_raw(self.gid)),
                                );
                            }
                            fd
                        }
                        Err(rustix::io::Errno::EXIST) => continue,
                        Err(e) => return Err(self.err(name, "cannot create lock file")(e)),
                    }
                }
                Err(e) => return Err(self.err(name, "cannot open lock file")(e)),
            };
            let st = rustix::fs::fstat(&fd).map_err(self.err(name, "cannot inspect"))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                return Err(SafeDirError::WrongType {
                    path: self.display(name),
                    expected: "a regular file",
                    found: file_type_name(&st),
                });
            }
            return Ok(File::from(fd));
        }
        Err(self.err(name, "cannot open lock file")(
            rustix::io::Errno::AGAIN,
        ))
    }

    /// Rename `from` to `to` in this directory (atomically replacing `to`). Neither name is
    /// followed.
    pub(crate) fn rename(&self, from: impl AsRef<OsStr>, to: impl AsRef<OsStr>) -> Result<()> {
        let (from, to) = (check_name(from.as_ref())?, check_name(to.as_ref())?);
        rustix::fs::renameat(&self.fd, from, &self.fd, to).map_err(self.err(to, "cannot rename"))
    }

    /// Give the entry `existing` a second name `new` (a hard link to the entry itself, never
    /// to what a symlink points at). Fails when `new` exists.
    #[cfg(test)]
    pub(crate) fn link(&self, existing: impl AsRef<OsStr>, new: impl AsRef<OsStr>) -> Result<()> {
        let (existing, new) = (check_name(existing.as_ref())?, check_name(new.as_ref())?);
        rustix::fs::linkat(&self.fd, existing, &self.fd, new, AtFlags::empty())
            .map_err(self.err(new, "cannot link"))
    }

    /// Give the socket file held by `sock` the name `name` in this directory again,
    /// atomically replacing whatever is there: a hard link from the descriptor itself
    /// (`linkat(AT_EMPTY_PATH)`, which needs CAP_DAC_READ_SEARCH, i.e. root) made inside a
    /// private directory, then one `renameat` into place. Only that very inode can land at
    /// `name`, whatever anyone renames meanwhile.
    pub fn relink(&self, sock: &SocketRef, name: impl AsRef<OsStr>) -> Result<()> {
        let name = check_name(name.as_ref())?;
        let stage = self.make_private_dir()?;
        let r = rustix::fs::linkat(
            &sock.fd,
            "",
            &stage.dir.fd,
            STAGED_LINK,
            AtFlags::EMPTY_PATH,
        )
        .and_then(|()| rustix::fs::renameat(&stage.dir.fd, STAGED_LINK, &self.fd, name))
        .map_err(self.err(name, "cannot give the socket its name back"));
        let _ = rustix::fs::unlinkat(&stage.dir.fd, STAGED_LINK, AtFlags::empty());
        r
    }

    /// Remove the entry `name` (not a directory). A symlink is removed, never followed.
    pub(crate) fn unlink(&self, name: impl AsRef<OsStr>) -> Result<()> {
        let name = check_name(name.as_ref())?;
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())
            .map_err(self.err(name, "cannot remove"))
    }

    /// Remove `name` only when it is still the entry with identity `id` (a check, then
    /// `unlinkat`: whatever replaced it in between is an entry of this directory's owner,
    /// whose removal gives nobody anything).
    pub(crate) fn unlink_if(&self, name: impl AsRef<OsStr>, id: Identity) -> Result<bool> {
        let name = name.as_ref();
        match self.stat(name)? {
            Some(st) if identity(&st) == id => {
                self.unlink(name)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Open the socket file `name` without following it (an `O_PATH` descriptor of that very
    /// inode), for [`SocketRef::connect`].
    pub fn open_socket(&self, name: impl AsRef<OsStr>) -> Result<SocketRef> {
        let name = check_name(name.as_ref())?;
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(self.err(name, "cannot open"))?;
        let st = rustix::fs::fstat(&fd).map_err(self.err(name, "cannot inspect"))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
            return Err(SafeDirError::WrongType {
                path: self.display(name),
                expected: "a unix socket",
                found: file_type_name(&st),
            });
        }
        Ok(SocketRef {
            fd,
            path: self.display(name),
            stat: st,
            peer_uid: self.owned_by_other().then_some(self.uid),
            peer_pid: None,
        })
    }

    /// Bind a listening socket that will become `name`, staged in a private directory: the
    /// returned [`StagedSocket`] has owner `uid:gid` and `mode` before anyone else can see
    /// it. Put it in place with [`StagedSocket::install`].
    pub(crate) fn stage_socket(&self, uid: u32, gid: u32, mode: u32) -> Result<StagedSocket<'_>> {
        let stage = self.make_private_dir()?;
        let staged = StagedSocket {
            home: self,
            stage,
            listener: None,
            linked: false,
            ino: 0,
        };
        staged.bind(uid, gid, mode)
    }

    /// Create a private directory (0700, ours) on this directory's mount, where nobody
    /// else can change its entries, and open it. It goes into the nearest directory above
    /// this one (same mount) whose entries only root or we can change, such as `/home` or
    /// the sticky `/tmp`; there no one can touch it. Failing that, into this directory
    /// itself: its owner may then remove or replace the new entry before we open it, and
    /// another name is tried (what they put there is theirs and left alone).
    fn make_private_dir(&self) -> Result<PrivateDir> {
        const ATTEMPTS: usize = 16;
        let base = match self.staging_base() {
            Some(b) => b,
            None => self.try_clone().map_err(|error| SafeDirError::Io {
                path: self.path.clone(),
                what: "cannot duplicate the directory descriptor",
                error,
            })?,
        };
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let name = OsString::from(format!(
                ".pm2-trace-stage-{}-{:x}",
                std::process::id(),
                stage_nonce()
            ));
            rustix::fs::mkdirat(&base.fd, name.as_os_str(), Mode::from_raw_mode(0o700))
                .map_err(base.err(&name, "cannot create a private directory"))?;
            match base.open_private(&name) {
                Ok(dir) => return Ok(PrivateDir { base, name, dir }),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// The nearest directory at or above this one, on the same mount, whose entries only
    /// root or this process's user can change (for our own entries: a sticky directory
    /// qualifies). `None` when there is none or the kernel cannot tell mounts apart.
    fn staging_base(&self) -> Option<SafeDir> {
        let mnt = |fd: &OwnedFd| {
            rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, rustix::fs::StatxFlags::MNT_ID)
                .ok()
                .filter(|x| x.stx_mask & rustix::fs::StatxFlags::MNT_ID.bits() != 0)
                .map(|x| x.stx_mnt_id)
        };
        let home_mnt = mnt(&self.fd)?;
        let mut cur = self.fd.try_clone().ok()?;
        let mut path = self.path.clone();
        for _ in 0..256 {
            let st = rustix::fs::fstat(&cur).ok()?;
            if mnt(&cur)? != home_mnt {
                return None;
            }
            if trusted_entries(&st, euid()) {
                return Some(SafeDir {
                    fd: cur,
                    path,
                    uid: st.st_uid,
                    gid: st.st_gid,
                    dev: st.st_dev,
                    ino: st.st_ino,
                });
            }
            let up = rustix::fs::openat(
                &cur,
                "..",
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()?;
            let up_st = rustix::fs::fstat(&up).ok()?;
            if identity(&up_st) == identity(&st) {
                return None; // the root of the tree
            }
            cur = up;
            path.push("..");
        }
        None
    }

    /// Open `name`, a directory this process just created with mode 0700, and check that
    /// it is still that: owned by us, 0700, empty. From then on nobody else can change its
    /// entries, wherever it is moved.
    fn open_private(&self, name: &OsStr) -> Result<SafeDir> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(self.err(name, "cannot open the private directory"))?;
        let st = rustix::fs::fstat(&fd).map_err(self.err(name, "cannot inspect"))?;
        if st.st_uid != euid() || st.st_mode & 0o7777 != 0o700 || st.st_nlink != 2 {
            return Err(SafeDirError::Io {
                path: self.display(name),
                what: "the private directory was replaced",
                error: io::Error::from(io::ErrorKind::PermissionDenied),
            });
        }
        Ok(SafeDir {
            fd,
            path: self.display(name),
            uid: st.st_uid,
            gid: st.st_gid,
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

/// A listening socket bound in a private directory, with its final owner and mode, waiting
/// to be renamed into place. Dropping it removes the socket file and the private directory.
pub(crate) struct StagedSocket<'a> {
    home: &'a SafeDir,
    stage: PrivateDir,
    listener: Option<UnixListener>,
    /// Whether [`StagedSocket::stage_link`] put a link in the private directory.
    linked: bool,
    ino: u64,
}

/// A private directory made by [`SafeDir::make_private_dir`] (0700, ours, in a directory
/// where nobody else can change it, or re-checked after it was made); removed on drop, if
/// its name still leads to it.
struct PrivateDir {
    base: SafeDir,
    name: OsString,
    dir: SafeDir,
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Ok(st) = rustix::fs::statat(
            &self.base.fd,
            self.name.as_os_str(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            if identity(&st) == self.dir.identity() {
                let _ =
                    rustix::fs::unlinkat(&self.base.fd, self.name.as_os_str(), AtFlags::REMOVEDIR);
            }
        }
    }
}

const STAGED: &str = "s";
const STAGED_LINK: &str = "l";

impl<'a> StagedSocket<'a> {
    fn bind(mut self, uid: u32, gid: u32, mode: u32) -> Result<Self> {
        let path = self.stage.dir.proc_path(OsStr::new(STAGED));
        let listener = UnixListener::bind(&path).map_err(|error| SafeDirError::Io {
            path: self.stage.dir.display(STAGED),
            what: "cannot listen",
            error,
        })?;
        self.listener = Some(listener);
        let name = OsStr::new(STAGED);
        // The private directory is ours alone: nothing in it can be a planted symlink.
        if euid() == 0 {
            rustix::fs::chownat(
                &self.stage.dir.fd,
                name,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(self.stage.dir.err(name, "cannot give the socket its owner"))?;
        }
        rustix::fs::chmodat(
            &self.stage.dir.fd,
            name,
            Mode::from_raw_mode(mode & 0o7777),
            AtFlags::empty(),
        )
        .map_err(self.stage.dir.err(name, "cannot give the socket its mode"))?;
        let st = rustix::fs::statat(&self.stage.dir.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(self.stage.dir.err(name, "cannot inspect"))?;
        self.ino = st.st_ino;
        Ok(self)
    }

    /// Inode of the socket file (to recognise it later under its final name).
    pub(crate) fn ino(&self) -> u64 {
        self.ino
    }

    /// Give the entry `existing` of the home directory a second name, first inside the
    /// private directory (where nobody else can swap it) so that its identity can be
    /// checked: returns its status. [`StagedSocket::install_link`] then moves it to its
    /// final name.
    pub fn stage_link(&mut self, existing: impl AsRef<OsStr>) -> Result<Stat> {
        let existing = check_name(existing.as_ref())?;
        rustix::fs::linkat(
            &self.home.fd,
            existing,
            &self.stage.dir.fd,
            STAGED_LINK,
            AtFlags::empty(),
        )
        .map_err(self.home.err(existing, "cannot give it a second name"))?;
        self.linked = true;
        rustix::fs::statat(&self.stage.dir.fd, STAGED_LINK, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(self.home.err(existing, "cannot inspect its second name"))
    }

    /// Move the link made by [`StagedSocket::stage_link`] to `name` in the home directory,
    /// atomically replacing whatever is there.
    pub fn install_link(&mut self, name: impl AsRef<OsStr>) -> Result<()> {
        let name = check_name(name.as_ref())?;
        rustix::fs::renameat(&self.stage.dir.fd, STAGED_LINK, &self.home.fd, name)
            .map_err(self.home.err(name, "cannot put the second name in place"))?;
        self.linked = false;
        Ok(())
    }

    /// Rename the socket to `name` in the directory it was staged for. `replace` allows an
    /// existing `name` to be replaced atomically; otherwise an existing `name` is an error.
    /// Returns the listener; the private directory is removed.
    pub(crate) fn install(
        mut self,
        name: impl AsRef<OsStr>,
        replace: bool,
    ) -> Result<UnixListener> {
        let name = check_name(name.as_ref())?;
        let flags = if replace {
            RenameFlags::empty()
        } else {
            RenameFlags::NOREPLACE
        };
        rustix::fs::renameat_with(&self.stage.dir.fd, STAGED, &self.home.fd, name, flags)
            .map_err(self.home.err(name, "cannot put the socket in place"))?;
        Ok(self.listener.take().expect("bound"))
    }
}

impl Drop for StagedSocket<'_> {
    fn drop(&mut self) {
        if self.listener.is_some() {
            let _ = rustix::fs::unlinkat(&self.stage.dir.fd, STAGED, AtFlags::empty());
        }
        if self.linked {
            let _ = rustix::fs::unlinkat(&self.stage.dir.fd, STAGED_LINK, AtFlags::empty());
        }
    }
}

/// A socket file held by an `O_PATH` descriptor: connecting reaches that inode whatever
/// its name has become since.
#[derive(Debug)]
pub struct SocketRef {
    fd: OwnedFd,
    path: PathBuf,
    stat: Stat,
    /// When set, the listening process must run as this uid (the directory's owner).
    peer_uid: Option<u32>,
    /// When set, the listening process must be this one (the PM2 daemon).
    peer_pid: Option<i32>,
}

impl SocketRef {
    /// Owner, group and mode of the socket file.
    pub(crate) fn access(&self) -> (u32, u32, u32) {
        (
            self.stat.st_uid,
            self.stat.st_gid,
            self.stat.st_mode & 0o7777,
        )
    }

    /// Device and inode of the socket file.
    pub fn stat_identity(&self) -> Identity {
        identity(&self.stat)
    }

    /// Connect to the socket. When the directory belongs to another user, the listening
    /// process must be that user's: root never talks, on a user's behalf, to a socket the
    /// user could not reach.
    pub(crate) fn connect(&self) -> Result<UnixStream> {
        let s = UnixStream::connect(format!("/proc/self/fd/{}", self.fd.as_raw_fd())).map_err(
            |error| SafeDirError::Io {
                path: self.path.clone(),
                what: "cannot connect",
                error,
            },
        )?;
        if self.peer_uid.is_none() && self.peer_pid.is_none() {
            return Ok(s);
        }
        let cred = rustix::net::sockopt::socket_peercred(&s)
            .map_err(|e| io_at(&self.path, "cannot tell who listens", e))?;
        if let Some(want) = self.peer_uid {
            let uid = cred.uid.as_raw();
            if uid != want {
                return Err(SafeDirError::WrongPeer {
                    path: self.path.clone(),
                    uid,
                    dir_owner: want,
                });
            }
        }
        if let Some(daemon) = self.peer_pid {
            let pid = cred.pid.as_raw_nonzero().get();
            if pid != daemon {
                return Err(SafeDirError::NotTheDaemon {
                    path: self.path.clone(),
                    pid,
                    daemon,
                });
            }
        }
        Ok(s)
    }

    /// From now on, [`SocketRef::connect`] also requires the listening process to be `pid`
    /// (the PM2 daemon found for this home): a socket path taken from the daemon's own
    /// environment (`PM2_DAEMON_RPC_PORT`) cannot lead root to someone else's socket.
    pub fn expect_listener(mut self, pid: Option<i32>) -> SocketRef {
        self.peer_pid = pid;
        self
    }

    /// Take over an `O_PATH` descriptor of a socket file inherited from the process that
    /// made it with [`SafeDir::open_socket`]; `peer_uid` as [`SocketRef::peer_uid`] said.
    pub(crate) fn from_fd(fd: OwnedFd, path: PathBuf, peer_uid: Option<u32>) -> Result<SocketRef> {
        let stat = rustix::fs::fstat(&fd).map_err(|e| io_at(&path, "cannot inspect", e))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::Socket {
            return Err(SafeDirError::WrongType {
                path,
                expected: "a unix socket",
                found: file_type_name(&stat),
            });
        }
        Ok(SocketRef {
            fd,
            path,
            stat,
            peer_uid,
            peer_pid: None,
        })
    }

    /// The uid the listening process must have, if any.
    pub(crate) fn peer_uid(&self) -> Option<u32> {
        self.peer_uid
    }

    /// The `O_PATH` descriptor (to hand to the guardian process).
    pub(crate) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Another handle on the same socket file.
    pub(crate) fn try_clone(&self) -> io::Result<SocketRef> {
        Ok(SocketRef {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
            stat: self.stat,
            peer_uid: self.peer_uid,
            peer_pid: self.peer_pid,
        })
    }
}

fn io_at(path: &Path, what: &'static str, e: rustix::io::Errno) -> SafeDirError {
    SafeDirError::Io {
        path: path.to_owned(),
        what,
        error: e.into(),
    }
}

fn check_name(name: &OsStr) -> Result<&OsStr> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(SafeDirError::BadName {
            name: name.to_owned(),
        });
    }
    Ok(name)
}

/// The components of `path`, last first, with `/` standing for the root.
fn components_rev(path: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::RootDir => Some(OsString::from("/")),
            Component::ParentDir => Some(OsString::from("..")),
            Component::Normal(n) => Some(n.to_owned()),
            Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    v.reverse();
    v
}

fn stage_nonce() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::getrandom(&mut b);
    u64::from_ne_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const NOBODY: u32 = 65534;

    /// A directory owned by `nobody` (the PM2_HOME of an untrusted user) and, beside it,
    /// a root-only file that must never change. These tests act as root, like `sudo
    /// pm2-trace`; they fail (never skip) when not run as root.
    struct Scene {
        _tmp: tempfile::TempDir,
        home: PathBuf,
        secret: PathBuf,
    }

    fn scene() -> Scene {
        assert_eq!(
            euid(),
            0,
            "the safe_dir tests need root: they check what root does in another user's directory"
        );
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
        let vault = tmp.path().join("vault");
        std::fs::create_dir(&vault).unwrap();
        std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o700)).unwrap();
        let secret = vault.join("secret");
        std::fs::write(&secret, "root only\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        Scene {
            _tmp: tmp,
            home,
            secret,
        }
    }

    impl Scene {
        fn plant(&self, name: &str, target: &Path) {
            std::os::unix::fs::symlink(target, self.home.join(name)).unwrap();
        }
        /// The root-only file is exactly as it was made.
        fn secret_intact(&self) {
            let m = std::fs::symlink_metadata(&self.secret).unwrap();
            assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o600));
            assert_eq!(
                std::fs::read_to_string(&self.secret).unwrap(),
                "root only\n"
            );
            let entries: Vec<_> = std::fs::read_dir(self.secret.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(entries, vec![OsString::from("secret")]);
        }
    }

    #[test]
    fn symlinks_on_the_way_are_followed_only_where_only_root_can_plant_them() {
        let s = scene();
        // Root's own symlink in a root-only directory: followed.
        let root_dir = s.home.parent().unwrap();
        std::os::unix::fs::symlink(&s.home, root_dir.join("via-root")).unwrap();
        let d = SafeDir::open(&root_dir.join("via-root")).unwrap();
        assert_eq!(d.owner().0, NOBODY);
        assert!(d.owned_by_other());
        // The user's symlink inside their own directory: refused, naming it.
        s.plant("up", s.secret.parent().unwrap());
        let e = SafeDir::open(&s.home.join("up")).unwrap_err();
        assert!(
            matches!(
                e,
                SafeDirError::UntrustedSymlink {
                    dir_owner: NOBODY,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("home/up"), "{e}");
        // A symlink as a middle component too.
        let e = SafeDir::open(&s.home.join("up/x")).unwrap_err();
        assert!(matches!(e, SafeDirError::UntrustedSymlink { .. }), "{e}");
        // Not a directory.
        std::fs::write(s.home.join("f"), "").unwrap();
        assert!(matches!(
            SafeDir::open(&s.home.join("f")).unwrap_err(),
            SafeDirError::WrongType { .. }
        ));
        s.secret_intact();
    }

    #[test]
    fn files_read_with_privilege_are_checked_and_never_echoed() {
        let s = scene();
        let d = SafeDir::open(&s.home).unwrap();
        std::fs::write(s.home.join("pm2.pid"), "4242\n").unwrap();
        std::os::unix::fs::chown(s.home.join("pm2.pid"), Some(NOBODY), None).unwrap();
        assert_eq!(d.read_file("pm2.pid", 64).unwrap(), b"4242\n");
        // A symlink to the secret: refused without reading it.
        s.plant("link", &s.secret);
        let e = d.read_file("link", 64).unwrap_err().to_string();
        assert!(!e.contains("root only"), "{e}");
        // A FIFO: refused without blocking.
        let fifo = s.home.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(matches!(
            d.read_file("fifo", 64).unwrap_err(),
            SafeDirError::WrongType {
                found: "a FIFO",
                ..
            }
        ));
        // A hard link to a root file (as with fs.protected_hardlinks=0).
        std::fs::hard_link(&s.secret, s.home.join("hard")).unwrap();
        let e = d.read_file("hard", 64).unwrap_err();
        assert!(
            matches!(e, SafeDirError::HardLinked { links: 2, .. }),
            "{e}"
        );
        assert!(!e.to_string().contains("root only"));
        std::fs::remove_file(s.home.join("hard")).unwrap();
        // A file of a third user.
        std::fs::write(s.home.join("other"), "x").unwrap();
        std::os::unix::fs::chown(s.home.join("other"), Some(12345), None).unwrap();
        assert!(matches!(
            d.read_file("other", 64).unwrap_err(),
            SafeDirError::WrongOwner { uid: 12345, .. }
        ));
        // Too big.
        std::fs::write(s.home.join("big"), vec![b'1'; 100]).unwrap();
        assert!(matches!(
            d.read_file("big", 64).unwrap_err(),
            SafeDirError::TooLarge { .. }
        ));
        // Names are single components.
        for bad in ["../vault/secret", "..", ".", "", "a/b"] {
            assert!(
                matches!(d.read_file(bad, 64), Err(SafeDirError::BadName { .. })),
                "{bad}"
            );
        }
        s.secret_intact();
    }

    #[test]
    fn creating_never_goes_through_a_planted_name() {
        let s = scene();
        let d = SafeDir::open(&s.home).unwrap();
        let new_target = s.secret.with_file_name("created");
        s.plant("out", &new_target);
        assert!(d.create_excl("out", 0o600).is_err());
        s.plant("pm2-trace.lock", &new_target);
        assert!(d.open_lock_file("pm2-trace.lock", 0o644).is_err());
        s.plant("lock2", &s.secret);
        assert!(d.open_lock_file("lock2", 0o644).is_err());
        // A fresh lock file goes to the directory's owner.
        let f = d.open_lock_file("fresh.lock", 0o644).unwrap();
        let m = f.metadata().unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (NOBODY, 0o644));
        s.secret_intact();
    }

    #[test]
    fn rename_link_unlink_act_on_names_never_on_targets() {
        let s = scene();
        let d = SafeDir::open(&s.home).unwrap();
        s.plant("rpc.sock", &s.secret);
        d.link("rpc.sock", "aside").unwrap();
        assert!(std::fs::symlink_metadata(s.home.join("aside"))
            .unwrap()
            .file_type()
            .is_symlink());
        d.rename("aside", "moved").unwrap();
        d.unlink("moved").unwrap();
        d.unlink("rpc.sock").unwrap();
        assert!(d.stat("rpc.sock").unwrap().is_none());
        s.secret_intact();
    }

    #[test]
    fn a_swapped_directory_changes_nothing_we_act_on() {
        let s = scene();
        let d = SafeDir::open(&s.home).unwrap();
        // The owner renames the directory away and puts a symlink to root's in its place.
        let moved = s.home.with_file_name("home-moved");
        std::fs::rename(&s.home, &moved).unwrap();
        std::os::unix::fs::symlink(s.secret.parent().unwrap(), &s.home).unwrap();
        drop(d.create_excl("new", 0o600).unwrap());
        assert!(moved.join("new").exists());
        d.stage_socket(NOBODY, NOBODY, 0o660)
            .unwrap()
            .install("rpc.sock", true)
            .unwrap();
        assert!(moved.join("rpc.sock").exists());
        s.secret_intact();
    }

    #[test]
    fn sockets_are_staged_privately_and_replace_a_planted_name() {
        let s = scene();
        let d = SafeDir::open(&s.home).unwrap();
        s.plant("rpc.sock", &s.secret);
        let staged = d.stage_socket(NOBODY, NOBODY, 0o770).unwrap();
        let ino = staged.ino();
        let _l = staged.install("rpc.sock", true).unwrap();
        let m = std::fs::symlink_metadata(s.home.join("rpc.sock")).unwrap();
        assert_eq!(
            (m.ino(), m.uid(), m.gid(), m.mode() & 0o7777),
            (ino, NOBODY, NOBODY, 0o770)
        );
        // Only rpc.sock is left: the private directory is gone.
        let names: Vec<_> = std::fs::read_dir(&s.home)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("rpc.sock")]);
        // Without `replace`, an existing name is an error and the stage is cleaned up.
        s.plant("listen.sock", &s.secret);
        assert!(d
            .stage_socket(NOBODY, NOBODY, 0o770)
            .unwrap()
            .install("listen.sock", false)
            .is_err());
        assert_eq!(std::fs::read_dir(&s.home).unwrap().count(), 2);
        s.secret_intact();
    }

    #[test]
    fn sockets_are_connected_by_inode_and_only_to_the_owner() {
        let s = scene();
        let d = SafeDir::open(&s.home).unwrap();
        // A socket planted as a symlink: refused.
        let elsewhere = s.home.with_file_name("root.sock");
        let _root_listener = UnixListener::bind(&elsewhere).unwrap();
        s.plant("rpc.sock", &elsewhere);
        assert!(matches!(
            d.open_socket("rpc.sock").unwrap_err(),
            SafeDirError::WrongType {
                found: "a symlink",
                ..
            }
        ));
        // A socket in the user's directory served by root (not by the user): refused.
        let _l = UnixListener::bind(s.home.join("root-served.sock")).unwrap();
        let r = d.open_socket("root-served.sock").unwrap();
        assert!(matches!(
            r.connect().unwrap_err(),
            SafeDirError::WrongPeer {
                uid: 0,
                dir_owner: NOBODY,
                ..
            }
        ));
        // Only the daemon's own socket, when its pid is known.
        let mine = UnixListener::bind(s.home.with_file_name("mine.sock")).unwrap();
        let td = SafeDir::open(s.home.parent().unwrap()).unwrap();
        let me = std::process::id() as i32;
        assert!(td
            .open_socket("mine.sock")
            .unwrap()
            .expect_listener(Some(me))
            .connect()
            .is_ok());
        assert!(matches!(
            td.open_socket("mine.sock")
                .unwrap()
                .expect_listener(Some(1))
                .connect(),
            Err(SafeDirError::NotTheDaemon { daemon: 1, .. })
        ));
        drop(mine);
        // A trusted directory: connected, through the inode even after a rename.
        let tmp = tempfile::tempdir().unwrap();
        let _ok = UnixListener::bind(tmp.path().join("a.sock")).unwrap();
        let td = SafeDir::open(tmp.path()).unwrap();
        let r = td.open_socket("a.sock").unwrap();
        std::fs::rename(tmp.path().join("a.sock"), tmp.path().join("b.sock")).unwrap();
        r.connect().unwrap();
        s.secret_intact();
    }
}
