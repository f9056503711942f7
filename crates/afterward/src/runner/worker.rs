//! Workers: the tokio tasks that run drains, one queue after another.
//!
//! A worker starts when a queue is handed over and fewer than
//! `max_concurrent_drains` drains run. When its drain ends it takes the next
//! waiting queue, if any, so waiting queues cost no task of their own.

use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;

use tokio::sync::futures::Notified;

use super::handle::ReportTo;
use super::shared::{MAX_IDLE_WORKERS, Shared};
use super::state::{Phase, Waiting};
use crate::drain::Drain;
use crate::metrics;
use crate::quiet::take_message;
use crate::task::{Rejection, Why};

/// What a worker does after a drain.
enum Next {
    Run(Waiting),
    /// Wait, parked, for a queue to be handed over.
    Park,
    End,
}

/// What a worker was doing when it was dropped.
#[derive(Debug, Clone, Copy)]
enum Was {
    Running,
    Parked,
}

/// A worker's whole life, starting with `first`.
///
/// The worker is made before the future is first polled: a runtime that is
/// shutting down drops the future unpolled, and the worker's destructor must
/// still account for the queue (it refuses it).
pub(super) fn run(shared: Arc<Shared>, first: Waiting) -> impl Future<Output = ()> + Send {
    let mut worker = Worker {
        current: None,
        first: Some(first),
        finished: false,
        was: Was::Running,
        shared,
    };
    async move {
        if let Some(first) = worker.first.take() {
            worker.start(first);
        }
        loop {
            let result = {
                let work = pin!(worker.work());
                caught(work).await
            };
            match result {
                Ok(()) => return,
                // Tasks' panics are caught where they run. This one came
                // from outside any task (a task timeout on a runtime without
                // a time driver, or a tracing subscriber, say): it ends the
                // current drain, which accounts for its tasks, and the
                // worker goes on.
                Err(message) => worker.recover(&message),
            }
        }
    }
}

/// Polls `future`, turning a panic into `Err` with its message.
async fn caught(mut future: Pin<&mut impl Future<Output = ()>>) -> Result<(), String> {
    poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(payload) => Poll::Ready(Err(take_message(payload))),
        },
    )
    .await
}

/// Its destructor runs however the worker ends, and accounts for the drain
/// it had: a worker dropped before it finished was dropped by a runtime
/// shutting down.
struct Worker {
    shared: Arc<Shared>,
    current: Option<Current>,
    /// The queue it was started for, until its first poll. A worker dropped
    /// before that was dropped by a runtime already shutting down when the
    /// queue was handed off: nothing of the queue started, so its tasks are
    /// refused (`rejected`), as those of every queue handed off after it.
    first: Option<Waiting>,
    finished: bool,
    was: Was,
}

struct Current {
    drain: Drain,
    report: ReportTo,
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
        loop {
            if let Some(current) = &mut self.current {
                shared.cancel.unless_cancelled(current.drain.run()).await;
            }
            self.finish_current();
            let mut parked = pin!(shared.wake.notified());
            match shared.next(parked.as_mut()) {
                Next::Run(next) => self.start(next),
                Next::Park => {
                    self.was = Was::Parked;
                    parked.await;
                    self.was = Was::Running;
                    match shared.take_handed() {
                        Some(next) => self.start(next),
                        None => {
                            self.finished = true;
                            return;
                        }
                    }
                }
                Next::End => {
                    self.finished = true;
                    return;
                }
            }
        }
    }

    /// After a panic outside any task: ends the current drain, which
    /// abandons what it did not finish. The log line and the drain's own
    /// logs are user code too (a subscriber), so they are guarded as well.
    fn recover(&mut self, message: &str) {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            tracing::error!(
                panic = %message,
                "a drain panicked outside its tasks; the tasks it had not finished are abandoned"
            );
        }));
        let _ = catch_unwind(AssertUnwindSafe(|| self.finish_current()));
    }

    /// Ends the current drain (abandoning what it did not run, if it was cut
    /// short) and sends its report.
    fn finish_current(&mut self) {
        if let Some(mut current) = self.current.take() {
            // `close` does its bookkeeping before it logs; if a subscriber
            // panics in its logs, the waiting handle still gets an answer.
            let report =
                catch_unwind(AssertUnwindSafe(|| current.drain.close())).unwrap_or_default();
            current.report.send(current.drain.queue(), report);
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(first) = self.first.take() {
            let shared = &self.shared;
            let _ = catch_unwind(AssertUnwindSafe(|| {
                shared.settle_waiting(first, Why::Rejected(Rejection::RuntimeGone));
            }));
        }
        self.finish_current();
        if !self.finished {
            self.shared.worker_lost(self.was);
        }
    }
}

// ===== what workers ask of the runner =====

impl Shared {
    /// What a worker that finished a drain does next: take the next waiting
    /// queue, park (registered with `wake` under the lock, so no hand-off
    /// can miss it), or end.
    fn next<'a>(&'a self, parked: Pin<&mut Notified<'a>>) -> Next {
        let mut run = self.lock();
        if let Some(next) = run.waiting.pop_front() {
            metrics::drains(run.running, run.waiting.len());
            return Next::Run(next);
        }
        self.fewer_running(&mut run, 1);
        let park = run.phase == Phase::Open
            && !run.runtime_gone
            && run.idle < MAX_IDLE_WORKERS
            && !self.orphaned.load(Relaxed);
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
    fn take_handed(&self) -> Option<Waiting> {
        self.lock().handed.pop_front()
    }

    /// Sends every parked worker away, now that they will not be needed:
    /// the last `Runner` handle is gone, or the runner is shutting down.
    pub(super) fn release_idle(&self) {
        self.lock().idle = 0;
        self.wake.notify_waiters();
        self.lanes.release();
    }

    /// A worker was dropped before it finished: only a runtime that is
    /// shutting down does that. Nothing can run from now on, so the queues
    /// waiting are abandoned, and queues handed off later are refused.
    fn worker_lost(&self, was: Was) {
        let waiting = {
            let mut run = self.lock();
            run.runtime_gone = true;
            match was {
                Was::Running => self.fewer_running(&mut run, 1),
                Was::Parked => run.idle = run.idle.saturating_sub(1),
            }
            let (unstarted, handed) = run.take_unstarted();
            self.fewer_running(&mut run, handed);
            unstarted
        };
        for waiting in waiting {
            self.settle_waiting(waiting, Why::Abandoned);
        }
        self.wake_if_watched(self.lock());
    }
}
