//! Steps recorded done together: the steps that finish while others are
//! being recorded share one statement and one commit, and each gets its
//! chain's next step back.

use std::sync::Arc;

use afterward::TaskId;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgPool};

use crate::batches::Batches;
use crate::job::StepJob;
use crate::sql::Statements;

/// How many batches of steps may be recorded at once.
const IN_FLIGHT: usize = 2;

/// The most steps one statement records.
const MAX_BATCH: usize = 256;

/// A step that ran to success, and the job it ran in.
pub(crate) struct Done {
    pub(crate) id: TaskId,
    pub(crate) job: i64,
    pub(crate) attempt: i16,
}

/// The next step of the chain, if any, or why the batch failed (then
/// nothing of it was recorded, or the answer was lost: asked again, a step
/// recorded before gets the step its job was moved on to).
pub(crate) type Answer = Result<Option<StepJob>, String>;

/// A worker's steps on their way to be recorded done.
#[derive(Debug)]
pub(crate) struct Recorder {
    batches: Batches<Done, Answer>,
}

impl Recorder {
    /// Starts recording, on the current runtime.
    pub(crate) fn start(pool: PgPool, statements: Arc<Statements>) -> Recorder {
        let batches = Batches::start(IN_FLIGHT, MAX_BATCH, move |steps: Vec<Done>| {
            let (pool, statements) = (pool.clone(), statements.clone());
            async move {
                let n = steps.len();
                match record(&pool, &statements, steps).await {
                    Ok(next) if next.len() == n => next.into_iter().map(Ok).collect(),
                    Ok(next) => {
                        let error = format!("{} answers for {n} steps", next.len());
                        vec![Err(error); n]
                    }
                    Err(error) => vec![Err(error.to_string()); n],
                }
            }
        });
        Recorder { batches }
    }

    /// Records `step` done and moves its chain's job on, with whatever
    /// other steps finish meanwhile; returns the chain's next step.
    pub(crate) async fn done(&self, step: Done) -> Answer {
        self.batches.call(step, 1).await?
    }
}

async fn record(
    pool: &PgPool,
    statements: &Statements,
    steps: Vec<Done>,
) -> Result<Vec<Option<StepJob>>, sqlx::Error> {
    let ids: Vec<String> = steps.iter().map(|step| step.id.to_string()).collect();
    let jobs: Vec<i64> = steps.iter().map(|step| step.job).collect();
    let attempts: Vec<i16> = steps.iter().map(|step| step.attempt).collect();
    let rows: Vec<(Option<Json<StepJob>>,)> =
        sqlx::query_as(AssertSqlSafe(statements.done.as_str()))
            .bind(&ids)
            .bind(&jobs)
            .bind(&attempts)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(next,)| next.map(|Json(next)| next))
        .collect())
}
