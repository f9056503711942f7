//! `TaskQueue`: the per-request queue users add tasks to.

#[cfg(feature = "durable")]
mod durable;
mod list;
mod queued;
mod state;

use std::fmt;
use std::sync::Arc;

use tracing::Span;

use self::list::TaskList;
pub use self::queued::QueuedTask;
use self::state::settle_removed;
pub(crate) use self::state::{Awaited, Fate, Host, Inner, Registration, State, TaskNames};
use crate::condition::Outcome;
use crate::drain::{Ctx, Drain};
pub(crate) use crate::job::Task;
use crate::report::{DrainReport, Kind};
use crate::task::{self, TaskFn};

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
#[derive(Clone)]
pub struct TaskQueue {
    inner: Arc<Inner>,
}

impl Default for TaskQueue {
    fn default() -> TaskQueue {
        TaskQueue::new()
    }
}

impl TaskQueue {
    /// Creates an empty queue.
    pub fn new() -> TaskQueue {
        TaskQueue {
            inner: Arc::new(Inner::new(None)),
        }
    }

    /// A queue that belongs to a runner from the start (`Runner::new_queue`).
    pub(crate) fn owned_by(owner: Arc<dyn Host>) -> TaskQueue {
        TaskQueue {
            inner: Arc::new(Inner::new(Some(owner))),
        }
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
    /// It returns a [`QueuedTask`], which may be ignored, to give the task a
    /// [name](QueuedTask::name), a [run condition](QueuedTask::run_if) or a
    /// dedupe [key](QueuedTask::key).
    ///
    /// The task runs inside a `tracing` span that is a child of the span
    /// current here, so its logs line up with the request that queued it.
    ///
    /// # After the hand-off
    ///
    /// A queue may be cloned into work that outlives the handler, and get
    /// tasks after it was handed to a [`Runner`](crate::Runner). Such a task
    /// is never lost: it is counted received at once, and runs after every
    /// task added before it, in the drain that has the queue or, if that
    /// drain has finished, in a new one. Once the runner has shut down it is
    /// refused instead (counted `rejected` and logged with its name). A task
    /// added to a queue that was handed to [`Runner::skip`](crate::Runner::skip)
    /// is counted `skipped`.
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
    pub fn add_task<F, Args, M>(&self, func: F, args: Args) -> QueuedTask<'_>
    where
        F: TaskFn<Args, M>,
    {
        // Without any subscriber there is no span to follow; asking for the
        // current one would cost more than the rest of `add_task`.
        let parent = if tracing::dispatcher::has_been_set() {
            Span::current()
        } else {
            Span::none()
        };
        let position = self.arrive(Arrivals::One(task::task_of(func, args, parent)));
        QueuedTask::new(self, position)
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
        let moved = {
            let mut other = other.inner.lock();
            if other.fate != Fate::Open {
                // Its tasks were counted by the runner it was handed to,
                // which will run or settle them.
                return;
            }
            let moved = std::mem::take(&mut other.tasks);
            other.forget_if_emptied();
            moved
        };
        if !moved.is_empty() {
            self.arrive(Arrivals::Many(moved));
        }
    }

    /// Where every task enters the queue. What happens next depends on the
    /// queue's fate: a queue not handed off keeps it (and a queue made for a
    /// runner tells the runner it has tasks); a queue handed off to run
    /// counts it received and, if no drain has the queue, starts one; a
    /// queue handed off to skip counts it skipped.
    /// Returns the position of the last task that arrived.
    fn arrive(&self, arrived: Arrivals) -> usize {
        let mut state = self.inner.lock();
        let arrived = arrived.numbered(&mut state.added);
        let last = state.added;
        let n = arrived.len();
        let State {
            owner,
            fate,
            registration,
            tasks,
            ..
        } = &mut *state;
        let Some(owner) = owner else {
            arrived.push_into(tasks);
            return last;
        };
        let (refused, rejected) = match *fate {
            Fate::Open => {
                arrived.push_into(tasks);
                if *registration == Registration::No {
                    *registration = match owner.register(Arc::downgrade(&self.inner)) {
                        Some(key) => Registration::Key(key),
                        None => Registration::Refused,
                    };
                }
                return last;
            }
            Fate::Run { scheduled } => {
                if !owner.has_room(n) {
                    owner.counters().received_and(Kind::Rejected, n);
                    (arrived, true)
                } else {
                    owner.counters().received(n);
                    arrived.push_into(tasks);
                    if !scheduled {
                        *fate = Fate::Run { scheduled: true };
                        let owner = owner.clone();
                        drop(state);
                        owner.schedule(self.inner.clone());
                    }
                    return last;
                }
            }
            Fate::Skip => {
                owner.counters().received_and(Kind::Skipped, n);
                (arrived, false)
            }
        };
        drop(state);
        for task in refused.into_tasks() {
            if rejected {
                tracing::error!(
                    parent: task.parent(),
                    task = task.name().short(),
                    position = task.position(),
                    "background task rejected: the runner's backlog is full (max_backlog)"
                );
            } else {
                tracing::warn!(
                    parent: task.parent(),
                    task = task.name().short(),
                    position = task.position(),
                    "background task skipped: it was added after its queue was skipped"
                );
            }
            task.discard();
        }
        last
    }

    /// Records how the response this queue was filled for ended, for the
    /// tasks' [run conditions](crate::RunIf). `afterward-hyper` sets it at
    /// hand-off; a queue nobody sets it for counts as a success.
    pub fn set_outcome(&self, outcome: Outcome) {
        self.inner.lock().outcome = outcome;
    }

    /// Removes the waiting tasks queued with `key` (see
    /// [`QueuedTask::key`]) and says how many there were. They are dropped
    /// unrun; if the queue was already handed to a runner, they are counted
    /// `skipped` and logged.
    ///
    /// # Examples
    ///
    /// ```
    /// use afterward::TaskQueue;
    ///
    /// fn send_reminder(user: u64) {}
    ///
    /// let queue = TaskQueue::new();
    /// queue.add_task(send_reminder, (7,)).key("reminder 7");
    /// // The user finished their signup in the meantime:
    /// assert_eq!(queue.forget("reminder 7"), 1);
    /// assert!(queue.is_empty());
    /// ```
    pub fn forget(&self, key: &str) -> usize {
        let mut state = self.inner.lock();
        let forgotten = state.tasks.take_where(|task| task.key() == Some(key));
        let n = forgotten.len();
        settle_removed(
            state,
            forgotten,
            "background task forgotten (TaskQueue::forget)",
        );
        n
    }

    /// The names of the tasks waiting to run, in order: the names given with
    /// [`QueuedTask::name`], or the functions' names. For tests and
    /// debugging.
    pub fn task_names(&self) -> Vec<String> {
        let state = self.inner.lock();
        let mut names = Vec::with_capacity(state.tasks.len());
        state
            .tasks
            .for_each(|task| names.push(task.name().short().to_owned()));
        names
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
        let mut drain = Drain::new(self.inner.clone(), Ctx::direct());
        drain.run().await;
        drain.close()
    }

    pub(crate) fn into_inner(self) -> Arc<Inner> {
        self.inner
    }
}

/// Tasks arriving at a queue: one from `add_task`, or a whole queue's
/// from `append`. One task goes straight into the queue's list.
enum Arrivals {
    One(Task),
    Many(TaskList),
}

impl Arrivals {
    /// Gives the tasks their positions, after the `added` tasks before them.
    fn numbered(self, added: &mut usize) -> Arrivals {
        match self {
            Arrivals::One(mut task) => {
                *added += 1;
                task.info_mut().position = *added;
                Arrivals::One(task)
            }
            Arrivals::Many(mut tasks) => {
                let mut numbered = TaskList::default();
                while let Some(mut task) = tasks.pop_front() {
                    *added += 1;
                    task.info_mut().position = *added;
                    numbered.push_back(task);
                }
                Arrivals::Many(numbered)
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Arrivals::One(_) => 1,
            Arrivals::Many(tasks) => tasks.len(),
        }
    }

    fn push_into(self, list: &mut TaskList) {
        match self {
            Arrivals::One(task) => list.push_back(task),
            Arrivals::Many(tasks) => list.append(tasks),
        }
    }

    fn into_tasks(self) -> Vec<Task> {
        match self {
            Arrivals::One(task) => vec![task],
            Arrivals::Many(mut tasks) => tasks.take_all(),
        }
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
