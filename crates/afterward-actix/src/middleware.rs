//! `Tasks`: the middleware that gives each request a queue, and wraps its
//! response body in a [`TaskBody`].

use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::Method;
use afterward::adapter::{
    DisconnectPolicy, RequestTasks, WithCurrent, status_has_no_body, with_current,
};
use afterward::{Outcome, Runner, TaskQueue};
use pin_project_lite::pin_project;

use crate::body::TaskBody;

/// The middleware: gives each request a [`TaskQueue`], and runs it once the
/// response body is finished.
///
/// `App::new().wrap(Tasks::new(runner.clone()))`, or `.wrap(..)` on a
/// `Scope` or a `Resource` for some routes only. For each request, `Tasks`:
///
/// 1. puts a `TaskQueue` into the request's extensions, where a handler
///    takes it as an extractor (`tasks: TaskQueue`) or finds it with
///    `req.extensions().get::<TaskQueue>()`;
/// 2. calls the rest of the app, whose future finds the queue with
///    [`TaskQueue::current`] too;
/// 3. wraps the response body in a [`TaskBody`], which hands the queue to
///    the [`Runner`] when actix-web has taken the body's last chunk and
///    drops it.
///
/// So the tasks start only after the last chunk of the response was handed
/// to actix-web, and never hold up the response or the connection. They
/// run on the runner's runtime, never on the actix worker that served the
/// request.
///
/// - A handler that returns `Err` gets actix-web's error response, like any
///   response: its tasks run, and `RunIf` sees a failure (status 400 or
///   more; see [`afterward::RunIf`]).
/// - If the response carries a `TaskQueue` of its own in its extensions
///   (`response.extensions_mut().insert(queue)`), it runs too, after the
///   request's.
/// - If the request already carries a queue, it came from an outer `Tasks`
///   (the middleware wrapped twice): that queue is reused, and run once, by
///   the outer one.
/// - If the service inside returns an error rather than a response (a
///   middleware that fails), or the request's future is dropped before it
///   produced one (the client went away while the handler ran, a worker
///   stopped), the tasks do not run: they are counted `skipped` and logged.
///
/// # Examples
///
/// With actix-web's test helpers, which serve the app without a socket:
///
/// ```
/// use actix_web::{App, HttpResponse, test, web};
/// use afterward::{Runner, TaskQueue};
/// use afterward_actix::{DisconnectPolicy, Tasks};
///
/// async fn register(tasks: TaskQueue) -> HttpResponse {
///     tasks.add_task(|| println!("welcome email"), ());
///     HttpResponse::Created().body("registered")
/// }
///
/// # #[actix_web::main]
/// # async fn main() {
/// let runner = Runner::new();
/// let app = test::init_service(
///     App::new()
///         .wrap(Tasks::new(runner.clone()).on_disconnect(DisconnectPolicy::Skip))
///         .route("/register", web::post().to(register)),
/// )
/// .await;
///
/// let request = test::TestRequest::post().uri("/register").to_request();
/// let response = test::call_service(&app, request).await;
/// assert_eq!(response.status(), 201);
/// // Reading the body to its end finishes it: the queue is handed over.
/// assert_eq!(test::read_body(response).await, "registered");
///
/// runner.wait_idle().await;
/// assert_eq!(runner.stats().completed(), 1);
/// # }
/// ```
#[derive(Clone)]
pub struct Tasks {
    runner: Runner,
    on_disconnect: DisconnectPolicy,
}

impl Tasks {
    /// The middleware; queues are handed to `runner`, which is built once,
    /// outside `HttpServer::new`'s factory (see the [crate docs](crate)).
    pub fn new(runner: Runner) -> Tasks {
        Tasks {
            runner,
            on_disconnect: DisconnectPolicy::default(),
        }
    }

    /// What to do with the tasks of a response whose body was dropped before
    /// it was finished. Defaults to [`DisconnectPolicy::Run`].
    pub fn on_disconnect(mut self, policy: DisconnectPolicy) -> Tasks {
        self.on_disconnect = policy;
        self
    }
}

impl fmt::Debug for Tasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tasks")
            .field("on_disconnect", &self.on_disconnect)
            .finish_non_exhaustive()
    }
}

impl<S, B> Transform<S, ServiceRequest> for Tasks
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>>,
    B: MessageBody,
{
    type Response = ServiceResponse<TaskBody<B>>;
    type Error = S::Error;
    type Transform = TasksMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<TasksMiddleware<S>, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(TasksMiddleware {
            service,
            runner: self.runner.clone(),
            on_disconnect: self.on_disconnect,
        }))
    }
}

// ===== TasksMiddleware =====

/// The service [`Tasks`] wraps around the rest of the app; see there.
pub struct TasksMiddleware<S> {
    service: S,
    runner: Runner,
    on_disconnect: DisconnectPolicy,
}

impl<S, B> Service<ServiceRequest> for TasksMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>>,
    B: MessageBody,
{
    type Response = ServiceResponse<TaskBody<B>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let head = req.method() == Method::HEAD;
        // A queue already there was put by an outer `Tasks`, which will
        // hand it over: this one only passes the response through.
        let outer = req.extensions().get::<TaskQueue>().cloned();
        let (request, queue) = match outer {
            Some(queue) => (None, queue),
            None => {
                let request = RequestTasks::new(&self.runner, self.on_disconnect);
                let queue = request.queue().clone();
                req.extensions_mut().insert(queue.clone());
                (Some(request), queue)
            }
        };
        ResponseFuture {
            inner: with_current(queue, self.service.call(req)),
            request,
            head,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for TasksMiddleware<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TasksMiddleware")
            .field("service", &self.service)
            .field("on_disconnect", &self.on_disconnect)
            .finish_non_exhaustive()
    }
}

// ===== ResponseFuture =====

pin_project! {
    /// The response future of [`TasksMiddleware`].
    ///
    /// If it is dropped before the service inside produced a response, or
    /// that service fails, the request's tasks are counted `skipped`.
    pub struct ResponseFuture<F> {
        // The rest of the app, with the request's queue as
        // `TaskQueue::current()`.
        #[pin]
        inner: WithCurrent<F>,
        // `None` when an outer `Tasks` owns the queue. Dropped before the
        // response exists, it skips the tasks.
        request: Option<RequestTasks>,
        head: bool,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, E>>,
    B: MessageBody,
{
    type Output = Result<ServiceResponse<TaskBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(request) = this.request.take() else {
            // An outer `Tasks` owns the queue.
            return Poll::Ready(
                result.map(|res| res.map_body(|_, body| TaskBody::passthrough(body))),
            );
        };
        Poll::Ready(match result {
            Ok(response) => Ok(respond(request, response, *this.head)),
            Err(error) => {
                request.fail("the service inside `Tasks` returned an error, not a response");
                Err(error)
            }
        })
    }
}

/// Records the response's outcome and the queue it carries, and wraps its
/// body: from here on, the body hands the queue over.
fn respond<B: MessageBody>(
    request: RequestTasks,
    response: ServiceResponse<B>,
    head: bool,
) -> ServiceResponse<TaskBody<B>> {
    let status = response.status();
    let response_queue = response.response().extensions().get::<TaskQueue>().cloned();
    let tasks = request.respond(Outcome::from_status(status.as_u16()), response_queue);
    let no_body = head || status_has_no_body(status.as_u16());
    response.map_body(|_, body| TaskBody::new(body, tasks, no_body))
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("request", &self.request)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}
