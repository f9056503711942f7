//! When a response is finished, over real sockets: one test per fact about
//! how hyper ends a body, each for HTTP/1 and HTTP/2 unless noted.
//!
//! Completion tests use `DisconnectPolicy::Skip`: were a finished body
//! mistaken for a dropped one, its task would be skipped, not completed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use afterward::{Runner, Stats, TaskQueue};
use afterward_hyper::{DisconnectPolicy, TaskService};
use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::sync::mpsc;

/// Serves `respond` behind a `TaskService`. `respond` gets the request and
/// its queue and returns the response.
async fn start<F>(runner: &Runner, policy: DisconnectPolicy, respond: F) -> std::net::SocketAddr
where
    F: Fn(Request<Incoming>, TaskQueue) -> Result<Response<ResBody>, BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let handler = move |req: Request<Incoming>| {
        let queue = queue_of(&req);
        let result = respond(req, queue);
        async move { result }
    };
    let service = TaskService::new(service_fn(handler), runner.clone()).on_disconnect(policy);
    serve(service).await.0
}

#[track_caller]
fn expect(stats: &Stats, completed: usize, skipped: usize, proto: Proto) {
    assert_eq!(
        (stats.completed(), stats.skipped(), stats.tasks_received()),
        (completed, skipped, completed + skipped),
        "{proto:?}: {stats:?}"
    );
    assert_eq!(stats.tasks_received(), stats.accounted(), "{proto:?}");
}

/// One GET with one recorded task; returns the response head and body.
async fn one_task_request<F>(
    proto: Proto,
    method: &str,
    body: F,
) -> (Runner, Response<Incoming>, Probes, Events, Client)
where
    F: Fn() -> Response<ResBody> + Clone + Send + Sync + 'static,
{
    let runner = Runner::new();
    let probes = Probes::new();
    let events = Events::default();
    let (sender, e) = (probes.sender(), events.clone());
    let addr = start(&runner, DisconnectPolicy::Skip, move |_req, queue| {
        record_task(&queue, &e, "one", sender.probe("one"));
        Ok(body())
    })
    .await;
    let mut client = Client::connect(addr, proto).await;
    let response = client.send(method, "/").await.unwrap();
    // The client goes back too: the connection must stay open while the
    // test reads the body.
    (runner, response, probes, events, client)
}

async fn finish(runner: &Runner, probes: &mut Probes, events: &Events, proto: Proto) {
    assert_eq!(probes.settled().await, "one");
    runner.wait_idle().await;
    expect(&runner.stats(), 1, 0, proto);
    assert_eq!(events.list(), ["task one"], "{proto:?}");
}

// 1. A `Full` body: hyper stops after the data frame, since
//    `is_end_stream()` turns true. (13.) Its Content-Length survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_body_runs_tasks_once_and_keeps_its_content_length() {
    for proto in BOTH {
        let (runner, response, mut probes, events, _client) =
            one_task_request(proto, "GET", || {
                Response::new(boxed(Full::new(Bytes::from_static(b"hello"))))
            })
            .await;
        assert_eq!(response.headers()[header::CONTENT_LENGTH], "5", "{proto:?}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
        finish(&runner, &mut probes, &events, proto).await;
    }
}

// 2. An `Empty` body is never polled at all. (13.) Its `is_end_stream`
//    reaches hyper: on HTTP/2 the response goes out as HEADERS with
//    END_STREAM, which the client sees as a body already at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_body_runs_tasks_once() {
    for proto in BOTH {
        let (runner, response, mut probes, events, _client) =
            one_task_request(proto, "GET", || Response::new(boxed(Empty::<Bytes>::new()))).await;
        assert!(response.body().is_end_stream(), "{proto:?}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
        finish(&runner, &mut probes, &events, proto).await;
    }
}

/// The same without a size hint: only `is_end_stream()` says the body is
/// over, before and after its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_without_a_size_hint_end_by_is_end_stream() {
    for proto in BOTH {
        for chunks in [
            vec![],
            vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")],
        ] {
            let expected: Vec<u8> = chunks.concat();
            let (runner, response, mut probes, events, _client) =
                one_task_request(proto, "GET", move || {
                    Response::new(boxed(Chunks::new(chunks.clone(), End::ByEndStream)))
                })
                .await;
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, expected, "{proto:?}");
            finish(&runner, &mut probes, &events, proto).await;
        }
    }
}

// 3. A streaming body with an explicit Content-Length: HTTP/1 stops at the
//    byte count without asking for the end. The body here would never end
//    by itself. (HTTP/2 reads bodies to their end, so there it ends.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_streaming_body_runs_tasks_once_not_as_a_disconnect() {
    for proto in BOTH {
        let end = match proto {
            Proto::H1 => End::Pending,
            Proto::H2 => End::None,
        };
        let (runner, response, mut probes, events, _client) =
            one_task_request(proto, "GET", move || {
                let chunks = vec![Bytes::from_static(b"hello"), Bytes::from_static(b"world")];
                Response::builder()
                    .header(header::CONTENT_LENGTH, "10")
                    .body(boxed(Chunks::new(chunks, end)))
                    .unwrap()
            })
            .await;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "helloworld");
        finish(&runner, &mut probes, &events, proto).await;
    }
}

// 4. HEAD, 204 and 304: HTTP/1 drops the body without polling it, so the
//    body here never ends by itself; HTTP/2 polls it to its end. (13.) A HEAD
//    response keeps its Content-Length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_204_and_304_run_tasks_once() {
    for proto in BOTH {
        let end = match proto {
            Proto::H1 => End::Pending,
            Proto::H2 => End::None,
        };
        for (method, status) in [
            ("HEAD", StatusCode::OK),
            ("GET", StatusCode::NO_CONTENT),
            ("GET", StatusCode::NOT_MODIFIED),
        ] {
            let (runner, response, mut probes, events, _client) =
                one_task_request(proto, method, move || {
                    // HTTP/2 forbids DATA on a HEAD response, and hyper's h2
                    // server would send it: there the body must be empty.
                    let body = if method == "HEAD" && proto == Proto::H1 {
                        boxed(Full::new(Bytes::from_static(b"hello")))
                    } else {
                        boxed(Chunks::new(Vec::new(), end))
                    };
                    Response::builder().status(status).body(body).unwrap()
                })
                .await;
            assert_eq!(response.status(), status, "{proto:?}");
            if method == "HEAD" && proto == Proto::H1 {
                assert_eq!(response.headers()[header::CONTENT_LENGTH], "5", "{proto:?}");
            }
            assert!(
                response
                    .into_body()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
                    .is_empty()
            );
            finish(&runner, &mut probes, &events, proto).await;
        }
    }
}

// 5. A trailers frame ends the body; nothing is polled after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_end_the_body_and_run_tasks_once() {
    for proto in BOTH {
        let (runner, response, mut probes, events, _client) =
            one_task_request(proto, "GET", || {
                let chunks = vec![Bytes::from_static(b"data")];
                Response::new(boxed(Chunks::new(chunks, End::Trailers)))
            })
            .await;
        let collected = response.into_body().collect().await.unwrap();
        if proto == Proto::H2 {
            assert_eq!(collected.trailers().unwrap()["x-checksum"], "abc");
        }
        assert_eq!(collected.to_bytes(), "data");
        finish(&runner, &mut probes, &events, proto).await;
    }
}

// 6. 1 MiB in 256 chunks to a slow reader: the task starts only after the
//    last chunk was polled (one timeline records both), and the client gets
//    every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_task_starts_before_the_last_chunk_of_a_large_stream() {
    const CHUNK: usize = 4096;
    const CHUNKS: usize = 256;
    for proto in BOTH {
        let (runner, mut probes, events, sender, e) = fixture();
        let addr = start(&runner, DisconnectPolicy::Skip, move |_req, queue| {
            record_task(&queue, &e, "after", sender.probe("after"));
            let chunks = (0..CHUNKS)
                .map(|i| Bytes::from(vec![(i % 251) as u8; CHUNK]))
                .collect();
            Ok(Response::new(boxed(
                Chunks::new(chunks, End::None).recording(&e),
            )))
        })
        .await;
        let mut client = Client::connect(addr, proto).await;
        let mut body = client.send("GET", "/").await.unwrap().into_body();
        let mut received = Vec::with_capacity(CHUNK * CHUNKS);
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                received.extend_from_slice(&data);
            }
            frames += 1;
            if frames % 8 == 0 {
                // A slow reader, so the server's sends back up meanwhile.
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        assert_eq!(received.len(), CHUNK * CHUNKS, "{proto:?}");
        for (i, chunk) in received.chunks(CHUNK).enumerate() {
            assert!(
                chunk.iter().all(|&b| b == (i % 251) as u8),
                "{proto:?}: chunk {i}"
            );
        }
        assert_eq!(probes.settled().await, "after");
        runner.wait_idle().await;
        expect(&runner.stats(), 1, 0, proto);
        assert_eq!(
            events.list(),
            ["last chunk polled", "task after"],
            "{proto:?}"
        );
    }
}

// 7. The client goes away mid-body (HTTP/1: the connection closes; HTTP/2:
//    the stream is reset, the connection stays). `Run` runs the tasks,
//    `Skip` counts them skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_body_gets_the_disconnect_policy() {
    for proto in BOTH {
        for policy in [DisconnectPolicy::Run, DisconnectPolicy::Skip] {
            let (runner, mut probes, events, sender, e) = fixture();
            let addr = start(&runner, policy, move |_req, queue| {
                record_task(&queue, &e, "cut", sender.probe("cut"));
                let chunks = vec![Bytes::from_static(b"first chunk")];
                Ok(Response::new(boxed(Chunks::new(chunks, End::Pending))))
            })
            .await;
            let mut client = Client::connect(addr, proto).await;
            let response = client.send("GET", "/").await.unwrap();
            let mut body = response.into_body();
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(first, "first chunk");
            match proto {
                Proto::H1 => {
                    drop(body);
                    client.disconnect();
                }
                // Dropping the body resets only this stream.
                Proto::H2 => drop(body),
            }
            assert_eq!(probes.settled().await, "cut");
            runner.wait_idle().await;
            match policy {
                DisconnectPolicy::Run => {
                    expect(&runner.stats(), 1, 0, proto);
                    assert_eq!(events.list(), ["task cut"]);
                }
                _ => {
                    expect(&runner.stats(), 0, 1, proto);
                    assert!(events.list().is_empty());
                }
            }
        }
    }
}

// 7b. The exact rule of `DisconnectPolicy`: a body is complete once its last
//     frame was handed to hyper. A single 8 MiB frame is handed over at
//     once, so a client that leaves after the first 8 KiB, while hyper is
//     still writing, is not a disconnect: under `Skip` the task still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_frame_body_is_complete_once_hyper_has_it_even_if_the_client_leaves() {
    const SIZE: usize = 8 << 20;
    for proto in BOTH {
        let (runner, mut probes, events, sender, e) = fixture();
        let addr = start(&runner, DisconnectPolicy::Skip, move |_req, queue| {
            record_task(&queue, &e, "big", sender.probe("big"));
            Ok(Response::new(boxed(Full::new(Bytes::from(vec![
                b'x';
                SIZE
            ])))))
        })
        .await;
        let mut client = Client::connect(addr, proto).await;
        let response = client.send("GET", "/").await.unwrap();
        let mut body = response.into_body();
        let mut read = 0;
        while read < 8 << 10 {
            let frame = body.frame().await.unwrap().unwrap();
            read += frame.into_data().unwrap().len();
        }
        assert!(read < SIZE, "{proto:?}: the client read it all ({read})");
        drop(body);
        if proto == Proto::H1 {
            client.disconnect();
        }
        assert_eq!(probes.settled().await, "big");
        runner.wait_idle().await;
        expect(&runner.stats(), 1, 0, proto);
        assert_eq!(events.list(), ["task big"], "{proto:?}");
    }
}

// 8a. The inner service fails: the tasks are skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_skips_its_tasks() {
    for proto in BOTH {
        let (runner, mut probes, events, sender, e) = fixture();
        let addr = start(&runner, DisconnectPolicy::Run, move |_req, queue| {
            record_task(&queue, &e, "doomed", sender.probe("doomed"));
            Err("the handler failed".into())
        })
        .await;
        let mut client = Client::connect(addr, proto).await;
        assert!(client.send("GET", "/").await.is_err(), "{proto:?}");
        assert_eq!(probes.settled().await, "doomed");
        runner.wait_idle().await;
        expect(&runner.stats(), 0, 1, proto);
        assert!(events.list().is_empty());
    }
}

// 8b. The client goes away while the handler still runs: hyper drops the
//     handler's future, and the tasks are skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_during_the_handler_skips_its_tasks() {
    for proto in BOTH {
        let (runner, mut probes, events, sender, e) = fixture();
        let (in_handler_tx, mut in_handler_rx) = mpsc::unbounded_channel::<()>();
        let handler = move |req: Request<Incoming>| {
            let queue = queue_of(&req);
            record_task(&queue, &e, "orphan", sender.probe("orphan"));
            in_handler_tx.send(()).unwrap();
            async move {
                std::future::pending::<()>().await;
                Ok::<Response<ResBody>, BoxError>(Response::new(boxed(Empty::new())))
            }
        };
        let service = TaskService::new(service_fn(handler), runner.clone());
        let (addr, _server) = serve(service).await;
        let mut client = Client::connect(addr, proto).await;
        tokio::select! {
            _ = client.send("GET", "/") => panic!("the handler never answers"),
            _ = in_handler_rx.recv() => {}
        }
        // HTTP/2: dropping the request future above reset the stream.
        if proto == Proto::H1 {
            client.disconnect();
        }
        assert_eq!(probes.settled().await, "orphan");
        runner.wait_idle().await;
        expect(&runner.stats(), 0, 1, proto);
        assert!(events.list().is_empty());
    }
}

// 9. A response that carries its own queue: both run, the request's first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_queue_runs_after_the_request_queue() {
    for proto in BOTH {
        let (runner, mut probes, events, sender, e) = fixture();
        let addr = start(&runner, DisconnectPolicy::Skip, move |_req, queue| {
            let response_queue = TaskQueue::new();
            record_task(&response_queue, &e, "response 1", sender.probe("r1"));
            record_task(&queue, &e, "request 1", sender.probe("q1"));
            record_task(&response_queue, &e, "response 2", sender.probe("r2"));
            record_task(&queue, &e, "request 2", sender.probe("q2"));
            let mut response = Response::new(boxed(Full::new(Bytes::from_static(b"ok"))));
            response.extensions_mut().insert(response_queue);
            Ok(response)
        })
        .await;
        let mut client = Client::connect(addr, proto).await;
        client.get("/").await;
        for _ in 0..4 {
            probes.settled().await;
        }
        runner.wait_idle().await;
        expect(&runner.stats(), 4, 0, proto);
        assert_eq!(
            events.list(),
            [
                "task request 1",
                "task request 2",
                "task response 1",
                "task response 2"
            ]
        );
    }
}

/// The request's own queue put back on the response is not run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_queue_returned_on_the_response_runs_once() {
    let (runner, mut probes, events, sender, e) = fixture();
    let addr = start(&runner, DisconnectPolicy::Skip, move |_req, queue| {
        record_task(&queue, &e, "once", sender.probe("once"));
        let mut response = Response::new(boxed(Full::new(Bytes::from_static(b"ok"))));
        response.extensions_mut().insert(queue);
        Ok(response)
    })
    .await;
    Client::connect(addr, Proto::H1).await.get("/").await;
    probes.settled().await;
    runner.wait_idle().await;
    expect(&runner.stats(), 1, 0, Proto::H1);
    assert_eq!(events.list(), ["task once"]);
}

// 10. `TaskService` inside `TaskService`: one queue, run once, by the outer
//     service's runner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacked_services_run_tasks_exactly_once() {
    for proto in BOTH {
        let (runner, mut probes, events, sender, e) = fixture();
        let inner_runner = Runner::new();
        let handler = move |req: Request<Incoming>| {
            record_task(&queue_of(&req), &e, "stacked", sender.probe("stacked"));
            async { Ok::<_, BoxError>(Response::new(boxed(Full::new(Bytes::from_static(b"ok"))))) }
        };
        let inner = TaskService::new(service_fn(handler), inner_runner.clone());
        let outer = TaskService::new(inner, runner.clone()).on_disconnect(DisconnectPolicy::Skip);
        let (addr, _server) = serve(outer).await;
        let mut client = Client::connect(addr, proto).await;
        client.get("/").await;
        client.get("/").await;
        probes.settled().await;
        probes.settled().await;
        runner.wait_idle().await;
        expect(&runner.stats(), 2, 0, proto);
        inner_runner.wait_idle().await;
        assert_eq!(inner_runner.stats().tasks_received(), 0, "{proto:?}");

        assert_eq!(events.list(), ["task stacked", "task stacked"]);
    }
}

// 11. Tasks never hold up the response, nor the next request on the same
//     keep-alive connection: both are answered while a task is blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_and_later_requests_do_not_wait_for_tasks() {
    for proto in BOTH {
        let runner = Runner::new();
        let (started_tx, mut started_rx) = mpsc::unbounded_channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        let calls = Arc::new(AtomicUsize::new(0));
        let addr = start(&runner, DisconnectPolicy::Run, move |_req, queue| {
            if calls.fetch_add(1, SeqCst) == 0 {
                let (started, release) = (started_tx.clone(), release_rx.clone());
                queue.add_task(
                    move || {
                        started.send(()).unwrap();
                        // Blocks until the test has seen both responses.
                        release.lock().unwrap().recv().unwrap();
                    },
                    (),
                );
            }
            Ok(Response::new(boxed(Full::new(Bytes::from_static(b"ok")))))
        })
        .await;
        let mut client = Client::connect(addr, proto).await;
        let (_, first) = client.get("/first").await;
        assert_eq!(first, "ok");
        started_rx.recv().await.unwrap();
        // The first request's task is running and cannot finish yet.
        let (_, second) = client.get("/second").await;
        assert_eq!(second, "ok", "{proto:?}");
        assert_eq!(runner.stats().drains_running(), 1);
        release_tx.send(()).unwrap();
        runner.wait_idle().await;
        expect(&runner.stats(), 1, 0, proto);
    }
}

// 12. Panicking and failing tasks do not touch the connection or later
//     requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_and_failing_tasks_leave_the_connection_alone() {
    fn explode() {
        panic!("task bug");
    }
    async fn fail() -> Result<(), String> {
        Err("webhook returned 500".into())
    }
    for proto in BOTH {
        let (runner, mut probes, events, sender, e) = fixture();
        let addr = start(&runner, DisconnectPolicy::Run, move |_req, queue| {
            queue.add_task(explode, ());
            queue.add_task(fail, ());
            record_task(&queue, &e, "after", sender.probe("after"));
            Ok(Response::new(boxed(Full::new(Bytes::from_static(b"ok")))))
        })
        .await;
        let mut client = Client::connect(addr, proto).await;
        for _ in 0..3 {
            let (response, body) = client.get("/").await;
            assert_eq!(
                (response.status(), body.as_ref()),
                (StatusCode::OK, &b"ok"[..])
            );
            probes.settled().await;
        }
        runner.wait_idle().await;
        let stats = runner.stats();
        assert_eq!(
            (stats.panicked(), stats.failed(), stats.completed()),
            (3, 3, 3),
            "{proto:?}"
        );
        assert_eq!(events.list().len(), 3);
    }
}
