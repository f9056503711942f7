//! `QueuedTask`: options for the task `add_task` just queued.

use std::borrow::Cow;
use std::sync::Arc;

use super::TaskQueue;
use super::state::settle_removed;
use crate::condition::RunIf;
use crate::job::TaskName;

/// The task [`TaskQueue::add_task`] just queued, to give it options.
///
/// Ignoring it costs nothing: the task is already queued, with its function's
/// name, no key, and [`RunIf::Always`]. Each option takes the queue's lock
/// once. Options apply while the task waits in its queue; a task that a
/// drain has already taken (possible only for a task added to a queue that
/// was handed over and is being drained) keeps what it had.
///
/// # Examples
///
/// ```
/// use afterward::{RunIf, TaskQueue};
///
/// fn refund(order: u64) {}
/// fn notify_search_index(product: u64) {}
///
/// let queue = TaskQueue::new();
/// queue.add_task(refund, (42,)).name("refund order 42").run_if(RunIf::Failure);
/// queue.add_task(notify_search_index, (7,)).key("reindex 7");
/// queue.add_task(notify_search_index, (7,)).key("reindex 7"); // replaces the first
/// assert_eq!(queue.task_names(), ["refund order 42", "notify_search_index"]);
/// ```
#[derive(Debug)]
pub struct QueuedTask<'a> {
    queue: &'a TaskQueue,
    position: usize,
}

impl<'a> QueuedTask<'a> {
    pub(super) fn new(queue: &'a TaskQueue, position: usize) -> QueuedTask<'a> {
        QueuedTask { queue, position }
    }

    /// Names the task in logs, reports and
    /// [`task_names`](TaskQueue::task_names); by default it is named after
    /// its function (`send_welcome_email`, or `handler::{{closure}}`).
    pub fn name(self, name: impl Into<Cow<'static, str>>) -> Self {
        let name = TaskName::given(name.into());
        self.queue
            .inner
            .with_waiting(self.position, |task| task.extra_mut().name = Some(name));
        self
    }

    /// Runs the task only if its response's outcome satisfies `condition`;
    /// otherwise it is counted `skipped` and logged with the reason. See
    /// [`RunIf`], and "Choosing when a task runs" in the crate docs.
    pub fn run_if(self, condition: RunIf) -> Self {
        self.queue
            .inner
            .with_waiting(self.position, |task| task.info_mut().run_if = condition);
        self
    }

    /// Gives the task a dedupe key. A task with the same key already waiting
    /// in the queue is removed: the newest one wins and, like any task just
    /// added, runs after the others. A removed task is dropped unrun; if its
    /// queue was already handed to a runner, it is counted `skipped` and
    /// logged.
    ///
    /// See also [`TaskQueue::forget`].
    pub fn key(self, key: impl Into<Cow<'static, str>>) -> Self {
        let key: Arc<str> = Arc::from(key.into());
        let position = self.position;
        let mut state = self.queue.inner.lock();
        let keyed = state
            .tasks
            .find_mut(position, |task| task.extra_mut().key = Some(key.clone()));
        if keyed {
            let replaced = state
                .tasks
                .take_where(|task| task.position() != position && task.key() == Some(&*key));
            settle_removed(
                state,
                replaced,
                "background task replaced by a newer task with the same key",
            );
        }
        self
    }
}
