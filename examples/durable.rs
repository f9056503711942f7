//! Welcome emails that survive a crash: the `email` example's task made
//! durable, stored in PostgreSQL at hand-off and sent by graphile_worker
//! workers, with retries and backoff.
//!
//! `POST /register` takes `{"email": …, "username": …}` and answers at once,
//! `202 Accepted` with the email task's id in a `Location` header (the
//! async request-reply pattern); when the response is finished, the task is
//! stored in PostgreSQL (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, schema `afterward_demo`).
//! `GET /tasks/{id}` reports where it stands. A worker sends it to the
//! outbox directory with lettre's file transport. The message's `Message-ID`
//! is the step's idempotency key, the same on every attempt, so a mail
//! server can drop a repeat. `GET /outbox` lists what was sent, and
//! `GET /metrics` the server's metrics, for Prometheus.
//!
//! ```text
//! cargo run --example durable              # server + in-process worker
//! cargo run --example durable -- --worker  # a worker alone (run several)
//! curl -i -X POST localhost:3000/register -H 'content-type: application/json' \
//!      -d '{"email": "ada@example.com", "username": "ada"}'
//! curl localhost:3000/tasks/<the id in the Location header>
//! curl localhost:3000/outbox
//! curl localhost:3000/metrics
//! ```
//!
//! Stop the server before the worker has run and start it again, or run the
//! server and a `--worker` in two terminals: the email is sent either way.

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::Duration;

use afterward::{DurableTask, Runner, Step, TaskId, TaskQueue};
use afterward_graphile::{GraphileBackend, GraphileWorker, TaskState};
use afterward_hyper::TaskLayer;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::{Address, FileTransport, Transport};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// The schema of the demo's tables.
pub(crate) const SCHEMA: &str = "afterward_demo";

/// The durable task: data only (a worker elsewhere rebuilds it), so the
/// outbox comes from the worker's environment, not from the server.
#[derive(Serialize, Deserialize)]
pub(crate) struct SendWelcomeEmail {
    pub(crate) to: String,
    pub(crate) username: String,
}

impl DurableTask for SendWelcomeEmail {
    const NAME: &'static str = "send_welcome_email";
    type Error = String;

    async fn run(self, step: Step) -> Result<(), String> {
        let to: Address = self.to.parse().map_err(|e| format!("{}: {e}", self.to))?;
        let message = Message::builder()
            .from("afterward demo <welcome@example.com>".parse().unwrap())
            .to(Mailbox::new(Some(self.username.clone()), to))
            .subject(format!("Welcome, {}!", self.username))
            // The same on every attempt of this step.
            .message_id(Some(format!(
                "<{}@afterward.example>",
                step.idempotency_key()
            )))
            .header(ContentType::TEXT_PLAIN)
            .body(format!("Hi {},\n\nthanks for signing up.\n", self.username))
            .map_err(|e| e.to_string())?;
        let outbox = outbox();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&outbox).map_err(|e| e.to_string())?;
            FileTransport::new(&outbox)
                .send(&message)
                .map(drop)
                .map_err(|e| format!("outbox {}: {e}", outbox.display()))
        })
        .await
        .map_err(|e| e.to_string())??;
        tracing::info!(
            username = self.username,
            attempt = step.attempt(),
            "welcome email sent"
        );
        Ok(())
    }
}

/// Where the worker writes mail: `OUTBOX_DIR`, default `./outbox`.
pub(crate) static OUTBOX: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

pub(crate) fn outbox() -> PathBuf {
    OUTBOX
        .get_or_init(|| {
            std::env::var("OUTBOX_DIR")
                .unwrap_or_else(|_| "outbox".into())
                .into()
        })
        .clone()
}

#[derive(Deserialize)]
struct Registration {
    email: String,
    username: String,
}

async fn register(tasks: TaskQueue, Json(registration): Json<Registration>) -> Response {
    if let Err(error) = registration.email.parse::<Address>() {
        let message = format!("invalid email address {:?}: {error}", registration.email);
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": message })),
        )
            .into_response();
    }
    let id = tasks
        .add_durable(SendWelcomeEmail {
            to: registration.email,
            username: registration.username.clone(),
        })
        .id();
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/tasks/{id}"))],
        Json(json!({ "registered": registration.username, "welcome_email": id.to_string() })),
    )
        .into_response()
}

/// Where a task stands, by the id `register` answered with.
async fn task_status(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<TaskId>() else {
        return (StatusCode::BAD_REQUEST, "a task id is 32 hex digits").into_response();
    };
    match app.backend.status(id).await {
        Ok(Some(status)) => {
            let state = match status.state() {
                TaskState::Waiting => "waiting",
                TaskState::Running => "running",
                TaskState::Done => "done",
                TaskState::Failed => "failed",
                TaskState::Dropped => "dropped",
                _ => "unknown",
            };
            Json(json!({
                "id": id.to_string(),
                "state": state,
                "attempts": status.attempts(),
                "last_error": status.last_error(),
            }))
            .into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, "no such task").into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    }
}

/// The server's metrics, in Prometheus' text format.
async fn metrics(State(app): State<AppState>) -> Response {
    match &app.metrics {
        Some(handle) => handle.render().into_response(),
        None => (StatusCode::NOT_FOUND, "no metrics recorder").into_response(),
    }
}

/// The recipients of the messages in the outbox.
async fn list_outbox() -> Json<Value> {
    let mut sent = Vec::new();
    if let Ok(entries) = std::fs::read_dir(outbox()) {
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if let Some(to) = text.lines().find_map(|line| line.strip_prefix("To: ")) {
                sent.push(Value::from(to));
            }
        }
    }
    Json(Value::Array(sent))
}

/// The server's runner: durable tasks go to PostgreSQL at hand-off.
pub(crate) fn runner(backend: &GraphileBackend) -> Runner {
    Runner::builder().durable(backend.clone()).build()
}

/// What the handlers share: where tasks are looked up, and the metrics.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) backend: GraphileBackend,
    pub(crate) metrics: Option<PrometheusHandle>,
}

pub(crate) fn app(runner: Runner, state: AppState) -> Router {
    Router::new()
        .route("/register", post(register))
        .route("/tasks/{id}", get(task_status))
        .route("/outbox", get(list_outbox))
        .route("/metrics", get(metrics))
        .layer(TaskLayer::new(runner))
        .with_state(state)
}

/// A worker that sends the stored emails.
pub(crate) fn worker(pool: PgPool, schema: &str) -> GraphileWorker {
    GraphileWorker::new(pool)
        .schema(schema)
        .task::<SendWelcomeEmail>()
}

#[tokio::main]
async fn main() -> Result<(), afterward_graphile::Error> {
    support::init_logging();
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url)
        .await?;
    let worker = std::sync::Arc::new(worker(pool.clone(), SCHEMA).init().await?);
    if std::env::args().any(|arg| arg == "--worker") {
        tracing::info!("worker running; Ctrl-C stops it");
        let stop = worker.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.request_shutdown();
        });
        worker.run().await?;
        return Ok(());
    }
    let working = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run().await }
    });
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok();
    let backend = GraphileBackend::new(pool).schema(SCHEMA);
    let runner = runner(&backend);
    let state = AppState { backend, metrics };
    support::serve(app(runner.clone(), state), runner).await;
    worker.request_shutdown();
    working.await??;
    Ok(())
}
