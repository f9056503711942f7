//! Sync batches: runs of consecutive sync tasks, sent to the blocking pool
//! in one trip.

use std::sync::Arc;

use tracing::{Dispatch, Span};

use super::run::{Ran, run_sync, task_span};
use super::{Ctx, release, skipped};
use crate::job::TaskName;
use crate::queue::{Fate, Inner};
use crate::report::{FailurePolicy, Kind};

/// A run of consecutive sync tasks, sent to the blocking pool in one trip.
///
/// It takes tasks from the front of the queue for as long as they are sync,
/// so a request with several blocking tasks pays for one `spawn_blocking`,
/// not one each. It holds the queue's drain lock until it ends, even if the
/// drain that sent it was cancelled meanwhile.
pub(super) struct Batch {
    pub(super) queue: Arc<Inner>,
    pub(super) ctx: Ctx,
    /// The subscriber of the drain, so the tasks' logs reach the same place
    /// even when it was set with `tracing::subscriber::with_default`.
    pub(super) dispatch: Dispatch,
}

impl Batch {
    pub(super) fn run(self) {
        tracing::dispatcher::with_default(&self.dispatch, || self.run_tasks());
    }

    fn run_tasks(&self) {
        loop {
            let task = {
                let mut state = self.queue.lock();
                if state.cancelled
                    || (state.failed && self.ctx.policy == FailurePolicy::StopQueue)
                    || (!self.ctx.for_runner && state.fate != Fate::Open)
                {
                    return;
                }
                match state.tasks.pop_front() {
                    Some(task) if task.is_sync() => {
                        state.forget_if_emptied();
                        if let Some(why) = task.info().run_if.refuses(state.outcome) {
                            state.report.add(Kind::Skipped, 1);
                            if let Some(host) = &self.ctx.host {
                                host.counters().count(Kind::Skipped, 1);
                            }
                            drop(state);
                            skipped(task, why);
                            continue;
                        }
                        state.in_flight = Some((task.name(), task.position()));
                        task
                    }
                    Some(task) => {
                        state.tasks.push_front(task);
                        return;
                    }
                    None => return,
                }
            };
            let span = task_span(&task);
            let name = task.name();
            let ran = span.in_scope(|| run_sync(task, self.ctx.timeout));
            if !self.finish(&span, name, &ran) {
                return;
            }
        }
    }

    /// Counts and logs a task that ran, unless it was abandoned meanwhile (in
    /// which case the abandoning side counted it). Returns whether it counted.
    ///
    /// The count reaches the runner while the queue is locked, so the drain,
    /// which takes that lock to end, cannot end before it.
    fn finish(&self, span: &Span, name: TaskName, ran: &Ran) -> bool {
        let kind = ran.kind();
        {
            let mut state = self.queue.lock();
            if state.in_flight.take().is_none() {
                drop(state);
                span.in_scope(|| {
                    tracing::warn!(
                        task = name.short(),
                        result = %ran.summary(),
                        "background task finished after it was abandoned; it stays counted as abandoned"
                    );
                });
                return false;
            }
            state.report.add(kind, 1);
            if kind != Kind::Completed {
                state.failed = true;
            }
            if let Some(host) = &self.ctx.host {
                host.counters().count(kind, 1);
            }
        }
        if let Some(host) = &self.ctx.host {
            host.made_room();
        }
        span.in_scope(|| ran.log(name));
        true
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        release(&self.queue);
    }
}
