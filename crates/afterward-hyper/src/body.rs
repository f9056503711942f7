//! `TaskBody`: the response body that decides when its response is
//! complete, and hands its queue over when hyper drops it.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use afterward::adapter::ResponseTasks;
use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::outcome::Verdict;

pin_project! {
    /// A response body that hands its request's
    /// [`TaskQueue`](afterward::TaskQueue) to the
    /// [`Runner`](afterward::Runner) once it is finished.
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
    /// was reset) is handled by the [`DisconnectPolicy`](crate::DisconnectPolicy).
    pub struct TaskBody<B> {
        #[pin]
        inner: B,
        // `None` when an outer `TaskService` hands the queue over. Dropping
        // it hands the queue over: the one place the queue leaves, so it
        // happens exactly once however the body ends.
        tasks: Option<ResponseTasks>,
        verdict: Verdict,
        // Bytes still expected, when the length is known up front.
        remaining: Option<u64>,
    }
}

impl<B: Body> TaskBody<B> {
    /// `content_length` is the response's `Content-Length`, if it has one;
    /// `no_body` says the request method or status allows no body.
    pub(crate) fn new(
        inner: B,
        mut tasks: ResponseTasks,
        content_length: Option<u64>,
        no_body: bool,
        verdict: Verdict,
    ) -> TaskBody<B> {
        let remaining = content_length.or_else(|| inner.size_hint().exact());
        if no_body || inner.is_end_stream() || remaining == Some(0) {
            tasks.complete();
        }
        tasks.set_outcome(verdict.outcome(tasks.is_complete()));
        TaskBody {
            inner,
            tasks: Some(tasks),
            verdict,
            remaining,
        }
    }

    /// A body that hands nothing over: the queue belongs to an outer
    /// `TaskService`.
    pub(crate) fn passthrough(inner: B) -> TaskBody<B> {
        TaskBody {
            inner,
            tasks: None,
            verdict: Verdict::default(),
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
        let Some(tasks) = this.tasks else {
            return Poll::Ready(frame);
        };
        let trailers = frame.as_ref().and_then(|f| f.as_ref().ok()?.trailers_ref());
        if let Some(trailers) = trailers {
            this.verdict.trailers(trailers);
        }
        let reads_data = this.verdict.reads_data();
        if reads_data {
            if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
                let mut slices = [std::io::IoSlice::new(&[]); 16];
                let n = data.chunks_vectored(&mut slices);
                for slice in &slices[..n] {
                    this.verdict.data(slice);
                }
            }
        }
        let completes = !tasks.is_complete()
            && match &frame {
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
        if completes {
            tasks.complete();
        }
        if completes || trailers.is_some() || reads_data {
            tasks.set_outcome(this.verdict.outcome(tasks.is_complete()));
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
            .field("hands_off", &self.tasks.is_some())
            .field(
                "finished",
                &self.tasks.as_ref().is_none_or(ResponseTasks::is_complete),
            )
            .finish_non_exhaustive()
    }
}
