//! Run background tasks after the response: the actix-web adapter of
//! [`afterward`].
//!
//! Wrap an actix-web `App` (or a `Scope`, a `Resource`) in the [`Tasks`]
//! middleware. Every request then has a [`TaskQueue`]; a handler takes it as
//! an extractor and queues work on it; once the response body is finished,
//! the queue goes to a [`Runner`], which runs the tasks one after another,
//! in order, while the server carries on.
//!
//! # Example
//!
//! A complete server that queues a task per request, asked once over a
//! socket:
//!
//! ```
//! use std::time::Duration;
//!
//! use actix_web::{App, HttpResponse, HttpServer, web};
//! use afterward::{Runner, TaskQueue};
//! use afterward_actix::Tasks;
//!
//! fn append_audit_log(path: String) {
//!     println!("audit: {path}");
//! }
//!
//! async fn signup(tasks: TaskQueue, path: web::Path<String>) -> HttpResponse {
//!     tasks.add_task(append_audit_log, (path.into_inner(),));
//!     HttpResponse::Ok().body("hello")
//! }
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     // Once, outside the factory: the runner outlives the workers.
//!     let runner = Runner::builder().task_timeout(Duration::from_secs(30)).build();
//!
//!     let tasks = Tasks::new(runner.clone());
//!     let server = HttpServer::new(move || {
//!         App::new()
//!             .wrap(tasks.clone())
//!             .route("/{name}", web::get().to(signup))
//!     })
//!     .bind(("127.0.0.1", 0))?;
//! #   let addr = server.addrs()[0];
//!     let server = server.run();
//!     let handle = server.handle();
//!     let serving = actix_web::rt::spawn(server);
//!
//! #   use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! #   let mut stream = tokio::net::TcpStream::connect(addr).await?;
//! #   stream.write_all(b"GET /ada HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await?;
//! #   let mut response = String::new();
//! #   stream.read_to_string(&mut response).await?;
//! #   assert!(response.ends_with("hello"), "{response}");
//!     // ... after requests have been served, shut down in this order:
//!     // 1. the server: its workers finish the requests in flight;
//!     handle.stop(true).await;
//!     serving.await??;
//!     // 2. the tasks, with a deadline; the report names what it abandons.
//!     let report = runner.shutdown(Duration::from_secs(10)).await;
//!     assert_eq!(report.abandoned(), 0);
//!     assert_eq!(runner.stats().completed(), 1);
//!     Ok(())
//! }
//! ```
//!
//! # The runner and actix's workers
//!
//! actix-web runs each worker on a single-threaded runtime of its own, and
//! drops it when the server stops; its response bodies are not `Send`.
//! So build the [`Runner`] **once, outside the `HttpServer::new` factory**
//! (as above), and give each worker's `App` a clone of the same [`Tasks`].
//! The runner keeps the runtime it was built on and runs every drain
//! there, never on a worker's: a worker that goes away does not take the
//! tasks it handed over with it. A runner built inside the factory would be
//! one per worker, on that worker's runtime, and lose its tasks when the
//! worker stops.
//!
//! Under `#[actix_web::main]` that runtime is the main thread's, which async
//! tasks then share with the server's own bookkeeping (sync tasks go to
//! tokio's blocking pool either way). For more threads, build the runner
//! in a multi-threaded tokio runtime: `#[tokio::main]` serves actix-web
//! too.
//!
//! # Graceful shutdown
//!
//! Stop in this order: the server first (`ServerHandle::stop(true)`, which
//! lets the workers finish the requests in flight, for at most
//! `HttpServer::shutdown_timeout`, 30 s by default; actix does the same on
//! SIGTERM, and stops at once on Ctrl-C); then [`Runner::shutdown`] with a
//! deadline for the tasks. A response a worker cuts off is a disconnect (see
//! [`DisconnectPolicy`]); a handler it cuts off has its tasks skipped. The runner knows the
//! requests still in flight, so its report also names the tasks of any
//! request a worker had not finished when it gave up. Once it returns,
//! whatever reaches the runner from then on is refused and logged with its
//! name.
//!
//! # Where things are
//!
//! The adapter follows the protocol of [`afterward::adapter`]; its files,
//! from the bottom up:
//!
//! | file | holds |
//! |---|---|
//! | `body.rs` | [`TaskBody`]: when a response is complete; the hand-off when actix drops it |
//! | `middleware.rs` | [`Tasks`] and its service: a queue per request, the response's outcome, the body wrapped |
//!
//! The extractor (`tasks: TaskQueue` in a handler, and its error
//! [`MissingTasks`]) lives in the core crate, under
//! its `actix` feature, which this crate turns on.
//!
//! # Feature flags
//!
//! None: the crate is the middleware, the body, and the core's extractor.
//! It needs Rust 1.89 or later, as actix-web does.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod middleware;

pub use crate::body::TaskBody;
pub use crate::middleware::{ResponseFuture, Tasks, TasksMiddleware};

pub use afterward::{DisconnectPolicy, MissingTasks, Runner, TaskQueue};
