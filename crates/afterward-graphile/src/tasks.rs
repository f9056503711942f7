//! The durable tasks a worker knows, by name.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use afterward::{DurableTask, Step};
use graphile_worker::WorkerUtils;
use serde_json::Value;

/// A registered task: deserializes its payload and runs it.
pub(crate) type RunFn = Arc<
    dyn Fn(Value, Step) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync,
>;

/// What every step job needs: the tasks by name, and where chains live.
/// Given to graphile_worker as an extension.
#[derive(Clone)]
pub(crate) struct Tasks {
    runs: Arc<HashMap<&'static str, RunFn>>,
    pub(crate) utils: WorkerUtils,
    /// The chains table, quoted.
    pub(crate) table: Arc<str>,
    /// How long a step may run; past it, the attempt failed.
    pub(crate) step_timeout: Option<Duration>,
    /// How long a step retries its chain's bookkeeping before it gives up.
    pub(crate) bookkeeping_budget: Duration,
}

impl Tasks {
    pub(crate) fn new(
        runs: HashMap<&'static str, RunFn>,
        utils: WorkerUtils,
        table: String,
        step_timeout: Option<Duration>,
        bookkeeping_budget: Duration,
    ) -> Tasks {
        Tasks {
            runs: Arc::new(runs),
            utils,
            table: Arc::from(table),
            step_timeout,
            bookkeeping_budget,
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&RunFn> {
        self.runs.get(name)
    }
}

/// How a worker runs a stored `T`.
pub(crate) fn run_fn<T: DurableTask>() -> RunFn {
    Arc::new(|payload, step| {
        Box::pin(async move {
            let task: T = serde_json::from_value(payload)
                .map_err(|error| format!("cannot deserialize {}: {error}", T::NAME))?;
            task.run(step).await.map_err(|error| error.to_string())
        })
    })
}

impl fmt::Debug for Tasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.runs.keys().copied().collect();
        names.sort_unstable();
        f.debug_struct("Tasks")
            .field("names", &names)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}
