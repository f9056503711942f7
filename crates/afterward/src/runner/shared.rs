//! The state every clone of a runner shares, what queues see of it (the
//! `Host` impl), and settling the queues a shutdown abandons.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use slab::Slab;
use tokio::runtime::Handle;
use tokio::sync::Notify;

use super::builder::Settings;
use super::handoff::{Settled, settle};
use super::worker::{Cancel, Waiting};
use crate::drain::{Ctx, Lanes};
use crate::job::TaskName;
use crate::queue::{Fate, Host, Inner, Registration, Task};
use crate::report::{DrainReport, Kind};
use crate::stats::Counters;

pub(crate) struct Shared {
    pub(super) handle: Handle,
    pub(super) settings: Settings,
    pub(super) counters: Counters,
    pub(super) state: Mutex<RunState>,
    /// Woken when the runner may have become idle, when the last open queue
    /// of a shutdown is handed off, and when a shutdown ends.
    pub(super) changed: Notify,
    pub(super) cancel: Cancel,
    /// Where idle workers park, until a queue is handed to them.
    pub(super) wake: Notify,
    /// The blocking threads of sync tasks.
    pub(super) lanes: Arc<Lanes>,
    /// `RunState::running`, readable without the lock, for the backlog.
    pub(super) running_hint: AtomicUsize,
    /// Where `Capacity` futures wait for room in the backlog, and how many
    /// do (read whenever room may have been made).
    pub(super) room: Arc<Notify>,
    pub(super) room_waiters: AtomicUsize,
    /// `Runner` handles alive. When the last goes, idle workers leave.
    pub(super) handles: AtomicUsize,
}

/// How many workers may stay parked, waiting for the next queue, instead of
/// ending: each saves a `tokio::spawn` (an allocation and its free) per
/// drain, and costs about a kilobyte while parked.
pub(super) const MAX_IDLE_WORKERS: usize = 8;

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
    /// Queues a recording runner keeps until its test runs them.
    pub(super) held: Vec<Waiting>,
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

impl Shared {
    pub(super) fn new(handle: Handle, settings: Settings) -> Shared {
        let lanes = Lanes::new(handle.clone(), settings.max_concurrent_drains);
        Shared {
            lanes,
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
                held: Vec::new(),
                abandoned: Vec::new(),
                runtime_gone: false,
                watchers: 0,
            }),
            changed: Notify::new(),
            cancel: Cancel::default(),
            wake: Notify::new(),
            running_hint: AtomicUsize::new(0),
            room: Arc::new(Notify::new()),
            room_waiters: AtomicUsize::new(0),
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
            lanes: Some(self.lanes.clone()),
            #[cfg(feature = "durable")]
            durable: self.settings.durable.clone(),
        }
    }

    pub(super) fn more_running(&self, run: &mut RunState, n: usize) {
        run.running += n;
        self.running_hint.store(run.running, Relaxed);
    }

    pub(super) fn fewer_running(&self, run: &mut RunState, n: usize) {
        run.running -= n;
        self.running_hint.store(run.running, Relaxed);
    }

    pub(super) fn is(self: &Arc<Self>, host: &Arc<dyn Host>) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(self), Arc::as_ptr(host))
    }

    // ===== settling queues that will not run =====

    /// Abandons a queue that was waiting for a worker.
    pub(super) fn abandon_waiting(&self, waiting: Waiting) {
        self.settle_waiting(waiting, Settled::Abandoned);
    }

    /// Settles a queue that was handed off and will not run: abandoned
    /// (named in the shutdown's report) or refused.
    pub(super) fn settle_waiting(&self, waiting: Waiting, settled: Settled) {
        let tasks: Vec<Task> = {
            let mut state = waiting.queue.lock();
            state.fate = Fate::Run { scheduled: false };
            state.tasks.take_all()
        };
        if settled == Settled::Abandoned {
            let names: Vec<TaskName> = tasks.iter().map(|task| task.name()).collect();
            self.abandoned(&names);
        } else {
            self.counters.count(settled.kind(), tasks.len());
            Shared::made_room(self);
        }
        waiting
            .report
            .send(&waiting.queue, DrainReport::of(settled.kind(), tasks.len()));
        settle(settled, tasks);
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
        settle(Settled::Abandoned, tasks);
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

    fn has_room(&self, n: usize) -> bool {
        self.has_room_for(n)
    }

    fn made_room(&self) {
        Shared::made_room(self);
    }

    fn unregister(&self, key: usize) {
        let mut run = self.lock();
        run.open.try_remove(key);
        if run.phase == Phase::Draining && run.open.is_empty() {
            self.wake_if_watched(run);
        }
    }

    fn schedule(self: Arc<Self>, inner: Arc<Inner>) {
        self.hand_off_late(inner);
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
        drop(run);
        Shared::made_room(self);
    }
}
