//! The scheduling the recorder asks of the kernel for its threads: the proxy's forwarding
//! threads wake first, the recorder's own work runs only on CPU time nobody else wants.
//! Both act on the calling thread only (policies are per thread on Linux; threads it spawns
//! inherit them) and fall back quietly where the kernel refuses.

/// The slice a forwarding thread asks for: the shortest the kernel grants (0.1 ms).
pub const FORWARDING_SLICE_NS: u64 = 100_000;

/// Ask for a short time slice for the calling thread (Linux 6.12+, EEVDF's per-task slice:
/// `sched_setattr` with `sched_runtime` on a normal thread; no privilege needed). A thread with
/// a shorter slice gets an earlier deadline, so when it wakes it preempts the thread running
/// on its CPU instead of waiting up to that thread's slice (~1.4 ms on 2 cores). Its share of
/// the CPU is unchanged. Keeps the thread's policy and nice value, and does nothing unless the
/// thread is in the normal class. Returns whether the kernel took the request; older kernels
/// accept and ignore it.
pub fn short_slice() -> bool {
    // SAFETY: scheduling queries and sched_setattr on the calling thread (0) only, with an
    // initialized sched_attr of the size we pass.
    unsafe {
        if libc::sched_getscheduler(0) != libc::SCHED_OTHER {
            return false;
        }
        *libc::__errno_location() = 0;
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let nice = libc::getpriority(libc::PRIO_PROCESS, tid);
        if nice == -1 && *libc::__errno_location() != 0 {
            return false;
        }
        let attr = libc::sched_attr {
            size: std::mem::size_of::<libc::sched_attr>() as u32,
            sched_policy: libc::SCHED_OTHER as u32,
            sched_flags: 0,
            sched_nice: nice,
            sched_priority: 0,
            sched_runtime: FORWARDING_SLICE_NS,
            sched_deadline: 0,
            sched_period: 0,
        };
        libc::syscall(
            libc::SYS_sched_setattr,
            0,
            &attr as *const libc::sched_attr,
            0,
        ) == 0
    }
}

/// Put the calling thread in the `SCHED_IDLE` class: it runs only on CPU time no normal
/// thread wants, and a forwarding thread that wakes up preempts it at once (a nice-10 thread
/// keeps the CPU until its slice ends, ~1.5 ms on 2 cores, which is what the tail of a round
/// trip measured). Falls back to nice 19 if the kernel refuses.
pub fn idle_class() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler/setpriority on the calling thread (0 / its tid) only.
    unsafe {
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 19);
        }
    }
}

/// Give every thread of this process that is in the `SCHED_IDLE` class the normal class
/// back: once a recording is asked to stop, its own threads (the recorder loop, the tap
/// decoder, the capture's disk writes, the threads they started) must finish even on a host
/// whose normal work takes every CPU, where the idle class can wait for seconds. No traffic
/// needs protecting from them by then. Threads are found in `/proc/self/task`, so only this
/// process's threads are touched (a thread that ends between the listing and the call
/// would have its id reused only after the kernel's whole pid space wrapped). Returns how
/// many threads were moved.
pub fn end_idle_class() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let param = libc::sched_param { sched_priority: 0 };
    let mut moved = 0;
    for tid in tasks
        .flatten()
        .filter_map(|t| t.file_name().to_str()?.parse::<libc::pid_t>().ok())
    {
        // SAFETY: scheduling query and change of one of this process's threads.
        unsafe {
            if libc::sched_getscheduler(tid) == libc::SCHED_IDLE
                && libc::sched_setscheduler(tid, libc::SCHED_OTHER, &param) == 0
            {
                moved += 1;
            }
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (policy, nice) of the calling thread.
    fn class() -> (i32, i32) {
        // SAFETY: queries on the calling thread.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            (
                libc::sched_getscheduler(0),
                libc::getpriority(libc::PRIO_PROCESS, tid),
            )
        }
    }

    #[test]
    fn a_short_slice_keeps_the_threads_nice_value_and_class() {
        std::thread::spawn(|| {
            // SAFETY: raising the nice value of the calling thread needs no privilege.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, 5);
            }
            // Whatever the kernel's version, the thread's class and nice value stay.
            short_slice();
            assert_eq!(class(), (libc::SCHED_OTHER, 5));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn an_idle_thread_is_not_given_a_short_slice() {
        std::thread::spawn(|| {
            idle_class();
            assert!(!short_slice());
            assert_eq!(class().0, libc::SCHED_IDLE);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn ending_the_idle_class_moves_idle_threads_to_the_normal_class() {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            idle_class();
            // SAFETY: gettid.
            tid_tx
                .send(unsafe { libc::syscall(libc::SYS_gettid) } as libc::pid_t)
                .unwrap();
            go_rx.recv().unwrap();
            class().0
        });
        let tid = tid_rx.recv().unwrap();
        // SAFETY: a query on a thread of this process, still running.
        assert_eq!(unsafe { libc::sched_getscheduler(tid) }, libc::SCHED_IDLE);
        assert!(end_idle_class() >= 1);
        go_tx.send(()).unwrap();
        assert_eq!(t.join().unwrap(), libc::SCHED_OTHER);
    }
}
