//! `Shared`: the state every clone of a runner shares, and how to wait for
//! it to change.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::runtime::Handle;
use tokio::sync::Notify;

use super::builder::Settings;
use super::state::{Cancel, RunState};
use crate::drain::{Ctx, Lanes};
use crate::metrics;
use crate::queue::Host;
use crate::stats::Counters;

pub(crate) struct Shared {
    pub(super) handle: Handle,
    pub(super) settings: Settings,
    pub(super) counters: Counters,
    pub(super) state: Mutex<RunState>,
    /// Woken when the runner may have become idle, when the last open queue
    /// of a shutdown is handed over, and when a shutdown ends.
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
    /// Reservations held by requests admitted but not handed over yet: room
    /// in the backlog that is spoken for.
    pub(super) reserved: AtomicUsize,
    /// Set when the last `Runner` handle is gone: idle workers leave.
    pub(super) orphaned: AtomicBool,
}

/// How many workers may stay parked, waiting for the next queue, instead of
/// ending: each saves a `tokio::spawn` (an allocation and its free) per
/// drain, and costs about a kilobyte while parked.
pub(super) const MAX_IDLE_WORKERS: usize = 8;

impl Shared {
    pub(super) fn new(handle: Handle, settings: Settings) -> Shared {
        let lanes = Lanes::new(handle.clone(), settings.max_concurrent_drains);
        Shared {
            lanes,
            handle,
            settings,
            counters: Counters::default(),
            state: Mutex::new(RunState::new()),
            changed: Notify::new(),
            cancel: Cancel::default(),
            wake: Notify::new(),
            running_hint: AtomicUsize::new(0),
            room: Arc::new(Notify::new()),
            room_waiters: AtomicUsize::new(0),
            reserved: AtomicUsize::new(0),
            orphaned: AtomicBool::new(false),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What this runner's drains run with.
    pub(super) fn ctx(self: &Arc<Self>) -> Ctx {
        Ctx {
            policy: self.settings.failure_policy,
            timeout: self.settings.task_timeout,
            host: Some(self.clone()),
            lanes: Some(self.lanes.clone()),
            #[cfg(feature = "durable")]
            durable: self.settings.durable.clone(),
            #[cfg(feature = "durable")]
            durable_fallback: self.settings.durable_fallback,
        }
    }

    pub(super) fn more_running(&self, run: &mut RunState, n: usize) {
        run.running += n;
        self.running_hint.store(run.running, Relaxed);
        metrics::drains(run.running, run.waiting.len());
    }

    pub(super) fn fewer_running(&self, run: &mut RunState, n: usize) {
        run.running -= n;
        self.running_hint.store(run.running, Relaxed);
        metrics::drains(run.running, run.waiting.len());
    }

    /// Whether `host` is this runner.
    pub(super) fn is(self: &Arc<Self>, host: &Arc<dyn Host>) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(self), Arc::as_ptr(host))
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
