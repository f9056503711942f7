//! What could break "every task counted once, never lost": a handler that
//! panics, a body that panics while streaming or when dropped, a client
//! that leaves while its handler runs, a task added after the hand-off by
//! work left on the worker, and a few hundred requests at once with clients
//! leaving mid-body.

mod common;
#[path = "../../afterward/tests/on_purpose/mod.rs"]
mod on_purpose;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::{App, HttpResponse, web};
use afterward::{Runner, Stats, TaskQueue};
use afterward_actix::{DisconnectPolicy, Tasks};
use bytes::Bytes;
use common::*;
use on_purpose::{PanicOnDrop, hide_panics};
use tokio::sync::Notify;

#[track_caller]
fn expect(stats: &Stats, completed: usize, skipped: usize, case: impl std::fmt::Debug) {
    assert_eq!(
        (stats.completed(), stats.skipped(), stats.tasks_received()),
        (completed, skipped, completed + skipped),
        "{case:?}: {stats:?}"
    );
    assert_eq!(stats.tasks_received(), stats.accounted(), "{case:?}");
}

/// Serves `/{kind}`: each queues one task, then answers as `respond(kind)`.
fn server_of(
    runner: &Runner,
    log: &Log,
    policy: DisconnectPolicy,
    respond: fn(&str) -> HttpResponse,
) -> Server {
    let (r, l) = (runner.clone(), log.clone());
    Server::start(move || {
        let log = l.clone();
        App::new()
            .wrap(Tasks::new(r.clone()).on_disconnect(policy))
            .route(
                "/{kind}",
                web::get().to(move |tasks: TaskQueue, kind: web::Path<String>| {
                    add_logged(&tasks, &log, "one");
                    let response = respond(&kind);
                    async move { response }
                }),
            )
    })
}

// ===== panics =====

/// The handler's future panics: the connection (HTTP/1.1) or the stream
/// (HTTP/2) is dropped with it, the tasks it queued are skipped, and the
/// worker goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_has_its_tasks_skipped_and_the_worker_goes_on() {
    hide_panics(&["the handler panics"]);
    for proto in PROTOS {
        let (runner, log) = (Runner::new(), Log::default());
        let server = server_of(&runner, &log, DisconnectPolicy::Run, |kind| match kind {
            "panic" => panic!("the handler panics"),
            _ => HttpResponse::Ok().body("fine"),
        });
        let mut client = server.connect(proto).await;
        assert!(client.try_send("GET", "/panic").await.is_err(), "{proto:?}");
        log.settled(1).await;
        let mut client = server.connect(proto).await;
        assert_eq!(client.get("/fine").await.1, "fine", "{proto:?}");
        log.settled(2).await;
        runner.wait_idle().await;
        expect(&runner.stats(), 1, 1, proto);
        client.close();
        server.stop(true).await;
    }
}

/// A body that panics while streaming is dropped unfinished, during the
/// unwinding: a disconnect, under either policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_panics_mid_stream_is_a_disconnect() {
    hide_panics(&["the body panics"]);
    for policy in [DisconnectPolicy::Run, DisconnectPolicy::Skip] {
        for proto in PROTOS {
            let (runner, log) = (Runner::new(), Log::default());
            let server = server_of(&runner, &log, policy, |_| {
                HttpResponse::Ok().body(Drip::new(2, Ending::Panics))
            });
            let mut client = server.connect(proto).await;
            let response = client.send("GET", "/panic").await;
            let _ = within(http_body_util::BodyExt::collect(response.into_body())).await;
            log.settled(1).await;
            runner.wait_idle().await;
            match policy {
                DisconnectPolicy::Run => expect(&runner.stats(), 1, 0, (policy, proto)),
                _ => expect(&runner.stats(), 0, 1, (policy, proto)),
            }
            client.close();
            server.stop(true).await;
        }
    }
}

/// A one-chunk body whose destructor panics.
struct Bomb {
    chunk: Option<Bytes>,
    _bomb: PanicOnDrop,
}

impl MessageBody for Bomb {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(self.chunk.take().map(Ok))
    }
}

/// The wrapped body panics when actix drops it: the hand-off, in the
/// wrapper's other field, still happens during the unwinding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_whose_destructor_panics_still_hands_its_tasks_over() {
    hide_panics(&[]);
    for proto in PROTOS {
        let (runner, log) = (Runner::new(), Log::default());
        let server = server_of(&runner, &log, DisconnectPolicy::Skip, |_| {
            HttpResponse::Ok().body(Bomb {
                chunk: Some(Bytes::from_static(b"boom")),
                _bomb: PanicOnDrop,
            })
        });
        let mut client = server.connect(proto).await;
        // On HTTP/1.1 the panic takes the connection down before the
        // response is written: whatever the client gets does not matter.
        if let Ok(response) = client.try_send("GET", "/bomb").await {
            let _ = within(http_body_util::BodyExt::collect(response.into_body())).await;
        }
        log.settled(1).await;
        runner.wait_idle().await;
        expect(&runner.stats(), 1, 0, proto);
        client.close();
        server.stop(true).await;
    }
}

// ===== clients and work that outlive their request =====

/// actix-web does not cancel a handler whose client left: the handler
/// finishes, and its response goes through the usual rules. A streamed
/// body finds the client gone and is a disconnect; a one-chunk body is
/// taken whole by the HTTP/1.1 dispatcher (complete), while on HTTP/2 it
/// may be dropped unpolled once the stream is known to be gone (a
/// disconnect). Either way, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_the_handler_runs() {
    for kind in ["full", "stream"] {
        for proto in PROTOS {
            let (runner, log) = (Runner::new(), Log::default());
            let release = Arc::new(Notify::new());
            let (r, l, rel) = (runner.clone(), log.clone(), release.clone());
            let server = Server::start(move || {
                let (log, release) = (l.clone(), rel.clone());
                App::new()
                    .wrap(Tasks::new(r.clone()).on_disconnect(DisconnectPolicy::Skip))
                    .route(
                        "/{kind}",
                        web::get().to(move |tasks: TaskQueue, kind: web::Path<String>| {
                            let (log, release) = (log.clone(), release.clone());
                            add_logged(&tasks, &log, "one");
                            async move {
                                log.write("handler waits");
                                release.notified().await;
                                match kind.as_str() {
                                    "full" => HttpResponse::Ok().body("full"),
                                    _ => HttpResponse::Ok().body(Drip::new(0, Ending::Never)),
                                }
                            }
                        }),
                    )
            });
            let mut client = server.connect(proto).await;
            let path = format!("/{kind}");
            let request = tokio::spawn(async move {
                let _ = client.try_send("GET", &path).await;
            });
            log.wait_for("handler waits", 1).await;
            request.abort(); // drops the client: its socket closes
            assert!(request.await.unwrap_err().is_cancelled());
            release.notify_one();
            log.settled(1).await;
            runner.wait_idle().await;
            let stats = runner.stats();
            match (kind, proto) {
                ("full", Proto::H1) => expect(&stats, 1, 0, (kind, proto)),
                ("full", _) => {
                    assert_eq!(
                        stats.completed() + stats.skipped(),
                        1,
                        "{proto:?}: {stats:?}"
                    );
                    assert_eq!(stats.tasks_received(), stats.accounted());
                }
                _ => expect(&stats, 0, 1, (kind, proto)),
            }
            server.stop(true).await;
        }
    }
}

/// Work the handler leaves on the worker adds a task after the response was
/// finished and its queue handed over: the task is not lost, it runs in a
/// drain of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_added_after_the_hand_off_by_work_left_on_the_worker_runs() {
    let (runner, log) = (Runner::new(), Log::default());
    let late = Arc::new(Notify::new());
    let (r, l, lt) = (runner.clone(), log.clone(), late.clone());
    let server = Server::start(move || {
        let (log, late) = (l.clone(), lt.clone());
        App::new()
            .wrap(Tasks::new(r.clone()))
            .default_service(web::to(move |tasks: TaskQueue| {
                let (log, late) = (log.clone(), late.clone());
                add_logged(&tasks, &log, "in time");
                actix_web::rt::spawn(async move {
                    late.notified().await;
                    add_logged(&tasks, &log, "late");
                });
                async { "ok" }
            }))
    });
    let mut client = server.connect(Proto::H1).await;
    assert_eq!(client.get("/").await.1, "ok");
    log.settled(1).await;
    late.notify_one();
    log.settled(2).await;
    runner.wait_idle().await;
    expect(&runner.stats(), 2, 0, "late");
    assert_eq!(log.events(), ["ran in time", "ran late"]);
    client.close();
    server.stop(true).await;
}

// ===== load =====

/// A few hundred requests over several connections of each protocol, on two
/// workers, with a fifth of the clients leaving mid-body: every task is
/// counted once, and exactly those of the clients that left are skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_every_task_is_counted_once() {
    const CONNECTIONS: usize = 12;
    const REQUESTS: usize = 30;
    let (runner, log) = (Runner::new(), Log::default());
    let (r, l) = (runner.clone(), log.clone());
    let server = Server::with_workers(2, move || {
        let log = l.clone();
        App::new()
            .wrap(Tasks::new(r.clone()).on_disconnect(DisconnectPolicy::Skip))
            .route(
                "/{kind}",
                web::get().to(move |tasks: TaskQueue, kind: web::Path<String>| {
                    add_logged(&tasks, &log, "first");
                    add_logged(&tasks, &log, "second");
                    let response = match kind.as_str() {
                        "full" => HttpResponse::Ok().body("full"),
                        "stream" => HttpResponse::Ok().body(Drip::new(2, Ending::Done)),
                        _ => HttpResponse::Ok().body(Drip::new(0, Ending::Never)),
                    };
                    async move { response }
                }),
            )
    });
    let server = Arc::new(server);
    let mut clients = Vec::new();
    for c in 0..CONNECTIONS {
        let (server, proto) = (server.clone(), PROTOS[c % PROTOS.len()]);
        clients.push(tokio::spawn(async move {
            let mut client = server.connect(proto).await;
            let mut left = 0;
            for n in 0..REQUESTS {
                match n % 5 {
                    0 | 1 => assert_eq!(client.get("/full").await.1, "full"),
                    2 | 3 => assert_eq!(client.get("/stream").await.1, "drip\ndrip\n"),
                    _ => {
                        let mut body = client.send("GET", "/leave").await.into_body();
                        next_chunk(&mut body).await;
                        drop(body);
                        left += 1;
                        if proto == Proto::H1 {
                            // The socket closes: go on on a new one.
                            client = server.connect(proto).await;
                        }
                    }
                }
            }
            left
        }));
    }
    let mut left = 0;
    for client in clients {
        left += within(client).await.unwrap();
    }
    let total = CONNECTIONS * REQUESTS * 2;
    log.settled(total).await;
    runner.wait_idle().await;
    expect(&runner.stats(), total - left * 2, left * 2, "load");
    Arc::into_inner(server).unwrap().stop(true).await;
}
