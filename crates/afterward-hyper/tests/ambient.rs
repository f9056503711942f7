//! `TaskQueue::current()` inside a `TaskService` handler: the request's own
//! queue, never another's, and nothing outside the handler.

mod common;

use std::sync::Arc;
use std::time::Duration;

use afterward::{Runner, TaskQueue};
use afterward_hyper::TaskService;
use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::sync::{Barrier, mpsc};

/// Code deep in a call stack: no request in hand.
fn record(line: String) {
    let tasks = TaskQueue::current().expect("inside a handler");
    tasks.add_task(|| (), ()).name(line);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_handlers_each_see_their_own_queue() {
    assert!(TaskQueue::current().is_none(), "outside any handler");
    for proto in BOTH {
        let runner = Runner::new();
        // Both handlers are in flight at once, across an await.
        let barrier = Arc::new(Barrier::new(2));
        let service = TaskService::new(
            service_fn(move |req: Request<Incoming>| {
                let barrier = barrier.clone();
                async move {
                    let id = req.uri().path().trim_start_matches('/').to_owned();
                    record(format!("before {id}"));
                    barrier.wait().await;
                    record(format!("after {id}"));
                    let names = TaskQueue::current().unwrap().task_names();
                    assert_eq!(names, queue_of(&req).task_names());
                    let body = names.join(",");
                    Ok::<_, BoxError>(Response::new(Full::new(Bytes::from(body))))
                }
            }),
            runner.clone(),
        );
        let (addr, _server) = serve(service).await;
        let (mut a, mut b) = (
            Client::connect(addr, proto).await,
            Client::connect(addr, proto).await,
        );
        let (ra, rb) = tokio::join!(a.get("/a"), b.get("/b"));
        assert_eq!(ra.1, "before a,after a", "{proto:?}");
        assert_eq!(rb.1, "before b,after b", "{proto:?}");
        runner.wait_idle().await;
        assert_eq!(runner.stats().completed(), 4, "{proto:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_tasks_and_background_tasks_do_not_inherit_it() {
    for proto in BOTH {
        let runner = Runner::new();
        let (seen_tx, mut seen) = mpsc::unbounded_channel::<(&'static str, bool)>();
        let service = TaskService::new(
            service_fn(move |_req: Request<Incoming>| {
                let seen_tx = seen_tx.clone();
                async move {
                    seen_tx
                        .send(("handler", TaskQueue::current().is_some()))
                        .unwrap();
                    let spawned = seen_tx.clone();
                    tokio::spawn(async move {
                        spawned
                            .send(("spawned", TaskQueue::current().is_some()))
                            .unwrap();
                    })
                    .await
                    .unwrap();
                    let background = seen_tx.clone();
                    TaskQueue::current().unwrap().add_task(
                        move || async move {
                            background
                                .send(("background", TaskQueue::current().is_some()))
                                .unwrap();
                        },
                        (),
                    );
                    Ok::<_, BoxError>(Response::new(Full::new(Bytes::from("ok"))))
                }
            }),
            runner.clone(),
        );
        let (addr, _server) = serve(service).await;
        let mut client = Client::connect(addr, proto).await;
        assert_eq!(client.get("/").await.1, "ok");
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(
                tokio::time::timeout(Duration::from_secs(10), seen.recv())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        assert_eq!(
            got,
            [("handler", true), ("spawned", false), ("background", false)],
            "{proto:?}"
        );
        runner.wait_idle().await;
    }
}
