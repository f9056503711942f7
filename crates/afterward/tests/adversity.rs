//! User code that fights back: destructors and panic payloads that panic,
//! tasks added after their queue was handed off, and the counters read at
//! the moment a shutdown returns. None of it may lose a task, count one
//! twice, or take anything down.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use afterward::{FailurePolicy, Runner, Stats, TaskQueue};
use tokio::sync::oneshot;

fn assert_conserved(stats: &Stats) {
    assert_eq!(
        stats.tasks_received(),
        stats.accounted(),
        "conservation broken: {stats:?}"
    );
}

/// These tests panic on purpose, many times; only other panics (a failed
/// assertion) are printed.
fn quiet_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or_default();
            let on_purpose = payload.is::<PayloadThatPanicsWhenDropped>()
                || message.contains("on purpose")
                // What tokio says when a runtime is dropped on a worker.
                || message.contains("Cannot drop a runtime");
            if !on_purpose {
                default_hook(info);
            }
        }));
    });
}

/// Panics when dropped (but not while the thread is already unwinding,
/// where a second panic would abort the process, as it would in user code).
struct PanicOnDrop(&'static str);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("{}, on purpose", self.0);
        }
    }
}

/// A panic payload whose own destructor panics.
struct PayloadThatPanicsWhenDropped;

impl Drop for PayloadThatPanicsWhenDropped {
    fn drop(&mut self) {
        panic!("the panic payload panicked while it was dropped, on purpose");
    }
}

fn panic_with_a_nasty_payload() {
    std::panic::panic_any(PayloadThatPanicsWhenDropped);
}

fn counting_task(counter: Arc<AtomicUsize>) {
    counter.fetch_add(1, SeqCst);
}

// ===== destructors that panic =====

/// A task that holds a tokio runtime across an `.await` (as blocking HTTP
/// clients do) panics when its future is dropped on a worker thread. At the
/// timeout that drop must be guarded like any other panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_task_whose_drop_panics_is_counted_timed_out_and_the_queue_goes_on() {
    quiet_panics();
    let runner = Runner::builder()
        .task_timeout(Duration::from_millis(100))
        .build();
    let ran = Arc::new(AtomicUsize::new(0));
    let queue = TaskQueue::new();
    queue.add_task(
        || async {
            let blocking_client_runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            std::future::pending::<()>().await;
            drop(blocking_client_runtime);
        },
        (),
    );
    queue.add_task(counting_task, (ran.clone(),));
    let r = ran.clone();
    queue.add_task(move || async move { counting_task(r) }, ());

    let report = runner.spawn(queue).await;
    assert_eq!(
        (report.timed_out(), report.completed(), report.total()),
        (1, 2, 3),
        "{report:?}"
    );
    assert_eq!(ran.load(SeqCst), 2);
    let shutdown = runner.shutdown(Duration::from_secs(5)).await;
    assert_eq!(shutdown.abandoned_tasks().len(), 0, "{shutdown:?}");
    let stats = runner.stats();
    assert_eq!((stats.timed_out(), stats.completed()), (1, 2), "{stats:?}");
    assert_conserved(&stats);
}

/// The same drop, at a shutdown's deadline instead of a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cancelled_at_shutdown_whose_drop_panics_is_abandoned_and_named() {
    quiet_panics();
    let runner = Runner::new();
    let (started_tx, started_rx) = oneshot::channel();
    let queue = TaskQueue::new();
    queue.add_task(
        move |guard: PanicOnDrop| async move {
            let _guard = guard;
            started_tx.send(()).unwrap();
            std::future::pending::<()>().await;
        },
        (PanicOnDrop("cancelled at the deadline"),),
    );
    queue.add_task(|_guard: PanicOnDrop| (), (PanicOnDrop("never started"),));
    let handle = runner.spawn(queue);
    started_rx.await.unwrap();

    let report = runner.shutdown(Duration::from_millis(20)).await;
    assert_eq!(report.abandoned(), 2, "{report:?}");
    assert_eq!(handle.await.abandoned(), 2);
    let stats = runner.stats();
    assert_eq!(stats.abandoned(), 2, "{stats:?}");
    assert_conserved(&stats);
}

/// Skipped tasks, tasks of a skipped queue, and tasks of a queue dropped
/// unrun are dropped by the library; their destructors may panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_that_never_run_may_panic_when_dropped() {
    quiet_panics();
    let runner = Runner::builder()
        .failure_policy(FailurePolicy::StopQueue)
        .build();
    let queue = TaskQueue::new();
    queue.add_task(|| Err::<(), _>("first fails"), ());
    queue.add_task(|_g: PanicOnDrop| (), (PanicOnDrop("skipped, sync"),));
    queue.add_task(|_g: PanicOnDrop| async {}, (PanicOnDrop("skipped, async"),));
    let report = runner.spawn(queue).await;
    assert_eq!((report.failed(), report.skipped()), (1, 2), "{report:?}");

    let queue = TaskQueue::new();
    queue.add_task(|_g: PanicOnDrop| (), (PanicOnDrop("skipped by hand"),));
    assert_eq!(runner.skip(queue, "test").skipped(), 1);

    let queue = TaskQueue::new();
    queue.add_task(|_g: PanicOnDrop| (), (PanicOnDrop("dropped unrun"),));
    drop(queue);

    let stats = runner.stats();
    assert_eq!((stats.failed(), stats.skipped()), (1, 3), "{stats:?}");
    assert_conserved(&stats);
}

/// A future that is ready at once and panics when dropped.
struct ReadyThenPanicOnDrop {
    _guard: PanicOnDrop,
}

impl Future for ReadyThenPanicOnDrop {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::task::Poll::Ready(())
    }
}

/// A finished future is dropped by the drain too: a panic there counts as
/// the task's panic, and the next task still runs.
#[tokio::test]
async fn a_finished_future_that_panics_when_dropped_is_counted_panicked() {
    quiet_panics();
    let runner = Runner::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let queue = TaskQueue::new();
    queue.add_task(
        || ReadyThenPanicOnDrop {
            _guard: PanicOnDrop("finished future"),
        },
        (),
    );
    queue.add_task(counting_task, (ran.clone(),));
    let report = runner.spawn(queue).await;
    assert_eq!(
        (report.panicked(), report.completed()),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(ran.load(SeqCst), 1);
    assert_conserved(&runner.stats());
}

// ===== panic payloads that panic =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_payload_that_panics_when_dropped_is_one_panic_under_a_runner() {
    quiet_panics();
    let runner = Runner::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let queue = TaskQueue::new();
    queue.add_task(panic_with_a_nasty_payload, ());
    queue.add_task(counting_task, (ran.clone(),));
    queue.add_task(
        || async {
            tokio::task::yield_now().await;
            panic_with_a_nasty_payload();
        },
        (),
    );
    queue.add_task(counting_task, (ran.clone(),));
    let report = runner.spawn(queue).await;
    assert_eq!(
        (report.panicked(), report.completed(), report.abandoned()),
        (2, 2, 0),
        "{report:?}"
    );
    assert_eq!(ran.load(SeqCst), 2);
    let stats = runner.stats();
    assert_eq!((stats.panicked(), stats.completed()), (2, 2), "{stats:?}");
    assert_conserved(&stats);
    assert_eq!(runner.shutdown(Duration::from_secs(1)).await.abandoned(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_payload_that_panics_when_dropped_never_reaches_the_caller_of_drain() {
    quiet_panics();
    let ran = Arc::new(AtomicUsize::new(0));
    let queue = TaskQueue::new();
    queue.add_task(panic_with_a_nasty_payload, ());
    queue.add_task(
        || async {
            panic_with_a_nasty_payload();
        },
        (),
    );
    queue.add_task(counting_task, (ran.clone(),));
    let report = queue.drain().await;
    assert_eq!(
        (report.panicked(), report.completed()),
        (2, 1),
        "{report:?}"
    );
    assert_eq!(ran.load(SeqCst), 1);
}

// ===== tasks added after the hand-off =====

/// A handler may give its queue to work that outlives it. A task added
/// after the queue's drain finished runs in a new drain of the same queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_added_after_the_drain_finished_runs_and_is_counted() {
    let runner = Runner::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let queue = TaskQueue::new();
    queue.add_task(counting_task, (ran.clone(),));
    assert_eq!(runner.spawn(queue.clone()).await.completed(), 1);
    runner.wait_idle().await;

    queue.add_task(counting_task, (ran.clone(),));
    runner.wait_idle().await;
    assert_eq!(ran.load(SeqCst), 2);
    let stats = runner.stats();
    assert_eq!(
        (stats.tasks_received(), stats.completed()),
        (2, 2),
        "{stats:?}"
    );
    assert_conserved(&stats);

    // Once the runner has shut down, a late task is refused and counted.
    assert_eq!(runner.shutdown(Duration::from_secs(1)).await.abandoned(), 0);
    queue.add_task(counting_task, (ran.clone(),));
    assert_eq!(ran.load(SeqCst), 2);
    let stats = runner.stats();
    assert_eq!(
        (stats.tasks_received(), stats.rejected()),
        (3, 1),
        "{stats:?}"
    );
    assert_conserved(&stats);
}

/// A late task joins the drain that still has its queue, after the tasks
/// already there, and is counted like them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_added_while_the_drain_runs_joins_it() {
    let runner = Runner::new();
    let (started_tx, started_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let queue = TaskQueue::new();
    let o = order.clone();
    queue.add_task(
        move || async move {
            started_tx.send(()).unwrap();
            release_rx.await.unwrap();
            o.lock().unwrap().push("first");
        },
        (),
    );
    let handle = runner.spawn(queue.clone());
    started_rx.await.unwrap();
    let o = order.clone();
    queue.add_task(move || o.lock().unwrap().push("late"), ());
    release_tx.send(()).unwrap();
    let report = handle.await;
    assert_eq!(report.completed(), 2, "{report:?}");
    assert_eq!(*order.lock().unwrap(), ["first", "late"]);
    assert_conserved(&runner.stats());
}

// ===== what shutdown reports =====

/// Shutdown returns only once every drain it waited for or cancelled has
/// counted what it did: the counters add up at that moment, every time,
/// even when a sync task finishes right at the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_add_up_the_moment_shutdown_returns() {
    let seed = seed();
    println!("seed {seed} (AFTERWARD_SEED replays it)");
    let mut rng = seed;
    for round in 0..400 {
        let runner = Runner::new();
        for _ in 0..4 {
            let queue = TaskQueue::new();
            for _ in 0..3 {
                let micros = next(&mut rng) % 300;
                queue.add_task(
                    move || std::thread::sleep(Duration::from_micros(micros)),
                    (),
                );
            }
            runner.spawn(queue);
        }
        let deadline = Duration::from_micros(next(&mut rng) % 600);
        let report = runner.shutdown(deadline).await;
        let stats = runner.stats();
        assert_eq!(
            stats.tasks_received(),
            stats.accounted(),
            "seed {seed}, round {round}: {stats:?}"
        );
        assert_eq!(
            report.abandoned(),
            stats.abandoned(),
            "seed {seed}, round {round}"
        );
    }
}

/// Queues handed to a runner after its shutdown are refused and logged at
/// once. Their names are not kept for a later report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_handed_off_after_shutdown_are_not_kept() {
    let runner = Runner::new();
    let first = runner.shutdown(Duration::from_millis(10)).await;
    assert_eq!(first.abandoned(), 0);
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..10_000 {
        let queue = TaskQueue::new();
        queue.add_task(counting_task, (ran.clone(),));
        runner.spawn(queue);
    }
    let second = runner.shutdown(Duration::from_millis(10)).await;
    assert_eq!(second.abandoned_tasks().len(), 0, "late names were kept");
    assert_eq!(ran.load(SeqCst), 0);
    let stats = runner.stats();
    assert_eq!(
        (stats.rejected(), stats.abandoned()),
        (10_000, 0),
        "{stats:?}"
    );
    assert_conserved(&stats);
}

fn seed() -> u64 {
    std::env::var("AFTERWARD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

/// xorshift64*.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

// ===== the runner's own code failing =====

/// A task timeout needs the runtime's time driver; without one, tokio
/// panics when the drain starts the timer, outside any task. That drain
/// ends and accounts for its tasks, and the runner goes on with the next.
#[test]
fn a_drain_that_panics_outside_its_tasks_abandons_them_and_the_runner_goes_on() {
    quiet_panics();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let runner = Runner::builder()
        .handle(runtime.handle().clone())
        .task_timeout(Duration::from_secs(1))
        .max_concurrent_drains(1)
        .build();
    let mut handles = Vec::new();
    for _ in 0..2 {
        let queue = TaskQueue::new();
        queue.add_task(|| async {}, ());
        queue.add_task(|| (), ());
        handles.push(runner.spawn(queue));
    }
    for handle in handles {
        let report = runtime.block_on(handle);
        assert_eq!((report.abandoned(), report.total()), (2, 2), "{report:?}");
    }
    runtime.block_on(runner.wait_idle());
    let stats = runner.stats();
    assert_eq!((stats.abandoned(), stats.rejected()), (4, 0), "{stats:?}");
    assert_conserved(&stats);
}

// ===== direct drains and runners =====

/// A direct drain under way when its queue is handed to a runner stops
/// after its current task: the runner counted the rest, and runs them.
#[tokio::test(flavor = "current_thread")]
async fn a_direct_drain_stops_when_its_queue_is_handed_to_a_runner() {
    let runner = Runner::new();
    let queue = TaskQueue::new();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let (started_tx, started_rx) = oneshot::channel();
    queue.add_task(
        move || async move {
            started_tx.send(()).unwrap();
            release_rx.await.unwrap();
        },
        (),
    );
    let direct = tokio::spawn({
        let queue = queue.clone();
        async move { queue.drain().await }
    });
    started_rx.await.unwrap();
    queue.add_task(|| async {}, ());
    queue.add_task(|| (), ());
    let handle = runner.spawn(queue.clone());
    queue.add_task(|| async {}, ());
    release_tx.send(()).unwrap();

    assert_eq!(direct.await.unwrap().completed(), 1);
    assert_eq!(handle.await.completed(), 3);
    runner.wait_idle().await;
    let stats = runner.stats();
    assert_eq!(
        (stats.tasks_received(), stats.completed()),
        (3, 3),
        "{stats:?}"
    );
    assert_conserved(&stats);
}

/// `drain` runs nothing of a queue a runner has: the runner does, and its
/// shutdown sees and names what it abandons.
#[tokio::test(flavor = "current_thread")]
async fn a_direct_drain_of_a_handed_off_queue_leaves_it_to_the_runner() {
    async fn stuck_forever() {
        std::future::pending::<()>().await;
    }
    let runner = Runner::new();
    let queue = TaskQueue::new();
    runner.spawn(queue.clone());
    queue.add_task(stuck_forever, ());
    assert_eq!(queue.drain().await.total(), 0);
    let report = runner.shutdown(Duration::from_millis(20)).await;
    assert_eq!(report.abandoned_tasks(), ["stuck_forever"]);
    let stats = runner.stats();
    assert_eq!(stats.abandoned(), report.abandoned(), "{stats:?}");
    assert_conserved(&stats);
}

// ===== a runtime gone, a shutdown cut short =====

/// Handing a queue over after the runtime is gone, with no worker alive to
/// notice it first: the worker is dropped unpolled, and still accounts for
/// the queue, refused (`rejected`) like every queue after it, not counted
/// as abandoned work; nothing waits on it afterwards.
#[test]
fn a_hand_off_after_the_runtime_is_gone_is_counted_and_nothing_hangs() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let runner = Runner::builder().handle(runtime.handle().clone()).build();
    drop(runtime);
    let ran = Arc::new(AtomicUsize::new(0));
    let queue = TaskQueue::new();
    queue.add_task(counting_task, (ran.clone(),));
    let handle = runner.spawn(queue);

    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The limits only turn a hang into a failure.
    let hang_guard = Duration::from_secs(10);
    other.block_on(async {
        let report = tokio::time::timeout(hang_guard, handle).await.unwrap();
        assert_eq!(
            (report.rejected(), report.abandoned()),
            (1, 0),
            "{report:?}"
        );
        tokio::time::timeout(hang_guard, runner.wait_idle())
            .await
            .expect("wait_idle returns");
        tokio::time::timeout(hang_guard, runner.shutdown(Duration::from_millis(10)))
            .await
            .expect("shutdown returns");
    });
    let stats = runner.stats();
    assert_eq!(stats.drains_running(), 0, "{stats:?}");
    assert_eq!(ran.load(SeqCst), 0);
    assert_conserved(&stats);
}

/// A shutdown whose future is dropped half way is cut short, not left half
/// done: what was left is cancelled, and a later shutdown returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_whose_future_is_dropped_is_cut_short_not_stuck() {
    let runner = Runner::new();
    let queue = TaskQueue::new();
    queue.add_task(|| tokio::time::sleep(Duration::from_secs(3600)), ());
    let handle = runner.spawn(queue);
    let cut = tokio::time::timeout(
        Duration::from_millis(20),
        runner.shutdown(Duration::from_secs(3600)),
    )
    .await;
    assert!(cut.is_err(), "the shutdown could not have finished");
    assert_eq!(handle.await.abandoned(), 1);

    let hang_guard = Duration::from_secs(10);
    let again = tokio::time::timeout(hang_guard, runner.shutdown(Duration::from_millis(10)))
        .await
        .expect("a later shutdown returns");
    assert_eq!(again.abandoned(), 0);
    let late = TaskQueue::new();
    late.add_task(|| (), ());
    assert_eq!(runner.spawn(late).await.rejected(), 1);
    let stats = runner.stats();
    assert_eq!((stats.abandoned(), stats.rejected()), (1, 1), "{stats:?}");
    assert_conserved(&stats);
}

/// A task that awaits the runner's shutdown is itself cancelled at the
/// deadline: the same cut, from inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_awaiting_the_shutdown_that_cancels_it_does_not_leave_it_stuck() {
    let runner = Runner::new();
    let queue = TaskQueue::new();
    let r = runner.clone();
    queue.add_task(
        move || async move {
            r.shutdown(Duration::from_millis(50)).await;
        },
        (),
    );
    runner.spawn(queue);
    runner.wait_idle().await;
    let hang_guard = Duration::from_secs(10);
    tokio::time::timeout(hang_guard, runner.shutdown(Duration::from_millis(10)))
        .await
        .expect("a later shutdown returns");
    let late = TaskQueue::new();
    late.add_task(|| (), ());
    assert_eq!(runner.spawn(late).await.rejected(), 1);
    assert_conserved(&runner.stats());
}

/// Tasks keep arriving on a handed-off queue while the runner shuts down.
/// The runner closes in the same step that sees its drains done, so no
/// drain starts in between and outlives the shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_drain_starts_between_the_last_one_ending_and_the_runner_closing() {
    for round in 0..5000 {
        let runner = Runner::new();
        let queue = TaskQueue::new();
        runner.spawn(queue.clone());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let adder = std::thread::spawn({
            let (queue, stop) = (queue.clone(), stop.clone());
            move || {
                while !stop.load(SeqCst) {
                    queue.add_task(|| (), ());
                    std::thread::yield_now();
                }
            }
        });
        runner.shutdown(Duration::from_secs(5)).await;
        let stats = runner.stats();
        stop.store(true, SeqCst);
        adder.join().unwrap();
        assert_eq!(stats.drains_running(), 0, "round {round}: {stats:?}");
        runner.wait_idle().await;
        assert_conserved(&runner.stats());
    }
}

// ===== open queues =====

/// A queue made for a runner that lost its tasks (to `append`, or to a
/// direct drain) is no longer waited for by a shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_queue_emptied_before_its_hand_off_does_not_hold_up_shutdown() {
    let runner = Runner::new();
    let emptied_by_append = runner.new_queue();
    emptied_by_append.add_task(|| (), ());
    TaskQueue::new().append(&emptied_by_append);
    let emptied_by_drain = runner.new_queue();
    emptied_by_drain.add_task(|| (), ());
    assert_eq!(emptied_by_drain.drain().await.completed(), 1);

    let hang_guard = Duration::from_secs(10);
    let report = tokio::time::timeout(hang_guard, runner.shutdown(Duration::from_secs(3600)))
        .await
        .expect("nothing was in flight");
    assert_eq!(report.abandoned(), 0);
}
