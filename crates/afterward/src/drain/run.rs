//! Running one task: catching its panics, timing it out, and telling how it
//! ended.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;
use tracing::Span;

use super::tally::Tally;
use crate::counts::TaskOutcome;
use crate::quiet::{drop_quietly, take_message};
use crate::task::{Returned, Task, TaskTag};

/// How a task that was started ended.
pub(crate) enum Ran {
    Completed,
    Failed(String),
    Panicked(String),
    /// An async task cancelled at `limit`, or a sync task that returned after
    /// `overran` (with what it returned, summed up).
    TimedOut {
        limit: Duration,
        overran: Option<(Duration, String)>,
    },
}

impl Ran {
    #[inline]
    fn from_returned(returned: Returned) -> Ran {
        match returned {
            Ok(()) => Ran::Completed,
            Err(error) => Ran::Failed(error),
        }
    }

    #[inline]
    pub(crate) fn outcome(&self) -> TaskOutcome {
        match self {
            Ran::Completed => TaskOutcome::Completed,
            Ran::Failed(_) => TaskOutcome::Failed,
            Ran::Panicked(_) => TaskOutcome::Panicked,
            Ran::TimedOut { .. } => TaskOutcome::TimedOut,
        }
    }

    #[inline]
    pub(crate) fn log_completed(tag: &TaskTag) {
        tracing::debug!(task = tag.name.short(), id = %tag.id, "background task completed");
    }

    pub(crate) fn log(&self, tag: &TaskTag) {
        if let Ran::Completed = self {
            // Before anything is computed: the usual case, and a debug line
            // that is usually off.
            return Ran::log_completed(tag);
        }
        let (task, id) = (tag.name.short(), tracing::field::display(tag.id));
        match self {
            Ran::Completed => {}
            Ran::Failed(error) => {
                tracing::error!(task, %id, error = %error, "background task failed");
            }
            Ran::Panicked(message) => {
                tracing::error!(task, %id, panic = %message, "background task panicked");
            }
            Ran::TimedOut {
                limit,
                overran: None,
            } => tracing::error!(
                task,
                %id,
                timeout = ?limit,
                "background task timed out and was cancelled"
            ),
            Ran::TimedOut {
                limit,
                overran: Some((took, result)),
            } => tracing::error!(
                task,
                %id,
                timeout = ?limit,
                took = ?took,
                result = %result,
                "sync background task overran its timeout (it cannot be interrupted, so it ran to the end)"
            ),
        }
    }

    pub(crate) fn summary(&self) -> String {
        match self {
            Ran::Completed => "completed".to_owned(),
            Ran::Failed(error) => format!("failed: {error}"),
            Ran::Panicked(message) => format!("panicked: {message}"),
            Ran::TimedOut { .. } => "timed out".to_owned(),
        }
    }
}

/// The span a task runs in; `None` when no subscriber was ever set, since
/// nothing would record it, and making and entering it would cost more than
/// the rest of a no-op task's drain.
#[inline]
pub(crate) fn task_span(task: &Task) -> Option<Span> {
    if !tracing::dispatcher::has_been_set() {
        return None;
    }
    Some(tracing::info_span!(
        parent: task.parent(),
        "task",
        task = task.name().short(),
        position = task.position(),
        id = %task.id()
    ))
}

/// Calls `f` inside `span`, if there is one.
#[inline]
pub(crate) fn in_span<R>(span: Option<&Span>, f: impl FnOnce() -> R) -> R {
    match span {
        Some(span) => span.in_scope(f),
        None => f(),
    }
}

// ===== async tasks =====

/// Runs one async task to its end or to its timeout, inside its span, with
/// every poll and every drop of the task guarded.
///
/// A panic anywhere in the task is caught at the poll that raised it. The
/// task is dropped inside a guard too, however it ends: finished, panicked,
/// cancelled at the timeout, or dropped with the drain at a shutdown.
/// Futures holding a tokio runtime across an `.await` (as blocking HTTP
/// clients do) panic when dropped on a worker thread; that must not take
/// the drain down.
///
/// Written by hand rather than as an `async fn` with a `tokio::time::Timeout`
/// in it: the drain's future then stays small, and one timer, kept by the
/// drain, serves all its tasks.
pub(crate) struct RunAsync<'a> {
    task: Option<Task>,
    span: Option<&'a Span>,
    timer: Option<(Duration, Pin<&'a mut Sleep>)>,
    /// The drain's counts not yet published, published whenever the task
    /// has to wait: see `Tally`.
    tally: &'a mut Tally,
}

impl<'a> RunAsync<'a> {
    #[inline]
    pub(crate) fn new(
        task: Task,
        span: Option<&'a Span>,
        timer: Option<(Duration, Pin<&'a mut Sleep>)>,
        tally: &'a mut Tally,
    ) -> RunAsync<'a> {
        RunAsync {
            task: Some(task),
            span,
            timer,
            tally,
        }
    }

    /// Drops the task, if it has not finished. Its destructor may panic.
    fn cancel(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        let tag = task.tag();
        if let Some(message) = drop_quietly(task) {
            tracing::error!(
                task = tag.name.short(),
                id = %tag.id,
                panic = %message,
                "background task panicked while it was being cancelled"
            );
        }
    }
}

impl Future for RunAsync<'_> {
    type Output = Ran;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ran> {
        let this = self.get_mut();
        let _entered = this.span.map(Span::enter);
        let slot = &mut this.task;
        if slot.is_none() {
            return Poll::Ready(Ran::Panicked("polled after it finished".to_owned()));
        }
        // A finished task is dropped inside the same guard as its polls:
        // its destructor's panic counts as the task's.
        let polled = catch_unwind(AssertUnwindSafe(|| {
            let task = slot.as_mut().expect("checked above");
            let poll = task.poll_run(cx);
            if poll.is_ready() {
                *slot = None;
            }
            poll
        }));
        match polled {
            Ok(Poll::Ready(Ok(()))) => return Poll::Ready(Ran::Completed),
            Ok(Poll::Ready(Err(error))) => return Poll::Ready(Ran::Failed(error)),
            Ok(Poll::Pending) => {}
            Err(payload) => {
                let mut message = take_message(payload);
                if let Some(second) = drop_quietly(slot.take()) {
                    message.push_str(&format!(" (then panicked again when dropped: {second})"));
                }
                return Poll::Ready(Ran::Panicked(message));
            }
        }
        if let Some((limit, timer)) = &mut this.timer {
            if timer.as_mut().poll(cx).is_ready() {
                let limit = *limit;
                // Dropped here, inside the task's span and the guard.
                this.cancel();
                return Poll::Ready(Ran::TimedOut {
                    limit,
                    overran: None,
                });
            }
        }
        this.tally.publish();
        Poll::Pending
    }
}

impl Drop for RunAsync<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.task.is_some() {
            self.cancel();
        }
    }
}

// ===== sync tasks =====

pub(crate) fn run_sync(mut task: Task, timeout: Option<Duration>) -> Ran {
    let started = timeout.map(|_| Instant::now());
    // The task owns its captures, and is dropped inside the guard too.
    let ran = match catch_unwind(AssertUnwindSafe(move || task.run())) {
        Ok(returned) => Ran::from_returned(returned),
        Err(payload) => Ran::Panicked(take_message(payload)),
    };
    match (timeout, started) {
        (Some(limit), Some(started)) if started.elapsed() > limit => Ran::TimedOut {
            limit,
            overran: Some((started.elapsed(), ran.summary())),
        },
        _ => ran,
    }
}
