//! The one way out for tasks that will not run: each is logged with its
//! name and the reason, then dropped through the guard of
//! [`Task::discard`].
//!
//! Counting is the caller's, under whatever lock makes it exact; the
//! logging and dropping happen here, after that lock is let go, since both
//! run user code (a subscriber, a destructor).

use std::borrow::Cow;

use tracing::{Level, Span};

use super::{Task, TaskTag};
use crate::counts::TaskOutcome;
use crate::metrics;

/// Why tasks are settled without running.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Why<'a> {
    /// Its run condition did not hold; the reason says how.
    Unmet(&'static str),
    /// An earlier task of its queue failed, under `StopQueue`.
    EarlierFailed,
    /// Its queue was handed to `Runner::skip`, for this reason.
    QueueSkipped(&'a str),
    /// It was added to a queue after the queue was skipped.
    AddedAfterSkip,
    /// Removed by `TaskQueue::forget`; `counted` once its queue was
    /// handed over.
    Forgotten { counted: bool },
    /// Replaced by a newer task with the same key; `counted` once its queue
    /// was handed over.
    Replaced { counted: bool },
    /// Given up on by a shutdown, or a runtime going away.
    Abandoned,
    /// Cut off while being persisted by the durable backend.
    AbandonedWhilePersisting,
    /// Refused by the runner.
    Rejected(Rejection),
    /// Its durable hand-off failed with this error.
    #[cfg(feature = "durable")]
    PersistFailed(&'a str),
    /// Its durable hand-off ended without knowing whether it was stored.
    #[cfg(feature = "durable")]
    PersistUnknown(&'a str),
}

/// Why a runner refused tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    BacklogFull,
    ShutDown,
    RuntimeGone,
}

impl Why<'_> {
    /// What the tasks are counted as, if a runner counts them at all.
    pub(crate) fn outcome(&self) -> Option<TaskOutcome> {
        match self {
            Why::Unmet(_)
            | Why::EarlierFailed
            | Why::QueueSkipped(_)
            | Why::AddedAfterSkip
            | Why::Forgotten { counted: true }
            | Why::Replaced { counted: true } => Some(TaskOutcome::Skipped),
            Why::Forgotten { counted: false } | Why::Replaced { counted: false } => None,
            Why::Abandoned | Why::AbandonedWhilePersisting => Some(TaskOutcome::Abandoned),
            Why::Rejected(_) => Some(TaskOutcome::Rejected),
            #[cfg(feature = "durable")]
            Why::PersistFailed(_) => Some(TaskOutcome::PersistFailed),
            #[cfg(feature = "durable")]
            Why::PersistUnknown(_) => Some(TaskOutcome::PersistUnknown),
        }
    }
}

/// Logs each task with `why`, then drops it through its guard.
pub(crate) fn settle(tasks: impl IntoIterator<Item = Task>, why: Why<'_>) {
    for task in tasks {
        log_unrun(&task.tag(), task.parent(), why);
        task.discard();
    }
}

/// Counts one task that will not run in the metrics (its log line is the
/// caller's).
fn counted(tag: &TaskTag, why: Why<'_>) {
    if let Some(outcome) = why.outcome() {
        metrics::ended(&tag.name, outcome);
    }
}

/// Logs one task that will not run (or stopped running), by its name,
/// position and id, in the span it was added under.
pub(crate) fn log_unrun(tag: &TaskTag, parent: &Span, why: Why<'_>) {
    counted(tag, why);
    let task = tag.name.short();
    let (position, id) = (tag.position, tracing::field::display(tag.id));
    let (level, message): (Level, Cow<'_, str>) = match why {
        Why::Unmet(reason) => (
            Level::WARN,
            format!("background task skipped: {reason}").into(),
        ),
        Why::EarlierFailed => (
            Level::WARN,
            "background task skipped: an earlier task of its queue failed".into(),
        ),
        Why::QueueSkipped(reason) => {
            tracing::warn!(parent: parent, task, position, %id, reason, "background task skipped");
            return;
        }
        Why::AddedAfterSkip => (
            Level::WARN,
            "background task skipped: it was added after its queue was skipped".into(),
        ),
        Why::Forgotten { counted } => (
            if counted { Level::WARN } else { Level::DEBUG },
            "background task forgotten (TaskQueue::forget)".into(),
        ),
        Why::Replaced { counted } => (
            if counted { Level::WARN } else { Level::DEBUG },
            "background task replaced by a newer task with the same key".into(),
        ),
        Why::Abandoned => (Level::ERROR, "background task abandoned".into()),
        Why::AbandonedWhilePersisting => (
            Level::ERROR,
            "durable task abandoned during its hand-off: it may or may not have been stored".into(),
        ),
        Why::Rejected(rejection) => {
            let why = match rejection {
                Rejection::BacklogFull => "the runner's backlog is full (max_backlog)",
                Rejection::ShutDown => "the runner has shut down",
                Rejection::RuntimeGone => "the runner's runtime is gone",
            };
            (
                Level::ERROR,
                format!("background task rejected: {why}").into(),
            )
        }
        #[cfg(feature = "durable")]
        Why::PersistFailed(error) | Why::PersistUnknown(error) => {
            let message = match why {
                Why::PersistFailed(_) => {
                    "durable task not stored: its hand-off failed; it will not run"
                }
                _ => {
                    "durable task may or may not have been stored: its hand-off's answer was \
                     lost; it may run"
                }
            };
            tracing::error!(parent: parent, task, position, %id, error, "{message}");
            return;
        }
    };
    match level {
        Level::ERROR => tracing::error!(parent: parent, task, position, %id, "{message}"),
        Level::WARN => tracing::warn!(parent: parent, task, position, %id, "{message}"),
        _ => tracing::debug!(parent: parent, task, position, %id, "{message}"),
    }
}
