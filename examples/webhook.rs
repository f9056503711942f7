//! Webhooks delivered after the response, by an async task with a timeout.
//!
//! `POST /event` takes any JSON event and queues its delivery: an HTTP POST
//! with a hyper client and a 2 s timeout. The example also starts a local
//! receiver (on PORT + 1), so it works offline; `POST /event?broken=true`
//! sends to a receiver route that answers 500, and the task shows up as
//! `failed` with that error in the logs and in `GET /stats`.
//!
//! ```text
//! cargo run --example webhook           # PORT=3000; WEBHOOK_URL to use your own receiver
//! curl -i -X POST localhost:3000/event -H 'content-type: application/json' -d '{"type": "user.created", "id": 7}'
//! curl -i -X POST 'localhost:3000/event?broken=true' -H 'content-type: application/json' -d '{"type": "oops"}'
//! curl localhost:3001/received          # what the receiver got
//! curl localhost:3000/stats
//! ```

#[path = "support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use afterward::{Runner, TaskQueue};
use afterward_hyper::TaskLayer;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{Value, json};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Debug)]
pub(crate) struct Webhook {
    client: HttpClient,
    /// Where events go.
    pub(crate) url: String,
    /// A receiver that always fails, to show a failed delivery.
    pub(crate) broken_url: String,
    timeout: Duration,
    runner: Runner,
}

impl Webhook {
    pub(crate) fn new(runner: Runner, url: String, broken_url: String) -> Webhook {
        Webhook {
            client: Client::builder(TokioExecutor::new()).build_http(),
            url,
            broken_url,
            timeout: Duration::from_secs(2),
            runner,
        }
    }
}

/// The task: async, awaited on the runtime. An error or a timeout is
/// reported by the runner with this task's name.
async fn deliver_webhook(webhook: Arc<Webhook>, url: String, event: Value) -> Result<(), String> {
    let request = http::Request::post(&url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(event.to_string())))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(webhook.timeout, webhook.client.request(request))
        .await
        .map_err(|_| format!("POST {url}: no answer within {:?}", webhook.timeout))?
        .map_err(|e| format!("POST {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "POST {url}: receiver answered {}",
            response.status()
        ));
    }
    tracing::info!(%url, "webhook delivered");
    Ok(())
}

#[derive(Deserialize)]
struct Target {
    #[serde(default)]
    broken: bool,
}

async fn event(
    State(webhook): State<Arc<Webhook>>,
    tasks: TaskQueue,
    Query(target): Query<Target>,
    Json(event): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let url = if target.broken {
        &webhook.broken_url
    } else {
        &webhook.url
    };
    tasks.add_task(deliver_webhook, (webhook.clone(), url.clone(), event));
    (
        StatusCode::ACCEPTED,
        Json(json!({ "delivery": "queued", "to": url })),
    )
}

async fn stats(State(webhook): State<Arc<Webhook>>) -> Json<Value> {
    let stats = webhook.runner.stats();
    Json(
        json!({ "delivered": stats.completed(), "failed": stats.failed(), "timed_out": stats.timed_out() }),
    )
}

pub(crate) fn app(webhook: Webhook) -> Router {
    let runner = webhook.runner.clone();
    Router::new()
        .route("/event", post(event))
        .route("/stats", get(stats))
        .with_state(Arc::new(webhook))
        .layer(TaskLayer::new(runner))
}

// ===== the local receiver =====

/// What the receiver got.
pub(crate) type Received = Arc<Mutex<Vec<Value>>>;

/// A webhook receiver: `POST /hook` stores the event, `POST /broken`
/// answers 500, `GET /received` lists the events.
pub(crate) fn receiver() -> (Router, Received) {
    let received = Received::default();
    let router = Router::new()
        .route(
            "/hook",
            post(
                |State(r): State<Received>, Json(event): Json<Value>| async move {
                    r.lock().unwrap().push(event);
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/broken",
            post(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route(
            "/received",
            get(|State(r): State<Received>| async move {
                Json(Value::Array(r.lock().unwrap().clone()))
            }),
        )
        .with_state(received.clone());
    (router, received)
}

#[tokio::main]
async fn main() {
    support::init_logging();
    let receiver_port = support::port() + 1;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", receiver_port))
        .await
        .expect("cannot listen for the receiver on PORT + 1");
    tokio::spawn(async move { axum::serve(listener, receiver().0).await });
    tracing::info!("receiver listening on http://127.0.0.1:{receiver_port}");

    let local = format!("http://127.0.0.1:{receiver_port}");
    let url = std::env::var("WEBHOOK_URL").unwrap_or_else(|_| format!("{local}/hook"));
    let runner = Runner::builder()
        .task_timeout(Duration::from_secs(5))
        .build();
    let webhook = Webhook::new(runner.clone(), url, format!("{local}/broken"));
    support::serve(app(webhook), runner).await;
}
