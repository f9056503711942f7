//! What could break "every task counted once, never lost": a handler that
//! panics, a body that panics while streaming or when dropped, a client
//! that leaves while its handler runs, a task added after the hand-off by
//! work left on the worker, and a few hundred requests at once with clients
//! leaving mid-body.

mod common;
#[path = "../../afterward/tests/on_purpose/mod.rs"]
mod on_purpose;

use std::sync::Arc;

use actix_web::HttpResponse;
use afterward_actix::DisconnectPolicy;
use common::*;
use http_body_util::BodyExt;
use on_purpose::{PanicOnDrop, hide_panics};
use tokio::sync::Notify;

/// Sends `GET path` and reads what comes of it, whatever that is: an
/// error, or a response cut short.
async fn read_whatever(client: &mut Client, path: &str) {
    if let Ok(response) = client.try_send("GET", path).await {
        let _ = within(response.into_body().collect()).await;
    }
}

// ===== panics =====

/// The handler's future panics: the connection (HTTP/1.1) or the stream
/// (HTTP/2) is dropped with it, the tasks it queued are skipped, and the
/// worker goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_has_its_tasks_skipped_and_the_worker_goes_on() {
    hide_panics(&["the handler panics"]);
    let fixture = serve_tasks(DisconnectPolicy::Run, |tasks, req, log| {
        add_logged(&tasks, &log, "one");
        let panics = req.path() == "/panic";
        async move {
            assert!(!panics, "the handler panics");
            "fine"
        }
    });
    for (n, proto) in PROTOS.into_iter().enumerate() {
        let mut client = fixture.server.connect(proto).await;
        assert!(client.try_send("GET", "/panic").await.is_err(), "{proto:?}");
        let mut client = fixture.server.connect(proto).await;
        assert_eq!(client.get("/fine").await.1, "fine", "{proto:?}");
        let done = n + 1;
        assert_eq!(fixture.tally(2 * done).await, (done, done, 0), "{proto:?}");
    }
    fixture.server.stop(true).await;
}

/// A body that panics while streaming is dropped unfinished, during the
/// unwinding: a disconnect, under either policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_panics_mid_stream_is_a_disconnect() {
    hide_panics(&["the body panics"]);
    for policy in [DisconnectPolicy::Run, DisconnectPolicy::Skip] {
        let fixture = serve_tasks(policy, |tasks, _, log| {
            add_logged(&tasks, &log, "one");
            async { HttpResponse::Ok().body(Drip::new(2, Ending::Panics)) }
        });
        for (n, proto) in PROTOS.into_iter().enumerate() {
            read_whatever(&mut fixture.server.connect(proto).await, "/").await;
            let done = n + 1;
            let expected = match policy {
                DisconnectPolicy::Run => (done, 0, 0),
                _ => (0, done, 0),
            };
            assert_eq!(fixture.tally(done).await, expected, "{policy:?} {proto:?}");
        }
        fixture.server.stop(true).await;
    }
}

/// The wrapped body panics when actix drops it, after its end: the
/// hand-off, in the wrapper's other field, still happens during the
/// unwinding. (On HTTP/1.1 the panic takes the connection down before the
/// response is written out: what the client gets does not matter.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_whose_destructor_panics_still_hands_its_tasks_over() {
    hide_panics(&[]);
    let fixture = serve_tasks(DisconnectPolicy::Skip, |tasks, _, log| {
        add_logged(&tasks, &log, "one");
        let body = Drip::new(1, Ending::Done).holding(PanicOnDrop);
        async { HttpResponse::Ok().body(body) }
    });
    for (n, proto) in PROTOS.into_iter().enumerate() {
        read_whatever(&mut fixture.server.connect(proto).await, "/").await;
        assert_eq!(fixture.tally(n + 1).await, (n + 1, 0, 0), "{proto:?}");
    }
    fixture.server.stop(true).await;
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
    for kind in ["/full", "/stream"] {
        for proto in PROTOS {
            let release = Arc::new(Notify::new());
            let rel = release.clone();
            let fixture = serve_tasks(DisconnectPolicy::Skip, move |tasks, req, log| {
                let release = rel.clone();
                add_logged(&tasks, &log, "one");
                let full = req.path() == "/full";
                async move {
                    log.write("handler waits");
                    release.notified().await;
                    match full {
                        true => HttpResponse::Ok().body("full"),
                        false => HttpResponse::Ok().body(Drip::new(0, Ending::Never)),
                    }
                }
            });
            let mut client = fixture.server.connect(proto).await;
            let request = tokio::spawn(async move {
                let _ = client.try_send("GET", kind).await;
            });
            fixture.log.wait_for("handler waits", 1).await;
            request.abort(); // drops the client: its socket closes
            assert!(request.await.unwrap_err().is_cancelled());
            release.notify_one();
            let counted = fixture.tally(1).await;
            match (kind, proto) {
                ("/full", Proto::H1) => assert_eq!(counted, (1, 0, 0)),
                ("/full", _) => assert_eq!(counted.0 + counted.1, 1, "{proto:?}"),
                _ => assert_eq!(counted, (0, 1, 0), "{proto:?}"),
            }
            fixture.server.stop(true).await;
        }
    }
}

/// Work the handler leaves on the worker adds a task after the response was
/// finished and its queue handed over: the task is not lost, it runs in a
/// drain of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_added_after_the_hand_off_by_work_left_on_the_worker_runs() {
    let late = Arc::new(Notify::new());
    let lt = late.clone();
    let fixture = serve_tasks(DisconnectPolicy::Run, move |tasks, _, log| {
        let late = lt.clone();
        add_logged(&tasks, &log, "in time");
        actix_web::rt::spawn(async move {
            late.notified().await;
            add_logged(&tasks, &log, "late");
        });
        async { "ok" }
    });
    let mut client = fixture.server.connect(Proto::H1).await;
    assert_eq!(client.get("/").await.1, "ok");
    assert_eq!(fixture.tally(1).await, (1, 0, 0));
    late.notify_one();
    assert_eq!(fixture.tally(2).await, (2, 0, 0));
    assert_eq!(fixture.log.events(), ["ran in time", "ran late"]);
    drop(client);
    fixture.server.stop(true).await;
}

// ===== load =====

/// A few hundred requests over several connections of each protocol, on two
/// workers, with a fifth of the clients leaving mid-body: every task is
/// counted once, and exactly those of the clients that left are skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_every_task_is_counted_once() {
    const CONNECTIONS: usize = 12;
    const REQUESTS: usize = 30;
    let fixture = serve_tasks(DisconnectPolicy::Skip, |tasks, req, log| {
        add_logged(&tasks, &log, "first");
        add_logged(&tasks, &log, "second");
        let response = match req.path() {
            "/full" => HttpResponse::Ok().body("full"),
            "/stream" => HttpResponse::Ok().body(Drip::new(2, Ending::Done)),
            _ => HttpResponse::Ok().body(Drip::new(0, Ending::Never)),
        };
        async move { response }
    });
    let fixture = Arc::new(fixture);
    let mut clients = Vec::new();
    for c in 0..CONNECTIONS {
        let (fixture, proto) = (fixture.clone(), PROTOS[c % PROTOS.len()]);
        clients.push(tokio::spawn(async move {
            let mut client = fixture.server.connect(proto).await;
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
                            client = fixture.server.connect(proto).await;
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
    let counted = fixture.tally(total).await;
    assert_eq!(counted, (total - left * 2, left * 2, 0));
    let fixture = Arc::into_inner(fixture).unwrap();
    fixture.server.stop(true).await;
}
