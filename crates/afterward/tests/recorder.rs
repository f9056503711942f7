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
