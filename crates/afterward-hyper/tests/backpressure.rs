//! `TaskLayer::backpressure` in an axum app over a real socket: a full
//! backlog turns into 503s behind `tower::load_shed`, and into waiting
//! behind `tower::buffer`; no task is refused either way.
#![cfg(feature = "axum")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use afterward::{Runner, TaskQueue};
use afterward_hyper::TaskLayer;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{BoxError, Router};
use common::*;
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
