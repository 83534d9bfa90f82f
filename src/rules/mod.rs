//! Rules turn orderings in the timeline into findings: why a restart ended `errored` (or
//! went wrong another way), with the evidence and a remedy.
//!
//! Only the types exist so far; [`analyze`] finds nothing yet.

use crate::event::{MonoNs, Source};
use crate::timeline::Timeline;
use serde::{Deserialize, Serialize};

/// How bad a finding is. Ordered: `Info < Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One event a finding rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// When it was observed (CLOCK_MONOTONIC ns, as the timeline's entries).
    pub t: MonoNs,
    pub source: Source,
    /// The event in words.
    pub what: String,
}

/// What a rule concluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable name, e.g. `crash-loop-errored`.
    pub kind: String,
    pub severity: Severity,
    pub app: Option<String>,
    pub pm_id: Option<u64>,
    /// One sentence a person can act on.
    pub summary: String,
    /// The causal chain, step by step, in plain words.
    pub chain: Vec<String>,
    pub evidence: Vec<Evidence>,
    pub remedy: String,
}

/// The findings for a timeline. (No rules yet.)
pub fn analyze(_tl: &Timeline) -> Vec<Finding> {
    Vec::new()
}
