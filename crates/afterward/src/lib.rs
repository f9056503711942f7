//! Run work **after** the response: background tasks for tokio servers, in
//! the spirit of FastAPI's `BackgroundTasks`, with ordering, failure
//! reporting and graceful shutdown.
//!
//! A request handler queues tasks ("send the welcome email", "append to the
//! audit log", "call the webhook"); the response goes out at once; then the
//! tasks run **one after another, in the order they were added**. Unlike a
//! bare `tokio::spawn`, you keep:
//!
//! - **order**: task *n + 1* starts only when task *n* has finished;
//! - **isolation**: a task that returns `Err` or panics is logged with its
//!   name and counted, and the others still run (or, if you ask for it, are
//!   skipped and counted);
//! - **limits**: an optional per-task timeout, a cap on how many queues
//!   drain at once (64 by default) and on how many tasks may wait (10,000
//!   by default), past which tasks are refused, counted and logged;
//! - **accounting**: [`Stats`] for the whole server, a [`DrainReport`] per
//!   queue, and the promise that every task is counted exactly once;
//! - **shutdown**: [`Runner::shutdown`] waits until a deadline, then names
//!   the tasks it had to abandon;
//! - **tracing**: each task runs in a span that is a child of the request's
//!   span.
//!
//! This crate has no HTTP in it. `afterward-hyper` wires it into hyper, tower
//! and axum, and `afterward-actix` into actix-web, handing each request's
//! queue to a [`Runner`] once the response body is finished.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use afterward::{Runner, TaskQueue};
//!
//! // A sync task: runs on tokio's blocking pool, so it may block.
//! fn send_welcome_email(to: String) -> std::io::Result<()> {
//!     println!("email to {to}");
//!     Ok(())
//! }
//!
//! // An async task: awaited on the runtime.
//! async fn append_audit_log(user_id: u64, action: &'static str) {
//!     println!("audit: user {user_id} did {action}");
//! }
//!
//! #[tokio::main]
//! async fn main() {
//!     // One runner per server.
//!     let runner = Runner::builder()
//!         .task_timeout(Duration::from_secs(30))
//!         .build();
//!
//!     // Per request: queue tasks while handling it...
//!     let queue = TaskQueue::new();
//!     queue.add_task(send_welcome_email, ("ada@example.com".to_string(),));
//!     queue.add_task(append_audit_log, (7, "register"));
//!
//!     // ...and hand the queue to the runner once the response is sent.
//!     let report = runner.spawn(queue).await;
//!     assert_eq!(report.completed(), 2);
//!
//!     // On the way out.
//!     let shutdown = runner.shutdown(Duration::from_secs(5)).await;
//!     assert_eq!(shutdown.abandoned(), 0);
//!
//!     let stats = runner.stats();
//!     assert_eq!(stats.tasks_received(), stats.accounted());
//! }
//! ```
//!
//! # Sync and async tasks
//!
//! [`TaskQueue::add_task`] takes any function and a tuple of its arguments.
//! What the function returns decides how the task runs, at compile time:
//! `()` or `Result<T, E>` makes a sync task for the blocking pool; a future
//! of those makes an async task. Consecutive sync tasks of one queue share a
//! single trip to the blocking pool, and a runner's sync tasks hold at most
//! one blocking thread per drain it may run at once.
//!
//! # Choosing when a task runs
//!
//! By default a task runs whatever became of its response. [`add_task`]
//! returns a [`QueuedTask`] whose [`run_if`](QueuedTask::run_if) makes it
//! depend on the response's [`Outcome`], which the adapter
//! (`afterward-hyper`, `afterward-actix`) records when it hands a queue
//! over: a success when the status is below 400 and every `grpc-status`
//! sent is `0`. A task whose
//! condition does not hold is counted `skipped` and logged with the reason.
//!
//! [`RunIf::Success`]: only after a success, as a receipt after an order
//! went through.
//!
//! ```
//! use afterward::adapter::{DisconnectPolicy, RequestTasks};
//! use afterward::{Outcome, RunIf, Runner};
//!
//! fn send_receipt(order: u64) {}
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let runner = Runner::new();
//! // What an adapter does for a request answered with a 500:
//! let request = RequestTasks::new(&runner, DisconnectPolicy::Run);
//! request.queue().add_task(send_receipt, (42,)).run_if(RunIf::Success);
//! drop(request.respond(Outcome::from_status(500), None));
//! runner.wait_idle().await;
//! assert_eq!(runner.stats().skipped(), 1);
//! # }
//! ```
//!
//! [`RunIf::Failure`]: only after a failure, as releasing the stock an
//! order had reserved.
//!
//! ```
//! # use afterward::adapter::{DisconnectPolicy, RequestTasks};
//! use afterward::{Outcome, RunIf, Runner};
//!
//! fn release_stock(order: u64) {}
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # let runner = Runner::new();
//! # let request = RequestTasks::new(&runner, DisconnectPolicy::Run);
//! # let tasks = request.queue();
//! tasks.add_task(release_stock, (42,)).run_if(RunIf::Failure);
//! # drop(request.respond(Outcome::Failure, None));
//! # runner.wait_idle().await;
//! // After a failed response:
//! assert_eq!(runner.stats().completed(), 1);
//! # }
//! ```
//!
//! [`RunIf::Always`], the default: whatever happened, as an audit line. It is
//! also the only condition that runs when the outcome is
//! [`Outcome::Unknown`] (a gRPC stream dropped before its status arrived):
//! a task that needs a success, or a failure, does not run on a guess.
//!
//! ```
//! # use afterward::adapter::{DisconnectPolicy, RequestTasks};
//! use afterward::{Outcome, RunIf, Runner};
//!
//! fn audit(order: u64) {}
//! fn send_receipt(order: u64) {}
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # let runner = Runner::new();
//! # let request = RequestTasks::new(&runner, DisconnectPolicy::Run);
//! # let tasks = request.queue();
//! tasks.add_task(audit, (42,));
//! tasks.add_task(send_receipt, (42,)).run_if(RunIf::Success);
//! # drop(request.respond(Outcome::Unknown, None));
//! # runner.wait_idle().await;
//! // After a response whose outcome is unknown:
//! let stats = runner.stats();
//! assert_eq!((stats.completed(), stats.skipped()), (1, 1));
//! # }
//! ```
//!
//! A queue nobody recorded an outcome for (drained directly, or handed to
//! [`Runner::spawn`] by hand) counts as a success. Adapters record it
//! through the protocol in [`adapter`].
//!
//! The same [`QueuedTask`] names a task ([`name`](QueuedTask::name)), and
//! gives it a dedupe [`key`](QueuedTask::key): a newer task with the same key
//! replaces one still waiting, and [`TaskQueue::forget`] removes them.
//!
//! [`add_task`]: TaskQueue::add_task
//!
//! # Feature flags
//!
//! | feature | enables |
//! |---|---|
//! | `axum` | [`TaskQueue`] as an axum extractor (turned on by `afterward-hyper`'s `axum` feature) |
//! | `actix` | [`TaskQueue`] as an actix-web extractor (turned on by `afterward-actix`); needs Rust 1.89, as actix-web does |
//! | `test-util` | `Recorder`, a runner for tests that keeps the queues handed to it until the test runs them |
//! | `durable` | `DurableTask`, `TaskQueue::add_durable` and `RunnerBuilder::durable`: tasks that leave the process at hand-off, to a backend such as `afterward-graphile` (see the `durable` module) |
//! | `metrics` | the runner's counts, durations, waits and gauges through the [`metrics`](https://docs.rs/metrics) facade: `afterward_tasks_received_total{task}`, `afterward_tasks_total{task, outcome}`, `afterward_task_duration_seconds{task, outcome}`, `afterward_task_wait_seconds{task}`, `afterward_drains_running`, `afterward_drains_waiting`, `afterward_backlog_tasks`. Task names become labels: name tasks after what they do, never after a request's values |
//!
//! # What the runtime needs
//!
//! Tasks run on a tokio runtime. [`Runner::builder`]'s
//! [`task_timeout`](RunnerBuilder::task_timeout) and [`Runner::shutdown`]
//! need its time driver (`enable_time`, or `#[tokio::main]`).

//! # Where things are
//!
//! The files, from the bottom up: each uses only those above it in this
//! table. The crate knows no HTTP: adapters speak to it through
//! [`adapter`].
//!
//! | file | holds |
//! |---|---|
//! | `quiet.rs` | dropping user values without letting their panics out |
//! | `condition.rs` | [`RunIf`] and the response's [`Outcome`] |
//! | `id.rs` | [`TaskId`], every task's id |
//! | `counts.rs` | the outcome table: every way a task ends up counted, once |
//! | `report.rs` | [`DrainReport`] and [`FailurePolicy`] |
//! | `stats.rs` | the runner's counters and their [`Stats`] snapshot |
//! | `metrics.rs` | the same counts as `metrics` series (feature `metrics`; empty without) |
//! | `durable/` | `DurableTask`, `Step`, chains and the backend trait (feature `durable`) |
//! | `task/` | a queued task (one box: header and body), its name, argument capture ([`TaskFn`]), and the one way out for tasks that will not run |
//! | `queue/` | [`TaskQueue`], its list of tasks, [`QueuedTask`], [`TaskQueue::current`], and `Host`: what a queue needs from its runner |
//! | `drain/` | the sequential drain: running, counting and timing out tasks; sync batches; persisting durable tasks |
//! | `runner/` | [`Runner`]: admission, workers, the backlog and its reservations, shutdown, `Recorder` |
//! | `adapter.rs` | the protocol every framework adapter follows, and [`DisconnectPolicy`] |
//! | `axum.rs` | [`TaskQueue`] as an axum extractor (feature `axum`) |
//! | `actix.rs` | [`TaskQueue`] as an actix-web extractor (feature `actix`) |
//!
//! Invariants worth knowing before changing anything: a queue's lock is
//! taken before the runner's, never the other way round; nothing
//! user-written (a task, a destructor, a subscriber) runs under either;
//! and every task that reaches a runner is counted in exactly one
//! [`DrainReport`] outcome (`counts.rs`), by whoever takes it out of its
//! queue.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "actix")]
mod actix;
pub mod adapter;
#[cfg(feature = "axum")]
mod axum;
mod condition;
mod counts;
mod drain;
#[cfg(feature = "durable")]
#[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
pub mod durable;
mod id;
mod metrics;
mod queue;
mod quiet;
mod report;
mod runner;
mod stats;
mod task;

#[cfg(feature = "actix")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix")))]
pub use crate::actix::MissingTasks;
pub use crate::adapter::DisconnectPolicy;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use crate::axum::MissingTaskLayer;
pub use crate::condition::{Outcome, RunIf};
#[cfg(feature = "durable")]
pub use crate::durable::{DurableTask, Step};
pub use crate::id::{ParseTaskIdError, TaskId};
pub use crate::queue::{QueuedTask, TaskQueue};
pub use crate::report::{DrainReport, FailurePolicy};
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub use crate::runner::Recorder;
pub use crate::runner::{
    Capacity, DrainHandle, Reservation, Reserve, Runner, RunnerBuilder, ShutdownReport,
};
pub use crate::stats::Stats;
pub use crate::task::{TaskFn, TaskOutput, TaskResult};
