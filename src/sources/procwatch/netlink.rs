//! The kernel's netlink process connector (NETLINK_CONNECTOR, CN_IDX_PROC): a socket that
//! receives fork, exec and exit events of every process on the host, each with the
//! kernel's CLOCK_MONOTONIC timestamp.
//!
//! Layout of one datagram (native endianness):
//!
//! ```text
//! nlmsghdr   len u32, type u16, flags u16, seq u32, pid u32            16 bytes
//! cn_msg     idx u32, val u32, seq u32, ack u32, len u16, flags u16    20 bytes
//! proc_event what u32, cpu u32, timestamp_ns u64, then event_data:
//!   fork     parent_pid, parent_tgid, child_pid, child_tgid            (u32 each)
//!   exec     process_pid, process_tgid
//!   exit     process_pid, process_tgid, exit_code, exit_signal, parent_pid, parent_tgid
//!   ack      err                                                        (what = 0)
//! ```
//!
//! `exit_code` is the wait status (0x300 = exit 3, 0x9 = killed by SIGKILL, 0x80 = core);
//! `exit_signal` is the signal sent to the parent (SIGCHLD), not the killing signal.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub(crate) const NETLINK_CONNECTOR: libc::c_int = 11;
pub(crate) const CN_IDX_PROC: u32 = 1;
pub(crate) const CN_VAL_PROC: u32 = 1;
pub(crate) const PROC_CN_MCAST_LISTEN: u32 = 1;
pub(crate) const PROC_CN_MCAST_IGNORE: u32 = 2;

pub(crate) const PROC_EVENT_NONE: u32 = 0;
pub(crate) const PROC_EVENT_FORK: u32 = 0x1;
pub(crate) const PROC_EVENT_EXEC: u32 = 0x2;
pub(crate) const PROC_EVENT_EXIT: u32 = 0x8000_0000;

const NLMSG_HDRLEN: usize = 16;
const CN_MSG_LEN: usize = 20;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;

/// One decoded process-connector event. Pids are the kernel's (initial pid namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CnEvent {
    Fork {
        ts: u64,
        parent_pid: i32,
        parent_tgid: i32,
        child_pid: i32,
        child_tgid: i32,
    },
    Exec {
        ts: u64,
        pid: i32,
        tgid: i32,
    },
    Exit {
        ts: u64,
        pid: i32,
        tgid: i32,
        exit_code: u32,
        exit_signal: u32,
        parent_pid: i32,
        parent_tgid: i32,
    },
    /// Reply to a listen/ignore request (`err` is an errno, 0 = accepted).
    Ack {
        err: u32,
    },
    /// Another event type (uid, gid, sid, comm, ptrace, coredump): not used.
    Other {
        what: u32,
    },
}

/// A datagram that is not a well-formed connector message, with the offset of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("netlink process connector datagram: {what} at byte offset {offset}")]
pub(crate) struct ParseError {
    pub(crate) offset: usize,
    pub(crate) what: String,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_ne_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_ne_bytes(a)
}

/// Decode every connector event in one received datagram, calling `f` for each. Allocates
/// nothing. Messages for another connector index are skipped.
pub(crate) fn parse_datagram(buf: &[u8], mut f: impl FnMut(CnEvent)) -> Result<(), ParseError> {
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, off) as usize;
        let typ = u16_at(buf, off + 4);
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return Err(ParseError {
                offset: off,
                what: format!(
                    "nlmsg_len {len} does not fit the {} bytes left",
                    buf.len() - off
                ),
            });
        }
        match typ {
            NLMSG_NOOP => {}
            NLMSG_ERROR => {
                let err = if len >= NLMSG_HDRLEN + 4 {
                    u32_at(buf, off + NLMSG_HDRLEN) as i32
                } else {
                    0
                };
                return Err(ParseError {
                    offset: off,
                    what: format!("netlink error message (errno {})", -err),
                });
            }
            NLMSG_OVERRUN => {
                return Err(ParseError {
                    offset: off,
                    what: "netlink overrun".into(),
                })
            }
            _ => {
                // The kernel sends connector messages as NLMSG_DONE; accept any other type too.
                let _ = NLMSG_DONE;
                parse_cn_msg(
                    &buf[off + NLMSG_HDRLEN..off + len],
                    off + NLMSG_HDRLEN,
                    &mut f,
                )?;
            }
        }
        // NLMSG_ALIGN
        let step = (len + 3) & !3;
        off += step;
    }
    Ok(())
}

fn parse_cn_msg(b: &[u8], base: usize, f: &mut impl FnMut(CnEvent)) -> Result<(), ParseError> {
    if b.len() < CN_MSG_LEN {
        return Err(ParseError {
            offset: base,
            what: format!("cn_msg needs {CN_MSG_LEN} bytes, has {}", b.len()),
        });
    }
    let idx = u32_at(b, 0);
    let val = u32_at(b, 4);
    let dlen = u16_at(b, 16) as usize;
    if idx != CN_IDX_PROC || val != CN_VAL_PROC {
        return Ok(());
    }
    if CN_MSG_LEN + dlen > b.len() {
        return Err(ParseError {
            offset: base + 16,
            what: format!(
                "cn_msg len {dlen} exceeds the {} bytes of the message",
                b.len() - CN_MSG_LEN
            ),
        });
    }
    let ev = &b[CN_MSG_LEN..CN_MSG_LEN + dlen];
    let eb = base + CN_MSG_LEN;
    if ev.len() < 16 {
        return Err(ParseError {
            offset: eb,
            what: format!("proc_event header needs 16 bytes, has {}", ev.len()),
        });
    }
    let what = u32_at(ev, 0);
    let ts = u64_at(ev, 8);
    let need = |n: usize| -> Result<(), ParseError> {
        if ev.len() < 16 + n {
            Err(ParseError {
                offset: eb,
                what: format!(
                    "proc_event {what:#x} needs {} bytes, has {}",
                    16 + n,
                    ev.len()
                ),
            })
        } else {
            Ok(())
        }
    };
    let d = 16;
    let i = |k: usize| u32_at(ev, d + 4 * k) as i32;
    let e = match what {
        PROC_EVENT_FORK => {
            need(16)?;
            CnEvent::Fork {
                ts,
                parent_pid: i(0),
                parent_tgid: i(1),
                child_pid: i(2),
                child_tgid: i(3),
            }
        }
        PROC_EVENT_EXEC => {
            need(8)?;
            CnEvent::Exec {
                ts,
                pid: i(0),
                tgid: i(1),
            }
        }
        PROC_EVENT_EXIT => {
            need(24)?;
            CnEvent::Exit {
                ts,
                pid: i(0),
                tgid: i(1),
                exit_code: i(2) as u32,
                exit_signal: i(3) as u32,
                parent_pid: i(4),
                parent_tgid: i(5),
            }
        }
        PROC_EVENT_NONE => {
            need(4)?;
            CnEvent::Ack { err: i(0) as u32 }
        }
        other => CnEvent::Other { what: other },
    };
    f(e);
    Ok(())
}

/// Build the listen (or ignore) request. With `filter` set, the 8-byte `proc_input`
/// (Linux 6.6+) asks the kernel to send only fork, exec and exit events; without it, the
/// 4-byte legacy form that every kernel accepts (and that gets every event type).
pub(crate) fn subscribe_message(op: u32, filter: Option<u32>) -> Vec<u8> {
    let payload_len = if filter.is_some() { 8 } else { 4 };
    let total = NLMSG_HDRLEN + CN_MSG_LEN + payload_len;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes()); // flags
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid (the kernel fills the sender's port)
    m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // ack
    m.extend_from_slice(&(payload_len as u16).to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes()); // flags
    m.extend_from_slice(&op.to_ne_bytes());
    if let Some(ev) = filter {
        m.extend_from_slice(&ev.to_ne_bytes());
    }
    m
}

/// A bound, non-blocking process-connector socket.
pub(crate) struct NetlinkSock {
    fd: OwnedFd,
}

impl NetlinkSock {
    /// Open and bind the socket to the proc connector group. Fails with the errno when the
    /// kernel has no connector (EPROTONOSUPPORT) or refuses the bind.
    pub(crate) fn open() -> io::Result<NetlinkSock> {
        // SAFETY: plain socket(2) call; the result is checked and owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                NETLINK_CONNECTOR,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        sa.nl_pid = 0; // let the kernel pick a unique port id
        sa.nl_groups = CN_IDX_PROC;
        // SAFETY: sa is a valid sockaddr_nl of the size we pass.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let s = NetlinkSock { fd };
        // A large receive buffer rides out bursts (a fork bomb elsewhere on the host) while
        // the watcher takes a snapshot. FORCE works with CAP_NET_ADMIN; the plain one is
        // capped by net.core.rmem_max.
        let want: libc::c_int = 4 << 20;
        if s.setsockopt_int(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want)
            .is_err()
        {
            let _ = s.setsockopt_int(libc::SOL_SOCKET, libc::SO_RCVBUF, want);
        }
        Ok(s)
    }

    fn setsockopt_int(
        &self,
        level: libc::c_int,
        opt: libc::c_int,
        v: libc::c_int,
    ) -> io::Result<()> {
        // SAFETY: passes a pointer to a c_int with its size.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Send a listen/ignore request (see [`subscribe_message`]).
    pub(crate) fn send_op(&self, op: u32, filter: Option<u32>) -> io::Result<()> {
        let m = subscribe_message(op, filter);
        // SAFETY: sends the bytes of `m`; the socket is bound, the kernel is the default peer.
        let r = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                m.as_ptr() as *const libc::c_void,
                m.len(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receive one datagram into `buf`. `Ok(None)` when nothing is waiting (EAGAIN).
    /// Datagrams not sent by the kernel (port id 0) are skipped (returned as empty).
    /// ENOBUFS (events were lost because the buffer overflowed) is returned as an error.
    pub(crate) fn recv<'a>(&self, buf: &'a mut [u8]) -> io::Result<Option<&'a [u8]>> {
        loop {
            // SAFETY: sockaddr_nl is plain data.
            let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut sl = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: buf and sa are valid for the sizes passed.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                    &mut sa as *mut libc::sockaddr_nl as *mut libc::sockaddr,
                    &mut sl,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(None),
                    Some(libc::EINTR) => continue,
                    _ => return Err(e),
                }
            }
            if sa.nl_pid != 0 {
                return Ok(Some(&buf[..0]));
            }
            return Ok(Some(&buf[..n as usize]));
        }
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for NetlinkSock {
    fn drop(&mut self) {
        let _ = self.send_op(PROC_CN_MCAST_IGNORE, None);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Build one datagram carrying a proc_event with the given `what`, timestamp and data words.
    pub(crate) fn datagram(what: u32, ts: u64, data: &[u32]) -> Vec<u8> {
        let ev_len = 16 + 4 * data.len();
        let total = NLMSG_HDRLEN + CN_MSG_LEN + ev_len;
        let mut m = Vec::new();
        m.extend_from_slice(&(total as u32).to_ne_bytes());
        m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
        m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&(ev_len as u16).to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&what.to_ne_bytes());
        m.extend_from_slice(&1u32.to_ne_bytes()); // cpu
        m.extend_from_slice(&ts.to_ne_bytes());
        for w in data {
            m.extend_from_slice(&w.to_ne_bytes());
        }
        m
    }

    fn all(buf: &[u8]) -> Result<Vec<CnEvent>, ParseError> {
        let mut v = Vec::new();
        parse_datagram(buf, |e| v.push(e))?;
        Ok(v)
    }

    #[test]
    fn decode_fork_exec_exit() {
        let f = datagram(PROC_EVENT_FORK, 1000, &[10, 10, 11, 11]);
        assert_eq!(
            all(&f).unwrap(),
            vec![CnEvent::Fork {
                ts: 1000,
                parent_pid: 10,
                parent_tgid: 10,
                child_pid: 11,
                child_tgid: 11
            }]
        );
        let e = datagram(PROC_EVENT_EXEC, 2000, &[11, 11]);
        assert_eq!(
            all(&e).unwrap(),
            vec![CnEvent::Exec {
                ts: 2000,
                pid: 11,
                tgid: 11
            }]
        );
        // exit 3, SIGCHLD to the parent
        let x = datagram(PROC_EVENT_EXIT, 3000, &[11, 11, 0x300, 17, 10, 10]);
        assert_eq!(
            all(&x).unwrap(),
            vec![CnEvent::Exit {
                ts: 3000,
                pid: 11,
                tgid: 11,
                exit_code: 0x300,
                exit_signal: 17,
                parent_pid: 10,
                parent_tgid: 10
            }]
        );
        let a = datagram(PROC_EVENT_NONE, 0, &[1]);
        assert_eq!(all(&a).unwrap(), vec![CnEvent::Ack { err: 1 }]);
        let o = datagram(0x200, 5, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(all(&o).unwrap(), vec![CnEvent::Other { what: 0x200 }]);
        // Two messages back to back in one datagram.
        let mut two = f.clone();
        two.extend_from_slice(&x);
        assert_eq!(all(&two).unwrap().len(), 2);
    }

    #[test]
    fn decode_rejects_short_and_lying_lengths() {
        let x = datagram(PROC_EVENT_EXIT, 3000, &[11, 11, 0x300, 17, 10, 10]);
        // Every truncation is an error or yields nothing, never a panic.
        for cut in 0..x.len() {
            let r = all(&x[..cut]);
            if let Ok(v) = r {
                assert!(v.is_empty(), "cut {cut}");
            }
        }
        // nlmsg_len larger than the datagram
        let mut bad = x.clone();
        bad[0..4].copy_from_slice(&500u32.to_ne_bytes());
        let err = all(&bad).unwrap_err();
        assert_eq!(err.offset, 0);
        // cn_msg len larger than the message
        let mut bad = x.clone();
        bad[NLMSG_HDRLEN + 16..NLMSG_HDRLEN + 18].copy_from_slice(&900u16.to_ne_bytes());
        let err = all(&bad).unwrap_err();
        assert_eq!(err.offset, NLMSG_HDRLEN + 16);
        // exit event with too little data
        let short = datagram(PROC_EVENT_EXIT, 3000, &[11, 11]);
        assert!(all(&short).is_err());
        // another connector index is skipped
        let mut other = x.clone();
        other[NLMSG_HDRLEN..NLMSG_HDRLEN + 4].copy_from_slice(&5u32.to_ne_bytes());
        assert_eq!(all(&other).unwrap(), vec![]);
    }

    #[test]
    fn subscribe_bytes() {
        let m = subscribe_message(
            PROC_CN_MCAST_LISTEN,
            Some(PROC_EVENT_FORK | PROC_EVENT_EXEC | PROC_EVENT_EXIT),
        );
        assert_eq!(m.len(), 44);
        assert_eq!(u32_at(&m, 0), 44);
        assert_eq!(u16_at(&m, 4), NLMSG_DONE);
        assert_eq!(u32_at(&m, 16), CN_IDX_PROC);
        assert_eq!(u16_at(&m, 32), 8);
        assert_eq!(u32_at(&m, 36), PROC_CN_MCAST_LISTEN);
        assert_eq!(u32_at(&m, 40), 0x8000_0003);
        assert_eq!(subscribe_message(PROC_CN_MCAST_LISTEN, None).len(), 40);
    }
}
