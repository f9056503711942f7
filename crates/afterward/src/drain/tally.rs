//! `Tally`: a drain's counts of its own async tasks and skips, published to
//! the runner's counters in batches.
//!
//! They are published whenever the drain is about to wait, and when it
//! closes. The counters then agree with the drain by the time it ends, and a
//! run of quick tasks costs one update of the shared counters, not one per
//! task.

use std::sync::Arc;

use crate::counts::{Counts, TaskOutcome};
use crate::queue::Host;

pub(crate) struct Tally {
    host: Option<Arc<dyn Host>>,
    unpublished: Counts,
    any: bool,
}

impl Tally {
    pub(crate) fn new(host: Option<Arc<dyn Host>>) -> Tally {
        Tally {
            host,
            unpublished: Counts::default(),
            any: false,
        }
    }

    #[inline]
    pub(crate) fn add(&mut self, outcome: TaskOutcome, n: usize) {
        if self.host.is_some() {
            self.unpublished.add(outcome, n);
            self.any = true;
        }
    }

    #[inline]
    pub(crate) fn publish(&mut self) {
        if let (true, Some(host)) = (self.any, &self.host) {
            host.counters().add(&std::mem::take(&mut self.unpublished));
            self.any = false;
            host.made_room();
        }
    }
}
