//! Each example's app, served on 127.0.0.1 and driven by a real hyper
//! client; the checks read what the background tasks left behind.
//!
//! A task is handed to the runner when hyper drops the finished response
//! body, which it does before it reads the next request on the same
//! connection. So after a second request on one keep-alive connection has
//! been answered, `Runner::wait_idle` is a real signal that the first
//! request's tasks are done.

#![allow(dead_code)]
// Each example brings its own copy of examples/support, as it does when
// built on its own.
#![allow(clippy::duplicate_mod)]

#[path = "../examples/actix_email.rs"]
mod actix_email;
#[path = "../examples/audit_log.rs"]
mod audit_log;
#[path = "../examples/email.rs"]
mod email;
#[path = "../examples/file_processing.rs"]
mod file_processing;
#[path = "../examples/middleware_tasks.rs"]
mod middleware_tasks;
#[path = "../examples/order_pipeline.rs"]
mod order_pipeline;
#[path = "../examples/webhook.rs"]
mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;

use afterward::Runner;
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// One keep-alive HTTP/1 connection.
struct Client(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client(sender)
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        json: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, Bytes) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost");
        if let Some(content_type) = json {
            req = req.header(header::CONTENT_TYPE, content_type);
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        self.0.ready().await.unwrap();
        let response = self.0.send_request(req).await.unwrap();
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    async fn post_json(&mut self, path: &str, body: &str) -> (StatusCode, Value) {
        let (status, bytes) = self
            .send("POST", path, Some("application/json"), body.as_bytes())
            .await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn get_json(&mut self, path: &str) -> Value {
        let (status, bytes) = self.send("GET", path, None, b"").await;
        assert_eq!(status, StatusCode::OK, "GET {path}");
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Sends a request on this connection and waits for every task queued
    /// by the earlier requests to finish (see the file's docs).
    async fn settle(&mut self, runner: &Runner, probe_path: &str) {
        self.send("GET", probe_path, None, b"").await;
        runner.wait_idle().await;
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("afterward-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ===== email =====

/// The email app with an outbox in the temporary directory `name`, and a
/// client connected to it.
async fn email_server(name: &str) -> (Runner, PathBuf, Client) {
    let outbox = temp_dir(name);
    let runner = Runner::new();
    let mailer = email::Mailer {
        outbox: outbox.clone(),
        smtp: None,
    };
    let addr = serve(email::app(runner.clone(), mailer)).await;
    (runner, outbox, Client::connect(addr).await)
}

/// Registers ada: answered 201 at once, the welcome email queued.
async fn register_ada(client: &mut Client) {
    let (status, body) = client
        .post_json(
            "/register",
            r#"{"email": "ada@example.com", "username": "ada"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["welcome_email"], "queued");
}

/// Registers bob with an invalid address: answered 422, saying why.
async fn refuse_bob(client: &mut Client) {
    let (status, body) = client
        .post_json(
            "/register",
            r#"{"email": "not-an-email", "username": "bob"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("invalid email address"),
        "{body}"
    );
}

/// The outbox, as the server lists it and on disk, holds ada's welcome
/// message and nothing else.
async fn outbox_holds_adas_welcome(client: &mut Client, outbox: &std::path::Path) {
    let sent = client.get_json("/outbox").await;
    let sent = sent.as_array().unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["to"], "ada <ada@example.com>");
    let file = std::fs::read_dir(outbox)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let message = std::fs::read_to_string(file).unwrap();
    assert!(message.contains("Subject: Welcome, ada!"), "{message}");
    assert!(
        message.contains("From: \"afterward demo\" <welcome@example.com>"),
        "{message}"
    );
}

#[tokio::test]
async fn email_registration_writes_a_welcome_message_to_the_outbox() {
    let (runner, outbox, mut client) = email_server("outbox").await;
    register_ada(&mut client).await;
    client.settle(&runner, "/outbox").await;
    outbox_holds_adas_welcome(&mut client, &outbox).await;
    assert_eq!(runner.stats().completed(), 1);
}

/// The email app's handler, tested with a `Recorder`: it shows what the
/// request queued before anything runs, then runs it on demand.
#[tokio::test]
async fn email_registration_queues_the_email_and_sends_it_only_when_run() {
    use afterward::Recorder;
    use tower::ServiceExt;

    let outbox = temp_dir("outbox-recorded");
    let recorder = Recorder::new();
    let mailer = email::Mailer {
        outbox: outbox.clone(),
        smtp: None,
    };
    let app = email::app(recorder.runner(), mailer);

    let request = Request::post("/register")
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(
            r#"{"email": "ada@example.com", "username": "ada"}"#,
        ))
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    // Reading the body to its end is what hands the queue over.
    response.into_body().collect().await.unwrap();

    assert_eq!(recorder.queued(), ["send_welcome_email"]);
    assert_eq!(
        std::fs::read_dir(&outbox).unwrap().count(),
        0,
        "nothing sent yet"
    );

    let report = recorder.run().await;
    assert_eq!(report.completed(), 1, "{report:?}");
    assert_eq!(std::fs::read_dir(&outbox).unwrap().count(), 1);
    assert!(recorder.queued().is_empty());
}

#[tokio::test]
async fn email_an_invalid_address_gets_422_and_queues_nothing() {
    let (runner, outbox, mut client) = email_server("outbox-invalid").await;
    refuse_bob(&mut client).await;
    client.settle(&runner, "/outbox").await;
    assert_eq!(runner.stats().tasks_received(), 0);
    assert_eq!(std::fs::read_dir(&outbox).unwrap().count(), 0);
}

#[tokio::test]
async fn email_an_unreachable_smtp_server_is_a_failed_task_with_its_error() {
    let runner = Runner::new();
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mailer = email::Mailer {
        outbox: temp_dir("outbox-smtp"),
        smtp: Some(("127.0.0.1".into(), port)),
    };
    let addr = serve(email::app(runner.clone(), mailer)).await;
    let mut client = Client::connect(addr).await;
    let (status, _) = client
        .post_json(
            "/register",
            r#"{"email": "ada@example.com", "username": "ada"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    client.settle(&runner, "/outbox").await;
    assert_eq!(runner.stats().failed(), 1);
}

// ===== actix_email =====

/// The same registration on actix-web, and the shutdown order its `main`
/// follows: the server first, then the tasks.
#[tokio::test]
async fn actix_email_registration_writes_a_welcome_message_then_shuts_down_in_order() {
    let outbox = temp_dir("actix-outbox");
    let runner = Runner::new();
    let mailer = actix_email::email::Mailer {
        outbox: outbox.clone(),
        smtp: None,
    };
    // The server runs on worker threads of its own, each with its own
    // runtime; the runner runs on this test's.
    let (server, addr) = actix_email::server(&runner, mailer, "127.0.0.1:0").unwrap();
    let handle = server.handle();
    let serving = tokio::spawn(server);
    let mut client = Client::connect(addr).await;

    register_ada(&mut client).await;
    refuse_bob(&mut client).await;
    client.settle(&runner, "/outbox").await;
    outbox_holds_adas_welcome(&mut client, &outbox).await;
    drop(client);

    handle.stop(true).await;
    serving.await.unwrap().unwrap();
    let report = runner.shutdown(std::time::Duration::from_secs(10)).await;
    assert_eq!(report.abandoned(), 0);
    let stats = runner.stats();
    assert!(
        stats.tasks_received() == 1 && stats.completed() == 1,
        "{stats:?}"
    );
    assert_eq!(std::fs::read_dir(&outbox).unwrap().count(), 1);
}

// ===== audit_log =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_appends_whole_lines_even_from_concurrent_requests() {
    let dir = temp_dir("audit");
    let path = dir.join("audit.log");
    let runner = Runner::new();
    let addr = serve(audit_log::app(
        runner.clone(),
        audit_log::AuditLog::new(path.clone()),
    ))
    .await;

    let mut clients = Vec::new();
    for user in 0..8_u64 {
        clients.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            for n in 0..10 {
                let details = "x".repeat(2000 + n * 100); // long lines, to catch torn writes
                let body = format!(
                    r#"{{"user_id": {user}, "action": "click {n}", "details": "{details}"}}"#
                );
                let (status, _) = client.post_json("/action", &body).await;
                assert_eq!(status, StatusCode::ACCEPTED);
            }
            // A later request on this connection: its tasks are handed over.
            client.send("GET", "/logs?limit=1", None, b"").await;
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    runner.wait_idle().await;

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 80);
    for line in &lines {
        let entry: Value = serde_json::from_str(line).expect("a torn or interleaved line");
        assert!(entry["at_unix_ms"].as_u64().unwrap() > 0);
    }
    let mut client = Client::connect(addr).await;
    let last = client.get_json("/logs?limit=5").await;
    assert_eq!(last.as_array().unwrap().len(), 5);
    assert_eq!(runner.stats().completed(), 80);
}

// ===== file_processing =====

#[tokio::test]
async fn file_processing_gzips_the_upload_and_removes_the_original() {
    use std::io::Read;
    let root = temp_dir("files");
    let runner = Runner::new();
    let addr = serve(file_processing::app(
        runner.clone(),
        file_processing::Dirs::under(&root),
    ))
    .await;
    let mut client = Client::connect(addr).await;

    let content: Vec<u8> = (0..100_000_u32)
        .flat_map(|i| (i % 7).to_le_bytes())
        .collect();
    let (status, body) = client
        .send("POST", "/upload?name=report.bin", None, &content)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body:?}");
    client.settle(&runner, "/processed").await;

    let listed = client.get_json("/processed").await;
    assert_eq!(listed[0]["name"], "report.bin.gz");
    let gz = std::fs::File::open(root.join("processed/report.bin.gz")).unwrap();
    let mut unpacked = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut unpacked)
        .unwrap();
    assert_eq!(unpacked, content);
    assert!(
        !root.join("uploads/report.bin").exists(),
        "the original was not removed"
    );
    assert_eq!(runner.stats().completed(), 1);
}

#[tokio::test]
async fn file_processing_rejects_names_that_leave_the_directory() {
    let root = temp_dir("files-traversal");
    let runner = Runner::new();
    let addr = serve(file_processing::app(
        runner.clone(),
        file_processing::Dirs::under(&root),
    ))
    .await;
    let mut client = Client::connect(addr).await;
    for name in [
        "../escape.txt",
        "a%2Fb.txt",
        "..",
        ".hidden",
        "",
        "dir\\x.txt",
    ] {
        let (status, body) = client
            .send("POST", &format!("/upload?name={name}"), None, b"data")
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name:?}: {body:?}");
    }
    client.settle(&runner, "/processed").await;
    assert_eq!(runner.stats().tasks_received(), 0);
    assert_eq!(std::fs::read_dir(root.join("uploads")).unwrap().count(), 0);
    assert!(!root.join("escape.txt").exists());
}

// ===== order_pipeline =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_pipeline_runs_the_four_steps_in_order_for_each_order() {
    let runner = Runner::new();
    let addr = serve(order_pipeline::app(runner.clone())).await;
    let mut clients = Vec::new();
    for item in ["keyboard", "mouse", "screen"] {
        clients.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            let body = format!(r#"{{"item": "{item}", "quantity": 1}}"#);
            let (status, _) = client.post_json("/order", &body).await;
            assert_eq!(status, StatusCode::CREATED);
            client
        }));
    }
    let mut last = None;
    for client in clients {
        let mut client = client.await.unwrap();
        client.send("GET", "/pipeline", None, b"").await;
        last = Some(client);
    }
    runner.wait_idle().await;
    let steps = last.unwrap().get_json("/pipeline").await;
    let steps = steps.as_array().unwrap();
    assert_eq!(steps.len(), 12);
    for order in 1..=3 {
        let mine: Vec<&str> = steps
            .iter()
            .filter(|s| s["order"] == order)
            .map(|s| s["step"].as_str().unwrap())
            .collect();
        assert_eq!(
            mine,
            ["confirmation", "inventory", "warehouse", "analytics"],
            "order {order}"
        );
    }
}

// ===== webhook =====

#[tokio::test]
async fn webhook_events_reach_the_receiver_and_a_failing_one_is_counted() {
    let (receiver, received) = webhook::receiver();
    let receiver_addr = serve(receiver).await;
    let runner = Runner::new();
    let hook = webhook::Webhook::new(
        runner.clone(),
        format!("http://{receiver_addr}/hook"),
        format!("http://{receiver_addr}/broken"),
    );
    let addr = serve(webhook::app(hook)).await;
    let mut client = Client::connect(addr).await;

    let (status, _) = client
        .post_json("/event", r#"{"type": "user.created", "id": 7}"#)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = client
        .post_json("/event?broken=true", r#"{"type": "oops"}"#)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    client.settle(&runner, "/stats").await;

    assert_eq!(
        *received.lock().unwrap(),
        [serde_json::json!({"type": "user.created", "id": 7})]
    );
    let stats = client.get_json("/stats").await;
    assert_eq!(
        (stats["delivered"].as_u64(), stats["failed"].as_u64()),
        (Some(1), Some(1))
    );
}

// ===== middleware_tasks =====

#[tokio::test]
async fn middleware_and_handler_tasks_both_run_middleware_first() {
    let runner = Runner::new();
    let log = middleware_tasks::RunLog::default();
    let addr = serve(middleware_tasks::app(runner.clone(), log.clone())).await;
    let mut client = Client::connect(addr).await;
    let (status, body) = client.send("POST", "/checkout", None, b"").await;
    assert_eq!(
        (status, body.as_ref()),
        (StatusCode::OK, &b"order placed"[..])
    );
    client.settle(&runner, "/log").await;
    // The probe request's own middleware task ran in its own queue, which
    // may interleave with the first request's; within one request, the
    // middleware's task comes first.
    let log = log.lock().unwrap().clone();
    let checkout: Vec<&str> = log
        .iter()
        .map(String::as_str)
        .filter(|line| !line.ends_with("GET /log"))
        .collect();
    assert_eq!(
        checkout,
        [
            "middleware: request log POST /checkout",
            "handler: charge 4200 cents"
        ]
    );
}
