//! Settling the queues that will not run: abandoned by a shutdown, or
//! refused by a runner that can no longer run them.

use super::shared::Shared;
use super::state::{Phase, RunState, Waiting};
use crate::counts::TaskOutcome;
use crate::metrics;
use crate::queue::{Fate, Inner, Registration};
use crate::report::DrainReport;
use crate::task::{Task, TaskName, Why, settle};

impl Shared {
    /// Counts tasks given up on, and keeps their names for the report of the
    /// shutdown under way. Tasks abandoned outside a shutdown (the runtime
    /// going away, a drain panicking outside its tasks) are logged where it
    /// happens, and not kept for a report that may never come.
    pub(super) fn count_abandoned(&self, run: &mut RunState, names: &[TaskName]) {
        self.counters.count(TaskOutcome::Abandoned, names.len());
        if matches!(run.phase, Phase::Draining | Phase::Cancelled) {
            run.abandoned.extend_from_slice(names);
        }
    }

    /// Counts `tasks`, which will not run, for `why`: abandoned ones with
    /// their names kept for a shutdown's report, others by their outcome.
    pub(super) fn count_settled(&self, run: &mut RunState, why: Why<'_>, tasks: &[Task]) {
        match why.outcome().unwrap_or(TaskOutcome::Abandoned) {
            TaskOutcome::Abandoned => {
                let names: Vec<TaskName> = tasks.iter().map(Task::name).collect();
                self.count_abandoned(run, &names);
            }
            outcome => self.counters.count(outcome, tasks.len()),
        }
    }

    /// Settles a queue that was handed over and will not run: abandoned
    /// (named in the shutdown's report) or refused.
    pub(super) fn settle_waiting(&self, waiting: Waiting, why: Why<'static>) {
        let tasks: Vec<Task> = {
            let mut state = waiting.queue.lock();
            state.owner.fate = Fate::Run { scheduled: false };
            state.tasks.take_all()
        };
        let outcome = why.outcome().unwrap_or(TaskOutcome::Abandoned);
        self.count_settled(&mut self.lock(), why, &tasks);
        self.made_room();
        waiting
            .report
            .send(&waiting.queue, DrainReport::of(outcome, tasks.len()));
        settle(tasks, why);
    }

    /// Abandons the tasks of an open queue (a request still in flight) at
    /// the shutdown deadline. They reach the runner here, so they are
    /// counted received too.
    pub(super) fn abandon_open(&self, inner: &Inner) {
        let tasks: Vec<Task> = {
            let mut state = inner.lock();
            if state.owner.fate != Fate::Open {
                // Handed over meanwhile; the hand-off accounted for it.
                return;
            }
            // The runner no longer lists it; it must not unregister a key
            // that may be given to another queue.
            state.owner.registration = Registration::Refused;
            state.tasks.take_all()
        };
        let names: Vec<TaskName> = tasks.iter().map(Task::name).collect();
        self.counters.received(tasks.len());
        if metrics::ENABLED {
            names.iter().for_each(metrics::received);
        }
        self.count_abandoned(&mut self.lock(), &names);
        self.made_room();
        settle(tasks, Why::Abandoned);
    }
}
