//! What every example server does the same way: log to the terminal, listen
//! on `PORT` (default 3000), and on Ctrl-C shut down in the right order:
//! connections first, then the background tasks, with a deadline.
#![allow(dead_code)]

use std::time::Duration;

use afterward::Runner;
use axum::Router;
use tokio::net::TcpListener;

pub(crate) fn init_logging() {
    tracing_subscriber::fmt()
        .compact()
        .with_target(false)
        // Colours for a terminal only: not into a pipe or a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
}

pub(crate) fn port() -> u16 {
    std::env::var("PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(3000)
}

pub(crate) async fn serve(app: Router, runner: Runner) {
    let listener = TcpListener::bind(("127.0.0.1", port()))
        .await
        .expect("cannot listen on PORT");
    tracing::info!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("server error");
    let report = runner.shutdown(Duration::from_secs(10)).await;
    tracing::info!(abandoned = ?report.abandoned_tasks(), stats = ?runner.stats(), "stopped");
}
