//! The sequential drain: one task after another, each isolated, each
//! counted exactly once.

mod batch;
mod lanes;
#[cfg(feature = "durable")]
mod persist;
mod run;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use std::{fmt, mem};

use tokio::time::{Instant, Sleep};
use tracing::Dispatch;

use std::panic::{AssertUnwindSafe, catch_unwind};

use self::batch::Batch;
pub(crate) use self::lanes::Lanes;
use self::run::{Guarded, RunAsync, Tally, task_span};
use crate::job::{Task, TaskName};
use crate::queue::{Fate, Host, Inner};
use crate::quiet::take_message;
use crate::report::{DrainReport, FailurePolicy, Kind};

/// The settings a drain runs with, and the runner it reports to, if any.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) policy: FailurePolicy,
    pub(crate) timeout: Option<Duration>,
    /// The runner that counts this drain's tasks.
    pub(crate) host: Option<Arc<dyn Host>>,
    /// A runner's drain: when it ends, the queue is no longer scheduled, and
    /// when it is cancelled, every task still queued is abandoned.
    pub(crate) for_runner: bool,
    /// Where a runner's sync batches run; a direct drain uses
    /// `spawn_blocking`.
    pub(crate) lanes: Option<Arc<Lanes>>,
    /// Where a runner's durable tasks go; without one they run here.
    #[cfg(feature = "durable")]
    pub(crate) durable: Option<Arc<dyn crate::durable::DurableBackend>>,
}

impl Ctx {
    /// The default policy of [`TaskQueue::drain`](crate::TaskQueue::drain).
    pub(crate) fn direct() -> Ctx {
        Ctx {
            policy: FailurePolicy::Continue,
            timeout: None,
            host: None,
            for_runner: false,
            lanes: None,
            #[cfg(feature = "durable")]
            durable: None,
        }
    }

    fn count(&self, kind: Kind, n: usize) {
        if let Some(host) = &self.host {
            host.counters().count(kind, n);
        }
    }
}

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
    /// The timer of the task timeout, made at the first task that needs it
    /// and reset for each one after.
    timer: Option<Pin<Box<Sleep>>>,
    /// This drain's own counts not yet published to the runner.
    tally: Tally,
    /// Async tasks run since the drain last yielded on purpose.
    streak: u32,
    /// The durable hand-off's state.
    handoff: Handoff,
}

#[cfg(feature = "durable")]
use self::persist::{Handoff, durable_step};

/// Without the `durable` feature, there is no hand-off.
#[cfg(not(feature = "durable"))]
#[derive(Default)]
struct Handoff;

#[cfg(not(feature = "durable"))]
fn durable_step(_: &Ctx, _: &mut Handoff, _: &mut crate::queue::State) -> Option<Step> {
    None
}

/// How many async tasks in a row a drain runs before it yields to the
/// runtime: tasks that finish without waiting would otherwise let one long
/// drain hold a worker thread. Tokio's own cooperative budget is 128.
const STREAK: u32 = 128;

enum Step {
    Async(Task),
    Sync,
    Skip(Vec<Task>),
    /// A task whose run condition does not hold, and why.
    Unmet(Task, &'static str),
    /// Durable tasks for the backend, and those whose run condition does
    /// not hold.
    #[cfg(feature = "durable")]
    Persist(Vec<Task>, Vec<(Task, &'static str)>),
}

impl Drain {
    pub(crate) fn new(queue: Arc<Inner>, ctx: Ctx) -> Drain {
        let tally = Tally::new(ctx.host.clone());
        Drain {
            queue,
            ctx,
            holding: false,
            done: false,
            closed: false,
            report: DrainReport::default(),
            in_flight: None,
            failed: false,
            timer: None,
            tally,
            streak: 0,
            handoff: Handoff::default(),
        }
    }

    pub(crate) fn queue(&self) -> &Inner {
        &self.queue
    }

    /// Takes the queue's drain lock, waiting for any other drain of the same
    /// queue (and any sync batch such a drain left running) to let go.
    async fn acquire(&mut self) {
        if self.try_acquire() {
            return;
        }
        // Another drain has the queue. The wait is boxed so that the usual
        // case, an idle queue, keeps the drain's future small and never
        // touches the `Notify`.
        let queue = self.queue.clone();
        loop {
            let mut released = Box::pin(queue.released().notified());
            {
                let _state = queue.lock();
                // Registered while the state is locked: `release` needs this
                // lock before it notifies, so its wake-up cannot be missed.
                released.as_mut().enable();
            }
            if self.try_acquire() {
                return;
            }
            released.await;
        }
    }

    fn try_acquire(&mut self) -> bool {
        let mut state = self.queue.lock();
        if state.holders != 0 {
            return false;
        }
        state.holders = 1;
        state.in_flight = None;
        state.cancelled = false;
        state.failed = false;
        state.report = DrainReport::default();
        self.holding = true;
        true
    }

    /// Runs tasks until the queue is empty.
    pub(crate) async fn run(&mut self) {
        self.acquire().await;
        loop {
            let step = {
                let mut state = self.queue.lock();
                if !self.ctx.for_runner && state.fate != Fate::Open {
                    // A direct drain of a queue that was handed to a runner
                    // meanwhile: the runner counted the tasks left and runs
                    // them, once this drain lets go.
                    self.done = true;
                    break;
                }
                if (self.failed || state.failed)
                    && self.ctx.policy == FailurePolicy::StopQueue
                    && !state.tasks.is_empty()
                {
                    let skipped: Vec<Task> = state.tasks.take_all();
                    self.report.add(Kind::Skipped, skipped.len());
                    self.tally.add(Kind::Skipped, skipped.len());
                    Step::Skip(skipped)
                } else if let Some(step) = durable_step(&self.ctx, &mut self.handoff, &mut state) {
                    step
                } else {
                    let next = state.tasks.pop_front();
                    let unmet = next
                        .as_ref()
                        .and_then(|task| task.info().run_if.refuses(state.outcome));
                    match next {
                        Some(task) if unmet.is_some() => {
                            state.forget_if_emptied();
                            self.report.add(Kind::Skipped, 1);
                            self.tally.add(Kind::Skipped, 1);
                            Step::Unmet(task, unmet.unwrap_or_default())
                        }
                        None => {
                            // Decided under the lock that tasks arrive under:
                            // a task added from now on starts a new drain.
                            if self.ctx.for_runner {
                                if let Fate::Run { scheduled } = &mut state.fate {
                                    *scheduled = false;
                                }
                            }
                            self.done = true;
                            break;
                        }
                        Some(task) if task.is_sync() => {
                            // The batch takes it from the queue itself.
                            state.tasks.push_front(task);
                            state.holders += 1;
                            // The batch must see this drain's failures too.
                            state.failed |= self.failed;
                            Step::Sync
                        }
                        Some(task) => {
                            state.forget_if_emptied();
                            self.in_flight = Some((task.name(), task.position()));
                            Step::Async(task)
                        }
                    }
                }
            };
            match step {
                Step::Async(task) => {
                    self.run_async(task).await;
                    self.streak += 1;
                    if self.streak == STREAK {
                        self.streak = 0;
                        self.tally.publish();
                        tokio::task::yield_now().await;
                    }
                }
                Step::Sync => {
                    self.tally.publish();
                    let batch = Batch {
                        queue: self.queue.clone(),
                        ctx: self.ctx.clone(),
                        dispatch: tracing::dispatcher::get_default(Dispatch::clone),
                    };
                    match run_batch(batch, self.ctx.lanes.as_ref()).await {
                        Ok(()) => {}
                        Err(Some(panic)) => {
                            // Every panic of a task is caught inside the
                            // batch; this one came from elsewhere (a tracing
                            // subscriber, say). The task it interrupted, if
                            // any, is counted as panicked, and the drain
                            // goes on.
                            self.batch_panicked(&panic);
                        }
                        Err(None) => {
                            // The batch was dropped unrun: the runtime is
                            // shutting down. Stop here; `close` accounts for
                            // what is left.
                            return;
                        }
                    }
                }
                Step::Unmet(task, why) => skipped(task, why),
                #[cfg(feature = "durable")]
                Step::Persist(tasks, unmet) => self.persist(tasks, unmet).await,
                Step::Skip(tasks) => {
                    for task in tasks {
                        tracing::warn!(
                            parent: task.parent(),
                            task = task.name().short(),
                            position = task.position(),
                            "background task skipped: an earlier task of its queue failed"
                        );
                        task.discard();
                    }
                }
            }
        }
    }

    async fn run_async(&mut self, task: Task) {
        let span = task_span(&task);
        let name = task.name();
        debug_assert!(!task.is_sync(), "a sync task given to run_async");
        let timer = self.ctx.timeout.map(|limit| {
            let deadline = Instant::now() + limit;
            let timer = match &mut self.timer {
                Some(timer) => {
                    timer.as_mut().reset(deadline);
                    timer
                }
                none => none.insert(Box::pin(tokio::time::sleep_until(deadline))),
            };
            (limit, timer.as_mut())
        });
        let ran = RunAsync {
            guarded: Guarded::new(task, name.clone()),
            span: &span,
            timer,
            tally: &mut self.tally,
        }
        .await;
        self.in_flight = None;
        let kind = ran.kind();
        self.report.add(kind, 1);
        self.failed |= kind != Kind::Completed;
        self.tally.add(kind, 1);
        span.in_scope(|| ran.log(name));
    }

    fn batch_panicked(&mut self, message: &str) {
        let mut state = self.queue.lock();
        if let Some((name, position)) = state.in_flight.take() {
            state.report.add(Kind::Panicked, 1);
            state.failed = true;
            self.ctx.count(Kind::Panicked, 1);
            drop(state);
            tracing::error!(
                task = name.short(),
                position,
                panic = %message,
                "background task panicked"
            );
        }
    }

    /// Ends the drain and returns its report. If `run` did not finish, the
    /// task in flight is abandoned, and for a runner's drain so is every task
    /// still queued. Idempotent.
    pub(crate) fn close(&mut self) -> DrainReport {
        if self.closed {
            return DrainReport::default();
        }
        self.closed = true;
        let abandon_rest = self.ctx.for_runner && !self.done;
        let (in_flight, rest, persisting, report) = {
            let mut state = self.queue.lock();
            // At most one of these is set: the drain awaits either its own
            // async task or a sync batch, never both.
            let mut in_flight = self.in_flight.take();
            #[cfg(feature = "durable")]
            let persisting = mem::take(&mut self.handoff.persisting);
            #[cfg(not(feature = "durable"))]
            let persisting: Vec<(TaskName, usize)> = Vec::new();
            if self.holding && !self.done {
                // A sync batch may still be running this drain's tasks; stop
                // it from starting another.
                state.cancelled = true;
                in_flight = in_flight.or(state.in_flight.take());
            }
            let rest: Vec<Task> = if abandon_rest {
                if let Fate::Run { scheduled } = &mut state.fate {
                    *scheduled = false;
                }
                state.tasks.take_all()
            } else {
                Vec::new()
            };
            let mut report = mem::take(&mut self.report);
            if self.holding {
                report += mem::take(&mut state.report);
            }
            report.add(
                Kind::Abandoned,
                rest.len() + usize::from(in_flight.is_some()) + persisting.len(),
            );
            (in_flight, rest, persisting, report)
        };
        // The bookkeeping comes before any log line: a tracing subscriber is
        // user code, and if it panics, the queue must still be let go and
        // the tasks counted.
        self.tally.publish();
        let any = in_flight.is_some() || !rest.is_empty() || !persisting.is_empty();
        if let (Some(host), true) = (&self.ctx.host, any) {
            let names: Vec<TaskName> = in_flight
                .iter()
                .chain(&persisting)
                .map(|(name, _)| name.clone())
                .chain(rest.iter().map(|task| task.name()))
                .collect();
            host.abandoned(&names);
        }
        if self.holding {
            self.holding = false;
            release(&self.queue);
        }
        if let Some((name, position)) = in_flight {
            tracing::error!(task = name.short(), position, "background task abandoned");
        }
        for (name, position) in persisting {
            tracing::error!(
                task = name.short(),
                position,
                "durable task abandoned during its hand-off: it may or may not have been stored"
            );
        }
        for task in rest {
            tracing::error!(
                task = task.name().short(),
                position = task.position(),
                "background task abandoned"
            );
            task.discard();
        }
        report
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

/// Logs and drops a task whose run condition did not hold; it is counted.
pub(crate) fn skipped(task: Task, why: &str) {
    tracing::warn!(
        parent: task.parent(),
        task = task.name().short(),
        position = task.position(),
        "background task skipped: {why}"
    );
    task.discard();
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

/// Runs a sync batch on the runner's lanes, or on the blocking pool for a
/// direct drain. `Err(Some(message))` if it panicked outside its tasks,
/// `Err(None)` if it was dropped unrun.
async fn run_batch(batch: Batch, lanes: Option<&Arc<Lanes>>) -> Result<(), Option<String>> {
    let Some(lanes) = lanes else {
        return tokio::task::spawn_blocking(move || batch.run())
            .await
            .map_err(|error| error.try_into_panic().ok().map(take_message));
    };
    let (done_tx, done) = tokio::sync::oneshot::channel();
    lanes.run(Box::new(move || {
        let ran = catch_unwind(AssertUnwindSafe(move || batch.run()));
        let _ = done_tx.send(ran.map_err(take_message));
    }));
    match done.await {
        Ok(ran) => ran.map_err(Some),
        Err(_) => Err(None),
    }
}
