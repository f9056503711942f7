use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{Semaphore, oneshot, watch};

use crate::TaskQueue;
use crate::drain::{Ctx, Drain, DrainReport, FailurePolicy, Kind, drop_quietly};

/// Runs task queues in the background: one per server, shared by every
/// request.
///
/// [`spawn`](Runner::spawn) hands a [`TaskQueue`] over; the runner drains it
/// on its runtime, one task after another, and counts what happened in its
/// [`Stats`]. On the way out, [`shutdown`](Runner::shutdown) stops taking
/// new queues, gives the running ones until a deadline, and names the tasks
/// it had to abandon.
///
/// The rule the runner keeps is **conservation**: once it is idle or shut
/// down, every task it received has been counted exactly once,
///
/// ```text
/// tasks_received == completed + failed + panicked + timed_out + skipped + abandoned
/// ```
///
/// and every task that did not complete was logged with its name. No task is
/// run twice.
///
/// `Runner` is a cheap handle: clones share the same drains, limits and
/// statistics.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use afterward::{FailurePolicy, Runner, TaskQueue};
///
/// # #[tokio::main]
/// # async fn main() {
/// let runner = Runner::builder()
///     .max_concurrent_drains(64)
///     .task_timeout(Duration::from_secs(30))
///     .failure_policy(FailurePolicy::Continue)
///     .build();
///
/// // In a request handler:
/// let queue = TaskQueue::new();
/// queue.add_task(|user: u64| println!("send welcome email to user {user}"), (7,));
/// // ... and once the response is on its way:
/// runner.spawn(queue);
///
/// runner.wait_idle().await;
/// assert_eq!(runner.stats().completed(), 1);
///
/// // At the end of the program:
/// let report = runner.shutdown(Duration::from_secs(10)).await;
/// assert_eq!(report.abandoned(), 0);
/// # }
/// ```
#[derive(Clone)]
pub struct Runner {
    shared: Arc<Shared>,
}

/// Builds a [`Runner`] with settings other than the defaults.
///
/// | setting | default |
/// |---|---|
/// | [`max_concurrent_drains`](RunnerBuilder::max_concurrent_drains) | no limit |
/// | [`task_timeout`](RunnerBuilder::task_timeout) | none |
/// | [`failure_policy`](RunnerBuilder::failure_policy) | [`FailurePolicy::Continue`] |
/// | [`handle`](RunnerBuilder::handle) | the runtime `build` is called in |
#[derive(Debug, Clone, Default)]
#[must_use = "a RunnerBuilder does nothing until `build` is called"]
pub struct RunnerBuilder {
    max_concurrent_drains: Option<usize>,
    task_timeout: Option<Duration>,
    failure_policy: FailurePolicy,
    handle: Option<Handle>,
}

/// State shared by all clones of a runner and by its drains.
pub(crate) struct Shared {
    handle: Handle,
    policy: FailurePolicy,
    timeout: Option<Duration>,
    max_concurrent_drains: Option<usize>,
    limit: Option<Semaphore>,
    activity: watch::Sender<Activity>,
    running: AtomicUsize,
    counters: Counters,
    /// Names of abandoned tasks, until a shutdown report takes them.
    abandoned_names: Mutex<Vec<&'static str>>,
}

/// Kept in a `watch` channel so that waiting for idleness, closing and
/// cancelling are race-free: a spawn checks `closed` and counts itself
/// `active` under the same lock that `shutdown` sets `closed` with.
#[derive(Debug, Default, Clone, Copy)]
struct Activity {
    /// Drains spawned and not yet finished: running or waiting for a slot.
    active: usize,
    /// No new drains are taken.
    closed: bool,
    /// The shutdown deadline passed: drains still going stop now.
    cancelled: bool,
}

#[derive(Default)]
struct Counters {
    received: AtomicUsize,
    completed: AtomicUsize,
    failed: AtomicUsize,
    panicked: AtomicUsize,
    timed_out: AtomicUsize,
    skipped: AtomicUsize,
    abandoned: AtomicUsize,
}

// ===== impl RunnerBuilder =====

impl RunnerBuilder {
    /// Runs at most `n` drains at a time. Queues spawned beyond that wait
    /// their turn, in order; none is dropped. Tasks *within* a queue always
    /// run one at a time; this bounds how many queues run side by side.
    ///
    /// # Panics
    ///
    /// If `n` is 0: no queue would ever run.
    pub fn max_concurrent_drains(mut self, n: usize) -> Self {
        assert!(n > 0, "max_concurrent_drains must be at least 1");
        assert!(
            n <= Semaphore::MAX_PERMITS,
            "max_concurrent_drains must be at most {}",
            Semaphore::MAX_PERMITS
        );
        self.max_concurrent_drains = Some(n);
        self
    }

    /// Gives each task at most `timeout` to run.
    ///
    /// An **async** task still running at the deadline is cancelled (dropped
    /// at its current `.await`), logged and counted `timed_out`. A **sync**
    /// task cannot be interrupted: it is never abandoned mid-run, the next
    /// task waits for it, and if it overran it is logged and counted
    /// `timed_out` when it returns.
    ///
    /// The runtime must have its time driver enabled (as `#[tokio::main]`
    /// and `Builder::enable_all` do).
    ///
    /// # Panics
    ///
    /// If `timeout` is zero: every task would time out.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "task_timeout must be greater than zero");
        self.task_timeout = Some(timeout);
        self
    }

    /// What a drain does after a task fails, panics or times out. See
    /// [`FailurePolicy`].
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// Runs drains on the runtime of `handle` instead of the one `build` is
    /// called in; lets a runner be built outside any runtime.
    pub fn handle(mut self, handle: Handle) -> Self {
        self.handle = Some(handle);
        self
    }

    /// Builds the runner.
    ///
    /// # Panics
    ///
    /// If no [`handle`](RunnerBuilder::handle) was given and this is not
    /// called inside a tokio runtime.
    pub fn build(self) -> Runner {
        let handle = self.handle.unwrap_or_else(|| {
            Handle::try_current().unwrap_or_else(|_| {
                panic!(
                    "afterward::Runner must be built inside a tokio runtime, \
                     or be given one with RunnerBuilder::handle"
                )
            })
        });
        Runner {
            shared: Arc::new(Shared {
                handle,
                policy: self.failure_policy,
                timeout: self.task_timeout,
                max_concurrent_drains: self.max_concurrent_drains,
                limit: self.max_concurrent_drains.map(Semaphore::new),
                activity: watch::Sender::new(Activity::default()),
                running: AtomicUsize::new(0),
                counters: Counters::default(),
                abandoned_names: Mutex::new(Vec::new()),
            }),
        }
    }
}

// ===== impl Runner =====

impl Runner {
    /// A runner with the default settings, on the current tokio runtime.
    ///
    /// It keeps a [`Handle`] to that runtime, so [`spawn`](Runner::spawn) can
    /// be called from anywhere, including a `Drop` impl on a thread that is
    /// not a runtime worker.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime; use [`Runner::builder`] with
    /// [`handle`](RunnerBuilder::handle) there.
    pub fn new() -> Runner {
        Runner::builder().build()
    }

    /// A builder for a runner with a concurrency limit, a task timeout or
    /// another failure policy.
    pub fn builder() -> RunnerBuilder {
        RunnerBuilder::default()
    }

    /// Drains `queue` in the background, on the runner's runtime.
    ///
    /// Returns at once. The returned [`DrainHandle`] resolves to the drain's
    /// report; dropping it does not cancel the drain. Beyond
    /// [`max_concurrent_drains`](RunnerBuilder::max_concurrent_drains), the
    /// drain waits for a slot.
    ///
    /// After [`shutdown`](Runner::shutdown) has begun, or once the runtime is
    /// shutting down, the queue's tasks are not run: they are counted
    /// `abandoned` and logged with their names.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// let runner = afterward::Runner::new();
    /// let queue = afterward::TaskQueue::new();
    /// queue.add_task(|| println!("after the response"), ());
    ///
    /// let report = runner.spawn(queue).await;
    /// assert_eq!(report.completed(), 1);
    /// # }
    /// ```
    pub fn spawn(&self, queue: TaskQueue) -> DrainHandle {
        if queue.is_empty() {
            // Nothing to run: a drain would finish at once, so none is started.
            return DrainHandle::ready(DrainReport::default());
        }
        let shared = &self.shared;
        let drain = Drain::new(queue.into_inner(), shared.ctx(self));
        let mut accepted = false;
        shared.activity.send_if_modified(|activity| {
            if !activity.closed {
                activity.active += 1;
                accepted = true;
            }
            false
        });
        if !accepted {
            // Dropping the drain unrun abandons the queue's tasks, counted and
            // logged like any other abandonment.
            let mut drain = drain;
            tracing::warn!("runner is shut down; the queue's tasks are abandoned");
            return DrainHandle::ready(drain.close());
        }
        let (tx, rx) = oneshot::channel();
        let job = Job {
            drain,
            shared: shared.clone(),
            report: Some(tx),
        };
        // If the runtime is shutting down, `spawn` drops the future without
        // polling it, and `Job`'s destructor accounts for the tasks.
        drop(shared.handle.spawn(job.run()));
        DrainHandle {
            state: HandleState::Pending(rx),
        }
    }

    /// Takes every task of `queue` without running it: each is counted
    /// `skipped` and logged with its name and `reason`.
    ///
    /// For work that was queued but must not run, such as the tasks of a
    /// request whose handler failed. Keeps conservation: the tasks are
    /// received and accounted for like any others.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// let runner = afterward::Runner::new();
    /// let queue = afterward::TaskQueue::new();
    /// queue.add_task(|| println!("never printed"), ());
    ///
    /// let report = runner.skip(queue, "the handler returned an error");
    /// assert_eq!(report.skipped(), 1);
    /// assert_eq!(runner.stats().skipped(), 1);
    /// # }
    /// ```
    pub fn skip(&self, queue: TaskQueue, reason: &str) -> DrainReport {
        let tasks = queue.take_all();
        let mut report = DrainReport::default();
        if tasks.is_empty() {
            return report;
        }
        report.add(Kind::Skipped, tasks.len());
        self.shared.received(tasks.len());
        self.shared.count(Kind::Skipped, tasks.len());
        for task in tasks {
            tracing::warn!(
                parent: &task.parent,
                task = task.name.short(),
                position = task.position,
                reason,
                "background task skipped"
            );
            drop_quietly(task);
        }
        report
    }

    /// A snapshot of what the runner has done so far.
    pub fn stats(&self) -> Stats {
        let shared = &self.shared;
        let c = &shared.counters;
        let active = shared.activity.borrow().active;
        let running = shared.running.load(Relaxed);
        Stats {
            tasks_received: c.received.load(Relaxed),
            completed: c.completed.load(Relaxed),
            failed: c.failed.load(Relaxed),
            panicked: c.panicked.load(Relaxed),
            timed_out: c.timed_out.load(Relaxed),
            skipped: c.skipped.load(Relaxed),
            abandoned: c.abandoned.load(Relaxed),
            drains_running: running.min(active),
            drains_waiting: active.saturating_sub(running),
        }
    }

    /// Waits until no drain is running or waiting.
    ///
    /// Returns at once if the runner is idle. Drains spawned while this waits
    /// are waited for too.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// let runner = afterward::Runner::new();
    /// for user in 0..3_u64 {
    ///     let queue = afterward::TaskQueue::new();
    ///     queue.add_task(|user: u64| async move { println!("webhook for {user}") }, (user,));
    ///     runner.spawn(queue);
    /// }
    /// runner.wait_idle().await;
    /// assert_eq!(runner.stats().completed(), 3);
    /// # }
    /// ```
    pub async fn wait_idle(&self) {
        let mut activity = self.shared.activity.subscribe();
        // The sender lives in `self.shared`, so the channel cannot close.
        let _ = activity.wait_for(|activity| activity.active == 0).await;
    }

    /// Shuts the runner down: takes no new queues, lets the drains that are
    /// running or waiting finish until `deadline`, then cancels what is left.
    ///
    /// Cancelled drains abandon their current task (an async task is dropped
    /// at its current `.await`; a sync task cannot be stopped and is let run,
    /// but its result no longer counts) and every task still queued. The
    /// report names them, and each is logged. Queues spawned after this
    /// began are abandoned at once.
    ///
    /// Call it after the server has stopped accepting requests and its
    /// connections are closed, so that no new tasks are queued meanwhile.
    /// The runtime must have its time driver enabled.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main]
    /// # async fn main() {
    /// async fn reindex_search() {
    ///     tokio::time::sleep(Duration::from_secs(3600)).await;
    /// }
    ///
    /// let runner = afterward::Runner::new();
    ///
    /// let queue = afterward::TaskQueue::new();
    /// queue.add_task(|| async { println!("quick") }, ());
    /// queue.add_task(reindex_search, ());
    /// runner.spawn(queue);
    ///
    /// let report = runner.shutdown(Duration::from_millis(50)).await;
    /// assert_eq!(report.abandoned_tasks(), ["reindex_search"]);
    /// # }
    /// ```
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let shared = &self.shared;
        shared
            .activity
            .send_modify(|activity| activity.closed = true);
        if tokio::time::timeout(deadline, self.wait_idle())
            .await
            .is_err()
        {
            shared
                .activity
                .send_modify(|activity| activity.cancelled = true);
            // Cancelled drains stop at their next poll.
            self.wait_idle().await;
        }
        let abandoned_tasks = mem_take(&shared.abandoned_names);
        if abandoned_tasks.is_empty() {
            tracing::info!("background task runner shut down; no task abandoned");
        } else {
            tracing::error!(
                abandoned = abandoned_tasks.len(),
                tasks = ?abandoned_tasks,
                "background task runner shut down; tasks were abandoned"
            );
        }
        ShutdownReport { abandoned_tasks }
    }
}

impl Default for Runner {
    /// Same as [`Runner::new`].
    fn default() -> Runner {
        Runner::new()
    }
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.shared;
        f.debug_struct("Runner")
            .field("max_concurrent_drains", &shared.max_concurrent_drains)
            .field("task_timeout", &shared.timeout)
            .field("failure_policy", &shared.policy)
            .field("stats", &self.stats())
            .finish()
    }
}

fn mem_take(names: &Mutex<Vec<&'static str>>) -> Vec<&'static str> {
    std::mem::take(&mut *names.lock().unwrap_or_else(PoisonError::into_inner))
}

// ===== impl Shared =====

impl Shared {
    fn ctx(&self, runner: &Runner) -> Ctx {
        Ctx {
            policy: self.policy,
            timeout: self.timeout,
            runner: Some(runner.shared.clone()),
        }
    }

    pub(crate) fn received(&self, n: usize) {
        self.counters.received.fetch_add(n, Relaxed);
    }

    pub(crate) fn count(&self, kind: Kind, n: usize) {
        let c = &self.counters;
        match kind {
            Kind::Completed => &c.completed,
            Kind::Failed => &c.failed,
            Kind::Panicked => &c.panicked,
            Kind::TimedOut => &c.timed_out,
            Kind::Skipped => &c.skipped,
            Kind::Abandoned => &c.abandoned,
        }
        .fetch_add(n, Relaxed);
    }

    pub(crate) fn note_abandoned(&self, name: &'static str) {
        self.abandoned_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(name);
    }
}

// ===== Job: one spawned drain =====

/// A drain the runner has taken on. Its destructor runs however the drain
/// ends (finished, cancelled by shutdown, dropped unpolled by a runtime that
/// is shutting down) and does the accounting: the drain's report goes to the
/// `DrainHandle`, the runner stops counting it as active.
struct Job {
    drain: Drain,
    shared: Arc<Shared>,
    report: Option<oneshot::Sender<DrainReport>>,
}

impl Job {
    async fn run(mut self) {
        let shared = self.shared.clone();
        let mut activity = shared.activity.subscribe();
        let work = async {
            let _permit = match &shared.limit {
                // The semaphore is never closed.
                Some(limit) => limit.acquire().await.ok(),
                None => None,
            };
            shared.running.fetch_add(1, Relaxed);
            let _running = Running(&shared.running);
            self.drain.run().await;
        };
        let cancelled = activity.wait_for(|activity| activity.cancelled);
        // Whichever comes first; the drain is polled first so that a drain
        // that is done is not reported as cancelled.
        let mut work = pin!(work);
        let mut cancelled = pin!(cancelled);
        poll_fn(|cx| {
            if work.as_mut().poll(cx).is_ready() || cancelled.as_mut().poll(cx).is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let report = self.drain.close();
        if let Some(tx) = self.report.take() {
            let _ = tx.send(report);
        }
        self.shared.activity.send_if_modified(|activity| {
            activity.active -= 1;
            activity.active == 0
        });
    }
}

struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

// ===== DrainHandle =====

/// The report of a drain started by [`Runner::spawn`], as a future.
///
/// Resolves to the [`DrainReport`] once the drain has finished (or was
/// cancelled by a shutdown). Dropping it does **not** cancel the drain: it
/// is only a way to wait for it.
pub struct DrainHandle {
    state: HandleState,
}

enum HandleState {
    Ready(Option<DrainReport>),
    Pending(oneshot::Receiver<DrainReport>),
}

impl DrainHandle {
    fn ready(report: DrainReport) -> DrainHandle {
        DrainHandle {
            state: HandleState::Ready(Some(report)),
        }
    }
}

impl Future for DrainHandle {
    type Output = DrainReport;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<DrainReport> {
        match &mut self.state {
            HandleState::Ready(report) => Poll::Ready(report.take().unwrap_or_default()),
            // The sender is in the drain's `Job`, whose destructor always
            // sends; an error can only mean the report was already taken.
            HandleState::Pending(rx) => Pin::new(rx).poll(cx).map(Result::unwrap_or_default),
        }
    }
}

impl fmt::Debug for DrainHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainHandle").finish_non_exhaustive()
    }
}

// ===== Stats =====

/// A snapshot of a [`Runner`]'s counters, from [`Runner::stats`].
///
/// The task counters only grow. Once the runner is idle or shut down,
/// `tasks_received()` equals the sum of the six outcome counters; while
/// drains run, the difference is the tasks in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    tasks_received: usize,
    completed: usize,
    failed: usize,
    panicked: usize,
    timed_out: usize,
    skipped: usize,
    abandoned: usize,
    drains_running: usize,
    drains_waiting: usize,
}

impl Stats {
    /// Tasks the runner's drains have taken from their queues.
    pub fn tasks_received(&self) -> usize {
        self.tasks_received
    }

    /// Tasks that ran to the end and returned `()` or `Ok`.
    pub fn completed(&self) -> usize {
        self.completed
    }

    /// Tasks that returned `Err`.
    pub fn failed(&self) -> usize {
        self.failed
    }

    /// Tasks that panicked.
    pub fn panicked(&self) -> usize {
        self.panicked
    }

    /// Tasks that ran past the task timeout.
    pub fn timed_out(&self) -> usize {
        self.timed_out
    }

    /// Tasks not run because an earlier task of their queue failed under
    /// [`FailurePolicy::StopQueue`].
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Tasks given up on: by a shutdown at its deadline, after a shutdown,
    /// or because the runtime was shutting down.
    pub fn abandoned(&self) -> usize {
        self.abandoned
    }

    /// Drains running now.
    pub fn drains_running(&self) -> usize {
        self.drains_running
    }

    /// Drains waiting for a slot under
    /// [`max_concurrent_drains`](RunnerBuilder::max_concurrent_drains).
    pub fn drains_waiting(&self) -> usize {
        self.drains_waiting
    }

    /// The six outcome counters added up; equal to
    /// [`tasks_received`](Stats::tasks_received) once the runner is idle.
    pub fn accounted(&self) -> usize {
        self.completed
            + self.failed
            + self.panicked
            + self.timed_out
            + self.skipped
            + self.abandoned
    }
}

// ===== ShutdownReport =====

/// What [`Runner::shutdown`] had to give up on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    abandoned_tasks: Vec<&'static str>,
}

impl ShutdownReport {
    /// How many tasks were abandoned.
    pub fn abandoned(&self) -> usize {
        self.abandoned_tasks.len()
    }

    /// The names of the abandoned tasks, in the order they were abandoned.
    pub fn abandoned_tasks(&self) -> &[&'static str] {
        &self.abandoned_tasks
    }
}
