//! What a drain reports, and the failure policy that shapes it.

use std::fmt;

use crate::counts::{Counts, TaskOutcome};

/// What a drain does after a task fails, panics or times out.
///
/// The failure itself is always logged and counted; this only decides the
/// fate of the tasks queued after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Run the remaining tasks anyway (the default). Tasks of one request
    /// are often independent: a failed audit-log write should not cancel the
    /// welcome email.
    #[default]
    Continue,
    /// Do not run the remaining tasks of that queue; count them `skipped`
    /// and log them. This is what Starlette does, where an exception in one
    /// background task ends the rest.
    StopQueue,
}

/// What one drain did with the tasks it took: how many completed, failed,
/// panicked, timed out, were skipped, abandoned or rejected, and, with a
/// durable backend, how many left the process.
///
/// Every task a drain takes from its queue is counted in exactly one of
/// these, so [`total`](DrainReport::total) is the number of tasks the drain
/// took.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let queue = afterward::TaskQueue::new();
/// queue.add_task(|| (), ());
/// queue.add_task(|| -> Result<(), String> { Err("disk full".into()) }, ());
/// queue.add_task(|| -> () { panic!("bug") }, ());
///
/// let report = queue.drain().await;
/// assert_eq!(report.completed(), 1);
/// assert_eq!(report.failed(), 1);
/// assert_eq!(report.panicked(), 1);
/// assert_eq!(report.total(), 3);
/// # }
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    counts: Counts,
}

impl DrainReport {
    /// Tasks that ran to the end and returned `()` or `Ok`.
    pub fn completed(&self) -> usize {
        self.counts.get(TaskOutcome::Completed)
    }

    /// Tasks that returned `Err`.
    pub fn failed(&self) -> usize {
        self.counts.get(TaskOutcome::Failed)
    }

    /// Tasks that panicked. The panic was caught; nothing else was affected.
    pub fn panicked(&self) -> usize {
        self.counts.get(TaskOutcome::Panicked)
    }

    /// Tasks that ran past the runner's task timeout: async tasks cancelled
    /// at the deadline, and sync tasks that overran it (they run to the end).
    pub fn timed_out(&self) -> usize {
        self.counts.get(TaskOutcome::TimedOut)
    }

    /// Tasks not run on purpose: an earlier task failed under
    /// [`FailurePolicy::StopQueue`], the queue was handed to
    /// [`Runner::skip`](crate::Runner::skip), or the task's run condition
    /// ([`RunIf`](crate::RunIf)) did not hold.
    pub fn skipped(&self) -> usize {
        self.counts.get(TaskOutcome::Skipped)
    }

    /// Tasks given up on because the drain was cancelled: by
    /// [`Runner::shutdown`](crate::Runner::shutdown) at its deadline, or by
    /// the runtime shutting down.
    pub fn abandoned(&self) -> usize {
        self.counts.get(TaskOutcome::Abandoned)
    }

    /// Tasks the runner refused to take: its backlog was full (see
    /// [`max_backlog`](crate::RunnerBuilder::max_backlog)), it had already
    /// shut down, or its runtime was gone.
    pub fn rejected(&self) -> usize {
        self.counts.get(TaskOutcome::Rejected)
    }

    /// Durable tasks handed to the runner's durable backend, which stored
    /// them; workers run them later (see [`durable`](crate::durable)).
    #[cfg(feature = "durable")]
    #[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
    pub fn persisted(&self) -> usize {
        self.counts.get(TaskOutcome::Persisted)
    }

    /// Durable tasks whose hand-off to the durable backend failed: the
    /// backend returned an error, or a task could not be serialized. Each
    /// was logged with its name and the error; none of them was stored, and
    /// none will run.
    #[cfg(feature = "durable")]
    #[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
    pub fn persist_failed(&self) -> usize {
        self.counts.get(TaskOutcome::PersistFailed)
    }

    /// Durable tasks whose hand-off ended without the backend knowing
    /// whether they were stored: the answer to the database's commit was
    /// lost, and the database could not be asked again in time. They may
    /// run; each was logged with its name. Rare, and never counted as
    /// either of the two above, which are exact.
    #[cfg(feature = "durable")]
    #[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
    pub fn persist_unknown(&self) -> usize {
        self.counts.get(TaskOutcome::PersistUnknown)
    }

    /// All the tasks the drain took from its queue: the sum of the others.
    pub fn total(&self) -> usize {
        self.counts.total()
    }

    #[inline]
    pub(crate) fn add(&mut self, outcome: TaskOutcome, n: usize) {
        self.counts.add(outcome, n);
    }

    pub(crate) fn of(outcome: TaskOutcome, n: usize) -> DrainReport {
        DrainReport {
            counts: Counts::of(outcome, n),
        }
    }
}

/// Adds two reports outcome by outcome, as when a request's queue and its
/// response's queue are reported as one.
impl std::ops::Add for DrainReport {
    type Output = DrainReport;

    fn add(mut self, other: DrainReport) -> DrainReport {
        self += other;
        self
    }
}

impl std::ops::AddAssign for DrainReport {
    fn add_assign(&mut self, other: DrainReport) {
        self.counts += other.counts;
    }
}

impl fmt::Debug for DrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.counts.debug_struct(f, "DrainReport").finish()
    }
}
