//! What queues see of the runner: its `Host` impl.

use std::sync::{Arc, Weak};

use super::shared::Shared;
use super::state::Phase;
use crate::queue::{Host, Inner};
use crate::stats::Counters;
use crate::task::TaskName;

impl Host for Shared {
    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn register(&self, queue: Weak<Inner>) -> Option<usize> {
        let mut run = self.lock();
        match run.phase {
            Phase::Open | Phase::Draining if !run.runtime_gone => Some(run.open.insert(queue)),
            _ => None,
        }
    }

    fn has_room(&self, n: usize) -> bool {
        self.has_room_for(n)
    }

    fn made_room(&self) {
        Shared::made_room(self);
    }

    fn unregister(&self, key: usize) {
        let mut run = self.lock();
        run.open.try_remove(key);
        if run.phase == Phase::Draining && run.open.is_empty() {
            self.wake_if_watched(run);
        }
    }

    fn schedule(self: Arc<Self>, inner: Arc<Inner>) {
        self.admit_late(inner);
    }

    fn abandoned(&self, names: &[TaskName]) {
        self.count_abandoned(&mut self.lock(), names);
        Shared::made_room(self);
    }
}
