//! Run conditions against real responses, h1 and h2: each request queues
//! one task of each condition, and the response's outcome decides which run.

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use afterward::{RunIf, Runner};
use afterward_hyper::{DisconnectPolicy, TaskService};
use bytes::Bytes;
use common::*;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;

/// A gRPC-style body: one message, then trailers, or nothing more.
struct Grpc {
    message: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for Grpc {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        match self.trailers.take() {
            Some(trailers) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            // Never ends: the client leaves first.
            None => Poll::Pending,
        }
    }
}

fn grpc_status(code: &'static str) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert("grpc-status", HeaderValue::from_static(code));
    map
}

fn grpc(body: Grpc) -> Response<ResBody> {
    let mut response = Response::new(boxed(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

fn respond(path: &str) -> Response<ResBody> {
    let message = || Some(Bytes::from_static(b"\0\0\0\0\x02hi"));
    match path {
        "/ok" => Response::new(boxed(Full::new(Bytes::from_static(b"ok")))),
        "/missing" | "/broken" => {
            let status = if path == "/missing" {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            let mut response = Response::new(boxed(Full::new(Bytes::from_static(b"no"))));
            *response.status_mut() = status;
            response
        }
        "/grpc-ok" => grpc(Grpc {
            message: message(),
            trailers: Some(grpc_status("0")),
        }),
        "/grpc-internal" => grpc(Grpc {
            message: message(),
            trailers: Some(grpc_status("13")),
        }),
        // A non-zero status anywhere is a failure, whatever comes later.
        "/grpc-13-then-0" => {
            let mut response = grpc(Grpc {
                message: message(),
                trailers: Some(grpc_status("0")),
            });
            let headers = response.headers_mut();
            headers.insert("grpc-status", HeaderValue::from_static("13"));
            response
        }
        // A stream that ends, read to its end, with no status anywhere: its
        // client sees a protocol error.
        "/grpc-no-status" => {
            let mut response =
                Response::new(boxed(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi"))));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            response
        }
        "/grpc-trailers-only" => {
            let mut response = Response::new(boxed(Empty::new()));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", HeaderValue::from_static("5"));
            response
        }
        // A stream the client leaves before its trailers: nobody knows.
        _ => grpc(Grpc {
            message: message(),
            trailers: None,
        }),
    }
}

/// Serves `respond`; each request queues tasks named `always`, `success`
/// and `failure` with those conditions, which record their names when they
/// run and settle their probes when they run or are skipped.
async fn start(runner: &Runner, events: &Events, probes: &Probes) -> std::net::SocketAddr {
    let (events, probes) = (events.clone(), probes.sender());
    let handler = move |req: Request<Incoming>| {
        let queue = queue_of(&req);
        for (name, condition) in [
            ("always", RunIf::Always),
            ("success", RunIf::Success),
            ("failure", RunIf::Failure),
        ] {
            let (e, probe) = (events.clone(), probes.probe(name));
            queue
                .add_task(
                    move || {
                        let _probe = probe;
                        e.push(name);
                    },
                    (),
                )
                .name(name)
                .run_if(condition);
        }
        let response = respond(req.uri().path());
        async move { Ok::<_, BoxError>(response) }
    };
    let service =
        TaskService::new(service_fn(handler), runner.clone()).on_disconnect(DisconnectPolicy::Run);
    serve(service).await.0
}

/// The tasks that ran, in order.
async fn ran_after(path: &str, proto: Proto) -> Vec<String> {
    let (runner, events, mut probes) = (Runner::new(), Events::default(), Probes::new());
    let addr = start(&runner, &events, &probes).await;
    let mut client = Client::connect(addr, proto).await;
    let response = client.send("GET", path).await.unwrap();
    let mut body = response.into_body();
    if path == "/grpc-cut" {
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        drop(body);
        if proto == Proto::H1 {
            client.disconnect();
        }
    } else {
        body.collect().await.unwrap();
    }
    // The hand-off happens when hyper drops the body: wait for all three.
    for _ in 0..3 {
        probes.settled().await;
    }
    runner.wait_idle().await;
    let stats = runner.stats();
    let ran = events.list();
    assert_eq!(
        (stats.completed(), stats.skipped()),
        (ran.len(), 3 - ran.len()),
        "{path} over {proto:?}: {stats:?}"
    );
    assert_eq!(stats.tasks_received(), stats.accounted(), "{stats:?}");
    ran
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_responses_outcome_decides_which_tasks_run() {
    let success = ["always", "success"].as_slice();
    let failure = ["always", "failure"].as_slice();
    let unknown = ["always"].as_slice();
    let cases = [
        ("/ok", success),
        ("/missing", failure),
        ("/broken", failure),
        ("/grpc-ok", success),
        ("/grpc-internal", failure),
        ("/grpc-trailers-only", failure),
        ("/grpc-13-then-0", failure),
        ("/grpc-no-status", failure),
        ("/grpc-cut", unknown),
    ];
    for proto in BOTH {
        for (path, expected) in cases {
            assert_eq!(
                ran_after(path, proto).await,
                expected,
                "{path} over {proto:?}"
            );
        }
    }
}
