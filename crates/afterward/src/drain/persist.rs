//! Persisting inside a drain: the queue's durable tasks, taken out as one
//! chain and given to the runner's backend before any in-process task runs.

use std::future::poll_fn;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::Poll;

use tracing::Instrument;

use super::ctx::Ctx;
use crate::condition::Outcome;
use crate::counts::{Counts, TaskOutcome};
use crate::durable::{Chain, ChainStep, DurableBackend, PersistFuture, Unconfirmed};
use crate::metrics;
use crate::queue::State;
use crate::quiet::{drop_quietly, take_message};
use crate::task::{Task, Why, settle};

/// A drain's durable tasks on their way to the backend.
pub(super) struct Persisting {
    /// Whether the durable tasks waiting in the queue are still to be taken
    /// out, as they are at the start of a drain.
    sweep: bool,
    /// The durable tasks being handed to the backend now; abandoned if the
    /// drain is cancelled meanwhile.
    tasks: Vec<Task>,
    /// Durable tasks whose hand-off failed, waiting to run in-process
    /// (`durable_fallback`); abandoned if the drain is cancelled meanwhile.
    pub(super) fallback: std::collections::VecDeque<Task>,
}

impl Persisting {
    pub(super) fn new() -> Persisting {
        Persisting {
            sweep: true,
            tasks: Vec::new(),
            fallback: std::collections::VecDeque::new(),
        }
    }

    /// The tasks cut off in the middle of their hand-off, and those that
    /// were to run in its place.
    pub(super) fn abandon(&mut self) -> (Vec<Task>, Vec<Task>) {
        let fallback = self.fallback.drain(..).collect();
        (std::mem::take(&mut self.tasks), fallback)
    }
}

/// Durable tasks taken from a queue, for its drain's backend.
pub(super) struct Taken {
    tasks: Vec<Task>,
    /// The response's outcome, for their run conditions.
    outcome: Outcome,
    backend: Arc<dyn DurableBackend>,
}

/// Takes every durable task waiting in the queue, if the drain has a
/// backend and is at its start or at a durable task. Called under the
/// queue's lock.
pub(super) fn durable_next(
    ctx: &Ctx,
    persisting: &mut Persisting,
    state: &mut State,
) -> Option<Taken> {
    let backend = ctx.durable.as_ref()?;
    if !persisting.sweep && !state.tasks.front().is_some_and(Task::is_durable) {
        return None;
    }
    persisting.sweep = false;
    let outcome = state.outcome;
    let taken = state.tasks.take_where(Task::is_durable);
    if taken.is_empty() {
        return None;
    }
    state.forget_if_emptied();
    Some(Taken {
        tasks: taken,
        outcome,
        backend: backend.clone(),
    })
}

/// Hands `taken` to its backend as one chain, once the tasks whose run
/// condition does not hold after its outcome are skipped, and counts them:
/// persisted, or, if the backend failed or a task could not be serialized,
/// persist_failed, each logged with its name. Returns the counts, for the
/// drain; the tasks of a failed hand-off under `durable_fallback` are left
/// in `persisting.fallback`, for the drain to run. While the backend has them,
/// the tasks are kept in `persisting`, so a drain cut off meanwhile abandons
/// them.
pub(super) async fn persist(ctx: &Ctx, persisting: &mut Persisting, taken: Taken) -> Counts {
    let Taken {
        tasks: taken,
        outcome,
        backend,
    } = taken;
    let mut counts = Counts::default();
    let mut tasks = Vec::with_capacity(taken.len());
    for task in taken {
        match task.refuses(outcome) {
            None => tasks.push(task),
            Some(why) => {
                counts.add(TaskOutcome::Skipped, 1);
                settle([task], Why::Unmet(why));
            }
        }
    }
    if tasks.is_empty() {
        return counts;
    }
    persisting.tasks = tasks;
    let stored = match serialize(&persisting.tasks) {
        Ok(steps) => {
            let chain = Chain::new(steps, ctx.policy);
            let span = tracing::info_span!(
                parent: persisting.tasks[0].parent(),
                "durable_persist",
                chain = chain.id(),
                tasks = persisting.tasks.len()
            );
            call(&*backend, &chain)
                .instrument(span)
                .await
                .map(|()| chain)
        }
        Err(error) => Err(Failure::NotStored(error)),
    };
    let tasks = std::mem::take(&mut persisting.tasks);
    match stored {
        Err(Failure::NotStored(error)) if ctx.durable_fallback => {
            for task in &tasks {
                tracing::warn!(
                    parent: task.parent(),
                    task = task.name().short(),
                    position = task.position(),
                    id = %task.id(),
                    error = %error,
                    "durable task not stored: it runs in-process instead, once and without durability (durable_fallback)"
                );
            }
            persisting.fallback.extend(tasks);
            return counts;
        }
        Ok(chain) => {
            counts.add(TaskOutcome::Persisted, tasks.len());
            tracing::debug!(
                parent: tasks[0].parent(),
                chain = chain.id(),
                tasks = tasks.len(),
                "durable tasks stored"
            );
            for task in tasks {
                if metrics::ENABLED {
                    metrics::ended(&task.name(), TaskOutcome::Persisted);
                }
                task.discard();
            }
        }
        Err(Failure::NotStored(error)) => {
            counts.add(TaskOutcome::PersistFailed, tasks.len());
            settle(tasks, Why::PersistFailed(&error));
        }
        Err(Failure::Unknown(error)) => {
            counts.add(TaskOutcome::PersistUnknown, tasks.len());
            settle(tasks, Why::PersistUnknown(&error));
        }
    }
    counts
}

/// Why a hand-off did not store its chain.
enum Failure {
    /// It was not stored.
    NotStored(String),
    /// Nobody knows whether it was.
    Unknown(String),
}

/// Calls the backend. It is library code, but a panic in it must not take
/// the drain down: a panic in `persist`, or in a poll of its future, is a
/// failed hand-off; one in the future's destructor is logged (the answer
/// stands).
async fn call(backend: &dyn DurableBackend, chain: &Chain) -> Result<(), Failure> {
    let persist = catch_unwind(AssertUnwindSafe(|| backend.persist(chain))).map_err(|panic| {
        Failure::NotStored(format!("the backend panicked: {}", take_message(panic)))
    })?;
    let mut persist = Quiet(Some(persist));
    poll_fn(|cx| {
        let Some(future) = persist.0.as_mut() else {
            return Poll::Ready(Err(Failure::NotStored(
                "the backend's future is gone".to_owned(),
            )));
        };
        catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx)))
            .unwrap_or_else(|panic| {
                Poll::Ready(Err(format!(
                    "the backend panicked: {}",
                    take_message(panic)
                )
                .into()))
            })
            .map_err(|error| match error.downcast_ref::<Unconfirmed>() {
                Some(unknown) => Failure::Unknown(unknown.to_string()),
                None => Failure::NotStored(error.to_string()),
            })
    })
    .await
}

/// The backend's future, dropped through [`drop_quietly`] whenever it goes
/// (finished, or cancelled with the drain).
struct Quiet<'a>(Option<PersistFuture<'a>>);

impl Drop for Quiet<'_> {
    fn drop(&mut self) {
        if let Some(message) = self.0.take().and_then(drop_quietly) {
            tracing::error!(panic = %message, "a durable backend's future panicked when dropped");
        }
    }
}

/// The chain's steps, or the first task's error: a chain is stored whole or
/// not at all. A `Serialize` impl is user code, so a panic in one is caught
/// and reported like an error.
fn serialize(tasks: &[Task]) -> Result<Vec<ChainStep>, String> {
    tasks
        .iter()
        .map(|task| {
            let step = catch_unwind(AssertUnwindSafe(|| task.to_step()))
                .map_err(|panic| format!("serializing it panicked: {}", take_message(panic)))?;
            step.unwrap_or_else(|| Err("not a durable task".to_owned()))
        })
        .collect()
}
