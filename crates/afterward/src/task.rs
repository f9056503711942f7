//! Argument capture: turning `add_task(func, (a, b))` into a queued job.
//!
//! The choice between a sync and an async task is made by the type the
//! function returns, at compile time: `()` and `Result<T, E>` make a sync
//! task, a future whose output is one of those makes an async task. Two
//! marker types keep the two blanket impls of [`TaskOutput`] apart, and the
//! compiler infers the marker from whichever impl applies.

use std::any::type_name;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tracing::Span;

use crate::quiet::drop_quietly;

/// What a finished task reports: `Err` carries the task's error, already
/// formatted, so that error types need not be `Send`.
pub(crate) type Outcome = Result<(), String>;

/// A queued task: one box, which also holds what the task is reported
/// with and its link in its queue, so that a queue is only a list of them.
pub(crate) enum Task {
    /// Runs on tokio's blocking pool.
    Sync(Box<dyn SyncJob>),
    /// Awaited on the runtime.
    Async(Pin<Box<dyn AsyncJob>>),
}

/// What a task is reported with, and its place in its queue, kept in its
/// job's box.
pub(crate) struct Info {
    /// The function's type name, shortened when shown.
    pub(crate) name: &'static str,
    /// The span that was current when the task was added.
    pub(crate) parent: Span,
    /// 1-based position in the queue, in insertion order.
    pub(crate) position: usize,
    /// The next task in the queue's list (see `queue::list`).
    pub(crate) next: Option<Task>,
}

pub(crate) trait SyncJob: Send {
    fn info(&self) -> &Info;
    fn info_mut(&mut self) -> &mut Info;
    fn run(self: Box<Self>) -> Outcome;
}

pub(crate) trait AsyncJob: Future<Output = Outcome> + Send {
    fn info(&self) -> &Info;
    fn info_mut(self: Pin<&mut Self>) -> &mut Info;
}

impl Task {
    pub(crate) fn is_sync(&self) -> bool {
        matches!(self, Task::Sync(_))
    }

    pub(crate) fn info(&self) -> &Info {
        match self {
            Task::Sync(job) => job.info(),
            Task::Async(job) => job.as_ref().get_ref().info(),
        }
    }

    pub(crate) fn info_mut(&mut self) -> &mut Info {
        match self {
            Task::Sync(job) => job.info_mut(),
            Task::Async(job) => job.as_mut().info_mut(),
        }
    }

    pub(crate) fn name(&self) -> TaskName {
        TaskName(self.info().name)
    }

    /// The span that was current when the task was added.
    pub(crate) fn parent(&self) -> &Span {
        &self.info().parent
    }

    /// 1-based position in the queue, in insertion order.
    pub(crate) fn position(&self) -> usize {
        self.info().position
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

struct SyncTask<F> {
    info: Info,
    f: F,
}

impl<F: FnOnce() -> Outcome + Send> SyncJob for SyncTask<F> {
    fn info(&self) -> &Info {
        &self.info
    }

    fn info_mut(&mut self) -> &mut Info {
        &mut self.info
    }

    fn run(self: Box<Self>) -> Outcome {
        (self.f)()
    }
}

pin_project! {
    struct AsyncTask<Fut> {
        info: Info,
        #[pin]
        future: Fut,
    }
}

impl<Fut: Future<Output = Outcome> + Send> Future for AsyncTask<Fut> {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        self.project().future.poll(cx)
    }
}

impl<Fut: Future<Output = Outcome> + Send> AsyncJob for AsyncTask<Fut> {
    fn info(&self) -> &Info {
        &self.info
    }

    fn info_mut(self: Pin<&mut Self>) -> &mut Info {
        self.project().info
    }
}

/// Types a [`TaskOutput`] impl needs but users never name.
///
/// The module is private, so these `pub` items cannot be reached from outside
/// the crate; they are `pub` only because they appear in the (hidden) method
/// of a public trait.
#[allow(unreachable_pub, missing_debug_implementations)]
mod private {
    /// The queued form of a task; built by [`TaskOutput::into_job`].
    ///
    /// [`TaskOutput::into_job`]: super::TaskOutput::into_job
    pub struct JobSlot(pub(crate) super::Task);

    /// What a task is reported with; given to [`TaskOutput::into_job`].
    ///
    /// [`TaskOutput::into_job`]: super::TaskOutput::into_job
    pub struct JobInfo(pub(crate) super::Info);

    /// Marker for functions that return `()` or `Result<T, E>`.
    pub enum Blocking {}

    /// Marker for functions that return a future.
    pub enum Awaited {}
}

use private::{Awaited, Blocking, JobInfo, JobSlot};

// ===== TaskResult: () or Result<T, E> =====

/// A value a task may finish with: `()` or `Result<T, E>`.
///
/// `Ok` values are dropped; an `Err` is formatted with `{:#}` (which shows
/// the whole cause chain of an `anyhow::Error`) and reported with the task's
/// name. Implemented for `()` and for `Result<T, E>` where `E: Display`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a result a background task can finish with",
    label = "a task must finish with `()` or `Result<T, E>` where `E: Display`",
    note = "the error of a failed task is written to the logs with `{{:#}}`, so `E` must implement `std::fmt::Display`"
)]
pub trait TaskResult: sealed::Sealed {
    #[doc(hidden)]
    fn into_outcome(self) -> Outcome;
}

impl TaskResult for () {
    #[inline]
    fn into_outcome(self) -> Outcome {
        Ok(())
    }
}

impl<T, E: fmt::Display> TaskResult for Result<T, E> {
    #[inline]
    fn into_outcome(self) -> Outcome {
        self.map(drop).map_err(|e| format!("{e:#}"))
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for () {}
    impl<T, E> Sealed for Result<T, E> {}
}

// ===== TaskOutput: what a task function may return =====

/// What a task function may return; this decides, at compile time, how the
/// task runs.
///
/// | the function returns | the task is | it runs |
/// |---|---|---|
/// | `()` or `Result<T, E>` | sync | on tokio's blocking pool |
/// | a future whose output is `()` or `Result<T, E>` | async | awaited on the runtime |
///
/// You never implement or name this trait; it is public so that the bound on
/// [`TaskQueue::add_task`](crate::TaskQueue::add_task) can be read, and so the
/// compiler can explain a return type that does not fit:
///
/// ```compile_fail,E0277
/// let queue = afterward::TaskQueue::new();
/// fn count() -> usize { 42 }
/// queue.add_task(count, ()); // error: `usize` cannot be returned by a background task
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned by a background task",
    label = "the task function returns `{Self}`",
    note = "a task function must return `()`, `Result<T, E>` with `E: Display`, or a `Send + 'static` future whose output is one of those"
)]
pub trait TaskOutput<Marker>: Sized {
    #[doc(hidden)]
    fn into_job<F>(f: F, info: JobInfo) -> JobSlot
    where
        F: FnOnce() -> Self + Send + 'static;
}

impl<R: TaskResult> TaskOutput<Blocking> for R {
    #[inline]
    fn into_job<F>(f: F, info: JobInfo) -> JobSlot
    where
        F: FnOnce() -> Self + Send + 'static,
    {
        JobSlot(Task::Sync(Box::new(SyncTask {
            info: info.0,
            f: move || f().into_outcome(),
        })))
    }
}

impl<Fut> TaskOutput<Awaited> for Fut
where
    Fut: Future + Send + 'static,
    Fut::Output: TaskResult,
{
    #[inline]
    fn into_job<F>(f: F, info: JobInfo) -> JobSlot
    where
        F: FnOnce() -> Self + Send + 'static,
    {
        // The function is called on the first poll, not here: a closure that
        // returns a future may do work before it does, and that work belongs
        // to the task, not to the handler that queued it.
        JobSlot(Task::Async(Box::pin(AsyncTask {
            info: info.0,
            future: async move { f().await.into_outcome() },
        })))
    }
}

// ===== TaskFn: a function and its argument tuple =====

/// A function that can be queued with an argument tuple `Args`.
///
/// Implemented for every `FnOnce(A1, …, An) -> R + Send + 'static` with
/// `Args = (A1, …, An)`, for 0 to 12 arguments, where `R` is a
/// [`TaskOutput`]. Pass `()` for no arguments and `(x,)` for one.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be queued with the arguments `{Args}`",
    label = "this function does not take the arguments `{Args}`",
    note = "pass the arguments as a tuple that matches the function: `()` for none, `(x,)` for one, `(x, y)` for two",
    note = "the function and its arguments must be `Send + 'static`, since the task runs after the handler has returned"
)]
pub trait TaskFn<Args, Marker>: Send + 'static {
    #[doc(hidden)]
    fn into_job(self, args: Args, info: JobInfo) -> JobSlot;
}

macro_rules! impl_task_fn {
    ($($arg:ident $ty:ident),*) => {
        impl<Func, Ret, Marker, $($ty,)*> TaskFn<($($ty,)*), Marker> for Func
        where
            Func: FnOnce($($ty),*) -> Ret + Send + 'static,
            Ret: TaskOutput<Marker>,
            $($ty: Send + 'static,)*
        {
            #[inline]
            fn into_job(self, ($($arg,)*): ($($ty,)*), info: JobInfo) -> JobSlot {
                Ret::into_job(move || self($($arg),*), info)
            }
        }
    };
}

impl_task_fn!();
impl_task_fn!(a1 A1);
impl_task_fn!(a1 A1, a2 A2);
impl_task_fn!(a1 A1, a2 A2, a3 A3);
impl_task_fn!(a1 A1, a2 A2, a3 A3, a4 A4);
impl_task_fn!(a1 A1, a2 A2, a3 A3, a4 A4, a5 A5);
impl_task_fn!(a1 A1, a2 A2, a3 A3, a4 A4, a5 A5, a6 A6);
impl_task_fn!(a1 A1, a2 A2, a3 A3, a4 A4, a5 A5, a6 A6, a7 A7);
impl_task_fn!(a1 A1, a2 A2, a3 A3, a4 A4, a5 A5, a6 A6, a7 A7, a8 A8);
impl_task_fn!(a1 A1, a2 A2, a3 A3, a4 A4, a5 A5, a6 A6, a7 A7, a8 A8, a9 A9);
impl_task_fn!(a1 A1, a2 A2, a3 A3, a4 A4, a5 A5, a6 A6, a7 A7, a8 A8, a9 A9, a10 A10);
impl_task_fn!(a1 A1, a2 A2, a3 A3, a4 A4, a5 A5, a6 A6, a7 A7, a8 A8, a9 A9, a10 A10, a11 A11);
impl_task_fn!(a1 A1, a2 A2, a3 A3, a4 A4, a5 A5, a6 A6, a7 A7, a8 A8, a9 A9, a10 A10, a11 A11, a12 A12);

/// The task of `func` called with `args`. It is named after `F`, and its
/// span's parent is `parent`.
pub(crate) fn task_of<F, Args, M>(func: F, args: Args, parent: Span) -> Task
where
    F: TaskFn<Args, M>,
{
    let info = Info {
        name: type_name::<F>(),
        parent,
        position: 0,
        next: None,
    };
    func.into_job(args, JobInfo(info)).0
}

// ===== task names =====

/// The name of a task function: its `type_name`, shortened only when shown.
///
/// `my_app::mail::send_welcome` shows as `send_welcome`, and a closure
/// `my_app::routes::register::{{closure}}` as `register::{{closure}}`, so the
/// name still says where the closure was written. Naming a task at
/// `add_task` costs nothing; the short form is a slice of the `'static` type
/// name, taken when a log line or report needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskName(&'static str);

impl TaskName {
    pub(crate) fn short(self) -> &'static str {
        short_name(self.0)
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
