//! An order pipeline: four tasks per order, always in the same order.
//!
//! `POST /order` takes `{"item": …, "quantity": …}` and queues, in this
//! order: the confirmation email (sync), the inventory reservation (async),
//! the warehouse notification (async) and the analytics event (sync). They
//! run one after another, each after the previous has finished, whatever
//! their kind. `GET /pipeline` shows what ran, in order.
//!
//! ```text
//! cargo run --example order_pipeline    # PORT=3000
//! curl -i -X POST localhost:3000/order -H 'content-type: application/json' \
//!      -d '{"item": "keyboard", "quantity": 2}'
//! curl localhost:3000/pipeline
//! ```

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use afterward::{Runner, TaskQueue};
use afterward_hyper::TaskLayer;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

/// What the pipeline did, in order: `(order id, step)`.
#[derive(Debug, Default)]
pub(crate) struct Pipeline {
    next_id: AtomicU64,
    steps: Mutex<Vec<(u64, &'static str)>>,
}

impl Pipeline {
    fn record(&self, order: u64, step: &'static str) {
        tracing::info!(order, step);
        self.steps.lock().unwrap().push((order, step));
    }
}

#[derive(Deserialize)]
struct Order {
    item: String,
    quantity: u32,
}

fn send_confirmation(pipeline: Arc<Pipeline>, order: u64, item: String) {
    std::thread::sleep(Duration::from_millis(20)); // talking to SMTP
    tracing::info!(order, %item, "confirmation email sent");
    pipeline.record(order, "confirmation");
}

async fn reserve_inventory(
    pipeline: Arc<Pipeline>,
    order: u64,
    quantity: u32,
) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(10)).await; // the inventory service
    tracing::info!(order, quantity, "inventory reserved");
    pipeline.record(order, "inventory");
    Ok(())
}

async fn notify_warehouse(pipeline: Arc<Pipeline>, order: u64) {
    tokio::time::sleep(Duration::from_millis(5)).await;
    pipeline.record(order, "warehouse");
}

fn record_analytics(pipeline: Arc<Pipeline>, order: u64) {
    pipeline.record(order, "analytics");
}

async fn order(
    State(pipeline): State<Arc<Pipeline>>,
    tasks: TaskQueue,
    Json(order): Json<Order>,
) -> (StatusCode, Json<Value>) {
    let id = pipeline.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    tasks.add_task(
        send_confirmation,
        (pipeline.clone(), id, order.item.clone()),
    );
    tasks.add_task(reserve_inventory, (pipeline.clone(), id, order.quantity));
    tasks.add_task(notify_warehouse, (pipeline.clone(), id));
    tasks.add_task(record_analytics, (pipeline, id));
    (
        StatusCode::CREATED,
        Json(json!({ "order": id, "item": order.item })),
    )
}

async fn pipeline(State(pipeline): State<Arc<Pipeline>>) -> Json<Value> {
    let steps = pipeline.steps.lock().unwrap();
    Json(json!(
        steps
            .iter()
            .map(|(order, step)| json!({ "order": order, "step": step }))
            .collect::<Vec<_>>()
    ))
}

pub(crate) fn app(runner: Runner) -> Router {
    Router::new()
        .route("/order", post(order))
        .route("/pipeline", get(pipeline))
        .with_state(Arc::new(Pipeline::default()))
        .layer(TaskLayer::new(runner))
}

#[tokio::main]
async fn main() {
    support::init_logging();
    let runner = Runner::new();
    support::serve(app(runner.clone()), runner).await;
}
