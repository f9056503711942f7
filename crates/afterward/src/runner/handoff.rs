//! The hand-off: how a queue is taken on, handed to a worker, made to
//! wait, or settled without running (abandoned during a shutdown, refused
//! after one or past the backlog).

use std::sync::Arc;

use super::DrainHandle;
use super::handle::ReportTo;
use super::shared::{Phase, Shared};
use super::worker::{self, Waiting};
use crate::job::Task;
use crate::queue::{Fate, Host, Inner, State};
use crate::report::{DrainReport, Kind};

/// What the hand-off decided for a queue.
enum Admission {
    /// A worker is to be spawned for it.
    Start(ReportTo),
    /// It was handed to a parked worker, to be woken.
    Wake,
    /// It waits for a worker (or, on a recording runner, for the test).
    Waiting,
    /// Its tasks were taken out, to be abandoned or refused.
    Settled(Settled, Vec<Task>, ReportTo),
}

/// Why a queue's tasks were settled without running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settled {
    /// By the shutdown under way.
    Abandoned,
    ShutDown,
    RuntimeGone,
    BacklogFull,
}

impl Settled {
    pub(super) fn kind(self) -> Kind {
        match self {
            Settled::Abandoned => Kind::Abandoned,
            Settled::ShutDown | Settled::RuntimeGone | Settled::BacklogFull => Kind::Rejected,
        }
    }

    fn why(self) -> &'static str {
        match self {
            Settled::Abandoned => "background task abandoned",
            Settled::ShutDown => "background task rejected: the runner has shut down",
            Settled::RuntimeGone => "background task rejected: the runner's runtime is gone",
            Settled::BacklogFull => {
                "background task rejected: the runner's backlog is full (max_backlog)"
            }
        }
    }
}

impl Shared {
    /// Hands `inner` over to run. Returns the drain's handle: pending if the
    /// queue was taken on, ready if it was settled at once.
    pub(super) fn spawn(self: &Arc<Self>, inner: Arc<Inner>) -> DrainHandle {
        let mut state = inner.lock();
        if matches!(state.fate, Fate::Skip | Fate::Run { scheduled: true }) {
            // Its fate is decided: a drain of the runner already has it (and
            // will take any task in it), or it was skipped.
            return DrainHandle::ready(DrainReport::default());
        }
        if state.fate == (Fate::Run { scheduled: false }) && state.tasks.is_empty() {
            // Handed off before, and empty: nothing to run, and the runner
            // it was handed to keeps it, for tasks added later.
            return DrainHandle::ready(DrainReport::default());
        }
        // `known`: made for this runner, or handed to it before.
        let (known, key) = match &state.owner {
            Some(owner) if self.is(owner) => (true, state.take_key()),
            _ => {
                let host: Arc<dyn Host> = self.clone();
                if let (Some(previous), Some(key)) = (state.owner.replace(host), state.take_key()) {
                    previous.unregister(key);
                }
                (false, None)
            }
        };
        let n = state.tasks.len();
        state.fate = Fate::Run { scheduled: n > 0 };
        if n == 0 {
            drop(state);
            if let Some(key) = key {
                self.unregister(key);
            }
            return DrainHandle::ready(DrainReport::default());
        }
        self.counters.received(n);
        state.drains += 1;
        let drain = state.drains;
        let (mut handle, report) = DrainHandle::for_drain(&inner, &mut state.awaited, drain);
        let admission = self.admit(&inner, &mut state, key, known, report);
        if let Admission::Settled(kind, tasks, _) = &admission {
            // Settled at once: the handle has its report now, and needs no
            // slot.
            state.awaited = None;
            handle.settle(DrainReport::of(kind.kind(), tasks.len()));
        }
        drop(state);
        self.act(inner, admission);
        handle
    }

    /// Hands over again a queue that got a task after its hand-off, while
    /// no drain had it.
    pub(super) fn hand_off_late(self: Arc<Self>, inner: Arc<Inner>) {
        let mut state = inner.lock();
        if state.tasks.is_empty() {
            // Its tasks went meanwhile: forgotten, or run by a direct
            // `drain()` that had the queue when it was handed off.
            state.fate = Fate::Run { scheduled: false };
            return;
        }
        let admission = self.admit(&inner, &mut state, None, true, ReportTo::Nobody);
        drop(state);
        self.act(inner, admission);
    }

    /// Decides, under both locks, what becomes of a queue whose fate was
    /// just set to `Run { scheduled: true }` with its tasks counted
    /// received. The queue's lock is taken first, then the runner's: never
    /// the other way round.
    fn admit(
        &self,
        inner: &Arc<Inner>,
        state: &mut State,
        key: Option<usize>,
        known: bool,
        report: ReportTo,
    ) -> Admission {
        let mut run = self.lock();
        if let Some(key) = key {
            run.open.try_remove(key);
        }
        let settle = if run.runtime_gone {
            Some(Settled::RuntimeGone)
        } else if run.phase == Phase::Closed {
            Some(Settled::ShutDown)
        } else if run.phase == Phase::Cancelled || (run.phase == Phase::Draining && !known) {
            Some(Settled::Abandoned)
        } else if self.backlog(&run) > self.settings.max_backlog {
            Some(Settled::BacklogFull)
        } else {
            None
        };
        if let Some(settled) = settle {
            state.fate = Fate::Run { scheduled: false };
            let tasks: Vec<Task> = state.tasks.take_all();
            self.counters.count(settled.kind(), tasks.len());
            if settled == Settled::Abandoned {
                run.abandoned.extend(tasks.iter().map(|task| task.name()));
            }
            self.wake_if_watched(run);
            return Admission::Settled(settled, tasks, report);
        }
        if self.settings.hold {
            // A recording runner (`Recorder`): kept until the test runs it.
            run.held.push(Waiting {
                queue: inner.clone(),
                report,
            });
            return Admission::Waiting;
        }
        if run.running < self.settings.max_concurrent_drains {
            self.more_running(&mut run, 1);
            if run.idle > 0 {
                run.idle -= 1;
                run.handed.push_back(Waiting {
                    queue: inner.clone(),
                    report,
                });
                Admission::Wake
            } else {
                Admission::Start(report)
            }
        } else {
            run.waiting.push_back(Waiting {
                queue: inner.clone(),
                report,
            });
            Admission::Waiting
        }
    }

    /// Carries out an admission, outside the locks.
    fn act(self: &Arc<Self>, inner: Arc<Inner>, admission: Admission) {
        match admission {
            Admission::Start(report) => {
                // On a runtime that is shutting down, `spawn` drops the
                // worker unpolled, and the worker's destructor accounts for
                // the queue.
                drop(self.handle.spawn(worker::run(
                    self.clone(),
                    Waiting {
                        queue: inner,
                        report,
                    },
                )));
            }
            // Every parked worker registered with `wake` before it counted
            // itself idle, so this wakes one that has not been woken yet.
            Admission::Wake => self.wake.notify_one(),
            Admission::Waiting => {}
            Admission::Settled(settled, tasks, report) => {
                report.send(&inner, DrainReport::of(settled.kind(), tasks.len()));
                settle(settled, tasks);
            }
        }
        // A drain started, or tasks were counted: either can make room.
        self.made_room();
    }
}

/// Logs and drops tasks that were abandoned or refused; they are counted
/// already.
pub(super) fn settle(settled: Settled, tasks: Vec<Task>) {
    for task in tasks {
        tracing::error!(
            parent: task.parent(),
            task = task.name().short(),
            position = task.position(),
            "{}",
            settled.why()
        );
        task.discard();
    }
}
