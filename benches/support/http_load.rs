//! Load for the benches that compare a server with and without one of
//! afterward's adapters: 32 keep-alive HTTP/1 connections on 127.0.0.1,
//! rounds of a fixed number of requests measured by wall clock, by the
//! process's CPU time (which the machine's other tenants do not disturb)
//! and in allocations, and the report of a case against its baseline.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use afterward::Runner;
use bytes::Bytes;
use cpu_time::ProcessTime;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

use crate::support::{Bench, Sample, allocations, percentile};

pub const CONNECTIONS: usize = 32;

/// The clients' runtime: two threads, as many as this machine has cores.
pub fn client_runtime() -> Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    builder.build().expect("a tokio runtime")
}

/// How many rounds, of how many requests each.
pub fn rounds(bench: &Bench) -> (usize, usize) {
    if bench.quick { (3, 3_200) } else { (9, 12_800) }
}

/// Warms each server up, then measures `rounds` rounds of `requests`
/// requests to each. Servers take turns, round by round, so that drift on a
/// shared machine affects them alike. Returns each server's figures.
pub fn measure_all(
    rt: &Runtime,
    runner: &Runner,
    servers: &[Server],
    (rounds, requests): (usize, usize),
) -> Vec<Load> {
    // Warm-up: connections, allocator pools, the blocking pool.
    for &server in servers {
        rt.block_on(round(server, CONNECTIONS * 8));
    }
    rt.block_on(runner.wait_idle());
    let mut loads: Vec<Load> = servers.iter().map(|_| Load::default()).collect();
    for _ in 0..rounds {
        for (load, &server) in loads.iter_mut().zip(servers) {
            load.measure(rt, runner, server, requests);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    loads
}

/// One case's figures, one per round (latencies: one per request).
#[derive(Default)]
pub struct Load {
    pub throughput: Vec<f64>,
    /// Requests per second of process CPU time.
    pub cpu_throughput: Vec<f64>,
    pub latencies: Vec<f64>,
    pub allocs_per_request: Vec<f64>,
}

impl Load {
    /// One round of `requests` requests to `server`, measured into `self`.
    /// Tasks still queued when the last response arrives belong to the
    /// round's cost: it ends when `runner` is idle.
    pub fn measure(&mut self, rt: &Runtime, runner: &Runner, server: Server, requests: usize) {
        let cpu = ProcessTime::now();
        let ((per_second, latencies), allocs) = allocations(|| {
            let result = rt.block_on(round(server, requests));
            rt.block_on(runner.wait_idle());
            result
        });
        let cpu = cpu.elapsed().as_secs_f64();
        self.throughput.push(per_second);
        self.cpu_throughput.push(requests as f64 / cpu);
        self.latencies.extend(latencies);
        self.allocs_per_request
            .push(allocs as f64 / requests as f64);
    }

    fn latency(&self, p: f64) -> Sample {
        let mut latencies = self.latencies.clone();
        latencies.sort_by(f64::total_cmp);
        Sample::new(vec![percentile(&latencies, p)])
    }
}

/// Where the requests go.
#[derive(Clone, Copy)]
pub struct Server {
    pub addr: SocketAddr,
    /// Whether requests carry a `Host` header: actix-web refuses HTTP/1.1
    /// requests without one; the hyper bench's figures were measured
    /// without.
    pub host: bool,
}

/// `requests` requests over `CONNECTIONS` new connections. Returns the
/// requests per second and the latency of every request in µs.
pub async fn round(server: Server, requests: usize) -> (f64, Vec<f64>) {
    let per_connection = requests / CONNECTIONS;
    let mut senders = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let stream = TcpStream::connect(server.addr).await.unwrap();
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
                    let mut req = Request::get("/");
                    if server.host {
                        req = req.header("host", "localhost");
                    }
                    let req = req.body(Empty::<Bytes>::new()).unwrap();
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

/// Reports throughput (by wall clock and per CPU-second), latency and
/// allocations of the case `name`, against its baseline if it has one: the
/// throughput ratios are medians of per-round ratios.
pub fn report(bench: &mut Bench, name: &str, load: &Load, baseline: Option<(&str, &Load)>) {
    let allocs = Sample::new(load.allocs_per_request.clone());
    let (p50, p99) = (load.latency(50.0), load.latency(99.0));
    let Some((base_name, base)) = baseline else {
        let throughput = Sample::new(load.throughput.clone());
        let cpu_throughput = Sample::new(load.cpu_throughput.clone());
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
        return;
    };
    bench.report_paired_higher(
        &format!("{name}: throughput"),
        "req/s",
        &load.throughput,
        (base_name, &base.throughput),
    );
    bench.report_paired_higher(
        &format!("{name}: throughput per CPU-second"),
        "req/s",
        &load.cpu_throughput,
        (base_name, &base.cpu_throughput),
    );
    let base_allocs = Sample::new(base.allocs_per_request.clone());
    bench.report(
        &format!("{name}: p50 latency"),
        "µs",
        &p50,
        Some((base_name, &base.latency(50.0))),
    );
    bench.report(
        &format!("{name}: p99 latency"),
        "µs",
        &p99,
        Some((base_name, &base.latency(99.0))),
    );
    bench.report(
        &format!("{name}: allocations per request"),
        "allocs",
        &allocs,
        Some((base_name, &base_allocs)),
    );
}
