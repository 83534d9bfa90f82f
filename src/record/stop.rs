//! Stopping a recording: the request (signals, timers, views) and noticing that the daemon
//! itself is gone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a stopping recorder lets commands in progress finish.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks a recording to stop, from a signal handler thread, a timer or a view. The recorder
/// looks at it every time it wakes (at least every 50 ms).
#[derive(Clone, Default)]
pub struct Stopper(Arc<Mutex<Vec<String>>>);

impl Stopper {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask to stop, saying why. A second request (a second Ctrl-C) hurries the shutdown.
    /// The recorder's idle-class threads get the normal class back, so that a saturated
    /// host cannot hold up the stop ([`crate::sched::end_idle_class`]).
    pub fn stop(&self, why: impl Into<String>) {
        if let Ok(mut g) = self.0.lock() {
            g.push(why.into());
        }
        crate::sched::end_idle_class();
    }

    /// How many stop requests arrived, and the first reason.
    pub fn requested(&self) -> (usize, Option<String>) {
        let g = self.0.lock().map(|g| g.clone()).unwrap_or_default();
        (g.len(), g.first().cloned())
    }
}

/// Whether `pid` runs: it exists and is not a zombie (an unreaped zombie is as good as gone,
/// and init may take seconds to reap it).
pub(super) fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
