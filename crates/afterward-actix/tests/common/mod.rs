//! A real actix-web server on 127.0.0.1, serving HTTP/1.1 and h2c on one
//! port and HTTP/2 over TLS on another, with hyper clients for each; a log
//! the tests wait on; and response bodies that end in every way a body can.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServerHandle, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpRequest, HttpServer, Responder, web};
use afterward::{Runner, Stats, TaskQueue};
use afterward_actix::{DisconnectPolicy, Tasks};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How a client speaks to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 over plain TCP.
    H1,
    /// HTTP/2 over plain TCP, with prior knowledge (`bind_auto_h2c`).
    H2c,
    /// HTTP/2 over TLS, chosen by ALPN (`bind_rustls_0_23`).
    H2,
}

pub const PROTOS: [Proto; 3] = [Proto::H1, Proto::H2c, Proto::H2];

// ===== server =====

/// The server of a [`Fixture`].
pub struct Server {
    plain: SocketAddr,
    tls: SocketAddr,
    handle: ServerHandle,
    serving: JoinHandle<io::Result<()>>,
}

impl Server {
    pub async fn connect(&self, proto: Proto) -> Client {
        Client::connect(self, proto).await
    }

    /// Stops the server and waits until it has: with `graceful`, its
    /// workers first finish their connections, for up to a second.
    pub async fn stop(self, graceful: bool) {
        self.handle.stop(graceful).await;
        within(self.serving).await.unwrap().unwrap();
    }
}

/// A self-signed certificate for `localhost`, made once per test binary.
fn certificate() -> &'static (CertificateDer<'static>, Vec<u8>) {
    static CERT: OnceLock<(CertificateDer<'static>, Vec<u8>)> = OnceLock::new();
    CERT.get_or_init(|| {
        let made = rcgen::generate_simple_self_signed(["localhost".to_owned()]).unwrap();
        (made.cert.der().clone(), made.signing_key.serialize_der())
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_server_config() -> rustls::ServerConfig {
    let (cert, key) = certificate();
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], PrivateKeyDer::Pkcs8(key.clone().into()))
        .unwrap()
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate().0.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

// ===== a server with Tasks =====

/// What every test starts with: a runner, a log, and an actix-web server
/// on two workers of its own (threads with a runtime each, as `HttpServer`
/// runs under a plain tokio runtime), whose graceful stop gives up on the
/// connections still open after a second.
pub struct Fixture {
    pub runner: Runner,
    pub log: Log,
    pub server: Server,
}

impl Fixture {
    /// Serves the apps `app` makes from the runner and the log.
    pub fn start<F, T, B>(app: F) -> Fixture
    where
        F: Fn(&Runner, &Log) -> App<T> + Send + Clone + 'static,
        T: ServiceFactory<
                ServiceRequest,
                Config = (),
                Response = ServiceResponse<B>,
                Error = actix_web::Error,
                InitError = (),
            > + 'static,
        B: MessageBody + 'static,
    {
        let (runner, log) = (Runner::new(), Log::default());
        let (r, l) = (runner.clone(), log.clone());
        let server = HttpServer::new(move || app(&r, &l))
            .workers(2)
            .disable_signals()
            .shutdown_timeout(1)
            .bind_auto_h2c(("127.0.0.1", 0))
            .unwrap()
            .bind_rustls_0_23(("127.0.0.1", 0), tls_server_config())
            .unwrap();
        let addrs = server.addrs();
        let server = server.run();
        let handle = server.handle();
        let server = Server {
            plain: addrs[0],
            tls: addrs[1],
            handle,
            serving: tokio::spawn(server),
        };
        Fixture {
            runner,
            log,
            server,
        }
    }
}

/// Serves `handler`, which gets the request's queue, the request and the
/// log, behind `Tasks` with `policy`, for every method and path.
pub fn serve_tasks<H, F, R>(policy: DisconnectPolicy, handler: H) -> Fixture
where
    H: Fn(TaskQueue, HttpRequest, Log) -> F + Clone + Send + 'static,
    F: Future<Output = R> + 'static,
    R: Responder + 'static,
{
    Fixture::start(move |runner, log| {
        let (log, handler) = (log.clone(), handler.clone());
        App::new()
            .wrap(Tasks::new(runner.clone()).on_disconnect(policy))
            .default_service(web::to(move |tasks: TaskQueue, req: HttpRequest| {
                handler(tasks, req, log.clone())
            }))
    })
}

impl Fixture {
    /// Once `settled` tasks were settled and the runner is idle: how many
    /// were completed, skipped and abandoned (see [`tally`]).
    pub async fn tally(&self, settled: usize) -> (usize, usize, usize) {
        self.log.settled(settled).await;
        self.runner.wait_idle().await;
        tally(&self.runner.stats())
    }
}

/// `(completed, skipped, abandoned)`, once it is checked that every task
/// received was counted once, and in one of those three.
#[track_caller]
pub fn tally(stats: &Stats) -> (usize, usize, usize) {
    let counted = (stats.completed(), stats.skipped(), stats.abandoned());
    assert_eq!(stats.tasks_received(), stats.accounted(), "{stats:?}");
    assert_eq!(
        stats.tasks_received(),
        counted.0 + counted.1 + counted.2,
        "{stats:?}"
    );
    counted
}

// ===== client =====

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// One client connection; dropping it closes the socket.
pub struct Client {
    proto: Proto,
    sender: Sender,
    /// Drives the connection; aborting it closes the socket.
    conn: JoinHandle<()>,
}

impl Client {
    async fn connect(server: &Server, proto: Proto) -> Client {
        let addr = match proto {
            Proto::H1 | Proto::H2c => server.plain,
            Proto::H2 => server.tls,
        };
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (sender, conn) = match proto {
            Proto::H1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .unwrap();
                (Sender::H1(sender), drive(conn))
            }
            Proto::H2c => {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                        .await
                        .unwrap();
                (Sender::H2(sender), drive(conn))
            }
            Proto::H2 => {
                let name = ServerName::try_from("localhost").unwrap();
                let tls = tls_connector().connect(name, tcp).await.unwrap();
                assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                        .await
                        .unwrap();
                (Sender::H2(sender), drive(conn))
            }
        };
        Client {
            proto,
            sender,
            conn,
        }
    }

    /// Sends a request; the response's body is left to the caller.
    pub async fn send(&mut self, method: &str, path: &str) -> Response<Incoming> {
        within(self.try_send(method, path)).await.unwrap()
    }

    /// Sends a request, and says if it failed.
    pub async fn try_send(
        &mut self,
        method: &str,
        path: &str,
    ) -> hyper::Result<Response<Incoming>> {
        let uri = match self.proto {
            Proto::H1 => path.to_owned(),
            Proto::H2c => format!("http://localhost{path}"),
            Proto::H2 => format!("https://localhost{path}"),
        };
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "localhost")
            .body(Empty::new())
            .unwrap();
        // The two senders are of two types with the same methods.
        macro_rules! ask {
            ($sender:ident) => {{
                $sender.ready().await?;
                $sender.send_request(request).await
            }};
        }
        match &mut self.sender {
            Sender::H1(sender) => ask!(sender),
            Sender::H2(sender) => ask!(sender),
        }
    }

    /// Sends a request and reads the whole response.
    pub async fn fetch(&mut self, method: &str, path: &str) -> (StatusCode, Bytes) {
        let response = self.send(method, path).await;
        let status = response.status();
        let body = within(response.into_body().collect()).await.unwrap();
        (status, body.to_bytes())
    }

    pub async fn get(&mut self, path: &str) -> (StatusCode, String) {
        let (status, body) = self.fetch("GET", path).await;
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Closes the socket at once, whatever is in flight (as dropping the
    /// client does).
    pub fn close(self) {}
}

impl Drop for Client {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

fn drive<C>(conn: C) -> JoinHandle<()>
where
    C: Future + Send + 'static,
{
    tokio::spawn(async move {
        let _ = conn.await;
    })
}

/// Reads the next chunk of `body`: the response is under way.
pub async fn next_chunk(body: &mut Incoming) -> Bytes {
    loop {
        let frame = within(body.frame()).await.unwrap().unwrap();
        if let Ok(data) = frame.into_data()
            && !data.is_empty()
        {
            return data;
        }
    }
}

/// Awaits `future`, failing the test if it takes more than 10 s: the limit
/// only turns a hang into a failure, it is not what a test waits on.
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("still waiting after 10 s")
}

// ===== the log =====

/// What happened, in order: tasks write to it, and so do the marks they
/// carry, when a task's fate is settled (run, or dropped unrun).
#[derive(Clone)]
pub struct Log(Arc<watch::Sender<Vec<String>>>);

impl Default for Log {
    fn default() -> Log {
        Log(Arc::new(watch::Sender::new(Vec::new())))
    }
}

impl Log {
    pub fn write(&self, line: impl Into<String>) {
        let line = line.into();
        self.0.send_modify(|lines| lines.push(line));
    }

    pub fn clear(&self) {
        self.0.send_modify(Vec::clear);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.borrow().clone()
    }

    /// The lines other than the marks' "settled ...".
    pub fn events(&self) -> Vec<String> {
        let lines = self.0.borrow();
        lines
            .iter()
            .filter(|line| !line.starts_with("settled "))
            .cloned()
            .collect()
    }

    /// Waits until `count` lines start with `prefix`.
    pub async fn wait_for(&self, prefix: &str, count: usize) {
        let mut rx = self.0.subscribe();
        let seen =
            rx.wait_for(|lines| lines.iter().filter(|l| l.starts_with(prefix)).count() >= count);
        within(seen).await.unwrap();
    }

    /// Waits until `count` tasks were settled: each was run, or dropped unrun
    /// and counted.
    pub async fn settled(&self, count: usize) {
        self.wait_for("settled ", count).await;
    }

    /// Writes "settled {label}" when dropped.
    pub fn mark(&self, label: &'static str) -> Mark {
        Mark {
            log: self.clone(),
            label,
        }
    }
}

/// Carried by a task, so that the log learns when its fate is settled.
pub struct Mark {
    log: Log,
    label: &'static str,
}

impl Drop for Mark {
    fn drop(&mut self) {
        self.log.write(format!("settled {}", self.label));
    }
}

/// Queues a sync task named `label` that writes "ran {label}", carrying a
/// mark.
pub fn add_logged<'q>(
    tasks: &'q TaskQueue,
    log: &Log,
    label: &'static str,
) -> afterward::QueuedTask<'q> {
    let mark = log.mark(label);
    let log = log.clone();
    let task = move || {
        let _mark = mark;
        log.write(format!("ran {label}"));
    };
    tasks.add_task(task, ()).name(label)
}

// ===== bodies =====

/// How a [`Drip`] ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ending {
    /// `poll_next` gives `None` after the last chunk.
    Done,
    /// `poll_next` gives an error after the last chunk.
    Fails,
    /// `poll_next` panics after the last chunk.
    Panics,
    /// Chunks never stop: only the client leaving, or the server stopping,
    /// ends the response.
    Never,
}

/// A body of unknown size that gives a chunk every few milliseconds: the
/// way to see a client leave, since actix notices one only when it next
/// writes to it.
pub struct Drip {
    left: usize,
    ending: Ending,
    tick: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Dropped with the body.
    held: Option<Box<dyn std::any::Any>>,
}

pub const TICK: Duration = Duration::from_millis(3);

impl Drip {
    pub fn new(chunks: usize, ending: Ending) -> Drip {
        Drip {
            left: chunks,
            ending,
            tick: None,
            held: None,
        }
    }

    /// Keeps `value` until the body is dropped: a value that panics when
    /// dropped makes a body whose destructor panics.
    pub fn holding(mut self, value: impl std::any::Any) -> Drip {
        self.held = Some(Box::new(value));
        self
    }
}

impl MessageBody for Drip {
    type Error = io::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, io::Error>>> {
        let tick = self
            .tick
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(TICK)));
        if tick.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.tick = None;
        if self.left > 0 || self.ending == Ending::Never {
            self.left = self.left.saturating_sub(1);
            return Poll::Ready(Some(Ok(Bytes::from_static(b"drip\n"))));
        }
        match self.ending {
            Ending::Done | Ending::Never => Poll::Ready(None),
            Ending::Fails => Poll::Ready(Some(Err(io::Error::other("the body broke")))),
            Ending::Panics => panic!("the body panics"),
        }
    }
}
