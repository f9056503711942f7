//! Which queue a request gets and which tasks run: the extractor, run
//! conditions by status, a queue the response carries, `Tasks` wrapped
//! twice, a service that fails, and `TaskQueue::current()`.

mod common;

use std::sync::Arc;

use actix_web::dev::Service;
use actix_web::{App, HttpMessage, HttpResponse, web};
use afterward::{RunIf, TaskQueue};
use afterward_actix::{DisconnectPolicy, Tasks};
use common::*;
use tokio::sync::{Barrier, mpsc};

// ===== the extractor =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_takes_the_queue_the_middleware_gave_the_request() {
    let fixture = serve_tasks(DisconnectPolicy::Run, |tasks, req, log| {
        add_logged(&tasks, &log, "welcome");
        // One queue, however the handler reaches it.
        let in_extensions = req.extensions().get::<TaskQueue>().unwrap().len();
        let current = TaskQueue::current().unwrap().len();
        async move { format!("{in_extensions} {current}") }
    });
    for proto in PROTOS {
        let mut client = fixture.server.connect(proto).await;
        assert_eq!(client.get("/register").await.1, "1 1", "{proto:?}");
    }
    assert_eq!(fixture.tally(3).await, (3, 0, 0));
    assert_eq!(fixture.log.events(), ["ran welcome"; 3]);
    fixture.server.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tasks_the_extractor_answers_500_naming_it() {
    async fn register(tasks: TaskQueue) -> &'static str {
        tasks.add_task(|| (), ());
        "registered"
    }
    let fixture = Fixture::start(|_, _| App::new().route("/register", web::get().to(register)));
    let (status, body) = fixture
        .server
        .connect(Proto::H1)
        .await
        .get("/register")
        .await;
    assert_eq!(status, 500);
    assert!(body.contains("afterward_actix::Tasks"), "{body}");
    fixture.server.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_queue_is_none_without_tasks_and_some_with_it() {
    async fn maybe(tasks: Option<TaskQueue>) -> &'static str {
        match tasks {
            Some(_) => "queue",
            None => "no queue",
        }
    }
    let fixture = Fixture::start(|runner, _| {
        App::new()
            .service(
                web::scope("/with")
                    .wrap(Tasks::new(runner.clone()))
                    .route("", web::get().to(maybe)),
            )
            .route("/without", web::get().to(maybe))
    });
    let mut client = fixture.server.connect(Proto::H1).await;
    assert_eq!(client.get("/with").await.1, "queue");
    assert_eq!(client.get("/without").await.1, "no queue");
    drop(client);
    fixture.server.stop(true).await;
}

// ===== which tasks run =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_conditions_follow_the_status() {
    let fixture = serve_tasks(DisconnectPolicy::Run, |tasks, req, log| {
        let (status, success, failure) = match req.path() {
            "/200" => (200, "receipt 200", "release stock 200"),
            _ => (503, "receipt 503", "release stock 503"),
        };
        add_logged(&tasks, &log, success).run_if(RunIf::Success);
        add_logged(&tasks, &log, failure).run_if(RunIf::Failure);
        let status = actix_web::http::StatusCode::from_u16(status).unwrap();
        async move { HttpResponse::build(status).body("done") }
    });
    let mut client = fixture.server.connect(Proto::H1).await;
    assert_eq!(client.get("/200").await.0, 200);
    assert_eq!(client.get("/503").await.0, 503);
    assert_eq!(fixture.tally(4).await, (2, 2, 0));
    // Two requests' drains: no order between them is promised.
    let mut ran = fixture.log.events();
    ran.sort();
    assert_eq!(ran, ["ran receipt 200", "ran release stock 503"]);
    drop(client);
    fixture.server.stop(true).await;
}

/// A service inside `Tasks` that fails (here a middleware that turns the
/// handler's response into an error) produced no response of its own: the
/// tasks are skipped, and actix answers with the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_returns_an_error_skips_the_tasks() {
    let fixture = Fixture::start(|runner, log| {
        let handler = {
            let log = log.clone();
            move |tasks: TaskQueue| {
                add_logged(&tasks, &log, "never");
                async { "ok" }
            }
        };
        App::new()
            .wrap_fn(|req, service| {
                let response = service.call(req);
                async move {
                    response.await?;
                    Err::<actix_web::dev::ServiceResponse, _>(
                        actix_web::error::ErrorServiceUnavailable("refused"),
                    )
                }
            })
            .wrap(Tasks::new(runner.clone()))
            .default_service(web::to(handler))
    });
    assert_eq!(
        fixture.server.connect(Proto::H1).await.get("/").await.0,
        503
    );
    assert_eq!(fixture.tally(1).await, (0, 1, 0));
    assert!(fixture.log.events().is_empty());
    fixture.server.stop(true).await;
}

/// A queue the response carries runs too, after the request's, in one
/// drain; its run conditions see the response's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_the_response_carries_runs_after_the_requests() {
    let fixture = serve_tasks(DisconnectPolicy::Run, |tasks, _, log| {
        let response_queue = TaskQueue::new();
        add_logged(&response_queue, &log, "response's");
        add_logged(&response_queue, &log, "response's, on failure").run_if(RunIf::Failure);
        add_logged(&tasks, &log, "request's");
        let mut response = HttpResponse::Ok().body("ok");
        response.extensions_mut().insert(response_queue);
        async move { response }
    });
    for (n, proto) in PROTOS.into_iter().enumerate() {
        let mut client = fixture.server.connect(proto).await;
        assert_eq!(client.get("/").await.1, "ok");
        let done = n + 1;
        assert_eq!(fixture.tally(3 * done).await, (2 * done, done, 0));
        let events = fixture.log.events();
        assert_eq!(
            events[2 * n..],
            ["ran request's", "ran response's"],
            "{proto:?}"
        );
    }
    fixture.server.stop(true).await;
}

/// A handler that puts the request's own queue on the response (a clone,
/// the same queue) gets its tasks run once, not twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requests_own_queue_on_the_response_runs_once() {
    let fixture = serve_tasks(DisconnectPolicy::Run, |tasks, _, log| {
        add_logged(&tasks, &log, "mine");
        let mut response = HttpResponse::Ok().body("ok");
        response.extensions_mut().insert(tasks);
        async move { response }
    });
    for proto in PROTOS {
        assert_eq!(fixture.server.connect(proto).await.get("/").await.1, "ok");
    }
    assert_eq!(fixture.tally(3).await, (3, 0, 0));
    assert_eq!(fixture.log.events(), ["ran mine"; 3]);
    fixture.server.stop(true).await;
}

/// `Tasks` on the app and again on a scope: the inner one finds the
/// outer's queue in the request and passes the response through, so the
/// tasks run once, under the outer one's policy (here `Run`, while the
/// inner one says `Skip`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_wrapped_twice_runs_the_tasks_once_under_the_outer_policy() {
    let fixture = Fixture::start(|runner, log| {
        let log = log.clone();
        App::new().wrap(Tasks::new(runner.clone())).service(
            web::scope("/inner")
                .wrap(Tasks::new(runner.clone()).on_disconnect(DisconnectPolicy::Skip))
                .route(
                    "/{chunks}",
                    web::get().to(move |tasks: TaskQueue, chunks: web::Path<usize>| {
                        assert!(TaskQueue::current().is_some());
                        add_logged(&tasks, &log, "once");
                        let body = match chunks.into_inner() {
                            0 => Drip::new(0, Ending::Never),
                            n => Drip::new(n, Ending::Done),
                        };
                        async { HttpResponse::Ok().body(body) }
                    }),
                ),
        )
    });
    for proto in PROTOS {
        let mut client = fixture.server.connect(proto).await;
        assert_eq!(client.get("/inner/2").await.1, "drip\ndrip\n");
        // A client that leaves mid-body: a disconnect, under `Run`.
        let mut body = client.send("GET", "/inner/0").await.into_body();
        next_chunk(&mut body).await;
    }
    assert_eq!(fixture.tally(6).await, (6, 0, 0));
    fixture.server.stop(true).await;
}

// ===== TaskQueue::current() =====

/// Two handlers in flight at once, each waiting for the other across an
/// await: each sees its own request's queue, before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_handlers_each_see_their_own_queue() {
    assert!(TaskQueue::current().is_none(), "outside any handler");
    let barrier = Arc::new(Barrier::new(2));
    let fixture = serve_tasks(DisconnectPolicy::Run, move |tasks, req, _| {
        let barrier = barrier.clone();
        let id = req.path().trim_start_matches('/').to_owned();
        async move {
            // As code deep in a call stack would, with no request in hand.
            let deep = || TaskQueue::current().expect("inside a handler");
            deep().add_task(|| (), ()).name(format!("{id} before"));
            barrier.wait().await;
            deep().add_task(|| (), ()).name(format!("{id} after"));
            assert_eq!(deep().task_names(), tasks.task_names());
            tasks.task_names().join(",")
        }
    });
    let (mut a, mut b) = (
        fixture.server.connect(Proto::H1).await,
        fixture.server.connect(Proto::H2).await,
    );
    let (ra, rb) = tokio::join!(a.get("/a"), b.get("/b"));
    assert_eq!(
        (ra.1.as_str(), rb.1.as_str()),
        ("a before,a after", "b before,b after")
    );
    drop((a, b));
    fixture.server.stop(true).await;
    fixture
        .runner
        .shutdown(std::time::Duration::from_secs(10))
        .await;
    assert_eq!(tally(&fixture.runner.stats()), (4, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_the_handler_spawns_and_background_tasks_do_not_see_it() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<(&'static str, bool)>();
    let fixture = serve_tasks(DisconnectPolicy::Run, move |tasks, _, _| {
        let seen_tx = seen_tx.clone();
        async move {
            let current = TaskQueue::current().is_some();
            seen_tx.send(("handler", current)).unwrap();
            let spawned = seen_tx.clone();
            // A task of the worker's own runtime.
            actix_web::rt::spawn(async move {
                let current = TaskQueue::current().is_some();
                spawned.send(("spawned", current)).unwrap();
            })
            .await
            .unwrap();
            let background = seen_tx.clone();
            tasks.add_task(
                move || async move {
                    let current = TaskQueue::current().is_some();
                    background.send(("background", current)).unwrap();
                },
                (),
            );
            "ok"
        }
    });
    let mut client = fixture.server.connect(Proto::H1).await;
    assert_eq!(client.get("/").await.1, "ok");
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(within(seen.recv()).await.unwrap());
    }
    assert_eq!(
        got,
        [("handler", true), ("spawned", false), ("background", false)]
    );
    drop(client);
    fixture.server.stop(true).await;
    fixture.runner.wait_idle().await;
}
