//! `TaskLayer::backpressure` in an axum app over a real socket: a full
//! backlog turns into 503s behind `tower::load_shed`, and into waiting
//! behind `tower::buffer`; no task is refused either way.
#![cfg(feature = "axum")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use afterward::{Runner, TaskQueue};
use afterward_hyper::TaskLayer;
use axum::error_handling::HandleErrorLayer;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{BoxError, Router};
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{Semaphore, mpsc};
use tower::ServiceBuilder;

/// One drain slot and room for two waiting tasks; each request queues a
/// task that waits at `gate`. The first request's task says when it runs.
struct Setup {
    runner: Runner,
    gate: Arc<Semaphore>,
    handled: Arc<AtomicUsize>,
    started: mpsc::UnboundedReceiver<()>,
    route: Router,
}

fn setup() -> Setup {
    let runner = Runner::builder()
        .max_concurrent_drains(1)
        .max_backlog(2)
        .build();
    let gate = Arc::new(Semaphore::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let (started_tx, started) = mpsc::unbounded_channel();
    let (g, h) = (gate.clone(), handled.clone());
    let handler = move |tasks: TaskQueue| {
        let (gate, started) = (g.clone(), started_tx.clone());
        h.fetch_add(1, SeqCst);
        async move {
            tasks.add_task(
                move || async move {
                    let _ = started.send(());
                    let _ = gate.acquire().await.unwrap();
                },
                (),
            );
            "queued"
        }
    };
    Setup {
        runner,
        gate,
        handled,
        started,
        route: Router::new().route("/work", get(handler)),
    }
}

async fn serve_axum(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Fills the backlog over one HTTP/1 connection: hyper hands a finished
/// response's queue over before it reads the next request on it, so each
/// request sees the backlog the previous ones left.
async fn fill_backlog(client: &mut Client, s: &mut Setup) {
    let (response, _) = client.get("/work").await;
    assert_eq!(response.status(), 200);
    s.started.recv().await.unwrap();
    for _ in 0..2 {
        let (response, _) = client.get("/work").await;
        assert_eq!(response.status(), 200);
    }
    let stats = s.runner.stats();
    assert_eq!(
        (stats.drains_running(), stats.drains_waiting()),
        (1, 2),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_answers_503_behind_load_shed() {
    let mut s = setup();
    let app = s.route.clone().layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: BoxError| async {
                StatusCode::SERVICE_UNAVAILABLE
            }))
            .load_shed()
            .layer(TaskLayer::new(s.runner.clone()).backpressure(true)),
    );
    let addr = serve_axum(app).await;
    let mut client = Client::connect(addr, Proto::H1).await;
    fill_backlog(&mut client, &mut s).await;

    let (response, _) = client.get("/work").await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        s.handled.load(SeqCst),
        3,
        "the shed request reached its handler"
    );

    s.gate.add_permits(3);
    s.runner.wait_idle().await;
    let (response, _) = client.get("/work").await;
    assert_eq!(response.status(), 200);
    s.gate.add_permits(1);
    s.runner.wait_idle().await;
    let stats = s.runner.stats();
    assert_eq!((stats.completed(), stats.rejected()), (4, 0), "{stats:?}");
    assert_eq!(stats.tasks_received(), stats.accounted(), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_makes_requests_wait_behind_buffer() {
    let mut s = setup();
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let app = s.route.clone().layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: BoxError| async {
                StatusCode::INTERNAL_SERVER_ERROR
            }))
            .map_request(move |req: http::Request<axum::body::Body>| {
                let _ = arrived_tx.send(());
                req
            })
            .buffer(8)
            .layer(TaskLayer::new(s.runner.clone()).backpressure(true)),
    );
    let addr = serve_axum(app).await;
    let mut client = Client::connect(addr, Proto::H1).await;
    fill_backlog(&mut client, &mut s).await;
    for _ in 0..3 {
        arrived.recv().await.unwrap();
    }

    // A fourth request, on a connection of its own, waits in the buffer.
    let fourth = tokio::spawn(async move {
        let mut client = Client::connect(addr, Proto::H2).await;
        client.get("/work").await.0.status()
    });
    arrived.recv().await.unwrap();
    assert_eq!(s.handled.load(SeqCst), 3, "the request did not wait");

    s.gate.add_permits(4);
    assert_eq!(fourth.await.unwrap(), 200);
    s.runner.wait_idle().await;
    let stats = s.runner.stats();
    assert_eq!((stats.completed(), stats.rejected()), (4, 0), "{stats:?}");
    assert_eq!(stats.tasks_received(), stats.accounted(), "{stats:?}");
}

/// Serves `/tasks/N` (N tasks of a few milliseconds each), wrapped by
/// `wrap`, with one drain slot and room for one waiting task.
async fn burst_server(
    wrap: impl FnOnce(Router, Runner) -> Router,
) -> (Runner, std::net::SocketAddr) {
    let runner = Runner::builder()
        .max_concurrent_drains(1)
        .max_backlog(1)
        .build();
    let handler = |Path(n): Path<usize>, tasks: TaskQueue| async move {
        for _ in 0..n {
            tasks.add_task(|| tokio::time::sleep(Duration::from_millis(2)), ());
        }
        "queued"
    };
    let route = Router::new().route("/tasks/{n}", get(handler));
    let addr = serve_axum(wrap(route, runner.clone())).await;
    (runner, addr)
}

/// Sends `requests` requests at once over one HTTP/2 connection and reads
/// every response; returns their statuses.
async fn burst(addr: std::net::SocketAddr, requests: usize, path: &str) -> Vec<u16> {
    let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut sent = tokio::task::JoinSet::new();
    for _ in 0..requests {
        let mut sender = sender.clone();
        let req = http::Request::get(format!("http://{addr}{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        sent.spawn(async move {
            let response = sender.send_request(req).await.unwrap();
            let status = response.status().as_u16();
            response.into_body().collect().await.unwrap();
            status
        });
    }
    sent.join_all().await
}

fn buffered(route: Router, runner: Runner) -> Router {
    route.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: BoxError| async {
                StatusCode::INTERNAL_SERVER_ERROR
            }))
            .buffer(64)
            .layer(TaskLayer::new(runner).backpressure(true)),
    )
}

/// `tower::buffer` calls `poll_ready` and `call` back to back: readiness
/// must be room reserved for that call, or a burst passes the check and its
/// tasks are refused at hand-off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_behind_buffer_waits_and_loses_no_task() {
    let (runner, addr) = burst_server(buffered).await;
    let statuses = burst(addr, 8, "/tasks/1").await;
    assert_eq!(statuses, [200; 8]);
    runner.wait_idle().await;
    let stats = runner.stats();
    assert_eq!((stats.completed(), stats.rejected()), (8, 0), "{stats:?}");
    assert_eq!(stats.tasks_received(), stats.accounted(), "{stats:?}");
}

/// Readiness is room for a request, whatever the number of tasks it
/// queues: a request of five tasks let in is never refused as a whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_of_several_tasks_behind_buffer_lose_none() {
    let (runner, addr) = burst_server(buffered).await;
    let statuses = burst(addr, 8, "/tasks/5").await;
    assert_eq!(statuses, [200; 8]);
    runner.wait_idle().await;
    let stats = runner.stats();
    assert_eq!((stats.completed(), stats.rejected()), (40, 0), "{stats:?}");
    assert_eq!(stats.tasks_received(), stats.accounted(), "{stats:?}");
}

/// Behind `load_shed`, each request of a burst is answered 200 (its tasks
/// taken) or 503 (before its handler ran): no task is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_behind_load_shed_is_served_or_shed_and_loses_no_task() {
    let (runner, addr) = burst_server(|route, runner| {
        route.layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    StatusCode::SERVICE_UNAVAILABLE
                }))
                .load_shed()
                .layer(TaskLayer::new(runner).backpressure(true)),
        )
    })
    .await;
    let statuses = burst(addr, 400, "/tasks/2").await;
    let served = statuses.iter().filter(|&&s| s == 200).count();
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 503),
        "{statuses:?}"
    );
    assert!(served > 0);
    runner.wait_idle().await;
    let stats = runner.stats();
    assert_eq!(
        (stats.completed(), stats.rejected()),
        (2 * served, 0),
        "{stats:?}"
    );
    assert_eq!(stats.tasks_received(), stats.accounted(), "{stats:?}");
}
