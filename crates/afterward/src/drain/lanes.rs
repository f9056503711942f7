//! Lanes: the blocking threads a runner's sync tasks run on.
//!
//! A lane is one closure on tokio's blocking pool that runs sync batches one
//! after another, for as many drains as come, and ends after a while with
//! nothing to do. A runner keeps at most one lane per drain it may run at
//! once, so a flood of sync tasks holds at most that many blocking threads.
//! A `spawn_blocking` per batch could not promise that: tokio starts a new
//! thread whenever none is idle at that instant, and a thread that has just
//! finished a batch is not idle yet.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::AbortHandle;

/// How long an idle lane waits for work before it gives its thread back to
/// tokio's blocking pool. Long enough to bridge the gaps between batches in
/// a burst; once given back, the pool itself keeps the thread for reuse (10
/// seconds by default), for the next lane or anyone else.
const IDLE: Duration = Duration::from_millis(50);

/// A batch, and what tells its drain that it has run.
pub(crate) type Work = Box<dyn FnOnce() + Send>;

pub(crate) struct Lanes {
    handle: Handle,
    max: usize,
    pool: Mutex<Pool>,
    /// Woken when work arrives, or when the lanes are released or closed.
    ready: Condvar,
    /// The task that closes the lanes when the runtime shuts down; ended
    /// when the lanes are dropped, so a runner leaves no task behind.
    closer: Mutex<Option<AbortHandle>>,
}

/// The lanes' shared bookkeeping.
#[derive(Default)]
struct Pool {
    work: VecDeque<Work>,
    lanes: usize,
    idle: usize,
    /// The runtime is shutting down: nothing more runs.
    closed: bool,
    /// The runner needs no lane kept waiting: it has no handle left, or has
    /// shut down. Lanes still run what comes, then end at once.
    released: bool,
}

impl Lanes {
    pub(crate) fn new(handle: Handle, max: usize) -> Arc<Lanes> {
        let lanes = Arc::new(Lanes {
            handle,
            max,
            pool: Mutex::new(Pool::default()),
            ready: Condvar::new(),
            closer: Mutex::new(None),
        });
        // Idle lanes wait on a condition variable that a runtime shutting
        // down knows nothing of, and the runtime waits for its blocking
        // threads. This task is dropped when the runtime shuts down, and
        // sends the lanes away.
        let closer = CloseOnDrop(Arc::downgrade(&lanes));
        let task = lanes.handle.spawn(async move {
            let _closer = closer;
            std::future::pending::<()>().await;
        });
        *lanes.closer.lock().unwrap_or_else(PoisonError::into_inner) = Some(task.abort_handle());
        lanes
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `work` on a lane, starting one if every lane is busy and there
    /// are fewer than the maximum. Once the runtime is shutting down the work
    /// is dropped unrun, which its drain sees.
    pub(crate) fn run(self: &Arc<Self>, work: Work) {
        let mut state = self.lock();
        if state.closed {
            drop(state);
            drop(work);
            return;
        }
        state.work.push_back(work);
        if state.idle >= state.work.len() {
            drop(state);
            self.ready.notify_one();
        } else if state.lanes < self.max {
            state.lanes += 1;
            drop(state);
            let lane = Lane {
                lanes: self.clone(),
                started: false,
            };
            drop(self.handle.spawn_blocking(move || lane.work()));
        }
        // Otherwise every lane is busy, and the first to finish takes it.
    }

    /// Sends idle lanes away, and has busy ones end once idle.
    pub(crate) fn release(&self) {
        self.lock().released = true;
        self.ready.notify_all();
    }

    fn close(&self) {
        let work = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.work)
        };
        self.ready.notify_all();
        drop(work);
    }
}

/// One lane's life. Its destructor accounts for a lane the blocking pool
/// dropped unrun, as a runtime shutting down does.
struct Lane {
    lanes: Arc<Lanes>,
    started: bool,
}

impl Lane {
    fn work(mut self) {
        self.started = true;
        let lanes = &self.lanes;
        loop {
            let work = {
                let mut state = lanes.lock();
                loop {
                    if let Some(work) = state.work.pop_front() {
                        break work;
                    }
                    if state.closed || state.released {
                        state.lanes -= 1;
                        return;
                    }
                    state.idle += 1;
                    let (next, waited) = lanes
                        .ready
                        .wait_timeout(state, IDLE)
                        .unwrap_or_else(PoisonError::into_inner);
                    state = next;
                    state.idle -= 1;
                    if waited.timed_out() && state.work.is_empty() {
                        state.lanes -= 1;
                        return;
                    }
                }
            };
            work();
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if !self.started {
            self.lanes.lock().lanes -= 1;
            self.lanes.close();
        }
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        let closer = self
            .closer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(closer) = closer.take() {
            closer.abort();
        }
    }
}

struct CloseOnDrop(Weak<Lanes>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(lanes) = self.0.upgrade() {
            lanes.close();
        }
    }
}
