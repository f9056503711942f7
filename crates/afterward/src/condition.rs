//! Run conditions: whether a task runs, given how its response ended.

/// When a task runs, given how the response it was queued for ended. Set
/// with [`QueuedTask::run_if`](crate::QueuedTask::run_if).
///
/// A task whose condition does not hold is not run: it is counted `skipped`
/// and logged with the reason.
///
/// | condition | [`Outcome::Success`] | [`Outcome::Failure`] | [`Outcome::Unknown`] |
/// |---|---|---|---|
/// | `Always` (the default) | runs | runs | runs |
/// | `Success` | runs | skipped | skipped |
/// | `Failure` | skipped | runs | skipped |
///
/// An unknown outcome satisfies neither `Success` nor `Failure`: a task that
/// should follow only a success (a receipt) must not run on a guess, and
/// neither should one that answers a failure (an alert, a refund).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RunIf {
    /// Whatever the outcome.
    #[default]
    Always,
    /// Only after a successful response.
    Success,
    /// Only after a failed response.
    Failure,
}

/// How the response a queue was filled for ended, as its adapter saw it;
/// recorded through [`adapter`](crate::adapter).
///
/// A response is a success when its status is below 400
/// ([`Outcome::from_status`]). `afterward-hyper` reads gRPC too: a
/// `grpc-status` other than `0` anywhere (the headers, the trailers, a
/// gRPC-Web trailer frame) is a failure, and so is a gRPC body that ends
/// with no status at all. A queue nobody recorded an outcome for (drained
/// directly, or handed to [`Runner::spawn`](crate::Runner::spawn) by hand)
/// counts as a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Outcome {
    /// The response succeeded.
    #[default]
    Success,
    /// The response failed.
    Failure,
    /// Nobody knows: a gRPC response whose body was dropped before its
    /// `grpc-status` arrived.
    Unknown,
}

impl RunIf {
    /// `None` if a task with this condition runs after `outcome`; otherwise
    /// why it does not.
    #[inline]
    pub(crate) fn refuses(self, outcome: Outcome) -> Option<&'static str> {
        match (self, outcome) {
            (RunIf::Always, _)
            | (RunIf::Success, Outcome::Success)
            | (RunIf::Failure, Outcome::Failure) => None,
            (RunIf::Success, Outcome::Failure) => {
                Some("it runs only after a success, and the response failed")
            }
            (RunIf::Failure, Outcome::Success) => {
                Some("it runs only after a failure, and the response succeeded")
            }
            (_, Outcome::Unknown) => {
                Some("its condition needs the response's outcome, which is unknown")
            }
        }
    }
}
