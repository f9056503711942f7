//! `QueuedTask`: options for the task `add_task` just queued.

use std::borrow::Cow;
use std::sync::Arc;

use super::TaskQueue;
use super::state::settle_removed;
use crate::condition::RunIf;
use crate::task::{TaskId, TaskName, Why};

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
    id: TaskId,
}

impl<'a> QueuedTask<'a> {
    pub(super) fn new(queue: &'a TaskQueue, position: usize, id: TaskId) -> QueuedTask<'a> {
        QueuedTask {
            queue,
            position,
            id,
        }
    }

    /// The task's id: in its log lines, and, for a durable task, its
    /// step's id, to look it up once the response has gone.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Names the task in logs, reports and
    /// [`task_names`](TaskQueue::task_names); by default it is named after
    /// its function (`send_welcome_email`, or `handler::{{closure}}`).
    pub fn name(self, name: impl Into<Cow<'static, str>>) -> Self {
        let name = TaskName::given(name.into());
        if let Some(task) = self.queue.inner.lock().tasks.get_mut(self.position) {
            task.set_name(name);
        }
        self
    }

    /// Runs the task only if its response's outcome satisfies `condition`;
    /// otherwise it is counted `skipped` and logged with the reason. See
    /// [`RunIf`], and "Choosing when a task runs" in the crate docs.
    pub fn run_if(self, condition: RunIf) -> Self {
        if let Some(task) = self.queue.inner.lock().tasks.get_mut(self.position) {
            task.header_mut().run_if = condition;
        }
        self
    }

    /// Gives the task a dedupe key. Of the tasks waiting in the queue with
    /// one key, only the newest (the last added, whenever `key` is called)
    /// stays: it runs in its own place, after the tasks added before it. A
    /// removed task is dropped unrun; if its queue was already handed to a
    /// runner, it is counted `skipped` and logged. Keeping a key costs the
    /// same whatever the queue's length.
    ///
    /// See also [`TaskQueue::forget`].
    pub fn key(self, key: impl Into<Cow<'static, str>>) -> Self {
        let key: Arc<str> = Arc::from(key.into());
        let mut state = self.queue.inner.lock();
        let replaced: Vec<_> = state
            .tasks
            .set_key(self.position, key)
            .into_iter()
            .collect();
        settle_removed(state, replaced, |counted| Why::Replaced { counted });
        self
    }
}
