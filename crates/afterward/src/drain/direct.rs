//! `TaskQueue::drain`: a drain without a runner, in place.

use super::Drain;
use super::ctx::Ctx;
use crate::queue::TaskQueue;
use crate::report::DrainReport;

impl TaskQueue {
    /// Runs every queued task now, one after another, in insertion order,
    /// with the default policy: no timeout, and
    /// [`FailurePolicy::Continue`](crate::FailurePolicy::Continue).
    ///
    /// Tasks added while the drain runs (by a task, or by another clone of
    /// the queue) are run by this drain, after the others. If another drain
    /// of the same queue is running, this one waits for it: two drains never
    /// run tasks of one queue at the same time, and no task runs twice.
    ///
    /// Must be awaited inside a tokio runtime, since sync tasks go to its
    /// blocking pool. In a server, prefer [`Runner::spawn`](crate::Runner::spawn).
    ///
    /// A queue handed to a runner belongs to it: `drain` runs none of its
    /// tasks (the runner does), and a drain under way when the queue is
    /// handed over stops after its current task.
    ///
    /// A task must not await `drain()` of its own queue: that drain waits
    /// for the one running the task, which waits for the task, so neither
    /// ever ends. Under a runner with a
    /// [`task_timeout`](crate::RunnerBuilder::task_timeout) the task is cut
    /// off at the timeout; without one, the queue is stuck for good.
    ///
    /// # Cancel safety
    ///
    /// If the returned future is dropped before it finishes, the task running
    /// at that moment is abandoned (an async task is dropped at its current
    /// `.await`, a sync task is let finish), and logged. Tasks not yet
    /// started stay in the queue for a later drain.
    ///
    /// # Examples
    ///
    /// ```
    /// use afterward::TaskQueue;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let queue = TaskQueue::new();
    /// queue.add_task(|| Err::<(), _>("smtp unreachable"), ());
    /// queue.add_task(|| println!("still runs"), ());
    ///
    /// let report = queue.drain().await;
    /// assert_eq!((report.failed(), report.completed()), (1, 1));
    /// # }
    /// ```
    pub async fn drain(&self) -> DrainReport {
        Drain::complete(self.inner().clone(), Ctx::direct()).await
    }
}
