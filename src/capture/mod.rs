//! The capture file: pcapng, one interface per source, one JSON event per packet.
pub mod reader;
pub mod writer;
