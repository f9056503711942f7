//! Graceful shutdown in the right order: stop accepting, let the connections
//! finish (`GracefulShutdown`), then give the tasks a deadline
//! (`Runner::shutdown`).

mod common;

use std::time::Duration;

use afterward::Runner;
use afterward_hyper::TaskService;
use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

async fn archive_upload(
    started: mpsc::UnboundedSender<()>,
    finish: oneshot::Receiver<()>,
    events: Events,
) {
    started.send(()).unwrap();
    finish.await.unwrap();
    events.push("upload archived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_close_first_then_tasks_finish_within_the_deadline() {
    for proto in BOTH {
        let runner = Runner::new();
        let events = Events::default();
        let (started_tx, mut started_rx) = mpsc::unbounded_channel();
        let (finish_tx, finish_rx) = oneshot::channel();
        let finish_rx = std::sync::Arc::new(std::sync::Mutex::new(Some(finish_rx)));
        let e = events.clone();
        let handler = move |req: Request<Incoming>| {
            let finish = finish_rx.lock().unwrap().take().expect("one request");
            queue_of(&req).add_task(archive_upload, (started_tx.clone(), finish, e.clone()));
            async { Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
        };
        let service = TaskService::new(service_fn(handler), runner.clone());

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let graceful = GracefulShutdown::new();
            loop {
                tokio::select! {
                    Ok((stream, _)) = listener.accept() => {
                        let conn = auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(stream), service.clone())
                            .into_owned();
                        tokio::spawn(graceful.watch(conn));
                    }
                    _ = &mut stop_rx => break,
                }
            }
            drop(listener);
            graceful.shutdown().await;
        });

        let mut client = Client::connect(addr, proto).await;
        let (_, body) = client.get("/upload").await;
        assert_eq!(body, "ok");
        started_rx.recv().await.unwrap();

        // 1. Connections: the server stops and its connections close, while
        //    the request's task is still running.
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("connections did not close")
            .unwrap();
        assert_eq!(runner.stats().drains_running(), 1, "{proto:?}");

        // 2. Tasks: the runner waits for the task, within its deadline.
        let shutdown = tokio::spawn({
            let runner = runner.clone();
            async move { runner.shutdown(Duration::from_secs(30)).await }
        });
        finish_tx.send(()).unwrap();
        let report = shutdown.await.unwrap();
        assert_eq!(report.abandoned(), 0, "{proto:?}");
        assert_eq!(events.list(), ["upload archived"]);
        let stats = runner.stats();
        assert_eq!((stats.completed(), stats.tasks_received()), (1, 1));
    }
}
