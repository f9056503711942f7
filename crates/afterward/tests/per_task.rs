//! Per-task control: names, run conditions, dedupe keys and `forget`.

mod capture_logs;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use afterward::{Outcome, RunIf, Runner, Stats, TaskQueue};
use capture_logs::Capture;

type Log = Arc<Mutex<Vec<&'static str>>>;

fn record<'q>(log: &Log, queue: &'q TaskQueue, what: &'static str) -> afterward::QueuedTask<'q> {
    let log = log.clone();
    queue.add_task(move || log.lock().unwrap().push(what), ())
}

fn assert_conserved(stats: &Stats) {
    assert_eq!(stats.tasks_received(), stats.accounted(), "{stats:?}");
}

// ===== names =====

#[tokio::test(flavor = "current_thread")]
async fn a_given_name_is_used_in_logs_reports_and_task_names() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());
    let runner = Runner::new();
    let queue = TaskQueue::new();
    queue
        .add_task(|| Err::<(), _>("smtp down"), ())
        .name(format!("welcome email to user {}", 42));
    queue
        .add_task(std::future::pending::<()>, ())
        .name("reindex");
    assert_eq!(queue.task_names(), ["welcome email to user 42", "reindex"]);
    assert_eq!(
        format!("{queue:?}"),
        r#"TaskQueue { len: 2, tasks: ["welcome email to user 42", "reindex"] }"#
    );
    let handle = runner.spawn(queue);
    let report = runner.shutdown(Duration::from_millis(20)).await;
    assert_eq!(report.abandoned_tasks(), ["reindex"]);
    assert_eq!((handle.await.failed(), runner.stats().abandoned()), (1, 1));
    let failed = capture.line_with("background task failed");
    assert!(
        failed.contains(r#"task="welcome email to user 42""#),
        "{failed}"
    );
    let abandoned = capture.line_with("background task abandoned");
    assert!(abandoned.contains(r#"task="reindex""#), "{abandoned}");
}

// ===== run conditions =====

#[tokio::test(flavor = "current_thread")]
async fn conditions_follow_the_outcome_and_a_queue_without_one_succeeded() {
    for (outcome, ran) in [
        (None, ["always", "on success"].as_slice()),
        (Some(Outcome::Success), &["always", "on success"]),
        (Some(Outcome::Failure), &["always", "on failure"]),
        (Some(Outcome::Unknown), &["always"]),
    ] {
        let runner = Runner::new();
        let log = Log::default();
        let queue = TaskQueue::new();
        record(&log, &queue, "always");
        record(&log, &queue, "on success").run_if(RunIf::Success);
        record(&log, &queue, "on failure").run_if(RunIf::Failure);
        if let Some(outcome) = outcome {
            afterward::adapter::set_outcome(&queue, outcome);
        }
        let report = runner.spawn(queue).await;
        assert_eq!(*log.lock().unwrap(), ran, "{outcome:?}");
        assert_eq!(
            (report.completed(), report.skipped()),
            (ran.len(), 3 - ran.len()),
            "{outcome:?}"
        );
        assert_conserved(&runner.stats());
    }
}

/// Sync tasks are taken by a batch on the blocking pool, which checks the
/// condition too; async tasks by the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_hold_for_sync_and_async_tasks_alike() {
    let runner = Runner::new();
    let log = Log::default();
    let queue = TaskQueue::new();
    let l = log.clone();
    queue
        .add_task(
            move || async move { l.lock().unwrap().push("async refund") },
            (),
        )
        .run_if(RunIf::Failure);
    record(&log, &queue, "sync receipt").run_if(RunIf::Success);
    record(&log, &queue, "sync refund").run_if(RunIf::Failure);
    afterward::adapter::set_outcome(&queue, Outcome::Failure);
    let report = runner.spawn(queue).await;
    assert_eq!(*log.lock().unwrap(), ["async refund", "sync refund"]);
    assert_eq!((report.completed(), report.skipped()), (2, 1));
    assert_conserved(&runner.stats());
}

#[tokio::test(flavor = "current_thread")]
async fn a_skipped_condition_is_logged_with_its_reason() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());
    let queue = TaskQueue::new();
    queue
        .add_task(|| (), ())
        .name("receipt")
        .run_if(RunIf::Success);
    afterward::adapter::set_outcome(&queue, Outcome::Failure);
    assert_eq!(queue.drain().await.skipped(), 1);
    let line = capture.line_with("background task skipped");
    assert!(line.contains(r#"task="receipt""#), "{line}");
    assert!(line.contains("the response failed"), "{line}");
}

// ===== keys and forget =====

#[tokio::test(flavor = "current_thread")]
async fn a_keyed_task_replaces_the_waiting_one_and_goes_to_the_end() {
    let log = Log::default();
    let queue = TaskQueue::new();
    record(&log, &queue, "first reindex").key("reindex");
    record(&log, &queue, "audit");
    record(&log, &queue, "second reindex").key("reindex");
    record(&log, &queue, "other key").key("cache");
    assert_eq!(queue.len(), 3);
    let report = queue.drain().await;
    assert_eq!(report.total(), 3, "a replaced task is not counted");
    assert_eq!(
        *log.lock().unwrap(),
        ["audit", "second reindex", "other key"]
    );
}

/// The newest task added wins, whenever `key` is called: a key given late to
/// an older task removes that older task, never the newer one.
#[tokio::test(flavor = "current_thread")]
async fn a_key_given_late_to_an_older_task_removes_the_older_one() {
    let log = Log::default();
    let queue = TaskQueue::new();
    let older = record(&log, &queue, "a");
    record(&log, &queue, "b");
    record(&log, &queue, "c").key("k");
    older.key("k");
    assert_eq!(queue.task_names().len(), 2);
    queue.drain().await;
    assert_eq!(*log.lock().unwrap(), ["b", "c"]);
}

/// Clones of one queue on two threads, adding tasks with one key: the task
/// added last is the one left, whichever thread keyed last.
#[test]
fn the_newest_task_with_a_key_wins_across_threads() {
    let queue = TaskQueue::new();
    let order = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for thread in ["a", "b"] {
            let (queue, order) = (queue.clone(), &order);
            scope.spawn(move || {
                for i in 0..500 {
                    let name = format!("{thread}{i}");
                    // Added in a known order; keyed in any order.
                    let added = {
                        let mut order = order.lock().unwrap();
                        order.push(name.clone());
                        queue.add_task(|| (), ()).name(name)
                    };
                    added.key("k");
                }
            });
        }
    });
    let newest = order.lock().unwrap().last().cloned().unwrap();
    assert_eq!(queue.task_names(), [newest]);
}

/// A response's queue appended to its request's keeps the key rule: the
/// response's task, added to the request's queue after the request's own,
/// replaces the request's task with the same key.
#[tokio::test(flavor = "current_thread")]
async fn keys_dedupe_across_a_request_and_its_response_queue() {
    let log = Log::default();
    let request = TaskQueue::new();
    record(&log, &request, "request's reindex").key("reindex");
    record(&log, &request, "audit");
    let response = TaskQueue::new();
    record(&log, &response, "response's reindex").key("reindex");
    request.append(&response);
    assert_eq!(request.drain().await.total(), 2);
    assert_eq!(*log.lock().unwrap(), ["audit", "response's reindex"]);
}

#[tokio::test(flavor = "current_thread")]
async fn forget_removes_the_waiting_tasks_with_a_key_and_says_how_many() {
    let log = Log::default();
    let queue = TaskQueue::new();
    record(&log, &queue, "reminder").key("reminder 7");
    record(&log, &queue, "audit");
    assert_eq!(queue.forget("reminder 7"), 1);
    assert_eq!(queue.forget("reminder 7"), 0);
    assert_eq!(queue.forget("no such key"), 0);
    queue.drain().await;
    assert_eq!(*log.lock().unwrap(), ["audit"]);
}

/// Once a runner has received a queue's tasks, a task removed by a key or
/// `forget` is counted `skipped`: it reached the runner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_removed_after_the_hand_off_are_counted_skipped() {
    let runner = Runner::builder().max_concurrent_drains(1).build();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let holder = TaskQueue::new();
    holder.add_task(
        move || async move {
            started_tx.send(()).unwrap();
            release_rx.await.unwrap();
        },
        (),
    );
    runner.spawn(holder);
    started_rx.await.unwrap();

    // Waits for the only slot, with its tasks received.
    let log = Log::default();
    let queue = TaskQueue::new();
    record(&log, &queue, "reminder").key("reminder");
    record(&log, &queue, "old cache").key("cache");
    let handle = runner.spawn(queue.clone());
    record(&log, &queue, "new cache").key("cache");
    assert_eq!(queue.forget("reminder"), 1);
    release_tx.send(()).unwrap();

    let report = handle.await;
    assert_eq!((report.completed(), report.skipped()), (1, 0));
    assert_eq!(*log.lock().unwrap(), ["new cache"]);
    runner.wait_idle().await;
    let stats = runner.stats();
    assert_eq!(
        (stats.tasks_received(), stats.completed(), stats.skipped()),
        (4, 2, 2),
        "{stats:?}"
    );
    assert_conserved(&stats);
}
