//! What a drain or a sync batch takes next, with each task's run condition
//! checked as it is taken (durable tasks have theirs checked as they are
//! persisted, in `persist.rs`).

use crate::metrics;
use crate::queue::State;
use crate::task::Task;

/// What is at the front of a queue, for a drain or a sync batch.
pub(super) enum Front {
    Empty,
    /// Taken out: its run condition does not hold, for this reason.
    Unmet(Task, &'static str),
    /// A sync task to run, left in place.
    Sync,
    /// An async task to run, left in place.
    Async,
}

/// Looks at the front of the queue: the one place a task's run condition is
/// checked. Only a task that will not run is taken out.
#[inline]
pub(super) fn look_at_front(state: &mut State) -> Front {
    let Some(task) = state.tasks.front() else {
        return Front::Empty;
    };
    match task.refuses(state.outcome) {
        None if task.is_sync() => Front::Sync,
        None => Front::Async,
        Some(why) => match pop(state) {
            Some(task) => Front::Unmet(task, why),
            None => Front::Empty,
        },
    }
}

/// Takes the front task out of the queue, to run it now: returns it and
/// when it started, for the metrics.
#[inline]
pub(super) fn take_front(state: &mut State) -> Option<(Task, metrics::Started)> {
    let task = pop(state)?;
    let started = metrics::waited(|| task.name(), state.handed);
    Some((task, started))
}

/// Takes the front task out of the queue.
#[inline]
fn pop(state: &mut State) -> Option<Task> {
    let task = state.tasks.pop_front()?;
    if state.tasks.is_empty() {
        state.forget_if_emptied();
    }
    Some(task)
}
