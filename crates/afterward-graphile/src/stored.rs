//! How a chain's steps are written in the chains table: the one format, for
//! the hand-off that writes them and the worker that reads them.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One step of a chain, as stored: the task's name and its payload. Written
/// borrowed, read owned.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredStep<'a> {
    pub(crate) name: Cow<'a, str>,
    pub(crate) payload: Cow<'a, Value>,
}

impl<'a> StoredStep<'a> {
    /// A step to write, borrowing its parts.
    pub(crate) fn of(step: &'a afterward::durable::ChainStep) -> StoredStep<'a> {
        StoredStep {
            name: Cow::Borrowed(step.name()),
            payload: Cow::Borrowed(step.payload()),
        }
    }
}
