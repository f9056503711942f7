//! `Runner`: background drains, timeouts, the concurrency limit, spawning
//! from `Drop`, runtime teardown, graceful shutdown and `Stats`.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use afterward::{Runner, Stats, TaskQueue};
use tokio::sync::{Semaphore, mpsc, oneshot};

fn assert_conserved(stats: &Stats) {
    assert_eq!(
        stats.tasks_received(),
        stats.accounted(),
        "conservation broken: {stats:?}"
    );
}

#[tokio::test]
async fn spawn_returns_at_once_and_the_handle_yields_the_report() {
    let runner = Runner::new();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let queue = TaskQueue::new();
    queue.add_task(
        move || async move {
            release_rx.await.unwrap();
        },
        (),
    );
    queue.add_task(|| Err::<(), _>("expected failure"), ());
    let handle = runner.spawn(queue);
    // `spawn` did not wait for the task, which is still blocked.
    release_tx.send(()).unwrap();
    let report = handle.await;
    assert_eq!((report.completed(), report.failed()), (1, 1));
    let stats = runner.stats();
    assert_eq!(
        (stats.tasks_received(), stats.completed(), stats.failed()),
        (2, 1, 1)
    );
    assert_eq!((stats.drains_running(), stats.drains_waiting()), (0, 0));
}

#[tokio::test]
async fn dropping_the_drain_handle_does_not_cancel_the_drain() {
    let runner = Runner::new();
    let (tx, rx) = oneshot::channel();
    let queue = TaskQueue::new();
    queue.add_task(
        move || async move {
            tokio::task::yield_now().await;
            tx.send("ran").unwrap();
        },
        (),
    );
    drop(runner.spawn(queue));
    assert_eq!(rx.await.unwrap(), "ran");
    runner.wait_idle().await;
    assert_eq!(runner.stats().completed(), 1);
}

#[tokio::test]
async fn an_async_task_is_cancelled_at_the_timeout_and_the_next_one_runs() {
    let runner = Runner::builder()
        .task_timeout(Duration::from_millis(50))
        .build();
    let dropped = Arc::new(AtomicUsize::new(0));
    struct CountDrop(Arc<AtomicUsize>);
    impl Drop for CountDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }
    let guard = CountDrop(dropped.clone());
    let queue = TaskQueue::new();
    queue.add_task(
        move || async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        },
        (),
    );
    let (tx, rx) = oneshot::channel();
    queue.add_task(move || tx.send(()).unwrap(), ());
    let report = runner.spawn(queue).await;
    assert_eq!((report.timed_out(), report.completed()), (1, 1));
    assert_eq!(
        dropped.load(SeqCst),
        1,
        "the timed-out future was not dropped"
    );
    rx.await.unwrap();
    assert_eq!(runner.stats().timed_out(), 1);
}

/// A sync task cannot be interrupted: it runs to its end, the next task
/// starts only after it, and it is counted `timed_out` when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_task_that_overruns_is_never_abandoned_mid_run() {
    let runner = Runner::builder()
        .task_timeout(Duration::from_millis(20))
        .build();
    let events = Arc::new(Mutex::new(Vec::new()));
    let queue = TaskQueue::new();
    let e = events.clone();
    queue.add_task(
        move || {
            e.lock().unwrap().push("slow start");
            std::thread::sleep(Duration::from_millis(120));
            e.lock().unwrap().push("slow end");
        },
        (),
    );
    let e = events.clone();
    queue.add_task(move || e.lock().unwrap().push("next"), ());
    let report = runner.spawn(queue).await;
    assert_eq!((report.timed_out(), report.completed()), (1, 1));
    assert_eq!(*events.lock().unwrap(), ["slow start", "slow end", "next"]);
}

/// Ten queues under `max_concurrent_drains(2)`: each task reports its start
/// and then waits at a gate the test opens one permit at a time, so the
/// limit is seen at the moment it matters, without timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_concurrent_drains_run_and_all_finish() {
    let runner = Runner::builder().max_concurrent_drains(2).build();
    let gate = Arc::new(Semaphore::new(0));
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<usize>();
    let mut handles = Vec::new();
    for id in 0..10 {
        let queue = TaskQueue::new();
        let (gate, active, peak, started) = (
            gate.clone(),
            active.clone(),
            peak.clone(),
            started_tx.clone(),
        );
        queue.add_task(
            move || async move {
                let now = active.fetch_add(1, SeqCst) + 1;
                peak.fetch_max(now, SeqCst);
                started.send(id).unwrap();
                gate.acquire().await.unwrap().forget();
                active.fetch_sub(1, SeqCst);
            },
            (),
        );
        handles.push(runner.spawn(queue));
    }
    drop(started_tx);

    started_rx.recv().await.unwrap();
    started_rx.recv().await.unwrap();
    // Two drains hold both slots and are parked at the gate: the other eight
    // can only be waiting.
    let stats = runner.stats();
    assert_eq!((stats.drains_running(), stats.drains_waiting()), (2, 8));
    for _ in 0..8 {
        gate.add_permits(1);
        started_rx.recv().await.unwrap();
        assert!(runner.stats().drains_running() <= 2);
    }
    gate.add_permits(2);
    for handle in handles {
        assert_eq!(handle.await.completed(), 1);
    }
    assert_eq!(peak.load(SeqCst), 2);
    assert_eq!(runner.stats().completed(), 10);
}

/// The runner keeps its runtime's handle, so a queue handed over from a
/// `Drop` impl on a thread outside the runtime still runs there.
#[tokio::test]
async fn spawn_from_a_drop_on_a_foreign_thread_runs_on_the_runner_runtime() {
    struct SpawnOnDrop {
        runner: Runner,
        queue: Option<TaskQueue>,
    }
    impl Drop for SpawnOnDrop {
        fn drop(&mut self) {
            if let Some(queue) = self.queue.take() {
                self.runner.spawn(queue);
            }
        }
    }
    let runner = Runner::new();
    let (tx, rx) = oneshot::channel();
    let queue = TaskQueue::new();
    queue.add_task(
        move || async move {
            // An async task needs a runtime; this one has the runner's.
            tokio::task::yield_now().await;
            tx.send(tokio::runtime::Handle::current().id()).unwrap();
        },
        (),
    );
    let guard = SpawnOnDrop {
        runner: runner.clone(),
        queue: Some(queue),
    };
    std::thread::spawn(move || drop(guard)).join().unwrap();
    assert_eq!(rx.await.unwrap(), tokio::runtime::Handle::current().id());
    runner.wait_idle().await;
    assert_eq!(runner.stats().completed(), 1);
}

#[test]
fn a_runner_can_be_built_outside_a_runtime_with_a_handle() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runner = Runner::builder().handle(runtime.handle().clone()).build();
    let queue = TaskQueue::new();
    queue.add_task(|| (), ());
    let handle = runner.spawn(queue);
    assert_eq!(runtime.block_on(handle).completed(), 1);
}

#[test]
#[should_panic(expected = "must be built inside a tokio runtime")]
fn building_outside_a_runtime_without_a_handle_says_why() {
    let _ = Runner::new();
}

#[test]
#[should_panic(expected = "max_concurrent_drains must be at least 1")]
fn a_concurrency_limit_of_zero_is_refused() {
    let _ = Runner::builder().max_concurrent_drains(0);
}

#[test]
#[should_panic(expected = "task_timeout must be greater than zero")]
fn a_zero_timeout_is_refused() {
    let _ = Runner::builder().task_timeout(Duration::ZERO);
}

/// When the runtime goes away, drains in progress are dropped mid-task and
/// counted `abandoned`; queues spawned afterwards cannot start and are
/// counted `rejected`.
#[test]
fn runtime_shutdown_abandons_and_counts_instead_of_losing_tasks() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let runner = Runner::builder().handle(runtime.handle().clone()).build();
    let ran = Arc::new(AtomicUsize::new(0));

    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let queue = TaskQueue::new();
    queue.add_task(
        move || async move {
            started_tx.send(()).unwrap();
            std::future::pending::<()>().await;
        },
        (),
    );
    let r = ran.clone();
    queue.add_task(
        move || {
            r.fetch_add(1, SeqCst);
        },
        (),
    );
    let in_progress = runner.spawn(queue);
    started_rx.recv().unwrap();

    drop(runtime);
    let stats = runner.stats();
    assert_eq!(stats.abandoned(), 2, "{stats:?}");
    assert_conserved(&stats);

    // Spawning onto the dead runtime: refused, counted and logged at once.
    let late = TaskQueue::new();
    let r = ran.clone();
    late.add_task(
        move || {
            r.fetch_add(1, SeqCst);
        },
        (),
    );
    let late = runner.spawn(late);

    let other = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(other.block_on(in_progress).abandoned(), 2);
    assert_eq!(other.block_on(late).rejected(), 1);
    assert_eq!(ran.load(SeqCst), 0);
    let stats = runner.stats();
    assert_eq!(
        (stats.tasks_received(), stats.abandoned(), stats.rejected()),
        (3, 2, 1)
    );
    assert_conserved(&stats);
}

/// Handing an empty queue to a second runner changes nothing: the runner
/// that has it keeps it, and runs what is added later.
#[tokio::test]
async fn an_empty_queue_handed_to_another_runner_stays_with_its_runner() {
    let (first, second) = (Runner::new(), Runner::new());
    let queue = TaskQueue::new();
    queue.add_task(quick_sync, ());
    assert_eq!(first.spawn(queue.clone()).await.completed(), 1);
    assert_eq!(second.spawn(queue.clone()).await.total(), 0);

    let (tx, rx) = oneshot::channel();
    queue.add_task(move || tx.send(()).unwrap(), ());
    rx.await.unwrap();
    first.wait_idle().await;
    assert_eq!(first.stats().completed(), 2);
    assert_eq!(second.stats().tasks_received(), 0);
}

async fn sleep_forever() {
    std::future::pending::<()>().await;
}

fn quick_sync() {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_quick_work_then_abandons_and_names_the_rest() {
    let runner = Runner::builder().max_concurrent_drains(1).build();
    let (started_tx, started_rx) = oneshot::channel();

    let stuck = TaskQueue::new();
    stuck.add_task(
        move || async move {
            started_tx.send(()).unwrap();
            sleep_forever().await;
        },
        (),
    );
    stuck.add_task(quick_sync, ());
    let stuck = runner.spawn(stuck);
    started_rx.await.unwrap();

    // Waits behind the stuck drain for the only slot.
    let waiting = TaskQueue::new();
    waiting.add_task(sleep_forever, ());
    let waiting = runner.spawn(waiting);
    assert_eq!(runner.stats().drains_waiting(), 1);

    let report = runner.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.abandoned(), 3);
    let mut names = report.abandoned_tasks().to_vec();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "quick_sync",
            "shutdown_waits_for_quick_work_then_abandons_and_names_the_rest::{{closure}}::{{closure}}",
            "sleep_forever"
        ]
    );
    assert_eq!(stuck.await.abandoned(), 2);
    assert_eq!(waiting.await.abandoned(), 1);

    // After shutdown, nothing new runs; it is refused and counted, and not
    // kept for another report.
    let late = TaskQueue::new();
    late.add_task(quick_sync, ());
    assert_eq!(runner.spawn(late).await.rejected(), 1);
    let stats = runner.stats();
    assert_eq!(
        (stats.tasks_received(), stats.abandoned(), stats.rejected()),
        (4, 3, 1)
    );
    assert_conserved(&stats);
    assert_eq!(runner.shutdown(Duration::ZERO).await.abandoned(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_work_that_fits_the_deadline_finish() {
    let runner = Runner::new();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let queue = TaskQueue::new();
    queue.add_task(
        move || async move {
            release_rx.await.unwrap();
        },
        (),
    );
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    queue.add_task(
        move || {
            d.fetch_add(1, SeqCst);
        },
        (),
    );
    runner.spawn(queue);

    let shutdown = tokio::spawn({
        let runner = runner.clone();
        async move { runner.shutdown(Duration::from_secs(30)).await }
    });
    release_tx.send(()).unwrap();
    let report = shutdown.await.unwrap();
    assert_eq!(report.abandoned(), 0);
    assert_eq!(done.load(SeqCst), 1);
    assert_eq!(runner.stats().completed(), 2);
}

/// A sync task running when the deadline passes cannot be stopped. It is
/// counted `abandoned` at once; when it returns later it is not counted
/// again, and the task after it never starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_task_running_at_the_deadline_is_counted_once() {
    let runner = Runner::new();
    let (started_tx, started_rx) = oneshot::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (finished_tx, finished_rx) = oneshot::channel();
    let queue = TaskQueue::new();
    queue.add_task(
        move || {
            started_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            finished_tx.send(()).unwrap();
        },
        (),
    );
    let after = Arc::new(AtomicUsize::new(0));
    let a = after.clone();
    queue.add_task(
        move || {
            a.fetch_add(1, SeqCst);
        },
        (),
    );
    let handle = runner.spawn(queue);
    started_rx.await.unwrap();

    let report = runner.shutdown(Duration::from_millis(20)).await;
    assert_eq!(report.abandoned(), 2);
    release_tx.send(()).unwrap();
    finished_rx.await.unwrap();
    assert_eq!(handle.await.abandoned(), 2);

    let stats = runner.stats();
    assert_eq!(
        (stats.tasks_received(), stats.abandoned(), stats.completed()),
        (2, 2, 0)
    );
    assert_eq!(after.load(SeqCst), 0);
}

#[tokio::test]
async fn wait_idle_returns_at_once_when_idle_and_debug_shows_settings() {
    let runner = Runner::builder()
        .max_concurrent_drains(4)
        .task_timeout(Duration::from_secs(1))
        .build();
    runner.wait_idle().await;
    let debug = format!("{runner:?}");
    assert!(debug.contains("max_concurrent_drains: 4"), "{debug}");
    assert!(debug.contains("max_backlog: 10000"), "{debug}");
    assert!(debug.contains("task_timeout: Some(1s)"), "{debug}");
    assert_eq!(runner.spawn(TaskQueue::new()).await.total(), 0);
    assert_eq!(runner.stats(), Stats::default());
}

/// The handles are what DESIGN.md promises: shareable across threads and
/// storable anywhere (request extensions need `Clone + Send + Sync + 'static`).
#[test]
fn handles_are_send_sync_and_static() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    fn sendable<T: Send + Sync + Unpin + 'static>() {}
    shareable::<TaskQueue>();
    shareable::<Runner>();
    shareable::<afterward::DrainReport>();
    shareable::<Stats>();
    shareable::<afterward::ShutdownReport>();
    sendable::<afterward::DrainHandle>();
    let _: TaskQueue = Default::default();
    let _: afterward::DrainReport = Default::default();
}

#[tokio::test]
async fn skip_counts_and_never_runs() {
    let runner = Runner::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let queue = TaskQueue::new();
    for _ in 0..3 {
        let r = ran.clone();
        queue.add_task(
            move || {
                r.fetch_add(1, SeqCst);
            },
            (),
        );
    }
    let report = runner.skip(queue.clone(), "client went away");
    assert_eq!((report.skipped(), report.total()), (3, 3));
    assert!(queue.is_empty());
    assert_eq!(runner.spawn(queue).await.total(), 0);
    assert_eq!(ran.load(SeqCst), 0);
    let stats = runner.stats();
    assert_eq!((stats.tasks_received(), stats.skipped()), (3, 3));
    assert_conserved(&stats);
}

/// A runner leaves no task behind on its runtime once it and its work are
/// gone: a server that builds a runner per test, or per tenant, must not
/// leak.
#[tokio::test]
async fn a_dropped_runner_leaves_no_task_on_the_runtime() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    for _ in 0..20 {
        let runner = Runner::new();
        let queue = TaskQueue::new();
        queue.add_task(|| (), ());
        queue.add_task(|| async {}, ());
        assert_eq!(runner.spawn(queue).await.completed(), 2);
        drop(runner);
    }
    // Tasks ended by the drop finish on their next poll: give them turns,
    // as many as it takes, then check.
    for _ in 0..10_000 {
        if metrics.num_alive_tasks() == before {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(metrics.num_alive_tasks(), before, "tasks left behind");
}

/// A long drain of tasks that never wait does not hold its thread: other
/// tasks of the runtime get turns while it runs.
#[tokio::test]
async fn a_long_drain_of_tasks_that_never_wait_lets_other_tasks_run() {
    const TASKS: usize = 10_000;
    let runner = Runner::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let queue = TaskQueue::new();
    for _ in 0..TASKS {
        let ran = ran.clone();
        queue.add_task(
            move || async move {
                ran.fetch_add(1, SeqCst);
            },
            (),
        );
    }
    let drain = runner.spawn(queue);
    // Spawned after the drain's worker, on this one-thread runtime: it runs
    // when the drain first yields.
    let seen = tokio::spawn({
        let ran = ran.clone();
        async move { ran.load(SeqCst) }
    });
    assert_eq!(drain.await.completed(), TASKS);
    let seen = seen.await.unwrap();
    assert!(
        seen < TASKS,
        "the drain ran all {TASKS} tasks without a break"
    );
}
