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
        // What the response has said of its outcome, given to `tasks` when
        // the body is dropped, just before they are handed over.
        verdict: Verdict,
    }

    impl<B> PinnedDrop for TaskBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(tasks) = this.tasks {
                tasks.set_outcome(this.verdict.outcome(tasks.is_complete()));
            }
        }
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
        if let Some(len) = content_length.or_else(|| inner.size_hint().exact()) {
            tasks.expect_len(len);
        }
        if no_body || inner.is_end_stream() {
            tasks.complete();
        }
        TaskBody {
            inner,
            tasks: Some(tasks),
            verdict,
        }
    }

    /// A body that hands nothing over: the queue belongs to an outer
    /// `TaskService`.
    pub(crate) fn passthrough(inner: B) -> TaskBody<B> {
        TaskBody {
            inner,
            tasks: None,
            verdict: Verdict::default(),
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
        match &frame {
            None | Some(Err(_)) => tasks.complete(),
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.verdict.trailers(trailers);
                    tasks.complete();
                }
                if let Some(data) = frame.data_ref() {
                    if this.verdict.reads_data() {
                        read_data(this.verdict, data);
                    }
                    tasks.sent(data.remaining() as u64);
                    if inner.is_end_stream() {
                        tasks.complete();
                    }
                }
            }
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

/// Shows a data frame to `verdict`, slice by slice. A buffer in more pieces
/// than one look can see cannot be read in order: its outcome is unknown.
fn read_data(verdict: &mut Verdict, data: &impl Buf) {
    let mut slices = [std::io::IoSlice::new(&[]); 16];
    let n = data.chunks_vectored(&mut slices);
    let seen: usize = slices[..n].iter().map(|slice| slice.len()).sum();
    if seen < data.remaining() {
        return verdict.unreadable();
    }
    for slice in &slices[..n] {
        verdict.data(slice);
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

#[cfg(test)]
mod tests {
    use afterward::Outcome;
    use bytes::Buf;

    use super::read_data;
    use crate::outcome::Verdict;

    /// A buffer in two pieces that shows only its first at a time, as
    /// `Buf`'s default `chunks_vectored` does.
    struct TwoPieces(&'static [u8], &'static [u8]);

    impl Buf for TwoPieces {
        fn remaining(&self) -> usize {
            self.0.len() + self.1.len()
        }
        fn chunk(&self) -> &[u8] {
            if self.0.is_empty() { self.1 } else { self.0 }
        }
        fn advance(&mut self, n: usize) {
            let first = n.min(self.0.len());
            self.0 = &self.0[first..];
            self.1 = &self.1[n - first..];
        }
    }

    fn grpc_web() -> Verdict {
        let (parts, ()) = http::Response::builder()
            .header("content-type", "application/grpc-web+proto")
            .body(())
            .unwrap()
            .into_parts();
        Verdict::of(&parts)
    }

    const OK_TRAILER: &[u8] = b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n";

    #[test]
    fn a_body_read_in_one_look_gives_its_status() {
        let mut verdict = grpc_web();
        read_data(&mut verdict, &TwoPieces(OK_TRAILER, b""));
        assert_eq!(verdict.outcome(true), Outcome::Success);
    }

    #[test]
    fn a_body_in_pieces_that_cannot_be_seen_at_once_has_an_unknown_outcome() {
        let mut verdict = grpc_web();
        read_data(&mut verdict, &TwoPieces(&OK_TRAILER[..3], &OK_TRAILER[3..]));
        assert_eq!(verdict.outcome(true), Outcome::Unknown);
    }
}
