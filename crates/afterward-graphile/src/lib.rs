//! Durable [afterward] tasks on PostgreSQL, run by [graphile_worker].
//!
//! When one process is not enough (tasks must survive a crash or a deploy,
//! be retried with backoff, or run on other machines), make them
//! [`DurableTask`](afterward::DurableTask)s and give the runner a
//! [`GraphileBackend`]. At hand-off, each request's durable tasks are stored
//! as one **chain**, in one transaction; [`GraphileWorker`]s, in the servers
//! or in processes of their own, run each chain's steps in order.
//!
//! # Guarantees
//!
//! - **Stored at hand-off, and only then.** A failed handler or a skipped
//!   disconnect stores nothing. Hand-offs that arrive together share one
//!   transaction. The answer is exact: a hand-off counted
//!   [`persist_failed`](afterward::Stats::persist_failed) stored nothing
//!   and never runs; one counted `persisted` was stored. The time limit
//!   covers getting a connection and the statement, never a commit already
//!   sent; if a commit's answer is lost, the transaction's fate is looked up
//!   by its id, and only if the database cannot say in time is the hand-off
//!   counted [`persist_unknown`](afterward::Stats::persist_unknown). A chain
//!   handed off twice (the same task ids) is stored once.
//! - **In order.** A chain has one graphile_worker job, which the
//!   statement that records step *n* done moves on to step *n + 1*.
//! - **At least once, and never again once done.** A failed attempt is
//!   retried with graphile_worker's stored exponential backoff
//!   (`exp(min(attempt, 10))` seconds), up to
//!   [`max_attempts`](GraphileBackend::max_attempts). A worker that dies
//!   mid-step is found by crash recovery and the step runs again elsewhere.
//!   A step recorded done never runs again: its job is removed by the
//!   statement that records it. A step that hangs is cut off by
//!   [`step_timeout`](GraphileWorker::step_timeout), if set. Each step
//!   carries an idempotency key, [`Step::idempotency_key`](afterward::Step::idempotency_key)
//!   (its task's id), the same on every attempt: give it to the outside
//!   world.
//! - **Failing for good.** After a step's last attempt, or at once when no
//!   attempt can do better (its payload no longer deserializes, no worker
//!   knows its task, or [`DurableTask::is_final`](afterward::DurableTask::is_final)
//!   says so), the step fails for good, with its reason; then the runner's
//!   [`FailurePolicy`](afterward::FailurePolicy) decides: `Continue` runs the
//!   next steps, `StopQueue` drops them, logging each.
//! - **Visible.** [`GraphileBackend::status`] tells where a task stands by
//!   its [`TaskId`](afterward::TaskId), and [`GraphileBackend::prune`]
//!   deletes finished chains.

//! # Example
//!
//! ```no_run
//! use afterward::{DurableTask, Runner, Step, TaskQueue};
//! use afterward_graphile::{GraphileBackend, GraphileWorker};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SendWelcome {
//!     to: String,
//! }
//!
//! impl DurableTask for SendWelcome {
//!     const NAME: &'static str = "send_welcome";
//!     type Error = String;
//!
//!     async fn run(self, step: Step) -> Result<(), String> {
//!         // Pass step.idempotency_key() to the mail provider.
//!         println!("welcome, {} ({})", self.to, step.idempotency_key());
//!         Ok(())
//!     }
//! }
//!
//! # async fn main_() -> Result<(), afterward_graphile::Error> {
//! let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1/postgres").await?;
//!
//! // In the server: durable tasks leave at hand-off.
//! let backend = GraphileBackend::new(pool.clone());
//! backend.migrate().await?;
//! let runner = Runner::builder().durable(backend).build();
//!
//! // A worker, here in the same process; or alone, on another machine.
//! let worker = GraphileWorker::new(pool).task::<SendWelcome>().init().await?;
//! tokio::spawn(async move { worker.run().await });
//!
//! let queue = TaskQueue::new();
//! queue.add_durable(SendWelcome { to: "ada@example.com".into() });
//! runner.spawn(queue).await;
//! # Ok(())
//! # }
//! ```
//!
//! # Costs and limits
//!
//! A hand-off is one statement in one transaction (with `BEGIN` and
//! `COMMIT`), shared by all the hand-offs that arrive together, before the
//! queue's in-process tasks run. A chain is one graphile_worker job,
//! fetched once; its steps are recorded done in batches, a statement for
//! the steps a worker finishes together, which moves each job on to its
//! next step (or removes it after the last). Payloads are JSON, in `afterward_steps` and
//! in the step's job. Finished chains stay in `afterward_steps` as a record
//! of what ran, until [`GraphileBackend::prune`] deletes them. Steps of one
//! chain never run in parallel, so a long chain is as slow as the sum of
//! its steps and their retries. A worker that does not know a step's task
//! fails it for good, so roll out new tasks to the workers before the
//! servers queue them.
//!
//! # Where things are
//!
//! | file | holds |
//! |---|---|
//! | `schema.rs` | the schema's name, checked, and what the migration makes: graphile_worker's tables, `afterward_steps`, the job's format, the function `afterward_done` |
//! | `sql.rs` | every statement afterward sends, written once per schema |
//! | `status.rs` | [`TaskStatus`] and [`TaskState`] |
//! | `batches.rs` | requests that arrive together served together, by one statement and one commit |
//! | `handoff.rs` | hand-offs stored together, each with its exact answer |
//! | `job.rs` | a chain's graphile_worker job: the step it is at |
//! | `done.rs` | steps recorded done together, each told its chain's next step |
//! | `tasks.rs` | what a worker's steps share: the tasks by name, the statements, the recorder |
//! | `step.rs` | one step on a worker: run from its job, recorded, the next queued |
//! | `backend.rs` | [`GraphileBackend`]: hand-offs, the transactional outbox, status and pruning |
//! | `worker.rs` | [`GraphileWorker`]: the graphile_worker worker that runs steps, and its upkeep |
//!
//! [afterward]: https://docs.rs/afterward
//! [graphile_worker]: https://docs.rs/graphile_worker

mod backend;
mod batches;
mod done;
mod handoff;
mod job;
mod schema;
mod sql;
mod status;
mod step;
mod tasks;
mod worker;

pub use crate::backend::GraphileBackend;
pub use crate::status::{TaskState, TaskStatus};
pub use crate::worker::GraphileWorker;
pub use graphile_worker;
pub use graphile_worker::WorkerRecoveryConfig;

/// Errors of migrations, hand-offs and worker start-up: the database's or
/// graphile_worker's.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The schema of graphile_worker's tables and `afterward_steps`, unless set.
pub const DEFAULT_SCHEMA: &str = "graphile_worker";

const DEFAULT_MAX_ATTEMPTS: i16 = 8;
