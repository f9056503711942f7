//! What a worker's steps share: the durable tasks it knows, by name, its
//! statements and where steps are recorded done.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use afterward::{DurableTask, Step};
use serde_json::Value;

use crate::done::Recorder;
use crate::sql::Statements;

/// Why a step's attempt failed, and whether it may be tried again.
#[derive(Debug)]
pub(crate) struct StepError {
    pub(crate) message: String,
    /// No other attempt can do better: the step fails for good at once.
    pub(crate) is_final: bool,
}

/// A registered task: deserializes its payload and runs it.
pub(crate) type RunFn = Arc<
    dyn Fn(Value, Step) -> Pin<Box<dyn Future<Output = Result<(), StepError>> + Send>>
        + Send
        + Sync,
>;

/// What every step job needs: the tasks by name, and the statements of its
/// schema. Given to graphile_worker as an extension.
#[derive(Clone)]
pub(crate) struct Tasks {
    runs: Arc<HashMap<&'static str, RunFn>>,
    pub(crate) statements: Arc<Statements>,
    /// Where steps are recorded done.
    pub(crate) recorder: Arc<Recorder>,
    /// How long a step may run; past it, the attempt failed.
    pub(crate) step_timeout: Option<Duration>,
    /// How long a step retries its bookkeeping before it gives up.
    pub(crate) bookkeeping_budget: Duration,
}

impl Tasks {
    pub(crate) fn new(
        runs: HashMap<&'static str, RunFn>,
        statements: Arc<Statements>,
        recorder: Recorder,
        step_timeout: Option<Duration>,
        bookkeeping_budget: Duration,
    ) -> Tasks {
        Tasks {
            runs: Arc::new(runs),
            statements,
            recorder: Arc::new(recorder),
            step_timeout,
            bookkeeping_budget,
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&RunFn> {
        self.runs.get(name)
    }
}

/// How a worker runs a stored `T`. A payload that does not deserialize into
/// `T` (stored by another version of the code) fails for good at once:
/// retrying cannot change it.
pub(crate) fn run_fn<T: DurableTask>() -> RunFn {
    Arc::new(|payload, step| {
        Box::pin(async move {
            let task: T = serde_json::from_value(payload).map_err(|error| StepError {
                message: format!("cannot deserialize {}: {error}", T::NAME),
                is_final: true,
            })?;
            task.run(step).await.map_err(|error| StepError {
                is_final: T::is_final(&error),
                message: error.to_string(),
            })
        })
    })
}

impl fmt::Debug for Tasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.runs.keys().copied().collect();
        names.sort_unstable();
        f.debug_struct("Tasks")
            .field("names", &names)
            .finish_non_exhaustive()
    }
}
