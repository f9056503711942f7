//! The documented shutdown order, `ServerHandle::stop(true)` and then
//! `Runner::shutdown(deadline)`, with work still going on: tasks run on the
//! runner's runtime, so a worker that goes away takes none of them with
//! it; what the deadline cuts off is named in the report; nothing is
//! counted twice, even in the wrong order.

mod common;

use std::future::pending;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::HttpResponse;
use afterward_actix::DisconnectPolicy;
use common::*;
use tokio::sync::{Notify, oneshot};

/// A server whose handler queues a task "archive" that writes "started"
/// and waits for `release` before it writes "finished", and leaves on its
/// worker's runtime a future that never ends, holding a sender: the
/// returned receiver learns when that runtime is dropped.
fn archiving_server(release: &Arc<Notify>) -> (Fixture, oneshot::Receiver<()>) {
    let (gone_tx, gone) = oneshot::channel::<()>();
    let gone_tx = Arc::new(Mutex::new(Some(gone_tx)));
    let release = release.clone();
    let fixture = serve_tasks(DisconnectPolicy::Run, move |tasks, _, log| {
        let release = release.clone();
        let archive = move || async move {
            log.write("started");
            release.notified().await;
            log.write("finished");
        };
        tasks.add_task(archive, ()).name("archive");
        if let Some(gone) = gone_tx.lock().unwrap().take() {
            actix_web::rt::spawn(async move {
                let _gone = gone;
                pending::<()>().await;
            });
        }
        async { "ok" }
    });
    (fixture, gone)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_still_running_when_its_worker_is_gone_completes() {
    for proto in PROTOS {
        let release = Arc::new(Notify::new());
        let (fixture, gone) = archiving_server(&release);
        let (runner, log) = (&fixture.runner, &fixture.log);
        assert_eq!(
            fixture.server.connect(proto).await.get("/upload").await.1,
            "ok"
        );
        log.wait_for("started", 1).await;

        // 1. The server: its workers stop, and the runtime of the one that
        //    served the request is dropped, while the task is still running.
        fixture.server.stop(true).await;
        assert!(within(gone).await.is_err(), "the worker's runtime is gone");
        release.notify_one();
        // 2. The tasks: the one still running finishes within the deadline.
        let report = runner.shutdown(Duration::from_secs(10)).await;
        assert_eq!(report.abandoned(), 0, "{proto:?}: {report:?}");
        assert_eq!(log.lines(), ["started", "finished"], "{proto:?}");
        assert_eq!(tally(&runner.stats()), (1, 0, 0), "{proto:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_still_running_at_the_deadline_is_abandoned_and_named() {
    let release = Arc::new(Notify::new());
    let (fixture, gone) = archiving_server(&release);
    assert_eq!(
        fixture
            .server
            .connect(Proto::H2)
            .await
            .get("/upload")
            .await
            .1,
        "ok"
    );
    fixture.log.wait_for("started", 1).await;
    fixture.server.stop(true).await;
    assert!(within(gone).await.is_err(), "the worker's runtime is gone");

    let report = fixture.runner.shutdown(Duration::from_millis(50)).await;
    assert_eq!(report.abandoned_tasks(), ["archive"]);
    assert_eq!(tally(&fixture.runner.stats()), (0, 0, 1));
    assert_eq!(fixture.log.lines(), ["started"]);
}

/// A response still streaming when the server stops: the worker gives up on
/// it after its shutdown timeout and drops it, unfinished, possibly after
/// `stop` has returned. The runner's shutdown knows the request is in
/// flight and waits for its hand-off; the policy decides the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_still_streaming_when_the_server_stops_is_a_disconnect() {
    for policy in [DisconnectPolicy::Run, DisconnectPolicy::Skip] {
        for proto in [Proto::H1, Proto::H2] {
            let fixture = serve_tasks(policy, |tasks, _, log| {
                add_logged(&tasks, &log, "stream");
                async { HttpResponse::Ok().body(Drip::new(0, Ending::Never)) }
            });
            let mut client = fixture.server.connect(proto).await;
            let mut body = client.send("GET", "/").await.into_body();
            next_chunk(&mut body).await;

            fixture.server.stop(true).await;
            let report = fixture.runner.shutdown(Duration::from_secs(10)).await;
            assert_eq!(report.abandoned(), 0, "{policy:?} {proto:?}");
            let expected = match policy {
                DisconnectPolicy::Run => (1, 0, 0),
                _ => (0, 1, 0),
            };
            let counted = tally(&fixture.runner.stats());
            assert_eq!(counted, expected, "{policy:?} {proto:?}");
        }
    }
}

/// A handler still running when the server stops is dropped with its
/// worker: it produced no response, so its tasks are skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_still_running_when_the_server_stops_has_its_tasks_skipped() {
    let fixture = serve_tasks(DisconnectPolicy::Run, |tasks, _, log| {
        add_logged(&tasks, &log, "never");
        log.write("handler waits");
        pending::<HttpResponse>()
    });
    let mut client = fixture.server.connect(Proto::H1).await;
    let request = tokio::spawn(async move { client.try_send("GET", "/").await });
    fixture.log.wait_for("handler waits", 1).await;

    fixture.server.stop(true).await;
    let report = fixture.runner.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.abandoned(), 0);
    assert_eq!(tally(&fixture.runner.stats()), (0, 1, 0));
    let answer = request.await.unwrap();
    assert!(answer.is_err(), "the request never got a response");
}

/// The wrong order: the runner first, while a response is still streaming.
/// Its report names the unfinished request's task as abandoned; when the
/// body is dropped later, nothing is run or counted a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_shut_down_first_counts_an_unfinished_request_once() {
    for proto in PROTOS {
        let fixture = serve_tasks(DisconnectPolicy::Run, |tasks, _, log| {
            add_logged(&tasks, &log, "stream");
            async { HttpResponse::Ok().body(Drip::new(0, Ending::Never)) }
        });
        let mut client = fixture.server.connect(proto).await;
        let mut body = client.send("GET", "/").await.into_body();
        next_chunk(&mut body).await;

        let report = fixture.runner.shutdown(Duration::from_millis(50)).await;
        assert_eq!(report.abandoned_tasks(), ["stream"], "{proto:?}");
        drop((body, client));
        fixture.log.settled(1).await;
        fixture.server.stop(true).await;
        assert_eq!(tally(&fixture.runner.stats()), (0, 0, 1), "{proto:?}");
        assert!(fixture.log.events().is_empty(), "{proto:?}");
    }
}
