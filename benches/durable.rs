//! What durability costs, on the real PostgreSQL (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, schema `afterward_bench`),
//! each figure next to its baseline from the same run:
//!
//! 1. hand-offs: chains of one no-op durable task stored per second with
//!    64 hand-offs in flight, batched (the default), one transaction per
//!    chain (`max_batch(1)`), and graphile_worker's own `add_job` per chain;
//! 2. a worker: no-op steps run per second from a backlog, in chains of 1
//!    and of 5, by `GraphileWorker` and by a raw graphile_worker worker
//!    running no-op jobs, with the same slots (8) and local queue.
//!
//! Cases alternate round by round; the median round is reported.
//!
//! ```text
//! cargo bench --bench durable [-- --quick] [hand-offs | workers]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use afterward::durable::{Chain, ChainStep, DurableBackend};
use afterward::{DurableTask, FailurePolicy, Runner, Step, TaskId, TaskQueue};
use afterward_graphile::graphile_worker::{
    IntoTaskHandlerResult, JobSpec, LocalQueueConfig, RefetchDelayConfig, TaskHandler, Worker,
    WorkerContext, WorkerOptions, WorkerUtils,
};
use afterward_graphile::{GraphileBackend, GraphileWorker};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, PgPool};

const SCHEMA: &str = "afterward_bench";
const IN_FLIGHT: usize = 64;
const SLOTS: usize = 8;

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

/// A no-op graphile_worker job, for the raw worker.
#[derive(Clone, Serialize, Deserialize)]
struct RawNoop {
    user: u64,
}

impl TaskHandler for RawNoop {
    const IDENTIFIER: &'static str = "raw_noop";

    async fn run(self, _: WorkerContext) -> impl IntoTaskHandlerResult {
        std::hint::black_box(self.user);
    }
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

async fn count(pool: &PgPool, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap();
    n
}

// ===== hand-offs =====

/// Hands off `chains` queues of one durable task through `runner`,
/// `IN_FLIGHT` at a time; returns chains stored per second.
async fn hand_offs(runner: &Runner, chains: usize) -> f64 {
    let start = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    for user in 0..chains {
        if in_flight.len() == IN_FLIGHT {
            in_flight.join_next().await;
        }
        let queue = TaskQueue::new();
        queue.add_durable(Noop { user: user as u64 });
        in_flight.spawn(runner.spawn(queue));
    }
    in_flight.join_all().await;
    chains as f64 / start.elapsed().as_secs_f64()
}

/// Adds `chains` jobs with graphile_worker's `add_job`, `IN_FLIGHT` at a
/// time; returns jobs added per second.
async fn raw_add_jobs(utils: &WorkerUtils, chains: usize) -> f64 {
    let start = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    for user in 0..chains {
        if in_flight.len() == IN_FLIGHT {
            in_flight.join_next().await;
        }
        let utils = utils.clone();
        in_flight.spawn(async move {
            utils
                .add_job(RawNoop { user: user as u64 }, JobSpec::default())
                .await
                .unwrap();
        });
    }
    in_flight.join_all().await;
    chains as f64 / start.elapsed().as_secs_f64()
}

// ===== workers =====

/// Stores `steps` no-op steps in chains of `length`, without running them.
async fn backlog(backend: &GraphileBackend, steps: usize, length: usize) {
    let mut in_flight = tokio::task::JoinSet::new();
    for chain in 0..steps / length {
        let steps: Vec<ChainStep> = (0..length)
            .map(|i| {
                let user = (chain * length + i) as u64;
                ChainStep::of(TaskId::new(), &Noop { user }).unwrap()
            })
            .collect();
        let backend = backend.clone();
        if in_flight.len() == IN_FLIGHT {
            in_flight.join_next().await;
        }
        in_flight.spawn(async move {
            backend
                .persist(&Chain::new(steps, FailurePolicy::Continue))
                .await
                .unwrap();
        });
    }
    in_flight.join_all().await;
}

/// Polls until `sql` counts nothing left.
async fn until_none_left(pool: &PgPool, sql: &str) {
    while count(pool, sql).await > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `GraphileWorker` from a backlog of `steps` steps in chains of `length`:
/// steps run per second.
async fn afterward_worker(
    pool: &PgPool,
    backend: &GraphileBackend,
    steps: usize,
    length: usize,
) -> f64 {
    reset(pool).await;
    backlog(backend, steps, length).await;
    let worker = GraphileWorker::new(pool.clone())
        .schema(SCHEMA)
        .task::<Noop>()
        .concurrency(SLOTS)
        .init()
        .await
        .unwrap();
    let left = format!("select count(*) from {SCHEMA}.afterward_steps where state = 0");
    rate(pool, worker, &left, steps).await
}

/// Runs `worker` until `left` counts nothing left; `done` of them per
/// second.
async fn rate(pool: &PgPool, worker: Worker, left: &str, done: usize) -> f64 {
    let worker = Arc::new(worker);
    let start = Instant::now();
    let running = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run().await }
    });
    until_none_left(pool, left).await;
    let rate = done as f64 / start.elapsed().as_secs_f64();
    worker.request_shutdown();
    running.await.unwrap().unwrap();
    rate
}

/// A raw graphile_worker worker from a backlog of `jobs` no-op jobs, with
/// the same slots and local queue: jobs run per second.
async fn raw_worker(pool: &PgPool, jobs: usize) -> f64 {
    reset(pool).await;
    let utils = WorkerUtils::new(pool.clone(), SCHEMA.to_owned());
    let spec = JobSpec::default();
    for chunk in (0..jobs as u64).collect::<Vec<_>>().chunks(1_000) {
        let batch: Vec<(RawNoop, &JobSpec)> = chunk
            .iter()
            .map(|&user| (RawNoop { user }, &spec))
            .collect();
        utils.add_jobs(&batch).await.unwrap();
    }
    let poll = Duration::from_secs(1);
    let worker = WorkerOptions::default()
        .pg_pool(pool.clone())
        .schema(SCHEMA)
        .concurrency(SLOTS)
        .poll_interval(poll)
        .listen_os_shutdown_signals(false)
        .define_job::<RawNoop>()
        .local_queue(
            LocalQueueConfig::default().with_refetch_delay(
                RefetchDelayConfig::default()
                    .with_duration(poll)
                    .with_max_abort_threshold(1),
            ),
        )
        .init()
        .await
        .unwrap();
    let left = format!("select count(*) from {SCHEMA}._private_jobs");
    rate(pool, worker, &left, jobs).await
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick") || std::env::var_os("CI").is_some();
    // `hand-offs` or `workers` runs that part alone; cargo's own `--bench`
    // is not a filter.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let wants = |part: &str| filter.is_empty() || filter.iter().any(|f| part.contains(f.as_str()));
    let (rounds, chains, steps) = if quick {
        (3, 2_000, 2_000)
    } else {
        (5, 10_000, 10_000)
    };
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(IN_FLIGHT as u32)
        .connect(&url)
        .await
        .expect("this bench needs PostgreSQL at DATABASE_URL");
    reset(&pool).await;

    let batched = GraphileBackend::new(pool.clone()).schema(SCHEMA);
    let one_by_one = batched.clone().max_batch(1);
    let runner = |backend: &GraphileBackend| Runner::builder().durable(backend.clone()).build();
    let (batched_runner, one_by_one_runner) = (runner(&batched), runner(&one_by_one));
    let utils = WorkerUtils::new(pool.clone(), SCHEMA.to_owned());
    utils.migrate().await.unwrap();

    if wants("hand-offs") {
        println!(
            "hand-offs: chains of 1 task stored per second, {IN_FLIGHT} in flight, median of {rounds} rounds of {chains}"
        );
        let (mut b, mut o, mut r) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            reset(&pool).await;
            b.push(hand_offs(&batched_runner, chains).await);
            o.push(hand_offs(&one_by_one_runner, chains).await);
            r.push(raw_add_jobs(&utils, chains).await);
        }
        let (b, o, r) = (median(b), median(o), median(r));
        println!("  batched (default)                  {b:>8.0} chains/s");
        println!(
            "  one transaction per chain          {o:>8.0} chains/s   batched / this: {:.2}x",
            b / o
        );
        println!(
            "  graphile_worker add_job per chain  {r:>8.0} jobs/s     batched / this: {:.2}x",
            b / r
        );
        for runner in [&batched_runner, &one_by_one_runner] {
            let stats = runner.stats();
            assert_eq!(stats.persisted(), stats.tasks_received(), "{stats:?}");
        }
    }

    if wants("workers") {
        println!(
            "workers: no-op steps run per second from a backlog of {steps}, {SLOTS} slots, local queue"
        );
        let raw: Vec<f64> = {
            let mut raw = Vec::new();
            let mut ours = [Vec::new(), Vec::new()];
            for _ in 0..rounds {
                raw.push(raw_worker(&pool, steps).await);
                for (i, length) in [1, 5].into_iter().enumerate() {
                    ours[i].push(afterward_worker(&pool, &batched, steps, length).await);
                }
            }
            let raw_rate = median(raw.clone());
            println!("  raw graphile_worker, no-op jobs    {raw_rate:>8.0} jobs/s");
            for (i, length) in [1, 5].into_iter().enumerate() {
                let rate = median(ours[i].clone());
                println!(
                    "  GraphileWorker, chains of {length}        {rate:>8.0} steps/s    this / raw: {:.2}x",
                    rate / raw_rate
                );
            }
            raw
        };
        std::hint::black_box(raw);
    }
    sqlx::query(AssertSqlSafe(format!("drop schema {SCHEMA} cascade")))
        .execute(&pool)
        .await
        .unwrap();
}
