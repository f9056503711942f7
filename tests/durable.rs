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

async fn register(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    email: &str,
) -> StatusCode {
    let username = email.split('@').next().unwrap();
    let body = format!(r#"{{"email": "{email}", "username": "{username}"}}"#);
    let request = Request::post(format!("http://{addr}/register"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    response.into_body().collect().await.unwrap();
    status
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
            .configure(|options| options.poll_interval(Duration::from_millis(100)))
            .init()
            .await
            .unwrap(),
    );
    let runner = durable::runner(pool.clone(), &schema);
    let addr = serve(durable::app(runner.clone())).await;

    for (http2, email) in [(false, "ada@example.com"), (true, "grace@example.com")] {
        assert_eq!(
            register(&client(http2), addr, email).await,
            StatusCode::CREATED
        );
    }
    assert_eq!(
        register(&client(false), addr, "not-an-email").await,
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
    assert!(
        ids.iter().all(|id| id.ends_with(":0@afterward.example>")),
        "{ids:?}"
    );

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
    let runner: Runner = durable::runner(pool, "unreachable");
    let addr = serve(durable::app(runner.clone())).await;
    for http2 in [false, true] {
        assert_eq!(
            register(&client(http2), addr, "ada@example.com").await,
            StatusCode::CREATED
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
