//! Ways to present a timeline and its findings: text, JSON and the interactive TUI.
pub(crate) mod json;
pub(crate) mod text;
pub mod tui;
