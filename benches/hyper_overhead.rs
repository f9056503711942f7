//! What a server pays: a real hyper server and 32 keep-alive HTTP/1 client
//! connections on 127.0.0.1, a fixed number of requests, for bare hyper,
//! `TaskService` with 0, 1 and 10 tasks, and the pattern users write today
//! (`tokio::spawn` in the handler).
//!
//! Client and server share the process and its two worker threads, so the
//! load is CPU-bound. Each round measures wall-clock throughput and the
//! process's CPU time per request (which the machine's other tenants do not
//! disturb); cases alternate round by round, and a case's ratio to its
//! baseline is the median of the per-round ratios.
//!
//! ```text
//! cargo bench --bench hyper_overhead [-- FILTER] [--quick] [--json PATH]
//! ```

#[path = "support/http_load.rs"]
mod http_load;
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;

use afterward::{Runner, TaskQueue};
use afterward_hyper::TaskService;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use http_load::Server;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::Bench;
use tokio::net::TcpListener;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Bare,
    Tasks0,
    Async1,
    Async10,
    Sync1,
    Spawn1,
    SpawnBlocking1,
}

impl Case {
    const ALL: [Case; 7] = [
        Case::Bare,
        Case::Tasks0,
        Case::Async1,
        Case::Async10,
        Case::Sync1,
        Case::Spawn1,
        Case::SpawnBlocking1,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::Bare => "bare hyper",
            Case::Tasks0 => "TaskService, 0 tasks",
            Case::Async1 => "TaskService, 1 async task",
            Case::Async10 => "TaskService, 10 async tasks",
            Case::Sync1 => "TaskService, 1 sync task",
            Case::Spawn1 => "tokio::spawn in handler",
            Case::SpawnBlocking1 => "spawn_blocking in handler",
        }
    }

    /// The baseline each case is compared with.
    fn baseline(self) -> Option<Case> {
        match self {
            Case::Bare | Case::Spawn1 | Case::SpawnBlocking1 => None,
            Case::Async1 => Some(Case::Spawn1),
            Case::Sync1 => Some(Case::SpawnBlocking1),
            _ => Some(Case::Bare),
        }
    }
}

fn ok() -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from_static(b"ok")))
}

async fn noop_async() {}
fn noop_sync() {}

async fn start(case: Case, runner: &Runner) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let runner = runner.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let io = TokioIo::new(stream);
            let http = hyper::server::conn::http1::Builder::new();
            match case {
                Case::Bare => {
                    let svc =
                        service_fn(|_req: Request<Incoming>| async { Ok::<_, Infallible>(ok()) });
                    tokio::spawn(http.serve_connection(io, svc));
                }
                Case::Spawn1 => {
                    let svc = service_fn(|_req: Request<Incoming>| async {
                        tokio::spawn(noop_async());
                        Ok::<_, Infallible>(ok())
                    });
                    tokio::spawn(http.serve_connection(io, svc));
                }
                Case::SpawnBlocking1 => {
                    let svc = service_fn(|_req: Request<Incoming>| async {
                        tokio::task::spawn_blocking(noop_sync);
                        Ok::<_, Infallible>(ok())
                    });
                    tokio::spawn(http.serve_connection(io, svc));
                }
                _ => {
                    let handler = move |req: Request<Incoming>| {
                        let queue = req.extensions().get::<TaskQueue>().unwrap();
                        let tasks = match case {
                            Case::Async1 | Case::Sync1 => 1,
                            Case::Async10 => 10,
                            _ => 0,
                        };
                        for _ in 0..tasks {
                            if case == Case::Sync1 {
                                queue.add_task(noop_sync, ());
                            } else {
                                queue.add_task(noop_async, ());
                            }
                        }
                        async { Ok::<_, Infallible>(ok()) }
                    };
                    let svc = TaskService::new(service_fn(handler), runner.clone());
                    tokio::spawn(http.serve_connection(io, svc));
                }
            }
        }
    });
    addr
}

fn main() {
    let mut bench = Bench::from_args(
        "hyper_overhead: 32 HTTP/1 keep-alive connections, 9 interleaved rounds of 12,800 requests (3 of 3,200 with --quick)",
    );
    let cases: Vec<Case> = Case::ALL
        .into_iter()
        .filter(|case| {
            bench.wants(case.name())
                || Case::ALL
                    .iter()
                    .any(|c| c.baseline() == Some(*case) && bench.wants(c.name()))
        })
        .collect();
    if cases.is_empty() {
        return;
    }
    let rt = http_load::client_runtime();
    let runner = rt.block_on(async { Runner::new() });
    let servers: Vec<Server> = rt.block_on(async {
        let mut servers = Vec::new();
        for &case in &cases {
            let addr = start(case, &runner).await;
            servers.push(Server { addr, host: false });
        }
        servers
    });
    let results = http_load::measure_all(&rt, &runner, &servers, http_load::rounds(&bench));

    let index = |case: Case| cases.iter().position(|&c| c == case);
    for (i, &case) in cases.iter().enumerate() {
        let baseline = case
            .baseline()
            .and_then(index)
            .map(|b| (cases[b].name(), &results[b]));
        http_load::report(&mut bench, case.name(), &results[i], baseline);
    }
    let stats = runner.stats();
    assert_eq!(stats.tasks_received(), stats.accounted());
    bench.finish();
}
