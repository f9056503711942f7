//! `DrainHandle`: a drain's report, as a future.
//!
//! Most handles are dropped unpolled (`afterward-hyper` never waits for a
//! report), so a handle allocates nothing: the drain leaves its report in a
//! slot in its queue's state, where the handle picks it up. A queue is
//! handed to `Runner::spawn` with tasks at most once (its fate is decided
//! then; later tasks follow it there), so one slot is enough.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::queue::{Awaited, Inner, ReportSlot};
use crate::report::DrainReport;

/// The report of a drain started by [`Runner::spawn`](crate::Runner::spawn),
/// as a future.
///
/// Resolves to the [`DrainReport`] once the drain has finished (or was
/// cancelled by a shutdown). Dropping it does **not** cancel the drain: it
/// is only a way to wait for it.
pub struct DrainHandle {
    state: HandleState,
}

enum HandleState {
    Ready(Option<DrainReport>),
    Slot { queue: Arc<Inner>, drain: u64 },
}

/// Where a drain's report goes.
pub(crate) enum ReportTo {
    Nobody,
    /// The queue's report slot, for the drain with this number.
    Slot(u64),
}

impl DrainHandle {
    pub(crate) fn ready(report: DrainReport) -> DrainHandle {
        DrainHandle {
            state: HandleState::Ready(Some(report)),
        }
    }

    /// A handle for the next drain of `queue`, whose report slot is `slot`;
    /// and where that drain's report must go.
    pub(crate) fn for_drain(queue: &Arc<Inner>, slot: &mut ReportSlot) -> (DrainHandle, ReportTo) {
        debug_assert!(
            slot.awaited.is_none(),
            "a queue was spawned with tasks twice"
        );
        slot.drains += 1;
        let drain = slot.drains;
        slot.awaited = Some(Awaited {
            drain,
            report: None,
            waker: None,
        });
        let state = HandleState::Slot {
            queue: queue.clone(),
            drain,
        };
        (DrainHandle { state }, ReportTo::Slot(drain))
    }
}

impl DrainHandle {
    /// Gives a handle made by `for_drain` its report at once. The caller
    /// holds the queue's lock and clears its slot.
    pub(crate) fn settle(&mut self, report: DrainReport) {
        self.state = HandleState::Ready(Some(report));
    }
}

impl ReportTo {
    /// Delivers a finished drain's report.
    pub(crate) fn send(self, queue: &Inner, report: DrainReport) {
        match self {
            ReportTo::Nobody => {}
            ReportTo::Slot(drain) => {
                let waker = match &mut queue.lock().report.awaited {
                    Some(awaited) if awaited.drain == drain => {
                        awaited.report = Some(report);
                        awaited.waker.take()
                    }
                    // The handle was dropped.
                    _ => None,
                };
                if let Some(waker) = waker {
                    waker.wake();
                }
            }
        }
    }
}

impl Future for DrainHandle {
    type Output = DrainReport;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<DrainReport> {
        match &mut self.state {
            HandleState::Ready(report) => Poll::Ready(report.take().unwrap_or_default()),
            HandleState::Slot { queue, drain } => {
                let mut state = queue.lock();
                let slot = &mut state.report.awaited;
                let Some(awaited) = slot.as_mut().filter(|a| a.drain == *drain) else {
                    return Poll::Ready(DrainReport::default());
                };
                if let Some(report) = awaited.report.take() {
                    *slot = None;
                    drop(state);
                    self.state = HandleState::Ready(None);
                    return Poll::Ready(report);
                }
                match &mut awaited.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    waker => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for DrainHandle {
    fn drop(&mut self) {
        if let HandleState::Slot { queue, drain } = &self.state {
            let mut state = queue.lock();
            if state
                .report
                .awaited
                .as_ref()
                .is_some_and(|a| a.drain == *drain)
            {
                state.report.awaited = None;
            }
        }
    }
}

impl fmt::Debug for DrainHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainHandle").finish_non_exhaustive()
    }
}
