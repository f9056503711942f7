//! The documented shutdown order, `ServerHandle::stop(true)` and then
//! `Runner::shutdown(deadline)`, with work still going on: tasks run on the
//! runner's runtime, so a worker that goes away takes none of them with
//! it; what the deadline cuts off is named in the report; nothing is
//! counted twice, even in the wrong order.

mod common;

use std::future::pending;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpResponse, web};
use afterward::{Runner, Stats, TaskQueue};
use afterward_actix::{DisconnectPolicy, Tasks};
use common::*;
use tokio::sync::{Notify, oneshot};

#[track_caller]
fn conserved(stats: &Stats) {
    assert_eq!(stats.tasks_received(), stats.accounted(), "{stats:?}");
}

/// A server whose one route queues a task "archive" that writes "started"
/// and waits for `release` before it writes "finished", and leaves on its
/// worker's runtime a future that never ends, holding `gone`: the sender
/// is dropped when that runtime is.
fn archiving_server(
    runner: &Runner,
    log: &Log,
    release: &Arc<Notify>,
) -> (Server, oneshot::Receiver<()>) {
    let (gone_tx, gone) = oneshot::channel::<()>();
    let gone_tx = Arc::new(Mutex::new(Some(gone_tx)));
    let (r, l, release) = (runner.clone(), log.clone(), release.clone());
    let server = Server::start(move || {
        let (log, release, gone_tx) = (l.clone(), release.clone(), gone_tx.clone());
        App::new()
            .wrap(Tasks::new(r.clone()))
            .default_service(web::to(move |tasks: TaskQueue| {
                let (log, release) = (log.clone(), release.clone());
                tasks
                    .add_task(
                        move || async move {
                            log.write("started");
                            release.notified().await;
                            log.write("finished");
                        },
                        (),
                    )
                    .name("archive");
                if let Some(gone) = gone_tx.lock().unwrap().take() {
                    actix_web::rt::spawn(async move {
                        let _gone = gone;
                        pending::<()>().await
                    });
                }
                async { "ok" }
            }))
    });
    (server, gone)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_still_running_when_its_worker_is_gone_completes() {
    for proto in PROTOS {
        let (runner, log, release) = (Runner::new(), Log::default(), Arc::new(Notify::new()));
        let (server, gone) = archiving_server(&runner, &log, &release);
        let mut client = server.connect(proto).await;
        assert_eq!(client.get("/upload").await.1, "ok");
        log.wait_for("started", 1).await;

        // 1. The server: its worker stops, and its runtime is dropped, while
        //    the task is still running.
        client.close();
        server.stop(true).await;
        assert!(within(gone).await.is_err(), "the worker's runtime is gone");
        release.notify_one();
        // 2. The tasks: the one still running finishes within the deadline.
        let report = runner.shutdown(Duration::from_secs(10)).await;
        assert_eq!(report.abandoned(), 0, "{proto:?}: {report:?}");
        assert_eq!(log.lines(), ["started", "finished"], "{proto:?}");
        let stats = runner.stats();
        assert_eq!(stats.completed(), 1, "{proto:?}");
        conserved(&stats);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_still_running_at_the_deadline_is_abandoned_and_named() {
    let (runner, log, release) = (Runner::new(), Log::default(), Arc::new(Notify::new()));
    let (server, gone) = archiving_server(&runner, &log, &release);
    let mut client = server.connect(Proto::H2).await;
    assert_eq!(client.get("/upload").await.1, "ok");
    log.wait_for("started", 1).await;
    client.close();
    server.stop(true).await;
    assert!(within(gone).await.is_err(), "the worker's runtime is gone");

    let report = runner.shutdown(Duration::from_millis(50)).await;
    assert_eq!(report.abandoned_tasks(), ["archive"]);
    let stats = runner.stats();
    assert_eq!((stats.abandoned(), stats.completed()), (1, 0), "{stats:?}");
    conserved(&stats);
    assert_eq!(log.lines(), ["started"]);
}

/// A response still streaming when the server stops: the worker gives up on
/// it after its shutdown timeout and drops it, unfinished, possibly after
/// `stop` has returned. The runner's shutdown knows the request is in
/// flight and waits for its hand-off; the policy decides the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_still_streaming_when_the_server_stops_is_a_disconnect() {
    for policy in [DisconnectPolicy::Run, DisconnectPolicy::Skip] {
        for proto in [Proto::H1, Proto::H2] {
            let (runner, log) = (Runner::new(), Log::default());
            let (r, l) = (runner.clone(), log.clone());
            let server = Server::start(move || {
                let log = l.clone();
                App::new()
                    .wrap(Tasks::new(r.clone()).on_disconnect(policy))
                    .default_service(web::to(move |tasks: TaskQueue| {
                        add_logged(&tasks, &log, "stream");
                        async { HttpResponse::Ok().body(Drip::new(0, Ending::Never)) }
                    }))
            });
            let mut client = server.connect(proto).await;
            let mut body = client.send("GET", "/").await.into_body();
            next_chunk(&mut body).await;

            server.stop(true).await;
            let report = runner.shutdown(Duration::from_secs(10)).await;
            assert_eq!(report.abandoned(), 0, "{policy:?} {proto:?}");
            let stats = runner.stats();
            let expected = match policy {
                DisconnectPolicy::Run => (1, 0),
                _ => (0, 1),
            };
            assert_eq!(
                (stats.completed(), stats.skipped()),
                expected,
                "{policy:?} {proto:?}: {stats:?}"
            );
            conserved(&stats);
        }
    }
}

/// A handler still running when the server stops is dropped with its
/// worker: it produced no response, so its tasks are skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_still_running_when_the_server_stops_has_its_tasks_skipped() {
    let (runner, log) = (Runner::new(), Log::default());
    let (r, l) = (runner.clone(), log.clone());
    let server = Server::start(move || {
        let log = l.clone();
        App::new()
            .wrap(Tasks::new(r.clone()))
            .default_service(web::to(move |tasks: TaskQueue| {
                add_logged(&tasks, &log, "never");
                log.write("handler waits");
                pending::<HttpResponse>()
            }))
    });
    let mut client = server.connect(Proto::H1).await;
    let request = tokio::spawn(async move { client.try_send("GET", "/").await });
    log.wait_for("handler waits", 1).await;

    server.stop(true).await;
    let report = runner.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.abandoned(), 0);
    let stats = runner.stats();
    assert_eq!((stats.skipped(), stats.completed()), (1, 0), "{stats:?}");
    conserved(&stats);
    assert!(
        request.await.unwrap().is_err(),
        "the request never got a response"
    );
}

/// The wrong order: the runner first, while a response is still streaming.
/// Its report names the unfinished request's task as abandoned; when the
/// body is dropped later, nothing is run or counted a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_shut_down_first_counts_an_unfinished_request_once() {
    for proto in PROTOS {
        let (runner, log) = (Runner::new(), Log::default());
        let (r, l) = (runner.clone(), log.clone());
        let server = Server::start(move || {
            let log = l.clone();
            App::new()
                .wrap(Tasks::new(r.clone()))
                .default_service(web::to(move |tasks: TaskQueue| {
                    add_logged(&tasks, &log, "stream");
                    async { HttpResponse::Ok().body(Drip::new(0, Ending::Never)) }
                }))
        });
        let mut client = server.connect(proto).await;
        let mut body = client.send("GET", "/").await.into_body();
        next_chunk(&mut body).await;

        let report = runner.shutdown(Duration::from_millis(50)).await;
        assert_eq!(report.abandoned(), 1, "{proto:?}");
        drop(body);
        client.close();
        log.settled(1).await;
        server.stop(true).await;
        let stats = runner.stats();
        assert_eq!(
            (stats.tasks_received(), stats.abandoned()),
            (1, 1),
            "{proto:?}: {stats:?}"
        );
        conserved(&stats);
        assert!(log.events().is_empty(), "{proto:?}");
    }
}
