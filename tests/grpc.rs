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
