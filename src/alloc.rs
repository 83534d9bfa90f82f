//! The allocator's and the kernel's memory settings for a process that views a capture.
//!
//! The `pm2-trace` binary allocates through mimalloc (src/main.rs). mimalloc gives memory that
//! has been free for a while back to the kernel (its purge delay, 1 s in mimalloc v3), and the
//! kernel zeroes each page again when it is used next. The TUI's open of a capture allocates
//! and frees hundreds of MB within that time (each event read on one thread is freed on
//! another once indexed), so part of its CPU went to zeroing the same pages again: in the
//! `tui_open` bench (1M events) `MIMALLOC_PURGE_DELAY=-1` took 0.23 to 0.40 s of the open's
//! 1.53 to 1.71 s of CPU away, for 10 to 20 MB more peak RSS. Replay, which streams in 19
//! MB, showed no difference, and the recorder, which runs for days, keeps mimalloc's default
//! so that what a burst took goes back to the system.
//!
//! The same viewer also turns transparent huge pages off for itself: mimalloc advises its
//! arenas for huge pages, and on this project's machine kind the kernel's faulting of 2 MB
//! pages (zeroing, and at times compacting memory to find them) was a fifth of `pm2-trace
//! tui`'s samples when it opened 1M events, and swung its system time from 0.1 to 0.5 s
//! between runs. With 4 KiB pages, five interleaved pairs in a real terminal (tmux): 0.75 to
//! 1.31 s against 1.00 to 1.64 s, system time 0.13 to 0.20 s against 0.24 to 0.45.

/// mimalloc's `mi_option_purge_delay` (the 16th entry of `mi_option_e` in mimalloc.h, in
/// mimalloc v2 and v3 alike; the test below checks it against the environment variable).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed memory in the process instead of giving it back to the kernel (purge delay -1),
/// for a process that exits when its view closes (`pm2-trace tui`). A `MIMALLOC_PURGE_DELAY`
/// in the environment still wins. Call it before the work starts, on one thread.
pub fn keep_freed_memory() {
    // SAFETY: mimalloc's option setter takes a valid option index (checked by the test
    // below) and a value; it only writes that option's slot, and is called before the
    // threads that read it start.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, -1) }
}

/// No transparent huge pages for this process (`PR_SET_THP_DISABLE`): every mapping, also
/// those mimalloc made (and advised for huge pages) before `main`, is then faulted in 4 KiB
/// at a time.
pub fn no_huge_pages() -> bool {
    // SAFETY: a prctl that only sets a flag of this process.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge_delay() -> i64 {
        // SAFETY: a read of a valid option index.
        i64::from(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) })
    }

    /// Run in a child process with `MIMALLOC_PURGE_DELAY=123` (by the test below; ignored
    /// otherwise): the index is the option that variable sets, and the variable wins over
    /// `keep_freed_memory`.
    #[test]
    #[ignore = "run by the_option_is_mimallocs_purge_delay_and_the_environment_wins"]
    fn child_with_the_environment_variable() {
        assert_eq!(
            purge_delay(),
            123,
            "index {MI_OPTION_PURGE_DELAY} is not purge_delay"
        );
        keep_freed_memory();
        assert_eq!(purge_delay(), 123, "the environment variable must win");
    }

    #[test]
    fn the_option_is_mimallocs_purge_delay_and_the_environment_wins() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "alloc::tests::child_with_the_environment_variable",
                "--ignored",
                "--test-threads=1",
            ])
            .env("MIMALLOC_PURGE_DELAY", "123")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("1 passed"), "{text}");
    }

    #[test]
    fn huge_pages_are_off_once_asked() {
        assert!(no_huge_pages());
        // SAFETY: a query of this process's flag.
        assert_eq!(
            unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) },
            1
        );
    }

    #[test]
    fn without_the_variable_freed_memory_is_kept() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        keep_freed_memory();
        assert_eq!(purge_delay(), -1);
    }
}
