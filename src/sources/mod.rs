//! Sources of events: the RPC proxy, the event-bus subscriber and the process watcher.
pub(crate) mod bus;
pub mod guardian;
pub mod procwatch;
pub mod proxy;
