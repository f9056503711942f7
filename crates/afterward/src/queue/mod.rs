//! `TaskQueue`: the per-request queue users add tasks to.
//!
//! A queue knows nothing of drains or runners: drains take tasks from it
//! (see `drain`), and the runner it belongs to is a [`Host`] to it.

mod current;
#[cfg(feature = "durable")]
mod durable;
mod list;
mod queued;
mod state;

use std::fmt;
use std::sync::{Arc, MutexGuard};

pub use self::current::WithCurrent;
pub(crate) use self::current::with_current;
use self::list::TaskList;
pub use self::queued::QueuedTask;
pub(crate) use self::state::{
    Awaited, DrainLock, Fate, Host, Inner, Registration, ReportSlot, State,
};
use self::state::{TaskNames, settle_removed};
use crate::condition::Outcome;
use crate::counts::TaskOutcome;
use crate::metrics;
use crate::task::{self, Rejection, Task, TaskFn, Why, settle};

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
        let task = task::task_of(func, args, task::current_parent());
        let id = task.id();
        let position = self.add(task);
        QueuedTask::new(self, position, id)
    }

    /// Moves every task of `other` to the end of this queue, keeping their
    /// order, and leaves `other` empty. Appending a queue to itself (or to a
    /// clone of itself) does nothing.
    ///
    /// This is how two queues of one request become one sequence: adapters
    /// append the queue a response carries to the request's queue, so the
    /// request's tasks run first. Keys keep their rule across the two: a
    /// task of `other` replaces a waiting task of this queue with the same
    /// [key](QueuedTask::key), since it was added later.
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
            if other.owner.fate != Fate::Open {
                // Its tasks were counted by the runner it was handed to,
                // which will run or settle them.
                return;
            }
            let moved = other.tasks.take_list();
            other.forget_if_emptied();
            moved
        };
        if !moved.is_empty() {
            self.arrive(self.inner.lock(), Arrivals::Many(moved));
        }
    }

    /// Where one task enters the queue: [`arrive`](TaskQueue::arrive), with
    /// the usual cases (a plain queue, or a request's queue the runner
    /// already knows) taken first and kept short.
    #[inline]
    fn add(&self, task: Task) -> usize {
        let mut state = self.inner.lock();
        let owner = &state.owner;
        let plain = owner.host.is_none()
            || (owner.fate == Fate::Open && owner.registration != Registration::No);
        if plain {
            return state.tasks.push(task);
        }
        self.arrive(state, Arrivals::One(task))
    }

    /// Where every task enters the queue. What happens next depends on the
    /// queue's fate: a queue not handed over keeps it (and a queue made for
    /// a runner tells the runner it has tasks); a queue handed over to run
    /// counts it received and, if no drain has the queue, starts one; a
    /// queue handed over to skip counts it skipped.
    /// Returns the position of the last task that arrived.
    fn arrive(&self, mut state: MutexGuard<'_, State>, arrived: Arrivals) -> usize {
        let n = arrived.len();
        if metrics::ENABLED && state.counted_by_host().is_some() {
            arrived.for_each(|task| metrics::received(&task.name()));
        }
        let State { tasks, owner, .. } = &mut *state;
        let turned_away = match (&owner.host, owner.fate) {
            // Not handed over (a queue without a runner is never).
            (None, _) | (_, Fate::Open) => {
                let (last, replaced) = arrived.push_into(tasks);
                if let (Some(host), Registration::No) = (&owner.host, owner.registration) {
                    owner.registration = match host.register(Arc::downgrade(&self.inner)) {
                        Some(key) => Registration::Key(key),
                        None => Registration::Refused,
                    };
                }
                settle_removed(state, replaced, |counted| Why::Replaced { counted });
                return last;
            }
            (Some(host), Fate::Run { scheduled }) if host.has_room(n) => {
                host.counters().received(n);
                let (last, replaced) = arrived.push_into(tasks);
                let schedule = (!scheduled).then(|| {
                    owner.fate = Fate::Run { scheduled: true };
                    host.clone()
                });
                settle_removed(state, replaced, |counted| Why::Replaced { counted });
                if let Some(host) = schedule {
                    host.schedule(self.inner.clone());
                }
                return last;
            }
            (Some(host), Fate::Run { .. }) => {
                host.counters().received_and(TaskOutcome::Rejected, n);
                Why::Rejected(Rejection::BacklogFull)
            }
            (Some(host), Fate::Skip) => {
                host.counters().received_and(TaskOutcome::Skipped, n);
                Why::AddedAfterSkip
            }
        };
        let (last, turned) = arrived.number(tasks);
        drop(state);
        settle(turned, turned_away);
        last
    }

    /// Records how the response this queue was filled for ended, for the
    /// tasks' [run conditions](crate::RunIf). Adapters do this through
    /// [`adapter::ResponseTasks`](crate::adapter::ResponseTasks); a queue
    /// nobody records an outcome for counts as a success.
    #[doc(hidden)]
    #[deprecated(note = "adapters record the outcome through `afterward::adapter`")]
    pub fn set_outcome(&self, outcome: Outcome) {
        self.record_outcome(outcome);
    }

    pub(crate) fn record_outcome(&self, outcome: Outcome) {
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
        let forgotten: Vec<Task> = state.tasks.take_key(key).into_iter().collect();
        let n = forgotten.len();
        settle_removed(state, forgotten, |counted| Why::Forgotten { counted });
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

    /// The queue's shared state, for the drains and the runner.
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

/// Tasks arriving at a queue: one from `add_task`, or a whole queue's
/// from `append`.
enum Arrivals {
    One(Task),
    Many(TaskList),
}

impl Arrivals {
    fn len(&self) -> usize {
        match self {
            Arrivals::One(_) => 1,
            Arrivals::Many(tasks) => tasks.len(),
        }
    }

    fn for_each(&self, mut f: impl FnMut(&Task)) {
        match self {
            Arrivals::One(task) => f(task),
            Arrivals::Many(tasks) => tasks.for_each(f),
        }
    }

    /// Puts the tasks at the end of `list`. Returns the position of the
    /// last, and the tasks that arrived tasks with the same key replaced.
    fn push_into(self, list: &mut TaskList) -> (usize, Vec<Task>) {
        match self {
            Arrivals::One(task) => (list.push(task), Vec::new()),
            Arrivals::Many(tasks) => {
                let replaced = list.append(tasks);
                (list.newest(), replaced)
            }
        }
    }

    /// Gives the tasks their places in `list`'s order without keeping them.
    fn number(self, list: &mut TaskList) -> (usize, Vec<Task>) {
        let mut tasks = match self {
            Arrivals::One(task) => vec![task],
            Arrivals::Many(mut tasks) => tasks.take_all(),
        };
        let mut last = 0;
        for task in &mut tasks {
            last = list.number(task);
        }
        (last, tasks)
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
