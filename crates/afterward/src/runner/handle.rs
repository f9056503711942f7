//! `DrainHandle`: a drain's report, as a future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

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
    Pending(oneshot::Receiver<DrainReport>),
}

impl DrainHandle {
    pub(crate) fn ready(report: DrainReport) -> DrainHandle {
        DrainHandle {
            state: HandleState::Ready(Some(report)),
        }
    }

    pub(crate) fn pending(rx: oneshot::Receiver<DrainReport>) -> DrainHandle {
        DrainHandle {
            state: HandleState::Pending(rx),
        }
    }
}

impl Future for DrainHandle {
    type Output = DrainReport;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<DrainReport> {
        match &mut self.state {
            HandleState::Ready(report) => Poll::Ready(report.take().unwrap_or_default()),
            // The sender goes with the queue to its drain, whose end always
            // sends; an error can only mean the report was already taken.
            HandleState::Pending(rx) => Pin::new(rx).poll(cx).map(Result::unwrap_or_default),
        }
    }
}

impl fmt::Debug for DrainHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainHandle").finish_non_exhaustive()
    }
}
