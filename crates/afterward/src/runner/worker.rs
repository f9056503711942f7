//! Workers: the tokio tasks that run drains, one queue after another.
//!
//! A worker starts when a queue is handed off and fewer than
//! `max_concurrent_drains` drains run. When its drain ends it takes the next
//! waiting queue, if any, so waiting queues cost no task of their own.

use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::task::Poll;

use tokio::sync::{Notify, oneshot};

use super::shared::Shared;
use crate::drain::Drain;
use crate::queue::Inner;
use crate::quiet::take_message;
use crate::report::DrainReport;

/// A queue handed off, and where its report goes.
pub(crate) struct Waiting {
    pub(crate) queue: Arc<Inner>,
    pub(crate) report: Option<oneshot::Sender<DrainReport>>,
}

/// Set once, at a shutdown's deadline: every drain stops at its next poll.
#[derive(Debug, Default)]
pub(crate) struct Cancel {
    flag: AtomicBool,
    notify: Notify,
}

impl Cancel {
    pub(super) fn cancel(&self) {
        self.flag.store(true, SeqCst);
        self.notify.notify_waiters();
    }

    fn is_cancelled(&self) -> bool {
        self.flag.load(SeqCst)
    }

    async fn cancelled(&self) {
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

pub(super) async fn run(shared: Arc<Shared>, first: Waiting) {
    let mut worker = Worker {
        current: None,
        finished: false,
        shared,
    };
    worker.start(first);
    worker.work().await;
}

/// Its destructor runs however the worker ends, and accounts for the drain
/// it had: a worker dropped before it finished was dropped by a runtime
/// shutting down.
struct Worker {
    shared: Arc<Shared>,
    current: Option<Current>,
    finished: bool,
}

struct Current {
    drain: Drain,
    report: Option<oneshot::Sender<DrainReport>>,
}

impl Worker {
    fn start(&mut self, waiting: Waiting) {
        self.current = Some(Current {
            drain: Drain::new(waiting.queue, self.shared.ctx()),
            report: waiting.report,
        });
    }

    async fn work(&mut self) {
        let shared = self.shared.clone();
        // Polled only once a drain has to wait, so a drain that finishes in
        // one poll never registers with the `Notify`.
        let mut cancelled = pin!(shared.cancel.cancelled());
        loop {
            if let Some(current) = &mut self.current {
                if !shared.cancel.is_cancelled() {
                    let mut drain = pin!(current.drain.run());
                    // The drain is polled first, so a drain that is done is
                    // not reported as cancelled. Tasks' panics are caught
                    // inside it; one outside any task (a task timeout on a
                    // runtime without a time driver, say) ends this drain,
                    // which then accounts for its tasks, and not the worker.
                    poll_fn(|cx| {
                        match catch_unwind(AssertUnwindSafe(|| drain.as_mut().poll(cx))) {
                            Ok(Poll::Ready(())) => return Poll::Ready(()),
                            Ok(Poll::Pending) => {}
                            Err(payload) => {
                                tracing::error!(
                                    panic = %take_message(payload),
                                    "a drain panicked outside its tasks; the tasks it had not finished are abandoned"
                                );
                                return Poll::Ready(());
                            }
                        }
                        cancelled.as_mut().poll(cx)
                    })
                    .await;
                }
            }
            self.finish_current();
            match shared.next() {
                Some(next) => self.start(next),
                None => {
                    self.finished = true;
                    return;
                }
            }
        }
    }

    /// Ends the current drain (abandoning what it did not run, if it was cut
    /// short) and sends its report.
    fn finish_current(&mut self) {
        if let Some(mut current) = self.current.take() {
            let report = current.drain.close();
            if let Some(tx) = current.report {
                let _ = tx.send(report);
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.finish_current();
        if !self.finished {
            self.shared.worker_lost();
        }
    }
}
