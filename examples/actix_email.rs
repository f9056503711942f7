//! Welcome emails, sent after the response: the `email` example on
//! actix-web, with `afterward-actix`.
//!
//! `POST /register` takes `{"email": …, "username": …}`, answers `201` at
//! once, and queues the same task as `email`: a welcome message built with
//! `lettre` and written to an outbox directory (or sent over SMTP when
//! `SMTP_HOST` is set). `GET /outbox` lists what was sent. When it is told
//! to stop, the server stops first, then the tasks get ten seconds to
//! finish.
//!
//! ```text
//! cargo run --example actix_email      # PORT=3000, OUTBOX_DIR=./outbox
//! curl -i -X POST localhost:3000/register -H 'content-type: application/json' \
//!      -d '{"email": "ada@example.com", "username": "ada"}'
//! curl -i -X POST localhost:3000/register -H 'content-type: application/json' \
//!      -d '{"email": "not-an-email", "username": "bob"}'      # 422, nothing queued
//! curl localhost:3000/outbox
//! ```

// The task, the mailer and the outbox listing are `email`'s own.
#[path = "email.rs"]
#[allow(dead_code)]
pub(crate) mod email;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use afterward::{Runner, TaskQueue};
use afterward_actix::Tasks;
use email::{Mailer, Registration, send_welcome_email};
use serde_json::json;

async fn register(
    mailer: web::Data<Mailer>,
    tasks: TaskQueue,
    registration: web::Json<Registration>,
) -> HttpResponse {
    let Registration { email, username } = registration.into_inner();
    let to = match email::parse_address(&email) {
        Ok(address) => address,
        Err(message) => {
            return HttpResponse::UnprocessableEntity().json(json!({ "error": message }));
        }
    };
    tasks.add_task(
        send_welcome_email,
        (mailer.into_inner(), to, username.clone()),
    );
    HttpResponse::Created().json(json!({ "registered": username, "welcome_email": "queued" }))
}

async fn outbox(mailer: web::Data<Mailer>) -> HttpResponse {
    HttpResponse::Ok().json(email::sent_mail(&mailer.outbox))
}

/// The server on `addr`, not yet started (await it to serve), and the
/// address it listens on. `runner` is built once, outside the factory: the
/// workers come and go, the runner and its tasks outlive them.
pub(crate) fn server(
    runner: &Runner,
    mailer: Mailer,
    addr: impl ToSocketAddrs,
) -> std::io::Result<(actix_web::dev::Server, SocketAddr)> {
    std::fs::create_dir_all(&mailer.outbox)?;
    let mailer = web::Data::from(Arc::new(mailer));
    let tasks = Tasks::new(runner.clone());
    let server = HttpServer::new(move || {
        App::new()
            .wrap(tasks.clone())
            .app_data(mailer.clone())
            .route("/register", web::post().to(register))
            .route("/outbox", web::get().to(outbox))
    })
    .bind(addr)?;
    let addr = server.addrs()[0];
    Ok((server.run(), addr))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    email::support::init_logging();
    let runner = Runner::new();
    let (server, addr) = server(
        &runner,
        email::mailer_from_env(),
        ("127.0.0.1", email::support::port()),
    )?;
    tracing::info!("listening on http://{addr}");
    // 1. The server: on SIGTERM actix stops accepting and lets the workers
    //    finish the requests in flight (for up to 30 s); on Ctrl-C (SIGINT)
    //    it drops them at once. Either way their tasks are accounted for:
    //    a response cut off is a disconnect, a handler cut off is skipped.
    server.await?;
    // 2. The tasks, with a deadline; the report names what it abandons.
    let report = runner.shutdown(Duration::from_secs(10)).await;
    tracing::info!(abandoned = ?report.abandoned_tasks(), stats = ?runner.stats(), "stopped");
    Ok(())
}
