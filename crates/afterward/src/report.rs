//! What a drain reports, and the failure policy that shapes it.

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    completed: usize,
    failed: usize,
    panicked: usize,
    timed_out: usize,
    skipped: usize,
    abandoned: usize,
    rejected: usize,
    pub(crate) persisted: usize,
    pub(crate) persist_failed: usize,
}

impl DrainReport {
    /// Tasks that ran to the end and returned `()` or `Ok`.
    pub fn completed(&self) -> usize {
        self.completed
    }

    /// Tasks that returned `Err`.
    pub fn failed(&self) -> usize {
        self.failed
    }

    /// Tasks that panicked. The panic was caught; nothing else was affected.
    pub fn panicked(&self) -> usize {
        self.panicked
    }

    /// Tasks that ran past the runner's task timeout: async tasks cancelled
    /// at the deadline, and sync tasks that overran it (they run to the end).
    pub fn timed_out(&self) -> usize {
        self.timed_out
    }

    /// Tasks not run on purpose: an earlier task failed under
    /// [`FailurePolicy::StopQueue`], the queue was handed to
    /// [`Runner::skip`](crate::Runner::skip), or the task's run condition
    /// ([`RunIf`](crate::RunIf)) did not hold.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Tasks given up on because the drain was cancelled: by
    /// [`Runner::shutdown`](crate::Runner::shutdown) at its deadline, or by
    /// the runtime shutting down.
    pub fn abandoned(&self) -> usize {
        self.abandoned
    }

    /// Tasks the runner refused to take: its backlog was full (see
    /// [`max_backlog`](crate::RunnerBuilder::max_backlog)), it had already
    /// shut down, or its runtime was gone.
    pub fn rejected(&self) -> usize {
        self.rejected
    }

    /// Durable tasks handed to the runner's durable backend, which stored
    /// them; workers run them later (see [`durable`](crate::durable)).
    #[cfg(feature = "durable")]
    #[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
    pub fn persisted(&self) -> usize {
        self.persisted
    }

    /// Durable tasks whose hand-off to the durable backend failed: the
    /// backend returned an error, or a task could not be serialized. Each
    /// was logged with its name and the error; none of them will run.
    #[cfg(feature = "durable")]
    #[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
    pub fn persist_failed(&self) -> usize {
        self.persist_failed
    }

    /// All the tasks the drain took from its queue: the sum of the others.
    pub fn total(&self) -> usize {
        self.completed
            + self.failed
            + self.panicked
            + self.timed_out
            + self.skipped
            + self.abandoned
            + self.rejected
            + self.persisted
            + self.persist_failed
    }

    pub(crate) fn add(&mut self, kind: Kind, n: usize) {
        *match kind {
            Kind::Completed => &mut self.completed,
            Kind::Failed => &mut self.failed,
            Kind::Panicked => &mut self.panicked,
            Kind::TimedOut => &mut self.timed_out,
            Kind::Skipped => &mut self.skipped,
            Kind::Abandoned => &mut self.abandoned,
            Kind::Rejected => &mut self.rejected,
            Kind::Persisted => &mut self.persisted,
            Kind::PersistFailed => &mut self.persist_failed,
        } += n;
    }

    pub(crate) fn of(kind: Kind, n: usize) -> DrainReport {
        let mut report = DrainReport::default();
        report.add(kind, n);
        report
    }
}

/// Adds two reports field by field, as when a request's queue and its
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
        self.completed += other.completed;
        self.failed += other.failed;
        self.panicked += other.panicked;
        self.timed_out += other.timed_out;
        self.skipped += other.skipped;
        self.abandoned += other.abandoned;
        self.rejected += other.rejected;
        self.persisted += other.persisted;
        self.persist_failed += other.persist_failed;
    }
}

/// The one way a task that reached a runner ends up counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Completed,
    Failed,
    Panicked,
    TimedOut,
    Skipped,
    Abandoned,
    Rejected,
    /// Handed to the durable backend, which stored it.
    Persisted,
    /// Its hand-off to the durable backend failed.
    PersistFailed,
}
