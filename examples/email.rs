//! Welcome emails, sent after the response.
//!
//! `POST /register` takes `{"email": …, "username": …}`, answers at once, and
//! queues a welcome email: a real RFC 5322 message built with `lettre`, and
//! delivered to an outbox directory with lettre's file transport (or over
//! SMTP when `SMTP_HOST` is set, e.g. to a local Mailpit). `GET /outbox`
//! lists what was sent.
//!
//! ```text
//! cargo run --example email            # PORT=3000, OUTBOX_DIR=./outbox
//! curl -i -X POST localhost:3000/register -H 'content-type: application/json' \
//!      -d '{"email": "ada@example.com", "username": "ada"}'
//! curl -i -X POST localhost:3000/register -H 'content-type: application/json' \
//!      -d '{"email": "not-an-email", "username": "bob"}'      # 422, nothing queued
//! curl localhost:3000/outbox
//! ```

#[path = "support/mod.rs"]
pub(crate) mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use afterward::{Runner, TaskQueue};
use afterward_hyper::TaskLayer;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::{Address, FileTransport, SmtpTransport, Transport};
use serde::Deserialize;
use serde_json::{Value, json};

/// Where mail goes.
#[derive(Debug)]
pub(crate) struct Mailer {
    pub(crate) outbox: PathBuf,
    /// `(host, port)` of a plain SMTP server, when one is configured.
    pub(crate) smtp: Option<(String, u16)>,
}

#[derive(Deserialize)]
pub(crate) struct Registration {
    pub(crate) email: String,
    pub(crate) username: String,
}

/// The task. It is sync (file or socket I/O), so it runs on tokio's blocking
/// pool, after the response has gone out.
pub(crate) fn send_welcome_email(
    mailer: Arc<Mailer>,
    to: Address,
    username: String,
) -> Result<(), String> {
    let message = Message::builder()
        .from("afterward demo <welcome@example.com>".parse().unwrap())
        .to(Mailbox::new(Some(username.clone()), to))
        .subject(format!("Welcome, {username}!"))
        .header(ContentType::TEXT_PLAIN)
        .body(format!("Hi {username},\n\nthanks for signing up.\n"))
        .map_err(|e| e.to_string())?;
    match &mailer.smtp {
        Some((host, port)) => {
            let smtp = SmtpTransport::builder_dangerous(host).port(*port).build();
            smtp.send(&message)
                .map_err(|e| format!("SMTP {host}:{port}: {e}"))?;
        }
        None => {
            FileTransport::new(&mailer.outbox)
                .send(&message)
                .map_err(|e| format!("outbox {}: {e}", mailer.outbox.display()))?;
        }
    }
    tracing::info!(%username, "welcome email sent");
    Ok(())
}

async fn register(
    State(mailer): State<Arc<Mailer>>,
    tasks: TaskQueue,
    Json(registration): Json<Registration>,
) -> (StatusCode, Json<Value>) {
    let to = match parse_address(&registration.email) {
        Ok(address) => address,
        Err(message) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "error": message })),
            );
        }
    };
    tasks.add_task(
        send_welcome_email,
        (mailer, to, registration.username.clone()),
    );
    (
        StatusCode::CREATED,
        Json(json!({ "registered": registration.username, "welcome_email": "queued" })),
    )
}

/// The recipient, or the message a client gets for an invalid address.
pub(crate) fn parse_address(email: &str) -> Result<Address, String> {
    email
        .parse()
        .map_err(|error| format!("invalid email address {email:?}: {error}"))
}

/// The messages in the outbox: file name and recipient.
async fn outbox(State(mailer): State<Arc<Mailer>>) -> Json<Value> {
    Json(sent_mail(&mailer.outbox))
}

pub(crate) fn sent_mail(outbox: &Path) -> Value {
    let mut sent = Vec::new();
    if let Ok(entries) = std::fs::read_dir(outbox) {
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let to = text
                .lines()
                .find_map(|line| line.strip_prefix("To: "))
                .unwrap_or_default();
            sent.push(json!({ "file": entry.file_name().to_string_lossy(), "to": to }));
        }
    }
    Value::Array(sent)
}

pub(crate) fn app(runner: Runner, mailer: Mailer) -> Router {
    std::fs::create_dir_all(&mailer.outbox).expect("cannot create the outbox directory");
    Router::new()
        .route("/register", post(register))
        .route("/outbox", get(outbox))
        .with_state(Arc::new(mailer))
        .layer(TaskLayer::new(runner))
}

/// The outbox directory from `OUTBOX_DIR`, or an SMTP server from
/// `SMTP_HOST` and `SMTP_PORT`.
pub(crate) fn mailer_from_env() -> Mailer {
    let smtp = std::env::var("SMTP_HOST").ok().map(|host| {
        let port = std::env::var("SMTP_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(25);
        (host, port)
    });
    Mailer {
        outbox: std::env::var("OUTBOX_DIR")
            .unwrap_or_else(|_| "outbox".into())
            .into(),
        smtp,
    }
}

#[tokio::main]
async fn main() {
    support::init_logging();
    let runner = Runner::new();
    support::serve(app(runner.clone(), mailer_from_env()), runner).await;
}
