//! Recording a step when the answer to the first try was lost: the worker
//! asks again, and must carry on with its chain, not end the job that now
//! holds the next step.

mod common;

use afterward::{Runner, TaskId, TaskQueue};
use common::{Db, rec};
use sqlx::AssertSqlSafe;

/// Records `step` done in `job` through `afterward_done`, as a worker does;
/// returns the index of the next step it is given, if any.
async fn record_done(db: &Db, step: TaskId, job: i64) -> Option<i32> {
    let (next,): (Option<i32>,) = sqlx::query_as(AssertSqlSafe(format!(
        "select (next->>'index')::int4 from {}.afterward_done($1::uuid[], $2, $3) as next",
        db.schema
    )))
    .bind(vec![step.to_string()])
    .bind(vec![job])
    .bind(vec![1i16])
    .fetch_one(&db.pool)
    .await
    .unwrap();
    next
}

#[tokio::test]
async fn a_step_recorded_again_carries_on_with_the_next_step() {
    let db = Db::new("again").await;
    let runner = Runner::builder().durable(db.backend()).build();
    let queue = TaskQueue::new();
    let first = queue.add_durable(rec(&db, "first")).id();
    let second = queue.add_durable(rec(&db, "second")).id();
    assert_eq!(runner.spawn(queue).await.persisted(), 2);
    let (job,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
        "select id from {}._private_jobs",
        db.schema
    )))
    .fetch_one(&db.pool)
    .await
    .unwrap();

    assert_eq!(record_done(&db, first, job).await, Some(1));
    // The answer was lost; asked again, the job has moved on to the second
    // step, which the worker must run, and the job must stay.
    assert_eq!(record_done(&db, first, job).await, Some(1));
    assert_eq!(db.count("_private_jobs").await, 1);

    // The last step ends the chain and its job, however often it is asked.
    assert_eq!(record_done(&db, second, job).await, None);
    assert_eq!(record_done(&db, second, job).await, None);
    assert_eq!(db.count("_private_jobs").await, 0);
    db.drop_schema().await;
}
