//! The runner's counters, written by drains and by the runner, and the
//! [`Stats`] snapshot users read.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::report::{DrainReport, Kind};

/// Every task that reaches a runner is counted once in `received` and, in
/// the end, once in exactly one of the outcome counters.
///
/// Outcomes are counted before the drain that owns the task can end, so a
/// caller that has seen the drain end (through `wait_idle`, `shutdown` or a
/// `DrainHandle`) sees the counters agree with it.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    received: AtomicUsize,
    completed: AtomicUsize,
    failed: AtomicUsize,
    panicked: AtomicUsize,
    timed_out: AtomicUsize,
    skipped: AtomicUsize,
    abandoned: AtomicUsize,
    rejected: AtomicUsize,
    persisted: AtomicUsize,
    persist_failed: AtomicUsize,
}

impl Counters {
    pub(crate) fn received(&self, n: usize) {
        if n > 0 {
            self.received.fetch_add(n, Relaxed);
        }
    }

    pub(crate) fn count(&self, kind: Kind, n: usize) {
        if n == 0 {
            return;
        }
        match kind {
            Kind::Completed => &self.completed,
            Kind::Failed => &self.failed,
            Kind::Panicked => &self.panicked,
            Kind::TimedOut => &self.timed_out,
            Kind::Skipped => &self.skipped,
            Kind::Abandoned => &self.abandoned,
            Kind::Rejected => &self.rejected,
            Kind::Persisted => &self.persisted,
            Kind::PersistFailed => &self.persist_failed,
        }
        .fetch_add(n, Relaxed);
    }

    /// Adds a drain's counts.
    pub(crate) fn add(&self, report: &DrainReport) {
        self.count(Kind::Completed, report.completed());
        self.count(Kind::Failed, report.failed());
        self.count(Kind::Panicked, report.panicked());
        self.count(Kind::TimedOut, report.timed_out());
        self.count(Kind::Skipped, report.skipped());
        self.count(Kind::Abandoned, report.abandoned());
        self.count(Kind::Rejected, report.rejected());
        self.count(Kind::Persisted, report.persisted);
        self.count(Kind::PersistFailed, report.persist_failed);
    }

    /// Counts tasks that arrive and are settled in one step: skipped,
    /// abandoned or rejected without running.
    pub(crate) fn received_and(&self, kind: Kind, n: usize) {
        self.received(n);
        self.count(kind, n);
    }

    /// Tasks received and not yet counted in an outcome: waiting, or
    /// running. Read without a lock, so only an estimate while tasks move.
    pub(crate) fn outstanding(&self) -> usize {
        let settled = self.completed.load(Relaxed)
            + self.failed.load(Relaxed)
            + self.panicked.load(Relaxed)
            + self.timed_out.load(Relaxed)
            + self.skipped.load(Relaxed)
            + self.abandoned.load(Relaxed)
            + self.rejected.load(Relaxed)
            + self.persisted.load(Relaxed)
            + self.persist_failed.load(Relaxed);
        self.received.load(Relaxed).saturating_sub(settled)
    }

    pub(crate) fn snapshot(&self, drains_running: usize, drains_waiting: usize) -> Stats {
        Stats {
            tasks_received: self.received.load(Relaxed),
            completed: self.completed.load(Relaxed),
            failed: self.failed.load(Relaxed),
            panicked: self.panicked.load(Relaxed),
            timed_out: self.timed_out.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            abandoned: self.abandoned.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            persisted: self.persisted.load(Relaxed),
            persist_failed: self.persist_failed.load(Relaxed),
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    tasks_received: usize,
    completed: usize,
    failed: usize,
    panicked: usize,
    timed_out: usize,
    skipped: usize,
    abandoned: usize,
    rejected: usize,
    persisted: usize,
    persist_failed: usize,
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
        self.completed
    }

    /// Tasks that returned `Err`.
    pub fn failed(&self) -> usize {
        self.failed
    }

    /// Tasks that panicked.
    pub fn panicked(&self) -> usize {
        self.panicked
    }

    /// Tasks that ran past the task timeout.
    pub fn timed_out(&self) -> usize {
        self.timed_out
    }

    /// Tasks not run on purpose: after an earlier failure under
    /// [`FailurePolicy::StopQueue`](crate::FailurePolicy::StopQueue), or
    /// handed to [`Runner::skip`](crate::Runner::skip) (as `afterward-hyper`
    /// does when a handler fails), a run condition
    /// ([`RunIf`](crate::RunIf)) that did not hold, or removed after the
    /// hand-off by [`TaskQueue::forget`](crate::TaskQueue::forget) or by a
    /// newer task with the same key.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Tasks given up on by a shutdown at its deadline, or because the
    /// runtime was shutting down (or, rarely, because a drain panicked
    /// outside its tasks). A shutdown's
    /// [`ShutdownReport`](crate::ShutdownReport) names each task it
    /// abandoned, so the two are equal when the runner abandoned nothing
    /// before its shutdown; every abandoned task is logged with its name
    /// either way.
    pub fn abandoned(&self) -> usize {
        self.abandoned
    }

    /// Tasks refused at the door: handed to the runner while its backlog
    /// was full (see [`max_backlog`](crate::RunnerBuilder::max_backlog)),
    /// after its shutdown returned, or after its runtime was gone. Each was
    /// logged with its name when it was refused.
    pub fn rejected(&self) -> usize {
        self.rejected
    }

    /// Durable tasks handed to the runner's durable backend, which stored
    /// them; from there on, the backend's workers run and count them.
    #[cfg(feature = "durable")]
    #[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
    pub fn persisted(&self) -> usize {
        self.persisted
    }

    /// Durable tasks whose hand-off to the durable backend failed (the
    /// database was unreachable, say). Each was logged with its name and the
    /// error; the response was not affected, and none of them will run.
    #[cfg(feature = "durable")]
    #[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
    pub fn persist_failed(&self) -> usize {
        self.persist_failed
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
    /// `durable` feature `persisted` and `persist_failed`); equal to
    /// [`tasks_received`](Stats::tasks_received) once the runner is idle or
    /// shut down.
    pub fn accounted(&self) -> usize {
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
}
