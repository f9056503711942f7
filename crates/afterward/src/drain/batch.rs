//! Sync batches: runs of consecutive sync tasks, sent to the blocking pool
//! in one trip.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use tracing::{Dispatch, Span};

use super::ctx::Ctx;
use super::front::{Front, look_at_front, take_front};
use super::lanes::Lanes;
use super::run::{Ran, in_span, run_sync, task_span};
use crate::counts::TaskOutcome;
use crate::metrics;
use crate::queue::Inner;
use crate::quiet::take_message;
use crate::task::{TaskTag, Why, settle};

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
    /// `None` when no subscriber was ever set: setting the default one
    /// would make every later task look for a span to follow.
    pub(super) dispatch: Option<Dispatch>,
}

impl Batch {
    pub(super) fn run(self) {
        match &self.dispatch {
            Some(dispatch) => tracing::dispatcher::with_default(dispatch, || self.run_tasks()),
            None => self.run_tasks(),
        }
    }

    fn run_tasks(&self) {
        loop {
            let (task, started) = {
                let mut state = self.queue.lock();
                if state.drain.cancelled
                    || self.ctx.stops(state.drain.failed)
                    || self.ctx.lost(&state)
                {
                    return;
                }
                match look_at_front(&mut state) {
                    Front::Sync => {
                        let Some((task, started)) = take_front(&mut state) else {
                            return;
                        };
                        state.drain.in_flight = Some(task.tag());
                        (task, started)
                    }
                    Front::Unmet(task, why) => {
                        state.drain.report.add(TaskOutcome::Skipped, 1);
                        if let Some(host) = &self.ctx.host {
                            host.counters().count(TaskOutcome::Skipped, 1);
                        }
                        drop(state);
                        settle([task], Why::Unmet(why));
                        continue;
                    }
                    // An async task is the drain's to run.
                    Front::Async | Front::Empty => return,
                }
            };
            let span = task_span(&task);
            let tag = task.tag();
            let ran = in_span(span.as_ref(), || run_sync(task, self.ctx.timeout));
            if !self.finish(span.as_ref(), tag, &ran, started) {
                return;
            }
        }
    }

    /// Counts and logs a task that ran, unless it was abandoned meanwhile (in
    /// which case the abandoning side counted it). Returns whether it counted.
    ///
    /// The count reaches the runner while the queue is locked, so the drain,
    /// which takes that lock to end, cannot end before it.
    fn finish(
        &self,
        span: Option<&Span>,
        tag: TaskTag,
        ran: &Ran,
        started: metrics::Started,
    ) -> bool {
        let outcome = ran.outcome();
        {
            let mut state = self.queue.lock();
            if state.drain.in_flight.take().is_none() {
                drop(state);
                in_span(span, || {
                    tracing::warn!(
                        task = tag.name.short(),
                        id = %tag.id,
                        result = %ran.summary(),
                        "background task finished after it was abandoned; it stays counted as abandoned"
                    );
                });
                return false;
            }
            state.drain.report.add(outcome, 1);
            if outcome != TaskOutcome::Completed {
                state.drain.failed = true;
            }
            if let Some(host) = &self.ctx.host {
                host.counters().count(outcome, 1);
            }
        }
        if let Some(host) = &self.ctx.host {
            host.made_room();
        }
        metrics::ran(&tag.name, outcome, started);
        in_span(span, || ran.log(&tag));
        true
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.queue.release();
    }
}

/// Runs a sync batch on the runner's lanes, or on the blocking pool for a
/// direct drain. `Err(Some(message))` if it panicked outside its tasks,
/// `Err(None)` if it was dropped unrun.
pub(super) async fn run_batch(
    batch: Batch,
    lanes: Option<&Arc<Lanes>>,
) -> Result<(), Option<String>> {
    let Some(lanes) = lanes else {
        return tokio::task::spawn_blocking(move || batch.run())
            .await
            .map_err(|error| error.try_into_panic().ok().map(take_message));
    };
    let (done_tx, done) = tokio::sync::oneshot::channel();
    lanes.run(Box::new(move || {
        let ran = catch_unwind(AssertUnwindSafe(move || batch.run()));
        let _ = done_tx.send(ran.map_err(take_message));
    }));
    match done.await {
        Ok(ran) => ran.map_err(Some),
        Err(_) => Err(None),
    }
}
