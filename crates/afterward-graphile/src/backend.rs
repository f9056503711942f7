//! `GraphileBackend`: where servers hand durable tasks over, look them up,
//! and prune them.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use afterward::durable::{Chain, ChainStep, DurableBackend, PersistFuture};
use afterward::{DurableTask, FailurePolicy, TaskId};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use crate::handoff::{self, Batcher, Rows};
use crate::schema::{Schema, migrate};
use crate::sql::Statements;
use crate::status::{StatusRow, TaskStatus};
use crate::{DEFAULT_MAX_ATTEMPTS, DEFAULT_SCHEMA, Error};

/// A [`DurableBackend`] on PostgreSQL: give it to
/// [`RunnerBuilder::durable`](afterward::RunnerBuilder::durable).
///
/// Each durable task is one row of `afterward_steps`, keyed by its
/// [`TaskId`]; a chain's first step gets a graphile_worker job, and a
/// [`GraphileWorker`](crate::GraphileWorker) on the same database and schema
/// runs it. Hand-offs that arrive together are stored together: one
/// transaction, one commit, for as many chains as are waiting (up to
/// [`max_batch`](GraphileBackend::max_batch) steps), and each hand-off
/// gets its own answer.
///
/// The answer is exact. The time limit ([`timeout`](GraphileBackend::timeout),
/// 5 s by default) covers getting a connection and running the statement;
/// a hand-off that fails there stored nothing, and its tasks are counted
/// [`persist_failed`](afterward::Stats::persist_failed). Once the commit is
/// sent it is never cut short: its answer is waited for, and if that is
/// lost, the transaction's fate is looked up by its id; only if the
/// database cannot say within [`confirm`](GraphileBackend::confirm) (30 s
/// by default) are the tasks counted
/// [`persist_unknown`](afterward::Stats::persist_unknown).
///
/// A chain whose tasks are already stored (the same ids) stores nothing.
#[derive(Clone)]
pub struct GraphileBackend {
    schema: Schema,
    max_attempts: i16,
    settings: Arc<handoff::Settings>,
    /// Started at the first hand-off, on the runtime it runs in.
    batcher: Arc<OnceLock<Batcher>>,
}

impl GraphileBackend {
    /// A backend on `pool`, in schema `graphile_worker`, giving each step
    /// 8 attempts.
    pub fn new(pool: PgPool) -> GraphileBackend {
        let schema = Schema::new(DEFAULT_SCHEMA).expect("the default schema is a plain identifier");
        GraphileBackend {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            settings: Arc::new(handoff::Settings {
                pool,
                statements: Arc::new(Statements::new(&schema)),
                timeout: Duration::from_secs(5),
                confirm: Duration::from_secs(30),
                max_batch: 4096,
            }),
            schema,
            batcher: Arc::new(OnceLock::new()),
        }
    }

    fn settings(mut self, f: impl FnOnce(&mut handoff::Settings)) -> GraphileBackend {
        let mut settings = handoff::Settings::clone(&self.settings);
        f(&mut settings);
        self.settings = Arc::new(settings);
        self.batcher = Arc::new(OnceLock::new());
        self
    }

    /// Uses `schema` for graphile_worker's tables and `afterward_steps`.
    /// Workers must use the same.
    ///
    /// # Panics
    ///
    /// If `schema` is not a plain identifier of at most 63 bytes (ASCII
    /// letters, digits and underscores, not starting with a digit):
    /// PostgreSQL cuts longer names, so two of them could share a schema.
    pub fn schema(mut self, schema: &str) -> GraphileBackend {
        self.schema = Schema::new(schema).unwrap_or_else(|error| panic!("{error}"));
        let statements = Arc::new(Statements::new(&self.schema));
        self.settings(|settings| settings.statements = statements)
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

    /// How long a hand-off may take to get a connection and run its
    /// statement; 5 s by default. Past it the hand-off fails, nothing is
    /// stored (`persist_failed`), and the queue's in-process tasks run. A
    /// commit already sent is never cut short (see
    /// [`confirm`](GraphileBackend::confirm)).
    ///
    /// # Panics
    ///
    /// If `timeout` is zero.
    pub fn timeout(self, timeout: Duration) -> GraphileBackend {
        assert!(
            !timeout.is_zero(),
            "the hand-off timeout must be greater than zero"
        );
        self.settings(|settings| settings.timeout = timeout)
    }

    /// How long to wait for a commit's answer, and then how long to keep
    /// asking the database how the transaction ended if the answer was lost;
    /// 30 s by default. Only if it cannot say by then are the tasks counted
    /// `persist_unknown`.
    ///
    /// # Panics
    ///
    /// If `confirm` is zero.
    pub fn confirm(self, confirm: Duration) -> GraphileBackend {
        assert!(!confirm.is_zero(), "confirm must be greater than zero");
        self.settings(|settings| settings.confirm = confirm)
    }

    /// The most steps one transaction stores (4,096 by default): hand-offs
    /// waiting beyond that go in the next. `1` stores each chain in a
    /// transaction of its own, as many at once as the pool has connections
    /// (batches are stored at most a few at once, since a batch gathers
    /// what waits).
    ///
    /// # Panics
    ///
    /// If `steps` is 0.
    pub fn max_batch(self, steps: usize) -> GraphileBackend {
        assert!(steps > 0, "max_batch must be at least 1");
        self.settings(|settings| settings.max_batch = steps)
    }

    /// Creates or upgrades the tables. [`GraphileWorker::init`](crate::GraphileWorker::init)
    /// does it too; a server that only hands off calls this once at start.
    pub async fn migrate(&self) -> Result<(), Error> {
        migrate(&self.settings.pool, &self.schema).await
    }

    /// Stores `task` as a chain of one step, in `tx`: a transaction of the
    /// caller's, so the task is stored if and only if the caller's own
    /// changes commit (a transactional outbox). Returns the task's id, for
    /// [`status`](GraphileBackend::status). A worker runs it once `tx`
    /// commits; if `tx` rolls back, nothing is left.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use afterward::{DurableTask, Step};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)]
    /// # struct SendWelcome { to: String }
    /// # impl DurableTask for SendWelcome {
    /// #     const NAME: &'static str = "send_welcome";
    /// #     type Error = String;
    /// #     async fn run(self, _: Step) -> Result<(), String> { Ok(()) }
    /// # }
    /// # async fn register(pool: sqlx::PgPool, backend: afterward_graphile::GraphileBackend)
    /// #     -> Result<(), afterward_graphile::Error> {
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("insert into users (email) values ($1)")
    ///     .bind("ada@example.com")
    ///     .execute(&mut *tx)
    ///     .await?;
    /// let id = backend
    ///     .add_in(&mut tx, SendWelcome { to: "ada@example.com".into() })
    ///     .await?;
    /// tx.commit().await?; // the user and the email, or neither
    /// # let _ = id;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn add_in<T: DurableTask>(
        &self,
        tx: &mut PgConnection,
        task: T,
    ) -> Result<TaskId, Error> {
        let id = TaskId::new();
        let step = ChainStep::of(id, &task)?;
        self.add_chain_in(tx, vec![step], FailurePolicy::Continue)
            .await?;
        Ok(id)
    }

    /// Stores `steps` as one chain, in order, in `tx` (see
    /// [`add_in`](GraphileBackend::add_in)); `policy` decides what follows
    /// a step that fails for good.
    pub async fn add_chain_in(
        &self,
        tx: &mut PgConnection,
        steps: Vec<ChainStep>,
        policy: FailurePolicy,
    ) -> Result<(), Error> {
        let chain = Chain::new(steps, policy);
        let rows = Rows::of(&chain, self.max_attempts);
        handoff::store(&self.settings.statements, tx, &rows).await?;
        Ok(())
    }

    /// Where the durable task with id `id` stands: waiting, running, done,
    /// failed or dropped, with its attempts and last error. `Ok(None)` for
    /// an id never stored, or pruned.
    ///
    /// The id is the one [`QueuedTask::id`](afterward::QueuedTask::id) gave
    /// when the task was added, so a handler can answer `202 Accepted` with
    /// it and another report on it (the async request-reply pattern).
    pub async fn status(&self, id: TaskId) -> Result<Option<TaskStatus>, Error> {
        let row: Option<StatusRow> =
            sqlx::query_as(AssertSqlSafe(self.settings.statements.status.as_str()))
                .bind(id.to_string())
                .fetch_optional(&self.settings.pool)
                .await?;
        Ok(row.map(TaskStatus::from))
    }

    /// Deletes the chains that finished more than `older_than` ago (every
    /// step done, failed or dropped), and any job left of them; returns how
    /// many chains. Their tasks' [`status`](GraphileBackend::status) is
    /// `None` from then on.
    pub async fn prune(&self, older_than: Duration) -> Result<u64, Error> {
        let (chains,): (i64,) =
            sqlx::query_as(AssertSqlSafe(self.settings.statements.prune.as_str()))
                .bind(older_than.as_secs_f64())
                .fetch_one(&self.settings.pool)
                .await?;
        Ok(chains as u64)
    }

    fn batcher(&self) -> &Batcher {
        self.batcher
            .get_or_init(|| Batcher::start(self.settings.clone()))
    }
}

impl DurableBackend for GraphileBackend {
    fn persist<'a>(&'a self, chain: &'a Chain) -> PersistFuture<'a> {
        let rows = Rows::of(chain, self.max_attempts);
        Box::pin(self.batcher().store(rows))
    }
}

impl std::fmt::Debug for GraphileBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphileBackend")
            .field("schema", &self.schema.name())
            .field("max_attempts", &self.max_attempts)
            .field("timeout", &self.settings.timeout)
            .field("max_batch", &self.settings.max_batch)
            .finish_non_exhaustive()
    }
}
