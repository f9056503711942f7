//! A queued task: one box holding its header (name, parent span, position,
//! link in its queue) and its body (the work).
//!
//! The header is a sized prefix of the box, so reading or relinking it is a
//! plain field access; only running the body goes through the vtable. Sync
//! and async bodies share one trait, so a task is one pointer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::borrow::Cow;
use std::sync::Arc;

use pin_project_lite::pin_project;
use tracing::Span;

use crate::condition::RunIf;

use crate::quiet::drop_quietly;

/// What a finished task reports: `Err` carries the task's error, already
/// formatted, so that error types need not be `Send`.
pub(crate) type Outcome = Result<(), String>;

/// A queued task.
pub(crate) struct Task(Pin<Box<Job<dyn Body>>>);

pin_project! {
    /// The box of a task: its header, then its body.
    pub(crate) struct Job<B: ?Sized> {
        info: Info,
        #[pin]
        body: B,
    }
}

/// A task's header.
pub(crate) struct Info {
    /// The function's type name, shortened when shown.
    pub(crate) name: &'static str,
    /// The span that was current when the task was added.
    pub(crate) parent: Span,
    /// 1-based position in the queue, in insertion order.
    pub(crate) position: usize,
    /// Runs on the blocking pool rather than on the runtime.
    pub(crate) sync: bool,
    pub(crate) run_if: RunIf,
    /// A name and a key, when given: rare, so kept out of line.
    pub(crate) extra: Option<Box<Extra>>,
    /// The next task in the queue's list (see `queue::list`).
    pub(crate) next: Option<Task>,
}

/// What `QueuedTask` may add to a task.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    pub(crate) name: Option<TaskName>,
    pub(crate) key: Option<Arc<str>>,
}

/// The work of a task, sync or async.
pub(crate) trait Body: Send {
    /// Runs a sync task.
    fn run(self: Pin<&mut Self>) -> Outcome;
    /// Polls an async task.
    fn poll_run(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome>;
    /// Whether this is a durable task, which may leave the process.
    #[cfg(feature = "durable")]
    fn is_durable(&self) -> bool {
        false
    }
    /// A durable task, serialized; `None` for any other task.
    #[cfg(feature = "durable")]
    fn to_step(&self) -> Option<Result<crate::durable::ChainStep, String>> {
        None
    }
}

impl Task {
    /// A sync task calling `f` on the blocking pool.
    pub(crate) fn sync<F>(name: &'static str, parent: Span, f: F) -> Task
    where
        F: FnOnce() -> Outcome + Send + 'static,
    {
        Task::new(name, parent, true, SyncBody { f: Some(f) })
    }

    /// An async task awaiting `future` on the runtime.
    pub(crate) fn future<Fut>(name: &'static str, parent: Span, future: Fut) -> Task
    where
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        Task::new(name, parent, false, AsyncBody { future })
    }

    pub(crate) fn new(
        name: &'static str,
        parent: Span,
        sync: bool,
        body: impl Body + 'static,
    ) -> Task {
        let info = Info {
            name,
            parent,
            position: 0,
            sync,
            run_if: RunIf::Always,
            extra: None,
            next: None,
        };
        Task(Box::pin(Job { info, body }))
    }

    pub(crate) fn info(&self) -> &Info {
        &self.0.info
    }

    pub(crate) fn info_mut(&mut self) -> &mut Info {
        self.0.as_mut().project().info
    }

    pub(crate) fn is_sync(&self) -> bool {
        self.info().sync
    }

    pub(crate) fn name(&self) -> TaskName {
        let info = self.info();
        match info.extra.as_ref().and_then(|extra| extra.name.as_ref()) {
            Some(given) => given.clone(),
            None => TaskName::Fn(info.name),
        }
    }

    pub(crate) fn key(&self) -> Option<&str> {
        self.info().extra.as_ref()?.key.as_deref()
    }

    pub(crate) fn extra_mut(&mut self) -> &mut Extra {
        self.info_mut().extra.get_or_insert_with(Box::default)
    }

    /// The span that was current when the task was added.
    pub(crate) fn parent(&self) -> &Span {
        &self.info().parent
    }

    /// 1-based position in the queue, in insertion order.
    pub(crate) fn position(&self) -> usize {
        self.info().position
    }

    /// Runs a sync task's work; its captures are dropped with the task.
    pub(crate) fn run(&mut self) -> Outcome {
        self.0.as_mut().project().body.run()
    }

    /// Polls an async task's work.
    pub(crate) fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        self.0.as_mut().project().body.poll_run(cx)
    }

    #[cfg(feature = "durable")]
    pub(crate) fn is_durable(&self) -> bool {
        self.0.body.is_durable()
    }

    #[cfg(feature = "durable")]
    pub(crate) fn to_step(&self) -> Option<Result<crate::durable::ChainStep, String>> {
        self.0.body.to_step()
    }

    /// Drops a task that will not run, logging a destructor that panics
    /// instead of letting the panic out.
    pub(crate) fn discard(self) {
        let (name, position) = (self.name(), self.position());
        if let Some(message) = drop_quietly(self) {
            tracing::error!(
                task = name.short(),
                position,
                panic = %message,
                "a background task that did not run panicked when it was dropped"
            );
        }
    }
}

pin_project! {
    struct SyncBody<F> {
        f: Option<F>,
    }
}

impl<F: FnOnce() -> Outcome + Send> Body for SyncBody<F> {
    fn run(self: Pin<&mut Self>) -> Outcome {
        match self.project().f.take() {
            Some(f) => f(),
            None => Err("the task was already run".to_owned()),
        }
    }

    fn poll_run(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Outcome> {
        // Sync tasks go to the blocking pool, never to a poll.
        Poll::Ready(Err("a sync task was polled as an async one".to_owned()))
    }
}

pin_project! {
    struct AsyncBody<Fut> {
        #[pin]
        future: Fut,
    }
}

impl<Fut: Future<Output = Outcome> + Send> Body for AsyncBody<Fut> {
    fn run(self: Pin<&mut Self>) -> Outcome {
        // Async tasks are polled, never run on the blocking pool.
        Err("an async task was run as a sync one".to_owned())
    }

    fn poll_run(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        self.project().future.poll(cx)
    }
}

// ===== task names =====

/// A task's name in logs and reports: the one given with
/// `QueuedTask::name`, or its function's `type_name`, shortened only when
/// shown.
///
/// `my_app::mail::send_welcome` shows as `send_welcome`, and a closure
/// `my_app::routes::register::{{closure}}` as `register::{{closure}}`, so the
/// name still says where the closure was written. Naming a task by its
/// function costs nothing; the short form is a slice of the `'static` type
/// name, taken when a log line or report needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaskName {
    /// A function's type name.
    Fn(&'static str),
    /// Given as a `&'static str`: no allocation.
    Static(&'static str),
    /// Given as a `String`, shared by every copy.
    Shared(Arc<str>),
}

impl TaskName {
    pub(crate) fn given(name: Cow<'static, str>) -> TaskName {
        match name {
            Cow::Borrowed(name) => TaskName::Static(name),
            Cow::Owned(name) => TaskName::Shared(Arc::from(name)),
        }
    }

    pub(crate) fn short(&self) -> &str {
        match self {
            TaskName::Fn(full) => short_name(full),
            TaskName::Static(name) => name,
            TaskName::Shared(name) => name,
        }
    }

    /// The name for a report.
    pub(crate) fn into_cow(self) -> Cow<'static, str> {
        match self {
            TaskName::Fn(full) => Cow::Borrowed(short_name(full)),
            TaskName::Static(name) => Cow::Borrowed(name),
            TaskName::Shared(name) => Cow::Owned(name.to_string()),
        }
    }
}

fn short_name(full: &'static str) -> &'static str {
    let bytes = full.as_bytes();
    // Only the path before any generic arguments is shortened.
    let path_end = bytes.iter().position(|&b| b == b'<').unwrap_or(bytes.len());
    let is_name = |at: usize| at < path_end && bytes[at] != b'{';
    let (mut start, mut segment, mut i) = (0, 0, 0);
    while i + 1 < path_end {
        if bytes[i] == b':' && bytes[i + 1] == b':' {
            if is_name(segment) {
                start = segment;
            }
            segment = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    if is_name(segment) {
        start = segment;
    }
    &full[start..]
}

#[cfg(test)]
mod tests {
    use super::short_name;

    #[test]
    fn short_names() {
        assert_eq!(short_name("send_welcome"), "send_welcome");
        assert_eq!(short_name("my_app::mail::send_welcome"), "send_welcome");
        assert_eq!(
            short_name("my_app::routes::register::{{closure}}"),
            "register::{{closure}}"
        );
        assert_eq!(
            short_name("app::main::{{closure}}::{{closure}}"),
            "main::{{closure}}::{{closure}}"
        );
        assert_eq!(
            short_name("app::log<alloc::string::String>"),
            "log<alloc::string::String>"
        );
        assert_eq!(short_name("{{closure}}"), "{{closure}}");
    }
}
