use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use afterward::{Outcome, Runner, TaskQueue};
use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::DisconnectPolicy;

pin_project! {
    /// A response body that hands its request's [`TaskQueue`] to the
    /// [`Runner`] once it is finished.
    ///
    /// Made by [`TaskService`](crate::TaskService); you meet it only as the
    /// body type of its responses. It forwards every frame, `is_end_stream`
    /// and `size_hint` unchanged.
    ///
    /// The body counts as **finished** when any of these holds, whichever
    /// comes first:
    ///
    /// - it was already at its end when the response was made (`Empty`, or
    ///   `is_end_stream()` is true);
    /// - the response can have no body: a `HEAD` request, a `1xx`, `204` or
    ///   `304` status, or a successful `CONNECT`;
    /// - `poll_frame` yielded `None`, an error, or a trailers frame;
    /// - after a data frame, `is_end_stream()` is true;
    /// - the data frames reached the `Content-Length` header, or the exact
    ///   size hint.
    ///
    /// The queue is handed over when the body is **dropped**, which hyper does
    /// right after it is finished (often without polling it to `None`). A body
    /// dropped before it finished (the client went away, or an HTTP/2 stream
    /// was reset) is handled by the [`DisconnectPolicy`].
    pub struct TaskBody<B> {
        #[pin]
        inner: B,
        guard: Guard,
        // Bytes still expected, when the length is known up front.
        remaining: Option<u64>,
    }
}

/// Owns the hand-off. Its `Drop` is the one place the queue leaves, so it
/// happens exactly once however the body ends.
struct Guard {
    handoff: Option<Handoff>,
    finished: bool,
    verdict: Verdict,
}

/// What the response has said of its outcome so far: its status, and a
/// `grpc-status` in its headers or trailers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Verdict {
    failed_status: bool,
    /// A gRPC response, which must send a `grpc-status`.
    grpc: bool,
    /// The `grpc-status` seen: `Some(true)` for `0`.
    grpc_ok: Option<bool>,
}

impl Verdict {
    pub(crate) fn of(parts: &http::response::Parts) -> Verdict {
        let grpc = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
        Verdict {
            failed_status: parts.status.as_u16() >= 400,
            grpc,
            grpc_ok: grpc_ok(&parts.headers),
        }
    }

    fn trailers(&mut self, trailers: &http::HeaderMap) {
        if let Some(ok) = grpc_ok(trailers) {
            self.grpc_ok = Some(ok);
        }
    }

    /// The outcome, for a body that was finished or was dropped before.
    fn outcome(self, finished: bool) -> Outcome {
        match (self.failed_status, self.grpc_ok, self.grpc) {
            (true, _, _) | (false, Some(false), _) => Outcome::Failure,
            (false, Some(true), _) | (false, None, false) => Outcome::Success,
            // A gRPC body that ended without its status failed, as its
            // client sees it; one dropped before its trailers may have done
            // either.
            (false, None, true) if finished => Outcome::Failure,
            (false, None, true) => Outcome::Unknown,
        }
    }
}

fn grpc_ok(headers: &http::HeaderMap) -> Option<bool> {
    let status = headers.get("grpc-status")?;
    Some(status.as_bytes().trim_ascii() == b"0")
}

/// What a finished (or abandoned) response hands over.
pub(crate) struct Handoff {
    pub(crate) runner: Runner,
    pub(crate) queue: TaskQueue,
    pub(crate) on_disconnect: DisconnectPolicy,
    /// A queue the response carried in its extensions; runs after the
    /// request's.
    pub(crate) response_queue: Option<TaskQueue>,
}

impl Handoff {
    pub(crate) fn run(self) {
        if let Some(response_queue) = &self.response_queue {
            self.queue.append(response_queue);
        }
        self.runner.spawn(self.queue);
    }

    pub(crate) fn skip(self, reason: &str) {
        if let Some(response_queue) = &self.response_queue {
            self.queue.append(response_queue);
        }
        self.runner.skip(self.queue, reason);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Nothing here may panic: this runs while hyper tears a connection
        // down, possibly during unwinding, where a second panic aborts.
        let Some(handoff) = self.handoff.take() else {
            return;
        };
        handoff
            .queue
            .set_outcome(self.verdict.outcome(self.finished));
        if self.finished {
            handoff.run();
            return;
        }
        match handoff.on_disconnect {
            DisconnectPolicy::Run => {
                tracing::debug!(
                    "response body dropped before it was finished; its tasks run anyway (DisconnectPolicy::Run)"
                );
                handoff.run();
            }
            DisconnectPolicy::Skip => handoff.skip(
                "the response body was dropped before it was finished (DisconnectPolicy::Skip)",
            ),
        }
    }
}

impl<B: Body> TaskBody<B> {
    /// `content_length` is the response's `Content-Length`, if it has one;
    /// `no_body` says the request method or status allows no body.
    pub(crate) fn new(
        inner: B,
        handoff: Handoff,
        content_length: Option<u64>,
        no_body: bool,
        verdict: Verdict,
    ) -> TaskBody<B> {
        let remaining = content_length.or_else(|| inner.size_hint().exact());
        let finished = no_body || inner.is_end_stream() || remaining == Some(0);
        TaskBody {
            inner,
            guard: Guard {
                handoff: Some(handoff),
                finished,
                verdict,
            },
            remaining,
        }
    }

    /// A body that hands nothing over: the queue belongs to an outer
    /// `TaskService`.
    pub(crate) fn passthrough(inner: B) -> TaskBody<B> {
        TaskBody {
            inner,
            guard: Guard {
                handoff: None,
                finished: true,
                verdict: Verdict::default(),
            },
            remaining: None,
        }
    }
}

impl<B: Body> Body for TaskBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let frame = ready!(inner.as_mut().poll_frame(cx));
        if let Some(trailers) = frame.as_ref().and_then(|f| f.as_ref().ok()?.trailers_ref()) {
            this.guard.verdict.trailers(trailers);
        }
        if !this.guard.finished {
            this.guard.finished = match &frame {
                None | Some(Err(_)) => true,
                Some(Ok(frame)) => match frame.data_ref() {
                    Some(data) => {
                        let reached_length = match this.remaining {
                            Some(remaining) => {
                                *remaining = remaining.saturating_sub(data.remaining() as u64);
                                *remaining == 0
                            }
                            None => false,
                        };
                        reached_length || inner.is_end_stream()
                    }
                    None => frame.is_trailers(),
                },
            };
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> fmt::Debug for TaskBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskBody")
            .field("hands_off", &self.guard.handoff.is_some())
            .field("finished", &self.guard.finished)
            .finish_non_exhaustive()
    }
}
