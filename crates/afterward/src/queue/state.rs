//! What a queue holds behind its lock (its tasks, the drain that holds it,
//! whose it is, how its response ended, the report a handle waits for), and
//! `Host`, what it needs from the runner it belongs to.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Waker;

use tokio::sync::Notify;

use super::list::TaskList;
use crate::condition::Outcome;
use crate::counts::TaskOutcome;
use crate::report::DrainReport;
use crate::stats::Counters;
use crate::task::{Task, TaskName, TaskTag, Why, settle};

/// What a queue needs from the runner it belongs to.
///
/// The runner implements it. Queues and drains know the runner only through
/// this trait, so the modules depend on each other one way: the runner on
/// drains, drains on queues.
pub(crate) trait Host: Send + Sync + 'static {
    fn counters(&self) -> &Counters;

    /// Records a queue that has tasks but was not handed over yet, so that a
    /// shutdown can find it. `None` once a shutdown's deadline has passed, or
    /// the runtime is gone.
    fn register(&self, queue: Weak<Inner>) -> Option<usize>;

    fn unregister(&self, key: usize);

    /// Whether `n` more tasks fit in the backlog, for tasks added to a
    /// queue after its hand-off.
    fn has_room(&self, n: usize) -> bool;

    /// Tasks were counted: callers waiting for room in the backlog may go on.
    fn made_room(&self);

    /// A queue handed over to run got a task while no drain had it; its
    /// fate is already `Run { scheduled: true }` and the task counted
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

/// Everything behind the queue's mutex.
pub(crate) struct State {
    pub(crate) tasks: TaskList,
    pub(crate) drain: DrainLock,
    pub(crate) owner: Owner,
    /// How the response this queue was filled for ended, for run conditions.
    pub(crate) outcome: Outcome,
    pub(crate) report: ReportSlot,
    /// When the queue was last handed over, for the wait metric.
    pub(crate) handed: crate::metrics::Handed,
}

/// The drain that holds the queue, and what its sync batches share with it.
///
/// Drains of one queue are mutually exclusive (see `holders`), so one slot
/// is enough, and a sync batch running on the blocking pool reaches it
/// without an allocation of its own.
#[derive(Default)]
pub(crate) struct DrainLock {
    /// How many parties hold the lock: the drain itself and any sync batch
    /// it sent to the blocking pool. A batch may outlive a cancelled drain,
    /// and the next drain must wait for it.
    pub(crate) holders: usize,
    /// The sync task being run now, if any. Whoever takes it out (the code
    /// that saw the task finish, or the code that abandons it) is the one
    /// that counts it: this is what makes counting exactly-once.
    pub(crate) in_flight: Option<TaskTag>,
    /// Set when the drain was cancelled: a sync batch still running must not
    /// start another task.
    pub(crate) cancelled: bool,
    /// Set when a task of the drain failed, for `StopQueue`.
    pub(crate) failed: bool,
    /// What the drain's sync batches counted so far.
    pub(crate) report: DrainReport,
}

/// Whose the queue is, and what becomes of the tasks that arrive.
pub(crate) struct Owner {
    /// The runner it belongs to: set when it was made for one
    /// (`Runner::new_queue`) or handed to one.
    pub(crate) host: Option<Arc<dyn Host>>,
    pub(crate) fate: Fate,
    pub(crate) registration: Registration,
}

/// What happens to tasks as they arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Not handed over: tasks wait for a drain.
    Open,
    /// Handed over to run: each task that arrives is counted received at
    /// once. `scheduled` says a drain of the runner is waiting for this
    /// queue or running it, and will take the task.
    Run { scheduled: bool },
    /// Handed over to skip: each task that arrives is counted received and
    /// skipped.
    Skip,
}

/// Whether the host knows this queue among its open ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Registration {
    /// Not yet: a queue is registered when its first task arrives.
    No,
    Key(usize),
    /// The host would not take it (its shutdown deadline had passed).
    Refused,
}

/// The report a `DrainHandle` waits for.
#[derive(Default)]
pub(crate) struct ReportSlot {
    /// Runner drains started for this queue; numbers them.
    pub(crate) drains: u64,
    pub(crate) awaited: Option<Awaited>,
}

/// The drain a `DrainHandle` waits for, and then its report.
#[derive(Debug)]
pub(crate) struct Awaited {
    pub(crate) drain: u64,
    pub(crate) report: Option<DrainReport>,
    pub(crate) waker: Option<Waker>,
}

impl Inner {
    pub(crate) fn new(host: Option<Arc<dyn Host>>) -> Inner {
        Inner {
            state: Mutex::new(State {
                tasks: TaskList::default(),
                drain: DrainLock::default(),
                owner: Owner {
                    host,
                    fate: Fate::Open,
                    registration: Registration::No,
                },
                outcome: Outcome::Success,
                report: ReportSlot::default(),
                handed: crate::metrics::Handed::NOT_YET,
            }),
            released: Notify::new(),
        }
    }

    /// Locks the state. Nothing user-written runs under this lock, but a
    /// poisoned lock must not turn into a panic inside a `Drop`, so poison is
    /// ignored.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn released(&self) -> &Notify {
        &self.released
    }

    /// Lets go of one hold on the queue's drain lock, and wakes the drains
    /// waiting for it once nobody holds it.
    pub(crate) fn release(&self) {
        let last = {
            let mut state = self.lock();
            state.drain.holders -= 1;
            state.drain.holders == 0
        };
        if last {
            self.released.notify_waiters();
        }
    }
}

impl State {
    /// Tells the host it need not wait for this queue any more, once a
    /// queue that was not handed over has lost its last task (to a direct
    /// drain, or to `append`). A task that arrives later registers it again.
    #[inline]
    pub(crate) fn forget_if_emptied(&mut self) {
        if self.tasks.is_empty() && self.owner.fate == Fate::Open {
            if let (Some(key), Some(host)) = (self.owner.take_key(), &self.owner.host) {
                host.unregister(key);
            }
        }
    }

    /// Whether the host counted the tasks of this queue: once it was handed
    /// over.
    pub(crate) fn counted_by_host(&self) -> Option<&Arc<dyn Host>> {
        match self.owner.fate {
            Fate::Open => None,
            Fate::Run { .. } | Fate::Skip => self.owner.host.as_ref(),
        }
    }
}

impl Owner {
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

/// Settles tasks taken out of a waiting queue by a key or `forget`, then
/// lets the lock go. Those of a queue not handed over never reached a
/// runner and are not counted; those of a queue handed over are counted
/// `skipped`, and logged.
#[inline]
pub(crate) fn settle_removed(
    state: MutexGuard<'_, State>,
    removed: Vec<Task>,
    why: impl FnOnce(bool) -> Why<'static>,
) {
    if removed.is_empty() {
        return;
    }
    settle_removed_slow(state, removed, why);
}

#[inline(never)]
fn settle_removed_slow(
    mut state: MutexGuard<'_, State>,
    removed: Vec<Task>,
    why: impl FnOnce(bool) -> Why<'static>,
) {
    state.forget_if_emptied();
    let host = state.counted_by_host().cloned();
    if let Some(host) = &host {
        host.counters().count(TaskOutcome::Skipped, removed.len());
    }
    drop(state);
    if let Some(host) = &host {
        host.made_room();
    }
    settle(removed, why(host.is_some()));
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
        if let (Some(key), Some(host)) = (state.owner.take_key(), &state.owner.host) {
            host.unregister(key);
        }
        if state.tasks.is_empty() {
            return;
        }
        // The last handle is gone and nobody will drain these tasks. A queue
        // handed to a runner is always held by a drain while it has tasks,
        // so these never reached one and no runner counts them; but they
        // must not vanish without a word. One line names them all: this is
        // one mistake (a queue never handed over), not one per task.
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
