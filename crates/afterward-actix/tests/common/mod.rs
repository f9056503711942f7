//! A real actix-web server on 127.0.0.1, serving HTTP/1.1 and h2c on one
//! port and HTTP/2 over TLS on another (`mod.rs`), hyper clients for each
//! (`client.rs`), a log the tests wait on (`log.rs`), and response bodies
//! that end in every way a body can (`drip.rs`).
#![allow(dead_code, unreachable_pub)]

mod client;
mod drip;
mod log;

pub use client::*;
pub use drip::*;
pub use log::*;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpRequest, HttpServer, Responder, web};
use afterward::{Runner, Stats, TaskQueue};
use afterward_actix::{DisconnectPolicy, Tasks};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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

/// Awaits `future`, failing the test if it takes more than 10 s: the limit
/// only turns a hang into a failure, it is not what a test waits on.
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("still waiting after 10 s")
}
