//! What PM2's messages mean: typed views of RPC calls, replies, bus events and daemon log lines.
pub(crate) mod daemon_log;
pub(crate) mod exchange;
pub mod home;
pub(crate) mod meaning;
