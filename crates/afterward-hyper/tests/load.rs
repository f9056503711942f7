//! Load and conservation: thousands of requests over many concurrent h1 and
//! h2 connections, with clients leaving mid-body and tasks that panic or
//! fail. Every task must run exactly once, the counts must add up, and a
//! shutdown must name what it abandons.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use afterward::{Runner, TaskQueue};
use afterward_hyper::TaskService;
use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::sync::{Notify, mpsc};

const CONNECTIONS: usize = 32;
const REQUESTS_PER_CONNECTION: usize = 64;
const REQUESTS: usize = CONNECTIONS * REQUESTS_PER_CONNECTION;
const TASKS_PER_REQUEST: usize = 2;

struct Ledger {
    runs: Vec<AtomicUsize>,
    started: AtomicUsize,
    all_started: Notify,
}

impl Ledger {
    fn ran(&self, task: usize) {
        self.runs[task].fetch_add(1, SeqCst);
        if self.started.fetch_add(1, SeqCst) + 1 == self.runs.len() {
            self.all_started.notify_one();
        }
    }
}

async fn checked_async(ledger: Arc<Ledger>, task: usize, panics: bool) {
    ledger.ran(task);
    tokio::task::yield_now().await;
    assert!(!panics, "task {task} panics on purpose");
}

fn checked_sync(ledger: Arc<Ledger>, task: usize, fails: bool) -> Result<(), String> {
    ledger.ran(task);
    if fails {
        return Err(format!("task {task} fails on purpose"));
    }
    Ok(())
}

/// `/{id}/{kind}`: queues two tasks for request `id`; `kind` is `ok`,
/// `panic`, `fail`, or `stream` (a body that never ends, which the client
/// abandons after its first chunk).
fn respond(req: &Request<Incoming>, queue: &TaskQueue, ledger: &Arc<Ledger>) -> Response<ResBody> {
    let mut parts = req.uri().path().trim_start_matches('/').split('/');
    let id: usize = parts.next().unwrap().parse().unwrap();
    let kind = parts.next().unwrap();
    queue.add_task(
        checked_async,
        (ledger.clone(), id * TASKS_PER_REQUEST, kind == "panic"),
    );
    queue.add_task(
        checked_sync,
        (ledger.clone(), id * TASKS_PER_REQUEST + 1, kind == "fail"),
    );
    if kind == "stream" {
        let chunks = vec![Bytes::from_static(b"first")];
        return Response::new(boxed(Chunks::new(chunks, End::Pending)));
    }
    Response::new(boxed(Full::new(Bytes::from(format!("request {id}")))))
}

fn kind_of(id: usize) -> &'static str {
    match id % 16 {
        3 => "panic",
        7 => "fail",
        11 => "stream",
        _ => "ok",
    }
}

async fn run_connection(addr: std::net::SocketAddr, proto: Proto, first_id: usize) {
    let mut client = Client::connect(addr, proto).await;
    for id in first_id..first_id + REQUESTS_PER_CONNECTION {
        let kind = kind_of(id);
        let response = client.send("GET", &format!("/{id}/{kind}")).await.unwrap();
        let mut body = response.into_body();
        if kind == "stream" {
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(first, "first");
            drop(body);
            if proto == Proto::H1 {
                // An h1 connection cannot be reused mid-body: hang up and dial
                // again, as a browser would.
                client.disconnect();
                client = Client::connect(addr, proto).await;
            }
            continue;
        }
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, format!("request {id}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_requests_conserve_every_task() {
    let runner = Runner::builder().max_concurrent_drains(16).build();
    let ledger = Arc::new(Ledger {
        runs: (0..REQUESTS * TASKS_PER_REQUEST)
            .map(|_| AtomicUsize::new(0))
            .collect(),
        started: AtomicUsize::new(0),
        all_started: Notify::new(),
    });
    let l = ledger.clone();
    let handler = move |req: Request<Incoming>| {
        let response = respond(&req, &queue_of(&req), &l);
        async move { Ok::<_, BoxError>(response) }
    };
    let (addr, _server) = serve(TaskService::new(service_fn(handler), runner.clone())).await;

    let mut clients = Vec::new();
    for connection in 0..CONNECTIONS {
        let proto = if connection % 2 == 0 {
            Proto::H1
        } else {
            Proto::H2
        };
        clients.push(tokio::spawn(run_connection(
            addr,
            proto,
            connection * REQUESTS_PER_CONNECTION,
        )));
    }
    for client in clients {
        client.await.unwrap();
    }

    // Disconnected bodies are dropped by the server when it notices, which
    // may be after the clients are done: wait for every task, then for idle.
    tokio::time::timeout(Duration::from_secs(60), ledger.all_started.notified())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "only {} of {} tasks started",
                ledger.started.load(SeqCst),
                REQUESTS * TASKS_PER_REQUEST
            )
        });
    runner.wait_idle().await;

    for (task, runs) in ledger.runs.iter().enumerate() {
        assert_eq!(runs.load(SeqCst), 1, "task {task} ran {runs:?} times");
    }
    let stats = runner.stats();
    let per_kind = REQUESTS / 16;
    assert_eq!(
        stats.tasks_received(),
        REQUESTS * TASKS_PER_REQUEST,
        "{stats:?}"
    );
    assert_eq!(stats.panicked(), per_kind, "{stats:?}");
    assert_eq!(stats.failed(), per_kind, "{stats:?}");
    assert_eq!(
        stats.completed(),
        REQUESTS * TASKS_PER_REQUEST - 2 * per_kind
    );
    assert_eq!(stats.tasks_received(), stats.accounted(), "{stats:?}");

    // The server still answers.
    let mut client = Client::connect(addr, Proto::H2).await;
    let (_, body) = client.get(&format!("/{}/ok", 0)).await;
    assert_eq!(body, "request 0");
}

async fn stuck_upload_scan(started: mpsc::UnboundedSender<()>) {
    started.send(()).unwrap();
    std::future::pending::<()>().await;
}

fn never_reached_thumbnail() {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_names_the_abandoned_tasks_and_conserves() {
    let runner = Runner::builder().max_concurrent_drains(4).build();
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<()>();
    let completed = Arc::new(AtomicUsize::new(0));
    let c = completed.clone();
    let handler = move |req: Request<Incoming>| {
        let queue = queue_of(&req);
        let c = c.clone();
        queue.add_task(
            move || {
                c.fetch_add(1, SeqCst);
            },
            (),
        );
        if req.uri().path() == "/stuck" {
            queue.add_task(stuck_upload_scan, (started_tx.clone(),));
            queue.add_task(never_reached_thumbnail, ());
        }
        async { Ok::<_, BoxError>(Response::new(boxed(Full::new(Bytes::from_static(b"ok"))))) }
    };
    let (addr, _server) = serve(TaskService::new(service_fn(handler), runner.clone())).await;

    let mut clients = Vec::new();
    for connection in 0..8 {
        clients.push(tokio::spawn(async move {
            let proto = if connection % 2 == 0 {
                Proto::H1
            } else {
                Proto::H2
            };
            let mut client = Client::connect(addr, proto).await;
            for i in 0..25 {
                let path = if connection < 2 && i == 0 {
                    "/stuck"
                } else {
                    "/ok"
                };
                client.get(path).await;
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    started_rx.recv().await.unwrap();
    started_rx.recv().await.unwrap();

    let report = runner.shutdown(Duration::from_millis(200)).await;
    let mut names = report.abandoned_tasks().to_vec();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "never_reached_thumbnail",
            "never_reached_thumbnail",
            "stuck_upload_scan",
            "stuck_upload_scan",
        ]
    );
    let stats = runner.stats();
    assert_eq!(stats.abandoned(), 4, "{stats:?}");
    assert_eq!(stats.completed(), 200, "{stats:?}");
    assert_eq!(completed.load(SeqCst), 200);
    assert_eq!(stats.tasks_received(), 204);
    assert_eq!(stats.tasks_received(), stats.accounted(), "{stats:?}");
}
