//! What a queue holds behind its lock, and what it needs from the runner
//! that owns it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::Notify;
use tracing::Span;

use crate::quiet::drop_quietly;
use crate::report::DrainReport;
use crate::stats::Counters;
use crate::task::{Job, TaskName};

/// One queued task and what is needed to report on it.
pub(crate) struct Task {
    pub(crate) name: TaskName,
    /// 1-based position in the queue, in insertion order.
    pub(crate) position: usize,
    /// The span that was current when the task was added.
    pub(crate) parent: Span,
    pub(crate) job: Job,
}

impl Task {
    /// Drops a task that will not run, logging a destructor that panics
    /// instead of letting the panic out.
    pub(crate) fn discard(self) {
        let (name, position) = (self.name, self.position);
        if let Some(message) = drop_quietly(self) {
            tracing::error!(
                task = name.short(),
                position,
                panic = %message,
                "a background task that did not run panicked when it was dropped"
            );
        }
    }
}

/// What a queue needs from the runner it belongs to.
///
/// The runner implements it. Queues and drains know the runner only through
/// this trait, so the modules depend on each other one way: the runner on
/// drains, drains on queues.
pub(crate) trait Host: Send + Sync + 'static {
    fn counters(&self) -> &Counters;

    /// Records a queue that has tasks but was not handed off yet, so that a
    /// shutdown can find it. `None` once the shutdown's deadline has passed.
    fn register(&self, queue: Weak<Inner>) -> Option<usize>;

    fn unregister(&self, key: usize);

    /// A queue handed off to run got a task while no drain had it; its
    /// `fate` is already `Run { scheduled: true }` and the task counted
    /// received.
    fn schedule(self: Arc<Self>, queue: Arc<Inner>);

    /// Counts tasks that were received and are now given up on, and keeps
    /// their names for the shutdown report.
    fn abandoned(&self, names: &[TaskName]);
}

/// Shared by every clone of a `TaskQueue`.
pub(crate) struct Inner {
    state: Mutex<State>,
    /// Woken when the last holder of the drain lock lets go.
    released: Notify,
}

/// What happens to tasks as they are added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Not handed to a runner: tasks wait for a drain.
    Open,
    /// Handed to a runner to run: each task that arrives is counted
    /// received at once. `scheduled` says a drain of the runner is waiting
    /// for this queue or running it, and will take the task.
    Run { scheduled: bool },
    /// Handed to a runner to skip: each task that arrives is counted
    /// received and skipped.
    Skip,
}

/// Everything behind the queue's mutex.
///
/// Besides the tasks, it holds the bookkeeping of the drain that currently
/// owns the queue. Drains of one queue are mutually exclusive (see
/// `holders`), so one slot is enough, and a sync batch running on the
/// blocking pool can reach it without an allocation of its own.
pub(crate) struct State {
    pub(crate) tasks: VecDeque<Task>,
    /// Tasks ever added; gives each task its position.
    pub(crate) added: usize,
    /// How many parties hold the drain lock: the drain itself and any sync
    /// batch it sent to the blocking pool. A batch may outlive a cancelled
    /// drain, and the next drain must wait for it.
    pub(crate) holders: usize,
    /// The sync task being run now, if any. Whoever takes it out (the code
    /// that saw the task finish, or the code that abandons it) is the one
    /// that counts it: this is what makes counting exactly-once.
    pub(crate) in_flight: Option<(TaskName, usize)>,
    /// Set when the current drain was cancelled: a sync batch still running
    /// must not start another task.
    pub(crate) cancelled: bool,
    /// Set when a task of the current drain failed, for `StopQueue`.
    pub(crate) failed: bool,
    /// What the current drain's sync batches counted so far.
    pub(crate) report: DrainReport,
    /// The runner this queue belongs to: set when it was made for one
    /// (`Runner::new_queue`) or handed to one.
    pub(crate) owner: Option<Arc<dyn Host>>,
    pub(crate) fate: Fate,
    pub(crate) registration: Registration,
}

/// Whether the owner knows this queue among its open ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Registration {
    /// Not yet: a queue is registered when its first task arrives.
    No,
    Key(usize),
    /// The owner would not take it (its shutdown deadline had passed).
    Refused,
}

impl Inner {
    pub(crate) fn new(owner: Option<Arc<dyn Host>>) -> Inner {
        Inner {
            state: Mutex::new(State {
                tasks: VecDeque::new(),
                added: 0,
                holders: 0,
                in_flight: None,
                cancelled: false,
                failed: false,
                report: DrainReport::default(),
                owner,
                fate: Fate::Open,
                registration: Registration::No,
            }),
            released: Notify::new(),
        }
    }

    /// Locks the state. Nothing user-written runs under this lock, but a
    /// poisoned lock must not turn into a panic inside a `Drop`, so poison is
    /// ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn released(&self) -> &Notify {
        &self.released
    }
}

impl State {
    /// The runner that counts this queue's tasks: its owner, once the queue
    /// was handed off.
    pub(crate) fn counting_host(&self) -> Option<&Arc<dyn Host>> {
        match self.fate {
            Fate::Open => None,
            Fate::Run { .. } | Fate::Skip => self.owner.as_ref(),
        }
    }

    /// Takes the registration key, if any, for the caller to unregister.
    pub(crate) fn take_key(&mut self) -> Option<usize> {
        match std::mem::replace(&mut self.registration, Registration::No) {
            Registration::Key(key) => Some(key),
            other => {
                self.registration = other;
                None
            }
        }
    }
}

/// Formats task names as a list, for logs.
pub(crate) struct TaskNames<'a, I>(pub(crate) &'a I);

impl<'a, I> std::fmt::Debug for TaskNames<'a, I>
where
    &'a I: IntoIterator<Item = &'a Task>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.into_iter().map(|task| task.name.short()))
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let (Some(key), Some(owner)) = (state.take_key(), &state.owner) {
            owner.unregister(key);
        }
        if state.tasks.is_empty() {
            return;
        }
        // The last handle is gone and nobody will drain these tasks. A queue
        // handed to a runner is always held by a drain while it has tasks,
        // so these never reached one and no runner counts them; but they
        // must not vanish without a word.
        tracing::error!(
            count = state.tasks.len(),
            tasks = ?TaskNames(&state.tasks),
            "task queue dropped with tasks that were never run"
        );
        for task in std::mem::take(&mut state.tasks) {
            task.discard();
        }
    }
}
