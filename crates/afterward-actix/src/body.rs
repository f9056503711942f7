//! `TaskBody`: the response body that decides when its response is
//! complete, and hands its queue over when actix-web drops it.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use actix_web::body::{BodySize, MessageBody};
use actix_web::web::Bytes;
use afterward::adapter::ResponseTasks;
use pin_project_lite::pin_project;

pin_project! {
    /// A response body that hands its request's
    /// [`TaskQueue`](afterward::TaskQueue) to the
    /// [`Runner`](afterward::Runner) once it is finished.
    ///
    /// Made by the [`Tasks`](crate::Tasks) middleware; you meet it only as
    /// the body type of its responses. It forwards every chunk, and `size()`,
    /// unchanged. It keeps `MessageBody`'s default `try_into_bytes`, which
    /// refuses: a middleware further out (`Compress`, `.boxed()`) that
    /// unwraps bodies it can read at once would otherwise take the bytes
    /// out and drop this wrapper before the response was sent.
    ///
    /// The body counts as **finished** when any of these holds, whichever
    /// comes first:
    ///
    /// - its size says it is empty (`BodySize::None` or `Sized(0)`): actix
    ///   drops such a body without polling it;
    /// - the response can have no body: a `HEAD` request, or a `1xx`, `204`
    ///   or `304` status (on HTTP/2 actix drops those bodies unpolled too);
    /// - `poll_next` yielded `None` or an error;
    /// - the chunks reached the exact size the body announced
    ///   (`BodySize::Sized`).
    ///
    /// That is, once its last chunk was handed to actix's dispatcher, which
    /// then writes it out. The queue is handed over when the body is
    /// **dropped**, which actix does right after it is finished. A body
    /// dropped before it finished (the client went away, or an HTTP/2
    /// stream was reset) is handled by the
    /// [`DisconnectPolicy`](crate::DisconnectPolicy). actix notices such a
    /// client only when it next writes to it: while the body is producing
    /// chunks.
    pub struct TaskBody<B> {
        #[pin]
        inner: B,
        // `None` when an outer `Tasks` hands the queue over. Dropping it
        // hands the queue over: the one place the queue leaves, so it
        // happens exactly once however the body ends.
        tasks: Option<ResponseTasks>,
    }
}

impl<B: MessageBody> TaskBody<B> {
    /// `no_body` says the request method or the status allows no body.
    pub(crate) fn new(inner: B, mut tasks: ResponseTasks, no_body: bool) -> TaskBody<B> {
        let size = inner.size();
        if let BodySize::Sized(len) = size {
            tasks.expect_len(len);
        }
        if no_body || size.is_eof() {
            tasks.complete();
        }
        TaskBody {
            inner,
            tasks: Some(tasks),
        }
    }

    /// A body that hands nothing over: the queue belongs to an outer
    /// `Tasks`.
    pub(crate) fn passthrough(inner: B) -> TaskBody<B> {
        TaskBody { inner, tasks: None }
    }
}

impl<B: MessageBody> MessageBody for TaskBody<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.project();
        let chunk = ready!(this.inner.poll_next(cx));
        if let Some(tasks) = this.tasks {
            match &chunk {
                None | Some(Err(_)) => tasks.complete(),
                Some(Ok(bytes)) => tasks.sent(bytes.len() as u64),
            }
        }
        Poll::Ready(chunk)
    }

    // `try_into_bytes` keeps its default on purpose: see the type's docs.
}

impl<B> fmt::Debug for TaskBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("TaskBody");
        match &self.tasks {
            Some(tasks) => debug.field("tasks", tasks),
            None => debug.field("tasks", &"handed over by an outer `Tasks`"),
        };
        debug.finish_non_exhaustive()
    }
}
