//! `TaskQueue` as an axum extractor, over a real socket: a handler takes the
//! queue directly; without `TaskLayer` it gets a 500 that names the layer,
//! and `Option<TaskQueue>` gets `None`.
#![cfg(feature = "axum")]

mod common;

use afterward::TaskQueue;
use afterward_hyper::TaskLayer;
use axum::Router;
use axum::routing::get;
use common::*;

async fn serve_axum(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_takes_the_queue_directly() {
    let (runner, mut probes, events, sender, e) = fixture();
    let handler = move |tasks: TaskQueue| {
        record_task(&tasks, &e, "welcome", sender.probe("welcome"));
        async { "registered" }
    };
    let app = Router::new()
        .route("/register", get(handler))
        .layer(TaskLayer::new(runner.clone()));
    let addr = serve_axum(app).await;
    for proto in BOTH {
        let mut client = Client::connect(addr, proto).await;
        let (response, body) = client.get("/register").await;
        assert_eq!(response.status(), 200);
        assert_eq!(body, "registered");
        assert_eq!(probes.settled().await, "welcome");
    }
    runner.wait_idle().await;
    assert_eq!(runner.stats().completed(), 2);
    assert_eq!(events.list(), ["task welcome", "task welcome"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_layer_the_extractor_answers_500_naming_it() {
    async fn register(tasks: TaskQueue) -> &'static str {
        tasks.add_task(|| (), ());
        "registered"
    }
    let app = Router::new().route("/register", get(register));
    let addr = serve_axum(app).await;
    let mut client = Client::connect(addr, Proto::H1).await;
    let (response, body) = client.get("/register").await;
    assert_eq!(response.status(), 500);
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.contains("TaskLayer"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_queue_is_none_without_the_layer_and_some_with_it() {
    async fn maybe(tasks: Option<TaskQueue>) -> &'static str {
        match tasks {
            Some(_) => "queue",
            None => "no queue",
        }
    }
    let runner = afterward::Runner::new();
    let app = Router::new()
        .route("/with", get(maybe))
        .layer(TaskLayer::new(runner))
        .route("/without", get(maybe));
    let addr = serve_axum(app).await;
    let mut client = Client::connect(addr, Proto::H1).await;
    assert_eq!(client.get("/with").await.1, "queue");
    assert_eq!(client.get("/without").await.1, "no queue");
}
