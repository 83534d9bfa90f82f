//! The terminal: raw mode, alternate screen and mouse, always given back: on return, on
//! error (Drop) and on panic (a hook that restores before the message is printed).
//! While recording, stderr is diverted into a pipe so that the recorder's messages do not
//! scribble over the screen; they are printed once the terminal is restored.

use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use std::io::{IsTerminal, Stdout, Write};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Once};

static ACTIVE: AtomicBool = AtomicBool::new(false);
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);
static HOOK: Once = Once::new();

/// Give the terminal back (idempotent; safe from a panic hook).
pub(crate) fn restore() {
    restore_stderr();
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let mut out = std::io::stdout();
        let _ = crossterm::execute!(
            out,
            DisableMouseCapture,
            LeaveAlternateScreen,
            crossterm::cursor::Show
        );
        let _ = out.flush();
    }
}

fn restore_stderr() {
    let fd = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: dup2 of a descriptor we saved onto stderr, then closing our copy.
        unsafe {
            libc::dup2(fd, 2);
            libc::close(fd);
        }
    }
}

/// The terminal in TUI mode; restored on drop.
pub(crate) struct Term {
    pub(crate) terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Term {
    /// Take over the terminal.
    pub(crate) fn enter() -> anyhow::Result<Term> {
        if !std::io::stdout().is_terminal() {
            anyhow::bail!(
                "the TUI needs a terminal, and standard output is not one (for text, use `pm2-trace replay FILE`)"
            );
        }
        HOOK.call_once(|| {
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                prev(info);
            }));
        });
        enable_raw_mode()
            .map_err(|e| anyhow::anyhow!("cannot put the terminal in raw mode: {e}"))?;
        ACTIVE.store(true, Ordering::SeqCst);
        let mut out = std::io::stdout();
        if let Err(e) = crossterm::execute!(
            out,
            EnterAlternateScreen,
            EnableMouseCapture,
            crossterm::cursor::Hide
        ) {
            restore();
            anyhow::bail!("cannot set up the terminal: {e}");
        }
        let terminal = match Terminal::new(CrosstermBackend::new(std::io::stdout())) {
            Ok(t) => t,
            Err(e) => {
                restore();
                anyhow::bail!("cannot set up the terminal: {e}");
            }
        };
        Ok(Term { terminal })
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        restore();
    }
}

/// Lines written to stderr while it was diverted.
#[derive(Clone, Default)]
pub(crate) struct Diverted(Arc<Mutex<Vec<String>>>);

impl Diverted {
    pub(crate) fn lines(&self) -> Vec<String> {
        self.0.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// Send stderr (fd 2, also of child processes started from now on) into a pipe until
/// [`restore`]; what arrives is kept (at most 1000 lines).
pub(crate) fn divert_stderr() -> anyhow::Result<Diverted> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: plain descriptor calls on descriptors we own; errors are checked.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            anyhow::bail!("pipe: {}", std::io::Error::last_os_error());
        }
        let saved = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3);
        if saved < 0 {
            libc::close(fds[0]);
            libc::close(fds[1]);
            anyhow::bail!("dup stderr: {}", std::io::Error::last_os_error());
        }
        if libc::dup2(fds[1], 2) < 0 {
            libc::close(fds[0]);
            libc::close(fds[1]);
            libc::close(saved);
            anyhow::bail!("dup2 stderr: {}", std::io::Error::last_os_error());
        }
        libc::close(fds[1]);
        SAVED_STDERR.store(saved, Ordering::SeqCst);
    }
    // SAFETY: fds[0] is ours alone from here on.
    let read = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
    let kept = Diverted::default();
    let k = kept.clone();
    std::thread::Builder::new()
        .name("stderr-divert".into())
        .spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(read).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut g) = k.0.lock() {
                    if g.len() < 1000 {
                        g.push(line);
                    }
                }
            }
        })?;
    Ok(kept)
}
