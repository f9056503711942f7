//! `TaskQueue::current`: the queue of the request whose handler is running,
//! for code deep in a call stack that has no request in hand.

use std::future::Future;

use tokio::task::futures::TaskLocalFuture;

use super::TaskQueue;

tokio::task_local! {
    static CURRENT: TaskQueue;
}

/// A future that runs with a queue as [`TaskQueue::current`]: what
/// [`adapter::with_current`](crate::adapter::with_current) returns.
pub type WithCurrent<F> = TaskLocalFuture<TaskQueue, F>;

/// Runs `future` with `queue` as the current queue.
pub(crate) fn with_current<F: Future>(queue: TaskQueue, future: F) -> WithCurrent<F> {
    CURRENT.scope(queue, future)
}

impl TaskQueue {
    /// The queue of the request whose handler is running here, if any.
    ///
    /// Adapters set it for the handler's future (`afterward-hyper`'s
    /// `TaskService` and `TaskLayer`, `afterward-actix`'s `Tasks`), so that
    /// code deep in a call stack (a repository, a domain service) can queue
    /// work without the queue being passed down, as `tracing`'s current span
    /// or Vercel's `waitUntil` do. It is `None` outside a handler, and in
    /// tasks the handler spawns (`tokio::spawn` starts a task of its own,
    /// which does not inherit it: pass the queue along by hand there).
    ///
    /// # Examples
    ///
    /// ```
    /// use afterward::TaskQueue;
    ///
    /// fn record_signup(user: u64) {
    ///     // Deep in the code: no request in hand.
    ///     if let Some(tasks) = TaskQueue::current() {
    ///         tasks.add_task(|user: u64| println!("audit: signup {user}"), (user,));
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// assert!(TaskQueue::current().is_none()); // not in a handler
    ///
    /// let queue = TaskQueue::new();
    /// // What an adapter does around a handler:
    /// afterward::adapter::with_current(queue.clone(), async { record_signup(7) }).await;
    /// assert_eq!(queue.len(), 1);
    /// # }
    /// ```
    pub fn current() -> Option<TaskQueue> {
        CURRENT.try_with(TaskQueue::clone).ok()
    }
}
