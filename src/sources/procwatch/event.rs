//! What the process watcher records. (Filled in by the process-watcher work.)

use serde::{Deserialize, Serialize};

/// An observation of the operating system's processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProcEvent {
    /// A process exited.
    Exit { pid: i32, detail: String },
}
