//! `Recorder`: queues are kept, not run, until the test runs them.
#![cfg(feature = "test-util")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use afterward::{Recorder, Runner, TaskQueue};

#[tokio::test]
async fn kept_queues_run_in_hand_off_order_only_when_asked() {
    let recorder = Recorder::new();
    let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
    for request in 0..2 {
        let queue = TaskQueue::new();
        for step in ["a", "b"] {
            let ran = ran.clone();
            queue
                .add_task(
                    move || ran.lock().unwrap().push(format!("{request}{step}")),
                    (),
                )
                .name(format!("{request}{step}"));
        }
        recorder.runner().spawn(queue);
    }
    assert_eq!(recorder.queue_count(), 2);
    assert_eq!(recorder.queued(), ["0a", "0b", "1a", "1b"]);
    // Kept queues are received but have not run.
    let stats = recorder.runner().stats();
    assert_eq!((stats.tasks_received(), stats.completed()), (4, 0));
    assert!(ran.lock().unwrap().is_empty());

    let report = recorder.run().await;
    assert_eq!(report.completed(), 4);
    assert_eq!(*ran.lock().unwrap(), ["0a", "0b", "1a", "1b"]);
    assert_eq!(recorder.queue_count(), 0);
    let stats = recorder.runner().stats();
    assert_eq!(stats.completed(), 4);
    assert_eq!(stats.tasks_received(), stats.accounted());
}

#[tokio::test]
async fn the_handle_of_a_kept_queue_resolves_when_it_is_run() {
    let recorder = Recorder::new();
    let queue = TaskQueue::new();
    queue.add_task(|| Err::<(), _>("no"), ());
    let handle = recorder.runner().spawn(queue);
    let run = recorder.run();
    let (report, total) = tokio::join!(handle, run);
    assert_eq!(report.failed(), 1);
    assert_eq!(total, report);
}

#[tokio::test]
async fn the_settings_apply_when_kept_queues_run() {
    let recorder = Runner::builder()
        .task_timeout(Duration::from_millis(20))
        .build_recorder();
    let queue = TaskQueue::new();
    queue.add_task(std::future::pending::<()>, ());
    queue.add_task(|| (), ());
    recorder.runner().spawn(queue);
    let report = recorder.run().await;
    assert_eq!((report.timed_out(), report.completed()), (1, 1));
}

#[tokio::test]
async fn shutdown_abandons_and_names_the_queues_never_run() {
    let recorder = Recorder::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let queue = TaskQueue::new();
    let counter = ran.clone();
    queue
        .add_task(
            move || {
                counter.fetch_add(1, SeqCst);
            },
            (),
        )
        .name("send_welcome_email");
    recorder.runner().spawn(queue);

    let report = recorder.runner().shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.abandoned_tasks(), ["send_welcome_email"]);
    assert_eq!(recorder.runner().stats().abandoned(), 1);
    assert_eq!(recorder.queue_count(), 0);
    assert_eq!(recorder.run().await.total(), 0);
    assert_eq!(ran.load(SeqCst), 0);
}

/// A recorded queue being run is work in progress: a shutdown waits for it
/// until its deadline, then cancels it and names every task left, the one
/// running included; nothing of it runs after the shutdown returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_and_names_a_recorded_queue_being_run() {
    let recorder = Recorder::new();
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let ran_after = Arc::new(AtomicUsize::new(0));
    let queue = TaskQueue::new();
    queue
        .add_task(
            move || async move {
                let _ = started_tx.send(());
                // Ends only by being cancelled.
                std::future::pending::<()>().await;
            },
            (),
        )
        .name("stuck");
    for name in ["second", "third", "fourth"] {
        let ran_after = ran_after.clone();
        queue
            .add_task(
                move || {
                    ran_after.fetch_add(1, SeqCst);
                },
                (),
            )
            .name(name);
    }
    // A second queue, kept and not started when the shutdown comes.
    let later = TaskQueue::new();
    later.add_task(|| (), ()).name("later");
    recorder.runner().spawn(queue);
    recorder.runner().spawn(later);

    let running = tokio::spawn({
        let recorder = recorder.clone();
        async move { recorder.run().await }
    });
    started.await.unwrap();
    let report = recorder.runner().shutdown(Duration::from_millis(100)).await;
    let mut abandoned = report.abandoned_tasks().to_vec();
    abandoned.sort();
    assert_eq!(abandoned, ["fourth", "later", "second", "stuck", "third"]);
    let drained = running.await.unwrap();
    assert_eq!(drained.abandoned(), 4);
    assert_eq!(ran_after.load(SeqCst), 0);
    let stats = recorder.runner().stats();
    assert_eq!((stats.tasks_received(), stats.abandoned()), (5, 5));
    assert_eq!(stats.tasks_received(), stats.accounted());
}
