//! Chains on a real PostgreSQL (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), each test in a schema of
//! its own.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use afterward::durable::{Chain, ChainStep};
use afterward::{FailurePolicy, Runner, TaskId, TaskQueue};
use common::{Db, Hang, Record, Slow, rec, start};
use sqlx::AssertSqlSafe;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_run_in_order_with_two_workers_competing() {
    let db = Db::new("order").await;
    let runner = Runner::builder().durable(db.backend()).build();
    const CHAINS: usize = 12;
    const STEPS: usize = 5;
    for chain in 0..CHAINS {
        let queue = TaskQueue::new();
        for step in 0..STEPS {
            queue.add_durable(rec(&db, format!("{chain}.{step}")));
        }
        runner.spawn(queue);
    }
    runner.wait_idle().await;
    assert_eq!(runner.stats().persisted(), CHAINS * STEPS);

    let first = start(db.worker().concurrency(3)).await;
    let second = start(db.worker().concurrency(3)).await;
    db.wait_finished(CHAINS as i64).await;

    let runs = db.runs().await;
    assert_eq!(runs.len(), CHAINS * STEPS, "each step ran once");
    for chain in 0..CHAINS {
        let order: Vec<&str> = runs
            .iter()
            .filter(|run| run.label.starts_with(&format!("{chain}.")))
            .map(|run| run.label.as_str())
            .collect();
        let expected: Vec<String> = (0..STEPS).map(|step| format!("{chain}.{step}")).collect();
        assert_eq!(order, expected, "chain {chain} ran out of order");
    }
    // Every step got a key of its own: its task's id.
    let keys: std::collections::HashSet<&str> = runs.iter().map(|run| run.key.as_str()).collect();
    assert_eq!(keys.len(), CHAINS * STEPS);
    first.stop().await;
    second.stop().await;
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_fails_twice_is_retried_with_backoff_then_the_chain_goes_on() {
    let db = Db::new("backoff").await;
    let runner = Runner::builder().durable(db.backend()).build();
    let queue = TaskQueue::new();
    queue.add_durable(rec(&db, "before"));
    queue.add_durable(Record {
        fail_first: 2,
        ..rec(&db, "flaky")
    });
    queue.add_durable(rec(&db, "after"));
    runner.spawn(queue).await;

    let worker = start(db.worker()).await;
    db.wait_finished(1).await;

    let runs = db.runs().await;
    let seen: Vec<(&str, i32)> = runs
        .iter()
        .map(|run| (run.label.as_str(), run.attempt))
        .collect();
    assert_eq!(
        seen,
        [
            ("before", 1),
            ("flaky", 1),
            ("flaky", 2),
            ("flaky", 3),
            ("after", 1)
        ]
    );
    // graphile_worker waits exp(attempt) seconds after failed attempt n:
    // e ≈ 2.7 s, then e² ≈ 7.4 s.
    let gaps = [runs[2].at - runs[1].at, runs[3].at - runs[2].at];
    assert!(gaps[0] >= 2.5, "first backoff {gaps:?}");
    assert!(gaps[1] >= 7.0, "second backoff {gaps:?}");
    // Every attempt of a step had the same idempotency key.
    assert!(runs[1].key == runs[2].key && runs[2].key == runs[3].key);
    assert_ne!(runs[0].key, runs[1].key);
    worker.stop().await;
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_fails_for_good_under_each_policy() {
    let db = Db::new("for_good").await;
    for (policy, tag) in [
        (FailurePolicy::Continue, "continue"),
        (FailurePolicy::StopQueue, "stop"),
    ] {
        let runner = Runner::builder()
            .failure_policy(policy)
            .durable(db.backend().max_attempts(2))
            .build();
        let queue = TaskQueue::new();
        queue.add_durable(rec(&db, format!("{tag}-first")));
        queue.add_durable(Record {
            fail_first: u32::MAX,
            ..rec(&db, format!("{tag}-broken"))
        });
        queue.add_durable(rec(&db, format!("{tag}-last")));
        runner.spawn(queue).await;
    }
    let worker = start(db.worker()).await;
    db.wait_finished(2).await;

    let labels = db.labels().await;
    let of = |tag: &str| -> Vec<String> {
        labels
            .iter()
            .filter(|label| label.starts_with(tag))
            .cloned()
            .collect()
    };
    // Two attempts each, then the policy decides.
    assert_eq!(
        of("continue-"),
        [
            "continue-first",
            "continue-broken",
            "continue-broken",
            "continue-last"
        ]
    );
    assert_eq!(of("stop-"), ["stop-first", "stop-broken", "stop-broken"]);
    // The failed step is recorded with its error and attempts; after it,
    // `Continue` ran the last step and `StopQueue` dropped it.
    let states: Vec<(String, i16, i16, Option<String>)> = sqlx::query_as(AssertSqlSafe(format!(
        "select c.label, s.state, s.attempts, s.last_error
         from {s}.afterward_steps s
         cross join lateral (select s.payload->>'label' as label) c
         order by c.label",
        s = db.schema
    )))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let states: Vec<(&str, i16, i16, bool)> = states
        .iter()
        .map(|(label, state, attempts, error)| {
            let broken = error
                .as_deref()
                .is_some_and(|e| e.contains("broken failed"));
            (label.as_str(), *state, *attempts, broken)
        })
        .collect();
    assert_eq!(
        states,
        [
            ("continue-broken", 3, 2, true),
            ("continue-first", 2, 1, false),
            ("continue-last", 2, 1, false),
            ("stop-broken", 3, 2, true),
            ("stop-first", 2, 1, false),
            ("stop-last", 4, 0, false),
        ]
    );
    assert_eq!(db.count("jobs").await, 0, "no job left behind");
    worker.stop().await;
    db.drop_schema().await;
}

#[tokio::test]
async fn a_chain_handed_off_twice_is_stored_once() {
    let db = Db::new("twice").await;
    let backend = db.backend();
    let steps = vec![
        ChainStep::of(TaskId::new(), &rec(&db, "only-once-1")).unwrap(),
        ChainStep::of(TaskId::new(), &rec(&db, "only-once-2")).unwrap(),
    ];
    let chain = Chain::new(steps, FailurePolicy::Continue);
    for _ in 0..3 {
        afterward::durable::DurableBackend::persist(&backend, &chain)
            .await
            .unwrap();
    }
    assert_eq!(db.count("afterward_steps").await, 2);
    assert_eq!(db.count("jobs").await, 1, "one job: the first step's");

    let worker = start(db.worker()).await;
    db.wait_finished(1).await;
    assert_eq!(db.labels().await, ["only-once-1", "only-once-2"]);
    worker.stop().await;
    db.drop_schema().await;
}

#[tokio::test]
async fn an_unreachable_database_fails_the_hand_off_counted_and_named() {
    // Nothing listens on port 1.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy("postgres://postgres@127.0.0.1:1/postgres")
        .unwrap();
    let runner = Runner::builder()
        .durable(afterward_graphile::GraphileBackend::new(pool))
        .build();
    let queue = TaskQueue::new();
    queue.add_durable(Record {
        schema: "none".into(),
        label: "lost".into(),
        fail_first: 0,
    });
    let (tx, rx) = std::sync::mpsc::channel();
    queue.add_task(move || tx.send("local ran").unwrap(), ());
    let report = runner.spawn(queue).await;
    assert_eq!((report.persist_failed(), report.completed()), (1, 1));
    assert_eq!(rx.recv().unwrap(), "local ran");
    let stats = runner.stats();
    assert_eq!(stats.persist_failed(), 1);
    assert_eq!(stats.tasks_received(), stats.accounted());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_error_while_recording_a_step_costs_no_attempt() {
    let db = Db::new("blip").await;
    let s = &db.schema;
    // The first update of the chains table fails, once: a blip. (A
    // sequence, since the failed transaction rolls back anything else.)
    for sql in [
        format!("create sequence {s}.blips"),
        format!(
            "create function {s}.blip() returns trigger language plpgsql as $$
             begin
               if nextval('{s}.blips') = 1 then
                 raise exception 'a blip';
               end if;
               return new;
             end $$"
        ),
        format!(
            "create trigger blip before update on {s}.afterward_steps
             for each row execute function {s}.blip()"
        ),
    ] {
        sqlx::query(AssertSqlSafe(sql))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    // One attempt per step: had the blip cost it, the chain would stop.
    let runner = Runner::builder()
        .durable(db.backend().max_attempts(1))
        .build();
    let queue = TaskQueue::new();
    queue.add_durable(rec(&db, "a"));
    queue.add_durable(rec(&db, "b"));
    runner.spawn(queue).await;
    let worker = start(db.worker()).await;
    db.wait_finished(1).await;
    assert_eq!(db.labels().await, ["a", "b"]);
    let (updates,): (i64,) =
        sqlx::query_as(AssertSqlSafe(format!("select last_value from {s}.blips")))
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(updates, 3, "one blip, then the two updates that took");
    worker.stop().await;
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_past_the_step_timeout_is_a_failed_attempt() {
    let db = Db::new("step_timeout").await;
    let runner = Runner::builder()
        .durable(db.backend().max_attempts(1))
        .build();
    let queue = TaskQueue::new();
    queue.add_durable(Slow {
        schema: db.schema.clone(),
        label: "too-slow".into(),
        ms: 60_000,
    });
    queue.add_durable(rec(&db, "next"));
    runner.spawn(queue).await;
    let worker = start(db.worker().step_timeout(Duration::from_millis(300))).await;
    db.wait_finished(1).await;
    assert_eq!(db.labels().await, ["too-slow", "next"]);
    let (error,): (String,) = sqlx::query_as(AssertSqlSafe(format!(
        "select last_error from {}.afterward_steps where last_error is not null",
        db.schema
    )))
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(error.contains("timed out after 300ms"), "{error}");
    worker.stop().await;
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_fails_the_hand_off_at_the_timeout() {
    let db = Db::new("stall").await;
    // A migration, say, holds the chains table.
    let mut lock = db.pool.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "lock table {}.afterward_steps in access exclusive mode",
        db.schema
    )))
    .execute(&mut *lock)
    .await
    .unwrap();
    let runner = Runner::builder()
        .durable(db.backend().timeout(Duration::from_millis(500)))
        .build();
    let queue = TaskQueue::new();
    queue.add_durable(rec(&db, "stalled"));
    let (tx, rx) = std::sync::mpsc::channel();
    queue.add_task(move || tx.send("local ran").unwrap(), ());
    let report = runner.spawn(queue).await;
    assert_eq!((report.persist_failed(), report.completed()), (1, 1));
    assert_eq!(rx.recv().unwrap(), "local ran");
    lock.rollback().await.unwrap();
    assert_eq!(db.count("afterward_steps").await, 0);
    db.drop_schema().await;
}

/// The worker process the crash test kills: runs when the test binary is
/// started with `AFTERWARD_CRASH_SCHEMA` set, and never returns on its own.
#[tokio::test]
#[ignore = "started by a_worker_killed_mid_step_crash_test"]
async fn crash_child_worker() {
    let Ok(schema) = std::env::var("AFTERWARD_CRASH_SCHEMA") else {
        return;
    };
    let db = Db::existing(&schema).await;
    let worker = db.worker().concurrency(1).init().await.unwrap();
    worker.run().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_step_crash_test() {
    let db = Db::new("crash").await;
    let runner = Runner::builder().durable(db.backend()).build();
    let queue = TaskQueue::new();
    queue.add_durable(rec(&db, "step-0"));
    queue.add_durable(rec(&db, "step-1"));
    queue.add_durable(Hang {
        schema: db.schema.clone(),
        label: "step-2".into(),
    });
    queue.add_durable(rec(&db, "step-3"));
    runner.spawn(queue).await;

    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "crash_child_worker", "--nocapture"])
            .env("AFTERWARD_CRASH_SCHEMA", &db.schema)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    db.wait_run("step-2").await;
    // SIGKILL, mid-step: no shutdown, no unlock.
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let worker = start(db.worker()).await;
    db.wait_finished(1).await;

    let runs = db.runs().await;
    let child_pid = runs[0].pid;
    let me = std::process::id() as i32;
    let seen: Vec<(&str, i32, bool)> = runs
        .iter()
        .map(|run| (run.label.as_str(), run.attempt, run.pid == me))
        .collect();
    assert_ne!(child_pid, me);
    assert_eq!(
        seen,
        [
            ("step-0", 1, false),
            ("step-1", 1, false),
            ("step-2", 1, false),
            // Recovery gives an interrupted attempt back: still attempt 1.
            ("step-2", 1, true),
            ("step-3", 1, true)
        ],
        "steps before the killed one ran once, in the killed worker"
    );
    worker.stop().await;
    db.drop_schema().await;
}

/// Kills the child worker even if the test fails before it means to.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
