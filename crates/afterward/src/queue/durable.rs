//! `TaskQueue::add_durable`, and the body of a durable task.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::{QueuedTask, TaskQueue};
use crate::durable::{ChainStep, DurableTask, Step};
use crate::task::{Body, Returned, Task, TaskId, current_parent};

impl TaskQueue {
    /// Queues a [`DurableTask`]: a task described by data, which can leave
    /// the process (feature `durable`).
    ///
    /// Without a durable backend on the runner it is an ordinary async task:
    /// it runs in-process, in queue order, under every rule of
    /// [`add_task`](TaskQueue::add_task). With one
    /// ([`RunnerBuilder::durable`](crate::RunnerBuilder::durable)), it is
    /// stored with the queue's other durable tasks as one chain when the
    /// queue is handed off, and a worker runs it. The
    /// [module docs](crate::durable) say how the two kinds are ordered and
    /// counted.
    ///
    /// The task is serialized only at the hand-off, so a queue that is never
    /// handed off, or is skipped, stores nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use afterward::{DurableTask, Step, TaskQueue};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct AppendAudit {
    ///     user: u64,
    ///     action: String,
    /// }
    ///
    /// impl DurableTask for AppendAudit {
    ///     const NAME: &'static str = "append_audit";
    ///     type Error = String;
    ///
    ///     async fn run(self, _step: Step) -> Result<(), String> {
    ///         println!("user {}: {}", self.user, self.action);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let queue = TaskQueue::new();
    /// queue.add_durable(AppendAudit { user: 7, action: "register".into() });
    /// assert_eq!(queue.task_names(), ["append_audit"]);
    /// assert_eq!(queue.drain().await.completed(), 1);
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "durable")))]
    pub fn add_durable<T: DurableTask>(&self, task: T) -> QueuedTask<'_> {
        let id = TaskId::new();
        let body = DurableBody {
            id,
            task: Some(task),
            running: None,
        };
        let task = Task::with_id(id, T::NAME, current_parent(), false, body);
        let id = task.id();
        let position = self.add(task);
        QueuedTask::new(self, position, id)
    }
}

type Running = Pin<Box<dyn Future<Output = Returned> + Send>>;

pin_project! {
    /// A durable task: its value until it runs in-process, then its run.
    struct DurableBody<T> {
        id: TaskId,
        task: Option<T>,
        running: Option<Running>,
    }
}

impl<T: DurableTask> Body for DurableBody<T> {
    fn run(self: Pin<&mut Self>) -> Returned {
        // Durable tasks are async: polled, never run on the blocking pool.
        Err("a durable task was run as a sync one".to_owned())
    }

    fn poll_run(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Returned> {
        let this = self.project();
        if this.running.is_none() {
            let Some(task) = this.task.take() else {
                return Poll::Ready(Err("the task was already run".to_owned()));
            };
            let run = task.run(Step::local(*this.id));
            *this.running = Some(Box::pin(async move {
                run.await.map_err(|error| error.to_string())
            }));
        }
        match this.running {
            Some(running) => running.as_mut().poll(cx),
            None => Poll::Ready(Err("the task was already run".to_owned())),
        }
    }

    fn is_durable(&self) -> bool {
        true
    }

    fn to_step(&self) -> Option<Result<ChainStep, String>> {
        let task = self.task.as_ref()?;
        let step = ChainStep::of(self.id, task);
        Some(step.map_err(|error| format!("cannot serialize {}: {error}", T::NAME)))
    }
}
