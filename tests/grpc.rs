//! The `grpc` example's tonic service behind `TaskLayer`, called by a tonic
//! client over a real socket. A gRPC call's outcome arrives in its trailers:
//! the tasks' run conditions see it.
//!
//! Each test ends with `Runner::shutdown`, which waits for the requests
//! still in flight (their queues were made by the runner) and for their
//! drains: a real signal that every task of the call has been settled.

#![allow(dead_code)]
#![allow(clippy::duplicate_mod)]

#[path = "../examples/grpc.rs"]
mod grpc;

use std::time::Duration;

use afterward::{Runner, Stats};
use afterward_hyper::DisconnectPolicy;
use grpc::Journal;
use grpc::proto::accounts_client::AccountsClient;
use grpc::proto::{FollowRequest, RegisterRequest};
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::Channel;

async fn start(policy: DisconnectPolicy) -> (Runner, Journal, AccountsClient<Channel>) {
    let runner = Runner::new();
    let journal = Journal::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(grpc::serve(
        listener,
        runner.clone(),
        journal.clone(),
        policy,
    ));
    let client = AccountsClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    (runner, journal, client)
}

/// Waits for every task of the calls made, and checks the counts add up.
async fn settle(runner: &Runner) -> Stats {
    let report = runner.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.abandoned(), 0, "{report:?}");
    let stats = runner.stats();
    assert_eq!(stats.tasks_received(), stats.accounted(), "{stats:?}");
    stats
}

fn entries(journal: &Journal) -> Vec<String> {
    journal.lock().unwrap().clone()
}

/// The welcome email runs only after a success, which for gRPC means a
/// `grpc-status: 0` trailer: it runs only once the trailers are out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_call_runs_its_tasks_after_the_trailers() {
    let (runner, journal, mut client) = start(DisconnectPolicy::Skip).await;
    let reply = client
        .register(RegisterRequest {
            email: "ada@example.com".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "welcome, ada@example.com");
    let stats = settle(&runner).await;
    assert_eq!((stats.completed(), stats.skipped()), (2, 1), "{stats:?}");
    assert_eq!(
        entries(&journal),
        [
            "welcome email to ada@example.com",
            "audit: register ada@example.com"
        ]
    );
}

/// A failing call is a trailers-only response: its status comes in the
/// headers. The failure's task runs; the success's does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_failing_call_runs_the_failure_task_not_the_success_one() {
    let (runner, journal, mut client) = start(DisconnectPolicy::Skip).await;
    let status = client
        .register(RegisterRequest {
            email: "not-an-email".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let stats = settle(&runner).await;
    assert_eq!((stats.completed(), stats.skipped()), (2, 1), "{stats:?}");
    assert_eq!(
        entries(&journal),
        ["audit: register not-an-email", "fraud desk: not-an-email"]
    );
}

/// A server stream the client cancels: its body is dropped before its
/// trailers. Under `DisconnectPolicy::Run` the unconditional task runs and
/// the one that needs a success does not (the outcome is unknown); under
/// `Skip` neither runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_server_stream_cancelled_by_the_client_follows_the_disconnect_policy() {
    for (policy, ran) in [
        (
            DisconnectPolicy::Run,
            ["audit: follow ada@example.com"].as_slice(),
        ),
        (DisconnectPolicy::Skip, &[]),
    ] {
        let (runner, journal, mut client) = start(policy).await;
        let mut stream = client
            .follow(FollowRequest {
                email: "ada@example.com".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(first.sequence, 1);
        drop(stream);
        let stats = settle(&runner).await;
        assert_eq!(
            (stats.completed(), stats.skipped()),
            (ran.len(), 2 - ran.len()),
            "{policy:?}: {stats:?}"
        );
        assert_eq!(entries(&journal), ran, "{policy:?}");
    }
}

// ===== gRPC-Web =====

/// The `Accounts` service as `tonic-web` serves it to browsers, behind
/// `TaskLayer`: gRPC-Web over HTTP/1.1, whose status travels in the last
/// frame of the body rather than in HTTP trailers.
async fn start_web(runner: Runner, journal: Journal) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = grpc::proto::accounts_server::AccountsServer::new(grpc::Accounts { journal });
    tokio::spawn(
        tonic::transport::Server::builder()
            .accept_http1(true)
            .layer(afterward_hyper::TaskLayer::new(runner))
            .layer(tonic_web::GrpcWebLayer::new())
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

/// Calls `Register` as a browser's gRPC-Web client does, in binary or text
/// (base64) mode, over HTTP/1.1; returns the whole response body.
async fn register_web(addr: std::net::SocketAddr, email: &str, text: bool) -> bytes::Bytes {
    use base64::Engine;
    use http_body_util::{BodyExt, Full};
    use prost::Message;

    let message = RegisterRequest {
        email: email.into(),
    }
    .encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let (content_type, body) = if text {
        let encoded = base64::engine::general_purpose::STANDARD.encode(&frame);
        ("application/grpc-web-text+proto", encoded.into_bytes())
    } else {
        ("application/grpc-web+proto", frame)
    };
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::post(format!("http://{addr}/afterward.example.Accounts/Register"))
        .header("content-type", content_type)
        .header("accept", content_type)
        .header("x-grpc-web", "1")
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap().to_bytes()
}

/// A successful gRPC-Web call is a success (its status `0` is in the body's
/// trailer frame), and a failed one a failure, in binary and text mode: the
/// run conditions follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_calls_run_their_tasks_by_the_status_in_the_trailer_frame() {
    for text in [false, true] {
        let runner = Runner::new();
        let journal = Journal::default();
        let addr = start_web(runner.clone(), journal.clone()).await;
        register_web(addr, "ada@example.com", text).await;
        register_web(addr, "not-an-email", text).await;
        let stats = settle(&runner).await;
        assert_eq!(
            (stats.completed(), stats.skipped()),
            (4, 2),
            "text {text}: {stats:?}"
        );
        let mut entries = entries(&journal);
        entries.sort();
        assert_eq!(
            entries,
            [
                "audit: register ada@example.com",
                "audit: register not-an-email",
                "fraud desk: not-an-email",
                "welcome email to ada@example.com",
            ],
            "text {text}"
        );
    }
}
