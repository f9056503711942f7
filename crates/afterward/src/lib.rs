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
//! and axum, handing each request's queue to a [`Runner`] once the response
//! body is finished.
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
//! # What the runtime needs
//!
//! Tasks run on a tokio runtime. [`Runner::builder`]'s
//! [`task_timeout`](RunnerBuilder::task_timeout) and [`Runner::shutdown`]
//! need its time driver (`enable_time`, or `#[tokio::main]`).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod drain;
mod job;
mod queue;
mod quiet;
mod report;
mod runner;
mod stats;
mod task;

pub use crate::queue::TaskQueue;
pub use crate::report::{DrainReport, FailurePolicy};
pub use crate::runner::{DrainHandle, Runner, RunnerBuilder, ShutdownReport};
pub use crate::stats::Stats;
pub use crate::task::{TaskFn, TaskOutput, TaskResult};
