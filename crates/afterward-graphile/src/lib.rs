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
//!   disconnect stores nothing. A hand-off that fails (database unreachable)
//!   is logged with the tasks' names and counted
//!   [`persist_failed`](afterward::Stats::persist_failed); the response is
//!   not affected. A chain handed off twice is stored once.
//! - **In order.** A chain has one graphile_worker job at a time: step
//!   *n + 1* is queued in the transaction that records step *n* done.
//! - **At least once.** A failed attempt is retried with graphile_worker's
//!   stored exponential backoff (`exp(min(attempt, 10))` seconds), up to
//!   [`max_attempts`](GraphileBackend::max_attempts). A worker that dies
//!   mid-step is found by crash recovery and the step runs again elsewhere.
//!   So a step may run more than once: after a failed attempt, when its
//!   worker died before recording it, or when recording it failed for longer
//!   than the worker's [`bookkeeping_budget`](GraphileWorker::bookkeeping_budget)
//!   (a database error within it is retried and costs no attempt). Steps
//!   recorded done are never run again. A step that hangs is cut off by
//!   [`step_timeout`](GraphileWorker::step_timeout), if set. Each step carries an idempotency key,
//!   [`Step::idempotency_key`](afterward::Step::idempotency_key) (chain id
//!   and index), the same on every attempt: give it to the outside world.
//! - **Failure policy.** After a step's last failed attempt, the runner's
//!   [`FailurePolicy`](afterward::FailurePolicy) decides:
//!   `Continue` runs the next steps, `StopQueue` ends the chain and logs
//!   each step it drops. The chain row lists the steps that failed for good
//!   (`failed_for_good`), and the failed job stays in graphile_worker's
//!   `jobs` with its last error (unless its worker died before recording
//!   it).
//! - **Hand-off time.** A hand-off is bounded by the backend's
//!   [`timeout`](GraphileBackend::timeout), 5 s by default.
//!
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
//! A hand-off is one transaction (two statements: the chain row, the first
//! job) before the queue's in-process tasks run; each step is a
//! graphile_worker job plus one transaction that records it and queues the
//! next. Payloads are JSON in the chains table. Finished chains stay in the
//! table (with `finished_at` set) as a record of what ran; delete old rows
//! when you no longer need them. Steps of one chain never run in parallel,
//! so a long chain is as slow as the sum of its steps and their retries.
//! While workers of two versions share a database, a worker that does not
//! know a step's task fails its attempt (and the step backs off), so roll
//! out new tasks to the workers before the servers queue them.
//!
//! # Where things are
//!
//! | file | holds |
//! |---|---|
//! | `schema.rs` | the tables: graphile_worker's, and the chains table |
//! | `stored.rs` | how a chain's steps are written in the chains table |
//! | `step.rs` | one step on a worker: found in its chain, run, and the chain moved on |
//! | `tasks.rs` | the durable tasks a worker knows, by name |
//! | `backend.rs` | [`GraphileBackend`]: a hand-off stores a chain in one transaction |
//! | `worker.rs` | [`GraphileWorker`]: builds the graphile_worker worker that runs steps |
//!
//! [afterward]: https://docs.rs/afterward
//! [graphile_worker]: https://docs.rs/graphile_worker

mod backend;
mod schema;
mod step;
mod stored;
mod tasks;
mod worker;

pub use crate::backend::GraphileBackend;
pub use crate::worker::GraphileWorker;
pub use graphile_worker;
pub use graphile_worker::WorkerRecoveryConfig;

/// Errors of migrations, hand-offs and worker start-up: the database's or
/// graphile_worker's.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The schema of graphile_worker's tables and the chains table, unless set.
pub const DEFAULT_SCHEMA: &str = "graphile_worker";

const DEFAULT_MAX_ATTEMPTS: i16 = 8;
