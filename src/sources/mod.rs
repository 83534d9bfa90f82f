//! Sources of events: the RPC proxy, the event-bus subscriber and the process watcher, and
//! the host-wide socket-holder lookup the watcher (and `explain`) use.
pub(crate) mod bus;
pub mod guardian;
pub mod holders;
pub mod procwatch;
pub mod proxy;
