//! What the runner's lock guards: its phase, its drains and workers, the
//! queues waiting for one, and the requests in flight.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::task::Poll;

use slab::Slab;
use tokio::sync::Notify;

use super::handle::ReportTo;
use crate::queue::Inner;
use crate::task::TaskName;

pub(super) struct RunState {
    pub(super) phase: Phase,
    /// Drains running, or handed to a worker that is waking up.
    pub(super) running: usize,
    /// Workers parked, waiting for a queue.
    pub(super) idle: usize,
    /// Queues handed to parked workers, one per worker woken.
    pub(super) handed: VecDeque<Waiting>,
    /// Queues handed over, waiting for a worker under
    /// `max_concurrent_drains`. A waiting queue costs this entry, nothing
    /// more: no task is spawned for it until a worker takes it.
    pub(super) waiting: VecDeque<Waiting>,
    /// Queues made for this runner that have tasks and were not handed
    /// over: the requests in flight, which a shutdown must account for.
    pub(super) open: Slab<Weak<Inner>>,
    /// Queues a recording runner keeps until its test runs them.
    pub(super) held: Vec<Waiting>,
    /// Names of the tasks abandoned so far, for the shutdown report.
    pub(super) abandoned: Vec<TaskName>,
    /// The runtime shut down under the runner; nothing can run any more.
    pub(super) runtime_gone: bool,
    /// Calls to `Shared::until` waiting for a change; `changed` is only
    /// notified when there are some.
    pub(super) watchers: usize,
}

impl RunState {
    pub(super) fn new() -> RunState {
        RunState {
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
        }
    }

    /// Takes the queues handed to parked workers that have not woken yet,
    /// and those waiting for a worker: they will not run. The workers, when
    /// they wake, find nothing and end.
    pub(super) fn take_unstarted(&mut self) -> (Vec<Waiting>, usize) {
        let handed = std::mem::take(&mut self.handed);
        let n = handed.len();
        let mut unstarted: Vec<Waiting> = std::mem::take(&mut self.waiting).into();
        unstarted.extend(handed);
        (unstarted, n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Taking queues.
    Open,
    /// `shutdown` was called: queues of requests already in flight (made by
    /// `Runner::new_queue`, or handed over before) are still taken and run;
    /// other new queues are abandoned.
    Draining,
    /// The deadline passed: whatever is left is abandoned.
    Cancelled,
    /// `shutdown` returned: whatever arrives is refused.
    Closed,
}

/// A queue handed over, and where its report goes.
pub(crate) struct Waiting {
    pub(crate) queue: Arc<Inner>,
    pub(crate) report: ReportTo,
}

/// Set once, at a shutdown's deadline: every drain stops at its next poll.
#[derive(Debug, Default)]
pub(super) struct Cancel {
    flag: AtomicBool,
    notify: Notify,
}

impl Cancel {
    pub(super) fn cancel(&self) {
        self.flag.store(true, SeqCst);
        self.notify.notify_waiters();
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.flag.load(SeqCst)
    }

    /// Runs `work` until it ends or the runner is cancelled, whichever
    /// comes first. `work` is polled first, so work that is done is not
    /// reported as cancelled; the wait for the cancel is set up only once
    /// `work` has to wait.
    pub(super) async fn unless_cancelled(&self, work: impl Future<Output = ()>) {
        if self.is_cancelled() {
            return;
        }
        let mut work = pin!(work);
        let mut cancelled = pin!(self.cancelled());
        poll_fn(|cx| {
            if work.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            cancelled.as_mut().poll(cx)
        })
        .await;
    }

    pub(super) async fn cancelled(&self) {
        loop {
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}
