//! The worker side: a graphile_worker worker that runs chains' steps.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use afterward::DurableTask;
use graphile_worker::{LocalQueueConfig, Worker, WorkerOptions, WorkerRecoveryConfig, WorkerUtils};
use sqlx::PgPool;

use crate::schema::{chains_table, migrate};
use crate::step::StepJob;
use crate::tasks::{RunFn, Tasks, run_fn};
use crate::{DEFAULT_SCHEMA, Error};

/// Builds a graphile_worker [`Worker`] that runs the steps of stored chains.
///
/// Register every [`DurableTask`] the servers hand off with
/// [`task`](GraphileWorker::task); a step whose name no task has fails, and
/// is retried, so a worker of an older version leaves new tasks to newer
/// ones until their attempts run out.
///
/// Run as many workers as you like, in the servers or in processes of their
/// own, on any machine that reaches the database: graphile_worker locks each
/// job, and a chain has one job at a time, so its steps run in order.
///
/// It fetches jobs in batches through graphile_worker's local queue: a
/// worker that finds a backlog at start would otherwise take `concurrency`
/// jobs per poll interval. See [`local_queue`](GraphileWorker::local_queue).
///
/// Crash recovery is on: each worker writes a heartbeat, and a worker whose
/// heartbeat is older than the sweep threshold (60 s by default) is taken
/// for dead, its jobs released to run elsewhere. See
/// [`recovery`](GraphileWorker::recovery).
pub struct GraphileWorker {
    pool: PgPool,
    schema: String,
    concurrency: usize,
    recovery: WorkerRecoveryConfig,
    runs: HashMap<&'static str, RunFn>,
    local_queue: Option<LocalQueueConfig>,
    step_timeout: Option<Duration>,
    bookkeeping_budget: Duration,
    configure: Vec<Box<dyn FnOnce(WorkerOptions) -> WorkerOptions + Send>>,
}

impl GraphileWorker {
    /// A worker on `pool`, in schema `graphile_worker`, running up to 4
    /// steps (of different chains) at a time.
    pub fn new(pool: PgPool) -> GraphileWorker {
        GraphileWorker {
            pool,
            schema: DEFAULT_SCHEMA.to_owned(),
            concurrency: 4,
            recovery: WorkerRecoveryConfig::default()
                .heartbeat_interval(Duration::from_secs(10))
                .sweep_interval(Duration::from_secs(30))
                .sweep_threshold(Duration::from_secs(60))
                .recovery_delay(Duration::ZERO),
            runs: HashMap::new(),
            local_queue: Some(LocalQueueConfig::default()),
            step_timeout: None,
            bookkeeping_budget: Duration::from_secs(300),
            configure: Vec::new(),
        }
    }

    /// Uses `schema`: the same as the servers' [`GraphileBackend`](crate::GraphileBackend).
    pub fn schema(mut self, schema: &str) -> GraphileWorker {
        self.schema = schema.to_owned();
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

    /// How long a step retries its chain's bookkeeping (reading the chain,
    /// recording the step, queueing the next) when the database fails,
    /// before the attempt counts as failed; 5 minutes by default. A blip
    /// then costs no attempt. Past it, a step that was on its last attempt
    /// leaves its chain stopped at that step (logged with the chain's id).
    pub fn bookkeeping_budget(mut self, budget: Duration) -> GraphileWorker {
        self.bookkeeping_budget = budget;
        self
    }

    /// How the worker fetches jobs: through graphile_worker's local queue
    /// with `config` (the default is `LocalQueueConfig::default()`, up to 100
    /// jobs locked ahead), or with `None` one job per slot and signal.
    pub fn local_queue(mut self, config: Option<LocalQueueConfig>) -> GraphileWorker {
        self.local_queue = config;
        self
    }

    /// Adjusts graphile_worker's own options last (poll interval, shutdown
    /// signals, hooks…).
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
    /// [`configure`](GraphileWorker::configure)d to.
    pub async fn init(self) -> Result<Worker, Error> {
        migrate(&self.pool, &self.schema).await?;
        let tasks = Tasks::new(
            self.runs,
            WorkerUtils::new(self.pool.clone(), self.schema.clone()),
            chains_table(&self.schema),
            self.step_timeout,
            self.bookkeeping_budget,
        );
        let mut options = WorkerOptions::default()
            .pg_pool(self.pool)
            .schema(self.schema.as_str())
            .concurrency(self.concurrency)
            .listen_os_shutdown_signals(false)
            .worker_recovery(self.recovery)
            .define_job::<StepJob>()
            .add_extension(tasks);
        if let Some(config) = self.local_queue {
            options = options.local_queue(config);
        }
        for configure in self.configure {
            options = configure(options);
        }
        Ok(options.init().await?)
    }
}

impl fmt::Debug for GraphileWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.runs.keys().copied().collect();
        names.sort_unstable();
        f.debug_struct("GraphileWorker")
            .field("schema", &self.schema)
            .field("concurrency", &self.concurrency)
            .field("tasks", &names)
            .finish_non_exhaustive()
    }
}
