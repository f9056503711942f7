//! The adapter protocol: what every framework adapter does with a request's
//! tasks. For authors of adapters (`afterward-hyper`, `afterward-actix`, or
//! one for another framework); handler authors never need it.
//!
//! An adapter is a middleware and a response-body wrapper. For each request
//! it:
//!
//! 1. **gives the request a queue**, unless an outer instance of the same
//!    middleware already did (the request carries a [`TaskQueue`] in its
//!    extensions): then it passes the response through untouched, and the
//!    outer one hands the queue over, once. Otherwise it makes a
//!    [`RequestTasks`] from the [`Runner`] and puts a clone of its
//!    [`queue`](RequestTasks::queue) where handlers find it (the request's
//!    extensions, an extractor);
//! 2. **calls the handler**, inside [`with_current`] so that
//!    [`TaskQueue::current`] finds the queue. If the handler fails (returns
//!    an error rather than a response), [`RequestTasks::fail`]; if its future is dropped
//!    first (the client left), dropping the `RequestTasks` does the same.
//!    Either way the tasks are counted `skipped` and logged;
//! 3. **records the outcome** when the response exists:
//!    [`RequestTasks::respond`] with [`Outcome::from_status`] of its status
//!    and the queue the response carries, if any (it runs after the
//!    request's). It returns a [`ResponseTasks`], which the body wrapper
//!    owns;
//! 4. **decides when the response is complete**: the body wrapper calls
//!    [`ResponseTasks::complete`] once the last frame of the body was given
//!    to the server, or, for a body of known length
//!    ([`ResponseTasks::expect_len`]), counts its bytes with
//!    [`ResponseTasks::sent`]; a body known to be empty, or a response that
//!    can have no body ([`status_has_no_body`]), is complete from the
//!    start. An outcome learnt later (a gRPC
//!    status in the trailers) goes to [`ResponseTasks::set_outcome`];
//! 5. **hands the queue over** by dropping the `ResponseTasks`, which the
//!    server does when it drops the body: a complete response's tasks run;
//!    an incomplete one's (the client left mid-body) run or are skipped by
//!    the [`DisconnectPolicy`].
//!
//! The hand-off happens in a destructor, exactly once, whichever way the
//! body ends, and never panics. Everything else (counting, shutdown, the
//! backlog) is the runner's.
//!
//! # Examples
//!
//! A made-up framework whose handler returns a status and a body of chunks:
//!
//! ```
//! use afterward::adapter::{DisconnectPolicy, RequestTasks};
//! use afterward::{Outcome, Runner, TaskQueue};
//!
//! fn handler(tasks: &TaskQueue) -> (u16, Vec<&'static str>) {
//!     tasks.add_task(|| println!("after the response"), ());
//!     (200, vec!["hello, ", "world"])
//! }
//!
//! # #[tokio::main]
//! # async fn main() {
//! let runner = Runner::new();
//!
//! // 1. The middleware gives the request its queue, and calls the handler.
//! let request = RequestTasks::new(&runner, DisconnectPolicy::Run);
//! let (status, chunks) = handler(request.queue());
//! // 3. The response exists: its outcome is recorded.
//! let mut response = request.respond(Outcome::from_status(status), None);
//! // 4. The body wrapper sees the last chunk go to the server...
//! for (i, chunk) in chunks.iter().enumerate() {
//!     print!("{chunk}");
//!     if i + 1 == chunks.len() {
//!         response.complete();
//!     }
//! }
//! // 5. ... and the server drops the body: the queue is handed over.
//! drop(response);
//!
//! runner.wait_idle().await;
//! assert_eq!(runner.stats().completed(), 1);
//! # }
//! ```

use std::fmt;
use std::future::Future;

use crate::condition::Outcome;
use crate::queue::TaskQueue;
pub use crate::queue::WithCurrent;
use crate::runner::{Reservation, Runner};

/// What happens to the tasks of a request whose response body was dropped
/// before it was *complete*.
///
/// A body is complete once its **last frame was handed to the server**, not
/// once the client has read it: this is where Starlette runs its
/// background tasks too (after the last body message was given to the
/// server). So the policy sees a disconnect only while the body is still
/// producing frames:
///
/// | the response body | the client leaves | the policy sees |
/// |---|---|---|
/// | a single frame (a full buffer, a `String`, JSON) | any time after the headers | nothing: the frame was handed over at once, so the tasks run |
/// | a stream of frames | before the body has shown its end | a disconnect |
/// | a stream of frames | after the body has shown its end, while the server is still writing | nothing: the tasks run |
/// | any body | while the handler runs | not this policy: the tasks are always skipped |
///
/// A server writes a large single frame out over many socket writes, and a
/// client that hangs up in the middle of that is not seen. Tasks that must
/// run only if the client received every byte need a streamed body, or an
/// acknowledgement from the client. Each adapter's docs say when its body
/// shows its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DisconnectPolicy {
    /// Run them anyway (the default): the request was accepted and handled;
    /// only its response did not arrive in full.
    #[default]
    Run,
    /// Do not run them; count them `skipped` and log them. For tasks that
    /// only make sense if the response was streamed to its end.
    Skip,
}

/// A request's tasks, from the moment an adapter sees the request until its
/// handler produced a response (see the [module docs](self)).
///
/// Dropping it before [`respond`](RequestTasks::respond) or
/// [`fail`](RequestTasks::fail) counts the tasks `skipped`: the handler's
/// future was dropped before it produced a response.
#[must_use = "dropping it skips the request's tasks"]
pub struct RequestTasks {
    handover: Option<Handover>,
}

/// What a finished (or abandoned) response hands over.
struct Handover {
    runner: Runner,
    queue: TaskQueue,
    on_disconnect: DisconnectPolicy,
    /// A queue the response carried; runs after the request's.
    response_queue: Option<TaskQueue>,
    /// Room the request was admitted with; given back when it is dropped.
    reservation: Option<Reservation>,
}

impl Handover {
    fn merged(self) -> (Runner, TaskQueue) {
        if let Some(response_queue) = &self.response_queue {
            self.queue.append(response_queue);
        }
        (self.runner, self.queue)
    }

    fn run(mut self, outcome: Outcome) {
        let reservation = self.reservation.take();
        let (runner, queue) = self.merged();
        runner.hand_over(queue, reservation, outcome);
    }

    fn skip(self, reason: &str) {
        let (runner, queue) = self.merged();
        runner.skip(queue, reason);
    }
}

impl RequestTasks {
    /// A new request's tasks, in a queue made by `runner` (see
    /// [`Runner::new_queue`]: a shutdown knows the requests in flight).
    pub fn new(runner: &Runner, on_disconnect: DisconnectPolicy) -> RequestTasks {
        RequestTasks {
            handover: Some(Handover {
                runner: runner.clone(),
                queue: runner.new_queue(),
                on_disconnect,
                response_queue: None,
                reservation: None,
            }),
        }
    }

    /// Attaches the room the request was admitted with (see
    /// [`Runner::reserve`]): every task of its queue is then taken at
    /// hand-off, whatever the backlog. If the tasks are skipped, or the
    /// request dropped, the room is given back.
    pub fn with_reservation(mut self, reservation: Reservation) -> RequestTasks {
        if let Some(handover) = &mut self.handover {
            handover.reservation = Some(reservation);
        }
        self
    }

    /// The request's queue: put a clone where handlers find it.
    pub fn queue(&self) -> &TaskQueue {
        match &self.handover {
            Some(handover) => &handover.queue,
            // `respond` and `fail` take `self`, so the hand-over is there
            // for as long as `self` can be borrowed.
            None => unreachable!("RequestTasks used after it was handed over"),
        }
    }

    /// The handler produced a response whose outcome is `outcome`; the
    /// queue the response carries, if any, runs after the request's. The
    /// returned [`ResponseTasks`] goes with the response's body.
    pub fn respond(mut self, outcome: Outcome, response_queue: Option<TaskQueue>) -> ResponseTasks {
        let mut handover = self.handover.take();
        if let Some(handover) = &mut handover {
            handover.response_queue = response_queue;
        }
        ResponseTasks {
            handover,
            complete: false,
            remaining: None,
            outcome,
        }
    }

    /// The handler failed: the tasks do not run, and are counted `skipped`
    /// and logged with `reason`.
    pub fn fail(mut self, reason: &str) {
        if let Some(handover) = self.handover.take() {
            handover.skip(reason);
        }
    }
}

impl Drop for RequestTasks {
    fn drop(&mut self) {
        if let Some(handover) = self.handover.take() {
            handover.skip("the request's handler was dropped before it produced a response");
        }
    }
}

impl fmt::Debug for RequestTasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestTasks")
            .field("queue", &self.handover.as_ref().map(|h| &h.queue))
            .finish()
    }
}

/// A response's tasks, owned by its body wrapper: handed over when it is
/// dropped (see the [module docs](self)).
pub struct ResponseTasks {
    handover: Option<Handover>,
    complete: bool,
    /// Bytes of the body still to be given to the server, when its length
    /// is known.
    remaining: Option<u64>,
    outcome: Outcome,
}

impl ResponseTasks {
    /// The last frame of the body was given to the server: the response is
    /// complete, and its tasks run whatever the [`DisconnectPolicy`].
    pub fn complete(&mut self) {
        self.complete = true;
    }

    /// The body is `len` bytes long (its `Content-Length`, or a size known
    /// up front): the response is complete once [`sent`](ResponseTasks::sent)
    /// has counted them, at once if `len` is 0. Servers often drop a body
    /// whose last byte they have without polling it again.
    pub fn expect_len(&mut self, len: u64) {
        self.remaining = Some(len);
        if len == 0 {
            self.complete();
        }
    }

    /// `n` more bytes of the body were given to the server.
    #[inline]
    pub fn sent(&mut self, n: u64) {
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.saturating_sub(n);
            if *remaining == 0 {
                self.complete = true;
            }
        }
    }

    /// Whether [`complete`](ResponseTasks::complete) was called.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The response's outcome, for the tasks' run conditions.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// Replaces the outcome, when the body tells more than its status did
    /// (a gRPC status in the trailers, say).
    pub fn set_outcome(&mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}

impl Drop for ResponseTasks {
    fn drop(&mut self) {
        // Nothing here may panic: this runs while a server tears a
        // connection down, possibly during unwinding, where a second panic
        // aborts.
        let Some(handover) = self.handover.take() else {
            return;
        };
        if self.complete {
            return handover.run(self.outcome);
        }
        match handover.on_disconnect {
            DisconnectPolicy::Run => {
                tracing::debug!(
                    "response body dropped before it was complete; its tasks run anyway (DisconnectPolicy::Run)"
                );
                handover.run(self.outcome);
            }
            DisconnectPolicy::Skip => handover.skip(
                "the response body was dropped before it was complete (DisconnectPolicy::Skip)",
            ),
        }
    }
}

impl fmt::Debug for ResponseTasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseTasks")
            .field("complete", &self.complete)
            .field("remaining", &self.remaining)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

/// Runs `future` (a request's handler) with `queue` as
/// [`TaskQueue::current`]. Tasks the handler spawns do not inherit it.
pub fn with_current<F: Future>(queue: TaskQueue, future: F) -> WithCurrent<F> {
    crate::queue::with_current(queue, future)
}

/// Records how the response `queue` was filled for ended, for its tasks'
/// run conditions, on a queue an adapter hands over itself with
/// [`Runner::spawn`] or [`Runner::skip`] rather than through
/// [`ResponseTasks`]. A queue nobody records an outcome for counts as a
/// success.
///
/// # Examples
///
/// ```
/// use afterward::{Outcome, RunIf, Runner, TaskQueue};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let runner = Runner::new();
/// let queue = TaskQueue::new();
/// queue.add_task(|| println!("receipt"), ()).run_if(RunIf::Success);
/// afterward::adapter::set_outcome(&queue, Outcome::from_status(503));
/// assert_eq!(runner.spawn(queue).await.skipped(), 1);
/// # }
/// ```
pub fn set_outcome(queue: &TaskQueue, outcome: Outcome) {
    queue.record_outcome(outcome);
}

/// Whether a response with this HTTP status has no body (`1xx`, `204`,
/// `304`; RFC 9110, section 6.4.1): such a response is complete from the
/// start, since a server drops its body without polling it.
pub fn status_has_no_body(status: u16) -> bool {
    matches!(status, 100..=199 | 204 | 304)
}

impl Outcome {
    /// The outcome of a response with this HTTP status: a success below
    /// 400, a failure from 400 on. The rule every adapter follows.
    pub fn from_status(status: u16) -> Outcome {
        if status < 400 {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }
}
