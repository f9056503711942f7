//! A chain's graphile_worker job, as it is stored: the step the chain is
//! at, with everything the step needs to run.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A chain's graphile_worker job: the step it is at. Its fields are those
/// the statements of `sql.rs` build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StepJob {
    pub(crate) step: String,
    pub(crate) chain: String,
    pub(crate) index: i32,
    pub(crate) name: String,
    pub(crate) payload: Value,
}
