//! Under a flood: the backlog cap, the finite defaults, and `Runner::capacity`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use afterward::{Runner, Stats, TaskQueue};
use tokio::sync::{Semaphore, mpsc};

fn assert_conserved(stats: &Stats) {
    assert_eq!(
        stats.tasks_received(),
        stats.accounted(),
        "conservation broken: {stats:?}"
    );
}

/// A runner whose only drain slot is held by a task waiting at `gate`, once
/// the returned receiver has said so.
async fn blocked_runner(max_backlog: usize) -> (Runner, Arc<Semaphore>) {
    let runner = Runner::builder()
        .max_concurrent_drains(1)
        .max_backlog(max_backlog)
        .build();
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let queue = TaskQueue::new();
    let g = gate.clone();
    queue.add_task(
        move || async move {
            started_tx.send(()).unwrap();
            let _ = g.acquire().await.unwrap();
        },
        (),
    );
    runner.spawn(queue);
    started.recv().await.unwrap();
    (runner, gate)
}

fn send_receipt() {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_past_the_backlog_are_rejected_whole_and_the_rest_run() {
    let (runner, gate) = blocked_runner(5).await;
    let mut handles = Vec::new();
    // Two tasks a queue: 2 + 2 fit in 5; a third queue would make 6.
    for _ in 0..3 {
        let queue = TaskQueue::new();
        queue.add_task(send_receipt, ());
        queue.add_task(send_receipt, ());
        handles.push(runner.spawn(queue));
    }
    let stats = runner.stats();
    assert_eq!(
        (stats.rejected(), stats.drains_waiting()),
        (2, 2),
        "{stats:?}"
    );
    // A single task still fits.
    let small = TaskQueue::new();
    small.add_task(send_receipt, ());
    handles.push(runner.spawn(small));

    gate.add_permits(1);
    let reports: Vec<_> = futures_join(handles).await;
    assert_eq!(
        reports
            .iter()
            .map(|r| (r.completed(), r.rejected()))
            .collect::<Vec<_>>(),
        [(2, 0), (2, 0), (0, 2), (1, 0)]
    );
    runner.wait_idle().await;
    let stats = runner.stats();
    assert_eq!((stats.completed(), stats.rejected()), (6, 2), "{stats:?}");
    assert_conserved(&stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_added_after_the_hand_off_is_rejected_when_the_backlog_is_full() {
    let (runner, gate) = blocked_runner(2).await;
    let queue = TaskQueue::new();
    queue.add_task(send_receipt, ());
    queue.add_task(send_receipt, ());
    let handle = runner.spawn(queue.clone());
    queue.add_task(send_receipt, ());
    let stats = runner.stats();
    assert_eq!(
        (stats.tasks_received(), stats.rejected()),
        (4, 1),
        "{stats:?}"
    );
    gate.add_permits(1);
    assert_eq!(handle.await.completed(), 2);
    runner.wait_idle().await;
    assert_conserved(&runner.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_waits_while_the_backlog_is_full_and_wakes_every_waiter_when_it_has_room() {
    let (runner, gate) = blocked_runner(2).await;
    let queue = TaskQueue::new();
    queue.add_task(send_receipt, ());
    queue.add_task(send_receipt, ());
    runner.spawn(queue);

    let mut first = tokio_test::task::spawn(runner.capacity());
    let mut second = tokio_test::task::spawn(runner.capacity());
    // A waiter that gives up must not keep the others from being woken.
    let mut dropped = tokio_test::task::spawn(runner.capacity());
    assert!(first.poll().is_pending(), "the backlog is full");
    assert!(second.poll().is_pending(), "the backlog is full");
    assert!(dropped.poll().is_pending(), "the backlog is full");
    drop(dropped);
    gate.add_permits(1);
    runner.wait_idle().await;
    assert!(first.is_woken(), "room was made, but nobody was woken");
    assert!(
        second.is_woken(),
        "room was made, but the second waiter was not woken"
    );
    assert!(first.poll().is_ready());
    assert!(second.poll().is_ready());
    assert!(
        tokio_test::task::spawn(runner.capacity()).poll().is_ready(),
        "room now: ready at once"
    );
    assert_eq!(runner.stats().rejected(), 0);
}

/// The defaults are finite: 64 drains at a time, so a flood of sync tasks
/// never holds more than 64 of tokio's blocking threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_runner_never_runs_more_than_64_sync_tasks_at_once() {
    let runner = Runner::new();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let threads = Arc::new(Mutex::new(HashSet::new()));
    for _ in 0..5_000 {
        let (running, peak, threads) = (running.clone(), peak.clone(), threads.clone());
        let queue = TaskQueue::new();
        queue.add_task(
            move || {
                let now = running.fetch_add(1, SeqCst) + 1;
                peak.fetch_max(now, SeqCst);
                threads.lock().unwrap().insert(std::thread::current().id());
                std::thread::sleep(Duration::from_millis(10));
                running.fetch_sub(1, SeqCst);
            },
            (),
        );
        runner.spawn(queue);
    }
    runner.wait_idle().await;
    let stats = runner.stats();
    assert_eq!(
        (stats.completed(), stats.rejected()),
        (5_000, 0),
        "{stats:?}"
    );
    assert!(peak.load(SeqCst) <= 64, "{} at once", peak.load(SeqCst));
    let threads = threads.lock().unwrap().len();
    assert!(threads <= 64, "{threads} blocking threads");
}

/// ... and keeps at most 10,000 tasks waiting: with its 64 drain slots
/// held, the 10,000 queues after them are kept and the next is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_runner_keeps_at_most_10_000_waiting_tasks() {
    let runner = Runner::new();
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    for _ in 0..64 {
        let (g, s) = (gate.clone(), started_tx.clone());
        let queue = TaskQueue::new();
        queue.add_task(
            move || async move {
                s.send(()).unwrap();
                let _ = g.acquire().await.unwrap();
            },
            (),
        );
        runner.spawn(queue);
    }
    for _ in 0..64 {
        started.recv().await.unwrap();
    }
    for _ in 0..10_001 {
        let queue = TaskQueue::new();
        queue.add_task(send_receipt, ());
        runner.spawn(queue);
    }
    let stats = runner.stats();
    assert_eq!(
        (
            stats.drains_running(),
            stats.drains_waiting(),
            stats.rejected()
        ),
        (64, 10_000, 1),
        "{stats:?}"
    );
    gate.add_permits(64);
    runner.wait_idle().await;
    let stats = runner.stats();
    assert_eq!(stats.completed(), 10_064, "{stats:?}");
    assert_conserved(&stats);
}

/// Awaits the handles in order.
async fn futures_join(handles: Vec<afterward::DrainHandle>) -> Vec<afterward::DrainReport> {
    let mut reports = Vec::new();
    for handle in handles {
        reports.push(handle.await);
    }
    reports
}
