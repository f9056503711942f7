//! File processing after the upload is acknowledged.
//!
//! `POST /upload?name=FILE` with the file as the raw body saves it to
//! `uploads/`, answers at once, and queues a task that gzips it into
//! `processed/FILE.gz` and removes the original. Names that could leave the
//! directory (`../x`, `a/b`, `.hidden`) get 400 and nothing is saved.
//! `GET /processed` lists the results.
//!
//! ```text
//! cargo run --example file_processing   # PORT=3000, DATA_DIR=./data
//! curl -i -X POST 'localhost:3000/upload?name=report.txt' --data-binary @Cargo.toml
//! curl -i -X POST 'localhost:3000/upload?name=../etc/passwd' --data-binary x   # 400
//! curl localhost:3000/processed
//! ```

#[path = "support/mod.rs"]
mod support;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use afterward::{Runner, TaskQueue};
use afterward_hyper::TaskLayer;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug)]
pub(crate) struct Dirs {
    pub(crate) uploads: PathBuf,
    pub(crate) processed: PathBuf,
}

impl Dirs {
    pub(crate) fn under(root: &Path) -> Dirs {
        let dirs = Dirs {
            uploads: root.join("uploads"),
            processed: root.join("processed"),
        };
        std::fs::create_dir_all(&dirs.uploads).expect("cannot create uploads/");
        std::fs::create_dir_all(&dirs.processed).expect("cannot create processed/");
        dirs
    }
}

/// A plain file name: no separators, no `..`, not hidden, not empty.
fn safe_name(name: &str) -> Option<&str> {
    let plain = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && Path::new(name).file_name() == Some(name.as_ref());
    plain.then_some(name)
}

/// The task: compress the upload, then remove it. Sync file I/O and CPU
/// work, so it runs on the blocking pool.
fn compress_upload(dirs: Arc<Dirs>, name: String) -> io::Result<()> {
    let source = dirs.uploads.join(&name);
    let target = dirs.processed.join(format!("{name}.gz"));
    let mut encoder = GzEncoder::new(File::create(&target)?, Compression::default());
    io::copy(&mut File::open(&source)?, &mut encoder)?;
    encoder.finish()?;
    std::fs::remove_file(&source)?;
    tracing::info!(%name, "compressed");
    Ok(())
}

#[derive(Deserialize)]
struct Upload {
    name: String,
}

async fn upload(
    State(dirs): State<Arc<Dirs>>,
    tasks: TaskQueue,
    Query(upload): Query<Upload>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let Some(name) = safe_name(&upload.name) else {
        let error = format!("not a plain file name: {:?}", upload.name);
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": error })));
    };
    if let Err(error) = tokio::fs::write(dirs.uploads.join(name), &body).await {
        let error = format!("cannot save {name}: {error}");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": error })),
        );
    }
    tasks.add_task(compress_upload, (dirs.clone(), name.to_owned()));
    (
        StatusCode::ACCEPTED,
        Json(json!({ "saved": name, "bytes": body.len(), "compression": "queued" })),
    )
}

async fn processed(State(dirs): State<Arc<Dirs>>) -> Json<Value> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dirs.processed)
        .into_iter()
        .flatten()
        .flatten()
    {
        let bytes = entry.metadata().map_or(0, |m| m.len());
        files.push(json!({ "name": entry.file_name().to_string_lossy(), "bytes": bytes }));
    }
    Json(Value::Array(files))
}

pub(crate) fn app(runner: Runner, dirs: Dirs) -> Router {
    Router::new()
        .route("/upload", post(upload))
        .route("/processed", get(processed))
        .with_state(Arc::new(dirs))
        .layer(TaskLayer::new(runner))
}

#[tokio::main]
async fn main() {
    support::init_logging();
    let root = PathBuf::from(std::env::var("DATA_DIR").unwrap_or_else(|_| "data".into()));
    let runner = Runner::new();
    support::serve(app(runner.clone(), Dirs::under(&root)), runner).await;
}
