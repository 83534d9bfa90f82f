//! pm2-trace: why did `pm2 restart` leave the app errored?
//!
//! Data flows through the modules in this order:
//!
//! - [`sources`] observe: the RPC proxy in front of `rpc.sock`, the `pub.sock` subscriber,
//!   the process watcher. Each produces [`event::Event`]s stamped on one monotonic clock.
//! - [`addr`] reads addresses (ports, unix paths) from text and says which conflict.
//! - [`redact`] removes secrets before anything is stored.
//! - [`capture`] stores events in a pcapng file and reads them back.
//! - [`wire`] and [`pm2`] give bytes their meaning: AMP framing, RPC pairing, typed PM2
//!   calls, bus events and daemon log lines.
//! - [`timeline`] orders events into per-app generations and requests.
//! - [`rules`] turn orderings into findings.
//! - [`views`] present them: text, JSON, TUI.
//! - [`record`] wires the sources to a capture for `pm2-trace record`.
//! - [`explain`] runs the same timeline and rules on the logs the daemon and the apps
//!   wrote, with the daemon's state and the system now, for `pm2-trace explain`.
//!
//! Two modules guard the trust boundaries (see SECURITY.md): [`safe_dir`] for every
//! filesystem operation inside a directory another user may write, and
//! [`views::terminal_safe`] for every piece of untrusted text shown on a terminal.
pub mod addr;
pub mod alloc;
pub mod capture;
pub mod event;
pub mod explain;
pub mod pm2;
pub mod record;
pub mod redact;
pub mod replay;
pub mod rules;
pub mod safe_dir;
pub mod sched;
pub mod sources;
mod spare;
pub mod timeline;
pub mod views;
pub mod wire;
