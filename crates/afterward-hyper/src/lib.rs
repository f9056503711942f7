//! Run background tasks after the response: the hyper, tower and axum
//! adapter of [`afterward`].
//!
//! Wrap a hyper service in [`TaskService`] (or add [`TaskLayer`] to a tower
//! or axum stack). Every request then carries a [`TaskQueue`] in its
//! extensions; the handler queues work on it; once the response body is
//! finished, the queue goes to a [`Runner`], which runs the tasks one after
//! another, in order, while the server carries on.
//!
//! # Example
//!
//! A complete hyper server that queues a task per request, asked once by a
//! hyper client:
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use afterward::{Runner, TaskQueue};
//! use afterward_hyper::TaskService;
//! use http_body_util::Full;
//! use hyper::body::{Bytes, Incoming};
//! use hyper::{Request, Response};
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use hyper_util::server::conn::auto;
//! use tokio::net::TcpListener;
//!
//! fn append_audit_log(path: String) {
//!     println!("audit: {path}");
//! }
//!
//! async fn handler(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
//!     let tasks = req.extensions().get::<TaskQueue>().expect("TaskService adds it");
//!     tasks.add_task(append_audit_log, (req.uri().path().to_owned(),));
//!     Ok(Response::new(Full::new(Bytes::from("hello"))))
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let runner = Runner::builder().task_timeout(Duration::from_secs(30)).build();
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//!
//! let service = TaskService::new(hyper::service::service_fn(handler), runner.clone());
//! tokio::spawn(async move {
//!     loop {
//!         let Ok((stream, _)) = listener.accept().await else { continue };
//!         let service = service.clone();
//!         tokio::spawn(async move {
//!             let _ = auto::Builder::new(TokioExecutor::new())
//!                 .serve_connection(TokioIo::new(stream), service)
//!                 .await;
//!         });
//!     }
//! });
//!
//! # let stream = tokio::net::TcpStream::connect(addr).await?;
//! # let (mut client, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
//! # tokio::spawn(conn);
//! # let req = Request::get(format!("http://{addr}/signup")).body(http_body_util::Empty::<Bytes>::new())?;
//! # let response = client.send_request(req).await?;
//! # use http_body_util::BodyExt;
//! # assert_eq!(response.into_body().collect().await?.to_bytes(), "hello");
//! // ... after requests have been served:
//! runner.wait_idle().await;
//! assert_eq!(runner.stats().completed(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Graceful shutdown
//!
//! Stop in this order: stop accepting; give the open connections some time
//! to finish (hyper-util's `GracefulShutdown`, under a timeout); then
//! [`Runner::shutdown`] with a deadline for the tasks.
//!
//! Some connections outlive any graceful timeout: a slow client still
//! reading, a response that streams forever, a handler that is stuck. The
//! runner knows the requests still in flight (each got its queue from
//! [`Runner::new_queue`]), so its shutdown accounts for them too: a request
//! that finishes before the deadline has its tasks run, and the tasks of one
//! still in flight at the deadline are abandoned and named in the
//! [`ShutdownReport`](afterward::ShutdownReport), like those of cancelled
//! drains. After that, the connections still open can simply be dropped
//! (returning from `main` does it): whatever they hand over from then on,
//! such as a task a stuck handler adds later, is refused and logged with
//! its name at once.
//!
//! ```
//! # use std::convert::Infallible;
//! # use std::time::Duration;
//! # use afterward::{Runner, TaskQueue};
//! # use afterward_hyper::TaskService;
//! # use http_body_util::Empty;
//! # use hyper::body::{Bytes, Incoming};
//! # use hyper::{Request, Response};
//! # use hyper_util::rt::{TokioExecutor, TokioIo};
//! # use hyper_util::server::conn::auto;
//! use hyper_util::server::graceful::GracefulShutdown;
//! # use tokio::net::TcpListener;
//! # async fn handler(_: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
//! #     Ok(Response::new(Empty::new()))
//! # }
//! # #[tokio::main]
//! # async fn main() -> std::io::Result<()> {
//! # let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let runner = Runner::new();
//! let service = TaskService::new(hyper::service::service_fn(handler), runner.clone());
//! let graceful = GracefulShutdown::new();
//! let stop = tokio::time::sleep(Duration::from_millis(10)); // or ctrl_c()
//! tokio::pin!(stop);
//!
//! loop {
//!     tokio::select! {
//!         Ok((stream, _)) = listener.accept() => {
//!             let conn = auto::Builder::new(TokioExecutor::new())
//!                 .serve_connection_with_upgrades(TokioIo::new(stream), service.clone())
//!                 .into_owned();
//!             let conn = graceful.watch(conn);
//!             tokio::spawn(conn);
//!         }
//!         _ = &mut stop => break,
//!     }
//! }
//! drop(listener);
//! // 1. Connections: finish the requests in flight, close idle ones. Some
//! //    may still be open when this gives up.
//! let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
//! // 2. Tasks: finish what fits in the deadline, including the tasks of
//! //    requests that finish meanwhile; the report names the rest, those of
//! //    requests still in flight included.
//! let report = runner.shutdown(Duration::from_secs(10)).await;
//! assert_eq!(report.abandoned(), 0);
//! // 3. Returning drops the connections still open.
//! # Ok(())
//! # }
//! ```
//!
//! # Where things are
//!
//! The adapter follows the protocol of [`afterward::adapter`]; its files,
//! from the bottom up:
//!
//! | file | holds |
//! |---|---|
//! | `grpc_web.rs` | a gRPC-Web body's trailer frame, read as it passes |
//! | `outcome.rs` | a response's outcome from its status and `grpc-status` |
//! | `body.rs` | [`TaskBody`]: when a response is complete; the hand-off when hyper drops it |
//! | `service.rs` | [`TaskService`]: a queue per request, the handler's result, the body wrapped |
//! | `layer.rs` | [`TaskLayer`] for tower stacks (feature `tower`) |
//!
//! # Feature flags
//!
//! | feature | enables |
//! |---|---|
//! | `tower` | [`TaskLayer`], and tower's `Service` for [`TaskService`] (for tower stacks and axum) |
//! | `axum` | `tower`, and [`TaskQueue`] as an axum extractor: a handler takes `tasks: TaskQueue` |

#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod grpc_web;
#[cfg(feature = "tower")]
mod layer;
mod outcome;
mod service;

pub use crate::body::TaskBody;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use crate::layer::TaskLayer;
pub use crate::service::{ResponseFuture, TaskService};

pub use afterward::{DisconnectPolicy, Runner, TaskQueue};

// The README's examples are compiled as doctests, so it stays true. They use
// axum's extractor, hence the feature.
#[cfg(all(doctest, feature = "axum"))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
