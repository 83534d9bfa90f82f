//! The transparent RPC proxy in front of the daemon's `rpc.sock`.
//!
//! Each accepted client gets its own connection to the daemon and one forwarding thread,
//! which waits on both sockets (`poll`; both non-blocking). It reads a chunk, writes it on at
//! once, and only then offers a copy to the
//! recorder through a bounded, non-blocking tap: a slow recorder loses copies (and says
//! so), never delays or alters the traffic. Nothing is decoded here.

use crate::event::{mono_now, Direction, MonoNs, PeerCred};
use crate::safe_dir::SocketRef;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Size of one forwarding read.
const CHUNK: usize = 64 * 1024;

/// What the proxy tells the recorder.
#[derive(Debug)]
pub enum Tap {
    Open {
        t: MonoNs,
        conn: u64,
        peer: Option<PeerCred>,
    },
    Data {
        t: MonoNs,
        conn: u64,
        dir: Direction,
        bytes: Chunk,
    },
    /// Copies of this stream were lost from here on because the recorder fell behind.
    Gap {
        t: MonoNs,
        conn: u64,
        dir: Direction,
    },
    Close {
        t: MonoNs,
        conn: u64,
        to_client_bytes: u64,
        to_daemon_bytes: u64,
    },
    Refused {
        t: MonoNs,
        peer: PeerCred,
        reason: String,
    },
    /// The daemon's socket could not be reached for this client.
    UpstreamFailed { t: MonoNs, conn: u64, error: String },
}

impl Tap {
    /// When the copy was seen.
    pub fn time(&self) -> MonoNs {
        match self {
            Tap::Open { t, .. }
            | Tap::Data { t, .. }
            | Tap::Gap { t, .. }
            | Tap::Close { t, .. }
            | Tap::Refused { t, .. }
            | Tap::UpstreamFailed { t, .. } => *t,
        }
    }
}

/// Bytes a forwarding thread read and forwarded: the first `len` bytes of the buffer it read
/// them into, handed over whole (the rest of the buffer is not part of the copy and is never
/// shown: only `len` bytes deref).
#[derive(Debug)]
pub struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

impl Chunk {
    /// The buffer, for the forwarding threads to read into again.
    pub(crate) fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes of memory it holds (the whole buffer, not only the bytes read).
    pub(crate) fn held(&self) -> usize {
        self.buf.capacity()
    }
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl From<Vec<u8>> for Chunk {
    fn from(buf: Vec<u8>) -> Chunk {
        let len = buf.len();
        Chunk { buf, len }
    }
}

/// Who may connect: the owner, group and mode of the daemon's own socket file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mode: u32,
}

impl Access {
    /// The rights of the daemon's socket file.
    pub fn of_socket(s: &SocketRef) -> Access {
        let (uid, gid, mode) = s.access();
        Access { uid, gid, mode }
    }

    /// Whether the kernel would let `peer` connect to a socket file with these rights
    /// (connecting needs write permission on the file). `groups` lists the peer's
    /// supplementary groups; it is only asked for when it matters.
    pub(crate) fn admits(
        &self,
        peer: &PeerCred,
        groups: impl FnOnce() -> Vec<u32>,
    ) -> Result<(), String> {
        let ok = if peer.uid == 0 {
            true
        } else if peer.uid == self.uid {
            self.mode & 0o200 != 0
        } else if peer.gid == self.gid || groups().contains(&self.gid) {
            self.mode & 0o020 != 0
        } else {
            self.mode & 0o002 != 0
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "uid {} gid {} may not write a socket owned by {}:{} with mode {:o}",
                peer.uid, peer.gid, self.uid, self.gid, self.mode
            ))
        }
    }
}

/// SO_PEERCRED of a connected unix socket.
pub(crate) fn peer_cred(s: &UnixStream) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is that large.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Supplementary groups of a process, from /proc/<pid>/status.
pub(crate) fn groups_of(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Groups:").map(|g| {
                    g.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

/// Bounded, non-blocking path from the forwarding threads to the recorder.
///
/// Sending shares no lock with the receiver, a `SCHED_IDLE` thread that may be preempted at
/// any instruction and not run again until a CPU has nothing else to do: a forwarding
/// thread waiting for a lock it held would wait that long. The queue is a standard channel
/// whose sending side takes no lock while no receiver waits in it (the receiver only ever
/// polls it); the bounds are atomic counters; the receiver sleeps by parking its thread and
/// a sender wakes it with `unpark` (an atomic and a futex wake, no lock), only when it is
/// parked. A woken receiver waits a moment before draining, so a burst of traffic costs one
/// wake-up, not one per chunk: the recorder's work happens in batches beside the traffic
/// rather than between a request and its reply.
pub struct TapSender {
    queue: Arc<TapQueue>,
    /// None only while dropping (the channel closes before the receiver is woken).
    tx: Option<std::sync::mpsc::Sender<Tap>>,
}

struct TapQueue {
    /// The receiving thread, known from its first [`TapReceiver::recv_batch`].
    receiver: std::sync::OnceLock<std::thread::Thread>,
    parked: AtomicBool,
    senders: AtomicUsize,
    /// Taps sent and not yet taken.
    queued: AtomicUsize,
    /// Bytes of `Data` taps sent and not yet taken by the recorder.
    in_flight: AtomicUsize,
    max_in_flight: usize,
    max_items: usize,
    lost: AtomicU64,
    /// The stamp of the oldest tap sent since the receiver last took this value
    /// (`u64::MAX`: none): lowered by every sender before it sends.
    floor: AtomicU64,
    /// The stamp of the oldest tap the receiver has taken and not yet finished with (`u64::MAX`:
    /// none). Written by the receiver only. See [`TapProgress`].
    taken: AtomicU64,
    /// One per direction of a connection being forwarded (claimed while it runs, [`FREE`]
    /// otherwise): the stamp of the bytes it read and has not queued yet, or [`IDLE`]. See
    /// [`Forwarding`].
    forwarding: Box<[AtomicU64]>,
    /// Buffers the recorder gave back: a forwarding thread reads into one, forwards, and
    /// queues that very buffer, so forwarding neither copies nor allocates once the
    /// recording is warm.
    pool: std::sync::Mutex<BufferPool>,
}

/// Forwarding-size buffers kept for reuse. While the recorder is
/// starved of CPU (it runs only on time nobody else wants), the copies in flight pile up:
/// buffers allocated then come in fresh pages, zeroed by the kernel on the forwarding
/// thread (a tenth of the whole process's time when 256 were kept; with 1024, 64 MB, still
/// 8% of all samples at 0.5 GB/s in full, in `Vec::with_capacity` on the forwarding
/// thread). As many are kept as the tap lets be in flight (its byte bound: a buffer is in
/// flight or here, never both), and what a whole [`POOL_TRIM_EVERY`] did not need is freed.
const POOL_TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The buffers kept, trimmed at most once every [`POOL_TRIM_EVERY`].
struct BufferPool {
    kept: crate::spare::Spare<Vec<u8>>,
    trimmed: std::time::Instant,
}

impl Default for BufferPool {
    fn default() -> Self {
        BufferPool {
            kept: Default::default(),
            trimmed: std::time::Instant::now(),
        }
    }
}

impl BufferPool {
    fn take(&mut self) -> Option<Vec<u8>> {
        self.kept.take()
    }

    /// The buffers not needed since the last trim, once one has passed (freed by the
    /// caller, outside the lock).
    fn trim(&mut self) -> Vec<Vec<u8>> {
        if self.trimmed.elapsed() < POOL_TRIM_EVERY {
            return Vec::new();
        }
        self.trimmed = std::time::Instant::now();
        self.kept.trim()
    }
}

/// The recorder's end of the tap.
pub struct TapReceiver {
    queue: Arc<TapQueue>,
    rx: std::sync::mpsc::Receiver<Tap>,
}

/// How far the tapped copies have been turned into events, read by the recorder's loop:
/// it writes no event younger than a copy still to be decoded. The tap decoder runs in the
/// idle class and on a busy host falls behind by hundreds of ms (seen: 500 ms at load 9),
/// more than the recorder's reorder window: a `restartProcessId` was written after the new
/// generation's start, which then had no request that started it.
pub struct TapProgress {
    queue: Arc<TapQueue>,
}

impl TapProgress {
    /// The stamp of the oldest tap sent and not yet finished with by the receiver, or of
    /// bytes a forwarding thread has stamped and not yet sent (None: none). Read before
    /// taking the receiver's events: the events of every older tap have been sent by then.
    pub fn oldest_pending(&self) -> Option<MonoNs> {
        let q = &self.queue;
        // In the order a copy goes: in a forwarding thread's hand, sent, taken.
        let in_hand = q
            .forwarding
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .filter(|&t| t != FREE)
            .min()
            .unwrap_or(IDLE);
        let sent = q.floor.load(Ordering::SeqCst);
        let taken = q.taken.load(Ordering::SeqCst);
        let oldest = in_hand.min(sent).min(taken);
        (oldest != u64::MAX).then_some(oldest)
    }
}

/// How long a woken receiver lets a burst accumulate before draining it.
const TAP_BATCH: std::time::Duration = std::time::Duration::from_millis(1);

/// A tap holding at most `max_items` taps and `max_in_flight` bytes of copies.
pub fn tap_channel(max_items: usize, max_in_flight: usize) -> (TapSender, TapReceiver) {
    let (tx, rx) = std::sync::mpsc::channel();
    let queue = Arc::new(TapQueue {
        receiver: Default::default(),
        parked: AtomicBool::new(false),
        senders: AtomicUsize::new(1),
        queued: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        max_in_flight,
        max_items,
        lost: AtomicU64::new(0),
        floor: AtomicU64::new(u64::MAX),
        taken: AtomicU64::new(u64::MAX),
        forwarding: (0..FORWARDING_SLOTS)
            .map(|_| AtomicU64::new(FREE))
            .collect(),
        pool: Default::default(),
    });
    (
        TapSender {
            queue: queue.clone(),
            tx: Some(tx),
        },
        TapReceiver { queue, rx },
    )
}

impl TapQueue {
    /// Wake the receiver if it is parked (or about to park: it then returns at once).
    fn wake(&self) {
        if self.parked.load(Ordering::SeqCst) {
            if let Some(t) = self.receiver.get() {
                t.unpark();
            }
        }
    }
}

impl Clone for TapSender {
    fn clone(&self) -> Self {
        self.queue.senders.fetch_add(1, Ordering::SeqCst);
        TapSender {
            queue: self.queue.clone(),
            tx: self.tx.clone(),
        }
    }
}

impl Drop for TapSender {
    fn drop(&mut self) {
        // The channel closes with the last sender: closed first, then the receiver woken
        // to see it.
        drop(self.tx.take());
        if self.queue.senders.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(t) = self.queue.receiver.get() {
                t.unpark();
            }
        }
    }
}

/// Directions whose bytes in hand [`TapProgress`] sees (two per connection); one beyond
/// them forwards and records as the others, but is unseen between reading and queueing.
const FORWARDING_SLOTS: usize = 256;
/// A slot no forwarding thread holds.
const FREE: u64 = 0;
/// A slot whose thread has no bytes in hand.
const IDLE: u64 = u64::MAX;

/// A direction's slot: the stamp of the bytes it has read and not yet queued for the
/// recorder (it forwards them first), so that the recorder's loop waits for their events
/// too. Under load a forwarding thread was seen to queue a copy more than 150 ms after
/// stamping it, longer than the reorder window; a receiver that does not read holds a
/// direction's bytes for as long as it likes.
pub(crate) struct Forwarding {
    queue: Arc<TapQueue>,
    slot: Option<usize>,
}

impl Forwarding {
    /// Bytes stamped `t` are in hand.
    fn begin(&self, t: MonoNs) {
        if let Some(i) = self.slot {
            self.queue.forwarding[i].store(t, Ordering::SeqCst);
        }
    }

    /// They are queued (or will not be).
    fn end(&self) {
        if let Some(i) = self.slot {
            self.queue.forwarding[i].store(IDLE, Ordering::Release);
        }
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            self.queue.forwarding[i].store(FREE, Ordering::Release);
        }
    }
}

impl TapSender {
    /// A slot for one direction of a connection (none when all are held).
    pub(crate) fn forwarding(&self) -> Forwarding {
        let slots = &self.queue.forwarding;
        let slot = (0..slots.len()).find(|&i| {
            slots[i]
                .compare_exchange(FREE, IDLE, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        Forwarding {
            queue: self.queue.clone(),
            slot,
        }
    }

    fn send(&self, tap: Tap) -> bool {
        let q = &self.queue;
        if q.queued.fetch_add(1, Ordering::SeqCst) >= q.max_items {
            q.queued.fetch_sub(1, Ordering::SeqCst);
            q.lost.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        // Counted, then its stamp, then sent: see `TapReceiver::recv_batch`.
        q.floor.fetch_min(tap.time(), Ordering::SeqCst);
        if self.tx.as_ref().is_none_or(|tx| tx.send(tap).is_err()) {
            // The receiver is gone.
            q.queued.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        q.wake();
        true
    }

    /// Queue the first `n` bytes of `buf` (bytes already forwarded) for the recorder. A read
    /// that filled at least a quarter of the buffer's capacity hands the buffer itself over,
    /// and `buf` is replaced by one of the same capacity from the buffers the recorder gave
    /// back (or a new one, not zeroed: the threads read into spare capacity), so the bytes are
    /// never copied; a shorter read is copied into a buffer of its own size, so that small
    /// reads never pin whole buffers. The tap's byte bound counts what is held
    /// ([`Chunk::held`]), so it bounds memory, not only payload. False when the tap is full:
    /// `buf` is then left as it was.
    fn data(&self, t: MonoNs, conn: u64, dir: Direction, buf: &mut Vec<u8>, n: usize) -> bool {
        let q = &self.queue;
        let size = buf.capacity();
        let hand_over = n >= size / 4;
        let held = if hand_over { size } else { n };
        if q.in_flight.fetch_add(held, Ordering::Relaxed) + held > q.max_in_flight {
            q.in_flight.fetch_sub(held, Ordering::Relaxed);
            q.lost.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let copy = if hand_over {
            // Never wait for the pool: the recorder's idle-class threads take its lock too,
            // and one preempted while holding it would stall forwarding. Busy: a new buffer.
            let next = q
                .pool
                .try_lock()
                .ok()
                .and_then(|mut p| p.take())
                .filter(|kept| kept.capacity() == size)
                .unwrap_or_else(|| Vec::with_capacity(size));
            Chunk {
                buf: std::mem::replace(buf, next),
                len: n,
            }
        } else {
            Chunk::from(buf[..n].to_vec())
        };
        debug_assert_eq!(copy.held(), held);
        let ok = self.send(Tap::Data {
            t,
            conn,
            dir,
            bytes: copy,
        });
        if !ok {
            q.in_flight.fetch_sub(held, Ordering::Relaxed);
        }
        ok
    }
}

impl TapReceiver {
    /// Move every queued tap into `out`, waiting for some if there are none. False once every
    /// sender is gone and nothing is left. Always called from one thread (it is the one
    /// the senders wake), and only once what the last call returned is finished with: its
    /// events sent on (see [`TapProgress`]).
    pub fn recv_batch(&self, out: &mut Vec<Tap>) -> bool {
        let q = &self.queue;
        let me = q.receiver.get_or_init(std::thread::current);
        debug_assert_eq!(me.id(), std::thread::current().id());
        loop {
            // What the last call took is finished with. What is queued now is covered by
            // `taken` from here until the next call: first by the floor as it stands, then
            // by the floor taken, which senders lower again from the swap on.
            q.taken
                .store(q.floor.load(Ordering::SeqCst), Ordering::SeqCst);
            let floor = q.floor.swap(u64::MAX, Ordering::SeqCst);
            q.taken.store(floor, Ordering::SeqCst);
            let before = out.len();
            loop {
                match self.rx.try_recv() {
                    Ok(tap) => {
                        q.queued.fetch_sub(1, Ordering::SeqCst);
                        if let Tap::Data { bytes, .. } = &tap {
                            q.in_flight.fetch_sub(bytes.held(), Ordering::Relaxed);
                        }
                        out.push(tap);
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        // What was taken before the end stays covered until the next call.
                        let took = out.len() > before;
                        if !took {
                            q.taken.store(u64::MAX, Ordering::SeqCst);
                        }
                        return took;
                    }
                }
            }
            if out.len() > before {
                return true;
            }
            // Nothing taken. A tap counted but not in the channel yet (its sender is between
            // the two) keeps its stamp in the floor; with nothing counted, the floor taken
            // was only of taps already finished with.
            if q.queued.load(Ordering::SeqCst) > 0 {
                q.floor.fetch_min(floor, Ordering::SeqCst);
            }
            q.taken.store(u64::MAX, Ordering::SeqCst);
            // Park, unless a tap was sent meanwhile (its sender sees `parked` or this sees
            // `queued`: both are sequentially consistent).
            q.parked.store(true, Ordering::SeqCst);
            let idle = if q.queued.load(Ordering::SeqCst) == 0 {
                let since = std::time::Instant::now();
                std::thread::park_timeout(POOL_TRIM_EVERY);
                since.elapsed() >= POOL_TRIM_EVERY
            } else {
                // Counted, not in the channel yet: its sender is between the two.
                std::thread::yield_now();
                false
            };
            q.parked.store(false, Ordering::SeqCst);
            if idle {
                // No traffic for a while: let go of the buffers it does not need.
                self.trim_pool();
                continue;
            }
            std::thread::sleep(TAP_BATCH);
        }
    }

    /// How far the receiver has got, for another thread to read.
    pub fn progress(&self) -> TapProgress {
        TapProgress {
            queue: self.queue.clone(),
        }
    }

    /// Taps lost so far.
    pub fn lost(&self) -> u64 {
        self.queue.lost.load(Ordering::Relaxed)
    }

    /// Give a `Data` tap's buffer back for reuse by the forwarding threads.
    pub(crate) fn recycle(&self, buf: Vec<u8>) {
        // Only buffers a forwarding thread reads into (a short read's own copy is not one).
        let freed = match self.queue.pool.lock() {
            Ok(mut p) => {
                if buf.capacity() == CHUNK && p.kept.len() < self.queue.max_in_flight / CHUNK {
                    p.kept.put(buf);
                }
                p.trim()
            }
            Err(_) => Vec::new(),
        };
        drop(freed);
    }

    /// Free the kept buffers the forwarding threads have not needed lately.
    fn trim_pool(&self) {
        let freed = self.queue.pool.lock().map(|mut p| p.trim());
        drop(freed);
    }
}

/// The connections being forwarded: for each, a handle on its client and daemon sockets,
/// so that a hurried stop can cut them.
type Active = Arc<std::sync::Mutex<std::collections::HashMap<u64, [UnixStream; 2]>>>;

/// A running proxy.
pub struct Proxy {
    listener: Arc<UnixListener>,
    stopping: Arc<AtomicBool>,
    active: Active,
    accept_thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Accept clients on `listener` and forward each to the daemon's socket `upstream`
    /// (reached by inode, and only when its owner listens there: see [`SocketRef::connect`]).
    pub fn start(
        listener: UnixListener,
        upstream: SocketRef,
        access: Access,
        tap: TapSender,
    ) -> io::Result<Proxy> {
        let listener = Arc::new(listener);
        let stopping = Arc::new(AtomicBool::new(false));
        let active: Active = Default::default();
        let accept_thread = {
            let (listener, stopping, active) = (listener.clone(), stopping.clone(), active.clone());
            std::thread::Builder::new()
                .name("proxy-accept".into())
                .spawn(move || {
                    crate::sched::short_slice();
                    accept_loop(&listener, &upstream, access, &tap, &stopping, &active)
                })?
        };
        Ok(Proxy {
            listener,
            stopping,
            active,
            accept_thread: Some(accept_thread),
        })
    }

    /// Connections being forwarded now.
    pub(crate) fn active(&self) -> usize {
        self.active.lock().map_or(0, |a| a.len())
    }

    /// Cut every connection still being forwarded (both sides see it closed), so that a
    /// stop that cannot wait for them ends now.
    pub(crate) fn cut_all(&self) {
        if let Ok(a) = self.active.lock() {
            for pair in a.values() {
                for s in pair {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
            }
        }
    }

    /// Stop accepting; connections in progress go on. Returns once the accept loop ended.
    pub(crate) fn stop_accepting(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // SAFETY: shutdown on our own listening fd; on Linux it wakes a blocked accept().
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop_accepting();
    }
}

fn accept_loop(
    listener: &UnixListener,
    upstream: &SocketRef,
    access: Access,
    tap: &TapSender,
    stopping: &AtomicBool,
    active: &Active,
) {
    let mut next_conn = 1u64;
    loop {
        let client = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // EMFILE and the like: back off rather than spin.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let peer = peer_cred(&client).ok();
        if let Some(p) = peer {
            if let Err(reason) = access.admits(&p, || groups_of(p.pid)) {
                tap.send(Tap::Refused {
                    t: mono_now(),
                    peer: p,
                    reason,
                });
                drop(client);
                continue;
            }
        }
        let conn = next_conn;
        next_conn += 1;
        let daemon = match upstream.connect() {
            Ok(d) => d,
            Err(e) => {
                tap.send(Tap::UpstreamFailed {
                    t: mono_now(),
                    conn,
                    error: e.to_string(),
                });
                drop(client);
                continue;
            }
        };
        tap.send(Tap::Open {
            t: mono_now(),
            conn,
            peer,
        });
        if let Err(e) = spawn_pair(conn, client, daemon, tap.clone(), active.clone()) {
            tap.send(Tap::UpstreamFailed {
                t: mono_now(),
                conn,
                error: format!("cannot start forwarding: {e}"),
            });
        }
    }
}

fn spawn_pair(
    conn: u64,
    client: UnixStream,
    daemon: UnixStream,
    tap: TapSender,
    active: Active,
) -> io::Result<()> {
    let handles = [client.try_clone()?, daemon.try_clone()?];
    if let Ok(mut a) = active.lock() {
        a.insert(conn, handles);
    }
    let closing = active.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("proxy-{conn}"))
        .spawn(move || {
            let [down, up] = forward(client, daemon, conn, &tap);
            tap.send(Tap::Close {
                t: mono_now(),
                conn,
                to_client_bytes: down,
                to_daemon_bytes: up,
            });
            if let Ok(mut a) = closing.lock() {
                a.remove(&conn);
            }
        });
    if let Err(e) = spawned {
        // Without a thread to forward it the connection is useless: end it.
        if let Some(pair) = active.lock().ok().and_then(|mut a| a.remove(&conn)) {
            for s in &pair {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        return Err(e);
    }
    Ok(())
}

/// One direction of a connection: the bytes of its last read until they are all written on.
struct Way {
    dir: Direction,
    /// The last read's bytes (`buf.len()`); empty when the direction may read again.
    buf: Vec<u8>,
    /// Of those, the bytes written on so far.
    written: usize,
    /// When they were read.
    t: MonoNs,
    /// Its reading side has not ended (EOF or error) yet.
    open: bool,
    /// Bytes forwarded.
    total: u64,
    tapping: bool,
    /// Tells the recorder's loop the stamp of bytes read and not yet queued for it.
    in_hand: Forwarding,
}

impl Way {
    fn new(dir: Direction, in_hand: Forwarding) -> Way {
        Way {
            dir,
            // Read into the spare capacity of an empty buffer: a new buffer (the last one went
            // to the recorder) is never zeroed first, and holds only the bytes of its own read.
            buf: Vec::with_capacity(CHUNK),
            written: 0,
            t: 0,
            open: true,
            total: 0,
            tapping: true,
            in_hand,
        }
    }

    fn pending(&self) -> bool {
        self.written < self.buf.len()
    }

    /// Whether it waits for its source to be readable.
    fn reads(&self) -> bool {
        self.open && !self.pending()
    }

    /// The direction ends: nothing more is read from `from` nor written to `to` (the other
    /// side sees the half-close), and what was read and not yet written is dropped.
    fn end(&mut self, from: &UnixStream, to: &UnixStream) {
        if self.open || self.pending() {
            let _ = to.shutdown(std::net::Shutdown::Write);
            let _ = from.shutdown(std::net::Shutdown::Read);
        }
        self.open = false;
        self.buf.clear();
        self.written = 0;
        self.in_hand.end();
    }

    /// Read what `from` has (it said it was ready), if this direction may read.
    fn read(&mut self, from: &UnixStream, to: &UnixStream) {
        if !self.reads() {
            return;
        }
        self.buf.clear();
        self.written = 0;
        match rustix::io::read(from, rustix::buffer::spare_capacity(&mut self.buf)) {
            Ok(0) => self.end(from, to),
            // The instant the bytes were seen.
            Ok(_) => {
                self.t = mono_now();
                if self.tapping {
                    self.in_hand.begin(self.t);
                }
            }
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
            Err(_) => self.end(from, to),
        }
    }

    /// Write on what is pending, as much as `to` takes now; once all of a read is forwarded,
    /// and only then, offer the recorder a copy.
    fn write(&mut self, from: &UnixStream, to: &UnixStream, conn: u64, tap: &TapSender) {
        while self.pending() {
            match rustix::io::write(to, &self.buf[self.written..]) {
                Ok(n) => self.written += n,
                Err(rustix::io::Errno::AGAIN) => return,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return self.end(from, to),
            }
        }
        let n = self.buf.len();
        if n == 0 {
            return;
        }
        self.total += n as u64;
        // Record after.
        if self.tapping && !tap.data(self.t, conn, self.dir, &mut self.buf, n) {
            self.tapping = false;
            tap.send(Tap::Gap {
                t: mono_now(),
                conn,
                dir: self.dir,
            });
        }
        self.buf.clear();
        self.written = 0;
        self.in_hand.end();
    }
}

/// Forward both ways between `client` and `daemon` on the calling thread until both
/// directions ended; returns the bytes forwarded to the client and to the daemon.
///
/// One thread per connection, not one per direction: a round trip wakes one thread twice
/// rather than two threads once each (issue #16: on 2 cores each wake-up may wait on a run
/// queue). Both sockets are non-blocking and one `poll` waits on the two; a direction reads
/// again only once its last read is all written on, so a direction whose receiver does not
/// read holds one buffer and pauses, and never blocks the other.
fn forward(client: UnixStream, daemon: UnixStream, conn: u64, tap: &TapSender) -> [u64; 2] {
    // Woken by the peer's bytes, take the CPU at once (see `sched::short_slice`).
    crate::sched::short_slice();
    // Way `i` reads `s[i]` and writes `s[1 - i]`.
    let s = [client, daemon];
    let mut ways = [
        Way::new(Direction::ToDaemon, tap.forwarding()),
        Way::new(Direction::ToClient, tap.forwarding()),
    ];
    for (i, x) in s.iter().enumerate() {
        if x.set_nonblocking(true).is_err() {
            ways[i].end(&s[i], &s[1 - i]);
        }
    }
    loop {
        let events = |k: usize| -> i16 {
            let mut e = 0;
            if ways[k].reads() {
                e |= libc::POLLIN;
            }
            if ways[1 - k].pending() {
                e |= libc::POLLOUT;
            }
            e
        };
        // A socket neither direction waits on is left out: a peer's hang-up would otherwise
        // be reported again and again.
        let mut fds = [0, 1].map(|k| libc::pollfd {
            fd: if events(k) == 0 { -1 } else { s[k].as_raw_fd() },
            events: events(k),
            revents: 0,
        });
        if fds.iter().all(|f| f.fd < 0) {
            break;
        }
        // SAFETY: poll on two initialized pollfds of sockets this thread owns.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue;
        }
        for i in 0..2 {
            let (from, to) = (&s[i], &s[1 - i]);
            if fds[i].revents != 0 {
                ways[i].read(from, to);
            }
            ways[i].write(from, to, conn, tap);
        }
    }
    [ways[1].total, ways[0].total]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_mirrors_unix_write_permission() {
        let a = Access {
            uid: 1000,
            gid: 1000,
            mode: 0o660,
        };
        let p = |uid, gid| PeerCred { pid: 1, uid, gid };
        assert!(a.admits(&p(0, 0), Vec::new).is_ok());
        assert!(a.admits(&p(1000, 5), Vec::new).is_ok());
        assert!(a.admits(&p(1001, 1000), Vec::new).is_ok());
        assert!(a.admits(&p(1001, 5), || vec![1000]).is_ok());
        assert!(a.admits(&p(1001, 5), || vec![7]).is_err());
        let private = Access {
            uid: 1000,
            gid: 1000,
            mode: 0o600,
        };
        assert!(private.admits(&p(1001, 1000), Vec::new).is_err());
    }

    /// The pool keeps what the forwarding threads used within the last trim period and
    /// frees the rest, and never trims more often than that.
    #[test]
    fn the_pool_frees_only_buffers_not_needed_lately() {
        let mut p = BufferPool::default();
        for _ in 0..10 {
            p.kept.put(vec![0u8; 4]);
        }
        // Ten kept since the last trim (the first frees nothing: nothing is known unused).
        assert!(p.kept.trim().is_empty());
        assert!(p.trim().is_empty(), "trimmed before its period");
        p.trimmed -= POOL_TRIM_EVERY * 2;
        for _ in 0..3 {
            p.take().unwrap();
        }
        p.kept.put(vec![0u8; 4]);
        // 8 kept; at least 7 sat unused the whole period.
        assert_eq!(p.trim().len(), 7);
        assert_eq!(p.kept.len(), 1);
        assert!(p.trim().is_empty(), "trimmed again within its period");
    }

    /// Every buffer that can be in flight comes back to be read into again (as many as the
    /// tap's byte bound holds), none beyond.
    #[test]
    fn the_pool_keeps_as_many_buffers_as_can_be_in_flight() {
        let (_tx, rx) = tap_channel(1 << 16, 1500 * CHUNK);
        for _ in 0..1600 {
            rx.recycle(Vec::with_capacity(CHUNK));
        }
        assert_eq!(rx.queue.pool.lock().unwrap().kept.len(), 1500);
    }

    fn gap(t: MonoNs) -> Tap {
        Tap::Gap {
            t,
            conn: 1,
            dir: Direction::ToDaemon,
        }
    }

    /// The oldest tap not yet finished with: queued, then taken, until the receiver asks for
    /// more; none once it waits with nothing queued.
    #[test]
    fn progress_names_the_oldest_tap_not_finished_with() {
        let (tx, rx) = tap_channel(16, 1 << 20);
        let p = rx.progress();
        // The receiver takes a batch each time it is told to (always the same thread).
        let (go, step) = std::sync::mpsc::channel::<()>();
        let (took, taken) = std::sync::mpsc::channel::<(bool, usize)>();
        let receiver = std::thread::spawn(move || {
            let mut out = Vec::new();
            while step.recv().is_ok() {
                out.clear();
                let more = rx.recv_batch(&mut out);
                took.send((more, out.len())).unwrap();
            }
        });
        let take = || {
            go.send(()).unwrap();
            taken.recv().unwrap()
        };
        assert_eq!(p.oldest_pending(), None);
        // Bytes a forwarding thread has in hand, forwarded before they are queued.
        let in_hand = tx.forwarding();
        assert_eq!(p.oldest_pending(), None);
        in_hand.begin(10);
        assert_eq!(p.oldest_pending(), Some(10), "in hand");
        assert!(tx.send(gap(20)) && tx.send(gap(10)));
        in_hand.end();
        assert_eq!(p.oldest_pending(), Some(10), "queued");
        assert_eq!(take(), (true, 2));
        assert_eq!(
            p.oldest_pending(),
            Some(10),
            "taken, its events not sent yet"
        );
        assert!(tx.send(gap(30)));
        assert_eq!(p.oldest_pending(), Some(10));
        assert_eq!(take(), (true, 1));
        assert_eq!(
            p.oldest_pending(),
            Some(30),
            "the first batch is finished with"
        );
        // Finished with that too, the receiver waits: nothing pending.
        go.send(()).unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while p.oldest_pending().is_some() {
            assert!(std::time::Instant::now() < end, "{:?}", p.oldest_pending());
            std::thread::sleep(Duration::from_millis(5));
        }
        // A tap sent while it waits is pending until its batch is finished with.
        assert!(tx.send(gap(40)));
        assert_eq!(taken.recv().unwrap(), (true, 1));
        assert_eq!(p.oldest_pending(), Some(40));
        in_hand.begin(50);
        assert_eq!(p.oldest_pending(), Some(40));
        drop(in_hand);
        drop(tx);
        assert_eq!(take(), (false, 0));
        assert_eq!(p.oldest_pending(), None);
        drop(go);
        receiver.join().unwrap();
    }

    /// A receiver parked on another thread gets every tap sent by several senders, and
    /// ends (false) once the last sender is gone and all is taken.
    #[test]
    fn the_receiver_takes_every_tap_and_ends_with_the_last_sender() {
        let (tx, rx) = tap_channel(1 << 16, 1 << 20);
        let receiver = std::thread::spawn(move || {
            let mut got = Vec::new();
            while rx.recv_batch(&mut got) {}
            got.iter().map(Tap::time).collect::<Vec<_>>()
        });
        let senders: Vec<_> = (0..4u64)
            .map(|k| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let t = k * 1000 + i;
                        assert!(tx.send(Tap::Gap {
                            t,
                            conn: k,
                            dir: Direction::ToDaemon
                        }));
                        if i % 100 == 0 {
                            // Let the receiver drain and park between bursts.
                            std::thread::sleep(Duration::from_millis(3));
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        for s in senders {
            s.join().unwrap();
        }
        let mut times = receiver.join().unwrap();
        times.sort_unstable();
        let sent: Vec<u64> = (0..4u64)
            .flat_map(|k| (0..500).map(move |i| k * 1000 + i))
            .collect();
        assert_eq!(times, sent);
    }

    /// A connection forwarded by [`forward`] on a thread of its own, between two socket
    /// pairs: returns the client's and the daemon's ends, the proxy's two ends (clones, as
    /// `active` keeps them), the thread, and the tap's receiver.
    #[allow(clippy::type_complexity)]
    fn forwarded() -> (
        UnixStream,
        UnixStream,
        [UnixStream; 2],
        std::thread::JoinHandle<[u64; 2]>,
        TapReceiver,
    ) {
        let (client, proxy_c) = UnixStream::pair().unwrap();
        let (proxy_d, daemon) = UnixStream::pair().unwrap();
        let handles = [proxy_c.try_clone().unwrap(), proxy_d.try_clone().unwrap()];
        let (tx, rx) = tap_channel(1 << 16, 1024 * CHUNK);
        let t = std::thread::spawn(move || forward(proxy_c, proxy_d, 7, &tx));
        (client, daemon, handles, t, rx)
    }

    /// Every tap until the sender is gone.
    fn all_taps(rx: TapReceiver) -> Vec<Tap> {
        let mut got = Vec::new();
        while rx.recv_batch(&mut got) {}
        got
    }

    /// The bytes of the `Data` taps of one direction, in order.
    fn copied(taps: &[Tap], want: Direction) -> Vec<u8> {
        taps.iter()
            .filter_map(|t| match t {
                Tap::Data { dir, bytes, .. } if *dir == want => Some(bytes.to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// A client that shuts down its writing side still gets the daemon's reply: the daemon
    /// sees the end of the request, answers, and closes; both directions' bytes are counted
    /// and copied.
    #[test]
    fn a_half_close_passes_through_and_the_reply_still_comes_back() {
        use std::io::{Read, Write};
        let (mut client, mut daemon, _handles, t, rx) = forwarded();
        client.write_all(b"request").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut asked = Vec::new();
        daemon.read_to_end(&mut asked).unwrap();
        assert_eq!(
            asked, b"request",
            "the daemon sees the request, then its end"
        );
        daemon.write_all(b"the reply").unwrap();
        drop(daemon);
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"the reply");
        assert_eq!(
            t.join().unwrap(),
            [9, 7],
            "bytes to the client, to the daemon"
        );
        let taps = all_taps(rx);
        assert_eq!(copied(&taps, Direction::ToDaemon), b"request");
        assert_eq!(copied(&taps, Direction::ToClient), b"the reply");
    }

    /// A daemon that reads nothing holds up only what is sent to it: the proxy reads the
    /// client until the daemon's socket is full, holds one read pending, and meanwhile
    /// forwards the daemon's bytes to the client as they come.
    #[test]
    fn a_blocked_direction_never_blocks_the_other() {
        use std::io::{Read, Write};
        let (client, mut daemon, handles, t, rx) = forwarded();
        let mut client_w = client.try_clone().unwrap();
        let mut client_r = client;
        let flood = std::thread::spawn(move || {
            // Far more than the sockets' buffers hold: this blocks until the daemon reads.
            let chunk = vec![b'q'; CHUNK];
            let mut sent = 0usize;
            while sent < 64 * CHUNK {
                if client_w.write_all(&chunk).is_err() {
                    break;
                }
                sent += CHUNK;
            }
            sent
        });
        // Let the flood fill the daemon's socket and the proxy's pending read.
        std::thread::sleep(Duration::from_millis(200));
        client_r
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        for i in 0..50u8 {
            daemon.write_all(&[i; 100]).unwrap();
            let mut got = [0u8; 100];
            client_r
                .read_exact(&mut got)
                .expect("the reply direction flows");
            assert_eq!(got, [i; 100]);
        }
        // Now the daemon reads all of it; the flood ends.
        let reader = std::thread::spawn(move || {
            let mut n = 0usize;
            let mut buf = vec![0u8; CHUNK];
            loop {
                match daemon.read(&mut buf) {
                    Ok(0) | Err(_) => return n,
                    Ok(k) => n += k,
                }
            }
        });
        let sent = flood.join().unwrap();
        client_r.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(
            reader.join().unwrap(),
            sent,
            "every byte forwarded, in full"
        );
        drop(client_r);
        drop(handles);
        let [down, up] = t.join().unwrap();
        assert_eq!((down, up), (5000, sent as u64));
        let taps = all_taps(rx);
        assert_eq!(copied(&taps, Direction::ToDaemon).len(), sent);
    }

    /// Shutting the proxy's own ends down (what `cut_all` does with the handles `active`
    /// keeps) ends the forwarding at once, even with a read pending in one direction.
    #[test]
    fn cutting_the_proxys_sockets_ends_the_forwarding() {
        use std::io::Write;
        let (mut client, daemon, handles, t, _rx) = forwarded();
        client.write_all(&vec![b'x'; 4 * CHUNK]).unwrap_or(());
        std::thread::sleep(Duration::from_millis(50));
        for s in &handles {
            s.shutdown(std::net::Shutdown::Both).unwrap();
        }
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while !t.is_finished() {
            assert!(
                std::time::Instant::now() < end,
                "still forwarding after the cut"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        t.join().unwrap();
        drop((client, daemon));
    }

    fn take(rx: &TapReceiver) -> Chunk {
        let mut got = Vec::new();
        assert!(rx.recv_batch(&mut got));
        match got.pop() {
            Some(Tap::Data { bytes, .. }) => bytes,
            other => panic!("{other:?}"),
        }
    }

    /// A read of `n` bytes `b` as [`pump`] makes it: into the spare capacity of the
    /// emptied buffer.
    fn read_into(buf: &mut Vec<u8>, b: u8, n: usize) {
        let at = buf.as_ptr();
        buf.clear();
        buf.extend(std::iter::repeat_n(b, n));
        assert_eq!(buf.as_ptr(), at, "a read never grows the buffer");
    }

    /// The buffer a forwarding thread read into is queued itself, and a buffer the recorder
    /// gave back is read into again: a copy shows only the bytes of its own read, never the
    /// rest of an earlier, longer one.
    #[test]
    fn a_reused_buffer_shows_only_its_own_bytes() {
        let (tx, rx) = tap_channel(16, 1 << 20);
        let mut buf = Vec::with_capacity(CHUNK);
        read_into(&mut buf, b'a', CHUNK);
        let first_at = buf.as_ptr();
        assert!(tx.data(1, 1, Direction::ToClient, &mut buf, CHUNK));
        let first = take(&rx);
        assert!(first.iter().all(|&b| b == b'a') && first.len() == CHUNK);
        assert_eq!(
            (buf.len(), buf.capacity()),
            (0, CHUNK),
            "the thread reads into a new, empty buffer of the same capacity"
        );
        rx.recycle(first.into_buffer());
        // A read of half a buffer into the new one; queuing it hands the thread the kept one.
        let half = CHUNK / 2;
        read_into(&mut buf, b'b', half);
        assert!(tx.data(2, 1, Direction::ToClient, &mut buf, half));
        let second = take(&rx);
        assert!(second.len() == half && second.iter().all(|&b| b == b'b'));
        assert_eq!(
            buf.as_ptr(),
            first_at,
            "the buffer given back is read into again"
        );
        assert!(
            buf.iter().all(|&b| b == b'a'),
            "it still holds the first read"
        );
        // A third of a buffer into that buffer, which still holds the first read's bytes.
        let third = CHUNK / 3;
        read_into(&mut buf, b'c', third);
        assert!(tx.data(3, 1, Direction::ToClient, &mut buf, third));
        let c = take(&rx);
        assert!(c.len() == third && c.iter().all(|&b| b == b'c'));
        assert_eq!(rx.lost(), 0);
    }

    /// A short read is copied into a buffer of its own size (the thread keeps its buffer),
    /// and the tap's byte bound counts the memory a copy holds: many short reads cannot pin
    /// a whole forwarding buffer each, and full buffers count whole.
    #[test]
    fn the_tap_bound_counts_memory_held() {
        let (tx, rx) = tap_channel(1 << 16, 2 * CHUNK);
        let mut buf = vec![b'x'; CHUNK];
        let before = buf.as_ptr();
        for i in 0..100 {
            assert!(tx.data(i, 1, Direction::ToDaemon, &mut buf, 10));
        }
        assert_eq!(
            buf.as_ptr(),
            before,
            "short reads are copied, the buffer stays"
        );
        let mut got = Vec::new();
        assert!(rx.recv_batch(&mut got));
        for tap in &got {
            match tap {
                Tap::Data { bytes, .. } => assert_eq!((bytes.len(), bytes.held()), (10, 10)),
                other => panic!("{other:?}"),
            }
        }
        // Two whole buffers fit the bound of two buffers; a third read of half a buffer
        // (handed over whole) does not, even though its bytes alone would.
        assert!(tx.data(200, 1, Direction::ToDaemon, &mut buf, CHUNK));
        assert!(tx.data(201, 1, Direction::ToDaemon, &mut buf, CHUNK / 2));
        assert!(!tx.data(202, 1, Direction::ToDaemon, &mut buf, CHUNK / 2));
        assert_eq!(rx.lost(), 1);
    }
}
