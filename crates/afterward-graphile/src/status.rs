//! `TaskStatus`: where a durable task stands, looked up by its id.

use crate::sql::state;

/// Where a durable task stands: see [`GraphileBackend::status`](crate::GraphileBackend::status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    state: TaskState,
    attempts: u32,
    last_error: Option<String>,
}

/// The state of a durable task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskState {
    /// Stored, not running: its turn in its chain has not come, it waits
    /// for a worker, or for its next attempt after a failed one.
    Waiting,
    /// A worker is running it now.
    Running,
    /// It ran and returned `Ok`.
    Done,
    /// It failed for good: its last attempt failed, or its error was final
    /// (its payload no longer deserializes, no worker knows its name, or
    /// the task said so).
    Failed,
    /// It never ran: an earlier step of its chain failed for good, under
    /// `FailurePolicy::StopQueue`.
    Dropped,
}

impl TaskStatus {
    /// The task's state.
    pub fn state(&self) -> TaskState {
        self.state
    }

    /// The attempts started so far: 0 while it waits for its first, and
    /// every attempt counted, for a task that ended `Done` too.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The error of its last failed attempt, if one failed.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}

/// A row of the status statement.
#[derive(sqlx::FromRow)]
pub(crate) struct StatusRow {
    state: i16,
    attempts: i16,
    last_error: Option<String>,
    job_attempts: Option<i16>,
    locked: Option<bool>,
}

impl From<StatusRow> for TaskStatus {
    fn from(row: StatusRow) -> TaskStatus {
        let finished = |state| TaskStatus {
            state,
            attempts: row.attempts.max(0) as u32,
            last_error: row.last_error.clone(),
        };
        match row.state {
            state::DONE => finished(TaskState::Done),
            state::FAILED => finished(TaskState::Failed),
            state::DROPPED => finished(TaskState::Dropped),
            _ => TaskStatus {
                // A waiting step's attempts live on its chain's job while
                // the job is at it.
                state: if row.locked == Some(true) {
                    TaskState::Running
                } else {
                    TaskState::Waiting
                },
                attempts: row.job_attempts.unwrap_or(0).max(0) as u32,
                last_error: row.last_error,
            },
        }
    }
}
