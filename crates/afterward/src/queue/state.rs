//! What a queue holds behind its lock, and what it needs from the runner
//! that owns it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Waker;

use tokio::sync::Notify;

use super::list::TaskList;
use crate::condition::Outcome;
use crate::job::Task;
use crate::job::TaskName;
use crate::report::{DrainReport, Kind};
use crate::stats::Counters;

/// What a queue needs from the runner it belongs to.
///
/// The runner implements it. Queues and drains know the runner only through
/// this trait, so the modules depend on each other one way: the runner on
/// drains, drains on queues.
pub(crate) trait Host: Send + Sync + 'static {
    fn counters(&self) -> &Counters;

    /// Records a queue that has tasks but was not handed off yet, so that a
    /// shutdown can find it. `None` once a shutdown's deadline has passed, or
    /// the runtime is gone.
    fn register(&self, queue: Weak<Inner>) -> Option<usize>;

    fn unregister(&self, key: usize);

    /// Whether `n` more tasks fit in the backlog, for tasks added to a
    /// queue after its hand-off.
    fn has_room(&self, n: usize) -> bool;

    /// Tasks were counted: callers waiting for room in the backlog may go on.
    fn made_room(&self);

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
    pub(crate) tasks: TaskList,
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
    /// How the response this queue was filled for ended, for run conditions.
    pub(crate) outcome: Outcome,
    /// Runner drains started for this queue; numbers them.
    pub(crate) drains: u64,
    /// The report a `DrainHandle` waits for, if one does.
    pub(crate) awaited: Option<Awaited>,
}

/// A queue's report slot: the drain a `DrainHandle` waits for, and then its
/// report.
#[derive(Debug)]
pub(crate) struct Awaited {
    pub(crate) drain: u64,
    pub(crate) report: Option<DrainReport>,
    pub(crate) waker: Option<Waker>,
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
                tasks: TaskList::default(),
                added: 0,
                holders: 0,
                in_flight: None,
                cancelled: false,
                failed: false,
                report: DrainReport::default(),
                owner,
                fate: Fate::Open,
                registration: Registration::No,
                outcome: Outcome::Success,
                drains: 0,
                awaited: None,
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

    /// Calls `f` on the waiting task at `position`, if it is still there.
    pub(crate) fn with_waiting(&self, position: usize, f: impl FnOnce(&mut Task)) {
        self.lock().tasks.find_mut(position, f);
    }
}

impl State {
    /// Tells the owner it need not wait for this queue any more, once a
    /// queue that was not handed off has lost its last task (to a direct
    /// drain, or to `append`). A task that arrives later registers it again.
    pub(crate) fn forget_if_emptied(&mut self) {
        if self.tasks.is_empty() && self.fate == Fate::Open {
            if let (Some(key), Some(owner)) = (self.take_key(), &self.owner) {
                owner.unregister(key);
            }
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

/// Drops tasks taken out of the queue by a key or `forget`, then lets
/// the lock go. Tasks of a queue not handed over never reached a runner
/// and are not counted; those of a queue handed over are counted
/// `skipped`, and logged.
pub(crate) fn settle_removed(mut state: MutexGuard<'_, State>, removed: Vec<Task>, why: &str) {
    if removed.is_empty() {
        return;
    }
    state.forget_if_emptied();
    let counted = match (&state.fate, &state.owner) {
        (Fate::Open, _) | (_, None) => false,
        (Fate::Run { .. } | Fate::Skip, Some(owner)) => {
            owner.counters().count(Kind::Skipped, removed.len());
            owner.made_room();
            true
        }
    };
    drop(state);
    for task in removed {
        if counted {
            tracing::warn!(
                parent: task.parent(),
                task = task.name().short(),
                position = task.position(),
                "{why}"
            );
        } else {
            tracing::debug!(
                parent: task.parent(),
                task = task.name().short(),
                position = task.position(),
                "{why}"
            );
        }
        task.discard();
    }
}

/// Formats the names of a list's tasks, oldest first, for logs.
pub(crate) struct TaskNames<'a>(pub(crate) &'a TaskList);

impl std::fmt::Debug for TaskNames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        self.0.for_each(|task| {
            list.entry(&task.name().short());
        });
        list.finish()
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
        for task in state.tasks.take_all() {
            task.discard();
        }
    }
}
