//! Choosing how to watch: the netlink connector if a subscription is verified to deliver
//! (the kernel silently ignores subscriptions from a non-initial user or pid namespace),
//! else pidfd (probed for `PIDFD_INFO_EXIT`), else /proc scans only; and what the chosen
//! mode cannot know.

use crate::event::mono_now;
use crate::event::proc::{fmt_ns, ActiveMode};
use crate::sources::procwatch::netlink::{self, CnEvent, NetlinkSock};
use crate::sources::procwatch::sys::{self, PidfdExit};
use crate::sources::procwatch::{Tuning, WatchMode};

/// Events kept while verifying the netlink subscription, replayed after the first scan.
const VERIFY_BUFFER: usize = 65536;

/// Whether exit statuses can be read with `PIDFD_INFO_EXIT` (pidfd mode).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum StatusSupport {
    Yes,
    Unsupported,
    Disabled,
}

/// A verified netlink subscription.
pub(super) struct Subscription {
    pub(super) sock: NetlinkSock,
    /// The events read while verifying it, to be handled after the first scan.
    pub(super) events: Vec<CnEvent>,
    /// Some events read while verifying were dropped.
    pub(super) lost: bool,
}

/// The mode chosen, why, and what comes with it.
pub(super) struct ChosenMode {
    pub(super) mode: ActiveMode,
    pub(super) why: String,
    /// What this mode cannot know.
    pub(super) limits: Vec<String>,
    /// In netlink mode.
    pub(super) netlink: Option<Subscription>,
    pub(super) pidfd_status: StatusSupport,
}

fn io_other(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}

/// The mode to run in, as `asked`: a forced mode that does not work here is an error.
pub(super) fn choose(asked: WatchMode, tuning: &Tuning) -> std::io::Result<ChosenMode> {
    let mut netlink = None;
    let mut pidfd_status = StatusSupport::Unsupported;
    let (mode, why) = match asked {
        WatchMode::Off => (ActiveMode::Off, "disabled by configuration".to_string()),
        WatchMode::Netlink => match try_netlink(tuning) {
            Ok((sub, why)) => {
                netlink = Some(sub);
                (ActiveMode::Netlink, why)
            }
            Err(e) => {
                return Err(io_other(format!(
                    "netlink mode requested but unavailable: {e}"
                )))
            }
        },
        WatchMode::Pidfd => match probe_pidfd() {
            Ok(s) => {
                pidfd_status = s;
                (ActiveMode::Pidfd, "pidfd mode requested".to_string())
            }
            Err(e) => {
                return Err(io_other(format!(
                    "pidfd mode requested but unavailable: {e}"
                )))
            }
        },
        WatchMode::Auto => match try_netlink(tuning) {
            Ok((sub, why)) => {
                netlink = Some(sub);
                (ActiveMode::Netlink, why)
            }
            Err(nl_why) => match probe_pidfd() {
                Ok(s) => {
                    pidfd_status = s;
                    (ActiveMode::Pidfd, format!("netlink unavailable: {nl_why}"))
                }
                Err(pf_why) => (
                    ActiveMode::ProcScan,
                    format!("netlink unavailable: {nl_why}; pidfd unavailable: {pf_why}"),
                ),
            },
        },
    };
    if !tuning.pidfd_exit_info && pidfd_status == StatusSupport::Yes {
        pidfd_status = StatusSupport::Disabled;
    }
    Ok(ChosenMode {
        mode,
        why,
        limits: limits(mode, pidfd_status, tuning),
        netlink,
        pidfd_status,
    })
}

/// What `mode` cannot know.
fn limits(mode: ActiveMode, pidfd_status: StatusSupport, tuning: &Tuning) -> Vec<String> {
    let mut limits = Vec::new();
    match mode {
        ActiveMode::Pidfd => {
            limits.push(format!(
                "exit instants from pidfd wake-ups; new processes found by /proc scans every {} \
                 (every {} while idle), births known to a clock tick, a process born and gone \
                 between two scans is not seen",
                fmt_ns(tuning.fast_scan.as_nanos() as u64),
                fmt_ns(tuning.idle_scan.as_nanos() as u64)
            ));
            limits.push(match pidfd_status {
                StatusSupport::Yes => "exit status from PIDFD_INFO_EXIT once the parent reaps; unknown if \
                                       the parent does not reap within the grace period"
                    .into(),
                StatusSupport::Unsupported => "this kernel has no PIDFD_INFO_EXIT (Linux 6.15+): exit status \
                                               only for zombies the watcher may read, else unknown"
                    .into(),
                StatusSupport::Disabled => "PIDFD_INFO_EXIT disabled by configuration: exit status only for \
                                            zombies the watcher may read, else unknown"
                    .into(),
            });
        }
        ActiveMode::ProcScan => limits.push(
            "exits and births known only to a /proc scan interval; exit status only for zombies the \
             watcher may read, else unknown"
                .into(),
        ),
        _ => {}
    }
    limits
}

/// fork a child that exits at once with `code`; returns its pid.
fn fork_exit(code: i32) -> std::io::Result<i32> {
    // SAFETY: the child only calls _exit, which is async-signal-safe, so forking a
    // multi-threaded process is fine.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: terminate the child immediately.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

fn reap(pid: i32) {
    let mut st = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
}

fn errno_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPROTONOSUPPORT) => {
            "the kernel has no netlink process connector (EPROTONOSUPPORT)".into()
        }
        Some(libc::EPERM) | Some(libc::EACCES) => {
            format!("not permitted ({e}); needs root or CAP_NET_ADMIN")
        }
        _ => e.to_string(),
    }
}

/// Try to subscribe to the connector and check that events really arrive. Returns the
/// subscription (with the events read meanwhile) and a description.
fn try_netlink(t: &Tuning) -> Result<(Subscription, String), String> {
    let sock = NetlinkSock::open().map_err(|e| format!("netlink socket: {}", errno_text(&e)))?;
    let filter = netlink::PROC_EVENT_FORK | netlink::PROC_EVENT_EXEC | netlink::PROC_EVENT_EXIT;
    let mut buffered = Vec::new();
    let mut lost = false;
    // First the filtered subscription (Linux 6.6+), then the legacy one that older kernels
    // need (they ignore a request of the new size without a word).
    for (attempt, f) in [Some(filter), None].into_iter().enumerate() {
        sock.send_op(netlink::PROC_CN_MCAST_LISTEN, f)
            .map_err(|e| format!("netlink subscribe: {}", errno_text(&e)))?;
        let t0 = mono_now();
        let child = fork_exit(0).map_err(|e| format!("fork for netlink verification: {e}"))?;
        let deadline = t0 + t.verify_timeout.as_nanos() as u64;
        let mut buf = [0u8; 8192];
        let mut seen = None;
        let mut refused = None;
        while seen.is_none() && refused.is_none() {
            let now = mono_now();
            if now >= deadline {
                break;
            }
            let mut pfd = libc::pollfd {
                fd: sock.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = ((deadline - now) / 1_000_000).max(1) as i32;
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, ms) };
            loop {
                match sock.recv(&mut buf) {
                    Ok(None) => break,
                    Ok(Some(d)) => {
                        let _ = netlink::parse_datagram(d, |e| {
                            match e {
                                CnEvent::Exit { pid, tgid, .. }
                                    if pid == child && tgid == child =>
                                {
                                    seen = Some(mono_now())
                                }
                                CnEvent::Ack { err } if err != 0 => refused = Some(err),
                                _ => {}
                            }
                            if buffered.len() < VERIFY_BUFFER {
                                buffered.push(e);
                            } else {
                                lost = true;
                            }
                        });
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => lost = true,
                    Err(e) => {
                        reap(child);
                        return Err(format!("netlink receive: {e}"));
                    }
                }
            }
        }
        reap(child);
        if let Some(err) = refused {
            let e = std::io::Error::from_raw_os_error(err as i32);
            return Err(format!(
                "the kernel refused the subscription: {}",
                errno_text(&e)
            ));
        }
        if let Some(at) = seen {
            let how = if attempt == 0 {
                "fork/exec/exit filter"
            } else {
                "all event types (kernel before 6.6)"
            };
            let why = format!(
                "kernel process connector, {how}; verified: a test child's exit arrived after {}",
                fmt_ns(at.saturating_sub(t0))
            );
            let sub = Subscription {
                sock,
                events: buffered,
                lost,
            };
            return Ok((sub, why));
        }
    }
    Err(format!(
        "subscribed, but no event arrived within {} for a test child: probably a non-initial user or \
         pid namespace (container), where the kernel silently ignores the subscription",
        fmt_ns(t.verify_timeout.as_nanos() as u64)
    ))
}

/// Whether pidfd_open works and PIDFD_INFO_EXIT returns statuses, probed with a child.
fn probe_pidfd() -> Result<StatusSupport, String> {
    let child = fork_exit(3).map_err(|e| format!("fork for pidfd probe: {e}"))?;
    let fd = match sys::pidfd_open(child) {
        Ok(fd) => fd,
        Err(e) => {
            reap(child);
            return Err(format!("pidfd_open: {e}"));
        }
    };
    reap(child);
    Ok(match sys::pidfd_exit_info(&fd) {
        Ok(PidfdExit::Status(0x300)) => StatusSupport::Yes,
        _ => StatusSupport::Unsupported,
    })
}
