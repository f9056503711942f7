//! Sequential drain semantics: order, no overlap, tasks added mid-drain,
//! concurrent drains, failure isolation and the failure policy.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use afterward::{FailurePolicy, Runner, TaskQueue};

type Log = Arc<Mutex<Vec<String>>>;

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn push(log: &Log, line: impl Into<String>) {
    log.lock().unwrap().push(line.into());
}

fn lines(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

async fn sleepy(log: Log, id: u32, ms: u64) {
    push(&log, format!("start {id}"));
    tokio::time::sleep(Duration::from_millis(ms)).await;
    push(&log, format!("end {id}"));
}

fn blocking_sleepy(log: Log, id: u32, ms: u64) {
    push(&log, format!("start {id}"));
    std::thread::sleep(Duration::from_millis(ms));
    push(&log, format!("end {id}"));
}

/// The sleeps shrink, so with any overlap a later task would end first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_one_after_another_in_insertion_order() {
    let events = log();
    let queue = TaskQueue::new();
    queue.add_task(sleepy, (events.clone(), 1, 40));
    queue.add_task(blocking_sleepy, (events.clone(), 2, 30));
    queue.add_task(sleepy, (events.clone(), 3, 20));
    queue.add_task(blocking_sleepy, (events.clone(), 4, 10));
    queue.add_task(blocking_sleepy, (events.clone(), 5, 5));
    queue.add_task(sleepy, (events.clone(), 6, 1));

    let report = queue.drain().await;
    assert_eq!(report.completed(), 6);
    let expected: Vec<String> = (1..=6)
        .flat_map(|id| [format!("start {id}"), format!("end {id}")])
        .collect();
    assert_eq!(lines(&events), expected);
}

#[tokio::test]
async fn tasks_added_during_the_drain_run_in_the_same_drain_after_the_others() {
    let events = log();
    let queue = TaskQueue::new();
    let (q, e) = (queue.clone(), events.clone());
    queue.add_task(
        move || {
            push(&e, "1");
            // Queued from inside a running task: an async and a sync one.
            let e2 = e.clone();
            q.add_task(move || async move { push(&e2, "3 (added by 1)") }, ());
            let e3 = e.clone();
            q.add_task(move || push(&e3, "4 (added by 1)"), ());
        },
        (),
    );
    let e = events.clone();
    queue.add_task(move || async move { push(&e, "2") }, ());

    let report = queue.drain().await;
    assert_eq!(report.completed(), 4);
    assert_eq!(
        lines(&events),
        ["1", "2", "3 (added by 1)", "4 (added by 1)"]
    );
    assert!(queue.is_empty());
}

/// Two drains of clones of one queue, started together: tasks never
/// overlap, each runs once, and the two reports add up to the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_drains_of_one_queue_never_overlap_or_repeat() {
    let active = Arc::new(AtomicUsize::new(0));
    let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..40).map(|_| AtomicUsize::new(0)).collect());
    let overlaps = Arc::new(AtomicUsize::new(0));
    let queue = TaskQueue::new();
    for id in 0..40_usize {
        let (active, runs, overlaps) = (active.clone(), runs.clone(), overlaps.clone());
        if id % 2 == 0 {
            queue.add_task(
                move || async move {
                    if active.fetch_add(1, SeqCst) != 0 {
                        overlaps.fetch_add(1, SeqCst);
                    }
                    runs[id].fetch_add(1, SeqCst);
                    tokio::task::yield_now().await;
                    active.fetch_sub(1, SeqCst);
                },
                (),
            );
        } else {
            queue.add_task(
                move || {
                    if active.fetch_add(1, SeqCst) != 0 {
                        overlaps.fetch_add(1, SeqCst);
                    }
                    runs[id].fetch_add(1, SeqCst);
                    std::thread::yield_now();
                    active.fetch_sub(1, SeqCst);
                },
                (),
            );
        }
    }
    let (a, b) = (queue.clone(), queue.clone());
    let runner = Runner::new();
    let (first, second, third) = tokio::join!(
        tokio::spawn(async move { a.drain().await }),
        tokio::spawn(async move { b.drain().await }),
        runner.spawn(queue.clone()),
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(
        overlaps.load(SeqCst),
        0,
        "two tasks of one queue overlapped"
    );
    for (id, count) in runs.iter().enumerate() {
        assert_eq!(count.load(SeqCst), 1, "task {id} ran {count:?} times");
    }
    assert_eq!(
        first.completed() + second.completed() + third.completed(),
        40
    );
}

#[tokio::test]
async fn errors_and_panics_are_isolated_and_counted_under_continue() {
    let events = log();
    let queue = TaskQueue::new();
    let e = events.clone();
    queue.add_task(
        move || -> Result<(), String> {
            push(&e, "sync err");
            Err("smtp unreachable".into())
        },
        (),
    );
    let e = events.clone();
    queue.add_task(
        move || -> () {
            push(&e, "sync panic");
            panic!("sync task bug");
        },
        (),
    );
    let e = events.clone();
    queue.add_task(
        move || async move {
            push(&e, "async err");
            Err::<(), _>(std::io::Error::other("webhook 500"))
        },
        (),
    );
    let e = events.clone();
    queue.add_task(
        move || async move {
            push(&e, "async panic");
            tokio::task::yield_now().await;
            boom("async task bug");
        },
        (),
    );
    let e = events.clone();
    queue.add_task(move || push(&e, "still runs"), ());

    let report = queue.drain().await;
    assert_eq!(report.failed(), 2);
    assert_eq!(report.panicked(), 2);
    assert_eq!(report.completed(), 1);
    assert_eq!(report.skipped(), 0);
    assert_eq!(report.total(), 5);
    assert_eq!(
        lines(&events),
        [
            "sync err",
            "sync panic",
            "async err",
            "async panic",
            "still runs"
        ]
    );
}

async fn stop_queue_after(first: &'static str) -> (afterward::DrainReport, Vec<String>) {
    let runner = Runner::builder()
        .failure_policy(FailurePolicy::StopQueue)
        .build();
    let events = log();
    let queue = TaskQueue::new();
    let e = events.clone();
    queue.add_task(move || push(&e, "before"), ());
    let e = events.clone();
    match first {
        "sync panic" => queue.add_task(
            move || -> () {
                push(&e, first);
                panic!("boom")
            },
            (),
        ),
        "async panic" => queue.add_task(
            move || async move {
                push(&e, first);
                boom("boom");
            },
            (),
        ),
        "sync err" => queue.add_task(
            move || {
                push(&e, first);
                Err::<(), _>("nope")
            },
            (),
        ),
        _ => queue.add_task(
            move || async move {
                push(&e, first);
                Err::<(), _>("nope")
            },
            (),
        ),
    };
    for n in 0..3 {
        let e = events.clone();
        if n % 2 == 0 {
            queue.add_task(move || push(&e, "after"), ());
        } else {
            queue.add_task(move || async move { push(&e, "after") }, ());
        }
    }
    let report = runner.spawn(queue).await;
    let stats = runner.stats();
    assert_eq!(stats.skipped(), 3);
    assert_eq!(stats.tasks_received(), stats.accounted());
    (report, lines(&events))
}

#[tokio::test]
async fn stop_queue_skips_the_rest_after_any_kind_of_failure() {
    for first in ["sync panic", "async panic", "sync err", "async err"] {
        let (report, events) = stop_queue_after(first).await;
        assert_eq!(events, ["before", first], "{first}");
        assert_eq!(report.completed(), 1, "{first}");
        assert_eq!(report.failed() + report.panicked(), 1, "{first}");
        assert_eq!(report.skipped(), 3, "{first}");
        assert_eq!(report.total(), 5, "{first}");
    }
}

#[tokio::test]
async fn a_drain_can_be_reused_after_failures_and_the_queue_stays_usable() {
    let runner = Runner::builder()
        .failure_policy(FailurePolicy::StopQueue)
        .build();
    let queue = TaskQueue::new();
    queue.add_task(|| Err::<(), _>("first drain fails"), ());
    queue.add_task(|| (), ());
    let first = runner.spawn(queue.clone()).await;
    assert_eq!((first.failed(), first.skipped()), (1, 1));

    // A task added later runs in a new drain of the same queue, which
    // starts afresh: the earlier failure does not stop it.
    queue.add_task(|| (), ());
    runner.wait_idle().await;
    let stats = runner.stats();
    assert_eq!(
        (stats.failed(), stats.skipped(), stats.completed()),
        (1, 1, 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn an_empty_queue_drains_to_an_empty_report() {
    let report = TaskQueue::new().drain().await;
    assert_eq!(report, afterward::DrainReport::default());
    assert_eq!(report.total(), 0);
}

/// Dropping a `drain()` future mid-task abandons only the task in flight;
/// the rest stay queued for the next drain.
#[tokio::test]
async fn a_cancelled_direct_drain_keeps_the_tasks_it_did_not_start() {
    let events = log();
    let queue = TaskQueue::new();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let e = events.clone();
    queue.add_task(
        move || async move {
            push(&e, "long started");
            started_tx.send(()).unwrap();
            std::future::pending::<()>().await;
        },
        (),
    );
    let e = events.clone();
    queue.add_task(move || push(&e, "next"), ());

    let drain = queue.drain();
    tokio::select! {
        _ = drain => panic!("the drain cannot finish"),
        _ = started_rx => {}
    }
    assert_eq!(queue.len(), 1);
    let report = queue.drain().await;
    assert_eq!(report.completed(), 1);
    assert_eq!(lines(&events), ["long started", "next"]);
}

/// Panics, but is typed `()`: a closure whose body only panics would be
/// typed `!`, which is not a task result.
fn boom(message: &str) {
    panic!("{message}");
}

/// The same with a sync task in flight: it cannot be stopped, but once the
/// drain is dropped it must not go on to the next task. That task stays
/// queued, and the next drain (which waits for the running one) runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_direct_drain_does_not_start_another_sync_task() {
    let events = log();
    let queue = TaskQueue::new();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let e = events.clone();
    queue.add_task(
        move || {
            started_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            push(&e, "in flight when cancelled");
        },
        (),
    );
    let e = events.clone();
    queue.add_task(move || push(&e, "next"), ());

    let drain = queue.drain();
    tokio::select! {
        _ = drain => panic!("the drain cannot finish"),
        _ = started_rx => {}
    }
    release_tx.send(()).unwrap();
    let report = queue.drain().await;
    assert_eq!(
        report.completed(),
        1,
        "the next task ran in the cancelled drain"
    );
    assert_eq!(lines(&events), ["in flight when cancelled", "next"]);
}
