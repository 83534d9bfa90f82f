//! Ways to present a timeline and its findings: text, JSON, the interactive TUI, and
//! OpenTelemetry export.
//!
//! Every text view passes untrusted text through [`terminal_safe`] before it reaches a
//! terminal; colour comes only from the views themselves. JSON and OpenTelemetry keep the
//! exact text.
pub mod explain;
pub(crate) mod json;
pub mod otlp;
pub mod terminal_safe;
pub(crate) mod text;
pub mod tui;

pub use terminal_safe::{terminal_safe, terminal_safe_lines};
