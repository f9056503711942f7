//! A queued task: one box holding its header (name, parent span, position,
//! options) and its body (the work).
//!
//! The header is a sized prefix of the box, so reading it is a plain field
//! access; only running the body goes through the vtable. Sync and async
//! bodies share one trait, so a task is one pointer.

mod capture;
mod name;
mod settle;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tracing::Span;

pub(crate) use self::capture::task_of;
pub use self::capture::{TaskFn, TaskOutput, TaskResult};
pub(crate) use self::name::TaskName;
pub(crate) use self::settle::{Rejection, Why, log_unrun, settle};
use crate::condition::RunIf;
pub(crate) use crate::id::TaskId;
use crate::quiet::drop_quietly;

/// What log lines name a task by, once the task itself may be gone.
#[derive(Debug, Clone)]
pub(crate) struct TaskTag {
    pub(crate) name: TaskName,
    pub(crate) position: usize,
    pub(crate) id: TaskId,
}

impl TaskTag {
    /// Logs a panic of the task: `what` happened, with the panic's message.
    pub(crate) fn log_panic(&self, message: &str, what: &str) {
        tracing::error!(
            task = self.name.short(),
            position = self.position,
            id = %self.id,
            panic = %message,
            "{what}"
        );
    }
}

/// What a finished task returned: `Err` carries the task's error, already
/// formatted, so that error types need not be `Send`.
pub(crate) type Returned = Result<(), String>;

/// A queued task.
pub(crate) struct Task(Pin<Box<TaskBox<dyn Body>>>);

pin_project! {
    /// The box of a task: its header, then its body.
    pub(crate) struct TaskBox<B: ?Sized> {
        header: Header,
        #[pin]
        body: B,
    }
}

/// A task's header.
pub(crate) struct Header {
    id: TaskId,
    /// The function's type name, shortened when shown.
    name: &'static str,
    /// The span that was current when the task was added.
    parent: Span,
    /// 1-based position in the queue, in insertion order; set by the queue.
    pub(crate) position: usize,
    /// Runs on the blocking pool rather than on the runtime.
    sync: bool,
    pub(crate) run_if: RunIf,
    /// A name and a key, when given: rare, so kept out of line.
    extra: Option<Box<Extra>>,
}

/// What `QueuedTask` may add to a task.
#[derive(Debug, Default)]
struct Extra {
    name: Option<TaskName>,
    key: Option<Arc<str>>,
}

/// The work of a task, sync or async.
pub(crate) trait Body: Send {
    /// Runs a sync task.
    fn run(self: Pin<&mut Self>) -> Returned;
    /// Polls an async task.
    fn poll_run(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Returned>;
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

/// The span a task added now follows from: the current one.
///
/// Without any subscriber there is no span to follow, and asking for the
/// current one would cost more than the rest of `add_task`.
#[inline]
pub(crate) fn current_parent() -> Span {
    if tracing::dispatcher::has_been_set() {
        Span::current()
    } else {
        Span::none()
    }
}

impl Task {
    /// A sync task calling `f` on the blocking pool.
    pub(crate) fn sync<F>(name: &'static str, parent: Span, f: F) -> Task
    where
        F: FnOnce() -> Returned + Send + 'static,
    {
        Task::new(name, parent, true, SyncBody { f: Some(f) })
    }

    /// An async task awaiting `future` on the runtime.
    pub(crate) fn future<Fut>(name: &'static str, parent: Span, future: Fut) -> Task
    where
        Fut: Future<Output = Returned> + Send + 'static,
    {
        Task::new(name, parent, false, AsyncBody { future })
    }

    #[inline]
    pub(crate) fn new(
        name: &'static str,
        parent: Span,
        sync: bool,
        body: impl Body + 'static,
    ) -> Task {
        Task::with_id(TaskId::new(), name, parent, sync, body)
    }

    /// A task whose id was made first, for a body that needs to know it.
    #[inline]
    pub(crate) fn with_id(
        id: TaskId,
        name: &'static str,
        parent: Span,
        sync: bool,
        body: impl Body + 'static,
    ) -> Task {
        let header = Header {
            id,
            name,
            parent,
            position: 0,
            sync,
            run_if: RunIf::Always,
            extra: None,
        };
        Task(Box::pin(TaskBox { header, body }))
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        &self.0.header
    }

    #[inline]
    pub(crate) fn header_mut(&mut self) -> &mut Header {
        self.0.as_mut().project().header
    }

    #[inline]
    pub(crate) fn id(&self) -> TaskId {
        self.header().id
    }

    /// What log lines name the task by.
    #[inline]
    pub(crate) fn tag(&self) -> TaskTag {
        TaskTag {
            name: self.name(),
            position: self.position(),
            id: self.id(),
        }
    }

    #[inline]
    pub(crate) fn is_sync(&self) -> bool {
        self.header().sync
    }

    #[inline]
    pub(crate) fn name(&self) -> TaskName {
        let header = self.header();
        match header.extra.as_ref().and_then(|extra| extra.name.as_ref()) {
            Some(given) => given.clone(),
            None => TaskName::Fn(header.name),
        }
    }

    pub(crate) fn set_name(&mut self, name: TaskName) {
        self.extra_mut().name = Some(name);
    }

    #[inline]
    pub(crate) fn key(&self) -> Option<&Arc<str>> {
        self.header().extra.as_ref()?.key.as_ref()
    }

    pub(crate) fn set_key(&mut self, key: Arc<str>) {
        self.extra_mut().key = Some(key);
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.header_mut().extra.get_or_insert_with(Box::default)
    }

    /// The span that was current when the task was added.
    pub(crate) fn parent(&self) -> &Span {
        &self.header().parent
    }

    /// 1-based position in the queue, in insertion order.
    #[inline]
    pub(crate) fn position(&self) -> usize {
        self.header().position
    }

    /// `None` if the task runs after a response with `outcome`; otherwise
    /// why it does not.
    #[inline]
    pub(crate) fn refuses(&self, outcome: crate::condition::Outcome) -> Option<&'static str> {
        self.header().run_if.refuses(outcome)
    }

    /// Runs a sync task's work; its captures are dropped with the task.
    pub(crate) fn run(&mut self) -> Returned {
        self.0.as_mut().project().body.run()
    }

    /// Polls an async task's work.
    #[inline]
    pub(crate) fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Returned> {
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
    /// instead of letting the panic out. Every task that does not run leaves
    /// through here (see [`settle`]).
    pub(crate) fn discard(self) {
        let tag = self.tag();
        if let Some(message) = drop_quietly(self) {
            tag.log_panic(
                &message,
                "a background task that did not run panicked when it was dropped",
            );
        }
    }
}

pin_project! {
    struct SyncBody<F> {
        f: Option<F>,
    }
}

impl<F: FnOnce() -> Returned + Send> Body for SyncBody<F> {
    fn run(self: Pin<&mut Self>) -> Returned {
        match self.project().f.take() {
            Some(f) => f(),
            None => Err("the task was already run".to_owned()),
        }
    }

    fn poll_run(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Returned> {
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

impl<Fut: Future<Output = Returned> + Send> Body for AsyncBody<Fut> {
    fn run(self: Pin<&mut Self>) -> Returned {
        // Async tasks are polled, never run on the blocking pool.
        Err("an async task was run as a sync one".to_owned())
    }

    fn poll_run(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Returned> {
        self.project().future.poll(cx)
    }
}
