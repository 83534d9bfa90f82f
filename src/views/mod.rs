//! Ways to present a timeline and its findings: text, JSON, the interactive TUI, and
//! OpenTelemetry export.
pub mod json;
pub mod otlp;
pub mod text;
pub mod tui;
