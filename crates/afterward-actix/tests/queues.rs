//! Which queue a request gets and which tasks run: the extractor, run
//! conditions by status, a queue the response carries, `Tasks` wrapped
//! twice, a service that fails, and `TaskQueue::current()`.

mod common;

use std::sync::Arc;

use actix_web::dev::Service;
use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, web};
use afterward::{RunIf, Runner, TaskQueue};
use afterward_actix::{DisconnectPolicy, Tasks};
use common::*;
use tokio::sync::{Barrier, mpsc};

// ===== the extractor =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_takes_the_queue_the_middleware_gave_the_request() {
    let (runner, log) = (Runner::new(), Log::default());
    let (r, l) = (runner.clone(), log.clone());
    let server = Server::start(move || {
        let log = l.clone();
        App::new().wrap(Tasks::new(r.clone())).route(
            "/register",
            web::post().to(move |tasks: TaskQueue, req: HttpRequest| {
                add_logged(&tasks, &log, "welcome");
                // One queue, however the handler reaches it.
                let in_extensions = req.extensions().get::<TaskQueue>().unwrap().len();
                let current = TaskQueue::current().unwrap().len();
                async move { format!("{in_extensions} {current}") }
            }),
        )
    });
    for proto in PROTOS {
        let mut client = server.connect(proto).await;
        let (status, body) = client.fetch("POST", "/register").await;
        assert_eq!(
            (status.as_u16(), &body[..]),
            (200, &b"1 1"[..]),
            "{proto:?}"
        );
        client.close();
    }
    log.settled(3).await;
    runner.wait_idle().await;
    assert_eq!(runner.stats().completed(), 3);
    assert_eq!(log.events(), ["ran welcome"; 3]);
    server.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tasks_the_extractor_answers_500_naming_it() {
    async fn register(tasks: TaskQueue) -> &'static str {
        tasks.add_task(|| (), ());
        "registered"
    }
    let server = Server::start(|| App::new().route("/register", web::get().to(register)));
    let mut client = server.connect(Proto::H1).await;
    let (status, body) = client.get("/register").await;
    assert_eq!(status, 500);
    assert!(body.contains("afterward_actix::Tasks"), "{body}");
    client.close();
    server.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_queue_is_none_without_tasks_and_some_with_it() {
    async fn maybe(tasks: Option<TaskQueue>) -> &'static str {
        match tasks {
            Some(_) => "queue",
            None => "no queue",
        }
    }
    let runner = Runner::new();
    let server = Server::start(move || {
        App::new()
            .service(
                web::scope("/with")
                    .wrap(Tasks::new(runner.clone()))
                    .route("", web::get().to(maybe)),
            )
            .route("/without", web::get().to(maybe))
    });
    let mut client = server.connect(Proto::H1).await;
    assert_eq!(client.get("/with").await.1, "queue");
    assert_eq!(client.get("/without").await.1, "no queue");
    client.close();
    server.stop(true).await;
}

// ===== which tasks run =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_conditions_follow_the_status() {
    let (runner, log) = (Runner::new(), Log::default());
    let (r, l) = (runner.clone(), log.clone());
    let server = Server::start(move || {
        let log = l.clone();
        App::new().wrap(Tasks::new(r.clone())).route(
            "/{status}",
            web::get().to(move |tasks: TaskQueue, status: web::Path<u16>| {
                let status = status.into_inner();
                let (success, failure) = match status {
                    200 => ("receipt 200", "release stock 200"),
                    _ => ("receipt 503", "release stock 503"),
                };
                add_logged(&tasks, &log, success).run_if(RunIf::Success);
                add_logged(&tasks, &log, failure).run_if(RunIf::Failure);
                let status = actix_web::http::StatusCode::from_u16(status).unwrap();
                async move { HttpResponse::build(status).body("done") }
            }),
        )
    });
    let mut client = server.connect(Proto::H1).await;
    assert_eq!(client.get("/200").await.0, 200);
    assert_eq!(client.get("/503").await.0, 503);
    client.close();
    log.settled(4).await;
    runner.wait_idle().await;
    let stats = runner.stats();
    assert_eq!((stats.completed(), stats.skipped()), (2, 2), "{stats:?}");
    assert_eq!(log.events(), ["ran receipt 200", "ran release stock 503"]);
    server.stop(true).await;
}

/// A queue the response carries runs too, after the request's, in one
/// drain; its run conditions see the response's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_the_response_carries_runs_after_the_requests() {
    let (runner, log) = (Runner::new(), Log::default());
    let (r, l) = (runner.clone(), log.clone());
    let server = Server::start(move || {
        let log = l.clone();
        App::new()
            .wrap(Tasks::new(r.clone()))
            .default_service(web::to(move |tasks: TaskQueue| {
                let response_queue = TaskQueue::new();
                add_logged(&response_queue, &log, "response's");
                add_logged(&response_queue, &log, "response's, on failure").run_if(RunIf::Failure);
                add_logged(&tasks, &log, "request's");
                let mut response = HttpResponse::Ok().body("ok");
                response.extensions_mut().insert(response_queue);
                async move { response }
            }))
    });
    for proto in PROTOS {
        let mut client = server.connect(proto).await;
        assert_eq!(client.get("/").await.1, "ok");
        client.close();
        log.settled(3).await;
        runner.wait_idle().await;
        assert_eq!(
            log.events(),
            ["ran request's", "ran response's"],
            "{proto:?}"
        );
        log.clear();
    }
    let stats = runner.stats();
    assert_eq!((stats.completed(), stats.skipped()), (6, 3), "{stats:?}");
    server.stop(true).await;
}

/// `Tasks` on the app and again on a scope: the inner one finds the
/// outer's queue in the request and passes the response through, so the
/// tasks run once, under the outer one's policy (here `Run`, while the
/// inner one says `Skip`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_wrapped_twice_runs_the_tasks_once_under_the_outer_policy() {
    let (runner, log) = (Runner::new(), Log::default());
    let (r, l) = (runner.clone(), log.clone());
    let server = Server::start(move || {
        let log = l.clone();
        App::new().wrap(Tasks::new(r.clone())).service(
            web::scope("/inner")
                .wrap(Tasks::new(r.clone()).on_disconnect(DisconnectPolicy::Skip))
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
        let mut client = server.connect(proto).await;
        assert_eq!(client.get("/inner/2").await.1, "drip\ndrip\n");
        // A client that leaves mid-body: a disconnect, under `Run`.
        let mut body = client.send("GET", "/inner/0").await.into_body();
        next_chunk(&mut body).await;
        drop(body);
        client.close();
    }
    log.settled(6).await;
    runner.wait_idle().await;
    let stats = runner.stats();
    assert_eq!(
        (stats.tasks_received(), stats.completed()),
        (6, 6),
        "{stats:?}"
    );
    server.stop(true).await;
}

/// A service inside `Tasks` that fails (here a middleware that turns the
/// handler's response into an error) produced no response of its own: the
/// tasks are skipped, and actix answers with the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_returns_an_error_skips_the_tasks() {
    let (runner, log) = (Runner::new(), Log::default());
    let (r, l) = (runner.clone(), log.clone());
    let server = Server::start(move || {
        let log = l.clone();
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
            .wrap(Tasks::new(r.clone()))
            .default_service(web::to(move |tasks: TaskQueue| {
                add_logged(&tasks, &log, "never");
                async { "ok" }
            }))
    });
    let mut client = server.connect(Proto::H1).await;
    assert_eq!(client.get("/").await.0, 503);
    client.close();
    log.settled(1).await;
    runner.wait_idle().await;
    let stats = runner.stats();
    assert_eq!(
        (stats.skipped(), stats.tasks_received()),
        (1, 1),
        "{stats:?}"
    );
    assert!(log.events().is_empty());
    server.stop(true).await;
}

// ===== TaskQueue::current() =====

/// Code deep in a call stack: no request in hand.
fn audit(line: String) {
    let tasks = TaskQueue::current().expect("inside a handler");
    tasks.add_task(|| (), ()).name(line);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_handlers_each_see_their_own_queue() {
    assert!(TaskQueue::current().is_none(), "outside any handler");
    let runner = Runner::new();
    // Both handlers are in flight at once on the one worker, across an
    // await.
    let barrier = Arc::new(Barrier::new(2));
    let r = runner.clone();
    let server = Server::start(move || {
        let barrier = barrier.clone();
        App::new().wrap(Tasks::new(r.clone())).route(
            "/{id}",
            web::get().to(move |tasks: TaskQueue, id: web::Path<String>| {
                let barrier = barrier.clone();
                async move {
                    audit(format!("before {id}"));
                    barrier.wait().await;
                    audit(format!("after {id}"));
                    let names = TaskQueue::current().unwrap().task_names();
                    assert_eq!(names, tasks.task_names());
                    names.join(",")
                }
            }),
        )
    });
    let (mut a, mut b) = (
        server.connect(Proto::H1).await,
        server.connect(Proto::H2).await,
    );
    let (ra, rb) = tokio::join!(a.get("/a"), b.get("/b"));
    assert_eq!(ra.1, "before a,after a");
    assert_eq!(rb.1, "before b,after b");
    a.close();
    b.close();
    server.stop(true).await;
    runner.shutdown(std::time::Duration::from_secs(10)).await;
    assert_eq!(runner.stats().completed(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_the_handler_spawns_and_background_tasks_do_not_see_it() {
    let runner = Runner::new();
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<(&'static str, bool)>();
    let r = runner.clone();
    let server = Server::start(move || {
        let seen_tx = seen_tx.clone();
        App::new()
            .wrap(Tasks::new(r.clone()))
            .default_service(web::to(move |tasks: TaskQueue| {
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
            }))
    });
    let mut client = server.connect(Proto::H1).await;
    assert_eq!(client.get("/").await.1, "ok");
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(within(seen.recv()).await.unwrap());
    }
    assert_eq!(
        got,
        [("handler", true), ("spawned", false), ("background", false)]
    );
    client.close();
    server.stop(true).await;
    runner.wait_idle().await;
}
