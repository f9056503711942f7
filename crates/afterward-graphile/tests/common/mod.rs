//! Shared by the PostgreSQL tests: a schema per test, tasks that record each
//! run in it, and waits on the database's state.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use afterward::{DurableTask, Step};
use afterward_graphile::{GraphileBackend, GraphileWorker, WorkerRecoveryConfig};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh schema for one test, so tests run in parallel.
pub struct Db {
    pub pool: PgPool,
    pub schema: String,
}

impl Db {
    pub async fn new(test: &str) -> Db {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&database_url())
            .await
            .expect("PostgreSQL must run at DATABASE_URL (default 127.0.0.1:5432)");
        let schema = format!("afterward_{test}_{}", std::process::id());
        Db::reset(&pool, &schema).await;
        Db { pool, schema }
    }

    /// The schema of another process's test.
    pub async fn existing(schema: &str) -> Db {
        let pool = PgPool::connect(&database_url()).await.unwrap();
        Db {
            pool,
            schema: schema.to_owned(),
        }
    }

    async fn reset(pool: &PgPool, schema: &str) {
        sqlx::query(AssertSqlSafe(format!(
            "drop schema if exists {schema} cascade"
        )))
        .execute(pool)
        .await
        .unwrap();
        let backend = GraphileBackend::new(pool.clone()).schema(schema);
        backend.migrate().await.unwrap();
        sqlx::query(AssertSqlSafe(format!(
            "create table {schema}.runs (
                 seq bigserial primary key,
                 label text not null,
                 attempt int not null,
                 key text not null,
                 pid int not null,
                 at timestamptz not null default clock_timestamp()
             )"
        )))
        .execute(pool)
        .await
        .unwrap();
    }

    pub fn backend(&self) -> GraphileBackend {
        GraphileBackend::new(self.pool.clone()).schema(&self.schema)
    }

    /// A worker that knows the test tasks, polling often, with quick crash
    /// recovery and upkeep.
    pub fn worker(&self) -> GraphileWorker {
        GraphileWorker::new(self.pool.clone())
            .schema(&self.schema)
            .task::<Record>()
            .task::<Hang>()
            .task::<Slow>()
            .task::<Refused>()
            .recovery(quick_recovery())
            .poll_interval(Duration::from_millis(100))
            .upkeep(Some(Duration::from_millis(100)))
    }

    /// Runs `sql` in the test's schema.
    pub async fn execute(&self, sql: impl Into<String>) {
        sqlx::query(AssertSqlSafe(sql.into()))
            .execute(&self.pool)
            .await
            .unwrap();
    }

    /// Every run recorded, in the order they started.
    pub async fn runs(&self) -> Vec<Run> {
        sqlx::query_as(AssertSqlSafe(format!(
            "select label, attempt, key, pid,
                    extract(epoch from at)::float8 as at
             from {}.runs order by seq",
            self.schema
        )))
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    pub async fn labels(&self) -> Vec<String> {
        self.runs().await.into_iter().map(|run| run.label).collect()
    }

    /// Waits until every stored chain has finished.
    pub async fn wait_finished(&self, chains: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let (finished,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
                "select count(*) from {}.afterward_steps where last and finished_at is not null",
                self.schema
            )))
            .fetch_one(&self.pool)
            .await
            .unwrap();
            if finished >= chains {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{finished} of {chains} chains finished"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until a run labelled `label` is recorded.
    pub async fn wait_run(&self, label: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !self.labels().await.iter().any(|l| l == label) {
            assert!(tokio::time::Instant::now() < deadline, "{label} never ran");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn count(&self, from: &str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
            "select count(*) from {}.{from}",
            self.schema
        )))
        .fetch_one(&self.pool)
        .await
        .unwrap();
        n
    }

    pub async fn drop_schema(self) {
        sqlx::query(AssertSqlSafe(format!(
            "drop schema if exists {} cascade",
            self.schema
        )))
        .execute(&self.pool)
        .await
        .unwrap();
    }
}

pub fn quick_recovery() -> WorkerRecoveryConfig {
    WorkerRecoveryConfig::default()
        .heartbeat_interval(Duration::from_millis(200))
        .sweep_interval(Duration::from_millis(300))
        .sweep_threshold(Duration::from_secs(2))
        .recovery_delay(Duration::ZERO)
}

#[derive(Debug, sqlx::FromRow)]
pub struct Run {
    pub label: String,
    pub attempt: i32,
    pub key: String,
    pub pid: i32,
    pub at: f64,
}

async fn record(schema: &str, label: &str, step: &Step) {
    let mut conn = PgConnection::connect(&database_url()).await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "insert into {schema}.runs (label, attempt, key, pid) values ($1, $2, $3, $4)"
    )))
    .bind(label)
    .bind(step.attempt() as i32)
    .bind(step.idempotency_key())
    .bind(std::process::id() as i32)
    .execute(&mut conn)
    .await
    .unwrap();
}

/// Records its run, then fails on its first `fail_first` attempts.
#[derive(Serialize, Deserialize)]
pub struct Record {
    pub schema: String,
    pub label: String,
    pub fail_first: u32,
}

impl DurableTask for Record {
    const NAME: &'static str = "record";
    type Error = String;

    async fn run(self, step: Step) -> Result<(), String> {
        record(&self.schema, &self.label, &step).await;
        if step.attempt() <= self.fail_first {
            return Err(format!(
                "{} failed on attempt {}",
                self.label,
                step.attempt()
            ));
        }
        Ok(())
    }
}

pub fn rec(db: &Db, label: impl Into<String>) -> Record {
    Record {
        schema: db.schema.clone(),
        label: label.into(),
        fail_first: 0,
    }
}

/// Records its run, then never finishes in the crash test's child process
/// (the one to be killed), and finishes anywhere else.
#[derive(Serialize, Deserialize)]
pub struct Hang {
    pub schema: String,
    pub label: String,
}

impl DurableTask for Hang {
    const NAME: &'static str = "hang";
    type Error = String;

    async fn run(self, step: Step) -> Result<(), String> {
        record(&self.schema, &self.label, &step).await;
        if std::env::var_os("AFTERWARD_CRASH_SCHEMA").is_some() {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// Fails with an error it says is final: no other attempt can do better.
#[derive(Serialize, Deserialize)]
pub struct Refused {
    pub schema: String,
    pub label: String,
}

impl DurableTask for Refused {
    const NAME: &'static str = "refused";
    type Error = String;

    async fn run(self, step: Step) -> Result<(), String> {
        record(&self.schema, &self.label, &step).await;
        Err(format!("{} refused for good", self.label))
    }

    fn is_final(_: &String) -> bool {
        true
    }
}

/// A worker running on the test's runtime.
pub struct Running {
    worker: std::sync::Arc<graphile_worker::Worker>,
    task: tokio::task::JoinHandle<()>,
}

/// Builds `builder`'s worker and runs it until `stop`.
pub async fn start(builder: GraphileWorker) -> Running {
    let worker = std::sync::Arc::new(builder.init().await.unwrap());
    let task = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run().await.expect("the worker failed") }
    });
    Running { worker, task }
}

impl Running {
    pub async fn stop(self) {
        self.worker.request_shutdown();
        self.task.await.unwrap();
    }
}

/// Records its run, then takes `ms` milliseconds.
#[derive(Serialize, Deserialize)]
pub struct Slow {
    pub schema: String,
    pub label: String,
    pub ms: u64,
}

impl DurableTask for Slow {
    const NAME: &'static str = "slow";
    type Error = String;

    async fn run(self, step: Step) -> Result<(), String> {
        record(&self.schema, &self.label, &step).await;
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        Ok(())
    }
}
