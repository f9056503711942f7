//! Argument capture: turning `add_task(func, (a, b))` into a queued task.
//!
//! The choice between a sync and an async task is made by the type the
//! function returns, at compile time: `()` and `Result<T, E>` make a sync
//! task, a future whose output is one of those makes an async task. Two
//! marker types keep the two blanket impls of [`TaskOutput`] apart, and the
//! compiler infers the marker from whichever impl applies.

use std::any::type_name;
use std::fmt;
use std::future::Future;

use tracing::Span;

use super::{Returned, Task};

/// Types a [`TaskOutput`] impl needs but users never name.
///
/// The module is private, so these `pub` items cannot be reached from outside
/// the crate; they are `pub` only because they appear in the (hidden) method
/// of a public trait.
#[allow(unreachable_pub, missing_debug_implementations)]
mod private {
    /// The queued form of a task; built by [`TaskOutput::into_task`].
    ///
    /// [`TaskOutput::into_task`]: super::TaskOutput::into_task
    pub struct Captured(pub(crate) crate::task::Task);

    /// What a task is reported with; given to [`TaskOutput::into_task`].
    ///
    /// [`TaskOutput::into_task`]: super::TaskOutput::into_task
    pub struct Capture {
        pub(crate) name: &'static str,
        pub(crate) parent: tracing::Span,
    }

    /// Marker for functions that return `()` or `Result<T, E>`.
    pub enum Blocking {}

    /// Marker for functions that return a future.
    pub enum Awaited {}
}

use private::{Awaited, Blocking, Capture, Captured};

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
    fn into_returned(self) -> Returned;
}

impl TaskResult for () {
    #[inline]
    fn into_returned(self) -> Returned {
        Ok(())
    }
}

impl<T, E: fmt::Display> TaskResult for Result<T, E> {
    #[inline]
    fn into_returned(self) -> Returned {
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
    fn into_task<F>(f: F, info: Capture) -> Captured
    where
        F: FnOnce() -> Self + Send + 'static;
}

impl<R: TaskResult> TaskOutput<Blocking> for R {
    #[inline]
    fn into_task<F>(f: F, info: Capture) -> Captured
    where
        F: FnOnce() -> Self + Send + 'static,
    {
        Captured(Task::sync(info.name, info.parent, move || {
            f().into_returned()
        }))
    }
}

impl<Fut> TaskOutput<Awaited> for Fut
where
    Fut: Future + Send + 'static,
    Fut::Output: TaskResult,
{
    #[inline]
    fn into_task<F>(f: F, info: Capture) -> Captured
    where
        F: FnOnce() -> Self + Send + 'static,
    {
        // The function is called on the first poll, not here: a closure that
        // returns a future may do work before it does, and that work belongs
        // to the task, not to the handler that queued it.
        Captured(Task::future(info.name, info.parent, async move {
            f().await.into_returned()
        }))
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
    fn into_task(self, args: Args, info: Capture) -> Captured;
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
            fn into_task(self, ($($arg,)*): ($($ty,)*), info: Capture) -> Captured {
                Ret::into_task(move || self($($arg),*), info)
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
    let capture = Capture {
        name: type_name::<F>(),
        parent,
    };
    func.into_task(args, capture).0
}
