//! Sources of events: the RPC proxy, the event-bus subscriber, the process watcher, and
//! (for `explain`) the logs the daemon and the apps wrote.
pub mod bus;
pub mod daemon_state;
pub mod guardian;
pub mod logs;
pub mod procwatch;
pub mod proxy;
pub mod system_now;
