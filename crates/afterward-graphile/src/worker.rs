//! `GraphileWorker`: builds the graphile_worker worker that runs steps, and
//! keeps it from stalling.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use afterward::DurableTask;
use graphile_worker::{
    LocalQueueConfig, RefetchDelayConfig, Worker, WorkerOptions, WorkerRecoveryConfig,
};
use sqlx::{AssertSqlSafe, PgPool};
use tokio::task::AbortHandle;

use crate::done::Recorder;
use crate::job::StepJob;
use crate::schema::{Schema, migrate};
use crate::sql::Statements;
use crate::tasks::{RunFn, Tasks, run_fn};
use crate::{DEFAULT_SCHEMA, Error};

/// Builds a graphile_worker [`Worker`] that runs the steps of stored chains.
///
/// Register every [`DurableTask`] the servers hand off with
/// [`task`](GraphileWorker::task). A step whose task no worker knows, or
/// whose payload no longer deserializes into its task, fails for good at
/// once with the reason, rather than through all its attempts: roll new
/// tasks out to the workers before the servers queue them.
///
/// Run as many workers as you like, in the servers or in processes of their
/// own, on any machine that reaches the database: graphile_worker locks each
/// job, and a chain has one job at a time, so its steps run in order.
///
/// It fetches jobs in batches through graphile_worker's local queue, and
/// listens for new ones: a new chain's first step starts within a few
/// milliseconds, while an idle worker asks the database about once per
/// poll interval (1 s). Beside the worker runs its upkeep, a query every
/// few seconds: it wakes the workers when a job has been runnable for a
/// while and nobody took it (a worker that missed a wake-up), and every
/// minute it queues again the steps of chains that stopped without
/// finishing (see [`bookkeeping_budget`](GraphileWorker::bookkeeping_budget)).
///
/// Crash recovery is on: each worker writes a heartbeat, and a worker whose
/// heartbeat is older than the sweep threshold (60 s by default) is taken
/// for dead, its jobs released to run elsewhere. See
/// [`recovery`](GraphileWorker::recovery).
pub struct GraphileWorker {
    pool: PgPool,
    schema: Schema,
    concurrency: usize,
    poll_interval: Duration,
    recovery: WorkerRecoveryConfig,
    runs: HashMap<&'static str, RunFn>,
    local_queue: Option<LocalQueueConfig>,
    step_timeout: Option<Duration>,
    bookkeeping_budget: Duration,
    upkeep: Option<Duration>,
    configure: Vec<Box<dyn FnOnce(WorkerOptions) -> WorkerOptions + Send>>,
}

impl GraphileWorker {
    /// A worker on `pool`, in schema `graphile_worker`, running up to 4
    /// steps (of different chains) at a time.
    pub fn new(pool: PgPool) -> GraphileWorker {
        GraphileWorker {
            pool,
            schema: Schema::new(DEFAULT_SCHEMA).expect("the default schema is a plain identifier"),
            concurrency: 4,
            poll_interval: Duration::from_secs(1),
            recovery: WorkerRecoveryConfig::default()
                .heartbeat_interval(Duration::from_secs(10))
                .sweep_interval(Duration::from_secs(30))
                .sweep_threshold(Duration::from_secs(60))
                .recovery_delay(Duration::ZERO),
            runs: HashMap::new(),
            local_queue: Some(LocalQueueConfig::default()),
            step_timeout: None,
            bookkeeping_budget: Duration::from_secs(300),
            upkeep: Some(Duration::from_secs(2)),
            configure: Vec::new(),
        }
    }

    /// Uses `schema`: the same as the servers' [`GraphileBackend`](crate::GraphileBackend).
    ///
    /// # Panics
    ///
    /// If `schema` is not a plain identifier of at most 63 bytes.
    pub fn schema(mut self, schema: &str) -> GraphileWorker {
        self.schema = Schema::new(schema).unwrap_or_else(|error| panic!("{error}"));
        self
    }

    /// Runs stored steps of type `T`.
    pub fn task<T: DurableTask>(mut self) -> GraphileWorker {
        self.runs.insert(T::NAME, run_fn::<T>());
        self
    }

    /// How many steps this worker runs at once; steps of one chain never
    /// run at once.
    ///
    /// # Panics
    ///
    /// If `n` is 0.
    pub fn concurrency(mut self, n: usize) -> GraphileWorker {
        assert!(n > 0, "concurrency must be at least 1");
        self.concurrency = n;
        self
    }

    /// How often an idle worker asks the database for jobs, besides being
    /// told of new ones; 1 s by default.
    ///
    /// # Panics
    ///
    /// If `interval` is zero.
    pub fn poll_interval(mut self, interval: Duration) -> GraphileWorker {
        assert!(
            !interval.is_zero(),
            "the poll interval must be greater than zero"
        );
        self.poll_interval = interval;
        self
    }

    /// Sets crash recovery's timings (it stays on). A worker that stops
    /// writing its heartbeat for `sweep_threshold` is taken for dead; keep
    /// the threshold well above the heartbeat interval, or live workers'
    /// steps are run twice.
    pub fn recovery(mut self, config: WorkerRecoveryConfig) -> GraphileWorker {
        self.recovery = WorkerRecoveryConfig {
            enabled: true,
            ..config
        };
        self
    }

    /// Cancels a step's attempt that runs longer than `limit`: it counts as
    /// a failed attempt, retried after its backoff. Without it a step that
    /// hangs holds its chain (its worker keeps writing heartbeats, so crash
    /// recovery does not take it).
    ///
    /// # Panics
    ///
    /// If `limit` is zero.
    pub fn step_timeout(mut self, limit: Duration) -> GraphileWorker {
        assert!(!limit.is_zero(), "step_timeout must be greater than zero");
        self.step_timeout = Some(limit);
        self
    }

    /// How long a step retries its bookkeeping (recording it, queueing the
    /// next) when the database fails, before the attempt counts as failed;
    /// 5 minutes by default. A blip then costs no attempt. Past it the step
    /// will run again; if that was its last attempt, the upkeep of a worker
    /// finds the chain stopped and queues the step again.
    pub fn bookkeeping_budget(mut self, budget: Duration) -> GraphileWorker {
        self.bookkeeping_budget = budget;
        self
    }

    /// How often the upkeep runs (2 s by default; the repair of stopped
    /// chains runs every 30 upkeeps), or `None` for none.
    pub fn upkeep(mut self, every: Option<Duration>) -> GraphileWorker {
        self.upkeep = every;
        self
    }

    /// How the worker fetches jobs: through graphile_worker's local queue
    /// with `config` (the default is `LocalQueueConfig::default()`, up to 100
    /// jobs locked ahead), or with `None` one job per slot and signal. An
    /// idle local queue waits one poll interval between fetches.
    pub fn local_queue(mut self, config: Option<LocalQueueConfig>) -> GraphileWorker {
        self.local_queue = config;
        self
    }

    /// Adjusts graphile_worker's own options last (shutdown signals,
    /// hooks…). Set the poll interval with
    /// [`poll_interval`](GraphileWorker::poll_interval) rather than here: the
    /// local queue's pause between idle fetches follows it.
    pub fn configure(
        mut self,
        f: impl FnOnce(WorkerOptions) -> WorkerOptions + Send + 'static,
    ) -> GraphileWorker {
        self.configure.push(Box::new(f));
        self
    }

    /// Creates or upgrades the tables and builds the worker; call
    /// [`Worker::run`] on it, and [`Worker::request_shutdown`] to stop it.
    /// The worker does not listen for OS signals unless
    /// [`configure`](GraphileWorker::configure)d to. Its upkeep runs on the
    /// current runtime for as long as the worker is alive.
    pub async fn init(self) -> Result<Worker, Error> {
        migrate(&self.pool, &self.schema).await?;
        let statements = Arc::new(Statements::new(&self.schema));
        let recorder = Recorder::start(self.pool.clone(), statements.clone());
        let tasks = Tasks::new(
            self.runs,
            statements.clone(),
            recorder,
            self.step_timeout,
            self.bookkeeping_budget,
        );
        let upkeep = self
            .upkeep
            .map(|every| Upkeep::start(self.pool.clone(), statements, every));
        let mut options = WorkerOptions::default()
            .pg_pool(self.pool)
            .schema(self.schema.name())
            .concurrency(self.concurrency)
            .poll_interval(self.poll_interval)
            .listen_os_shutdown_signals(false)
            .worker_recovery(self.recovery)
            // A step's own statement removes its job; graphile_worker's
            // completion finds nothing left, so it can wait for company.
            .complete_job_batch_delay(Duration::from_millis(2))
            .define_job::<StepJob>()
            .add_extension(tasks)
            .add_extension(upkeep);
        if let Some(config) = self.local_queue {
            // An idle local queue would otherwise fetch again at once, in a
            // loop: thousands of queries a second with nothing to do.
            let delay = RefetchDelayConfig::default()
                .with_duration(self.poll_interval)
                .with_max_abort_threshold(1);
            options = options.local_queue(
                config
                    .with_refetch_delay(delay)
                    .with_ttl(Duration::from_secs(60)),
            );
        }
        for configure in self.configure {
            options = configure(options);
        }
        Ok(options.init().await?)
    }
}

/// The worker's upkeep, stopped when the worker (which holds this as an
/// extension) is dropped.
#[derive(Clone, Debug)]
struct Upkeep {
    _stop: Arc<StopOnDrop>,
}

#[derive(Debug)]
struct StopOnDrop(AbortHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How many upkeeps between two repairs.
const REPAIR_EVERY: u32 = 30;

impl Upkeep {
    fn start(pool: PgPool, statements: Arc<Statements>, every: Duration) -> Upkeep {
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut round = 0u32;
            loop {
                ticks.tick().await;
                round = round.wrapping_add(1);
                // Wakes the workers if a job was runnable for two rounds and
                // nobody took it.
                let pulse = sqlx::query(AssertSqlSafe(statements.pulse.as_str()))
                    .bind((every * 2).as_secs_f64())
                    .execute(&pool)
                    .await;
                if let Err(error) = pulse {
                    tracing::debug!(error = %error, "durable worker upkeep: pulse failed");
                }
                if round.is_multiple_of(REPAIR_EVERY) {
                    repair(&pool, &statements, every * REPAIR_EVERY).await;
                }
            }
        });
        Upkeep {
            _stop: Arc::new(StopOnDrop(task.abort_handle())),
        }
    }
}

/// Queues again the steps of chains that stopped without finishing: waiting
/// steps whose turn has come, older than `older_than`, with no job. One
/// worker at a time repairs, in a transaction that took the repair lock
/// before its statement looks, so it sees what the last repair queued.
async fn repair(pool: &PgPool, statements: &Statements, older_than: Duration) {
    let repaired = async {
        let mut tx = pool.begin().await?;
        let (locked,): (bool,) = sqlx::query_as(AssertSqlSafe(statements.repair_lock.as_str()))
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok((0,));
        }
        let repaired: (i64,) = sqlx::query_as(AssertSqlSafe(statements.repair.as_str()))
            .bind(older_than.as_secs_f64())
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(repaired)
    }
    .await;
    match repaired {
        Ok((0,)) => {}
        Ok((n,)) => tracing::warn!(
            steps = n,
            "durable worker upkeep: steps of stopped chains queued again"
        ),
        Err(error) => tracing::debug!(error = %error, "durable worker upkeep: repair failed"),
    }
}

impl fmt::Debug for GraphileWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.runs.keys().copied().collect();
        names.sort_unstable();
        f.debug_struct("GraphileWorker")
            .field("schema", &self.schema.name())
            .field("concurrency", &self.concurrency)
            .field("tasks", &names)
            .finish_non_exhaustive()
    }
}
