//! A flood of requests that queue durable tasks, against the real
//! PostgreSQL, behind back-pressure and a load shedder: every durable task
//! of every request answered 200 is stored, and a request refused is
//! refused (503) before its handler ran.

use std::collections::{BTreeMap, BTreeSet};

use afterward::{DurableTask, Runner, Step, TaskQueue};
use afterward_graphile::GraphileBackend;
use afterward_hyper::TaskLayer;
use axum::error_handling::HandleErrorLayer;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{BoxError, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, PgPool};
use tower::ServiceBuilder;

#[derive(Serialize, Deserialize)]
struct Receipt {
    request: u64,
    part: u32,
}

impl DurableTask for Receipt {
    const NAME: &'static str = "receipt";
    type Error = String;

    async fn run(self, _: Step) -> Result<(), String> {
        Ok(())
    }
}

const TASKS: u32 = 5;

async fn order(Path(request): Path<u64>, tasks: TaskQueue) -> &'static str {
    for part in 0..TASKS {
        tasks.add_durable(Receipt { request, part });
    }
    "ordered"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_durable_task_of_an_answered_request_is_stored() {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let pool = PgPool::connect(&url).await.unwrap();
    let schema = format!("afterward_flood_{}", std::process::id());
    sqlx::query(AssertSqlSafe(format!(
        "drop schema if exists {schema} cascade"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let backend = GraphileBackend::new(pool.clone()).schema(&schema);
    backend.migrate().await.unwrap();
    let runner = Runner::builder()
        .max_concurrent_drains(2)
        .max_backlog(4)
        .durable(backend)
        .build();
    let app = Router::new().route("/order/{id}", post(order)).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: BoxError| async {
                StatusCode::SERVICE_UNAVAILABLE
            }))
            .load_shed()
            .layer(TaskLayer::new(runner.clone()).backpressure(true)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut requests = tokio::task::JoinSet::new();
    for connection in 0..4u64 {
        let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        for i in 0..100u64 {
            let id = connection * 100 + i;
            let mut sender = sender.clone();
            requests.spawn(async move {
                let request = http::Request::post(format!("http://{addr}/order/{id}"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                let status = response.status().as_u16();
                response.into_body().collect().await.unwrap();
                (id, status)
            });
        }
    }
    let answered: BTreeMap<u64, u16> = requests.join_all().await.into_iter().collect();
    runner.wait_idle().await;

    let served: BTreeSet<u64> = answered
        .iter()
        .filter(|(_, status)| **status == 200)
        .map(|(id, _)| *id)
        .collect();
    assert!(
        answered
            .values()
            .all(|&status| status == 200 || status == 503),
        "{answered:?}"
    );
    assert!(!served.is_empty());
    let stored: Vec<(i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "select (payload->>'request')::int8, count(*) from {schema}.afterward_steps
         group by 1 order by 1"
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    let stored_ids: BTreeSet<u64> = stored.iter().map(|(id, _)| *id as u64).collect();
    assert_eq!(
        stored_ids, served,
        "stored exactly the answered requests' tasks"
    );
    assert!(stored.iter().all(|(_, n)| *n == i64::from(TASKS)));
    let stats = runner.stats();
    assert_eq!(
        (stats.persisted(), stats.rejected(), stats.persist_failed()),
        (served.len() * TASKS as usize, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.tasks_received(), stats.accounted());
    sqlx::query(AssertSqlSafe(format!("drop schema {schema} cascade")))
        .execute(&pool)
        .await
        .unwrap();
}
