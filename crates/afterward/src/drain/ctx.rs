//! `Ctx`: the settings a drain runs with, and the runner it reports to.

use std::sync::Arc;
use std::time::Duration;

use super::lanes::Lanes;
use crate::queue::{Fate, Host, State};
use crate::report::FailurePolicy;

/// The settings a drain runs with, and the runner it reports to, if any.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) policy: FailurePolicy,
    pub(crate) timeout: Option<Duration>,
    /// The runner that counts this drain's tasks: set for a runner's drain,
    /// which owns its queue (when it ends, the queue is no longer scheduled,
    /// and when it is cancelled, every task still queued is abandoned).
    pub(crate) host: Option<Arc<dyn Host>>,
    /// Where a runner's sync batches run; a direct drain uses
    /// `spawn_blocking`.
    pub(crate) lanes: Option<Arc<Lanes>>,
    /// Where a runner's durable tasks go; without one they run here.
    #[cfg(feature = "durable")]
    pub(crate) durable: Option<Arc<dyn crate::durable::DurableBackend>>,
    /// Whether durable tasks whose hand-off failed run here instead.
    #[cfg(feature = "durable")]
    pub(crate) durable_fallback: bool,
}

impl Ctx {
    /// The default policy of [`TaskQueue::drain`](crate::TaskQueue::drain).
    pub(crate) fn direct() -> Ctx {
        Ctx {
            policy: FailurePolicy::Continue,
            timeout: None,
            host: None,
            lanes: None,
            #[cfg(feature = "durable")]
            durable: None,
            #[cfg(feature = "durable")]
            durable_fallback: false,
        }
    }

    pub(super) fn for_runner(&self) -> bool {
        self.host.is_some()
    }

    /// Whether the rest of the queue is skipped, given that a task of this
    /// drain failed or not.
    pub(super) fn stops(&self, failed: bool) -> bool {
        failed && self.policy == FailurePolicy::StopQueue
    }

    /// Whether this drain has lost its queue: a direct drain of a queue that
    /// was handed to a runner meanwhile stops, and the runner, which counted
    /// the tasks left, runs them once this drain lets go.
    pub(super) fn lost(&self, state: &State) -> bool {
        !self.for_runner() && state.owner.fate != Fate::Open
    }
}
