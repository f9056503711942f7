//! Tasks from a middleware and from the handler, run in one queue.
//!
//! A tower/axum stack: `TaskLayer` outermost, then a middleware that queues a
//! request-log task, then the handler, which queues its own task. Both land
//! in the request's one queue and run after the response, the middleware's
//! first: what FastAPI does when a dependency and an endpoint both add
//! background tasks. `GET /log` shows the order they ran in.
//!
//! ```text
//! cargo run --example middleware_tasks  # PORT=3000
//! curl -i -X POST localhost:3000/checkout
//! curl localhost:3000/log
//! ```

#[path = "support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};

use afterward::{Runner, TaskQueue};
use afterward_hyper::TaskLayer;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};

/// What ran, in order.
pub(crate) type RunLog = Arc<Mutex<Vec<String>>>;

fn write_request_log(log: RunLog, method: String, path: String) {
    tracing::info!(%method, %path, "request logged");
    log.lock()
        .unwrap()
        .push(format!("middleware: request log {method} {path}"));
}

async fn charge_card(log: RunLog, amount_cents: u64) -> Result<(), String> {
    tracing::info!(amount_cents, "card charged");
    log.lock()
        .unwrap()
        .push(format!("handler: charge {amount_cents} cents"));
    Ok(())
}

/// Queues a task for every request, before the handler runs.
async fn log_requests(State(log): State<RunLog>, request: Request, next: Next) -> Response {
    if let Some(tasks) = request.extensions().get::<TaskQueue>() {
        let (method, path) = (
            request.method().to_string(),
            request.uri().path().to_owned(),
        );
        tasks.add_task(write_request_log, (log, method, path));
    }
    next.run(request).await
}

async fn checkout(State(log): State<RunLog>, tasks: TaskQueue) -> &'static str {
    tasks.add_task(charge_card, (log, 4_200));
    "order placed"
}

async fn show_log(State(log): State<RunLog>) -> Json<Vec<String>> {
    Json(log.lock().unwrap().clone())
}

pub(crate) fn app(runner: Runner, log: RunLog) -> Router {
    Router::new()
        .route("/checkout", post(checkout))
        .route("/log", get(show_log))
        // Layers added later wrap the ones before: TaskLayer is outermost,
        // so the middleware already finds the queue in the request.
        .layer(middleware::from_fn_with_state(log.clone(), log_requests))
        .layer(TaskLayer::new(runner))
        .with_state(log)
}

#[tokio::main]
async fn main() {
    support::init_logging();
    let runner = Runner::new();
    support::serve(app(runner.clone(), RunLog::default()), runner).await;
}
