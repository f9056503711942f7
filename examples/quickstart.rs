//! The core of afterward, without any HTTP: queue tasks the way a request
//! handler would, hand the queue to a runner, and read what happened.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! For the same thing on a real hyper server, see the `afterward-hyper` crate.

use std::time::Duration;

use afterward::{FailurePolicy, Runner, TaskQueue};
use tracing::info;

/// A sync task: it may block, so it runs on tokio's blocking pool.
fn send_welcome_email(to: String, username: String) -> std::io::Result<()> {
    std::thread::sleep(Duration::from_millis(20)); // pretend to talk SMTP
    info!(%to, %username, "welcome email sent");
    Ok(())
}

/// An async task: awaited on the runtime.
async fn call_webhook(url: &'static str, event: &'static str) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(10)).await;
    if url.contains("broken") {
        return Err(format!("POST {url}: connection refused"));
    }
    info!(url, event, "webhook delivered");
    Ok(())
}

fn append_audit_log(user_id: u64, action: &'static str) {
    info!(user_id, action, "audit log appended");
}

/// What a request handler does: queue work and return at once.
fn handle_register(queue: &TaskQueue, email: &str, username: &str) -> &'static str {
    queue.add_task(send_welcome_email, (email.to_owned(), username.to_owned()));
    queue.add_task(
        call_webhook,
        ("https://hooks.example/broken", "user.created"),
    );
    queue.add_task(append_audit_log, (1, "register"));
    "201 Created"
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .compact()
        .with_target(false)
        // Colours for a terminal only: not into a pipe or a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

    let runner = Runner::builder()
        .max_concurrent_drains(16)
        .task_timeout(Duration::from_secs(5))
        .failure_policy(FailurePolicy::Continue)
        .build();

    for (email, username) in [("ada@example.com", "ada"), ("alan@example.com", "alan")] {
        let span = tracing::info_span!("request", %username);
        let _entered = span.enter();
        let queue = TaskQueue::new();
        let status = handle_register(&queue, email, username);
        info!(status, queued = queue.len(), "response sent");
        // Once the response is on its way, the queue goes to the runner.
        runner.spawn(queue);
    }

    runner.wait_idle().await;
    let report = runner.shutdown(Duration::from_secs(1)).await;
    let stats = runner.stats();
    println!();
    println!("{stats:#?}");
    println!(
        "received {} = completed {} + failed {} + panicked {} + timed out {} + skipped {} + abandoned {}",
        stats.tasks_received(),
        stats.completed(),
        stats.failed(),
        stats.panicked(),
        stats.timed_out(),
        stats.skipped(),
        stats.abandoned(),
    );
    assert_eq!(stats.tasks_received(), stats.accounted());
    assert_eq!(report.abandoned(), 0);
}
