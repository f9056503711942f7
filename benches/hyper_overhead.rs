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

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use afterward::{Runner, TaskQueue};
use afterward_hyper::TaskService;
use bytes::Bytes;
use cpu_time::ProcessTime;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::{Bench, Sample, allocations, percentile};
use tokio::net::{TcpListener, TcpStream};

const CONNECTIONS: usize = 32;

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

/// One round: `requests` requests over `CONNECTIONS` connections. Returns
/// the requests per second, the latency of every request in µs, and the
/// allocations made on all threads.
async fn round(addr: SocketAddr, requests: usize) -> (f64, Vec<f64>) {
    let per_connection = requests / CONNECTIONS;
    let mut senders = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        senders.push(sender);
    }
    let started = Instant::now();
    let clients: Vec<_> = senders
        .into_iter()
        .map(|mut sender| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_connection);
                for _ in 0..per_connection {
                    let req = Request::get("/").body(Empty::<Bytes>::new()).unwrap();
                    let start = Instant::now();
                    sender.ready().await.unwrap();
                    let response = sender.send_request(req).await.unwrap();
                    response.into_body().collect().await.unwrap();
                    latencies.push(start.elapsed().as_secs_f64() * 1e6);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    for client in clients {
        latencies.extend(client.await.unwrap());
    }
    let elapsed = started.elapsed();
    (
        (per_connection * CONNECTIONS) as f64 / elapsed.as_secs_f64(),
        latencies,
    )
}

struct Results {
    throughput: Vec<f64>,
    /// Requests per second of process CPU time.
    cpu_throughput: Vec<f64>,
    latencies: Vec<f64>,
    allocs_per_request: Vec<f64>,
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
    let (rounds, requests) = if bench.quick { (3, 3_200) } else { (9, 12_800) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runner = rt.block_on(async { Runner::new() });
    let servers: Vec<(Case, SocketAddr)> = rt.block_on(async {
        let mut servers = Vec::new();
        for &case in &cases {
            servers.push((case, start(case, &runner).await));
        }
        servers
    });
    // Warm-up: connections, allocator pools, the blocking pool.
    for &(_, addr) in &servers {
        rt.block_on(round(addr, CONNECTIONS * 8));
    }
    rt.block_on(runner.wait_idle());

    let mut results: Vec<Results> = cases
        .iter()
        .map(|_| Results {
            throughput: Vec::new(),
            cpu_throughput: Vec::new(),
            latencies: Vec::new(),
            allocs_per_request: Vec::new(),
        })
        .collect();
    // Cases take turns, round by round, so that drift on a shared machine
    // affects them alike.
    for _ in 0..rounds {
        for (i, &(_, addr)) in servers.iter().enumerate() {
            let cpu = ProcessTime::now();
            let ((per_second, latencies), allocs) = allocations(|| {
                let result = rt.block_on(round(addr, requests));
                // Tasks still queued belong to this round's cost.
                rt.block_on(runner.wait_idle());
                result
            });
            let cpu = cpu.elapsed().as_secs_f64();
            results[i].throughput.push(per_second);
            results[i].cpu_throughput.push(requests as f64 / cpu);
            results[i].latencies.extend(latencies);
            results[i]
                .allocs_per_request
                .push(allocs as f64 / requests as f64);
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let index = |case: Case| cases.iter().position(|&c| c == case);
    for (i, &case) in cases.iter().enumerate() {
        let name = case.name();
        let base = case.baseline().and_then(index);
        let r = &results[i];
        let mut latencies = r.latencies.clone();
        latencies.sort_by(f64::total_cmp);
        let allocs = Sample::new(r.allocs_per_request.clone());
        let p50 = Sample::new(vec![percentile(&latencies, 50.0)]);
        let p99 = Sample::new(vec![percentile(&latencies, 99.0)]);
        match base {
            Some(b) => {
                let (base_name, base) = (cases[b].name(), &results[b]);
                bench.report_paired_higher(
                    &format!("{name}: throughput"),
                    "req/s",
                    &r.throughput,
                    (base_name, &base.throughput),
                );
                bench.report_paired_higher(
                    &format!("{name}: throughput per CPU-second"),
                    "req/s",
                    &r.cpu_throughput,
                    (base_name, &base.cpu_throughput),
                );
                let mut base_latencies = base.latencies.clone();
                base_latencies.sort_by(f64::total_cmp);
                let base_p50 = Sample::new(vec![percentile(&base_latencies, 50.0)]);
                let base_p99 = Sample::new(vec![percentile(&base_latencies, 99.0)]);
                let base_allocs = Sample::new(base.allocs_per_request.clone());
                bench.report(
                    &format!("{name}: p50 latency"),
                    "µs",
                    &p50,
                    Some((base_name, &base_p50)),
                );
                bench.report(
                    &format!("{name}: p99 latency"),
                    "µs",
                    &p99,
                    Some((base_name, &base_p99)),
                );
                bench.report(
                    &format!("{name}: allocations per request"),
                    "allocs",
                    &allocs,
                    Some((base_name, &base_allocs)),
                );
            }
            None => {
                let throughput = Sample::new(r.throughput.clone());
                let cpu_throughput = Sample::new(r.cpu_throughput.clone());
                bench.report_higher(&format!("{name}: throughput"), "req/s", &throughput, None);
                bench.report_higher(
                    &format!("{name}: throughput per CPU-second"),
                    "req/s",
                    &cpu_throughput,
                    None,
                );
                bench.report(&format!("{name}: p50 latency"), "µs", &p50, None);
                bench.report(&format!("{name}: p99 latency"), "µs", &p99, None);
                bench.report(
                    &format!("{name}: allocations per request"),
                    "allocs",
                    &allocs,
                    None,
                );
            }
        }
    }
    let stats = runner.stats();
    assert_eq!(stats.tasks_received(), stats.accounted());
    bench.finish();
}
