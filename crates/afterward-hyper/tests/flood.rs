//! A flood faster than the tasks, over real h1 and h2 connections, against
//! a runner with a backlog bound: every request is answered, the overflow
//! is counted `rejected`, the heap stays flat, and the counts add up.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use afterward::Runner;
use afterward_hyper::TaskService;
use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::sync::watch;

/// Counts the heap of this test binary, every thread included.
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const CONNECTIONS: usize = 16;
const REQUESTS: usize = 20_000;
const MAX_BACKLOG: usize = 500;
/// What each task holds while it waits: without a bound, 20,000 of them
/// would be 80 MB.
const PAYLOAD: usize = 4 << 10;

async fn deliver_webhook(payload: Vec<u8>) {
    tokio::time::sleep(Duration::from_millis(1)).await;
    drop(payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_with_a_bounded_backlog_answers_everyone_and_keeps_memory_flat() {
    let runner = Runner::builder()
        .max_concurrent_drains(2)
        .max_backlog(MAX_BACKLOG)
        .build();
    let handler = |req: Request<Incoming>| {
        queue_of(&req).add_task(deliver_webhook, (vec![7_u8; PAYLOAD],));
        async { Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"accepted")))) }
    };
    let (addr, _server) = serve(TaskService::new(service_fn(handler), runner.clone())).await;
    // Connections and the runtime's buffers warm up before the baseline.
    let mut client = Client::connect(addr, Proto::H1).await;
    client.get("/").await;
    runner.wait_idle().await;
    let region = Region::new(GLOBAL);

    let answered = Arc::new(AtomicUsize::new(0));
    let (progress_tx, mut progress) = watch::channel(0);
    let mut clients = Vec::new();
    for connection in 0..CONNECTIONS {
        let (answered, progress_tx) = (answered.clone(), progress_tx.clone());
        clients.push(tokio::spawn(async move {
            let mut client = Client::connect(addr, BOTH[connection % 2]).await;
            for _ in 0..REQUESTS / CONNECTIONS {
                let (response, body) = client.get("/").await;
                assert_eq!(response.status(), 200);
                assert_eq!(body, "accepted");
                let n = answered.fetch_add(1, SeqCst) + 1;
                progress_tx.send_replace(n);
            }
        }));
    }
    // The heap at each quarter of the flood: the backlog bound keeps it
    // from growing with the number of requests.
    let mut growth = Vec::new();
    for quarter in 1..=4 {
        progress
            .wait_for(|n| *n >= quarter * REQUESTS / 4)
            .await
            .unwrap();
        let change = region.change();
        growth.push(change.bytes_allocated as i64 - change.bytes_deallocated as i64);
        println!(
            "after {} requests: {} bytes more",
            quarter * REQUESTS / 4,
            growth[growth.len() - 1]
        );
    }
    for client in clients {
        client.await.unwrap();
    }
    let limit = (MAX_BACKLOG * PAYLOAD * 4) as i64;
    assert!(
        growth.iter().all(|bytes| *bytes < limit),
        "heap growth at each quarter {growth:?} bytes, limit {limit}"
    );

    runner.wait_idle().await;
    let stats = runner.stats();
    assert_eq!(answered.load(SeqCst), REQUESTS);
    assert_eq!(stats.tasks_received(), REQUESTS + 1, "{stats:?}");
    assert!(
        stats.rejected() > 0,
        "the flood never reached the bound: {stats:?}"
    );
    assert_eq!(
        stats.completed() + stats.rejected(),
        stats.tasks_received(),
        "{stats:?}"
    );
    assert_eq!(stats.tasks_received(), stats.accounted(), "{stats:?}");
}
