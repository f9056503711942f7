//! The worker side of a chain's job: run the step it is at, record how it
//! ended in one statement that also moves the job on, and run the next step
//! at once, until the chain is finished or a step has to wait for a retry.
//!
//! The job is moved on (or removed) by the statement that records a step
//! done, so a step recorded done never runs again, even if its worker dies
//! before graphile_worker completes the job; and the job always names a
//! step not done yet, so nothing needs to be read before running it.

use std::future::Future;
use std::time::Duration;

use afterward::durable::guarded;
use afterward::{Step, TaskId};
use graphile_worker::{IntoTaskHandlerResult, TaskHandler, WorkerContext};
use serde::Deserialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgPool};
use tracing::Instrument;

use crate::done::Done;
use crate::job::StepJob;
use crate::schema::IDENTIFIER;
use crate::tasks::{StepError, Tasks};

impl TaskHandler for StepJob {
    const IDENTIFIER: &'static str = IDENTIFIER;

    async fn run(self, ctx: WorkerContext) -> impl IntoTaskHandlerResult {
        run_chain(self, ctx).await
    }
}

/// A step dropped from its chain, as the failed statement reports it.
#[derive(Deserialize)]
struct Dropped {
    index: i32,
    name: String,
    id: String,
}

/// Runs the chain's steps from the one `job` is at; `Err` leaves the job
/// to graphile_worker for a retry of the step that failed.
async fn run_chain(mut job: StepJob, ctx: WorkerContext) -> Result<(), String> {
    let Some(tasks) = ctx.get_ext::<Tasks>().cloned() else {
        return Err(format!(
            "{IDENTIFIER} jobs need a worker built by GraphileWorker"
        ));
    };
    let pool = ctx.pg_pool().clone();
    let job_id = *ctx.job().id();
    let max_attempts = *ctx.job().max_attempts();
    // The step the job was fetched for is on the attempt graphile_worker
    // counted; each step run after it in the same job is on its first.
    let mut attempt = *ctx.job().attempts();
    loop {
        match run_step(&tasks, &pool, job_id, job, attempt, max_attempts).await? {
            Some(next) => {
                job = next;
                attempt = 1;
            }
            None => return Ok(()),
        }
    }
}

/// Runs one step and records how it ended; returns the chain's next step
/// to run now, if any.
async fn run_step(
    tasks: &Tasks,
    pool: &PgPool,
    job_id: i64,
    mut job: StepJob,
    attempt: i16,
    max_attempts: i16,
) -> Result<Option<StepJob>, String> {
    let Ok(id) = job.step.parse::<TaskId>() else {
        return Err(format!("a step job with a malformed id: {:?}", job.step));
    };
    let step = Step::new(
        id,
        job.chain.as_str(),
        job.index.max(0) as usize,
        u32::try_from(attempt).unwrap_or(1),
        u32::try_from(max_attempts).unwrap_or(1),
    );
    let span = tracing::info_span!(
        "durable_step",
        task = job.name,
        id = %id,
        chain = job.chain,
        index = job.index,
        attempt,
    );
    let payload = std::mem::take(&mut job.payload);
    let ran = run(tasks, &job.name, payload, step.clone())
        .instrument(span)
        .await;
    let at = Bookkeeping {
        tasks,
        pool,
        id,
        job_id,
        attempt,
    };
    match ran {
        Ok(()) => {
            let step = || Done {
                id,
                job: job_id,
                attempt,
            };
            at.retrying("recording it done", |_| tasks.recorder.done(step()))
                .await
        }
        Err(error) if error.is_final || step.is_last_attempt() => {
            log_failure(&job, id, attempt, &error.message, true);
            let (dropped, next) = at
                .retrying("recording it failed", |pool| {
                    sqlx::query_as::<_, (Json<Vec<Dropped>>, Option<Json<StepJob>>)>(AssertSqlSafe(
                        tasks.statements.failed.as_str(),
                    ))
                    .bind(id.to_string())
                    .bind(job_id)
                    .bind(attempt)
                    .bind(&error.message)
                    .fetch_one(pool)
                })
                .await?;
            for step in dropped.0 {
                tracing::error!(
                    task = step.name,
                    id = step.id,
                    chain = job.chain,
                    index = step.index,
                    "durable step dropped: an earlier step of its chain failed for good"
                );
            }
            Ok(next.map(|Json(next)| next))
        }
        Err(error) => {
            log_failure(&job, id, attempt, &error.message, false);
            // Kept with the step, for its status once its job has moved
            // on; if this fails, the status shows the error graphile_worker
            // records in the job.
            let _ = sqlx::query(AssertSqlSafe(tasks.statements.last_error.as_str()))
                .bind(id.to_string())
                .bind(&error.message)
                .execute(pool)
                .await;
            Err(error.message)
        }
    }
}

/// Logs a failed attempt of the step `job` is at: for good, or to be retried
/// after graphile_worker's backoff.
fn log_failure(job: &StepJob, id: TaskId, attempt: i16, error: &str, for_good: bool) {
    let (task, chain, index) = (&job.name, &job.chain, job.index);
    if for_good {
        tracing::error!(task, %id, chain, index, attempt, error, "durable step failed for good");
    } else {
        tracing::warn!(
            task,
            %id,
            chain,
            index,
            attempt,
            error,
            "durable step failed; graphile_worker will retry it after its backoff"
        );
    }
}

/// Runs the step's task, its panics caught and its time limited.
async fn run(tasks: &Tasks, name: &str, payload: Value, step: Step) -> Result<(), StepError> {
    let Some(run) = tasks.get(name) else {
        return Err(StepError {
            message: format!("no task named {name:?} is registered with this worker"),
            is_final: true,
        });
    };
    let running = guarded(run(payload, step));
    let ran = match tasks.step_timeout {
        Some(limit) => tokio::time::timeout(limit, running)
            .await
            .unwrap_or_else(|_| {
                Ok(Err(StepError {
                    message: format!("timed out after {limit:?}"),
                    is_final: false,
                }))
            }),
        None => running.await,
    };
    ran.unwrap_or_else(|panic| {
        Err(StepError {
            message: format!("panicked: {panic}"),
            is_final: false,
        })
    })
}

/// Where a step's bookkeeping is done.
struct Bookkeeping<'a> {
    tasks: &'a Tasks,
    pool: &'a PgPool,
    id: TaskId,
    job_id: i64,
    attempt: i16,
}

impl Bookkeeping<'_> {
    /// Runs a statement of the step's bookkeeping until it succeeds, backing
    /// off from 100 ms to 10 s, for up to the worker's bookkeeping budget: a
    /// blip (a failover, a full pool) must not cost the step an attempt.
    /// Past it the attempt counts as failed, and the step will run again;
    /// if it was the last attempt, the worker's repair finds its chain
    /// stopped and queues the step again.
    async fn retrying<'p, T, E, Fut>(
        &'p self,
        what: &str,
        mut op: impl FnMut(&'p PgPool) -> Fut,
    ) -> Result<T, String>
    where
        E: std::fmt::Display,
        Fut: Future<Output = Result<T, E>>,
    {
        let give_up = tokio::time::Instant::now() + self.tasks.bookkeeping_budget;
        let mut pause = Duration::from_millis(100);
        loop {
            match op(self.pool).await {
                Ok(value) => return Ok(value),
                Err(error) if tokio::time::Instant::now() + pause < give_up => {
                    tracing::warn!(
                        id = %self.id,
                        job = self.job_id,
                        attempt = self.attempt,
                        error = %error,
                        "durable step: {what} failed; retrying in {pause:?}"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                Err(error) => {
                    tracing::error!(
                        id = %self.id,
                        job = self.job_id,
                        attempt = self.attempt,
                        error = %error,
                        "durable step: {what} failed for {:?}; the attempt counts as failed and the \
                         step will run again",
                        self.tasks.bookkeeping_budget
                    );
                    return Err(format!("step {}: {what}: {error}", self.id));
                }
            }
        }
    }
}
