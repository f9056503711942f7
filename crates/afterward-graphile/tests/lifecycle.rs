//! A durable task's life on a real PostgreSQL: its status by id through
//! every state, pruning, steps that can never succeed, the transactional
//! outbox, the fallback, repair, exact hand-offs and a worker that must not
//! miss runnable jobs.

mod common;

use std::time::Duration;

use afterward::durable::{Chain, ChainStep, DurableBackend};
use afterward::{DurableTask, FailurePolicy, Runner, Step, TaskId, TaskQueue};
use afterward_graphile::{GraphileBackend, TaskState};
use common::{Db, Record, Refused, Slow, rec, start};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;

/// Polls `backend.status(id)` until `done` holds, for up to 30 s.
async fn wait_status(
    backend: &GraphileBackend,
    id: TaskId,
    what: &str,
    done: impl Fn(&afterward_graphile::TaskStatus) -> bool,
) -> afterward_graphile::TaskStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = backend.status(id).await.unwrap().expect("stored");
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_looked_up_by_id_through_every_state_then_pruned() {
    let db = Db::new("status").await;
    let backend = db.backend().max_attempts(3);
    let runner = Runner::builder()
        .failure_policy(FailurePolicy::StopQueue)
        .durable(backend.clone())
        .build();
    let queue = TaskQueue::new();
    let first = queue.add_durable(rec(&db, "first")).id();
    let flaky = queue
        .add_durable(Record {
            fail_first: 1,
            ..rec(&db, "flaky")
        })
        .id();
    let slow = queue
        .add_durable(Slow {
            schema: db.schema.clone(),
            label: "slow".into(),
            ms: 1_000,
        })
        .id();
    let refused = queue
        .add_durable(Refused {
            schema: db.schema.clone(),
            label: "refused".into(),
        })
        .id();
    let dropped = queue.add_durable(rec(&db, "dropped")).id();
    assert_eq!(runner.spawn(queue).await.persisted(), 5);

    for id in [first, flaky, slow, refused, dropped] {
        let status = backend.status(id).await.unwrap().unwrap();
        assert_eq!((status.state(), status.attempts()), (TaskState::Waiting, 0));
    }
    assert_eq!(backend.status(TaskId::new()).await.unwrap(), None);

    let worker = start(db.worker()).await;
    // A failed attempt leaves it waiting for the next, with its error. Its
    // error is stored while the worker still holds the job (running), so
    // wait for the worker to have handed the failure back.
    let waiting = wait_status(&backend, flaky, "flaky's first failure", |s| {
        s.attempts() == 1 && s.last_error().is_some() && s.state() == TaskState::Waiting
    })
    .await;
    assert!(
        waiting
            .last_error()
            .unwrap()
            .contains("flaky failed on attempt 1")
    );
    let running = wait_status(&backend, slow, "slow running", |s| {
        s.state() == TaskState::Running
    })
    .await;
    assert_eq!(running.attempts(), 1);
    db.wait_finished(1).await;

    let states = [
        (first, TaskState::Done, 1),
        (flaky, TaskState::Done, 2),
        (slow, TaskState::Done, 1),
        (refused, TaskState::Failed, 1),
        (dropped, TaskState::Dropped, 0),
    ];
    for (id, state, attempts) in states {
        let status = backend.status(id).await.unwrap().unwrap();
        assert_eq!(
            (status.state(), status.attempts()),
            (state, attempts),
            "{id}"
        );
    }
    let failed = backend.status(refused).await.unwrap().unwrap();
    assert!(failed.last_error().unwrap().contains("refused for good"));
    assert_eq!(
        db.labels().await,
        ["first", "flaky", "flaky", "slow", "refused"]
    );

    assert_eq!(backend.prune(Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(backend.prune(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(backend.status(first).await.unwrap(), None);
    assert_eq!(db.count("afterward_steps").await, 0);
    worker.stop().await;
    db.drop_schema().await;
}

/// A task no worker registered.
#[derive(Serialize, Deserialize)]
struct Unregistered;

impl DurableTask for Unregistered {
    const NAME: &'static str = "unregistered";
    type Error = String;

    async fn run(self, _: Step) -> Result<(), String> {
        Ok(())
    }
}

/// Steps that can never succeed fail for good on their first attempt, with
/// the reason, rather than through all their attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_that_can_never_succeed_fail_for_good_at_once() {
    let db = Db::new("never").await;
    let backend = db.backend().max_attempts(25);
    let unknown = TaskId::new();
    let mismatched = TaskId::new();
    let steps = vec![
        ChainStep::of(unknown, &Unregistered).unwrap(),
        // Stored by another version of the code: no longer a `Record`.
        ChainStep::new(mismatched, "record", serde_json::json!({"old": 1})),
    ];
    backend
        .persist(&Chain::new(steps, FailurePolicy::Continue))
        .await
        .unwrap();
    let worker = start(db.worker()).await;
    db.wait_finished(1).await;
    for (id, reason) in [
        (unknown, "no task named \"unregistered\""),
        (mismatched, "cannot deserialize record"),
    ] {
        let status = backend.status(id).await.unwrap().unwrap();
        assert_eq!((status.state(), status.attempts()), (TaskState::Failed, 1));
        assert!(status.last_error().unwrap().contains(reason), "{status:?}");
    }
    worker.stop().await;
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_commits_or_rolls_back_with_the_callers_transaction() {
    let db = Db::new("outbox").await;
    let backend = db.backend();
    db.execute(format!("create table {}.users (email text)", db.schema))
        .await;
    let register = |email: &'static str| {
        let (db, backend) = (&db, &backend);
        async move {
            let mut tx = db.pool.begin().await.unwrap();
            sqlx::query(AssertSqlSafe(format!(
                "insert into {}.users values ($1)",
                db.schema
            )))
            .bind(email)
            .execute(&mut *tx)
            .await
            .unwrap();
            let id = backend.add_in(&mut tx, rec(db, email)).await.unwrap();
            (tx, id)
        }
    };
    let (tx, rolled_back) = register("rolled-back").await;
    tx.rollback().await.unwrap();
    assert_eq!(backend.status(rolled_back).await.unwrap(), None);
    assert_eq!(
        (db.count("afterward_steps").await, db.count("jobs").await),
        (0, 0)
    );

    let (tx, committed) = register("committed").await;
    tx.commit().await.unwrap();
    let worker = start(db.worker()).await;
    db.wait_finished(1).await;
    assert_eq!(db.labels().await, ["committed"]);
    assert_eq!(db.count("users").await, 1);
    let status = backend.status(committed).await.unwrap().unwrap();
    assert_eq!(status.state(), TaskState::Done);
    worker.stop().await;
    db.drop_schema().await;
}

/// With `durable_fallback`, the tasks of a hand-off that failed run
/// in-process instead, once, counted by how they ran.
#[tokio::test]
async fn a_failed_hand_off_falls_back_to_running_in_process() {
    let db = Db::new("fallback").await;
    // Nothing listens on port 1.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy("postgres://postgres@127.0.0.1:1/postgres")
        .unwrap();
    let runner = Runner::builder()
        .durable(GraphileBackend::new(pool))
        .durable_fallback(true)
        .build();
    let queue = TaskQueue::new();
    queue.add_durable(rec(&db, "fell back"));
    queue.add_durable(Record {
        fail_first: 1,
        ..rec(&db, "fell back and failed")
    });
    let report = runner.spawn(queue).await;
    assert_eq!(
        (report.completed(), report.failed(), report.persist_failed()),
        (1, 1, 0)
    );
    // Once each, in-process: no retry.
    assert_eq!(db.labels().await, ["fell back", "fell back and failed"]);
    let stats = runner.stats();
    assert_eq!(stats.tasks_received(), stats.accounted());
    db.drop_schema().await;
}

/// A chain whose job was lost (here deleted) is found by a worker's upkeep
/// and queued again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_that_stopped_without_finishing_is_resumed() {
    let db = Db::new("repair").await;
    let runner = Runner::builder().durable(db.backend()).build();
    let queue = TaskQueue::new();
    queue.add_durable(rec(&db, "a"));
    queue.add_durable(rec(&db, "b"));
    runner.spawn(queue).await;
    db.execute(format!("delete from {}._private_jobs", db.schema))
        .await;
    let worker = start(db.worker()).await;
    db.wait_finished(1).await;
    assert_eq!(db.labels().await, ["a", "b"]);
    worker.stop().await;
    db.drop_schema().await;
}

/// A commit that takes longer than the hand-off's timeout is not cut short:
/// the hand-off is counted persisted, exactly as it was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_commit_is_counted_persisted_not_failed() {
    let db = Db::new("slow_commit").await;
    let s = &db.schema;
    db.execute(format!(
        "create function {s}.slow_commit() returns trigger language plpgsql as $$
         begin perform pg_sleep(0.3); return null; end $$"
    ))
    .await;
    db.execute(format!(
        "create constraint trigger slow_commit after insert on {s}.afterward_steps
         deferrable initially deferred for each row execute function {s}.slow_commit()"
    ))
    .await;
    let runner = Runner::builder()
        .durable(db.backend().timeout(Duration::from_millis(100)))
        .build();
    let queue = TaskQueue::new();
    queue.add_durable(rec(&db, "slow-commit"));
    let report = runner.spawn(queue).await;
    assert_eq!((report.persisted(), report.persist_failed()), (1, 0));
    let worker = start(db.worker()).await;
    db.wait_finished(1).await;
    assert_eq!(db.labels().await, ["slow-commit"]);
    worker.stop().await;
    db.drop_schema().await;
}

/// A commit whose connection dies while it runs: the hand-off looks the
/// transaction up, finds it did not commit, and says so: `persist_failed`,
/// and nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_cut_off_is_looked_up_and_counted_exactly() {
    let db = Db::new("lost_commit").await;
    let s = &db.schema;
    db.execute(format!(
        "create function {s}.stuck_commit() returns trigger language plpgsql as $$
         begin perform pg_sleep(30); return null; end $$"
    ))
    .await;
    db.execute(format!(
        "create constraint trigger stuck_commit after insert on {s}.afterward_steps
         deferrable initially deferred for each row execute function {s}.stuck_commit()"
    ))
    .await;
    let options: sqlx::postgres::PgConnectOptions = common::database_url().parse().unwrap();
    let pool = sqlx::PgPool::connect_with(options.application_name(&db.schema))
        .await
        .unwrap();
    let backend = GraphileBackend::new(pool).schema(&db.schema);
    let runner = Runner::builder().durable(backend).build();
    let queue = TaskQueue::new();
    queue.add_durable(rec(&db, "never stored"));
    let handle = runner.spawn(queue);
    // The commit runs the trigger: end that connection there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (killed,): (i64,) = sqlx::query_as(
            "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
             where application_name = $1 and query ilike 'commit%') t",
        )
        .bind(&db.schema)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if killed > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no commit seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = handle.await;
    assert_eq!(
        (
            report.persisted(),
            report.persist_failed(),
            report.persist_unknown()
        ),
        (0, 1, 0)
    );
    assert_eq!(db.count("afterward_steps").await, 0);
    db.drop_schema().await;
}

/// A job that becomes runnable with no notification, to a worker that would
/// not poll again for a minute: the upkeep's pulse wakes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_does_not_miss_jobs_that_become_runnable_silently() {
    let db = Db::new("pulse").await;
    let runner = Runner::builder().durable(db.backend()).build();
    let queue = TaskQueue::new();
    queue.add_durable(rec(&db, "late"));
    runner.spawn(queue).await;
    // Runnable in a second, without any notification then.
    db.execute(format!(
        "update {}._private_jobs set run_at = now() + interval '1 second'",
        db.schema
    ))
    .await;
    let worker = start(db.worker().poll_interval(Duration::from_secs(60))).await;
    let started = tokio::time::Instant::now();
    db.wait_finished(1).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "picked up only by polling"
    );
    worker.stop().await;
    db.drop_schema().await;
}

/// A hand-off notifies the workers: an idle worker that would not poll
/// again for a minute, and has no upkeep to wake it, starts the new chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_wakes_an_idle_worker() {
    let db = Db::new("wake").await;
    let runner = Runner::builder().durable(db.backend()).build();
    let hand_off = |label: &str| {
        let queue = TaskQueue::new();
        queue.add_durable(rec(&db, label));
        runner.spawn(queue)
    };
    assert_eq!(hand_off("found at start").await.persisted(), 1);
    let worker = start(
        db.worker()
            .poll_interval(Duration::from_secs(60))
            .upkeep(None),
    )
    .await;
    // Found by the worker's first fetch; after it, the worker is idle.
    db.wait_finished(1).await;
    let started = tokio::time::Instant::now();
    assert_eq!(hand_off("woken").await.persisted(), 1);
    db.wait_finished(2).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "picked up only by polling"
    );
    worker.stop().await;
    db.drop_schema().await;
}
