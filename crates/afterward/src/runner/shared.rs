//! The state every clone of a runner shares, and the hand-off: how a queue
//! is taken on, made to wait, or refused.

use std::collections::VecDeque;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use slab::Slab;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use super::DrainHandle;
use super::builder::Settings;
use super::handle::ReportTo;
use super::worker::{self, Cancel, Next, Waiting, Was};
use crate::drain::Ctx;
use crate::job::TaskName;
use crate::queue::{Fate, Host, Inner, Registration, State, Task};
use crate::report::{DrainReport, Kind};
use crate::stats::Counters;

pub(crate) struct Shared {
    pub(super) handle: Handle,
    pub(super) settings: Settings,
    pub(super) counters: Counters,
    state: Mutex<RunState>,
    /// Woken when the runner may have become idle, when the last open queue
    /// of a shutdown is handed off, and when a shutdown ends.
    changed: Notify,
    pub(super) cancel: Cancel,
    /// Where idle workers park, until a queue is handed to them.
    pub(super) wake: Notify,
    /// `Runner` handles alive. When the last goes, idle workers leave.
    pub(super) handles: AtomicUsize,
}

/// How many workers may stay parked, waiting for the next queue, instead of
/// ending: each saves a `tokio::spawn` (an allocation and its free) per
/// drain, and costs about a kilobyte while parked.
const MAX_IDLE_WORKERS: usize = 8;

pub(super) struct RunState {
    pub(super) phase: Phase,
    /// Drains running, or handed to a worker that is waking up.
    pub(super) running: usize,
    /// Workers parked, waiting for a queue.
    pub(super) idle: usize,
    /// Queues handed to parked workers, one per worker woken.
    pub(super) handed: VecDeque<Waiting>,
    /// Queues handed off, waiting for a worker under
    /// `max_concurrent_drains`. A waiting queue costs this entry, nothing
    /// more: no task is spawned for it until a worker takes it.
    pub(super) waiting: VecDeque<Waiting>,
    /// Queues made for this runner that have tasks and were not handed off:
    /// the requests in flight, which a shutdown must account for.
    pub(super) open: Slab<Weak<Inner>>,
    /// Names of the tasks abandoned so far, for the shutdown report.
    pub(super) abandoned: Vec<TaskName>,
    /// The runtime shut down under the runner; nothing can run any more.
    pub(super) runtime_gone: bool,
    /// Calls to `until` waiting for a change; `changed` is only notified
    /// when there are some.
    watchers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Taking queues.
    Open,
    /// `shutdown` was called: queues of requests already in flight (made by
    /// `Runner::new_queue`, or handed off before) are still taken and run;
    /// other new queues are abandoned.
    Draining,
    /// The deadline passed: whatever is left is abandoned.
    Cancelled,
    /// `shutdown` returned: whatever arrives is refused.
    Closed,
}

/// What the hand-off decided for a queue.
enum Admission {
    /// A worker is to be spawned for it.
    Start(ReportTo),
    /// It was handed to a parked worker, to be woken.
    Wake,
    /// It waits for a worker.
    Waiting,
    /// Its tasks were taken out, to be abandoned or refused.
    Settled(Kind, Vec<Task>, ReportTo),
}

impl Shared {
    pub(super) fn new(handle: Handle, settings: Settings) -> Shared {
        Shared {
            handle,
            settings,
            counters: Counters::default(),
            state: Mutex::new(RunState {
                phase: Phase::Open,
                running: 0,
                idle: 0,
                handed: VecDeque::new(),
                waiting: VecDeque::new(),
                open: Slab::new(),
                abandoned: Vec::new(),
                runtime_gone: false,
                watchers: 0,
            }),
            changed: Notify::new(),
            cancel: Cancel::default(),
            wake: Notify::new(),
            handles: AtomicUsize::new(1),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn ctx(self: &Arc<Self>) -> Ctx {
        Ctx {
            policy: self.settings.failure_policy,
            timeout: self.settings.task_timeout,
            host: Some(self.clone()),
            for_runner: true,
        }
    }

    fn is(self: &Arc<Self>, host: &Arc<dyn Host>) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(self), Arc::as_ptr(host))
    }

    // ===== the hand-off =====

    /// Hands `inner` over to run. Returns the drain's handle: pending if the
    /// queue was taken on, ready if it was settled at once.
    pub(super) fn spawn(self: &Arc<Self>, inner: Arc<Inner>) -> DrainHandle {
        let mut state = inner.lock();
        if matches!(state.fate, Fate::Skip | Fate::Run { scheduled: true }) {
            // Its fate is decided: a drain of the runner already has it (and
            // will take any task in it), or it was skipped.
            return DrainHandle::ready(DrainReport::default());
        }
        // `known`: made for this runner, or handed to it before.
        let (known, key) = match &state.owner {
            Some(owner) if self.is(owner) => (true, state.take_key()),
            _ => {
                let host: Arc<dyn Host> = self.clone();
                if let (Some(previous), Some(key)) = (state.owner.replace(host), state.take_key()) {
                    previous.unregister(key);
                }
                (false, None)
            }
        };
        let n = state.tasks.len();
        state.fate = Fate::Run { scheduled: n > 0 };
        if n == 0 {
            drop(state);
            if let Some(key) = key {
                self.unregister(key);
            }
            return DrainHandle::ready(DrainReport::default());
        }
        self.counters.received(n);
        state.drains += 1;
        let drain = state.drains;
        let (mut handle, report) = DrainHandle::for_drain(&inner, &mut state.awaited, drain);
        let admission = self.admit(&inner, &mut state, key, known, report);
        if let Admission::Settled(kind, tasks, _) = &admission {
            // Settled at once: the handle has its report now, and needs no
            // slot.
            state.awaited = None;
            handle.settle(DrainReport::of(*kind, tasks.len()));
        }
        drop(state);
        self.act(inner, admission);
        handle
    }

    /// Decides, under both locks, what becomes of a queue whose fate was
    /// just set to `Run { scheduled: true }` with its tasks counted
    /// received. The queue's lock is taken first, then the runner's: never
    /// the other way round.
    fn admit(
        &self,
        inner: &Arc<Inner>,
        state: &mut State,
        key: Option<usize>,
        known: bool,
        report: ReportTo,
    ) -> Admission {
        let mut run = self.lock();
        if let Some(key) = key {
            run.open.try_remove(key);
        }
        let settle = if run.runtime_gone || run.phase == Phase::Closed {
            Some(Kind::Rejected)
        } else if run.phase == Phase::Cancelled || (run.phase == Phase::Draining && !known) {
            Some(Kind::Abandoned)
        } else {
            None
        };
        if let Some(kind) = settle {
            state.fate = Fate::Run { scheduled: false };
            let tasks: Vec<Task> = state.tasks.take_all();
            self.counters.count(kind, tasks.len());
            if kind == Kind::Abandoned {
                run.abandoned.extend(tasks.iter().map(|task| task.name()));
            }
            self.wake_if_watched(run);
            return Admission::Settled(kind, tasks, report);
        }
        if run.running < self.settings.max_concurrent_drains.unwrap_or(usize::MAX) {
            run.running += 1;
            if run.idle > 0 {
                run.idle -= 1;
                run.handed.push_back(Waiting {
                    queue: inner.clone(),
                    report,
                });
                Admission::Wake
            } else {
                Admission::Start(report)
            }
        } else {
            run.waiting.push_back(Waiting {
                queue: inner.clone(),
                report,
            });
            Admission::Waiting
        }
    }

    /// Carries out an admission, outside the locks.
    fn act(self: &Arc<Self>, inner: Arc<Inner>, admission: Admission) {
        match admission {
            Admission::Start(report) => {
                // On a runtime that is shutting down, `spawn` drops the
                // worker unpolled, and the worker's destructor accounts for
                // the queue.
                drop(self.handle.spawn(worker::run(
                    self.clone(),
                    Waiting {
                        queue: inner,
                        report,
                    },
                )));
            }
            // Every parked worker registered with `wake` before it counted
            // itself idle, so this wakes one that has not been woken yet.
            Admission::Wake => self.wake.notify_one(),
            Admission::Waiting => {}
            Admission::Settled(kind, tasks, report) => {
                report.send(&inner, DrainReport::of(kind, tasks.len()));
                settle(kind, tasks);
            }
        }
    }

    // ===== workers =====

    /// What a worker that finished a drain does next: take the next waiting
    /// queue, park (registered with `wake` under the lock, so no hand-off
    /// can miss it), or end.
    pub(super) fn next<'a>(&'a self, parked: Pin<&mut Notified<'a>>) -> Next {
        let mut run = self.lock();
        if let Some(next) = run.waiting.pop_front() {
            return Next::Run(next);
        }
        run.running -= 1;
        let park = run.phase == Phase::Open
            && !run.runtime_gone
            && run.idle < MAX_IDLE_WORKERS
            && self.handles.load(Relaxed) > 0;
        let next = if park {
            parked.enable();
            run.idle += 1;
            Next::Park
        } else {
            Next::End
        };
        self.wake_if_watched(run);
        next
    }

    /// The queue handed to a parked worker that was woken. `None` if it
    /// was woken to end: the runner is shutting down, or has no handle left.
    pub(super) fn take_handed(&self) -> Option<Waiting> {
        self.lock().handed.pop_front()
    }

    /// Sends every parked worker away, now that they will not be needed:
    /// the last `Runner` handle is gone, or the runner is shutting down.
    pub(super) fn release_idle(&self) {
        self.lock().idle = 0;
        self.wake.notify_waiters();
    }

    /// A worker was dropped before it finished: only a runtime that is
    /// shutting down does that. Nothing can run from now on, so the queues
    /// waiting are abandoned, and queues handed off later are refused.
    pub(super) fn worker_lost(&self, was: Was) {
        let waiting = {
            let mut run = self.lock();
            run.runtime_gone = true;
            match was {
                Was::Running => run.running -= 1,
                Was::Parked => run.idle = run.idle.saturating_sub(1),
            }
            let handed = std::mem::take(&mut run.handed);
            run.running -= handed.len();
            let mut waiting = std::mem::take(&mut run.waiting);
            waiting.extend(handed);
            waiting
        };
        for waiting in waiting {
            self.abandon_waiting(waiting);
        }
        self.wake_if_watched(self.lock());
    }

    /// Abandons a queue that was waiting for a worker.
    pub(super) fn abandon_waiting(&self, waiting: Waiting) {
        let tasks: Vec<Task> = {
            let mut state = waiting.queue.lock();
            state.fate = Fate::Run { scheduled: false };
            state.tasks.take_all()
        };
        let names: Vec<TaskName> = tasks.iter().map(|task| task.name()).collect();
        self.abandoned(&names);
        waiting.report.send(
            &waiting.queue,
            DrainReport::of(Kind::Abandoned, tasks.len()),
        );
        settle(Kind::Abandoned, tasks);
    }

    /// Abandons the tasks of an open queue (a request still in flight) at
    /// the shutdown deadline. They reach the runner here, so they are
    /// counted received too.
    pub(super) fn abandon_open(&self, inner: &Inner) {
        let tasks: Vec<Task> = {
            let mut state = inner.lock();
            if state.fate != Fate::Open {
                // Handed off meanwhile; the hand-off accounted for it.
                return;
            }
            // The runner no longer lists it; it must not unregister a key
            // that may be given to another queue.
            state.registration = Registration::Refused;
            state.tasks.take_all()
        };
        let names: Vec<TaskName> = tasks.iter().map(|task| task.name()).collect();
        self.counters.received(tasks.len());
        self.abandoned(&names);
        settle(Kind::Abandoned, tasks);
    }

    // ===== waiting for a change =====

    /// Waits until `done` holds for the runner's state. `done` may change
    /// the state in the same step.
    pub(super) async fn until(&self, mut done: impl FnMut(&mut RunState) -> bool) {
        loop {
            let mut changed = pin!(self.changed.notified());
            // Registered before the check, so a change made right after it
            // still wakes this.
            changed.as_mut().enable();
            {
                let mut run = self.lock();
                if done(&mut run) {
                    return;
                }
                run.watchers += 1;
            }
            let _watching = Watching(self);
            changed.await;
        }
    }

    /// Wakes the waiters of `until`, if there are any. Takes the guard so the
    /// lock is released first.
    pub(super) fn wake_if_watched(&self, run: MutexGuard<'_, RunState>) {
        let watched = run.watchers > 0;
        drop(run);
        if watched {
            self.changed.notify_waiters();
        }
    }
}

struct Watching<'a>(&'a Shared);

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.lock().watchers -= 1;
    }
}

/// Logs and drops tasks that were abandoned or refused; they are counted
/// already.
fn settle(kind: Kind, tasks: Vec<Task>) {
    for task in tasks {
        match kind {
            Kind::Rejected => tracing::error!(
                parent: task.parent(),
                task = task.name().short(),
                position = task.position(),
                "background task rejected: the runner has shut down"
            ),
            _ => tracing::error!(
                parent: task.parent(),
                task = task.name().short(),
                position = task.position(),
                "background task abandoned"
            ),
        }
        task.discard();
    }
}

// ===== what queues see of the runner =====

impl Host for Shared {
    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn register(&self, queue: Weak<Inner>) -> Option<usize> {
        let mut run = self.lock();
        match run.phase {
            Phase::Open | Phase::Draining if !run.runtime_gone => Some(run.open.insert(queue)),
            _ => None,
        }
    }

    fn unregister(&self, key: usize) {
        let mut run = self.lock();
        run.open.try_remove(key);
        if run.phase == Phase::Draining && run.open.is_empty() {
            self.wake_if_watched(run);
        }
    }

    fn schedule(self: Arc<Self>, inner: Arc<Inner>) {
        let mut state = inner.lock();
        if state.tasks.is_empty() {
            // A direct drain took the task meanwhile.
            state.fate = Fate::Run { scheduled: false };
            return;
        }
        let admission = self.admit(&inner, &mut state, None, true, ReportTo::Nobody);
        drop(state);
        self.act(inner, admission);
    }

    fn abandoned(&self, names: &[TaskName]) {
        let mut run = self.lock();
        self.counters.count(Kind::Abandoned, names.len());
        // Kept for the report of the shutdown under way. Tasks abandoned
        // outside a shutdown (the runtime going away, a drain panicking
        // outside its tasks) were logged where it happened, and are not
        // kept for a report that may never come.
        if matches!(run.phase, Phase::Draining | Phase::Cancelled) {
            run.abandoned.extend_from_slice(names);
        }
    }
}
