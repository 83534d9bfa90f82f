//! Thin, checked wrappers over the syscalls the watcher uses: pidfd_open, PIDFD_GET_INFO,
//! epoll, eventfd, clocks.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `PIDFD_INFO_EXIT` from `include/uapi/linux/pidfd.h` (Linux 6.15+): return the exit
/// status of a reaped process.
pub(crate) const PIDFD_INFO_EXIT: u64 = 1 << 3;

/// `struct pidfd_info`, first version (`PIDFD_INFO_SIZE_VER0` = 64 bytes). Later kernels
/// extend it; the ioctl's size argument tells the kernel which version we pass.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PidfdInfo {
    pub(crate) mask: u64,
    pub(crate) cgroupid: u64,
    pub(crate) pid: u32,
    pub(crate) tgid: u32,
    pub(crate) ppid: u32,
    pub(crate) ruid: u32,
    pub(crate) rgid: u32,
    pub(crate) euid: u32,
    pub(crate) egid: u32,
    pub(crate) suid: u32,
    pub(crate) sgid: u32,
    pub(crate) fsuid: u32,
    pub(crate) fsgid: u32,
    pub(crate) exit_code: i32,
}

const _: () = assert!(std::mem::size_of::<PidfdInfo>() == 64);

/// `PIDFD_GET_INFO` = `_IOWR(0xFF, 11, struct pidfd_info)` (Linux 6.13+), for the 64-byte
/// struct: dir (read|write = 3) << 30 | size << 16 | type << 8 | nr.
pub(crate) const PIDFD_GET_INFO: libc::c_ulong = (3 << 30) | (64 << 16) | (0xFF << 8) | 11;

/// `pidfd_open(pid, 0)`: a descriptor that becomes readable when the process exits.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: raw syscall with integer arguments; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0 as libc::c_long) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// What `PIDFD_GET_INFO` says about a process's exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PidfdExit {
    /// The wait status (the process has been reaped).
    Status(i32),
    /// The kernel supports the query but has no exit information yet (not reaped yet).
    NotYet,
    /// The kernel has no PIDFD_GET_INFO (before 6.13) or no PIDFD_INFO_EXIT (before 6.15).
    Unsupported,
}

/// Ask the kernel for the exit status of the process behind `pidfd`.
pub(crate) fn pidfd_exit_info(pidfd: &OwnedFd) -> io::Result<PidfdExit> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_EXIT,
        ..Default::default()
    };
    // SAFETY: passes a pointer to a 64-byte PidfdInfo, matching the size in the request.
    let r = unsafe {
        libc::ioctl(
            pidfd.as_raw_fd(),
            PIDFD_GET_INFO as _,
            &mut info as *mut PidfdInfo,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTTY) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
                Ok(PidfdExit::Unsupported)
            }
            // Reaped and the kernel keeps no exit information: PIDFD_INFO_EXIT unsupported.
            Some(libc::ESRCH) => Ok(PidfdExit::Unsupported),
            _ => Err(e),
        };
    }
    if info.mask & PIDFD_INFO_EXIT != 0 {
        Ok(PidfdExit::Status(info.exit_code))
    } else {
        Ok(PidfdExit::NotYet)
    }
}

pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub(crate) fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: ev is valid for the call.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub(crate) fn del(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: ev is valid for the call; errors (already closed) are harmless.
        unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Wait for events; `timeout_ms` < 0 waits forever. Returns the tokens that are ready.
    pub(crate) fn wait(&self, out: &mut Vec<u64>, timeout_ms: i32) -> io::Result<()> {
        out.clear();
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 64];
        // SAFETY: evs is valid for 64 entries.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                evs.as_mut_ptr(),
                evs.len() as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(());
            }
            return Err(e);
        }
        for ev in &evs[..n as usize] {
            let token = ev.u64;
            out.push(token);
        }
        Ok(())
    }
}

/// An eventfd used to wake the watcher thread.
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall; checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor.
        Ok(EventFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a u64.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            )
        };
    }

    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a u64.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                &mut v as *mut u64 as *mut libc::c_void,
                8,
            )
        };
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into ts.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_BOOTTIME minus CLOCK_MONOTONIC (time spent suspended): /proc start times count
/// from boot in BOOTTIME, the timeline uses MONOTONIC.
pub(crate) fn boottime_offset_ns() -> u64 {
    let m1 = clock_ns(libc::CLOCK_MONOTONIC);
    let b = clock_ns(libc::CLOCK_BOOTTIME);
    let m2 = clock_ns(libc::CLOCK_MONOTONIC);
    b.saturating_sub(m1 / 2 + m2 / 2)
}

/// Clock ticks per second for /proc times.
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no side effects.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

/// Threads' CPU time of this process (user + system) in nanoseconds, from getrusage.
pub fn process_cpu_ns() -> u64 {
    // SAFETY: rusage is plain data filled by getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_number_matches_uapi() {
        // _IOWR(0xFF, 11, struct pidfd_info) with sizeof = 64 on every Linux ABI.
        assert_eq!(PIDFD_GET_INFO, 0xC040_FF0B);
    }

    #[test]
    fn pidfd_of_reaped_child() {
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let fd = pidfd_open(child.id() as i32).unwrap();
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(3));
        match pidfd_exit_info(&fd).unwrap() {
            PidfdExit::Status(s) => assert_eq!(s, 0x300),
            other => panic!("this kernel should report PIDFD_INFO_EXIT (6.15+): {other:?}"),
        }
    }
}
