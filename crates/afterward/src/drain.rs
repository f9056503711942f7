//! The sequential drain: one task after another, each isolated, each
//! counted exactly once.

use std::any::Any;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use std::{fmt, mem};

use tracing::{Dispatch, Instrument, Span};

use crate::queue::{Inner, Task};
use crate::runner::Shared;
use crate::task::{Job, Outcome, TaskName};

// ===== FailurePolicy =====

/// What a drain does after a task fails, panics or times out.
///
/// The failure itself is always logged and counted; this only decides the
/// fate of the tasks queued after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Run the remaining tasks anyway (the default). Tasks of one request
    /// are often independent: a failed audit-log write should not cancel the
    /// welcome email.
    #[default]
    Continue,
    /// Do not run the remaining tasks of that queue; count them `skipped`
    /// and log them. This is what Starlette does, where an exception in one
    /// background task ends the rest.
    StopQueue,
}

// ===== DrainReport =====

/// What one drain did with the tasks it took: how many completed, failed,
/// panicked, timed out, were skipped or were abandoned.
///
/// Every task a drain takes from its queue is counted in exactly one of
/// these, so [`total`](DrainReport::total) is the number of tasks the drain
/// took.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let queue = afterward::TaskQueue::new();
/// queue.add_task(|| (), ());
/// queue.add_task(|| -> Result<(), String> { Err("disk full".into()) }, ());
/// queue.add_task(|| -> () { panic!("bug") }, ());
///
/// let report = queue.drain().await;
/// assert_eq!(report.completed(), 1);
/// assert_eq!(report.failed(), 1);
/// assert_eq!(report.panicked(), 1);
/// assert_eq!(report.total(), 3);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    completed: usize,
    failed: usize,
    panicked: usize,
    timed_out: usize,
    skipped: usize,
    abandoned: usize,
}

impl DrainReport {
    /// Tasks that ran to the end and returned `()` or `Ok`.
    pub fn completed(&self) -> usize {
        self.completed
    }

    /// Tasks that returned `Err`.
    pub fn failed(&self) -> usize {
        self.failed
    }

    /// Tasks that panicked. The panic was caught; nothing else was affected.
    pub fn panicked(&self) -> usize {
        self.panicked
    }

    /// Tasks that ran past the runner's task timeout: async tasks cancelled
    /// at the deadline, and sync tasks that overran it (they run to the end).
    pub fn timed_out(&self) -> usize {
        self.timed_out
    }

    /// Tasks not run because an earlier task failed under
    /// [`FailurePolicy::StopQueue`].
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Tasks given up on because the drain was cancelled: by
    /// [`Runner::shutdown`](crate::Runner::shutdown) at its deadline, or by
    /// the runtime shutting down.
    pub fn abandoned(&self) -> usize {
        self.abandoned
    }

    /// All the tasks the drain took from its queue: the sum of the others.
    pub fn total(&self) -> usize {
        self.completed
            + self.failed
            + self.panicked
            + self.timed_out
            + self.skipped
            + self.abandoned
    }

    pub(crate) fn add(&mut self, kind: Kind, n: usize) {
        *match kind {
            Kind::Completed => &mut self.completed,
            Kind::Failed => &mut self.failed,
            Kind::Panicked => &mut self.panicked,
            Kind::TimedOut => &mut self.timed_out,
            Kind::Skipped => &mut self.skipped,
            Kind::Abandoned => &mut self.abandoned,
        } += n;
    }
}

/// Adds two reports field by field, as when a request's queue and its
/// response's queue are reported as one.
impl std::ops::Add for DrainReport {
    type Output = DrainReport;

    fn add(mut self, other: DrainReport) -> DrainReport {
        self += other;
        self
    }
}

impl std::ops::AddAssign for DrainReport {
    fn add_assign(&mut self, other: DrainReport) {
        self.completed += other.completed;
        self.failed += other.failed;
        self.panicked += other.panicked;
        self.timed_out += other.timed_out;
        self.skipped += other.skipped;
        self.abandoned += other.abandoned;
    }
}

/// The one way a task taken from a queue ends up counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Completed,
    Failed,
    Panicked,
    TimedOut,
    Skipped,
    Abandoned,
}

// ===== Ctx =====

/// The settings a drain runs with, and the runner it reports to, if any.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) policy: FailurePolicy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) runner: Option<Arc<Shared>>,
}

impl Ctx {
    /// The default policy of [`TaskQueue::drain`](crate::TaskQueue::drain).
    pub(crate) fn direct() -> Ctx {
        Ctx {
            policy: FailurePolicy::Continue,
            timeout: None,
            runner: None,
        }
    }

    fn received(&self, n: usize) {
        if let Some(runner) = &self.runner {
            runner.received(n);
        }
    }

    fn count(&self, kind: Kind, n: usize) {
        if let Some(runner) = &self.runner {
            runner.count(kind, n);
        }
    }
}

// ===== Drain =====

/// One drain of one queue.
///
/// `run` does the work; `close` ends it, abandoning whatever `run` did not
/// get to if it was cancelled, and yields the report. Dropping a `Drain`
/// closes it, so a drain cancelled at any `.await` (shutdown, runtime
/// teardown, a dropped `drain()` future) still accounts for its tasks.
pub(crate) struct Drain {
    queue: Arc<Inner>,
    ctx: Ctx,
    /// Whether this drain holds the queue's drain lock.
    holding: bool,
    /// Whether `run` got to the end.
    done: bool,
    closed: bool,
    /// What this drain counted itself: its async tasks and skips. Sync
    /// batches count into the queue's shared state instead, since they run
    /// on another thread and may outlive the drain.
    report: DrainReport,
    /// The async task being awaited now. Only this drain finishes or
    /// abandons it, never both, so it needs no lock.
    in_flight: Option<(TaskName, usize)>,
    /// Whether one of this drain's own tasks failed, for `StopQueue`.
    failed: bool,
}

enum Step {
    Async(Task),
    Sync,
    Skip(Vec<Task>),
}

impl Drain {
    pub(crate) fn new(queue: Arc<Inner>, ctx: Ctx) -> Drain {
        Drain {
            queue,
            ctx,
            holding: false,
            done: false,
            closed: false,
            report: DrainReport::default(),
            in_flight: None,
            failed: false,
        }
    }

    /// Takes the queue's drain lock, waiting for any other drain of the same
    /// queue (and any sync batch such a drain left running) to let go.
    async fn acquire(&mut self) {
        loop {
            let mut released = pin!(self.queue.released().notified());
            {
                let mut state = self.queue.lock();
                if state.holders == 0 {
                    state.holders = 1;
                    state.in_flight = None;
                    state.cancelled = false;
                    state.failed = false;
                    state.report = DrainReport::default();
                    self.holding = true;
                    return;
                }
                // Registered while the state is locked: `release` needs this
                // lock before it notifies, so its wake-up cannot be missed.
                // An idle queue, the usual case, never touches the `Notify`.
                released.as_mut().enable();
            }
            released.await;
        }
    }

    /// Runs tasks until the queue is empty.
    pub(crate) async fn run(&mut self) {
        self.acquire().await;
        loop {
            let step = {
                let mut state = self.queue.lock();
                if (self.failed || state.failed)
                    && self.ctx.policy == FailurePolicy::StopQueue
                    && !state.tasks.is_empty()
                {
                    let skipped: Vec<Task> = state.tasks.drain(..).collect();
                    self.report.add(Kind::Skipped, skipped.len());
                    Step::Skip(skipped)
                } else {
                    match state.tasks.front() {
                        None => break,
                        Some(task) if task.job.is_sync() => {
                            state.holders += 1;
                            // The batch must see this drain's failures too.
                            state.failed |= self.failed;
                            Step::Sync
                        }
                        Some(_) => {
                            let task = state.tasks.pop_front().expect("front was Some");
                            self.in_flight = Some((task.name, task.position));
                            Step::Async(task)
                        }
                    }
                }
            };
            match step {
                Step::Async(task) => self.run_async(task).await,
                Step::Sync => {
                    let batch = Batch {
                        queue: self.queue.clone(),
                        ctx: self.ctx.clone(),
                        dispatch: tracing::dispatcher::get_default(Dispatch::clone),
                    };
                    if tokio::task::spawn_blocking(move || batch.run())
                        .await
                        .is_err()
                    {
                        // The blocking pool dropped the batch unrun: the
                        // runtime is shutting down. Stop here; `close`
                        // accounts for what is left.
                        return;
                    }
                }
                Step::Skip(tasks) => {
                    self.ctx.received(tasks.len());
                    self.ctx.count(Kind::Skipped, tasks.len());
                    for task in tasks {
                        let span = task_span(&task);
                        span.in_scope(|| {
                            tracing::warn!(
                                task = task.name.short(),
                                "background task skipped: an earlier task of its queue failed"
                            );
                        });
                        drop_quietly(task);
                    }
                }
            }
        }
        self.done = true;
    }

    async fn run_async(&mut self, task: Task) {
        self.ctx.received(1);
        let span = task_span(&task);
        let Task { name, job, .. } = task;
        let Job::Async(future) = job else {
            // `run` only hands over async jobs; a sync job here would be a bug
            // in this module, and running it inline would block the runtime.
            unreachable!("sync job given to run_async");
        };
        let ran = run_async(future, self.ctx.timeout)
            .instrument(span.clone())
            .await;
        self.in_flight = None;
        let kind = ran.kind();
        self.report.add(kind, 1);
        self.failed |= kind != Kind::Completed;
        self.ctx.count(kind, 1);
        span.in_scope(|| ran.log(name));
    }

    /// Ends the drain and returns its report. If `run` did not finish, the
    /// task in flight is abandoned, and for a runner's drain so is every task
    /// still queued. Idempotent.
    pub(crate) fn close(&mut self) -> DrainReport {
        if self.closed {
            return DrainReport::default();
        }
        self.closed = true;
        let for_runner = self.ctx.runner.is_some();
        let (in_flight, rest, report) = {
            let mut state = self.queue.lock();
            // At most one of these is set: the drain awaits either its own
            // async task or a sync batch, never both.
            let mut in_flight = self.in_flight.take();
            if self.holding && !self.done {
                // A sync batch may still be running this drain's tasks; stop
                // it from starting another.
                state.cancelled = true;
                in_flight = in_flight.or(state.in_flight.take());
            }
            let rest: Vec<Task> = if for_runner && !self.done {
                state.tasks.drain(..).collect()
            } else {
                Vec::new()
            };
            let mut report = mem::take(&mut self.report);
            if self.holding {
                report += mem::take(&mut state.report);
            }
            report.add(
                Kind::Abandoned,
                rest.len() + usize::from(in_flight.is_some()),
            );
            (in_flight, rest, report)
        };
        if let Some((name, position)) = in_flight {
            self.abandoned(name, position);
        }
        if !rest.is_empty() {
            self.ctx.received(rest.len());
            for task in rest {
                self.abandoned(task.name, task.position);
                drop_quietly(task);
            }
        }
        if self.holding {
            self.holding = false;
            release(&self.queue);
        }
        report
    }

    fn abandoned(&self, name: TaskName, position: usize) {
        self.ctx.count(Kind::Abandoned, 1);
        if let Some(runner) = &self.ctx.runner {
            runner.note_abandoned(name.short());
        }
        tracing::error!(task = name.short(), position, "background task abandoned");
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Drain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain")
            .field("holding", &self.holding)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Lets go of one hold on the queue's drain lock.
fn release(queue: &Inner) {
    let last = {
        let mut state = queue.lock();
        state.holders -= 1;
        state.holders == 0
    };
    if last {
        queue.released().notify_waiters();
    }
}

// ===== sync batches =====

/// A run of consecutive sync tasks, sent to the blocking pool in one trip.
///
/// It takes tasks from the front of the queue for as long as they are sync,
/// so a request with several blocking tasks pays for one `spawn_blocking`,
/// not one each. It holds the queue's drain lock until it ends, even if the
/// drain that sent it was cancelled meanwhile.
struct Batch {
    queue: Arc<Inner>,
    ctx: Ctx,
    /// The subscriber of the drain, so the tasks' logs reach the same place
    /// even when it was set with `tracing::subscriber::with_default`.
    dispatch: Dispatch,
}

impl Batch {
    fn run(self) {
        tracing::dispatcher::with_default(&self.dispatch, || self.run_tasks());
    }

    fn run_tasks(&self) {
        loop {
            let task = {
                let mut state = self.queue.lock();
                if state.cancelled || (state.failed && self.ctx.policy == FailurePolicy::StopQueue)
                {
                    return;
                }
                match state.tasks.pop_front() {
                    Some(task) if task.job.is_sync() => {
                        state.in_flight = Some((task.name, task.position));
                        task
                    }
                    Some(task) => {
                        state.tasks.push_front(task);
                        return;
                    }
                    None => return,
                }
            };
            self.ctx.received(1);
            let span = task_span(&task);
            let Task { name, job, .. } = task;
            let Job::Sync(func) = job else {
                unreachable!("only sync jobs are taken above");
            };
            let ran = span.in_scope(|| run_sync(func, self.ctx.timeout));
            if !finish(&self.queue, &self.ctx, &span, name, &ran) {
                return;
            }
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        release(&self.queue);
    }
}

// ===== running one task =====

/// How a task that was started ended.
enum Ran {
    Completed,
    Failed(String),
    Panicked(String),
    /// An async task cancelled at `limit`, or a sync task that returned after
    /// `overran` (with what it returned).
    TimedOut {
        limit: Duration,
        overran: Option<(Duration, Box<Ran>)>,
    },
}

impl Ran {
    fn from_outcome(outcome: Outcome) -> Ran {
        match outcome {
            Ok(()) => Ran::Completed,
            Err(error) => Ran::Failed(error),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Ran::Completed => Kind::Completed,
            Ran::Failed(_) => Kind::Failed,
            Ran::Panicked(_) => Kind::Panicked,
            Ran::TimedOut { .. } => Kind::TimedOut,
        }
    }

    fn log(&self, name: TaskName) {
        match self {
            Ran::Completed => tracing::debug!(task = name.short(), "background task completed"),
            Ran::Failed(error) => {
                tracing::error!(task = name.short(), error = %error, "background task failed");
            }
            Ran::Panicked(message) => {
                tracing::error!(task = name.short(), panic = %message, "background task panicked");
            }
            Ran::TimedOut {
                limit,
                overran: None,
            } => tracing::error!(
                task = name.short(),
                timeout = ?limit,
                "background task timed out and was cancelled"
            ),
            Ran::TimedOut {
                limit,
                overran: Some((took, result)),
            } => tracing::error!(
                task = name.short(),
                timeout = ?limit,
                took = ?took,
                result = %result.summary(),
                "sync background task overran its timeout (it cannot be interrupted, so it ran to the end)"
            ),
        }
    }

    fn summary(&self) -> String {
        match self {
            Ran::Completed => "completed".to_owned(),
            Ran::Failed(error) => format!("failed: {error}"),
            Ran::Panicked(message) => format!("panicked: {message}"),
            Ran::TimedOut { .. } => "timed out".to_owned(),
        }
    }
}

/// Counts and logs a task that ran, unless it was abandoned meanwhile (in
/// which case the abandoning side counted it). Returns whether it counted.
fn finish(queue: &Inner, ctx: &Ctx, span: &Span, name: TaskName, ran: &Ran) -> bool {
    let kind = ran.kind();
    {
        let mut state = queue.lock();
        if state.in_flight.take().is_none() {
            drop(state);
            span.in_scope(|| {
                tracing::warn!(
                    task = name.short(),
                    result = %ran.summary(),
                    "background task finished after it was abandoned; it stays counted as abandoned"
                );
            });
            return false;
        }
        state.report.add(kind, 1);
        if kind != Kind::Completed {
            state.failed = true;
        }
    }
    ctx.count(kind, 1);
    span.in_scope(|| ran.log(name));
    true
}

fn task_span(task: &Task) -> Span {
    tracing::info_span!(
        parent: &task.parent,
        "task",
        task = task.name.short(),
        position = task.position
    )
}

async fn run_async(
    future: Pin<Box<dyn Future<Output = Outcome> + Send>>,
    timeout: Option<Duration>,
) -> Ran {
    let mut future = Some(future);
    // Each poll is guarded, so a panic anywhere in the task is caught at the
    // poll that raised it. The future is then dropped inside the guard too:
    // a destructor that panics as well must not take the drain down.
    let caught = poll_fn(move |cx| {
        let Some(fut) = future.as_mut() else {
            return Poll::Ready(Err("polled after completion".to_owned()));
        };
        match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(outcome)) => {
                future = None;
                Poll::Ready(Ok(outcome))
            }
            Err(payload) => {
                let message = panic_message(&*payload);
                let fut = future.take();
                let _ = catch_unwind(AssertUnwindSafe(move || drop(fut)));
                Poll::Ready(Err(message))
            }
        }
    });
    let result = match timeout {
        None => caught.await,
        Some(limit) => match tokio::time::timeout(limit, caught).await {
            Ok(result) => result,
            Err(_) => {
                return Ran::TimedOut {
                    limit,
                    overran: None,
                };
            }
        },
    };
    match result {
        Ok(outcome) => Ran::from_outcome(outcome),
        Err(message) => Ran::Panicked(message),
    }
}

fn run_sync(func: Box<dyn FnOnce() -> Outcome + Send>, timeout: Option<Duration>) -> Ran {
    let started = timeout.map(|_| Instant::now());
    let ran = match catch_unwind(AssertUnwindSafe(func)) {
        Ok(outcome) => Ran::from_outcome(outcome),
        Err(payload) => Ran::Panicked(panic_message(&*payload)),
    };
    match (timeout, started) {
        (Some(limit), Some(started)) if started.elapsed() > limit => Ran::TimedOut {
            limit,
            overran: Some((started.elapsed(), Box::new(ran))),
        },
        _ => ran,
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Drops a task that will not run. Its captured values are user types whose
/// destructors could panic; that must not unwind through our bookkeeping.
pub(crate) fn drop_quietly(task: Task) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(task)));
}
