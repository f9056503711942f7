//! The backlog: tasks that reached the runner and have not started, its
//! bound, and the callers of `Runner::poll_capacity` waiting for room.

use std::sync::PoisonError;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::task::{Context, Poll};

use super::shared::{RunState, Shared};

impl Shared {
    /// Tasks received and not started: waiting in queues handed over, or
    /// behind the task each running drain is on. The estimate counts a
    /// running drain's current task as started.
    pub(super) fn backlog_now(&self, running: usize) -> usize {
        self.counters.outstanding().saturating_sub(running)
    }

    pub(super) fn backlog(&self, run: &RunState) -> usize {
        self.backlog_now(run.running)
    }

    /// Ready while the backlog has room for a task; see
    /// `Runner::poll_capacity`.
    pub(super) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let full =
            || self.backlog_now(self.running_hint.load(Relaxed)) >= self.settings.max_backlog;
        if !full() {
            return Poll::Ready(());
        }
        {
            let mut wakers = self
                .room_wakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            self.room_wanted.store(true, SeqCst);
        }
        // Checked again after registering: room made meanwhile would
        // otherwise have found no waker to wake.
        if full() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// Wakes the `poll_capacity` callers once the backlog has room. Called
    /// whenever tasks are counted; costs one load when nobody waits.
    pub(super) fn made_room(&self) {
        if !self.room_wanted.load(SeqCst) {
            return;
        }
        if self.backlog_now(self.running_hint.load(Relaxed)) >= self.settings.max_backlog {
            return;
        }
        let wakers = {
            let mut wakers = self
                .room_wakers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.room_wanted.store(false, SeqCst);
            std::mem::take(&mut *wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// Whether `n` more tasks fit, for tasks added to a queue after its
    /// hand-off.
    pub(super) fn has_room_for(&self, n: usize) -> bool {
        self.backlog_now(self.running_hint.load(Relaxed)) + n <= self.settings.max_backlog
    }
}
