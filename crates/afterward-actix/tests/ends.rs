//! When a response is complete, over real sockets: one test per way an
//! actix-web response body ends, over HTTP/1.1, h2c and HTTP/2 over TLS.
//!
//! Completion tests use `DisconnectPolicy::Skip`: were a finished body
//! mistaken for a dropped one, its task would be skipped, not completed.

mod common;

use actix_web::dev::Service;
use actix_web::{App, HttpResponse, web};
use afterward::{RunIf, TaskQueue};
use afterward_actix::{DisconnectPolicy, Tasks};
use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;

/// Serves a handler that queues one task "one" and answers `respond()`.
fn one_task(policy: DisconnectPolicy, respond: fn() -> HttpResponse) -> Fixture {
    serve_tasks(policy, move |tasks, _, log| {
        add_logged(&tasks, &log, "one");
        let response = respond();
        async move { response }
    })
}

/// Sends `method /` on a fresh connection of each protocol, reads the whole
/// response, and checks that the one task ran once.
async fn each_request_completes(method: &str, respond: fn() -> HttpResponse, body: &str) {
    for proto in PROTOS {
        let fixture = one_task(DisconnectPolicy::Skip, respond);
        let mut client = fixture.server.connect(proto).await;
        let (_, received) = client.fetch(method, "/").await;
        assert_eq!(received, body, "{proto:?}");
        assert_eq!(fixture.tally(1).await, (1, 0, 0), "{method} {proto:?}");
        assert_eq!(fixture.log.events(), ["ran one"], "{proto:?}");
        client.close();
        fixture.server.stop(true).await;
    }
}

// ===== bodies polled to their end =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_read_to_its_end_runs_its_tasks_once() {
    each_request_completes("GET", || HttpResponse::Ok().body("hello"), "hello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_read_to_its_end_runs_its_tasks_once() {
    each_request_completes(
        "GET",
        || HttpResponse::Ok().body(Drip::new(3, Ending::Done)),
        "drip\ndrip\ndrip\n",
    )
    .await;
}

/// A body that breaks mid-stream was still handed over to its end: actix
/// took its last chunk (the error) and dropped it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_yields_an_error_counts_as_complete() {
    for proto in PROTOS {
        let fixture = one_task(DisconnectPolicy::Skip, || {
            HttpResponse::Ok().body(Drip::new(2, Ending::Fails))
        });
        let mut client = fixture.server.connect(proto).await;
        let response = client.send("GET", "/").await;
        assert_eq!(response.status(), 200);
        // The client sees the response cut short.
        let read = within(response.into_body().collect()).await;
        assert!(read.is_err(), "{proto:?}");
        assert_eq!(fixture.tally(1).await, (1, 0, 0), "{proto:?}");
        drop(client);
        fixture.server.stop(true).await;
    }
}

// ===== bodies actix drops without polling =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_body_is_complete_from_the_start() {
    each_request_completes("GET", || HttpResponse::Ok().finish(), "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_no_size_is_complete_from_the_start() {
    each_request_completes(
        "GET",
        || HttpResponse::Ok().body(actix_web::body::None::new()),
        "",
    )
    .await;
}

/// On HTTP/2 actix sends the head of a `HEAD` response with END_STREAM and
/// drops its body unpolled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_request_is_complete_from_the_start() {
    each_request_completes("HEAD", || HttpResponse::Ok().body("hello"), "").await;
}

/// On HTTP/2 actix drops the body of a 204 unpolled, even one that is not
/// empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_204_is_complete_from_the_start() {
    each_request_completes("GET", || HttpResponse::NoContent().finish(), "").await;
    each_request_completes("GET", || HttpResponse::NoContent().body("dropped"), "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_is_complete_from_the_start() {
    each_request_completes("GET", || HttpResponse::NotModified().finish(), "").await;
}

// ===== clients that leave =====

/// The client reads the first chunk of a body that never ends, then leaves:
/// on HTTP/1.1 it closes its socket, on HTTP/2 it resets the stream (hyper
/// sends RST_STREAM when the body is dropped) and keeps the connection,
/// which serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_body_is_a_disconnect_under_both_policies() {
    for policy in [DisconnectPolicy::Run, DisconnectPolicy::Skip] {
        for proto in PROTOS {
            let fixture = one_task(policy, || {
                HttpResponse::Ok().body(Drip::new(0, Ending::Never))
            });
            let mut client = fixture.server.connect(proto).await;
            let mut body = client.send("GET", "/").await.into_body();
            assert_eq!(next_chunk(&mut body).await, "drip\n");
            drop(body);
            let left = if proto == Proto::H1 {
                drop(client);
                fixture.tally(1).await
            } else {
                fixture.log.settled(1).await;
                // Only the stream was reset: the connection goes on, and
                // its next request's task runs too.
                let (status, _) = client.fetch("HEAD", "/").await;
                assert_eq!(status, 200);
                drop(client);
                let (completed, skipped, abandoned) = fixture.tally(2).await;
                (completed - 1, skipped, abandoned)
            };
            let expected = match policy {
                DisconnectPolicy::Run => (1, 0, 0),
                _ => (0, 1, 0),
            };
            assert_eq!(left, expected, "{policy:?} {proto:?}");
            fixture.server.stop(true).await;
        }
    }
}

/// A body of a known size whose last bytes were handed to actix is
/// complete, even if the client leaves while actix is still writing them
/// and actix never polls the body to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sized_body_is_complete_once_its_last_byte_is_handed_over() {
    for proto in PROTOS {
        // Far more than the socket buffers and HTTP/2 windows hold: actix is
        // still writing it when the client leaves.
        let fixture = one_task(DisconnectPolicy::Skip, || {
            HttpResponse::Ok().body(Bytes::from(vec![b'x'; 32 << 20]))
        });
        let mut client = fixture.server.connect(proto).await;
        let mut body = client.send("GET", "/").await.into_body();
        next_chunk(&mut body).await;
        drop((body, client));
        assert_eq!(fixture.tally(1).await, (1, 0, 0), "{proto:?}");
        fixture.server.stop(true).await;
    }
}

// ===== outcomes =====

/// A handler that returns `Err` gets actix-web's error response: its tasks
/// are handed over like any response's, with a failed outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_returns_err_hands_its_tasks_over_as_a_failure() {
    let fixture = serve_tasks(DisconnectPolicy::Skip, |tasks, _, log| {
        add_logged(&tasks, &log, "always");
        add_logged(&tasks, &log, "on success").run_if(RunIf::Success);
        add_logged(&tasks, &log, "on failure").run_if(RunIf::Failure);
        async { Err::<HttpResponse, _>(actix_web::error::ErrorBadRequest("no such user")) }
    });
    for (n, proto) in PROTOS.into_iter().enumerate() {
        let mut client = fixture.server.connect(proto).await;
        let (status, body) = client.get("/").await;
        assert_eq!((status.as_u16(), &body[..]), (400, "no such user"));
        let done = n + 1;
        assert_eq!(
            fixture.tally(3 * done).await,
            (2 * done, done, 0),
            "{proto:?}"
        );
    }
    assert_eq!(
        fixture.log.events(),
        ["ran always", "ran on failure"].repeat(3)
    );
    fixture.server.stop(true).await;
}

/// A middleware further out that boxes the body (as `Compress` and many
/// others do) cannot unwrap it past the hook: boxing a body that is all in
/// one buffer takes the buffer out, which would drop the wrapper, unfinished,
/// before the response was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outer_middleware_that_boxes_the_body_keeps_the_hook() {
    let fixture = Fixture::start(|runner, log| {
        let log = log.clone();
        // The middleware registered last is the outermost.
        App::new()
            .wrap(Tasks::new(runner.clone()).on_disconnect(DisconnectPolicy::Skip))
            .wrap_fn(|req, service| {
                let response = service.call(req);
                async move { Ok(response.await?.map_into_boxed_body()) }
            })
            .default_service(web::to(move |tasks: TaskQueue| {
                add_logged(&tasks, &log, "one");
                async { HttpResponse::Ok().body("hello") }
            }))
    });
    for proto in PROTOS {
        let mut client = fixture.server.connect(proto).await;
        assert_eq!(client.get("/").await.1, "hello", "{proto:?}");
    }
    assert_eq!(fixture.tally(3).await, (3, 0, 0));
    fixture.server.stop(true).await;
}
