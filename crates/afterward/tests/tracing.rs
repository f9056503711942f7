//! Each task runs in a `task` span (name, position) whose parent is the span
//! that was current when the task was added, wherever the drain runs.

mod capture_logs;

use afterward::{Runner, TaskQueue};
use capture_logs::Capture;
use tracing::Instrument;

fn email_task(user: u64) {
    tracing::info!(user, "blocking task says hello");
}

async fn webhook_task() -> Result<(), String> {
    tracing::info!("async task says hello");
    Err("receiver returned 503".into())
}

#[tokio::test(flavor = "current_thread")]
async fn task_events_carry_the_request_span_and_the_task_span() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let runner = Runner::new();
    let queue = TaskQueue::new();
    async {
        queue.add_task(email_task, (7,));
        queue.add_task(webhook_task, ());
    }
    .instrument(tracing::info_span!("request", request_id = 42))
    .await;

    // Drained from inside an unrelated span: the tasks must still hang off
    // the request's span, not this one.
    runner
        .spawn(queue)
        .instrument(tracing::info_span!("elsewhere"))
        .await;

    let sync_line = capture.line_with("blocking task says hello");
    assert!(
        sync_line.contains(r#"request{request_id=42}:task{task="email_task" position=1 id="#),
        "{sync_line}"
    );
    let async_line = capture.line_with("async task says hello");
    assert!(
        async_line.contains(r#"request{request_id=42}:task{task="webhook_task" position=2 id="#),
        "{async_line}"
    );
    let failure = capture.line_with("background task failed");
    assert!(failure.contains("ERROR"), "{failure}");
    assert!(failure.contains(r#"task="webhook_task""#), "{failure}");
    assert!(failure.contains("error=receiver returned 503"), "{failure}");
    assert!(failure.contains("request{request_id=42}"), "{failure}");
    for line in [sync_line, async_line, failure] {
        assert!(!line.contains("elsewhere"), "{line}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn panics_skips_abandonments_and_rejections_are_logged_with_the_task_name() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    fn exploding_task() {
        panic!("the disk caught fire");
    }
    fn never_started() {}

    let runner = Runner::builder()
        .failure_policy(afterward::FailurePolicy::StopQueue)
        .build();
    let queue = TaskQueue::new();
    queue.add_task(exploding_task, ());
    queue.add_task(never_started, ());
    runner.spawn(queue).await;

    let panic = capture.line_with("background task panicked");
    assert!(panic.contains(r#"task="exploding_task""#), "{panic}");
    assert!(panic.contains("panic=the disk caught fire"), "{panic}");
    let skip = capture.line_with("background task skipped");
    assert!(skip.contains(r#"task="never_started""#), "{skip}");

    async fn stuck_forever() {
        std::future::pending::<()>().await;
    }
    let queue = TaskQueue::new();
    queue.add_task(stuck_forever, ());
    let stuck = runner.spawn(queue);
    runner.shutdown(std::time::Duration::ZERO).await;
    assert_eq!(stuck.await.abandoned(), 1);
    let abandoned = capture.line_with("background task abandoned");
    assert!(abandoned.contains(r#"task="stuck_forever""#), "{abandoned}");

    let late = TaskQueue::new();
    late.add_task(never_started, ());
    runner.spawn(late).await;
    let rejected = capture.line_with("background task rejected");
    assert!(rejected.contains(r#"task="never_started""#), "{rejected}");
}

#[test]
fn a_queue_dropped_with_tasks_left_says_so() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        fn forgotten_task() {}
        let queue = TaskQueue::new();
        queue.add_task(forgotten_task, ());
        drop(queue);
    });
    let line = capture.line_with("task queue dropped with tasks that were never run");
    assert!(line.contains(r#"tasks=["forgotten_task"]"#), "{line}");
}

/// A subscriber is user code that runs inside the library's own logging.
/// This one panics on the first debug event: the "completed" line a sync
/// batch logs on the blocking pool. The batch dies, but that is not the
/// runtime shutting down: the drain goes on with the next task.
#[tokio::test(flavor = "current_thread")]
async fn a_sync_batch_killed_by_a_panicking_subscriber_does_not_stop_the_drain() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use tracing_subscriber::layer::{Context, SubscriberExt};

    struct PanicsOnce(AtomicBool);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PanicsOnce {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if *event.metadata().level() == tracing::Level::DEBUG && !self.0.swap(true, SeqCst) {
                panic!("the subscriber panics, on purpose");
            }
        }
    }

    let subscriber = tracing_subscriber::registry().with(PanicsOnce(AtomicBool::new(false)));
    let _default = tracing::subscriber::set_default(subscriber);
    let runner = Runner::new();
    let queue = TaskQueue::new();
    queue.add_task(|| (), ());
    queue.add_task(|| (), ());
    let report = runner.spawn(queue).await;
    assert_eq!((report.completed(), report.total()), (2, 2), "{report:?}");
    let stats = runner.stats();
    assert_eq!(stats.tasks_received(), stats.accounted(), "{stats:?}");
}

/// A subscriber that panics in the runner's own log lines (the abandonment
/// of a drain's tasks after a drain panics) must not make the runner think
/// its runtime is gone: the next queue still runs.
#[tokio::test(flavor = "current_thread")]
async fn a_subscriber_panicking_in_the_runners_logs_does_not_stop_the_runner() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use tracing_subscriber::layer::{Context, SubscriberExt};

    struct PanicsTwiceOnErrors(AtomicUsize);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PanicsTwiceOnErrors {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if *event.metadata().level() == tracing::Level::ERROR
                && event.metadata().target().starts_with("afterward")
                && self.0.fetch_add(1, SeqCst) < 2
            {
                panic!("the subscriber panics, on purpose");
            }
        }
    }

    let subscriber = tracing_subscriber::registry().with(PanicsTwiceOnErrors(AtomicUsize::new(0)));
    let _default = tracing::subscriber::set_default(subscriber);
    let runner = Runner::new();
    let queue = TaskQueue::new();
    queue.add_task(|| async { Err::<(), _>("fails") }, ());
    queue.add_task(|| async {}, ());
    let first = runner.spawn(queue).await;
    assert_eq!(first.total(), 2, "{first:?}");
    runner.wait_idle().await;

    let queue = TaskQueue::new();
    queue.add_task(|| async {}, ());
    let second = runner.spawn(queue).await;
    assert_eq!(second.completed(), 1, "{second:?}");
    let stats = runner.stats();
    assert_eq!(stats.tasks_received(), stats.accounted(), "{stats:?}");
}
