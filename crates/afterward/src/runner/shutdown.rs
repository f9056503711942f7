//! Shutting a runner down, and what it reports.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use super::shared::Shared;
use super::state::{Phase, RunState};
use crate::task::{TaskName, Why};

/// What [`Runner::shutdown`](crate::Runner::shutdown) had to give up on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    abandoned_tasks: Vec<Cow<'static, str>>,
}

impl ShutdownReport {
    /// How many tasks were abandoned.
    pub fn abandoned(&self) -> usize {
        self.abandoned_tasks.len()
    }

    /// The names of the abandoned tasks, in the order they were abandoned.
    pub fn abandoned_tasks(&self) -> &[Cow<'static, str>] {
        &self.abandoned_tasks
    }
}

pub(super) async fn shutdown(shared: &Arc<Shared>, deadline: Duration) -> ShutdownReport {
    let first = {
        let mut run = shared.lock();
        let first = run.phase == Phase::Open;
        if first {
            run.phase = Phase::Draining;
        }
        first
    };
    // Parked workers are not needed any more.
    shared.release_idle();
    if !first {
        // Another call is shutting the runner down, or did: its report has
        // the names.
        shared.until(|run| run.phase == Phase::Closed).await;
        return ShutdownReport::default();
    }

    let mut shutting = Shutting {
        shared,
        done: false,
    };
    // Drains running or waiting, and requests in flight that have tasks,
    // get until the deadline. The runner is closed in the same step that
    // sees them all done, so no drain can start in between. A recording
    // runner's kept queues would never run by themselves: they are
    // abandoned, not waited for.
    let settled = async {
        loop {
            let mut held = Vec::new();
            shared
                .until(|run: &mut RunState| {
                    if !run.held.is_empty() {
                        held.append(&mut run.held);
                        return true;
                    }
                    let done = run.running == 0 && run.waiting.is_empty() && run.open.is_empty();
                    if done {
                        run.phase = Phase::Closed;
                    }
                    done
                })
                .await;
            if held.is_empty() {
                return;
            }
            for waiting in held {
                shared.settle_waiting(waiting, Why::Abandoned);
            }
        }
    };
    if tokio::time::timeout(deadline, settled).await.is_err() {
        shutting.cancel();
        shared
            .until(|run| {
                let done = run.running == 0;
                if done {
                    run.phase = Phase::Closed;
                }
                done
            })
            .await;
    }
    shutting.done = true;

    let abandoned: Vec<Cow<'static, str>> = std::mem::take(&mut shared.lock().abandoned)
        .into_iter()
        .map(TaskName::into_cow)
        .collect();
    shared.wake_if_watched(shared.lock());
    if abandoned.is_empty() {
        tracing::info!("background task runner shut down; no task abandoned");
    } else {
        tracing::error!(
            abandoned = abandoned.len(),
            tasks = ?abandoned,
            "background task runner shut down; tasks were abandoned"
        );
    }
    ShutdownReport {
        abandoned_tasks: abandoned,
    }
}

/// A shutdown in progress. If its future is dropped before it finished (an
/// outer timeout, a `select!`, a task cancelled), the shutdown is cut short
/// rather than left half done: what is left is cancelled at once, and the
/// runner is closed.
struct Shutting<'a> {
    shared: &'a Shared,
    done: bool,
}

impl Shutting<'_> {
    /// The deadline passed: every queue not finished is abandoned, and the
    /// running drains are cancelled.
    fn cancel(&self) {
        let shared = self.shared;
        let (waiting, open) = {
            let mut run = shared.lock();
            run.phase = Phase::Cancelled;
            let (mut waiting, handed) = run.take_unstarted();
            shared.fewer_running(&mut run, handed);
            waiting.extend(std::mem::take(&mut run.held));
            (waiting, std::mem::take(&mut run.open))
        };
        // Running drains stop at their next poll and abandon what is left.
        shared.cancel.cancel();
        for waiting in waiting {
            shared.settle_waiting(waiting, Why::Abandoned);
        }
        for (_, queue) in open {
            if let Some(queue) = queue.upgrade() {
                shared.abandon_open(&queue);
            }
        }
    }
}

impl Drop for Shutting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.shared.lock().phase == Phase::Draining {
            self.cancel();
        }
        // Drains still stopping count what they abandon; their names are
        // logged, since no report will be made.
        let names = {
            let mut run = self.shared.lock();
            run.phase = Phase::Closed;
            std::mem::take(&mut run.abandoned)
        };
        self.shared.wake_if_watched(self.shared.lock());
        tracing::error!(
            abandoned = names.len(),
            tasks = ?names.iter().map(|name| name.short()).collect::<Vec<_>>(),
            "background task runner shutdown was cut short (its future was dropped); what was left is cancelled"
        );
    }
}
