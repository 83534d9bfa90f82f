//! Sources of events: the RPC proxy, the event-bus subscriber and the process watcher.
pub mod bus;
pub mod guardian;
pub mod procwatch;
pub mod proxy;
