//! Shutting a runner down, and what it reports.

use std::sync::Arc;
use std::time::Duration;

use super::shared::{Phase, Shared};

/// What [`Runner::shutdown`](crate::Runner::shutdown) had to give up on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    abandoned_tasks: Vec<&'static str>,
}

impl ShutdownReport {
    /// How many tasks were abandoned.
    pub fn abandoned(&self) -> usize {
        self.abandoned_tasks.len()
    }

    /// The names of the abandoned tasks, in the order they were abandoned.
    pub fn abandoned_tasks(&self) -> &[&'static str] {
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
    if !first {
        // Another call is shutting the runner down, or did: its report has
        // the names.
        shared.until(|run| run.phase == Phase::Closed).await;
        return ShutdownReport::default();
    }

    // Drains running or waiting, and requests in flight that have tasks,
    // get until the deadline.
    let all_done = |run: &super::shared::RunState| {
        run.running == 0 && run.waiting.is_empty() && run.open.is_empty()
    };
    if tokio::time::timeout(deadline, shared.until(all_done))
        .await
        .is_err()
    {
        let (waiting, open) = {
            let mut run = shared.lock();
            run.phase = Phase::Cancelled;
            (
                std::mem::take(&mut run.waiting),
                std::mem::take(&mut run.open),
            )
        };
        // Running drains stop at their next poll and abandon what is left.
        shared.cancel.cancel();
        for waiting in waiting {
            shared.abandon_waiting(waiting);
        }
        for (_, queue) in open {
            if let Some(queue) = queue.upgrade() {
                shared.abandon_open(&queue);
            }
        }
        shared.until(|run| run.running == 0).await;
    }

    let abandoned: Vec<&'static str> = {
        let mut run = shared.lock();
        run.phase = Phase::Closed;
        std::mem::take(&mut run.abandoned)
            .into_iter()
            .map(|name| name.short())
            .collect()
    };
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
