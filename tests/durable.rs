//! The `durable` example against the real PostgreSQL, over HTTP/1 and
//! HTTP/2, and a hand-off to a database that cannot be reached.

#![allow(dead_code)]

#[path = "../examples/durable.rs"]
mod durable;

use std::net::SocketAddr;
use std::time::Duration;

use afterward::Runner;
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};
use tokio::net::TcpListener;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn client(http2: bool) -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http()
}

/// Registers `email`; the status, and the `Location` of the email task.
async fn register(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    email: &str,
) -> (StatusCode, Option<String>) {
    let username = email.split('@').next().unwrap();
    let body = format!(r#"{{"email": "{email}", "username": "{username}"}}"#);
    let request = Request::post(format!("http://{addr}/register"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|value| value.to_str().unwrap().to_owned());
    response.into_body().collect().await.unwrap();
    (status, location)
}

/// GETs `path`: the status and the body.
async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let request = Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client(false).request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// The Prometheus recorder of this test binary: the first test installs it.
fn prometheus() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .unwrap()
        })
        .clone()
}

/// The value of the series whose line starts with `series`.
fn sample(scraped: &str, series: &str) -> f64 {
    scraped
        .lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{scraped}"))
}

/// The recipients in the outbox, sorted.
fn sent() -> Vec<String> {
    let mut sent: Vec<String> = std::fs::read_dir(durable::outbox())
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
                .filter_map(|text| {
                    text.lines()
                        .find_map(|line| line.strip_prefix("To: ").map(str::to_owned))
                })
                .collect()
        })
        .unwrap_or_default();
    sent.sort();
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_example_stores_at_hand_off_and_its_worker_sends() {
    let outbox = std::env::temp_dir().join(format!("afterward-durable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&outbox);
    durable::OUTBOX.set(outbox.clone()).unwrap();

    let pool = PgPool::connect(&database_url()).await.unwrap();
    let schema = format!("afterward_example_{}", std::process::id());
    sqlx::query(AssertSqlSafe(format!(
        "drop schema if exists {schema} cascade"
    )))
    .execute(&pool)
    .await
    .unwrap();
    // The worker migrates; the server only hands off.
    let worker = std::sync::Arc::new(
        durable::worker(pool.clone(), &schema)
            .poll_interval(Duration::from_millis(100))
            .init()
            .await
            .unwrap(),
    );
    let backend = afterward_graphile::GraphileBackend::new(pool.clone()).schema(&schema);
    let runner = durable::runner(&backend);
    let state = durable::AppState {
        backend,
        metrics: Some(prometheus()),
    };
    let addr = serve(durable::app(runner.clone(), state)).await;

    let mut locations = Vec::new();
    for (http2, email) in [(false, "ada@example.com"), (true, "grace@example.com")] {
        let (status, location) = register(&client(http2), addr, email).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        locations.push(location.expect("a Location for the task"));
    }
    assert_eq!(
        register(&client(false), addr, "not-an-email").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // Both hand-offs are stored before any worker runs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while runner.stats().persisted() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            runner.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sent().is_empty());
    for location in &locations {
        let (status, body) = get(addr, location).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains(r#""state":"waiting""#), "{body}");
    }
    assert_eq!(
        get(addr, &format!("/tasks/{}", afterward::TaskId::new()))
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let working = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run().await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sent().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "sent {:?}", sent());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sent(),
        ["ada <ada@example.com>", "grace <grace@example.com>"]
    );
    // Each message's id is its step's idempotency key.
    let ids: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .flatten()
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap())
        .filter_map(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("Message-ID: ").map(str::to_owned))
        })
        .collect();
    assert_eq!(ids.len(), 2);
    for location in &locations {
        // The task's id is its step's idempotency key, and so the message's.
        let id = location.trim_start_matches("/tasks/");
        assert!(ids.iter().any(|message| message.contains(id)), "{ids:?}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = get(addr, location).await;
            if body.contains(r#""state":"done""#) {
                assert!(body.contains(r#""attempts":1"#), "{body}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The hand-offs are in the metrics, as in the stats.
    if cfg!(feature = "metrics") {
        let (status, scraped) = get(addr, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            sample(
                &scraped,
                r#"afterward_tasks_total{task="send_welcome_email",outcome="persisted"}"#
            ) >= 2.0,
            "{scraped}"
        );
    }

    let stats = runner.stats();
    assert_eq!((stats.persisted(), stats.persist_failed()), (2, 0));
    assert_eq!(stats.tasks_received(), stats.accounted());
    worker.request_shutdown();
    working.await.unwrap().unwrap();
    sqlx::query(AssertSqlSafe(format!("drop schema {schema} cascade")))
        .execute(&pool)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&outbox);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_leaves_the_response_alone() {
    // Nothing listens on port 1.
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy("postgres://postgres@127.0.0.1:1/postgres")
        .unwrap();
    let backend = afterward_graphile::GraphileBackend::new(pool).schema("unreachable");
    let runner: Runner = durable::runner(&backend);
    let state = durable::AppState {
        backend,
        metrics: None,
    };
    let addr = serve(durable::app(runner.clone(), state)).await;
    for http2 in [false, true] {
        assert_eq!(
            register(&client(http2), addr, "ada@example.com").await.0,
            StatusCode::ACCEPTED
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while runner.stats().persist_failed() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            runner.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = runner.stats();
    assert_eq!((stats.persisted(), stats.persist_failed()), (0, 2));
    assert_eq!(stats.tasks_received(), stats.accounted());
}
