//! `Runner`: where queues are drained, one server's worth of them.
//!
//! | file | holds |
//! |---|---|
//! | `builder.rs` | `RunnerBuilder` and the settings every drain runs with |
//! | `handle.rs` | `DrainHandle`: a drain's report, as a future |
//! | `state.rs` | what the runner's lock guards: phase, drains, workers, queues |
//! | `shared.rs` | `Shared`, the state every clone shares, and waiting for it to change |
//! | `backlog.rs` | the backlog's bound and `Capacity`, the wait for room |
//! | `settle.rs` | queues that will not run: abandoned or refused |
//! | `worker.rs` | workers: the tokio tasks that run drains |
//! | `admit.rs` | admission: a queue handed over is started, made to wait, or settled |
//! | `host.rs` | what queues see of the runner (`Host`) |
//! | `shutdown.rs` | `Runner::shutdown` and `ShutdownReport` |
//! | `recorder.rs` | `Recorder`, a runner for tests |
//! | `mod.rs` | `Runner`, the handle users hold |

mod admit;
mod backlog;
mod builder;
mod handle;
mod host;
#[cfg(feature = "test-util")]
mod recorder;
mod settle;
mod shared;
mod shutdown;
mod state;
mod worker;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::runtime::Handle;

pub use self::backlog::{Capacity, Reservation, Reserve};
pub use self::builder::RunnerBuilder;
pub(crate) use self::builder::Settings;
pub use self::handle::DrainHandle;
#[cfg(feature = "test-util")]
pub use self::recorder::Recorder;
use self::shared::Shared;
pub use self::shutdown::ShutdownReport;
use crate::condition::Outcome;
use crate::counts::TaskOutcome;
use crate::metrics;
use crate::queue::TaskQueue;
use crate::queue::{Fate, Host};
use crate::report::DrainReport;
use crate::stats::Stats;
use crate::task::{Task, Why, settle};

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
/// tasks_received == completed + failed + panicked + timed_out + skipped + abandoned + rejected
///                   + persisted + persist_failed + persist_unknown (with the `durable` feature)
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
    /// Shared by every `Runner` handle, and by them only (queues and drains
    /// hold `shared`): when the last handle goes, so does this.
    _handles: Arc<Handles>,
}

/// The `Runner` handles of one runner, counted by their `Arc`.
struct Handles(Arc<Shared>);

impl Drop for Handles {
    fn drop(&mut self) {
        // Queues still referring to the runner can start drains, but no
        // worker need wait for them any more.
        self.0.orphaned.store(true, Relaxed);
        self.0.release_idle();
    }
}

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

    fn from_parts(handle: Handle, settings: Settings) -> Runner {
        let shared = Arc::new(Shared::new(handle, settings));
        Runner {
            _handles: Arc::new(Handles(shared.clone())),
            shared,
        }
    }

    /// A new, empty queue that belongs to this runner from the start.
    ///
    /// It is a [`TaskQueue`] like any other, to be handed over with
    /// [`spawn`](Runner::spawn) or [`skip`](Runner::skip). The difference is
    /// that the runner knows it as soon as it has a task: a
    /// [`shutdown`](Runner::shutdown) waits for it until its deadline and,
    /// if it was still not handed over by then, abandons its tasks and names
    /// them. Adapters such as `afterward-hyper` make one per request this
    /// way; a queue with no task costs the runner nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # #[tokio::main]
    /// # async fn main() {
    /// fn send_receipt() {}
    ///
    /// let runner = afterward::Runner::new();
    /// let queue = runner.new_queue();
    /// queue.add_task(send_receipt, ());
    ///
    /// // The request is still in flight when the server shuts down.
    /// let report = runner.shutdown(Duration::from_millis(10)).await;
    /// assert_eq!(report.abandoned_tasks(), ["send_receipt"]);
    /// # }
    /// ```
    pub fn new_queue(&self) -> TaskQueue {
        TaskQueue::owned_by(self.shared.clone())
    }

    /// Drains `queue` in the background, on the runner's runtime.
    ///
    /// Returns at once. The returned [`DrainHandle`] resolves to the drain's
    /// report; dropping it does not cancel the drain. Beyond
    /// [`max_concurrent_drains`](RunnerBuilder::max_concurrent_drains), the
    /// drain waits for a slot.
    ///
    /// Tasks added to the queue afterwards run too: in this drain if it is
    /// still going, or in a new one (see
    /// [`TaskQueue::add_task`](crate::TaskQueue::add_task)). If a drain of
    /// this runner already has the queue, its tasks join that drain and the
    /// handle reports nothing.
    ///
    /// Once [`shutdown`](Runner::shutdown) has begun, a queue the runner did
    /// not know before (one not made by [`new_queue`](Runner::new_queue) nor
    /// handed over earlier) is not run: its tasks are counted `abandoned`,
    /// logged, and named in the shutdown's report. Once the shutdown has
    /// returned, or the runtime is gone, every queue is refused: its tasks
    /// are counted `rejected` and logged with their names at once.
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
        self.shared.spawn(queue.inner().clone(), false, None)
    }

    /// [`spawn`](Runner::spawn) for an adapter's hand-off: records the
    /// response's `outcome` under the lock the hand-off takes anyway, and,
    /// if the request holds a `reservation` of this runner, takes its tasks
    /// whatever the backlog.
    pub(crate) fn hand_over(
        &self,
        queue: TaskQueue,
        reservation: Option<Reservation>,
        outcome: Outcome,
    ) -> DrainHandle {
        let reserved = reservation
            .as_ref()
            .is_some_and(|reservation| reservation.is_for(&self.shared));
        let handle = self
            .shared
            .spawn(queue.inner().clone(), reserved, Some(outcome));
        // Given back only now: the tasks are counted in the backlog.
        drop(reservation);
        handle
    }

    /// Takes every task of `queue` without running it: each is counted
    /// `skipped` and logged with its name and `reason`.
    ///
    /// For work that was queued but must not run, such as the tasks of a
    /// request whose handler failed. Keeps conservation: the tasks are
    /// received and accounted for like any others, and so is any task added
    /// to the queue later. A queue already handed to a runner keeps its
    /// fate: skipping it does nothing.
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
        let inner = queue.inner();
        let (tasks, key, previous) = {
            let mut state = inner.lock();
            if state.owner.fate != Fate::Open {
                return DrainReport::default();
            }
            state.owner.fate = Fate::Skip;
            let key = state.owner.take_key();
            let host: Arc<dyn Host> = self.shared.clone();
            let previous = state.owner.host.replace(host);
            let tasks: Vec<Task> = state.tasks.take_all();
            if metrics::ENABLED {
                tasks
                    .iter()
                    .for_each(|task| metrics::received(&task.name()));
            }
            // Counted under the queue's lock, and before the queue leaves
            // the list of requests in flight: a shutdown that sees it gone,
            // or no longer open, may return at once, and its caller must
            // find these tasks in the stats.
            self.shared
                .counters
                .received_and(TaskOutcome::Skipped, tasks.len());
            (tasks, key, previous)
        };
        if let (Some(key), Some(previous)) = (key, previous) {
            previous.unregister(key);
        }
        self.shared.made_room();
        let report = DrainReport::of(TaskOutcome::Skipped, tasks.len());
        settle(tasks, Why::QueueSkipped(reason));
        report
    }

    /// Waits until the backlog has room for more tasks (see
    /// [`RunnerBuilder::max_backlog`]): ready at once if it has, otherwise
    /// woken once tasks have started or ended and made room.
    ///
    /// A hint, not a reservation: a queue handed over later is still checked
    /// against the cap. For back-pressure that guarantees the room, use
    /// [`reserve`](Runner::reserve), as `afterward-hyper`'s
    /// `TaskLayer::backpressure` does in tower's `poll_ready`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// let runner = afterward::Runner::builder().max_backlog(100).build();
    /// // Before taking more work:
    /// runner.capacity().await;
    /// # }
    /// ```
    pub fn capacity(&self) -> Capacity {
        Capacity::new(self.shared.clone())
    }

    /// Waits until the backlog has room, then takes room for one request:
    /// back-pressure that cannot be outrun.
    ///
    /// [`capacity`](Runner::capacity) only says there is room; between that
    /// and the hand-off, other requests can take it, and the late ones' tasks
    /// are refused. A [`Reservation`] instead goes with its request's queue
    /// (through [`adapter::RequestTasks::with_reservation`]): the runner then
    /// takes all of that queue's tasks, however many, whatever the backlog
    /// by then. `afterward-hyper`'s `TaskLayer::backpressure` reserves in
    /// tower's `poll_ready`, so that behind `tower::buffer` requests wait
    /// for room, and behind `tower::load_shed` they are refused before they
    /// are handled, while no admitted request loses a task.
    ///
    /// Reserved room counts against
    /// [`max_backlog`](RunnerBuilder::max_backlog) until the queue is handed
    /// over or the reservation dropped. The backlog may then pass the bound
    /// by the tasks of requests already admitted: the bound is where new
    /// requests start to wait.
    ///
    /// [`adapter::RequestTasks::with_reservation`]: crate::adapter::RequestTasks::with_reservation
    ///
    /// # Examples
    ///
    /// ```
    /// use afterward::adapter::{DisconnectPolicy, RequestTasks};
    ///
    /// # #[tokio::main]
    /// # async fn main() {
    /// let runner = afterward::Runner::builder().max_backlog(1).build();
    /// let reservation = runner.reserve().await; // waits while the backlog is full
    /// let request = RequestTasks::new(&runner, DisconnectPolicy::Run).with_reservation(reservation);
    /// for n in 0..5 {
    ///     request.queue().add_task(move || println!("task {n}"), ());
    /// }
    /// drop(request.respond(afterward::Outcome::Success, None));
    /// runner.wait_idle().await;
    /// assert_eq!(runner.stats().rejected(), 0); // five tasks past a bound of one
    /// # }
    /// ```
    pub fn reserve(&self) -> Reserve {
        Reserve::new(self.shared.clone())
    }

    /// A snapshot of what the runner has done so far.
    pub fn stats(&self) -> Stats {
        let (running, waiting) = {
            let run = self.shared.lock();
            (run.running, run.waiting.len())
        };
        self.shared.counters.snapshot(running, waiting)
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
        self.shared
            .until(|run| run.running == 0 && run.waiting.is_empty())
            .await;
    }

    /// Shuts the runner down: gives the work in progress until `deadline`,
    /// then cancels what is left and names it.
    ///
    /// Until the deadline, drains running or waiting go on, and so do the
    /// requests still in flight: a queue made by
    /// [`new_queue`](Runner::new_queue) (as `afterward-hyper` makes one per
    /// request) that has tasks but was not handed off yet is waited for, and
    /// run when it is handed off. Queues the runner did not know before are
    /// not taken.
    ///
    /// At the deadline, cancelled drains abandon their current task (an
    /// async task is dropped at its current `.await`; a sync task cannot be
    /// stopped and is let run, but its result no longer counts) and every
    /// task still queued; the tasks of requests still in flight are
    /// abandoned too. The report names every task the shutdown abandoned,
    /// and each is logged: [`ShutdownReport::abandoned`] equals
    /// [`Stats::abandoned`] from then on.
    ///
    /// Once it has returned, the runner refuses whatever reaches it (a
    /// request that finishes later, a task added to a queue afterwards):
    /// each task is counted `rejected` and logged with its name at once,
    /// and nothing is kept for a later report. A second call waits for the
    /// first and reports nothing.
    ///
    /// Call it once the server has stopped accepting requests, after giving
    /// the open connections some time to finish (see `afterward-hyper`'s
    /// crate docs). The runtime must have its time driver enabled.
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
        shutdown::shutdown(&self.shared, deadline).await
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
        let settings = &self.shared.settings;
        f.debug_struct("Runner")
            .field("max_concurrent_drains", &settings.max_concurrent_drains)
            .field("max_backlog", &settings.max_backlog)
            .field("task_timeout", &settings.task_timeout)
            .field("failure_policy", &settings.failure_policy)
            .field("stats", &self.stats())
            .finish()
    }
}
