//! The backlog: tasks that reached the runner and have not started, its
//! bound, `Capacity`, the future that waits for room in it, and
//! `Reservation`, room taken for a request admitted before its hand-off.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{Ordering::Relaxed, Ordering::SeqCst, fence};
use std::task::{Context, Poll};

use tokio::sync::futures::OwnedNotified;

use super::shared::Shared;
use super::state::RunState;
use crate::metrics;

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

    /// The backlog and the room reserved for requests admitted: what the
    /// bound is kept against.
    fn taken(&self) -> usize {
        self.backlog_now(self.running_hint.load(Relaxed)) + self.reserved.load(Relaxed)
    }

    fn full(&self) -> bool {
        self.taken() >= self.settings.max_backlog
    }

    /// Wakes the `Capacity` futures waiting, once the backlog has room.
    /// Called after every change that can make room (tasks counted, drains
    /// started); costs a fence and one load when nobody waits.
    pub(super) fn made_room(&self) {
        if metrics::ENABLED {
            metrics::backlog(self.backlog_now(self.running_hint.load(Relaxed)));
        }
        // Pairs with the fence in `Capacity::poll`: either this sees the
        // waiter, or the waiter sees the room.
        fence(SeqCst);
        if self.room_waiters.load(Relaxed) == 0 || self.full() {
            return;
        }
        self.room.notify_waiters();
    }

    /// Whether `n` more tasks fit, for tasks added to a queue after its
    /// hand-off.
    pub(super) fn has_room_for(&self, n: usize) -> bool {
        self.taken() + n <= self.settings.max_backlog
    }
}

/// Waits until the runner's backlog has room for more tasks: the future
/// [`Runner::capacity`](crate::Runner::capacity) returns.
///
/// It is `Send`, `Unpin` and `'static`, so it can be stored (as
/// `afterward-hyper`'s `TaskService` does between calls of tower's
/// `poll_ready`). It allocates only when it has to wait.
#[must_use = "futures do nothing unless polled"]
pub struct Capacity {
    shared: Arc<Shared>,
    /// Registered with the runner's `room` notifier while waiting.
    notified: Option<Pin<Box<OwnedNotified>>>,
}

impl Capacity {
    pub(super) fn new(shared: Arc<Shared>) -> Capacity {
        Capacity {
            shared,
            notified: None,
        }
    }

    fn stop_waiting(&mut self) {
        if self.notified.take().is_some() {
            self.shared.room_waiters.fetch_sub(1, Relaxed);
        }
    }
}

impl Future for Capacity {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            if !this.shared.full() {
                this.stop_waiting();
                return Poll::Ready(());
            }
            let notified = match &mut this.notified {
                Some(notified) => notified,
                None => {
                    let mut notified = Box::pin(this.shared.room.clone().notified_owned());
                    // Registered before the check below, so that room made
                    // after the check wakes it.
                    notified.as_mut().enable();
                    this.shared.room_waiters.fetch_add(1, Relaxed);
                    fence(SeqCst);
                    this.notified.insert(notified)
                }
            };
            if this.shared.full() {
                if notified.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // Woken: room was made, perhaps taken again already. Check
                // once more, with a fresh registration if need be.
                this.stop_waiting();
            } else {
                this.stop_waiting();
                return Poll::Ready(());
            }
        }
    }
}

impl Drop for Capacity {
    fn drop(&mut self) {
        self.stop_waiting();
    }
}

/// Waits for room in the runner's backlog, then takes it: the future
/// [`Runner::reserve`](crate::Runner::reserve) returns.
///
/// `Send`, `Unpin` and `'static`, like [`Capacity`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Reserve {
    capacity: Capacity,
}

impl Reserve {
    pub(super) fn new(shared: Arc<Shared>) -> Reserve {
        Reserve {
            capacity: Capacity::new(shared),
        }
    }
}

impl Future for Reserve {
    type Output = Reservation;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reservation> {
        let this = self.get_mut();
        if Pin::new(&mut this.capacity).poll(cx).is_pending() {
            return Poll::Pending;
        }
        let shared = this.capacity.shared.clone();
        shared.reserved.fetch_add(1, Relaxed);
        Poll::Ready(Reservation { shared })
    }
}

/// Room in a runner's backlog, taken for a request admitted before its
/// queue is handed over: from [`Runner::reserve`](crate::Runner::reserve).
///
/// Handed over with its request's queue (see
/// [`RequestTasks::with_reservation`](crate::adapter::RequestTasks::with_reservation)),
/// it makes the runner take every task of that queue, whatever the backlog
/// by then: the request was let in when there was room. Dropped unused (the
/// request was dropped, or its handler failed), it gives the room back.
pub struct Reservation {
    shared: Arc<Shared>,
}

impl Reservation {
    /// Whether this reservation was taken from `shared`.
    pub(super) fn is_for(&self, shared: &Arc<Shared>) -> bool {
        Arc::ptr_eq(&self.shared, shared)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shared.reserved.fetch_sub(1, Relaxed);
        self.shared.made_room();
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation").finish_non_exhaustive()
    }
}

impl fmt::Debug for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capacity")
            .field("waiting", &self.notified.is_some())
            .finish()
    }
}
