//! The outcome table: the one list of the ways a task that reached a runner
//! ends up counted, and `Counts`, one number per way.
//!
//! [`DrainReport`](crate::DrainReport), [`Stats`](crate::Stats) and the
//! runner's counters are all made of `Counts`, so the conservation sum
//! (`received == completed + … + persist_unknown`) is written once, in
//! [`Counts::total`].

use std::fmt;
use std::ops::{Add, AddAssign};

/// How a task that reached a runner ends up counted: exactly one of these,
/// once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TaskOutcome {
    /// Ran to the end and returned `()` or `Ok`.
    Completed,
    /// Returned `Err`.
    Failed,
    /// Panicked; the panic was caught.
    Panicked,
    /// Ran past the task timeout.
    TimedOut,
    /// Not run on purpose: a run condition, `StopQueue`, a skipped queue, or
    /// removed after its hand-off.
    Skipped,
    /// Given up on by a shutdown or a runtime going away.
    Abandoned,
    /// Refused at the door: a full backlog, or a runner shut down.
    Rejected,
    /// Handed to the durable backend, which stored it.
    Persisted,
    /// Its hand-off to the durable backend failed: it was not stored.
    PersistFailed,
    /// Its hand-off ended without the backend knowing whether it was
    /// stored (the database's answer to a commit was lost, and could not be
    /// looked up): it may run.
    PersistUnknown,
}

impl TaskOutcome {
    /// Every outcome, in the order reports list them.
    pub(crate) const ALL: [TaskOutcome; 10] = [
        TaskOutcome::Completed,
        TaskOutcome::Failed,
        TaskOutcome::Panicked,
        TaskOutcome::TimedOut,
        TaskOutcome::Skipped,
        TaskOutcome::Abandoned,
        TaskOutcome::Rejected,
        TaskOutcome::Persisted,
        TaskOutcome::PersistFailed,
        TaskOutcome::PersistUnknown,
    ];

    /// Its name in reports, logs and metric labels.
    pub(crate) fn label(self) -> &'static str {
        match self {
            TaskOutcome::Completed => "completed",
            TaskOutcome::Failed => "failed",
            TaskOutcome::Panicked => "panicked",
            TaskOutcome::TimedOut => "timed_out",
            TaskOutcome::Skipped => "skipped",
            TaskOutcome::Abandoned => "abandoned",
            TaskOutcome::Rejected => "rejected",
            TaskOutcome::Persisted => "persisted",
            TaskOutcome::PersistFailed => "persist_failed",
            TaskOutcome::PersistUnknown => "persist_unknown",
        }
    }

    #[inline]
    fn index(self) -> usize {
        self as usize
    }
}

/// One number per [`TaskOutcome`].
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts([usize; TaskOutcome::ALL.len()]);

impl Counts {
    /// `n` tasks, all with `outcome`.
    pub(crate) fn of(outcome: TaskOutcome, n: usize) -> Counts {
        let mut counts = Counts::default();
        Counts::add(&mut counts, outcome, n);
        counts
    }

    #[inline]
    pub(crate) fn add(&mut self, outcome: TaskOutcome, n: usize) {
        self.0[outcome.index()] += n;
    }

    pub(crate) fn get(&self, outcome: TaskOutcome) -> usize {
        self.0[outcome.index()]
    }

    /// Every task counted: the conservation sum.
    pub(crate) fn total(&self) -> usize {
        self.0.iter().sum()
    }

    /// Each outcome with its number, in table order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (TaskOutcome, usize)> + '_ {
        TaskOutcome::ALL
            .iter()
            .map(|&outcome| (outcome, self.get(outcome)))
    }

    /// Writes the outcomes as the fields of a `Debug` struct named `name`;
    /// the caller adds any other fields and finishes it.
    pub(crate) fn debug_struct<'a, 'b>(
        &self,
        f: &'a mut fmt::Formatter<'b>,
        name: &str,
    ) -> fmt::DebugStruct<'a, 'b> {
        let mut s = f.debug_struct(name);
        for (outcome, n) in self.iter() {
            s.field(outcome.label(), &n);
        }
        s
    }
}

impl AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
    }
}

impl Add for Counts {
    type Output = Counts;

    fn add(mut self, other: Counts) -> Counts {
        self += other;
        self
    }
}

impl fmt::Debug for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.debug_struct(f, "Counts").finish()
    }
}

#[cfg(test)]
mod tests {
    use super::{Counts, TaskOutcome};

    #[test]
    fn the_table_lists_each_outcome_once_in_index_order() {
        for (i, outcome) in TaskOutcome::ALL.iter().enumerate() {
            assert_eq!(outcome.index(), i);
        }
        let labels: std::collections::HashSet<_> =
            TaskOutcome::ALL.iter().map(|o| o.label()).collect();
        assert_eq!(labels.len(), TaskOutcome::ALL.len());
    }

    #[test]
    fn total_adds_every_outcome() {
        let mut counts = Counts::default();
        for (i, outcome) in TaskOutcome::ALL.into_iter().enumerate() {
            counts.add(outcome, i + 1);
        }
        assert_eq!(counts.total(), (1..=TaskOutcome::ALL.len()).sum::<usize>());
        assert_eq!((counts + counts).get(TaskOutcome::Rejected), 14);
    }
}
