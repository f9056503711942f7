//! `RunnerBuilder`: the settings a runner is built with.

use std::time::Duration;

use tokio::runtime::Handle;

use super::Runner;
use crate::report::FailurePolicy;

/// Builds a [`Runner`] with settings other than the defaults.
///
/// | setting | default |
/// |---|---|
/// | [`max_concurrent_drains`](RunnerBuilder::max_concurrent_drains) | no limit |
/// | [`task_timeout`](RunnerBuilder::task_timeout) | none |
/// | [`failure_policy`](RunnerBuilder::failure_policy) | [`FailurePolicy::Continue`] |
/// | [`handle`](RunnerBuilder::handle) | the runtime `build` is called in |
#[derive(Debug, Clone, Default)]
#[must_use = "a RunnerBuilder does nothing until `build` is called"]
pub struct RunnerBuilder {
    settings: Settings,
    handle: Option<Handle>,
}

/// What every drain of a runner runs with.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    pub(crate) max_concurrent_drains: Option<usize>,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) failure_policy: FailurePolicy,
}

impl RunnerBuilder {
    /// Runs at most `n` drains at a time. Queues handed over beyond that
    /// wait their turn, in order. Tasks *within* a queue always run one at a
    /// time; this bounds how many queues run side by side.
    ///
    /// # Panics
    ///
    /// If `n` is 0: no queue would ever run.
    pub fn max_concurrent_drains(mut self, n: usize) -> Self {
        assert!(n > 0, "max_concurrent_drains must be at least 1");
        self.settings.max_concurrent_drains = Some(n);
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
