//! `TaskService`: gives each request a queue, and wraps its response body
//! in a [`TaskBody`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use afterward::adapter::{
    DisconnectPolicy, RequestTasks, WithCurrent, status_has_no_body, with_current,
};
use afterward::{Outcome, Runner, TaskQueue};
use http::{Method, Request, Response, header};
use pin_project_lite::pin_project;

use crate::body::TaskBody;
use crate::outcome::Verdict;

/// Gives each request a [`TaskQueue`] and runs it once the response body is
/// finished.
///
/// For each request, `TaskService`:
///
/// 1. puts a `TaskQueue` into the request's extensions, where the handler
///    finds it with `req.extensions().get::<TaskQueue>()` (or axum's
///    `TaskQueue` extractor with the `axum` feature, or `Extension<TaskQueue>`);
/// 2. calls the inner service, whose future finds the queue with
///    [`TaskQueue::current`] too;
/// 3. wraps the response body in a [`TaskBody`], which hands the queue to the
///    [`Runner`] when the body is finished and dropped.
///
/// So the tasks start only after the last byte of the response was handed to
/// hyper, and never hold up the response or the connection.
///
/// - If the response carries a `TaskQueue` of its own in its extensions, it
///   runs too, after the request's.
/// - If the request already carries a queue, it came from an outer
///   `TaskService` (the service or [`TaskLayer`](crate::TaskLayer) stacked
///   twice): that queue is reused, and run once, by the outer one.
/// - If the inner service returns an error, or its future is dropped before
///   it produced a response (the client went away while the handler ran),
///   the tasks do not run: they are counted `skipped` and logged.
/// - At the hand-off it records the response's [`Outcome`]
///   for the tasks' run conditions (see [`afterward::RunIf`]): a failure when
///   the status is 400 or more, or a `grpc-status` other than `0` was sent
///   anywhere (the headers, the trailers, or for gRPC-Web the trailer frame
///   at the end of the body), even if a `0` came too; for a gRPC response
///   (`content-type: application/grpc…`), a failure too when the body ended
///   with no status at all (its client sees a protocol error), and unknown
///   when the body was dropped before its status; a success otherwise.
///
/// `TaskService` implements hyper's `Service`, and with the `tower` feature
/// tower's too.
#[derive(Clone)]
pub struct TaskService<S> {
    inner: S,
    runner: Runner,
    on_disconnect: DisconnectPolicy,
    backpressure: bool,
    /// With back-pressure: the room `poll_ready` reserved, or is waiting for.
    room: Room,
}

/// The room a `poll_ready` reserved in the backlog for the next `call`, or
/// the wait for it. A clone of the service starts afresh; dropped unused,
/// the room is given back.
#[derive(Default)]
enum Room {
    #[default]
    None,
    Waiting(afterward::Reserve),
    Reserved(afterward::Reservation),
}

impl Clone for Room {
    fn clone(&self) -> Room {
        Room::None
    }
}

impl<S> TaskService<S> {
    /// Wraps `inner`; queues are handed to `runner`.
    pub fn new(inner: S, runner: Runner) -> TaskService<S> {
        TaskService {
            inner,
            runner,
            on_disconnect: DisconnectPolicy::default(),
            backpressure: false,
            room: Room::None,
        }
    }

    /// What to do with the tasks of a response whose body was dropped before
    /// it was finished. Defaults to [`DisconnectPolicy::Run`].
    pub fn on_disconnect(mut self, policy: DisconnectPolicy) -> TaskService<S> {
        self.on_disconnect = policy;
        self
    }

    /// With `true`, tower's `poll_ready` is not ready while the runner's
    /// backlog is full (see `RunnerBuilder::max_backlog`), and once it is
    /// ready it has reserved room for the next request ([`Runner::reserve`]):
    /// that request's tasks are all taken at hand-off, however many, so no
    /// task of an admitted request is refused. Off by default: a request is
    /// then always taken, and tasks that do not fit are refused and counted
    /// `rejected`.
    ///
    /// Put a load shedder or a buffer in front to choose what a full backlog
    /// means: with `tower::load_shed`, requests are answered at once with an
    /// error (a 503 through axum's `HandleErrorLayer`) before any handler
    /// runs; with `tower::buffer`, they wait until there is room. The
    /// backlog may pass its bound by the tasks of requests already admitted.
    /// Only tower's `Service` has `poll_ready`: with hyper alone this
    /// setting does nothing.
    ///
    /// See [`TaskLayer::backpressure`](crate::TaskLayer::backpressure) for
    /// an example with axum.
    ///
    /// [`Runner::capacity`]: afterward::Runner::capacity
    pub fn backpressure(mut self, on: bool) -> TaskService<S> {
        self.backpressure = on;
        self
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Gives the request its queue, unless an outer `TaskService` did, and
    /// returns the request's tasks and its queue, for the handler's
    /// [`TaskQueue::current`].
    fn prepare<B>(
        &self,
        req: &mut Request<B>,
        reservation: Option<afterward::Reservation>,
    ) -> (Pending, TaskQueue) {
        let no_body_method = match *req.method() {
            Method::HEAD => NoBody::Always,
            Method::CONNECT => NoBody::OnSuccess,
            _ => NoBody::Never,
        };
        let extensions = req.extensions_mut();
        // A queue already there was put by an outer `TaskService`, which
        // will hand it over: this one only passes the response through.
        let (request, queue) = match extensions.get::<TaskQueue>() {
            Some(queue) => (None, queue.clone()),
            None => {
                let mut request = RequestTasks::new(&self.runner, self.on_disconnect);
                if let Some(reservation) = reservation {
                    request = request.with_reservation(reservation);
                }
                let queue = request.queue().clone();
                extensions.insert(queue.clone());
                (Some(request), queue)
            }
        };
        let pending = Pending {
            request,
            no_body_method,
        };
        (pending, queue)
    }
}

impl<S: fmt::Debug> fmt::Debug for TaskService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskService")
            .field("inner", &self.inner)
            .field("on_disconnect", &self.on_disconnect)
            .field("backpressure", &self.backpressure)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> hyper::service::Service<Request<ReqBody>> for TaskService<S>
where
    S: hyper::service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<TaskBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn call(&self, mut req: Request<ReqBody>) -> Self::Future {
        let (pending, queue) = self.prepare(&mut req, None);
        ResponseFuture {
            inner: with_current(queue, self.inner.call(req)),
            pending,
        }
    }
}

#[cfg(feature = "tower")]
impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for TaskService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<TaskBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.backpressure {
            loop {
                match &mut self.room {
                    Room::Reserved(_) => break,
                    Room::Waiting(reserve) => {
                        self.room = Room::Reserved(ready!(Pin::new(reserve).poll(cx)));
                    }
                    Room::None => self.room = Room::Waiting(self.runner.reserve()),
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let reservation = match std::mem::take(&mut self.room) {
            Room::Reserved(reservation) => Some(reservation),
            _ => None,
        };
        let (pending, queue) = self.prepare(&mut req, reservation);
        ResponseFuture {
            inner: with_current(queue, self.inner.call(req)),
            pending,
        }
    }
}

// ===== ResponseFuture =====

pin_project! {
    /// The response future of [`TaskService`].
    ///
    /// If it is dropped before the inner service produced a response, or the
    /// inner service fails, the request's tasks are counted `skipped`.
    pub struct ResponseFuture<F> {
        // The handler, with the request's queue as `TaskQueue::current()`.
        #[pin]
        inner: WithCurrent<F>,
        pending: Pending,
    }
}

/// The request's tasks until its response exists. Dropped before that (the
/// handler's future was dropped), they are skipped.
struct Pending {
    request: Option<RequestTasks>,
    no_body_method: NoBody,
}

#[derive(Clone, Copy)]
enum NoBody {
    Never,
    Always,
    OnSuccess,
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: http_body::Body,
{
    type Output = Result<Response<TaskBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let request = this.pending.request.take();
        let no_body_method = this.pending.no_body_method;
        Poll::Ready(match (result, request) {
            (Ok(response), None) => Ok(response.map(TaskBody::passthrough)),
            (Ok(response), Some(request)) => {
                let (parts, body) = response.into_parts();
                let response_queue = parts.extensions.get::<TaskQueue>().cloned();
                let tasks =
                    request.respond(Outcome::from_status(parts.status.as_u16()), response_queue);
                let no_body = match no_body_method {
                    NoBody::Always => true,
                    NoBody::OnSuccess => parts.status.is_success(),
                    NoBody::Never => false,
                } || status_has_no_body(parts.status.as_u16());
                let verdict = Verdict::of(&parts);
                let body = TaskBody::new(
                    body,
                    tasks,
                    content_length(&parts.headers),
                    no_body,
                    verdict,
                );
                Ok(Response::from_parts(parts, body))
            }
            (Err(error), request) => {
                if let Some(request) = request {
                    request.fail("the request's handler returned an error");
                }
                Err(error)
            }
        })
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
