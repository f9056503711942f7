//! What an actix-web server pays for `Tasks`: a real actix-web server and 32
//! keep-alive HTTP/1 client connections on 127.0.0.1, a fixed number of
//! requests, for bare actix-web and for the same app wrapped in `Tasks`,
//! with 0 tasks and with 10 no-op async tasks per request.
//!
//! Each server runs on two actix workers (threads with a runtime each), the
//! runner on a single-threaded runtime of its own (as under
//! `#[actix_web::main]`), and the clients on a tokio runtime of two more
//! threads, so on this two-core machine the load is CPU-bound. Each round measures
//! wall-clock throughput and the process's CPU time per request; cases
//! alternate round by round, and a case's ratio to bare actix-web is the
//! median of the per-round ratios.
//!
//! ```text
//! cargo bench --bench actix_overhead [-- FILTER] [--quick] [--json PATH]
//! ```

#[path = "support/http_load.rs"]
mod http_load;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use afterward::{Runner, TaskQueue};
use afterward_actix::Tasks;
use http_load::Server;
use support::Bench;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Bare,
    Tasks0,
    Async10,
}

impl Case {
    const ALL: [Case; 3] = [Case::Bare, Case::Tasks0, Case::Async10];

    fn name(self) -> &'static str {
        match self {
            Case::Bare => "bare actix-web",
            Case::Tasks0 => "Tasks, 0 tasks",
            Case::Async10 => "Tasks, 10 async tasks",
        }
    }
}

fn ok() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

async fn noop_async() {}

async fn ten_tasks(tasks: TaskQueue) -> HttpResponse {
    for _ in 0..10 {
        tasks.add_task(noop_async, ());
    }
    ok()
}

/// Serves the app `factory` makes on two actix workers of its own; must be
/// used inside the bench's runtime, which then drives the server. A macro,
/// since each case's app is a type of its own.
macro_rules! serve {
    ($factory:expr) => {{
        let server = HttpServer::new($factory)
            .workers(2)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        (addr, handle)
    }};
}

fn start(case: Case, runner: &Runner) -> (SocketAddr, ServerHandle) {
    let tasks = Tasks::new(runner.clone());
    match case {
        Case::Bare => serve!(|| App::new().default_service(web::to(|| async { ok() }))),
        Case::Tasks0 => serve!(move || {
            App::new()
                .wrap(tasks.clone())
                .default_service(web::to(|| async { ok() }))
        }),
        Case::Async10 => serve!(move || {
            App::new()
                .wrap(tasks.clone())
                .default_service(web::to(ten_tasks))
        }),
    }
}

/// A runner on a single-threaded runtime of its own thread, as under
/// `#[actix_web::main]`, where the main thread's runtime runs the drains
/// while actix's workers serve.
fn runner_thread() -> Runner {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            tx.send(Runner::new()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

fn main() {
    let mut bench = Bench::from_args(
        "actix_overhead: 32 HTTP/1 keep-alive connections to 2 actix workers, 9 interleaved rounds of 12,800 requests (3 of 3,200 with --quick)",
    );
    let cases: Vec<Case> = Case::ALL
        .into_iter()
        .filter(|&case| case == Case::Bare || bench.wants(case.name()))
        .collect();
    if cases.len() == 1 && !bench.wants(Case::Bare.name()) {
        return;
    }
    let rt = http_load::client_runtime();
    let runner = runner_thread();
    let servers: Vec<(SocketAddr, ServerHandle)> =
        rt.block_on(async { cases.iter().map(|&case| start(case, &runner)).collect() });
    let targets: Vec<Server> = servers
        .iter()
        .map(|&(addr, _)| Server { addr, host: true })
        .collect();
    let results = http_load::measure_all(&rt, &runner, &targets, http_load::rounds(&bench));

    for (i, &case) in cases.iter().enumerate() {
        let baseline = (case != Case::Bare).then(|| (Case::Bare.name(), &results[0]));
        http_load::report(&mut bench, case.name(), &results[i], baseline);
    }
    // The documented order: the servers, then the tasks.
    rt.block_on(async {
        for (_, handle) in &servers {
            handle.stop(true).await;
        }
        let report = runner.shutdown(Duration::from_secs(10)).await;
        assert_eq!(report.abandoned(), 0);
    });
    let stats = runner.stats();
    assert_eq!(stats.tasks_received(), stats.accounted());
    bench.finish();
}
