//! The worker side of one step: find it in its chain, run it, and move the
//! chain on in the same transaction that queues the next step.

use std::future::Future;
use std::time::Duration;

use afterward::Step;
use afterward::durable::guarded;
use graphile_worker::{
    IntoTaskHandlerResult, JobKeyMode, JobSpec, TaskHandler, WorkerContext, WorkerUtils,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::AssertSqlSafe;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use tracing::Instrument;

use crate::stored::StoredStep;
use crate::tasks::Tasks;

/// The graphile_worker job of one step: which chain, which step.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StepJob {
    chain: String,
    index: i32,
}

/// graphile_worker's task identifier for every step of every chain.
pub(crate) const IDENTIFIER: &str = "afterward_step";

impl TaskHandler for StepJob {
    const IDENTIFIER: &'static str = IDENTIFIER;

    async fn run(self, ctx: WorkerContext) -> impl IntoTaskHandlerResult {
        run_step(self, ctx).await
    }
}

/// Queues step `index` of `chain`, inside `tx`. The job key makes a second
/// queueing of the same step a no-op while the first is stored.
pub(crate) async fn enqueue(
    utils: &WorkerUtils,
    tx: &mut Transaction<'static, Postgres>,
    chain: &str,
    index: i32,
    max_attempts: i16,
) -> Result<(), crate::Error> {
    let spec = JobSpec {
        job_key: Some(format!("afterward:{chain}:{index}")),
        job_key_mode: Some(JobKeyMode::UnsafeDedupe),
        max_attempts: Some(max_attempts),
        ..JobSpec::default()
    };
    utils
        .clone()
        .with_executor(tx)
        .add_raw_job(IDENTIFIER, json!({ "chain": chain, "index": index }), spec)
        .await?;
    Ok(())
}

/// A chain's row, as a step sees it.
#[derive(sqlx::FromRow)]
struct Row {
    step: Option<Json<StoredStep<'static>>>,
    len: i32,
    next_index: i32,
    stop_on_failure: bool,
    max_attempts: i16,
}

async fn run_step(job: StepJob, ctx: WorkerContext) -> Result<(), String> {
    let Some(tasks) = ctx.get_ext::<Tasks>().cloned() else {
        return Err("afterward_step jobs need a worker built by GraphileWorker".to_owned());
    };
    let pool = ctx.pg_pool().clone();
    let table = tasks.table.clone();
    let read = format!(
        "select steps -> $2 as step, jsonb_array_length(steps) as len, next_index,
                stop_on_failure, max_attempts
         from {table} where id = $1"
    );
    let row: Option<Row> = retrying(&tasks, &job, "reading its chain", || {
        sqlx::query_as(AssertSqlSafe(read.clone()))
            .bind(&job.chain)
            .bind(job.index)
            .fetch_optional(&pool)
    })
    .await?;
    let Some(mut row) = row else {
        tracing::warn!(
            chain = job.chain,
            index = job.index,
            "step of an unknown chain ignored"
        );
        return Ok(());
    };
    if row.next_index != job.index {
        // Already past it: this step finished, and its chain moved on, but
        // its job was not marked done (the worker died in between).
        tracing::info!(
            chain = job.chain,
            index = job.index,
            "step already done: not run again"
        );
        return Ok(());
    }
    let Some(Json(stored)) = row.step.take() else {
        return Err(format!("chain {} has no step {}", job.chain, job.index));
    };
    let attempt = u32::try_from(*ctx.job().attempts()).unwrap_or(1);
    let max_attempts = u32::try_from(*ctx.job().max_attempts()).unwrap_or(1);
    let step = Step::new(
        job.chain.as_str(),
        job.index as usize,
        attempt,
        max_attempts,
    );
    let span = tracing::info_span!(
        "durable_step",
        task = &*stored.name,
        chain = job.chain,
        index = job.index,
        attempt,
    );
    let outcome = match tasks.get(&stored.name) {
        Some(run) => {
            let running = run(stored.payload.into_owned(), step.clone());
            let guarded = async {
                guarded(running)
                    .await
                    .unwrap_or_else(|panic| Err(format!("panicked: {panic}")))
            };
            match tasks.step_timeout {
                Some(limit) => tokio::time::timeout(limit, guarded)
                    .instrument(span)
                    .await
                    .unwrap_or_else(|_| Err(format!("timed out after {limit:?}"))),
                None => guarded.instrument(span).await,
            }
        }
        None => Err(format!(
            "no task named {:?} is registered with this worker",
            stored.name
        )),
    };
    let moved = match &outcome {
        Ok(()) => {
            retrying(&tasks, &job, "recording it done", || {
                advance(&tasks.utils, &pool, &table, &job, &row, false)
            })
            .await
        }
        Err(error) if !step.is_last_attempt() => {
            tracing::warn!(
                task = &*stored.name,
                chain = job.chain,
                index = job.index,
                attempt,
                max_attempts,
                error = %error,
                "durable step failed; graphile_worker will retry it after its backoff"
            );
            Ok(())
        }
        Err(error) => {
            tracing::error!(
                task = &*stored.name,
                chain = job.chain,
                index = job.index,
                attempt,
                error = %error,
                "durable step failed for good"
            );
            if row.stop_on_failure {
                retrying(&tasks, &job, "stopping its chain", || {
                    stop(&pool, &table, &job)
                })
                .await
            } else {
                retrying(&tasks, &job, "recording it failed", || {
                    advance(&tasks.utils, &pool, &table, &job, &row, true)
                })
                .await
            }
        }
    };
    // If the chain could not be moved on even after retrying, the step
    // counts as a failed attempt, to be run again: it ran, but nothing
    // records that.
    moved?;
    outcome
}

/// Runs a database operation of the chain's bookkeeping until it succeeds,
/// backing off from 100 ms to 10 s, for up to the worker's bookkeeping
/// budget: a blip (a failover, a full pool) must not cost the step an
/// attempt, least of all its last one, which would leave the chain stopped.
async fn retrying<T, E, Fut>(
    tasks: &Tasks,
    job: &StepJob,
    what: &str,
    mut op: impl FnMut() -> Fut,
) -> Result<T, String>
where
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let give_up = tokio::time::Instant::now() + tasks.bookkeeping_budget;
    let mut pause = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(error) if tokio::time::Instant::now() + pause < give_up => {
                tracing::warn!(
                    chain = job.chain,
                    index = job.index,
                    error = %error,
                    "durable step: {what} failed; retrying in {pause:?}"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            Err(error) => {
                tracing::error!(
                    chain = job.chain,
                    index = job.index,
                    error = %error,
                    "durable step: {what} failed for {:?}; the step counts as a failed \
                     attempt, and if it was the last, the chain stops at this step",
                    tasks.bookkeeping_budget
                );
                return Err(format!("chain {}: {what}: {error}", job.chain));
            }
        }
    }
}

/// Records step `index` as done (or `failed` for good) and queues the next,
/// in one transaction.
async fn advance(
    utils: &WorkerUtils,
    pool: &PgPool,
    table: &str,
    job: &StepJob,
    row: &Row,
    failed: bool,
) -> Result<(), crate::Error> {
    let next = job.index + 1;
    let mut tx = pool.begin().await?;
    let moved = sqlx::query(AssertSqlSafe(format!(
        "update {table} set next_index = $2,
             finished_at = case when $2 >= jsonb_array_length(steps) then now() end,
             failed_for_good = failed_for_good || $3
         where id = $1 and next_index = $4"
    )))
    .bind(&job.chain)
    .bind(next)
    .bind(if failed { vec![job.index] } else { Vec::new() })
    .bind(job.index)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if moved && next < row.len {
        enqueue(utils, &mut tx, &job.chain, next, row.max_attempts).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Ends the chain after a step failed for good under `StopQueue`, naming
/// the steps that will not run.
async fn stop(pool: &PgPool, table: &str, job: &StepJob) -> Result<(), crate::Error> {
    let skipped: Option<(Json<Vec<StoredStep<'static>>>,)> =
        sqlx::query_as(AssertSqlSafe(format!(
            "update {table} set next_index = jsonb_array_length(steps), finished_at = now(),
             failed_for_good = failed_for_good || $2
         where id = $1 and next_index = $2
         returning (select coalesce(jsonb_agg(s), '[]') from jsonb_array_elements(steps)
                    with ordinality as t(s, i) where i > $2 + 1)"
        )))
        .bind(&job.chain)
        .bind(job.index)
        .fetch_optional(pool)
        .await?;
    for (offset, step) in skipped
        .map(|(Json(steps),)| steps)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        tracing::error!(
            task = &*step.name,
            chain = job.chain,
            index = job.index as usize + 1 + offset,
            "durable step skipped: an earlier step of its chain failed for good"
        );
    }
    Ok(())
}
