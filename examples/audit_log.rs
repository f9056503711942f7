//! An audit log, appended after the response.
//!
//! `POST /action` takes `{"user_id": …, "action": …, "details": …}` and
//! queues the append of one JSON line to a log file. `GET /logs?limit=N`
//! returns the last N entries. Each line is written whole, under a lock, so
//! concurrent requests never interleave partial lines.
//!
//! ```text
//! cargo run --example audit_log         # PORT=3000, AUDIT_LOG=./audit.log
//! curl -i -X POST localhost:3000/action -H 'content-type: application/json' \
//!      -d '{"user_id": 7, "action": "login", "details": "from 127.0.0.1"}'
//! curl 'localhost:3000/logs?limit=10'
//! ```

#[path = "support/mod.rs"]
mod support;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use afterward::{Runner, TaskQueue};
use afterward_hyper::TaskLayer;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The log file, and the lock that keeps its lines whole.
#[derive(Debug)]
pub(crate) struct AuditLog {
    pub(crate) path: PathBuf,
    lock: Mutex<()>,
}

impl AuditLog {
    pub(crate) fn new(path: PathBuf) -> AuditLog {
        AuditLog {
            path,
            lock: Mutex::new(()),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
struct Action {
    user_id: u64,
    action: String,
    #[serde(default)]
    details: Value,
}

#[derive(Serialize)]
struct Entry {
    at_unix_ms: u128,
    #[serde(flatten)]
    action: Action,
}

/// The task: sync file I/O, so it runs on the blocking pool.
fn append_audit_line(log: Arc<AuditLog>, entry: Entry) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(&entry)?;
    line.push(b'\n');
    // One `write_all` of the whole line, under the lock: lines of
    // concurrent requests never interleave.
    let _whole_lines = log.lock.lock().unwrap_or_else(|e| e.into_inner());
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log.path)?
        .write_all(&line)
}

async fn record(
    State(log): State<Arc<AuditLog>>,
    tasks: TaskQueue,
    Json(action): Json<Action>,
) -> StatusCode {
    let at_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    tasks.add_task(append_audit_line, (log, Entry { at_unix_ms, action }));
    StatusCode::ACCEPTED
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn logs(State(log): State<Arc<AuditLog>>, Query(query): Query<Limit>) -> Json<Vec<Value>> {
    let text = std::fs::read_to_string(&log.path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let limit = query.limit.unwrap_or(20).min(lines.len());
    let entries = lines[lines.len() - limit..]
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or(Value::Null))
        .collect();
    Json(entries)
}

pub(crate) fn app(runner: Runner, log: AuditLog) -> Router {
    Router::new()
        .route("/action", post(record))
        .route("/logs", get(logs))
        .with_state(Arc::new(log))
        .layer(TaskLayer::new(runner))
}

#[tokio::main]
async fn main() {
    support::init_logging();
    let path = std::env::var("AUDIT_LOG").unwrap_or_else(|_| "audit.log".into());
    let runner = Runner::new();
    support::serve(app(runner.clone(), AuditLog::new(path.into())), runner).await;
}
