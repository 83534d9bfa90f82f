//! Bytes on PM2's sockets: AMP framing, and the RPC request/reply pairing on top of it.
pub mod amp;
pub mod json;
pub mod rpc;
