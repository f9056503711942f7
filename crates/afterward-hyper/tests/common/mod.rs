//! A real hyper server on 127.0.0.1 and real hyper clients, HTTP/1 and
//! HTTP/2, plus the bodies and probes the tests need.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use afterward::TaskQueue;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ResBody = BoxBody<Bytes, BoxError>;
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Response<ResBody>, BoxError>> + Send>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

pub const BOTH: [Proto; 2] = [Proto::H1, Proto::H2];

// ===== server =====

/// Serves `service` on 127.0.0.1 (HTTP/1 and HTTP/2 prior knowledge) until
/// the returned handle is dropped or aborted.
pub async fn serve<S, B>(service: S) -> (SocketAddr, JoinHandle<()>)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, server)
}

pub fn boxed<B>(body: B) -> ResBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// The queue `TaskService` put into the request.
pub fn queue_of<B>(req: &Request<B>) -> TaskQueue {
    req.extensions()
        .get::<TaskQueue>()
        .cloned()
        .expect("TaskService puts a TaskQueue into every request")
}

// ===== client =====

pub enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// One client connection. Dropping it (or calling `disconnect`) closes the
/// socket.
pub struct Client {
    sender: Sender,
    conn: JoinHandle<()>,
    addr: SocketAddr,
}

impl Client {
    pub async fn connect(addr: SocketAddr, proto: Proto) -> Client {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (sender, conn) = match proto {
            Proto::H1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                (
                    Sender::H1(sender),
                    tokio::spawn(async move {
                        let _ = conn.await;
                    }),
                )
            }
            Proto::H2 => {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .unwrap();
                (
                    Sender::H2(sender),
                    tokio::spawn(async move {
                        let _ = conn.await;
                    }),
                )
            }
        };
        Client { sender, conn, addr }
    }

    pub async fn send(&mut self, method: &str, path: &str) -> hyper::Result<Response<Incoming>> {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .body(Empty::new())
            .unwrap();
        match &mut self.sender {
            Sender::H1(sender) => {
                sender.ready().await?;
                sender.send_request(req).await
            }
            Sender::H2(sender) => {
                sender.ready().await?;
                sender.send_request(req).await
            }
        }
    }

    /// Sends a request and reads the whole response.
    pub async fn get(&mut self, path: &str) -> (Response<()>, Bytes) {
        let response = self.send("GET", path).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (Response::from_parts(parts, ()), bytes)
    }

    pub fn disconnect(self) {
        self.conn.abort();
    }
}

// ===== probes =====

/// Tells the test when a task's fate is settled: it is captured by the task,
/// and dropped when the task has run or was discarded unrun.
pub struct Probe {
    id: &'static str,
    tx: mpsc::UnboundedSender<&'static str>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.tx.send(self.id);
    }
}

#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<String>>>);

impl Events {
    pub fn push(&self, event: impl Into<String>) {
        self.0.lock().unwrap().push(event.into());
    }

    pub fn list(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

pub struct Probes {
    tx: mpsc::UnboundedSender<&'static str>,
    rx: mpsc::UnboundedReceiver<&'static str>,
}

impl Probes {
    pub fn new() -> Probes {
        let (tx, rx) = mpsc::unbounded_channel();
        Probes { tx, rx }
    }

    pub fn probe(&self, id: &'static str) -> Probe {
        Probe {
            id,
            tx: self.tx.clone(),
        }
    }

    pub fn sender(&self) -> ProbeSender {
        ProbeSender(self.tx.clone())
    }

    /// Waits for the next settled task. The limit only turns a hang into a
    /// failure; it is not what the test waits on.
    pub async fn settled(&mut self) -> &'static str {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("no task was settled within 10 s")
            .expect("probe channel closed")
    }
}

#[derive(Clone)]
pub struct ProbeSender(mpsc::UnboundedSender<&'static str>);

impl ProbeSender {
    pub fn probe(&self, id: &'static str) -> Probe {
        Probe {
            id,
            tx: self.0.clone(),
        }
    }
}

/// What most tests start with: a runner, the probes the test waits on, the
/// events it checks, and a probe sender and events handle to move into the
/// handler.
pub fn fixture() -> (afterward::Runner, Probes, Events, ProbeSender, Events) {
    let probes = Probes::new();
    let events = Events::default();
    let (sender, handler_events) = (probes.sender(), events.clone());
    (
        afterward::Runner::new(),
        probes,
        events,
        sender,
        handler_events,
    )
}

/// Queues a task that records `id` in `events` and settles `probe`.
pub fn record_task(queue: &TaskQueue, events: &Events, id: &'static str, probe: Probe) {
    let events = events.clone();
    queue.add_task(
        move || {
            let _probe = probe;
            events.push(format!("task {id}"));
        },
        (),
    );
}

// ===== bodies =====

/// How a `Chunks` body ends once its chunks are out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// `poll_frame` gives `None`.
    None,
    /// Never ends: only the byte count, a disconnect or the status can
    /// finish it.
    Pending,
    /// A trailers frame, and nothing after it.
    Trailers,
    /// `is_end_stream()` turns true with the last chunk; the body is never
    /// polled after it (and would never end if it were).
    ByEndStream,
}

/// A streaming body with no size hint that never says `is_end_stream`: the
/// hardest case for knowing when a response is finished.
pub struct Chunks {
    chunks: VecDeque<Bytes>,
    end: End,
    events: Option<Events>,
    trailers_sent: bool,
}

impl Chunks {
    pub fn new(chunks: Vec<Bytes>, end: End) -> Chunks {
        Chunks {
            chunks: chunks.into(),
            end,
            events: None,
            trailers_sent: false,
        }
    }

    /// Records "last chunk polled" when the last chunk is handed out.
    pub fn recording(mut self, events: &Events) -> Chunks {
        self.events = Some(events.clone());
        self
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            if self.chunks.is_empty() {
                if let Some(events) = &self.events {
                    events.push("last chunk polled");
                }
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match self.end {
            End::None => Poll::Ready(None),
            End::Pending => Poll::Pending,
            End::Trailers if !self.trailers_sent => {
                self.trailers_sent = true;
                let mut trailers = HeaderMap::new();
                trailers.insert("x-checksum", "abc".parse().unwrap());
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            End::Trailers | End::ByEndStream => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.end == End::ByEndStream && self.chunks.is_empty()
    }
}
