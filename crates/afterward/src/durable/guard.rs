//! `Guarded`: a step's future with its panics caught and its destructor
//! guarded, for the workers of durable backends.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::quiet::{drop_quietly, take_message};

/// Wraps `future` so that neither its polls nor its drop can panic out:
/// what a backend's worker runs a [`DurableTask`](super::DurableTask)'s
/// step in.
///
/// A panic in a poll ends it with `Err` carrying the panic's message (the
/// future is dropped then, and a panic of its destructor is added to the
/// message). Dropped before it finished (at a step timeout, or a worker's
/// shutdown), the future is dropped quietly, and a panic of its destructor
/// is logged instead of unwinding. Panic payloads are user values too: they
/// are dropped the same way.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let ran = afterward::durable::guarded(async { panic!("bug") }).await;
/// assert_eq!(ran.unwrap_err(), "bug");
/// # }
/// ```
pub fn guarded<F: Future>(future: F) -> Guarded<F> {
    Guarded {
        future: Some(Box::pin(future)),
    }
}

/// The future [`guarded`] returns.
#[must_use = "futures do nothing unless polled"]
pub struct Guarded<F> {
    future: Option<Pin<Box<F>>>,
}

impl<F: Future> Future for Guarded<F> {
    /// `Err` carries a panic's message.
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let slot = &mut self.future;
        let Some(future) = slot.as_mut() else {
            return Poll::Ready(Err("polled after it finished".to_owned()));
        };
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => {
                if let Some(message) = slot.take().and_then(drop_quietly) {
                    tracing::error!(panic = %message, "a durable step panicked when it was dropped");
                }
                Poll::Ready(Ok(output))
            }
            Err(payload) => {
                let mut message = take_message(payload);
                if let Some(second) = slot.take().and_then(drop_quietly) {
                    message.push_str(&format!(" (then panicked again when dropped: {second})"));
                }
                Poll::Ready(Err(message))
            }
        }
    }
}

impl<F> Drop for Guarded<F> {
    fn drop(&mut self) {
        if let Some(message) = self.future.take().and_then(drop_quietly) {
            tracing::error!(
                panic = %message,
                "a durable step panicked while it was being cancelled"
            );
        }
    }
}

impl<F> std::fmt::Debug for Guarded<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("finished", &self.future.is_none())
            .finish()
    }
}
