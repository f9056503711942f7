//! The hand-off side: stores a request's chain in one transaction.

use std::sync::Arc;
use std::time::Duration;

use afterward::FailurePolicy;
use afterward::durable::{Chain, DurableBackend, PersistFuture};
use graphile_worker::WorkerUtils;
use sqlx::AssertSqlSafe;
use sqlx::PgPool;
use sqlx::types::Json;

use crate::schema::{chains_table, migrate};
use crate::step::enqueue;
use crate::stored::StoredStep;
use crate::{DEFAULT_MAX_ATTEMPTS, DEFAULT_SCHEMA, Error};

/// A [`DurableBackend`] on PostgreSQL: give it to
/// [`RunnerBuilder::durable`](afterward::RunnerBuilder::durable).
///
/// Each hand-off stores its chain in one transaction: a row in the chains
/// table (the steps, in order) and a graphile_worker job for the first step.
/// A chain whose id is already stored stores nothing. A
/// [`GraphileWorker`](crate::GraphileWorker) on the same database and schema
/// runs it.
///
/// The runner waits for the hand-off before the queue's in-process tasks
/// run, so a hand-off is bounded by a [`timeout`](GraphileBackend::timeout)
/// (5 s by default): when the database is unreachable or stalls, the
/// hand-off fails, and the chain's tasks are logged and counted
/// [`persist_failed`](afterward::Stats::persist_failed).
#[derive(Clone)]
pub struct GraphileBackend {
    pool: PgPool,
    schema: Arc<str>,
    max_attempts: i16,
    timeout: Duration,
    utils: WorkerUtils,
}

impl GraphileBackend {
    /// A backend on `pool`, in schema `graphile_worker`, giving each step
    /// 8 attempts.
    pub fn new(pool: PgPool) -> GraphileBackend {
        GraphileBackend {
            utils: WorkerUtils::new(pool.clone(), DEFAULT_SCHEMA),
            pool,
            schema: Arc::from(DEFAULT_SCHEMA),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            timeout: Duration::from_secs(5),
        }
    }

    /// Uses `schema` for graphile_worker's tables and the chains table.
    /// Workers must use the same.
    pub fn schema(mut self, schema: &str) -> GraphileBackend {
        self.schema = Arc::from(schema);
        self.utils = WorkerUtils::new(self.pool.clone(), schema.to_owned());
        self
    }

    /// How many attempts each step of the chains stored from now on gets
    /// before it has failed for good (graphile_worker's `max_attempts`).
    /// Between attempts, graphile_worker waits `exp(min(attempt, 10))`
    /// seconds: 2.7 s, 7.4 s, 20 s, 55 s, 2.5 min, 6.7 min, 18 min…
    ///
    /// # Panics
    ///
    /// If `attempts` is 0 or above `i16::MAX`.
    pub fn max_attempts(mut self, attempts: u16) -> GraphileBackend {
        assert!(
            (1..=i16::MAX as u16).contains(&attempts),
            "max_attempts must be between 1 and {}",
            i16::MAX
        );
        self.max_attempts = attempts as i16;
        self
    }

    /// How long a hand-off may take, connecting included; 5 s by default.
    /// Past it the hand-off fails (`persist_failed`), and the queue's
    /// in-process tasks run. A hand-off cut off while committing may still
    /// have stored its chain; the log line says so.
    ///
    /// # Panics
    ///
    /// If `timeout` is zero.
    pub fn timeout(mut self, timeout: Duration) -> GraphileBackend {
        assert!(
            !timeout.is_zero(),
            "the hand-off timeout must be greater than zero"
        );
        self.timeout = timeout;
        self
    }

    /// Creates or upgrades the tables. [`GraphileWorker::init`](crate::GraphileWorker::init)
    /// does it too; a server that only hands off calls this once at start.
    pub async fn migrate(&self) -> Result<(), Error> {
        migrate(&self.pool, &self.schema).await
    }

    /// Stores `chain` and the job of its first step, in one transaction.
    /// Returns `false` if a chain with its id was already stored.
    pub async fn store(&self, chain: &Chain) -> Result<bool, Error> {
        let steps: Vec<StoredStep<'_>> = chain.steps().iter().map(StoredStep::of).collect();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(AssertSqlSafe(format!(
            "insert into {} (id, steps, stop_on_failure, max_attempts)
             values ($1, $2, $3, $4) on conflict (id) do nothing",
            chains_table(&self.schema)
        )))
        .bind(chain.id())
        .bind(Json(&steps))
        .bind(chain.policy() == FailurePolicy::StopQueue)
        .bind(self.max_attempts)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted && !steps.is_empty() {
            enqueue(&self.utils, &mut tx, chain.id(), 0, self.max_attempts).await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }
}

impl DurableBackend for GraphileBackend {
    fn persist<'a>(&'a self, chain: &'a Chain) -> PersistFuture<'a> {
        Box::pin(async move {
            let stored = tokio::time::timeout(self.timeout, self.store(chain))
                .await
                .map_err(|_| {
                    format!(
                        "the hand-off timed out after {:?}; the chain may or may not have been stored",
                        self.timeout
                    )
                })??;
            if !stored {
                tracing::debug!(chain = chain.id(), "chain already stored");
            }
            Ok(())
        })
    }
}

impl std::fmt::Debug for GraphileBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphileBackend")
            .field("schema", &self.schema)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}
