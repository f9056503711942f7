use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tracing::Span;

use crate::drain::{Ctx, Drain, DrainReport};
use crate::task::{self, Job, TaskFn, TaskName};

/// A per-request queue of background tasks.
///
/// A handler adds tasks with [`add_task`](TaskQueue::add_task); once the
/// response has gone out they run **one after another, in the order they were
/// added**. `TaskQueue` is a cheap handle: every clone is the same queue, so a
/// handler, a middleware and the code that finally drains it all see the same
/// tasks.
///
/// Drain a queue yourself with [`drain`](TaskQueue::drain), or hand it to a
/// [`Runner`](crate::Runner), which drains it in the background with a
/// concurrency limit, a task timeout, a failure policy and graceful shutdown.
/// The `afterward-hyper` crate does the hand-off for you when a response body
/// is finished.
///
/// # Examples
///
/// ```
/// use afterward::TaskQueue;
///
/// fn send_welcome_email(to: String, name: String) {
///     println!("welcome, {name} <{to}>");
/// }
///
/// async fn write_audit_log(user_id: u64, action: &'static str) -> std::io::Result<()> {
///     println!("user {user_id}: {action}");
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let queue = TaskQueue::new();
/// queue.add_task(send_welcome_email, ("ada@example.com".to_string(), "Ada".to_string()));
/// queue.add_task(write_audit_log, (7, "register"));
/// assert_eq!(queue.len(), 2);
///
/// // Usually a `Runner` does this once the response is sent.
/// let report = queue.drain().await;
/// assert_eq!(report.completed(), 2);
/// assert!(queue.is_empty());
/// # }
/// ```
#[derive(Clone, Default)]
pub struct TaskQueue {
    inner: Arc<Inner>,
}

/// One queued task and what is needed to report on it.
pub(crate) struct Task {
    pub(crate) name: TaskName,
    /// 1-based position in the queue, in insertion order.
    pub(crate) position: usize,
    /// The span that was current when the task was added.
    pub(crate) parent: Span,
    pub(crate) job: Job,
}

#[derive(Default)]
pub(crate) struct Inner {
    state: Mutex<State>,
    /// Woken when the last holder of the drain lock lets go.
    released: Notify,
}

/// Everything behind the queue's mutex.
///
/// Besides the tasks, it holds the bookkeeping of the drain that currently
/// owns the queue. Drains of one queue are mutually exclusive (see
/// `holders`), so one slot is enough, and a sync batch running on the
/// blocking pool can reach it without an allocation of its own.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) tasks: VecDeque<Task>,
    /// Tasks ever added; gives each task its position.
    added: usize,
    /// How many parties hold the drain lock: the drain itself and any sync
    /// batch it sent to the blocking pool. A batch may outlive a cancelled
    /// drain, and the next drain must wait for it.
    pub(crate) holders: usize,
    /// The task being run now, if any. Whoever takes it out (the code that
    /// saw the task finish, or the code that abandons it) is the one that
    /// counts it: this is what makes counting exactly-once.
    pub(crate) in_flight: Option<(TaskName, usize)>,
    /// Set when the current drain was cancelled: a sync batch still running
    /// must not start another task.
    pub(crate) cancelled: bool,
    /// Set when a task of the current drain failed, for `StopQueue`.
    pub(crate) failed: bool,
    /// The current drain's report so far.
    pub(crate) report: DrainReport,
}

impl TaskQueue {
    /// Creates an empty queue.
    pub fn new() -> TaskQueue {
        TaskQueue::default()
    }

    /// Queues `func` to be called with `args` after the response.
    ///
    /// `args` is the tuple of arguments, like Python's `add_task(func,
    /// *args)`: `()` for none, `(x,)` for one, `(x, y)` for two, up to twelve.
    /// The arguments are **moved into the queue now**: reassigning the
    /// caller's variables afterwards does not change what the task sees,
    /// while a shared handle such as `Arc<Mutex<_>>` stays shared.
    ///
    /// The return type of `func` decides how the task runs (see
    /// [`TaskOutput`](crate::TaskOutput)):
    ///
    /// - a **sync** function returning `()` or `Result<T, E>` runs on tokio's
    ///   blocking pool, so it may block (file I/O, compression, SMTP) without
    ///   stalling the server;
    /// - an **async** function, or a closure returning a future, with output
    ///   `()` or `Result<T, E>`, is awaited on the runtime.
    ///
    /// An `Err` is logged with the task's name and counted as failed; a panic
    /// is caught, logged and counted as panicked. Neither stops the server.
    /// The task's name in logs is the function's name without its module path
    /// (`send_welcome_email`, or `handler::{{closure}}` for a closure).
    ///
    /// The task runs inside a `tracing` span that is a child of the span
    /// current here, so its logs line up with the request that queued it.
    ///
    /// # Examples
    ///
    /// A sync function, an async function and closures of both kinds:
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use afterward::TaskQueue;
    ///
    /// fn append(log: Arc<Mutex<Vec<String>>>, line: String) {
    ///     log.lock().unwrap().push(line);
    /// }
    ///
    /// async fn notify(log: Arc<Mutex<Vec<String>>>, user: u64) -> Result<(), String> {
    ///     log.lock().unwrap().push(format!("notified {user}"));
    ///     Ok(())
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// let queue = TaskQueue::new();
    ///
    /// let mut line = String::from("first");
    /// queue.add_task(append, (log.clone(), line.clone()));
    /// line.push_str(" (changed later)"); // the task already has its own copy
    ///
    /// queue.add_task(notify, (log.clone(), 42));
    ///
    /// let l = log.clone();
    /// queue.add_task(move || l.lock().unwrap().push("sync closure".into()), ());
    ///
    /// // Closure parameters need their types written out.
    /// queue.add_task(
    ///     |log: Arc<Mutex<Vec<String>>>, n: u32| async move {
    ///         log.lock().unwrap().push(format!("async closure {n}"));
    ///     },
    ///     (log.clone(), 7),
    /// );
    ///
    /// queue.drain().await;
    /// assert_eq!(
    ///     *log.lock().unwrap(),
    ///     ["first", "notified 42", "sync closure", "async closure 7"]
    /// );
    /// # }
    /// ```
    ///
    /// A closure whose body only panics has the return type `!`, which is
    /// not a task result; write `|| -> () { panic!("...") }`.
    ///
    /// A function that returns something else does not compile:
    ///
    /// ```compile_fail,E0277
    /// # let queue = afterward::TaskQueue::new();
    /// fn count(n: u32) -> u32 { n + 1 }
    /// queue.add_task(count, (1,)); // `u32` cannot be returned by a background task
    /// ```
    pub fn add_task<F, Args, M>(&self, func: F, args: Args)
    where
        F: TaskFn<Args, M>,
    {
        let job = task::job_of(func, args);
        let name = TaskName::of::<F>();
        // Without any subscriber there is no span to follow; asking for the
        // current one would cost more than the rest of `add_task`.
        let parent = if tracing::dispatcher::has_been_set() {
            Span::current()
        } else {
            Span::none()
        };
        let mut state = self.inner.lock();
        state.added += 1;
        let position = state.added;
        state.tasks.push_back(Task {
            name,
            position,
            parent,
            job,
        });
    }

    /// Moves every task of `other` to the end of this queue, keeping their
    /// order, and leaves `other` empty. Appending a queue to itself (or to a
    /// clone of itself) does nothing.
    ///
    /// This is how two queues of one request become one sequence: the
    /// `afterward-hyper` adapter appends the queue a response carries to the
    /// request's queue, so the request's tasks run first.
    ///
    /// # Examples
    ///
    /// ```
    /// use afterward::TaskQueue;
    ///
    /// fn first() {}
    /// fn second() {}
    ///
    /// let request = TaskQueue::new();
    /// request.add_task(first, ());
    /// let response = TaskQueue::new();
    /// response.add_task(second, ());
    ///
    /// request.append(&response);
    /// assert_eq!(format!("{request:?}"), r#"TaskQueue { len: 2, tasks: ["first", "second"] }"#);
    /// assert!(response.is_empty());
    /// request.append(&request.clone()); // the same queue: nothing happens
    /// assert_eq!(request.len(), 2);
    /// ```
    pub fn append(&self, other: &TaskQueue) {
        if Arc::ptr_eq(&self.inner, &other.inner) {
            return;
        }
        // Taken out first so that the two locks are never held together.
        let moved = std::mem::take(&mut other.inner.lock().tasks);
        if moved.is_empty() {
            return;
        }
        let mut state = self.inner.lock();
        for mut task in moved {
            state.added += 1;
            task.position = state.added;
            state.tasks.push_back(task);
        }
    }

    /// The number of tasks waiting to run.
    ///
    /// A task leaves the queue when a drain starts it, so while a drain runs
    /// this counts only the tasks after the current one.
    pub fn len(&self) -> usize {
        self.inner.lock().tasks.len()
    }

    /// Whether no task is waiting to run.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().tasks.is_empty()
    }

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
        let mut drain = Drain::new(self.inner.clone(), Ctx::direct());
        drain.run().await;
        drain.close()
    }

    pub(crate) fn take_all(&self) -> VecDeque<Task> {
        std::mem::take(&mut self.inner.lock().tasks)
    }

    pub(crate) fn into_inner(self) -> Arc<Inner> {
        self.inner
    }
}

impl Inner {
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

impl fmt::Debug for TaskQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("TaskQueue")
            .field("len", &state.tasks.len())
            .field("tasks", &TaskNames(&state.tasks))
            .finish()
    }
}

struct TaskNames<'a>(&'a VecDeque<Task>);

impl fmt::Debug for TaskNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|task| task.name.short()))
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if state.tasks.is_empty() {
            return;
        }
        // The last handle is gone and nobody will drain these tasks. They were
        // never handed to a runner, so no runner counts them, but they must
        // not vanish without a word.
        tracing::error!(
            count = state.tasks.len(),
            tasks = ?TaskNames(&state.tasks),
            "task queue dropped with tasks that were never run"
        );
    }
}
