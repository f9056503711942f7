//! hyper clients, over plain TCP (HTTP/1.1, h2c) and TLS (HTTP/2 by ALPN).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use std::future::Future;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::{Proto, Server, tls_connector, within};

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

impl Server {
    pub async fn connect(&self, proto: Proto) -> Client {
        Client::connect(self, proto).await
    }
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
