//! A random load over h1 and h2 (clients that leave mid-body or mid-handler,
//! handlers that fail, tasks that panic, fail, time out or add tasks after
//! the hand-off) with `Runner::shutdown` called at a random moment with a
//! tiny deadline, while the traffic goes on. Once everything has settled:
//! every task that was queued reached the runner and was counted once, none
//! ran twice, and the shutdown's report names exactly the tasks counted
//! `abandoned`. `AFTERWARD_SEED` replays a run; the seed is printed.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use afterward::{FailurePolicy, Runner, TaskQueue};
use afterward_hyper::{DisconnectPolicy, TaskService};
use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::sync::{Notify, watch};

const ROUNDS: usize = 4;
const CONNECTIONS: usize = 12;
const REQUESTS_PER_CONNECTION: usize = 40;
const MAX_TASKS: usize = CONNECTIONS * REQUESTS_PER_CONNECTION * 8;

/// xorshift64*, seeded per request from the path so the server and client
/// agree without sharing state.
#[derive(Clone, Copy)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What happens to every task, and when all of them have settled.
struct Ledger {
    runs: Vec<AtomicU8>,
    created: AtomicUsize,
    /// Tasks created and not yet run or dropped, plus late adders still to
    /// add theirs.
    outstanding: AtomicUsize,
    settled: Notify,
}

impl Ledger {
    fn new() -> Arc<Ledger> {
        Arc::new(Ledger {
            runs: (0..MAX_TASKS).map(|_| AtomicU8::new(0)).collect(),
            created: AtomicUsize::new(0),
            outstanding: AtomicUsize::new(0),
            settled: Notify::new(),
        })
    }

    /// A new task id, and the guard that settles it when dropped.
    fn task(self: &Arc<Ledger>) -> (usize, Settle) {
        let id = self.created.fetch_add(1, SeqCst);
        (id, self.pending())
    }

    fn pending(self: &Arc<Ledger>) -> Settle {
        self.outstanding.fetch_add(1, SeqCst);
        Settle(self.clone())
    }

    fn started(&self) -> usize {
        self.runs.iter().map(|r| usize::from(r.load(SeqCst))).sum()
    }

    async fn all_settled(&self) {
        loop {
            let notified = self.settled.notified();
            if self.outstanding.load(SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct Settle(Arc<Ledger>);

impl Drop for Settle {
    fn drop(&mut self) {
        if self.0.outstanding.fetch_sub(1, SeqCst) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

/// Panics, typed `()` so that a closure calling it is a task.
fn boom() {
    panic!("a task panics on purpose");
}

fn add_random_task(queue: &TaskQueue, ledger: &Arc<Ledger>, rng: &mut Rng, depth: u8) {
    let choice = rng.below(9);
    if choice == 7 && depth == 0 {
        // Work the handler started adds a task after the hand-off.
        let adding = ledger.pending();
        let (q, l, mut r) = (queue.clone(), ledger.clone(), Rng(rng.next()));
        let ms = rng.below(4);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            add_random_task(&q, &l, &mut r, 1);
            drop(adding);
        });
        return;
    }
    let (id, settle) = ledger.task();
    let l = ledger.clone();
    let ran = move || {
        l.runs[id].fetch_add(1, SeqCst);
    };
    match choice {
        1 => {
            queue.add_task(move |_s: Settle| async move { ran() }, (settle,));
        }
        2 => {
            let ms = rng.below(6);
            queue.add_task(
                move |_s: Settle| async move {
                    ran();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                },
                (settle,),
            );
        }
        3 => {
            let micros = rng.below(1500);
            queue.add_task(
                move |_s: Settle| {
                    ran();
                    std::thread::sleep(Duration::from_micros(micros));
                },
                (settle,),
            );
        }
        4 => {
            queue.add_task(
                move |_s: Settle| -> () {
                    ran();
                    boom();
                },
                (settle,),
            );
        }
        5 => {
            queue.add_task(
                move |_s: Settle| async move {
                    ran();
                    Err::<(), _>("a task fails on purpose")
                },
                (settle,),
            );
        }
        // Adds a task to its own queue while it runs.
        6 if depth == 0 => {
            let (q, l, mut r) = (queue.clone(), ledger.clone(), Rng(rng.next()));
            queue.add_task(
                move |_s: Settle| async move {
                    ran();
                    add_random_task(&q, &l, &mut r, 1);
                },
                (settle,),
            );
        }
        _ => {
            queue.add_task(move |_s: Settle| ran(), (settle,));
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Full,
    Stream,
    CutStream,
    SlowHandler,
    LeaveDuringHandler,
    HandlerError,
}

fn kind_of(rng: &mut Rng) -> Kind {
    match rng.below(10) {
        0 => Kind::Stream,
        1 => Kind::CutStream,
        2 => Kind::SlowHandler,
        3 => Kind::LeaveDuringHandler,
        4 => Kind::HandlerError,
        _ => Kind::Full,
    }
}

async fn handle(
    req: Request<Incoming>,
    ledger: Arc<Ledger>,
) -> Result<Response<ResBody>, BoxError> {
    let queue = queue_of(&req);
    let seed: u64 = req.uri().path().trim_start_matches('/').parse().unwrap();
    let mut rng = Rng(seed);
    let kind = kind_of(&mut rng);
    for _ in 0..rng.below(4) {
        add_random_task(&queue, &ledger, &mut rng, 0);
    }
    match kind {
        Kind::Full => Ok(Response::new(boxed(Full::new(Bytes::from_static(b"ok"))))),
        Kind::Stream => Ok(Response::new(boxed(Chunks::new(
            vec![Bytes::from_static(b"o"), Bytes::from_static(b"k")],
            End::None,
        )))),
        Kind::CutStream => Ok(Response::new(boxed(Chunks::new(
            vec![Bytes::from_static(b"first")],
            End::Pending,
        )))),
        Kind::SlowHandler => {
            tokio::time::sleep(Duration::from_millis(rng.below(3))).await;
            Ok(Response::new(boxed(Full::new(Bytes::from_static(b"ok")))))
        }
        Kind::LeaveDuringHandler => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Kind::HandlerError => Err("the handler fails on purpose".into()),
    }
}

async fn run_connection(
    addr: SocketAddr,
    proto: Proto,
    mut rng: Rng,
    responses: watch::Sender<usize>,
) {
    let mut client = Client::connect(addr, proto).await;
    for _ in 0..REQUESTS_PER_CONNECTION {
        let seed = rng.next() | 1;
        let kind = kind_of(&mut Rng(seed));
        let path = format!("/{seed}");
        let reconnect = match kind {
            Kind::LeaveDuringHandler => {
                // Leaves at a random moment while the handler runs.
                let patience = Duration::from_micros(rng.below(2000));
                let _ = tokio::time::timeout(patience, client.send("GET", &path)).await;
                true
            }
            Kind::CutStream => match client.send("GET", &path).await {
                Ok(response) => {
                    let mut body = response.into_body();
                    let _ = body.frame().await;
                    true
                }
                Err(_) => true,
            },
            _ => match client.send("GET", &path).await {
                Ok(response) => response.into_body().collect().await.is_err(),
                Err(_) => true,
            },
        };
        responses.send_modify(|n| *n += 1);
        // After a cut-off, an h1 connection is in no state to be reused.
        if reconnect && (proto == Proto::H1 || kind == Kind::HandlerError) {
            client.disconnect();
            client = Client::connect(addr, proto).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_at_a_random_moment_under_random_load_names_all_it_abandons() {
    // Tasks panic on purpose, hundreds of times; only other panics are shown.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"a task panics on purpose") {
            default_hook(info);
        }
    }));
    let seed = std::env::var("AFTERWARD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("seed {seed} (AFTERWARD_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    for round in 0..ROUNDS {
        let why = format!("seed {seed}, round {round}");
        let mut builder = Runner::builder();
        if rng.below(2) == 0 {
            builder = builder.max_concurrent_drains(1 + rng.below(8) as usize);
        }
        if rng.below(3) == 0 {
            builder = builder.task_timeout(Duration::from_millis(1 + rng.below(4)));
        }
        if rng.below(2) == 0 {
            builder = builder.failure_policy(FailurePolicy::StopQueue);
        }
        let runner = builder.build();
        let policy = if rng.below(2) == 0 {
            DisconnectPolicy::Run
        } else {
            DisconnectPolicy::Skip
        };
        let ledger = Ledger::new();
        let l = ledger.clone();
        let service = TaskService::new(
            service_fn(move |req| handle(req, l.clone())),
            runner.clone(),
        )
        .on_disconnect(policy);
        let (addr, server) = serve(service).await;

        let (responses, mut answered) = watch::channel(0);
        let mut clients = Vec::new();
        for connection in 0..CONNECTIONS {
            let proto = BOTH[connection % 2];
            clients.push(tokio::spawn(run_connection(
                addr,
                proto,
                Rng(rng.next() | 1),
                responses.clone(),
            )));
        }
        let moment = rng.below((CONNECTIONS * REQUESTS_PER_CONNECTION) as u64) as usize;
        answered.wait_for(|n| *n >= moment).await.unwrap();
        let deadline = Duration::from_micros(rng.below(3000));
        let report = runner.shutdown(deadline).await;

        for client in clients {
            client.await.unwrap();
        }
        server.abort();
        tokio::time::timeout(Duration::from_secs(20), ledger.all_settled())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{why}: {} tasks never settled",
                    ledger.outstanding.load(SeqCst)
                )
            });

        let stats = runner.stats();
        println!("{why}: {stats:?}");
        let created = ledger.created.load(SeqCst);
        assert_eq!(stats.tasks_received(), created, "{why}: {stats:?}");
        assert_eq!(
            stats.tasks_received(),
            stats.accounted(),
            "{why}: {stats:?}"
        );
        assert_eq!(report.abandoned(), stats.abandoned(), "{why}: {stats:?}");
        assert!(
            ledger.runs.iter().all(|r| r.load(SeqCst) <= 1),
            "{why}: a task ran twice"
        );
        let finished = stats.completed() + stats.failed() + stats.panicked() + stats.timed_out();
        let started = ledger.started();
        assert!(
            finished <= started && started <= finished + stats.abandoned(),
            "{why}: {started} started, {stats:?}"
        );
    }
}
