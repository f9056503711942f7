//! Durable tasks: work that must survive a crash, a deploy, or outgrow one
//! process (feature `durable`).
//!
//! A [`DurableTask`] is a task described by data: a serializable value with a
//! stable [`NAME`](DurableTask::NAME) and an async [`run`](DurableTask::run).
//! Queue one with [`TaskQueue::add_durable`](crate::TaskQueue::add_durable).
//!
//! - **Without a backend** it is an ordinary task: it runs in-process, in
//!   queue order, under every rule of the drain (failure policy, timeout,
//!   run conditions, shutdown). Tests need nothing else.
//! - **With a backend** ([`RunnerBuilder::durable`](crate::RunnerBuilder::durable)),
//!   the durable tasks of a queue leave the process when the queue is handed
//!   off, and only then: a handler that failed, or a response skipped on
//!   disconnect, persists nothing. They leave as one [`Chain`], in the order
//!   they were added, and workers run the chain's steps one after another,
//!   with stored retries and backoff. The `afterward-graphile` crate is such
//!   a backend, on PostgreSQL.
//!
//! # Order of durable and in-process tasks in one queue
//!
//! With a backend, a queue's drain first hands every durable task waiting in
//! the queue to the backend, as one chain, and waits for the backend to
//! store it; only then does it run the in-process tasks, in their order. So
//! when the first in-process task starts, the durable ones are stored, but
//! they may run before, during or after the in-process ones: the two groups
//! are ordered within themselves, not with each other. A durable task added
//! after that (to a queue already being drained) leaves in a new chain when
//! the drain reaches it, with any other durable task waiting by then.
//!
//! The [`FailurePolicy`] applies within each group too: a failed in-process
//! task stops the in-process tasks after it under `StopQueue`, but the
//! chain, stored before, is not affected; a failed step stops its chain's
//! later steps, on the worker. A failed hand-off is not a task failure: the
//! in-process tasks run.
//!
//! # Counting
//!
//! The runner counts a stored task [`persisted`](crate::Stats::persisted) and
//! a task whose hand-off failed [`persist_failed`](crate::Stats::persist_failed)
//! (logged with its name and the error; the response is not affected, and
//! the task will not run). Both are outcomes in the conservation sum
//! [`Stats::accounted`](crate::Stats::accounted). A chain is stored whole or
//! not at all: if one of its tasks cannot be serialized, none is handed off.
//! A shutdown whose deadline cuts a hand-off short counts its tasks
//! `abandoned` and names them, but the backend may have stored them already
//! (the log line says so): they may still run.
//!
//! # Guarantees
//!
//! A backend runs each step **at least once**: a step that fails is retried,
//! and a worker that dies mid-step leaves the step to run again elsewhere.
//! Each step carries an idempotency key ([`Step::idempotency_key`]), the same
//! on every attempt, for the outside world to deduplicate on (an email
//! provider's idempotency header, a unique column).
//!
//! # Examples
//!
//! ```
//! use afterward::{DurableTask, Step, TaskQueue};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SendWelcome {
//!     to: String,
//! }
//!
//! impl DurableTask for SendWelcome {
//!     const NAME: &'static str = "send_welcome";
//!     type Error = std::io::Error;
//!
//!     async fn run(self, step: Step) -> Result<(), Self::Error> {
//!         // The key is the same on every attempt of this step.
//!         println!("mail to {} (key {})", self.to, step.idempotency_key());
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let queue = TaskQueue::new();
//! queue.add_durable(SendWelcome { to: "ada@example.com".into() });
//! // No backend here: it runs in-process like any task.
//! assert_eq!(queue.drain().await.completed(), 1);
//! # }
//! ```

mod guard;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::guard::{Guarded, guarded};
use crate::id::TaskId;
use crate::report::FailurePolicy;

/// A task described by data, that can leave the process to run elsewhere.
///
/// The value is serialized when its queue is handed to a runner with a
/// durable backend, and deserialized by a worker, perhaps in another process
/// on another machine, perhaps after a restart. Keep it small (ids rather
/// than whole records) and keep its serialized form compatible across
/// deploys: a stored step may be run by the next version of your code.
///
/// `run` may run more than once for one step (see the
/// [module docs](crate::durable)); use [`Step::idempotency_key`] where
/// repeating it would do harm.
///
/// See [`TaskQueue::add_durable`](crate::TaskQueue::add_durable) for an
/// example.
pub trait DurableTask: Serialize + DeserializeOwned + Send + 'static {
    /// The task's stable name: how stored steps find their code. Changing it
    /// strands the steps stored under the old one.
    const NAME: &'static str;

    /// The error `run` returns; it is logged with the task's name.
    type Error: fmt::Display + Send + 'static;

    /// Does the work. An `Err` is a failed attempt: a backend retries it
    /// with backoff; in-process, it is counted `failed` like any task.
    fn run(self, step: Step) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Whether `error` is final: the step then fails for good at once,
    /// without its other attempts (a request the remote side will never
    /// accept, say). By default every error is retried.
    fn is_final(error: &Self::Error) -> bool {
        let _ = error;
        false
    }
}

/// Which step of which chain is running, and which attempt this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    id: TaskId,
    chain: Arc<str>,
    index: usize,
    attempt: u32,
    max_attempts: u32,
}

impl Step {
    /// Describes attempt `attempt` (1-based) of the step with id `id`, at
    /// `index` (0-based) in chain `chain`. Backends build these; tasks read
    /// them.
    pub fn new(
        id: TaskId,
        chain: impl Into<Arc<str>>,
        index: usize,
        attempt: u32,
        max_attempts: u32,
    ) -> Step {
        Step {
            id,
            chain: chain.into(),
            index,
            attempt,
            max_attempts,
        }
    }

    /// A step run in-process: a chain of its own, one attempt.
    pub(crate) fn local(id: TaskId) -> Step {
        Step::new(id, new_chain_id(), 0, 1, 1)
    }

    /// The step's id: the id its task was given when it was added
    /// ([`QueuedTask::id`](crate::QueuedTask::id)), the same on every
    /// attempt.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The chain's id, unique to it. A durable task run in-process (no
    /// backend) is a chain of its own, at index 0.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// The step's place in its chain, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How many attempts the step gets before it has failed for good.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether this is the step's last attempt.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// The step's [`id`](Step::id) as 32 hex digits: the same on every
    /// attempt of this step, and different for every other step anywhere.
    /// Pass it to the outside world so that a repeated attempt does not
    /// repeat the effect.
    pub fn idempotency_key(&self) -> String {
        self.id.to_string()
    }
}

/// The durable tasks of one queue, in order, as a backend stores them.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    id: String,
    steps: Vec<ChainStep>,
    policy: FailurePolicy,
}

impl Chain {
    /// A chain with a new unique id.
    pub fn new(steps: Vec<ChainStep>, policy: FailurePolicy) -> Chain {
        Chain::with_id(new_chain_id(), steps, policy)
    }

    /// A chain with the given id: a backend stores a chain once per id.
    pub fn with_id(id: impl Into<String>, steps: Vec<ChainStep>, policy: FailurePolicy) -> Chain {
        Chain {
            id: id.into(),
            steps,
            policy,
        }
    }

    /// Its id, unique for each hand-off: 32 hex digits.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its steps, in queue order.
    pub fn steps(&self) -> &[ChainStep] {
        &self.steps
    }

    /// The runner's failure policy: what follows a step's last failed
    /// attempt. [`Continue`](FailurePolicy::Continue) runs the next steps;
    /// [`StopQueue`](FailurePolicy::StopQueue) drops them, logging each.
    pub fn policy(&self) -> FailurePolicy {
        self.policy
    }
}

/// One durable task, serialized: its id, its [`NAME`](DurableTask::NAME)
/// and its value as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainStep {
    id: TaskId,
    name: &'static str,
    payload: serde_json::Value,
}

impl ChainStep {
    /// Serializes `task`, whose id is `id`.
    pub fn of<T: DurableTask>(id: TaskId, task: &T) -> Result<ChainStep, serde_json::Error> {
        Ok(ChainStep::new(id, T::NAME, serde_json::to_value(task)?))
    }

    /// A step from an id, a name and a payload already serialized.
    pub fn new(id: TaskId, name: &'static str, payload: serde_json::Value) -> ChainStep {
        ChainStep { id, name, payload }
    }

    /// The task's id, which its step keeps.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The task's [`NAME`](DurableTask::NAME).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The task's value, as JSON.
    pub fn payload(&self) -> &serde_json::Value {
        &self.payload
    }
}

/// The error a backend returns when it could not store a chain.
pub type PersistError = Box<dyn std::error::Error + Send + Sync>;

/// The error a backend returns when it cannot know whether it stored a
/// chain: the commit was sent and its answer lost, and asking the store
/// again did not settle it in time. The runner counts the chain's tasks
/// [`persist_unknown`](crate::Stats::persist_unknown), never
/// `persist_failed`: a task counted `persist_failed` must not run, and
/// these may.
#[derive(Debug)]
pub struct Unconfirmed {
    reason: String,
}

impl Unconfirmed {
    /// `reason` says what was lost.
    pub fn new(reason: impl Into<String>) -> Unconfirmed {
        Unconfirmed {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Unconfirmed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; the chain may or may not have been stored",
            self.reason
        )
    }
}

impl std::error::Error for Unconfirmed {}

/// The future [`DurableBackend::persist`] returns.
pub type PersistFuture<'a> = Pin<Box<dyn Future<Output = Result<(), PersistError>> + Send + 'a>>;

/// Where durable tasks go when their queue is handed off: a store that
/// workers run chains from. Engine-free on purpose; `afterward-graphile`
/// implements it on PostgreSQL.
///
/// A runner calls `persist` once for each chain (at the start of a queue's
/// drain, and again for durable tasks added while it runs) and waits for it
/// before the queue's in-process tasks run, so it should answer within a
/// bounded time. `Ok` means stored: from there on the backend owns the
/// steps. An `Err` means not stored, and is logged with the names of the
/// chain's tasks and counted [`persist_failed`](crate::Stats::persist_failed)
/// (or, with [`RunnerBuilder::durable_fallback`](crate::RunnerBuilder::durable_fallback),
/// the tasks run in-process); an [`Unconfirmed`] error means the backend
/// does not know, and is counted
/// [`persist_unknown`](crate::Stats::persist_unknown).
///
/// Storing a chain whose id is already stored must store nothing new.
pub trait DurableBackend: Send + Sync + 'static {
    /// Stores `chain`, whole or not at all.
    fn persist<'a>(&'a self, chain: &'a Chain) -> PersistFuture<'a>;
}

impl fmt::Debug for dyn DurableBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DurableBackend")
    }
}

/// 128 bits for a chain id, made as task ids are, so ids differ across
/// processes and machines as well as within one.
fn new_chain_id() -> String {
    TaskId::new().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_are_distinct_and_hex() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| new_chain_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(
            ids.iter()
                .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }

    #[test]
    fn the_idempotency_key_is_the_steps_id() {
        let id = TaskId::new();
        let step = Step::new(id, "abc", 3, 2, 5);
        assert_eq!(step.idempotency_key(), id.to_string());
        assert!(!step.is_last_attempt());
        assert!(Step::new(id, "abc", 3, 5, 5).is_last_attempt());
    }
}
