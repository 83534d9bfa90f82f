//! Ways to present a timeline and its findings: text, JSON and the interactive TUI.
pub mod explain;
pub mod json;
pub mod text;
pub mod tui;
