//! Direct I/O for a capture: its bytes go from aligned staging buffers to the disk, never
//! through the page cache, written by a thread of the writer's own.
//!
//! Why: a recording writes hundreds of MB per second once, and reads them later if ever.
//! Through the page cache the kernel copied every byte into a fresh cache page and later
//! wrote it back and reclaimed it: 0.25 to 0.7 s of CPU per GB written on the project's
//! 2-core machine (more on a host whose memory is full of cache), the largest part of the
//! recorder loop's time at 1 GB/s. With `O_DIRECT` the disk reads the staging buffer itself:
//! about 0.1 s per GB, the copy into staging included. A direct write blocks while the disk
//! works (about 0.6 s per GB here), so the thread makes it while the writer fills the next
//! buffer.
//!
//! Alignment: a direct write starts at a multiple of [`BLOCK`] in the file, from memory
//! aligned as much, for a whole number of blocks. A staging buffer always starts at a block
//! boundary of the file and only its whole blocks are written directly; the bytes after them
//! move on to the next buffer. [`Direct::flush`] writes the last, partial block through the
//! page cache (so the file ends exactly at its data) and keeps those bytes: the next write
//! rewrites that block from its start, directly.
//!
//! A file system that refuses `O_DIRECT` (at `fcntl`, or with `EINVAL` on a write) is
//! written through the page cache instead, with the same bytes.
//!
//! Errors: the thread stops writing at the first failure and reports how far the file is
//! whole ([`Failure::reached`]); the writer learns of it at its next call and cuts the capture
//! back to its last whole record (see `writer.rs`).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

/// Alignment of direct writes, in the file and in memory (the largest logical block size
/// of common disks).
pub(super) const BLOCK: usize = 4096;
/// Size of one staging buffer.
const STAGING: usize = 1 << 20;
/// Staging buffers per writer at most: one being filled, the others in the thread's hands.
/// Made only as the disk falls behind (a quiet recording uses two); sixteen let a disk's
/// pause of about 10 ms pass at 1 GB/s without holding up the recorder loop, which waits
/// for a free buffer. With four, runs at 1 GB/s in full took 0.4 to 1.0 s to catch up.
const BUFFERS: usize = 16;

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Block([u8; BLOCK]);

/// A staging buffer: [`STAGING`] bytes aligned to [`BLOCK`], the first `len` of them data.
struct Staging {
    blocks: Box<[Block]>,
    len: usize,
}

impl Staging {
    fn new() -> Staging {
        Staging {
            blocks: vec![Block([0; BLOCK]); STAGING / BLOCK].into_boxed_slice(),
            len: 0,
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.blocks.len() * BLOCK;
        // SAFETY: `Block` is a `repr(C)` array of bytes with no padding (its size is its
        // alignment), so the boxed slice is `len` initialised bytes in one allocation,
        // borrowed mutably through `self` for as long as the returned slice lives.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<u8>(), len) }
    }

    fn data(&self) -> &[u8] {
        // SAFETY: as in `bytes_mut`; only the first `len` bytes (`len` never exceeds the
        // buffer) are lent, shared.
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr().cast::<u8>(), self.len) }
    }

    /// Append as much of `bytes` as fits; how much did.
    fn fill(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(STAGING - self.len);
        let at = self.len;
        self.bytes_mut()[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n
    }
}

/// A write for the thread: the buffer's data at `at` (a multiple of [`BLOCK`]), its whole
/// blocks directly, a partial last block (a flush's) through the page cache.
struct Job {
    buf: Staging,
    at: u64,
}

/// The thread's answer to a job: the buffer back, and the failure that stopped the writing
/// (a job after a failure is not written, and answered without one).
struct Done {
    buf: Staging,
    failed: Option<Failure>,
}

/// A write that failed: the file holds whole data up to `reached`.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) reached: u64,
    pub(super) error: io::Error,
}

/// The writer's side: the buffer being filled and the thread writing the others.
pub(super) struct Direct {
    /// The buffer being filled; its byte 0 is at `base` in the file.
    staging: Staging,
    base: u64,
    /// Bytes at the start of `staging` already in the file (the partial block a flush
    /// wrote through the page cache).
    flushed: usize,
    free: Vec<Staging>,
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    /// End offset of each job in the thread's hands, in order.
    in_flight: VecDeque<u64>,
    /// The file holds whole data up to here (every job before it answered).
    confirmed: u64,
    failure: Option<Failure>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use rustix::fs::OFlags;
    let flags = rustix::fs::fcntl_getfl(file)?;
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    Ok(rustix::fs::fcntl_setfl(file, flags)?)
}

impl Direct {
    /// Direct writes to `file`, an empty file just created: None when its file system
    /// refuses `O_DIRECT` or no thread can be started (the writer then writes through the
    /// page cache itself).
    pub(super) fn start(file: &Arc<File>) -> Option<Direct> {
        // Refused at once by a file system without direct I/O (tmpfs before Linux 6.6,
        // some FUSE file systems).
        set_direct(file, true).ok()?;
        set_direct(file, false).ok()?;
        let (jobs, jobs_rx) = sync_channel::<Job>(BUFFERS);
        let (done_tx, done) = sync_channel::<Done>(BUFFERS);
        let thread = {
            let file = file.clone();
            std::thread::Builder::new()
                .name("capture-disk".into())
                .spawn(move || write_jobs(&file, jobs_rx, done_tx))
                .ok()?
        };
        Some(Direct {
            staging: Staging::new(),
            base: 0,
            flushed: 0,
            free: Vec::new(),
            jobs: Some(jobs),
            done,
            in_flight: VecDeque::new(),
            confirmed: 0,
            failure: None,
            thread: Some(thread),
        })
    }

    /// The file holds whole data up to here.
    pub(super) fn confirmed(&self) -> u64 {
        self.confirmed
    }

    /// Append `parts` (one after the other) to what is written; full buffers go to the
    /// thread. A failure reported since is returned (once).
    pub(super) fn append(&mut self, parts: &[&[u8]]) -> Result<(), Failure> {
        self.answered(false);
        self.failed()?;
        for part in parts {
            let mut rest: &[u8] = part;
            while !rest.is_empty() {
                let n = self.staging.fill(rest);
                rest = &rest[n..];
                if self.staging.len == STAGING {
                    self.send_staging(false)?;
                }
            }
        }
        Ok(())
    }

    /// Hand the whole blocks of the buffer to the thread, now; the bytes after them stay.
    pub(super) fn write_whole(&mut self) -> Result<(), Failure> {
        if self.staging.len >= BLOCK {
            self.send_staging(false)?;
        }
        self.failed()
    }

    /// Write everything appended (the last, partial block through the page cache) and wait
    /// until it is in the file.
    pub(super) fn flush(&mut self) -> Result<(), Failure> {
        if self.staging.len > self.flushed {
            self.send_staging(true)?;
        }
        while !self.in_flight.is_empty() {
            self.answered(true);
        }
        self.failed()
    }

    /// The buffer to the thread: its whole blocks, and with `tail` its partial last block
    /// too (through the page cache). The bytes after the last whole block start the next
    /// buffer: written again, directly, with the next job.
    fn send_staging(&mut self, tail: bool) -> Result<(), Failure> {
        let len = self.staging.len;
        let whole = len / BLOCK * BLOCK;
        let mut next = self.take_buffer()?;
        next.fill(&self.staging.data()[whole..len]);
        let mut buf = std::mem::replace(&mut self.staging, next);
        if !tail {
            buf.len = whole;
        }
        self.send(buf);
        self.base += whole as u64;
        self.flushed = if tail { len - whole } else { 0 };
        Ok(())
    }

    fn send(&mut self, buf: Staging) {
        let end = self.base + buf.len as u64;
        let job = Job { buf, at: self.base };
        let sent = self.jobs.as_ref().is_some_and(|j| j.send(job).is_ok());
        if sent {
            self.in_flight.push_back(end);
        } else if self.failure.is_none() {
            self.failure = Some(Failure {
                reached: self.confirmed,
                error: io::Error::other("the capture's writing thread is gone"),
            });
        }
    }

    /// A free buffer, waiting for the thread to give one back when all are in its hands.
    fn take_buffer(&mut self) -> Result<Staging, Failure> {
        loop {
            if let Some(mut b) = self.free.pop() {
                b.len = 0;
                return Ok(b);
            }
            if self.in_flight.len() + 1 < BUFFERS {
                return Ok(Staging::new());
            }
            self.answered(true);
            self.failed()?;
        }
    }

    /// Take the thread's answers: all that are in (`wait`: at least one, when any job is
    /// in its hands).
    fn answered(&mut self, wait: bool) {
        let mut wait = wait && !self.in_flight.is_empty();
        loop {
            let done = if wait {
                wait = false;
                self.done.recv().ok()
            } else {
                self.done.try_recv().ok()
            };
            let Some(done) = done else {
                if !self.in_flight.is_empty()
                    && self.thread.as_ref().is_some_and(|t| t.is_finished())
                {
                    // The thread ended without answering (it cannot, short of a panic).
                    self.in_flight.clear();
                    self.failure.get_or_insert(Failure {
                        reached: self.confirmed,
                        error: io::Error::other("the capture's writing thread stopped"),
                    });
                }
                return;
            };
            let end = self.in_flight.pop_front();
            match done.failed {
                Some(mut f) => {
                    // A job after a flush starts by rewriting the partial block the flush
                    // wrote, with the same bytes: what was confirmed stays whole.
                    f.reached = f.reached.max(self.confirmed);
                    self.failure.get_or_insert(f);
                }
                None if self.failure.is_none() => self.confirmed = end.unwrap_or(self.confirmed),
                None => {}
            }
            self.free.push(done.buf);
        }
    }

    /// The failure reported, if any (taken: reported once; the writer stops here).
    fn failed(&mut self) -> Result<(), Failure> {
        match self.failure.take() {
            Some(f) => {
                // Nothing more is written.
                self.jobs = None;
                Err(f)
            }
            None => Ok(()),
        }
    }
}

impl Drop for Direct {
    /// Let the thread write what it holds, then end it (it leaves the file without
    /// `O_DIRECT`, for the writer's own writes after).
    fn drop(&mut self) {
        self.jobs = None;
        while !self.in_flight.is_empty() {
            if self.done.recv().is_err() {
                break;
            }
            self.in_flight.pop_front();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Hand pages written through the page cache back to the host: start the writeback of
/// `written` (offset, length; no waiting) and drop `before`, written back by then, from the
/// cache (pages still dirty are kept by the kernel). Best effort: a file system without
/// these calls keeps its pages.
pub(super) fn write_behind(file: &File, written: (u64, u64), before: Option<(u64, u64)>) {
    // SAFETY: sync_file_range on a descriptor we hold, with a valid range; it only queues
    // writeback (no WAIT flag) and its failure changes nothing written.
    unsafe {
        libc::sync_file_range(
            std::os::fd::AsRawFd::as_raw_fd(file),
            written.0 as libc::off64_t,
            written.1 as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
    if let Some((at, len)) = before {
        let _ = rustix::fs::fadvise(
            file,
            at,
            std::num::NonZeroU64::new(len),
            rustix::fs::Advice::DontNeed,
        );
    }
}

/// The thread: write each job in turn, answer with its buffer; after a failure, write
/// nothing more.
fn write_jobs(file: &File, jobs: Receiver<Job>, done: SyncSender<Done>) {
    let mut disk = Mode {
        direct_ok: true,
        direct_now: false,
        stopped: false,
        cached: None,
    };
    for job in jobs {
        let failed = if disk.stopped {
            None
        } else {
            let r = disk.write(file, &job);
            disk.stopped = r.is_err();
            r.err()
        };
        if done
            .send(Done {
                buf: job.buf,
                failed,
            })
            .is_err()
        {
            break;
        }
    }
    let _ = set_direct(file, false);
}

/// How the thread writes.
struct Mode {
    /// The file system takes direct writes (until one is refused).
    direct_ok: bool,
    /// `O_DIRECT` is set on the file now.
    direct_now: bool,
    /// A write failed: nothing more is written.
    stopped: bool,
    /// The last job written through the page cache after direct writes were refused
    /// (offset, length): dropped from the cache once the next one is written.
    cached: Option<(u64, u64)>,
}

impl Mode {
    fn set(&mut self, file: &File, direct: bool) -> io::Result<()> {
        if self.direct_now != direct {
            set_direct(file, direct)?;
            self.direct_now = direct;
        }
        Ok(())
    }

    fn write(&mut self, file: &File, job: &Job) -> Result<(), Failure> {
        let data = job.buf.data();
        let whole = data.len() / BLOCK * BLOCK;
        let mut done = 0usize;
        while done < data.len() {
            let at = job.at + done as u64;
            let fail = |error| Failure { reached: at, error };
            // Whole blocks directly; a partial block (or a write the file system refused
            // directly) through the page cache.
            let direct = self.direct_ok && done < whole && done % BLOCK == 0;
            let end = if direct { whole } else { data.len() };
            if let Err(e) = self.set(file, direct) {
                if direct {
                    self.direct_ok = false;
                    continue;
                }
                return Err(fail(e));
            }
            match rustix::io::pwrite(file, &data[done..end], at) {
                Ok(0) => {
                    return Err(fail(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "write returned 0 bytes",
                    )))
                }
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR) => {}
                // Refused directly (alignment, a file system that accepted the flag but
                // not the write): through the page cache from now on.
                Err(rustix::io::Errno::INVAL) if direct => self.direct_ok = false,
                Err(e) => return Err(fail(e.into())),
            }
        }
        if !self.direct_ok {
            // Written through the page cache after all: its pages go as the writer's do
            // without direct I/O.
            let range = (job.at, data.len() as u64);
            write_behind(file, range, self.cached.replace(range));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// A new file beside the test binary (the build's disk file system: /tmp may be a tmpfs,
    /// without direct I/O before Linux 6.6).
    fn file_in_build_dir() -> (tempfile::TempDir, Arc<File>, std::path::PathBuf) {
        let exe = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
        let path = dir.path().join("direct.bin");
        let f = std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (dir, Arc::new(f), path)
    }

    /// Appends of every size, flushes between them at any offset, whole-block sends: the
    /// file is exactly the bytes appended, in order, after each flush and at the end.
    #[test]
    fn the_file_holds_exactly_what_was_appended() {
        let (_dir, file, path) = file_in_build_dir();
        let mut d = Direct::start(&file).expect("direct I/O on the build's file system");
        let mut expect = Vec::new();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for round in 0..60 {
            let len = match round % 5 {
                0 => next() % 10,
                1 => next() % 5000,
                2 => BLOCK * (1 + next() % 3),
                3 => next() % (3 * STAGING),
                _ => 1 + next() % 70_000,
            };
            let bytes: Vec<u8> = (0..len).map(|i| (i as u64 ^ round) as u8).collect();
            let cut = len / 3;
            d.append(&[&bytes[..cut], &bytes[cut..]]).unwrap();
            expect.extend_from_slice(&bytes);
            match next() % 3 {
                0 => {
                    d.flush().unwrap();
                    assert_eq!(std::fs::read(&path).unwrap(), expect, "round {round}");
                    assert_eq!(d.confirmed(), expect.len() as u64);
                }
                1 => d.write_whole().unwrap(),
                _ => {}
            }
        }
        d.flush().unwrap();
        drop(d);
        assert_eq!(std::fs::read(&path).unwrap(), expect);
        // The writer's own writes after: the file is no longer in direct mode.
        file.write_all_at(b"xyz", 5).unwrap();
        assert!(!rustix::fs::fcntl_getfl(&*file)
            .unwrap()
            .contains(rustix::fs::OFlags::DIRECT));
    }

    /// A failing write (a read-only descriptor) is reported with how far the file is whole,
    /// and nothing is written after it.
    #[test]
    fn a_failure_is_reported_once_with_the_whole_length() {
        let (_dir, file, path) = file_in_build_dir();
        let mut d = Direct::start(&file).unwrap();
        d.append(&[&vec![1u8; 3 * BLOCK + 10]]).unwrap();
        d.flush().unwrap();
        // From now on the thread writes to a descriptor open for reading only.
        let ro = Arc::new(File::open(&path).unwrap());
        let mut broken = Direct::start(&ro).unwrap();
        broken.base = d.base;
        broken.confirmed = d.base;
        let f = broken
            .append(&[&vec![2u8; STAGING + 5]])
            .and_then(|()| broken.flush())
            .expect_err("writes to a read-only descriptor fail");
        assert_eq!(f.reached, d.base);
        assert_eq!(f.error.raw_os_error(), Some(libc::EBADF), "{}", f.error);
        // Reported once; nothing more is sent.
        assert!(broken.append(&[b"more"]).is_ok());
        assert!(broken.jobs.is_none());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            3 * BLOCK as u64 + 10
        );
    }
}
