//! The metrics (core feature `metrics`) over real HTTP: a mix of outcomes,
//! and every series checked against the runner's `Stats`. The recorder is
//! `metrics-util`'s debugging recorder, installed for this test binary.

use std::collections::HashMap;
use std::time::Duration;

use afterward::{RunIf, Runner, TaskQueue};
use afterward_hyper::TaskLayer;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

fn record_visit() {}

/// Tasks named three ways: by a `&'static str`, by a `String`, and by their
/// function.
async fn ok(tasks: TaskQueue) -> &'static str {
    tasks.add_task(|| (), ()).name("audit");
    tasks.add_task(|| async {}, ()).name("notify");
    tasks.add_task(|| (), ()).name(format!("welcome-{}", 7));
    tasks.add_task(record_visit, ());
    "ok"
}

async fn failing(tasks: TaskQueue) -> &'static str {
    tasks
        .add_task(|| Err::<(), _>("smtp down"), ())
        .name("email");
    tasks
        .add_task(|| -> () { panic!("on purpose") }, ())
        .name("buggy");
    "ok"
}

async fn refused(tasks: TaskQueue) -> StatusCode {
    tasks
        .add_task(|| (), ())
        .name("receipt")
        .run_if(RunIf::Success);
    tasks.add_task(|| (), ()).name("audit");
    StatusCode::INTERNAL_SERVER_ERROR
}

async fn slow(tasks: TaskQueue) -> &'static str {
    tasks
        .add_task(|| tokio::time::sleep(Duration::from_secs(60)), ())
        .name("reindex");
    "ok"
}

/// Counters and histogram sample counts by name and labels.
fn series(recorder: &metrics_util::debugging::Snapshotter) -> HashMap<String, f64> {
    let mut all = HashMap::new();
    for (key, _, _, value) in recorder.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let mut labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let n = match (kind, value) {
            (MetricKind::Counter, DebugValue::Counter(n)) => n as f64,
            (MetricKind::Histogram, DebugValue::Histogram(samples)) => samples.len() as f64,
            (MetricKind::Gauge, DebugValue::Gauge(n)) => n.into_inner(),
            _ => continue,
        };
        *all.entry(name).or_insert(0.0) += n;
    }
    all
}

/// The sum of the series named `name` whose labels include `with`.
fn total(series: &HashMap<String, f64>, name: &str, with: &str) -> usize {
    series
        .iter()
        .filter(|(key, _)| key.starts_with(&format!("{name}{{")) && key.contains(with))
        .map(|(_, n)| *n as usize)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_agrees_with_the_stats() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    // Long enough that no task but the slow one overruns it, even on a
    // loaded machine (a sync task that overran counts as timed out).
    let runner = Runner::builder()
        .task_timeout(Duration::from_secs(3))
        .build();
    let app = Router::new()
        .route("/ok", get(ok))
        .route("/failing", get(failing))
        .route("/refused", get(refused))
        .route("/slow", get(slow))
        .layer(TaskLayer::new(runner.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    for path in ["/ok", "/ok", "/failing", "/refused", "/slow"] {
        let uri = format!("http://{addr}{path}").parse().unwrap();
        let response = client.get(uri).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    runner.wait_idle().await;
    // A request still in flight at the shutdown: abandoned.
    let queue = runner.new_queue();
    queue.add_task(|| (), ()).name("late");
    let report = runner.shutdown(Duration::from_millis(10)).await;
    assert_eq!(report.abandoned_tasks(), ["late"]);

    let stats = runner.stats();
    let series = series(&snapshotter);
    assert_eq!(
        total(&series, "afterward_tasks_received_total", ""),
        stats.tasks_received(),
        "{series:#?}"
    );
    let outcomes = [
        ("completed", stats.completed()),
        ("failed", stats.failed()),
        ("panicked", stats.panicked()),
        ("timed_out", stats.timed_out()),
        ("skipped", stats.skipped()),
        ("abandoned", stats.abandoned()),
        ("rejected", stats.rejected()),
    ];
    for (outcome, counted) in outcomes {
        let with = format!("outcome={outcome}");
        assert_eq!(
            total(&series, "afterward_tasks_total", &with),
            counted,
            "{outcome}: {series:#?}"
        );
    }
    assert_eq!(
        (stats.completed(), stats.failed(), stats.panicked()),
        (9, 1, 1)
    );
    assert_eq!(
        (stats.timed_out(), stats.skipped(), stats.abandoned()),
        (1, 1, 1)
    );
    // The law holds over the series as over the stats.
    assert_eq!(
        total(&series, "afterward_tasks_total", ""),
        total(&series, "afterward_tasks_received_total", "")
    );
    // Durations for every task that started; waits too.
    let started = stats.completed() + stats.failed() + stats.panicked() + stats.timed_out();
    assert_eq!(
        total(&series, "afterward_task_duration_seconds", ""),
        started
    );
    assert_eq!(total(&series, "afterward_task_wait_seconds", ""), started);
    assert_eq!(
        total(&series, "afterward_tasks_total", "task=email"),
        1,
        "series carry the task's name"
    );
    for name in ["welcome-7", "record_visit", "audit"] {
        let with = format!("task={name}");
        let received = total(&series, "afterward_tasks_received_total", &with);
        assert_eq!(
            received,
            2 + usize::from(name == "audit"),
            "{name}: {series:#?}"
        );
        assert_eq!(total(&series, "afterward_tasks_total", &with), received);
    }
    assert_eq!(total(&series, "afterward_drains_running", ""), 0);
    assert_eq!(total(&series, "afterward_backlog_tasks", ""), 0);
}
