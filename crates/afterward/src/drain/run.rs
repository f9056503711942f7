//! Running one task: catching its panics, timing it out, and telling how it
//! ended.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;
use tracing::Span;

use crate::job::{Outcome, Task, TaskName};
use crate::quiet::{drop_quietly, take_message};
use crate::report::Kind;

/// How a task that was started ended.
pub(crate) enum Ran {
    Completed,
    Failed(String),
    Panicked(String),
    /// An async task cancelled at `limit`, or a sync task that returned after
    /// `overran` (with what it returned).
    TimedOut {
        limit: Duration,
        overran: Option<(Duration, Box<Ran>)>,
    },
}

impl Ran {
    fn from_outcome(outcome: Outcome) -> Ran {
        match outcome {
            Ok(()) => Ran::Completed,
            Err(error) => Ran::Failed(error),
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        match self {
            Ran::Completed => Kind::Completed,
            Ran::Failed(_) => Kind::Failed,
            Ran::Panicked(_) => Kind::Panicked,
            Ran::TimedOut { .. } => Kind::TimedOut,
        }
    }

    pub(crate) fn log(&self, name: TaskName) {
        match self {
            Ran::Completed => tracing::debug!(task = name.short(), "background task completed"),
            Ran::Failed(error) => {
                tracing::error!(task = name.short(), error = %error, "background task failed");
            }
            Ran::Panicked(message) => {
                tracing::error!(task = name.short(), panic = %message, "background task panicked");
            }
            Ran::TimedOut {
                limit,
                overran: None,
            } => tracing::error!(
                task = name.short(),
                timeout = ?limit,
                "background task timed out and was cancelled"
            ),
            Ran::TimedOut {
                limit,
                overran: Some((took, result)),
            } => tracing::error!(
                task = name.short(),
                timeout = ?limit,
                took = ?took,
                result = %result.summary(),
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

pub(crate) fn task_span(task: &Task) -> Span {
    // With no subscriber anywhere, nothing would record the span; making
    // one would cost more than the rest of a no-op task's drain.
    if !tracing::dispatcher::has_been_set() {
        return Span::none();
    }
    tracing::info_span!(
        parent: task.parent(),
        "task",
        task = task.name().short(),
        position = task.position()
    )
}

// ===== async tasks =====

/// An async task's future, with every poll and every drop guarded.
///
/// A panic anywhere in the task is caught at the poll that raised it. The
/// future is dropped inside a guard too, however it ends: finished,
/// panicked, cancelled at the timeout, or dropped with the drain at a
/// shutdown. Futures holding a tokio runtime across an `.await` (as
/// blocking HTTP clients do) panic when dropped on a worker thread; that
/// must not take the drain down.
pub(crate) struct Guarded {
    future: Option<Task>,
    name: TaskName,
}

impl Future for Guarded {
    /// `Err` carries a panic message.
    type Output = Result<Outcome, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let slot = &mut self.future;
        if slot.is_none() {
            return Poll::Ready(Err("polled after it finished".to_owned()));
        }
        // A finished future is dropped inside the same guard as its polls:
        // its destructor's panic counts as the task's.
        let polled = catch_unwind(AssertUnwindSafe(|| {
            let future = slot.as_mut().expect("checked above");
            let poll = future.poll_run(cx);
            if poll.is_ready() {
                *slot = None;
            }
            poll
        }));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(outcome)) => Poll::Ready(Ok(outcome)),
            Err(payload) => {
                let mut message = take_message(payload);
                if let Some(second) = drop_quietly(slot.take()) {
                    message.push_str(&format!(" (then panicked again when dropped: {second})"));
                }
                Poll::Ready(Err(message))
            }
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl Guarded {
    /// Drops the future, if it has not finished. Its destructor may panic.
    fn cancel(&mut self) {
        if let Some(message) = self.future.take().and_then(drop_quietly) {
            tracing::error!(
                task = self.name.short(),
                panic = %message,
                "background task panicked while it was being cancelled"
            );
        }
    }
}

impl Guarded {
    pub(crate) fn new(future: Task, name: TaskName) -> Guarded {
        Guarded {
            future: Some(future),
            name,
        }
    }
}

/// Runs one async task to its end or to its timeout, inside its span.
///
/// Written by hand rather than as an `async fn` with a `tokio::time::Timeout`
/// in it: the drain's future then stays small, and one timer, kept by the
/// drain, serves all its tasks.
pub(crate) struct RunAsync<'a> {
    pub(crate) guarded: Guarded,
    pub(crate) span: &'a Span,
    pub(crate) timer: Option<(Duration, Pin<&'a mut Sleep>)>,
    /// The drain's counts not yet published, published whenever the task
    /// has to wait: see `Tally`.
    pub(crate) tally: &'a mut Tally,
}

/// A drain's counts of its own async tasks and skips, published to the
/// runner's counters in batches: whenever the drain is about to wait, and
/// when it closes. The counters then agree with the drain by the time it
/// ends, and a run of quick tasks costs one update of the shared counters,
/// not one per task.
pub(crate) struct Tally {
    pub(crate) host: Option<std::sync::Arc<dyn crate::queue::Host>>,
    unpublished: crate::report::DrainReport,
    any: bool,
}

impl Tally {
    pub(crate) fn new(host: Option<std::sync::Arc<dyn crate::queue::Host>>) -> Tally {
        Tally {
            host,
            unpublished: crate::report::DrainReport::default(),
            any: false,
        }
    }

    pub(crate) fn add(&mut self, kind: Kind, n: usize) {
        if self.host.is_some() {
            self.unpublished.add(kind, n);
            self.any = true;
        }
    }

    pub(crate) fn publish(&mut self) {
        if let (true, Some(host)) = (self.any, &self.host) {
            host.counters().add(&std::mem::take(&mut self.unpublished));
            self.any = false;
            host.made_room();
        }
    }
}

impl Future for RunAsync<'_> {
    type Output = Ran;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ran> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        if let Poll::Ready(result) = Pin::new(&mut this.guarded).poll(cx) {
            return Poll::Ready(match result {
                Ok(outcome) => Ran::from_outcome(outcome),
                Err(message) => Ran::Panicked(message),
            });
        }
        if let Some((limit, timer)) = &mut this.timer {
            if timer.as_mut().poll(cx).is_ready() {
                // Dropped here, inside the task's span and the guard.
                this.guarded.cancel();
                return Poll::Ready(Ran::TimedOut {
                    limit: *limit,
                    overran: None,
                });
            }
        }
        this.tally.publish();
        Poll::Pending
    }
}

// ===== sync tasks =====

pub(crate) fn run_sync(mut task: Task, timeout: Option<Duration>) -> Ran {
    let started = timeout.map(|_| Instant::now());
    // The task owns its captures, and is dropped inside the guard too.
    let ran = match catch_unwind(AssertUnwindSafe(move || task.run())) {
        Ok(outcome) => Ran::from_outcome(outcome),
        Err(payload) => Ran::Panicked(take_message(payload)),
    };
    match (timeout, started) {
        (Some(limit), Some(started)) if started.elapsed() > limit => Ran::TimedOut {
            limit,
            overran: Some((started.elapsed(), Box::new(ran))),
        },
        _ => ran,
    }
}
