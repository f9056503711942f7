//! What durability costs, on the real PostgreSQL (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, schema `afterward_bench`):
//!
//! 1. the hand-off per request: a runner drains queues of 1 and of 10 no-op
//!    durable tasks, in-process (no backend: the baseline) and stored as a
//!    chain by `GraphileBackend`; 16 requests in flight, cases alternating
//!    round by round, the median round reported;
//! 2. a worker's throughput in steps per second: chains of 5 no-op steps
//!    run by one `GraphileWorker` (concurrency 8), handed off while it runs,
//!    and found waiting when it starts (with and without graphile_worker's
//!    local queue).
//!
//! ```text
//! cargo bench --bench durable [-- --quick]
//! ```

use std::time::{Duration, Instant};

use afterward::{DurableTask, Runner, Step, TaskQueue};
use afterward_graphile::{GraphileBackend, GraphileWorker};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, PgPool};

const SCHEMA: &str = "afterward_bench";
const IN_FLIGHT: usize = 16;

#[derive(Serialize, Deserialize)]
struct Noop {
    user: u64,
}

impl DurableTask for Noop {
    const NAME: &'static str = "noop";
    type Error = String;

    async fn run(self, _: Step) -> Result<(), String> {
        std::hint::black_box(self.user);
        Ok(())
    }
}

const STEPS: usize = 5;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// The worker runs while the chains are handed off: it hears of each
    /// new job at once (LISTEN/NOTIFY).
    Running,
    /// The chains wait in the table when the worker starts: graphile_worker
    /// then finds them by polling.
    Backlog,
    /// The same, without graphile_worker's local queue (which
    /// `GraphileWorker` turns on): one fetch per signal and slot.
    BacklogDirect,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Running => "worker running during the hand-offs",
            Mode::Backlog => "backlog at start",
            Mode::BacklogDirect => "backlog at start, without the local queue",
        }
    }
}

/// Runs `chains` chains of `STEPS` steps through one worker; the steps run
/// and the time from the first hand-off (or the worker's start, for a
/// backlog) to the last step.
async fn throughput(pool: &PgPool, chains: usize, mode: Mode) -> (usize, Duration) {
    reset(pool).await;
    let runner = Runner::builder()
        .durable(GraphileBackend::new(pool.clone()).schema(SCHEMA))
        .build();
    let chains = if mode == Mode::Running {
        chains
    } else {
        chains / 5
    };
    if mode != Mode::Running {
        hand_off(&runner, chains, STEPS).await;
    }
    let mut worker = GraphileWorker::new(pool.clone())
        .schema(SCHEMA)
        .task::<Noop>()
        .concurrency(8);
    if mode == Mode::BacklogDirect {
        worker = worker.local_queue(None);
    }
    let worker = std::sync::Arc::new(worker.init().await.unwrap());
    let start = Instant::now();
    let running = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run().await }
    });
    if mode == Mode::Running {
        hand_off(&runner, chains, STEPS).await;
    }
    loop {
        let (left,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
            "select count(*) from {SCHEMA}.afterward_chains where finished_at is null"
        )))
        .fetch_one(pool)
        .await
        .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    worker.request_shutdown();
    running.await.unwrap().unwrap();
    assert_eq!(runner.stats().persisted(), chains * STEPS);
    (chains * STEPS, elapsed)
}

/// Hands off `requests` queues of `tasks` tasks, `IN_FLIGHT` at a time;
/// the mean time per request.
async fn hand_off(runner: &Runner, requests: usize, tasks: usize) -> Duration {
    let start = Instant::now();
    let mut in_flight = Vec::with_capacity(IN_FLIGHT);
    for request in 0..requests {
        let queue = TaskQueue::new();
        for task in 0..tasks {
            queue.add_durable(Noop {
                user: (request * tasks + task) as u64,
            });
        }
        in_flight.push(runner.spawn(queue));
        if in_flight.len() == IN_FLIGHT {
            for handle in in_flight.drain(..) {
                handle.await;
            }
        }
    }
    for handle in in_flight {
        handle.await;
    }
    start.elapsed() / requests as u32
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

async fn reset(pool: &PgPool) {
    sqlx::query(AssertSqlSafe(format!(
        "drop schema if exists {SCHEMA} cascade"
    )))
    .execute(pool)
    .await
    .unwrap();
    GraphileBackend::new(pool.clone())
        .schema(SCHEMA)
        .migrate()
        .await
        .unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let (rounds, requests, chains) = if quick {
        (3, 200, 200)
    } else {
        (7, 1_000, 1_000)
    };
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(IN_FLIGHT as u32)
        .connect(&url)
        .await
        .expect("this bench needs PostgreSQL at DATABASE_URL");
    reset(&pool).await;

    let local = Runner::new();
    let durable = Runner::builder()
        .durable(GraphileBackend::new(pool.clone()).schema(SCHEMA))
        .build();
    println!(
        "hand-off per request ({IN_FLIGHT} in flight, median of {rounds} rounds of {requests})"
    );
    for tasks in [1, 10] {
        let (mut base, mut stored) = (Vec::new(), Vec::new());
        hand_off(&durable, requests / 10, tasks).await;
        for _ in 0..rounds {
            base.push(hand_off(&local, requests, tasks).await);
            stored.push(hand_off(&durable, requests, tasks).await);
        }
        let (base, stored) = (median(base), median(stored));
        println!(
            "  {tasks:>2} task(s): in-process {:>9.2?}   durable chain {:>9.2?}   ratio {:>6.0}x",
            base,
            stored,
            stored.as_secs_f64() / base.as_secs_f64()
        );
    }
    let stats = durable.stats();
    assert_eq!(stats.persist_failed(), 0, "{stats:?}");

    println!("worker throughput, chains of {STEPS} steps, concurrency 8:");
    for mode in [Mode::Running, Mode::Backlog, Mode::BacklogDirect] {
        let (steps, elapsed) = throughput(&pool, chains, mode).await;
        println!(
            "  {:<44} {steps:>5} steps in {elapsed:>8.2?}: {:>6.0} steps/s",
            mode.name(),
            steps as f64 / elapsed.as_secs_f64()
        );
    }
    sqlx::query(AssertSqlSafe(format!("drop schema {SCHEMA} cascade")))
        .execute(&pool)
        .await
        .unwrap();
}
