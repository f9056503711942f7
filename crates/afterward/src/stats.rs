//! The runner's counters, written by drains and by the runner, and the
//! [`Stats`] snapshot users read.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::counts::{Counts, TaskOutcome};

/// Every task that reaches a runner is counted once in `received` and, in
/// the end, once in exactly one outcome.
///
/// Outcomes are counted before the drain that owns the task can end, so a
/// caller that has seen the drain end (through `wait_idle`, `shutdown` or a
/// `DrainHandle`) sees the counters agree with it.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    received: AtomicUsize,
    outcomes: [AtomicUsize; TaskOutcome::ALL.len()],
}

impl Counters {
    pub(crate) fn received(&self, n: usize) {
        if n > 0 {
            self.received.fetch_add(n, Relaxed);
        }
    }

    pub(crate) fn count(&self, outcome: TaskOutcome, n: usize) {
        if n > 0 {
            self.outcomes[outcome as usize].fetch_add(n, Relaxed);
        }
    }

    /// Adds a drain's counts.
    pub(crate) fn add(&self, counts: &Counts) {
        for (outcome, n) in counts.iter() {
            self.count(outcome, n);
        }
    }

    /// Counts tasks that arrive and are settled in one step: skipped,
    /// abandoned or rejected without running.
    pub(crate) fn received_and(&self, outcome: TaskOutcome, n: usize) {
        self.received(n);
        self.count(outcome, n);
    }

    fn outcomes(&self) -> Counts {
        let mut counts = Counts::default();
        for outcome in TaskOutcome::ALL {
            counts.add(outcome, self.outcomes[outcome as usize].load(Relaxed));
        }
        counts
    }

    /// Tasks received and not yet counted in an outcome: waiting, or
    /// running. Read without a lock, so only an estimate while tasks move.
    pub(crate) fn outstanding(&self) -> usize {
        let settled = self.outcomes().total();
        self.received.load(Relaxed).saturating_sub(settled)
    }

    pub(crate) fn snapshot(&self, drains_running: usize, drains_waiting: usize) -> Stats {
        // Outcomes first: read the other way round, a task counted in
        // between would show as counted and not received.
        let outcomes = self.outcomes();
        Stats {
            tasks_received: self.received.load(Relaxed),
            outcomes,
            drains_running,
            drains_waiting,
        }
    }
}

/// A snapshot of a [`Runner`](crate::Runner)'s counters, from
/// [`Runner::stats`](crate::Runner::stats).
///
/// The task counters only grow. Once the runner is idle or shut down,
/// `tasks_received()` equals [`accounted()`](Stats::accounted), the sum of
/// the outcome counters; while drains run, the difference is the tasks
/// waiting or running.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    tasks_received: usize,
    outcomes: Counts,
    drains_running: usize,
    drains_waiting: usize,
}

impl Stats {
    /// Tasks that reached the runner: those of every queue handed to it, and
    /// those added to such a queue afterwards.
    pub fn tasks_received(&self) -> usize {
        self.tasks_received
    }

    /// Tasks that ran to the end and returned `()` or `Ok`.
    pub fn completed(&self) -> usize {
        self.outcomes.get(TaskOutcome::Completed)
    }

    /// Tasks that returned `Err`.
    pub fn failed(&self) -> usize {
        self.outcomes.get(TaskOutcome::Failed)
    }

    /// Tasks that panicked.
    pub fn panicked(&self) -> usize {
        self.outcomes.get(TaskOutcome::Panicked)
    }

    /// Tasks that ran past the task timeout.
    pub fn timed_out(&self) -> usize {
        self.outcomes.get(TaskOutcome::TimedOut)
    }

    /// Tasks not run on purpose: after an earlier failure under
    /// [`FailurePolicy::StopQueue`](crate::FailurePolicy::StopQueue), or
    /// handed to [`Runner::skip`](crate::Runner::skip) (as `afterward-hyper`
    /// does when a handler fails), a run condition
    /// ([`RunIf`](crate::RunIf)) that did not hold, or removed after the
    /// hand-off by [`TaskQueue::forget`](crate::TaskQueue::forget) or by a
    /// newer task with the same key.
    pub fn skipped(&self) -> usize {
        self.outcomes.get(TaskOutcome::Skipped)
    }

    /// Tasks given up on by a shutdown at its deadline, or because the
    /// runtime was shutting down (or, rarely, because a drain panicked
    /// outside its tasks). A shutdown's
    /// [`ShutdownReport`](crate::ShutdownReport) names each task it
    /// abandoned, so the two are equal when the runner abandoned nothing
    /// before its shutdown; every abandoned task is logged with its name
    /// either way.
    pub fn abandoned(&self) -> usize {
        self.outcomes.get(TaskOutcome::Abandoned)
    }

    /// Tasks refused at the door: handed to the runner while its backlog
    /// was full (see [`max_backlog`](crate::RunnerBuilder::max_backlog)),
    /// after its shutdown returned, or after its runtime was gone. Each was
    /// logged with its name when it was refused.
    pub fn rejected(&self) -> usize {
        self.outcomes.get(TaskOutcome::Rejected)
    }

    /// Durable tasks handed to the runner's durable backend, which stored
    /// them; from there on, the backend's workers run and count them.
    #[cfg(feature = "durable")]
    #[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
    pub fn persisted(&self) -> usize {
        self.outcomes.get(TaskOutcome::Persisted)
    }

    /// Durable tasks whose hand-off to the durable backend failed (the
    /// database was unreachable, say). Each was logged with its name and the
    /// error; the response was not affected, none of them was stored, and
    /// none will run.
    #[cfg(feature = "durable")]
    #[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
    pub fn persist_failed(&self) -> usize {
        self.outcomes.get(TaskOutcome::PersistFailed)
    }

    /// Durable tasks whose hand-off ended without the backend knowing
    /// whether they were stored (the answer to a commit was lost, and the
    /// database could not be asked again in time): they may run. Each was
    /// logged with its name. See [`DrainReport::persist_unknown`](crate::DrainReport::persist_unknown).
    #[cfg(feature = "durable")]
    #[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
    pub fn persist_unknown(&self) -> usize {
        self.outcomes.get(TaskOutcome::PersistUnknown)
    }

    /// Drains running now.
    pub fn drains_running(&self) -> usize {
        self.drains_running
    }

    /// Drains waiting for a slot under
    /// [`max_concurrent_drains`](crate::RunnerBuilder::max_concurrent_drains).
    pub fn drains_waiting(&self) -> usize {
        self.drains_waiting
    }

    /// The outcome counters added up (the seven above, and with the
    /// `durable` feature `persisted`, `persist_failed` and
    /// `persist_unknown`); equal to
    /// [`tasks_received`](Stats::tasks_received) once the runner is idle or
    /// shut down.
    pub fn accounted(&self) -> usize {
        self.outcomes.total()
    }
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Stats");
        s.field("tasks_received", &self.tasks_received);
        for (outcome, n) in self.outcomes.iter() {
            s.field(outcome.label(), &n);
        }
        s.field("drains_running", &self.drains_running)
            .field("drains_waiting", &self.drains_waiting)
            .finish()
    }
}
