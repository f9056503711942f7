//! `RunnerBuilder`: the settings a runner is built with.

use std::time::Duration;

use tokio::runtime::Handle;

use super::Runner;
use crate::report::FailurePolicy;

/// Builds a [`Runner`] with settings other than the defaults.
///
/// | setting | default | why |
/// |---|---|---|
/// | [`max_concurrent_drains`](RunnerBuilder::max_concurrent_drains) | 64 | each running drain may hold one of tokio's blocking threads; this keeps a flood of sync tasks to 64 threads, and outbound work (SMTP, webhooks) to 64 calls at once |
/// | [`max_backlog`](RunnerBuilder::max_backlog) | 10,000 tasks | bounds the memory a flood can take (about 2 MB for tasks with a few small arguments); past it, tasks are refused, counted `rejected` and logged |
/// | [`task_timeout`](RunnerBuilder::task_timeout) | none | a timeout only the application can choose |
/// | [`failure_policy`](RunnerBuilder::failure_policy) | [`FailurePolicy::Continue`] | tasks of one request are usually independent |
/// | [`handle`](RunnerBuilder::handle) | the runtime `build` is called in | |
#[derive(Debug, Clone, Default)]
#[must_use = "a RunnerBuilder does nothing until `build` is called"]
pub struct RunnerBuilder {
    pub(super) settings: Settings,
    handle: Option<Handle>,
}

/// What every drain of a runner runs with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) max_concurrent_drains: usize,
    pub(crate) max_backlog: usize,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) failure_policy: FailurePolicy,
    /// Keeps the queues handed over instead of running them (`Recorder`).
    pub(crate) hold: bool,
    /// Where durable tasks go at hand-off.
    #[cfg(feature = "durable")]
    pub(crate) durable: Option<std::sync::Arc<dyn crate::durable::DurableBackend>>,
    /// Whether durable tasks whose hand-off failed run in-process instead.
    #[cfg(feature = "durable")]
    pub(crate) durable_fallback: bool,
}

impl Settings {
    pub(crate) const DEFAULT_MAX_CONCURRENT_DRAINS: usize = 64;
    pub(crate) const DEFAULT_MAX_BACKLOG: usize = 10_000;
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            max_concurrent_drains: Settings::DEFAULT_MAX_CONCURRENT_DRAINS,
            max_backlog: Settings::DEFAULT_MAX_BACKLOG,
            task_timeout: None,
            failure_policy: FailurePolicy::default(),
            hold: false,
            #[cfg(feature = "durable")]
            durable: None,
            #[cfg(feature = "durable")]
            durable_fallback: false,
        }
    }
}

impl RunnerBuilder {
    /// Runs at most `n` drains at a time (default 64). Queues handed over
    /// beyond that wait their turn, in order, within
    /// [`max_backlog`](RunnerBuilder::max_backlog). Tasks *within* a queue
    /// always run one at a time; this bounds how many queues run side by
    /// side, and so how many of tokio's blocking threads sync tasks can hold
    /// at once.
    ///
    /// # Panics
    ///
    /// If `n` is 0: no queue would ever run.
    pub fn max_concurrent_drains(mut self, n: usize) -> Self {
        assert!(n > 0, "max_concurrent_drains must be at least 1");
        self.settings.max_concurrent_drains = n;
        self
    }

    /// Keeps at most `n` tasks that have reached the runner but not started
    /// (default 10,000). A queue handed over when its tasks would not fit is
    /// not kept: each of its tasks is counted `rejected` and logged with its
    /// name, and the request it came from is answered as usual. A task
    /// added to a queue after its hand-off is refused the same way.
    ///
    /// The backlog is what a flood grows: drains waiting for a slot under
    /// [`max_concurrent_drains`](RunnerBuilder::max_concurrent_drains), and
    /// the tasks queued behind the one each drain is running. The bound is
    /// kept without a lock per task, so it may be passed by at most one
    /// task per running drain (at most `n` + `max_concurrent_drains`). For tower
    /// stacks, `afterward-hyper`'s `TaskLayer::backpressure` turns a full
    /// backlog into back-pressure instead (see [`Runner::capacity`]).
    ///
    /// # Panics
    ///
    /// If `n` is 0: every queue would be refused.
    ///
    /// [`Runner::capacity`]: crate::Runner::capacity
    pub fn max_backlog(mut self, n: usize) -> Self {
        assert!(n > 0, "max_backlog must be at least 1");
        self.settings.max_backlog = n;
        self
    }

    /// Gives each task at most `timeout` to run.
    ///
    /// An **async** task still running at the deadline is cancelled (dropped
    /// at its current `.await`), logged and counted `timed_out`. A **sync**
    /// task cannot be interrupted: it is never abandoned mid-run, the next
    /// task waits for it, and if it overran it is logged and counted
    /// `timed_out` when it returns.
    ///
    /// The runtime must have its time driver enabled (as `#[tokio::main]`
    /// and `Builder::enable_all` do).
    ///
    /// # Panics
    ///
    /// If `timeout` is zero: every task would time out.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "task_timeout must be greater than zero");
        self.settings.task_timeout = Some(timeout);
        self
    }

    /// What a drain does after a task fails, panics or times out. See
    /// [`FailurePolicy`].
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.settings.failure_policy = policy;
        self
    }

    /// Sends durable tasks to `backend` at hand-off instead of running them
    /// here (feature `durable`).
    ///
    /// When a queue is handed to the runner, its drain first gives every
    /// durable task of the queue to `backend` as one ordered chain, waits
    /// until it is stored, then runs the queue's in-process tasks. Stored
    /// tasks are counted [`persisted`](crate::Stats::persisted); a failed
    /// hand-off is logged with the tasks' names and counted
    /// [`persist_failed`](crate::Stats::persist_failed). A queue that is
    /// skipped (a failed handler, a disconnect) stores nothing. See the
    /// [`durable`](crate::durable) module.
    #[cfg(feature = "durable")]
    #[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
    pub fn durable(mut self, backend: impl crate::durable::DurableBackend) -> Self {
        self.settings.durable = Some(std::sync::Arc::new(backend));
        self
    }

    /// With `true`, durable tasks whose hand-off failed (the backend said
    /// they were not stored: the database is down, say) run in-process
    /// instead, at once, in the drain that tried to hand them off: once,
    /// without retries, and without surviving a crash. Each is logged as run
    /// without durability, and counted by how it ran (`completed`, `failed`,
    /// …) rather than `persist_failed`. A hand-off whose outcome is unknown
    /// ([`persist_unknown`](crate::Stats::persist_unknown)) never falls
    /// back: its tasks may have been stored, and would run twice. Off by
    /// default (feature `durable`), as in Laravel's failover queue.
    #[cfg(feature = "durable")]
    #[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
    pub fn durable_fallback(mut self, on: bool) -> Self {
        self.settings.durable_fallback = on;
        self
    }

    /// Runs drains on the runtime of `handle` instead of the one `build` is
    /// called in; lets a runner be built outside any runtime.
    pub fn handle(mut self, handle: Handle) -> Self {
        self.handle = Some(handle);
        self
    }

    /// Builds the runner.
    ///
    /// # Panics
    ///
    /// If no [`handle`](RunnerBuilder::handle) was given and this is not
    /// called inside a tokio runtime.
    pub fn build(self) -> Runner {
        let handle = self.handle.unwrap_or_else(|| {
            Handle::try_current().unwrap_or_else(|_| {
                panic!(
                    "afterward::Runner must be built inside a tokio runtime, \
                     or be given one with RunnerBuilder::handle"
                )
            })
        });
        Runner::from_parts(handle, self.settings)
    }
}
