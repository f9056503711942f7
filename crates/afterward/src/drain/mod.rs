//! The sequential drain: one task after another, each isolated, each
//! counted exactly once.
//!
//! | file | holds |
//! |---|---|
//! | `ctx.rs` | the settings a drain runs with, and the runner it reports to |
//! | `front.rs` | what a drain takes next, its run condition checked |
//! | `run.rs` | running one task: its panics caught, its timeout, how it ended |
//! | `tally.rs` | a drain's counts, published to the runner in batches |
//! | `lanes.rs` | the blocking threads a runner's sync tasks run on |
//! | `batch.rs` | runs of consecutive sync tasks, sent to a lane in one trip |
//! | `persist.rs` | a queue's durable tasks handed to the backend as one chain |
//! | `mod.rs` | `Drain`: the loop that picks the next task, and its end |
//! | `direct.rs` | `TaskQueue::drain`: a drain without a runner |

mod batch;
mod ctx;
mod direct;
mod front;
mod lanes;
#[cfg(feature = "durable")]
mod persist;
mod run;
mod tally;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tracing::{Dispatch, Span};

use self::batch::{Batch, run_batch};
pub(crate) use self::ctx::Ctx;
use self::front::{Front, look_at_front, take_front};
pub(crate) use self::lanes::Lanes;
use self::run::{Ran, RunAsync, in_span, task_span};
use self::tally::Tally;
use crate::counts::TaskOutcome;
use crate::metrics;
use crate::queue::{Fate, Inner, State};
use crate::report::DrainReport;
use crate::task::{Task, TaskName, TaskTag, Why, log_unrun, settle};

/// The task timeout's timer, reset for the next task: made at the first
/// task that needs it, then reused.
#[inline]
fn timer<'a>(
    ctx: &Ctx,
    timer: &'a mut Option<Pin<Box<Sleep>>>,
) -> Option<(Duration, Pin<&'a mut Sleep>)> {
    let limit = ctx.timeout?;
    let deadline = Instant::now() + limit;
    let timer = match timer {
        Some(timer) => {
            timer.as_mut().reset(deadline);
            timer
        }
        none => none.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    Some((limit, timer.as_mut()))
}

/// Where a drain is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not yet holding the queue's drain lock.
    Waiting,
    /// Holding it, running tasks.
    Running,
    /// Holding it, and ran to the end of the queue.
    Done,
    /// Closed: the lock let go and the report made.
    Closed,
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
    phase: Phase,
    /// Kept apart from `queue`, so it can change while the queue is locked.
    progress: Progress,
    /// The timer of the task timeout, made at the first task that needs it
    /// and reset for each one after.
    timer: Option<Pin<Box<Sleep>>>,
    /// Async tasks run since the drain last yielded on purpose.
    streak: u32,
}

/// What a drain has done with its own tasks so far.
struct Progress {
    /// What this drain counted itself: its async tasks and skips. Sync
    /// batches count into the queue's shared state instead, since they run
    /// on another thread and may outlive the drain.
    report: DrainReport,
    /// This drain's own counts not yet published to the runner.
    tally: Tally,
    /// The async task being awaited now. Only this drain finishes or
    /// abandons it, never both, so it needs no lock.
    in_flight: Option<TaskTag>,
    /// Whether one of this drain's own tasks failed, for `StopQueue`.
    failed: bool,
    /// The durable hand-off's state.
    persisting: Persisting,
}

impl Progress {
    /// Counts and logs the async task in flight, which ended as `ran`
    /// after it `started`.
    #[inline]
    fn ran(&mut self, ran: Ran, span: Option<&Span>, started: metrics::Started) {
        let Some(tag) = self.in_flight.take() else {
            return;
        };
        if let Ran::Completed = ran {
            // The usual case, without `Ran`'s destructor.
            self.count(TaskOutcome::Completed, 1);
            metrics::ran(&tag.name, TaskOutcome::Completed, started);
            return in_span(span, || Ran::log_completed(&tag));
        }
        let outcome = ran.outcome();
        self.failed = true;
        self.count(outcome, 1);
        metrics::ran(&tag.name, outcome, started);
        in_span(span, || ran.log(&tag));
    }

    fn count(&mut self, outcome: TaskOutcome, n: usize) {
        self.report.add(outcome, n);
        self.tally.add(outcome, n);
    }

    /// Decides, under the queue's lock, what the drain does next; `None`
    /// when it is done. Tasks that will not run are counted here.
    fn next(&mut self, ctx: &Ctx, state: &mut State) -> Option<Next> {
        if ctx.lost(state) {
            return None;
        }
        if ctx.stops(self.failed || state.drain.failed) && !state.tasks.is_empty() {
            let skipped = state.tasks.take_all();
            state.forget_if_emptied();
            self.count(TaskOutcome::Skipped, skipped.len());
            return Some(Next::Unrun(Box::new((skipped, Why::EarlierFailed))));
        }
        #[cfg(feature = "durable")]
        if let Some(persist) = durable_next(ctx, &mut self.persisting, state) {
            return Some(Next::Persist(Box::new(persist)));
        }
        match look_at_front(state) {
            Front::Empty => {
                // Decided under the lock that tasks arrive under: a task
                // added from now on starts a new drain.
                if let (true, Fate::Run { scheduled }) = (ctx.for_runner(), &mut state.owner.fate) {
                    *scheduled = false;
                }
                None
            }
            Front::Unmet(task, why) => {
                self.count(TaskOutcome::Skipped, 1);
                Some(Next::Unmet(task, why))
            }
            Front::Sync => {
                // The batch takes the task from the queue itself, and must
                // see this drain's failures too.
                state.drain.holders += 1;
                state.drain.failed |= self.failed;
                Some(Next::Sync)
            }
            Front::Async => {
                let (task, started) = take_front(state)?;
                self.in_flight = Some(task.tag());
                Some(Next::Async(task, started))
            }
        }
    }
}

#[cfg(feature = "durable")]
use self::persist::{Persisting, durable_next, persist};

/// Without the `durable` feature, nothing is persisted.
#[cfg(not(feature = "durable"))]
struct Persisting;

#[cfg(not(feature = "durable"))]
impl Persisting {
    fn new() -> Persisting {
        Persisting
    }

    fn abandon(&mut self) -> (Vec<Task>, Vec<Task>) {
        (Vec::new(), Vec::new())
    }
}

/// How many async tasks in a row a drain runs before it yields to the
/// runtime: tasks that finish without waiting would otherwise let one long
/// drain hold a worker thread. Tokio's own cooperative budget is 128.
const STREAK: u32 = 128;

/// What a drain does next.
enum Next {
    /// An async task to run, and when it started.
    Async(Task, metrics::Started),
    Sync,
    /// A task whose run condition is not met, counted already.
    Unmet(Task, &'static str),
    /// Tasks that will not run, counted already. Rare, so boxed: a drain
    /// moves a `Next` for every task.
    Unrun(Box<(Vec<Task>, Why<'static>)>),
    /// Durable tasks for the backend, and the outcome their run conditions
    /// are checked against.
    #[cfg(feature = "durable")]
    Persist(Box<persist::Taken>),
}

impl Drain {
    pub(crate) fn new(queue: Arc<Inner>, ctx: Ctx) -> Drain {
        let progress = Progress {
            report: DrainReport::default(),
            tally: Tally::new(ctx.host.clone()),
            in_flight: None,
            failed: false,
            persisting: Persisting::new(),
        };
        Drain {
            queue,
            ctx,
            phase: Phase::Waiting,
            progress,
            timer: None,
            streak: 0,
        }
    }

    /// Runs `queue` to its end and returns the report.
    pub(crate) async fn complete(queue: Arc<Inner>, ctx: Ctx) -> DrainReport {
        let mut drain = Drain::new(queue, ctx);
        drain.run().await;
        drain.close()
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
        if state.drain.holders != 0 {
            return false;
        }
        state.drain = crate::queue::DrainLock {
            holders: 1,
            ..Default::default()
        };
        self.phase = Phase::Running;
        true
    }

    /// Runs tasks until the queue is empty.
    pub(crate) async fn run(&mut self) {
        self.acquire().await;
        loop {
            let next = {
                let mut state = self.queue.lock();
                match self.progress.next(&self.ctx, &mut state) {
                    Some(next) => next,
                    None => {
                        self.phase = Phase::Done;
                        break;
                    }
                }
            };
            match next {
                Next::Async(task, started) => {
                    // Written out here rather than in an `async fn` of its
                    // own: one state machine less for every task.
                    debug_assert!(!task.is_sync(), "a sync task run as an async one");
                    let span = task_span(&task);
                    let timer = timer(&self.ctx, &mut self.timer);
                    let tally = &mut self.progress.tally;
                    let ran = RunAsync::new(task, span.as_ref(), timer, tally).await;
                    self.progress.ran(ran, span.as_ref(), started);
                    self.streak += 1;
                    if self.streak == STREAK {
                        self.streak = 0;
                        self.progress.tally.publish();
                        tokio::task::yield_now().await;
                    }
                }
                Next::Sync => {
                    self.progress.tally.publish();
                    let batch = Batch {
                        queue: self.queue.clone(),
                        ctx: self.ctx.clone(),
                        dispatch: tracing::dispatcher::has_been_set()
                            .then(|| tracing::dispatcher::get_default(Dispatch::clone)),
                    };
                    match run_batch(batch, self.ctx.lanes.as_ref()).await {
                        Ok(()) => {}
                        // Every panic of a task is caught inside the batch;
                        // this one came from elsewhere (a tracing
                        // subscriber, say). The task it interrupted, if any,
                        // is counted as panicked, and the drain goes on.
                        Err(Some(panic)) => self.batch_panicked(&panic),
                        // The batch was dropped unrun: the runtime is
                        // shutting down. Stop here; `close` accounts for what
                        // is left.
                        Err(None) => return,
                    }
                }
                Next::Unmet(task, why) => settle([task], Why::Unmet(why)),
                Next::Unrun(unrun) => settle(unrun.0, unrun.1),
                #[cfg(feature = "durable")]
                Next::Persist(taken) => {
                    // The backend's round trip is a wait like any other.
                    self.progress.tally.publish();
                    let persisting = &mut self.progress.persisting;
                    let counts = persist(&self.ctx, persisting, *taken).await;
                    for (outcome, n) in counts.iter() {
                        self.progress.count(outcome, n);
                    }
                    while let Some(task) = self.progress.persisting.fallback.pop_front() {
                        self.run_here(task).await;
                    }
                }
            }
        }
    }

    /// Runs one async task outside the loop's usual path: a durable task
    /// whose hand-off failed, under `durable_fallback`.
    #[cfg(feature = "durable")]
    async fn run_here(&mut self, task: Task) {
        self.progress.in_flight = Some(task.tag());
        let span = task_span(&task);
        let timer = timer(&self.ctx, &mut self.timer);
        let started = metrics::now();
        let ran = RunAsync::new(task, span.as_ref(), timer, &mut self.progress.tally).await;
        self.progress.ran(ran, span.as_ref(), started);
    }

    fn batch_panicked(&mut self, message: &str) {
        let mut state = self.queue.lock();
        if let Some(tag) = state.drain.in_flight.take() {
            metrics::ended(&tag.name, TaskOutcome::Panicked);
            state.drain.report.add(TaskOutcome::Panicked, 1);
            state.drain.failed = true;
            if let Some(host) = &self.ctx.host {
                host.counters().count(TaskOutcome::Panicked, 1);
            }
            drop(state);
            tag.log_panic(message, "background task panicked");
        }
    }

    /// Ends the drain and returns its report. If `run` did not finish, the
    /// task in flight is abandoned, and for a runner's drain so is every task
    /// still queued. Idempotent.
    pub(crate) fn close(&mut self) -> DrainReport {
        let phase = std::mem::replace(&mut self.phase, Phase::Closed);
        if phase == Phase::Closed {
            return DrainReport::default();
        }
        let cut_short = phase != Phase::Done;
        let holding = phase != Phase::Waiting;
        let (persisting, fallback) = self.progress.persisting.abandon();
        let (in_flight, rest, report) = {
            let mut state = self.queue.lock();
            // At most one of these is set: the drain awaits either its own
            // async task or a sync batch, never both.
            let mut in_flight = self.progress.in_flight.take();
            if holding && cut_short {
                // A sync batch may still be running this drain's tasks; stop
                // it from starting another.
                state.drain.cancelled = true;
                in_flight = in_flight.or(state.drain.in_flight.take());
            }
            let rest = if self.ctx.for_runner() && cut_short {
                if let Fate::Run { scheduled } = &mut state.owner.fate {
                    *scheduled = false;
                }
                state.tasks.take_all()
            } else {
                Vec::new()
            };
            let mut report = std::mem::take(&mut self.progress.report);
            if holding {
                report += std::mem::take(&mut state.drain.report);
            }
            let abandoned =
                rest.len() + usize::from(in_flight.is_some()) + persisting.len() + fallback.len();
            report.add(TaskOutcome::Abandoned, abandoned);
            (in_flight, rest, report)
        };
        // The bookkeeping comes before any log line: a tracing subscriber is
        // user code, and if it panics, the queue must still be let go and
        // the tasks counted.
        self.progress.tally.publish();
        if let Some(host) = &self.ctx.host {
            let names: Vec<TaskName> = in_flight
                .iter()
                .map(|tag| tag.name.clone())
                .chain(
                    persisting
                        .iter()
                        .chain(&fallback)
                        .chain(&rest)
                        .map(Task::name),
                )
                .collect();
            if !names.is_empty() {
                host.abandoned(&names);
            }
        }
        if holding {
            self.queue.release();
        }
        if let Some(tag) = in_flight {
            log_unrun(&tag, &Span::none(), Why::Abandoned);
        }
        if !persisting.is_empty() {
            settle(persisting, Why::AbandonedWhilePersisting);
        }
        if !fallback.is_empty() {
            settle(fallback, Why::Abandoned);
        }
        if !rest.is_empty() {
            settle(rest, Why::Abandoned);
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
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}
