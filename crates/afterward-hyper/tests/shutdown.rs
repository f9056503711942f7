//! Shutting down while requests are still in flight, in the order the crate
//! docs give: stop accepting, give the connections a graceful timeout, then
//! `Runner::shutdown`. A shutdown must name every task it causes to be lost,
//! including those of requests whose responses are not finished.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use afterward::Runner;
use afterward_hyper::TaskService;
use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

fn receipt_for_stream() {}
fn audit_after_stuck_handler() {}
fn receipt_for_finished_stream() {}
fn notify_stream_watchers(_settled_when_dropped: Probe) {}

/// A server whose connections are watched by a `GracefulShutdown`. `stop`
/// ends the accept loop and waits `grace` for the connections, then hands
/// back the ones still open.
struct Server {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<Duration>,
    stopped: oneshot::Receiver<JoinSet<()>>,
}

impl Server {
    async fn start<S>(service: S) -> Server
    where
        S: hyper::service::Service<
                Request<Incoming>,
                Response = Response<afterward_hyper::TaskBody<ResBody>>,
            > + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stop_rx) = oneshot::channel::<Duration>();
        let (stopped_tx, stopped) = oneshot::channel();
        tokio::spawn(async move {
            let graceful = GracefulShutdown::new();
            let mut connections = JoinSet::new();
            let grace = loop {
                tokio::select! {
                    Ok((stream, _)) = listener.accept() => {
                        let conn = auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(stream), service.clone())
                            .into_owned();
                        connections.spawn(async move {
                            let _ = conn.await;
                        });
                        let _ = graceful.count();
                    }
                    grace = &mut stop_rx => break grace.unwrap(),
                }
            };
            drop(listener);
            let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
            let _ = stopped_tx.send(connections);
        });
        Server {
            addr,
            stop,
            stopped,
        }
    }

    async fn stop(self, grace: Duration) -> JoinSet<()> {
        self.stop.send(grace).unwrap();
        self.stopped.await.unwrap()
    }
}

/// `/stream` answers with a body that never ends; `/stuck` never answers;
/// `/finishing` answers with a body that ends when the test says so. Each
/// queues one task first.
fn in_flight_service(
    runner: Runner,
    probes: ProbeSender,
    in_handler: mpsc::UnboundedSender<&'static str>,
    finish: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<afterward_hyper::TaskBody<ResBody>>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send
+ Sync
+ 'static {
    let handler = move |req: Request<Incoming>| {
        let queue = queue_of(&req);
        let path = req.uri().path().to_owned();
        let (probes, in_handler, finish) = (probes.clone(), in_handler.clone(), finish.clone());
        async move {
            let body = match path.as_str() {
                "/stream" => {
                    queue.add_task(notify_stream_watchers, (probes.probe("stream"),));
                    queue.add_task(receipt_for_stream, ());
                    boxed(Chunks::new(
                        vec![Bytes::from_static(b"first")],
                        End::Pending,
                    ))
                }
                "/finishing" => {
                    queue.add_task(receipt_for_finished_stream, ());
                    let finish = finish.lock().unwrap().take().expect("one /finishing");
                    boxed(UntilSignal {
                        first: Some(Bytes::from_static(b"first")),
                        finish,
                    })
                }
                _ => {
                    queue.add_task(audit_after_stuck_handler, ());
                    in_handler.send("stuck").unwrap();
                    std::future::pending::<()>().await;
                    unreachable!()
                }
            };
            Ok::<_, BoxError>(Response::new(body))
        }
    };
    TaskService::new(service_fn(handler), runner)
}

/// Sends one chunk, then ends when `finish` fires.
struct UntilSignal {
    first: Option<Bytes>,
    finish: oneshot::Receiver<()>,
}

impl http_body::Body for UntilSignal {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(first) = self.first.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(first))));
        }
        std::pin::Pin::new(&mut self.finish).poll(cx).map(|_| None)
    }
}

use std::future::Future as _;

/// Two streams that never end and two handlers that never answer, on h1
/// and h2, outlive the graceful timeout. The shutdown abandons their tasks
/// at its deadline and names them; when the connections are cut later,
/// nothing more is lost, and the report agrees with the final counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_requests_still_in_flight_are_named_by_the_shutdown() {
    let runner = Runner::new();
    let mut probes = Probes::new();
    let (in_handler_tx, mut in_handler) = mpsc::unbounded_channel();
    let finish = Arc::new(Mutex::new(None));
    let service = in_flight_service(runner.clone(), probes.sender(), in_handler_tx, finish);
    let server = Server::start(service).await;

    let mut bodies = Vec::new();
    let mut clients = Vec::new();
    let mut waiting = Vec::new();
    for proto in BOTH {
        let mut client = Client::connect(server.addr, proto).await;
        let mut body = client.send("GET", "/stream").await.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "first");
        bodies.push(body);
        clients.push(client);

        // The request is kept waiting: dropping it would reset the stream
        // (h2) or close the connection (h1), and the handler with it.
        let mut client = Client::connect(server.addr, proto).await;
        waiting.push(tokio::spawn(async move {
            let _ = client.send("GET", "/stuck").await;
            panic!("the handler never answers");
        }));
        assert_eq!(in_handler.recv().await, Some("stuck"));
    }

    let connections = server.stop(Duration::from_millis(20)).await;
    assert_eq!(
        connections.len(),
        4,
        "the graceful timeout closed a busy connection"
    );
    let report = runner.shutdown(Duration::from_millis(20)).await;
    let mut names = report.abandoned_tasks().to_vec();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "audit_after_stuck_handler",
            "audit_after_stuck_handler",
            "notify_stream_watchers",
            "notify_stream_watchers",
            "receipt_for_stream",
            "receipt_for_stream",
        ]
    );
    // The abandoned tasks were dropped: their probes are settled.
    assert_eq!(probes.settled().await, "stream");
    assert_eq!(probes.settled().await, "stream");

    // Cutting the connections now hands the (emptied) queues off.
    let mut connections = connections;
    connections.shutdown().await;
    drop((bodies, clients));
    for request in waiting {
        request.abort();
    }
    let stats = runner.stats();
    assert_eq!(stats.abandoned(), report.abandoned(), "{stats:?}");
    assert_eq!(
        (stats.tasks_received(), stats.rejected(), stats.completed()),
        (6, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.tasks_received(), stats.accounted(), "{stats:?}");
}

/// A request still in flight when the shutdown starts, which finishes
/// before its deadline, has its tasks run: the shutdown waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_that_finishes_before_the_deadline_runs_its_tasks() {
    for proto in BOTH {
        let runner = Runner::new();
        let probes = Probes::new();
        let (in_handler_tx, _in_handler) = mpsc::unbounded_channel();
        let (finish_tx, finish_rx) = oneshot::channel();
        let finish = Arc::new(Mutex::new(Some(finish_rx)));
        let service = in_flight_service(runner.clone(), probes.sender(), in_handler_tx, finish);
        let server = Server::start(service).await;

        let mut client = Client::connect(server.addr, proto).await;
        let mut body = client.send("GET", "/finishing").await.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "first");

        let connections = server.stop(Duration::from_millis(10)).await;
        assert_eq!(connections.len(), 1, "{proto:?}");
        let shutdown = tokio::spawn({
            let runner = runner.clone();
            async move { runner.shutdown(Duration::from_secs(30)).await }
        });
        // The shutdown is waiting for the request; let it finish.
        finish_tx.send(()).unwrap();
        assert!(body.collect().await.is_ok(), "{proto:?}");
        let report = shutdown.await.unwrap();
        assert_eq!(report.abandoned(), 0, "{proto:?}: {report:?}");
        let stats = runner.stats();
        assert_eq!(
            (stats.completed(), stats.tasks_received()),
            (1, 1),
            "{proto:?}"
        );
    }
}
