//! `TaskLayer` in a tower `ServiceBuilder` and an axum `Router`.
#![cfg(feature = "tower")]

mod common;

use afterward::TaskQueue;
use afterward_hyper::{DisconnectPolicy, TaskLayer};
use axum::extract::Path;
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::service::TowerToHyperService;
use tower::ServiceBuilder;

async fn serve_axum(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_handler_queues_tasks_through_the_extension() {
    let (runner, mut probes, events, sender, e) = fixture();
    let register = move |Path(user): Path<String>, Extension(tasks): Extension<TaskQueue>| {
        let (sender, e) = (sender.clone(), e.clone());
        async move {
            e.push(format!("handler {user}"));
            let probe = sender.probe("welcome");
            tasks.add_task(
                move |user: String| {
                    let _probe = probe;
                    e.push(format!("welcome email to {user}"));
                },
                (user,),
            );
            "registered"
        }
    };
    let app = Router::new()
        .route("/register/{user}", get(register))
        .layer(TaskLayer::new(runner.clone()).on_disconnect(DisconnectPolicy::Skip));
    let addr = serve_axum(app).await;

    for proto in BOTH {
        let mut client = Client::connect(addr, proto).await;
        let (response, body) = client.get("/register/ada").await;
        assert_eq!(response.status(), 200);
        assert_eq!(body, "registered");
        assert_eq!(probes.settled().await, "welcome");
    }
    runner.wait_idle().await;
    let stats = runner.stats();
    assert_eq!((stats.completed(), stats.skipped()), (2, 0), "{stats:?}");
    assert_eq!(
        events.list(),
        [
            "handler ada",
            "welcome email to ada",
            "handler ada",
            "welcome email to ada"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_stacked_twice_in_axum_runs_tasks_once() {
    let (runner, mut probes, events, sender, e) = fixture();
    let handler = move |Extension(tasks): Extension<TaskQueue>| {
        record_task(&tasks, &e, "once", sender.probe("once"));
        async { "ok" }
    };
    let app = Router::new()
        .route("/", get(handler))
        .layer(TaskLayer::new(runner.clone()))
        .layer(TaskLayer::new(runner.clone()));
    let addr = serve_axum(app).await;
    let mut client = Client::connect(addr, Proto::H1).await;
    client.get("/").await;
    probes.settled().await;
    runner.wait_idle().await;
    assert_eq!(runner.stats().tasks_received(), 1);
    assert_eq!(events.list(), ["task once"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_works_in_a_tower_service_builder() {
    let (runner, mut probes, events, sender, e) = fixture();
    let service = ServiceBuilder::new()
        .layer(TaskLayer::new(runner.clone()).on_disconnect(DisconnectPolicy::Skip))
        .service_fn(move |req: Request<Incoming>| {
            record_task(&queue_of(&req), &e, "tower", sender.probe("tower"));
            async { Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
        });
    let (addr, _server) = serve(TowerToHyperService::new(service)).await;
    for proto in BOTH {
        let mut client = Client::connect(addr, proto).await;
        let (response, body) = client.get("/").await;
        assert_eq!(response.headers()["content-length"], "2");
        assert_eq!(body, "ok");
        probes.settled().await;
    }
    runner.wait_idle().await;
    assert_eq!(runner.stats().completed(), 2);
    assert_eq!(events.list(), ["task tower", "task tower"]);
}
