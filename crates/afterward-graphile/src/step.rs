//! The worker side of one step: run it from what its job carries, then
//! record how it ended in one statement that also removes its job and
//! queues the next step.
//!
//! The job is removed in the same statement that records the step done, so
//! a step recorded done never runs again, even if its worker dies before
//! graphile_worker completes the job; and a step that has a job is not done,
//! so nothing needs to be read before running it.

use std::future::Future;
use std::time::Duration;

use afterward::durable::guarded;
use afterward::{Step, TaskId};
use graphile_worker::{IntoTaskHandlerResult, TaskHandler, WorkerContext};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgPool};
use tracing::Instrument;

use crate::sql::IDENTIFIER;
use crate::tasks::{StepError, Tasks};

/// The graphile_worker job of one step: everything the step needs to run.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StepJob {
    step: String,
    chain: String,
    index: i32,
    name: String,
    payload: Value,
}

impl TaskHandler for StepJob {
    const IDENTIFIER: &'static str = IDENTIFIER;

    async fn run(self, ctx: WorkerContext) -> impl IntoTaskHandlerResult {
        run_step(self, ctx).await
    }
}

/// A step dropped from its chain, as the failed statement reports it.
#[derive(Deserialize)]
struct Dropped {
    index: i32,
    name: String,
    id: String,
}

async fn run_step(job: StepJob, ctx: WorkerContext) -> Result<(), String> {
    let Some(tasks) = ctx.get_ext::<Tasks>().cloned() else {
        return Err(format!(
            "{IDENTIFIER} jobs need a worker built by GraphileWorker"
        ));
    };
    let Ok(id) = job.step.parse::<TaskId>() else {
        return Err(format!("a step job with a malformed id: {:?}", job.step));
    };
    let pool = ctx.pg_pool().clone();
    let job_id = *ctx.job().id();
    let attempt = *ctx.job().attempts();
    let max_attempts = *ctx.job().max_attempts();
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
    let ran = run(&tasks, &job.name, job.payload, step.clone())
        .instrument(span)
        .await;
    let at = Bookkeeping {
        tasks: &tasks,
        pool: &pool,
        id,
        job_id,
        attempt,
    };
    match ran {
        Ok(()) => {
            at.retrying("recording it done", |pool| {
                sqlx::query_as::<_, (i64, i64)>(AssertSqlSafe(tasks.statements.done.as_str()))
                    .bind(id.to_string())
                    .bind(job_id)
                    .bind(attempt)
                    .fetch_one(pool)
            })
            .await?;
            Ok(())
        }
        Err(error) if error.is_final || step.is_last_attempt() => {
            tracing::error!(
                task = job.name,
                id = %id,
                chain = job.chain,
                index = job.index,
                attempt,
                error = %error.message,
                "durable step failed for good"
            );
            let (_, dropped) = at
                .retrying("recording it failed", |pool| {
                    sqlx::query_as::<_, (i64, Json<Vec<Dropped>>)>(AssertSqlSafe(
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
            // Its job is gone with the record: nothing for graphile_worker
            // to retry.
            Ok(())
        }
        Err(error) => {
            tracing::warn!(
                task = job.name,
                id = %id,
                chain = job.chain,
                index = job.index,
                attempt,
                max_attempts,
                error = %error.message,
                "durable step failed; graphile_worker will retry it after its backoff"
            );
            // For its status; if this fails, the job's own error stays.
            let _ = sqlx::query(AssertSqlSafe(tasks.statements.last_error.as_str()))
                .bind(id.to_string())
                .bind(&error.message)
                .execute(&pool)
                .await;
            Err(error.message)
        }
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
    async fn retrying<'p, T, Fut>(
        &'p self,
        what: &str,
        mut op: impl FnMut(&'p PgPool) -> Fut,
    ) -> Result<T, String>
    where
        Fut: Future<Output = Result<T, sqlx::Error>>,
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
