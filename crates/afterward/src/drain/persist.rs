//! The durable hand-off inside a drain: the queue's durable tasks, taken out
//! as one chain and given to the runner's backend before any in-process task
//! runs.

use std::future::poll_fn;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::Poll;

use tracing::Instrument;

use super::{Ctx, Drain, Step, skipped};
use crate::durable::{Chain, ChainStep, DurableBackend, PersistFuture};
use crate::job::{Task, TaskName};
use crate::queue::State;
use crate::quiet::{drop_quietly, take_message};
use crate::report::Kind;

/// A drain's side of the hand-off.
pub(super) struct Handoff {
    /// Whether the durable tasks waiting in the queue are still to be taken
    /// out, as they are at the start of a drain.
    sweep: bool,
    /// The durable tasks being handed to the backend now, abandoned if the
    /// drain is cancelled meanwhile.
    pub(super) persisting: Vec<(TaskName, usize)>,
}

impl Default for Handoff {
    fn default() -> Handoff {
        Handoff {
            sweep: true,
            persisting: Vec::new(),
        }
    }
}

/// Takes every durable task waiting in the queue, if the drain has a
/// backend and is at its start or at a durable task. Called under the
/// queue's lock.
pub(super) fn durable_step(ctx: &Ctx, handoff: &mut Handoff, state: &mut State) -> Option<Step> {
    ctx.durable.as_ref()?;
    if !handoff.sweep && !state.tasks.front().is_some_and(Task::is_durable) {
        return None;
    }
    handoff.sweep = false;
    let taken = state.tasks.take_where(Task::is_durable);
    if taken.is_empty() {
        return None;
    }
    state.forget_if_emptied();
    let mut tasks = Vec::with_capacity(taken.len());
    let mut unmet = Vec::new();
    for task in taken {
        match task.info().run_if.refuses(state.outcome) {
            Some(why) => unmet.push((task, why)),
            None => tasks.push(task),
        }
    }
    handoff.persisting = tasks
        .iter()
        .map(|task| (task.name(), task.position()))
        .collect();
    Some(Step::Persist(tasks, unmet))
}

impl Drain {
    /// Hands `tasks` to the backend as one chain and counts them: persisted,
    /// or, if the backend failed or a task could not be serialized,
    /// persist_failed, each logged with its name.
    pub(super) async fn persist(&mut self, tasks: Vec<Task>, unmet: Vec<(Task, &'static str)>) {
        self.report.add(Kind::Skipped, unmet.len());
        self.tally.add(Kind::Skipped, unmet.len());
        for (task, why) in unmet {
            skipped(task, why);
        }
        if tasks.is_empty() {
            return;
        }
        let Some(backend) = self.ctx.durable.clone() else {
            return;
        };
        // Dropped quietly even if the drain is cancelled mid-hand-off.
        let tasks = Discard(tasks);
        let stored = match serialize(&tasks) {
            Ok(steps) => {
                let chain = Chain::new(steps, self.ctx.policy);
                let span = tracing::info_span!(
                    parent: tasks[0].parent(),
                    "durable_handoff",
                    chain = chain.id(),
                    tasks = tasks.len()
                );
                call(&*backend, &chain)
                    .instrument(span)
                    .await
                    .map(|()| chain)
            }
            Err(error) => Err(error),
        };
        self.handoff.persisting.clear();
        let kind = match stored {
            Ok(_) => Kind::Persisted,
            Err(_) => Kind::PersistFailed,
        };
        self.report.add(kind, tasks.len());
        self.tally.add(kind, tasks.len());
        match &stored {
            Ok(chain) => tracing::debug!(
                parent: tasks[0].parent(),
                chain = chain.id(),
                tasks = tasks.len(),
                "durable tasks stored"
            ),
            Err(error) => {
                for task in tasks.iter() {
                    tracing::error!(
                        parent: task.parent(),
                        task = task.name().short(),
                        position = task.position(),
                        error = %error,
                        "durable task not stored: its hand-off failed; it will not run"
                    );
                }
            }
        }
    }
}

/// Tasks to drop through [`Task::discard`], whose destructors may panic.
struct Discard(Vec<Task>);

impl std::ops::Deref for Discard {
    type Target = [Task];

    fn deref(&self) -> &[Task] {
        &self.0
    }
}

impl Drop for Discard {
    fn drop(&mut self) {
        for task in self.0.drain(..) {
            task.discard();
        }
    }
}

/// Calls the backend. It is library code, but a panic in it must not take
/// the drain down: a panic in `persist`, or in a poll of its future, is a
/// failed hand-off; one in the future's destructor is logged (the answer
/// stands).
async fn call(backend: &dyn DurableBackend, chain: &Chain) -> Result<(), String> {
    let persist = catch_unwind(AssertUnwindSafe(|| backend.persist(chain)))
        .map_err(|panic| format!("the backend panicked: {}", take_message(panic)))?;
    let mut persist = Quiet(Some(persist));
    poll_fn(|cx| {
        let Some(future) = persist.0.as_mut() else {
            return Poll::Ready(Err("the backend's future is gone".to_owned()));
        };
        catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx)))
            .unwrap_or_else(|panic| {
                Poll::Ready(Err(format!(
                    "the backend panicked: {}",
                    take_message(panic)
                )
                .into()))
            })
            .map_err(|error| error.to_string())
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
