//! Sources of events: the RPC proxy, the event-bus subscriber, the process watcher, the
//! host-wide socket-holder lookup the watcher (and `explain`) use, and (for `explain`) the
//! logs the daemon and the apps wrote, the daemon's state and the system now.
pub(crate) mod bus;
pub(crate) mod daemon_state;
pub mod guardian;
pub mod holders;
pub mod logs;
pub mod procwatch;
pub mod proxy;
pub(crate) mod system_now;
