//! Admission: how the runner takes on a queue handed over to it: handed to
//! a worker, made to wait, or settled without running (abandoned during a
//! shutdown, refused after one or past the backlog).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::handle::{DrainHandle, ReportTo};
use super::shared::Shared;
use super::state::{Phase, Waiting};
use super::worker;
use crate::condition::Outcome;
use crate::counts::TaskOutcome;
use crate::metrics;
use crate::queue::{Fate, Host, Inner, State};
use crate::report::DrainReport;
use crate::task::{Rejection, Task, Why, settle};

/// How a queue was handed over.
struct HandedOver {
    /// Its registration among the runner's open queues, to remove.
    key: Option<usize>,
    /// Made for this runner, or handed to it before: a shutdown under way
    /// still takes it.
    known: bool,
    /// Its request holds a reservation: its tasks are taken whatever the
    /// backlog.
    reserved: bool,
}

/// What admission decided for a queue.
enum Admission {
    /// A worker is to be spawned for it.
    Start(ReportTo),
    /// It was handed to a parked worker, to be woken.
    Wake,
    /// It waits for a worker (or, on a recording runner, for the test).
    Waiting,
    /// Its tasks were taken out, to be abandoned or refused.
    Settled(Why<'static>, Vec<Task>, ReportTo),
}

impl Shared {
    /// Takes `inner` on, to run. Returns the drain's handle: pending if the
    /// queue was taken on, ready if it was settled at once.
    ///
    /// A queue handed over with a reservation (see `Runner::reserve`) is
    /// never refused for a full backlog: its request was admitted when the
    /// backlog had room. An adapter's hand-off records the response's
    /// `outcome` here, under the lock it takes anyway.
    pub(super) fn spawn(
        self: &Arc<Self>,
        inner: Arc<Inner>,
        reserved: bool,
        outcome: Option<Outcome>,
    ) -> DrainHandle {
        let mut state = inner.lock();
        if let Some(outcome) = outcome {
            state.outcome = outcome;
        }
        if matches!(state.owner.fate, Fate::Skip | Fate::Run { scheduled: true }) {
            // Its fate is decided: a drain of the runner already has it (and
            // will take any task in it), or it was skipped.
            return DrainHandle::ready(DrainReport::default());
        }
        if state.owner.fate == (Fate::Run { scheduled: false }) && state.tasks.is_empty() {
            // Handed off before, and empty: nothing to run, and the runner
            // it was handed to keeps it, for tasks added later.
            return DrainHandle::ready(DrainReport::default());
        }
        // `known`: made for this runner, or handed to it before.
        let (known, key) = match &state.owner.host {
            Some(host) if self.is(host) => (true, state.owner.take_key()),
            _ => {
                let host: Arc<dyn Host> = self.clone();
                let previous = state.owner.host.replace(host);
                if let (Some(previous), Some(key)) = (previous, state.owner.take_key()) {
                    previous.unregister(key);
                }
                (false, None)
            }
        };
        let n = state.tasks.len();
        state.owner.fate = Fate::Run { scheduled: n > 0 };
        if n == 0 {
            drop(state);
            if let Some(key) = key {
                self.unregister(key);
            }
            return DrainHandle::ready(DrainReport::default());
        }
        self.counters.received(n);
        if metrics::ENABLED {
            state.tasks.for_each(|task| metrics::received(&task.name()));
            state.handed = metrics::handed();
        }
        let (mut handle, report) = DrainHandle::for_drain(&inner, &mut state.report);
        let mut rejected = Vec::new();
        let how = HandedOver {
            key,
            known,
            reserved,
        };
        let admission = match self.admit(&inner, &mut state, how, report, &mut rejected) {
            Admission::Settled(why, tasks, _) => {
                // Settled at once: the handle has its report now, and needs
                // no slot, nor a report sent to it.
                state.report.awaited = None;
                handle.settle(report_of(why, tasks.len()));
                Admission::Settled(why, tasks, ReportTo::Nobody)
            }
            admission => admission,
        };
        drop(state);
        self.act(inner, admission);
        if !rejected.is_empty() {
            settle(rejected, Why::Rejected(Rejection::BacklogFull));
        }
        handle
    }

    /// Takes on again a queue that got a task after its hand-off, while no
    /// drain had it.
    pub(super) fn admit_late(self: Arc<Self>, inner: Arc<Inner>) {
        let mut state = inner.lock();
        if state.tasks.is_empty() {
            // Its tasks went meanwhile: forgotten, or run by a direct
            // `drain()` that had the queue when it was handed over.
            state.owner.fate = Fate::Run { scheduled: false };
            return;
        }
        state.handed = metrics::handed();
        let mut rejected = Vec::new();
        let how = HandedOver {
            key: None,
            known: true,
            reserved: false,
        };
        let admission = self.admit(&inner, &mut state, how, ReportTo::Nobody, &mut rejected);
        drop(state);
        self.act(inner, admission);
        if !rejected.is_empty() {
            settle(rejected, Why::Rejected(Rejection::BacklogFull));
        }
    }

    /// Decides, under both locks, what becomes of a queue whose fate was
    /// just set to `Run { scheduled: true }` with its tasks counted
    /// received. The queue's lock is taken first, then the runner's: never
    /// the other way round.
    fn admit(
        &self,
        inner: &Arc<Inner>,
        state: &mut State,
        how: HandedOver,
        report: ReportTo,
        rejected: &mut Vec<Task>,
    ) -> Admission {
        let HandedOver {
            key,
            known,
            reserved,
        } = how;
        let mut run = self.lock();
        if let Some(key) = key {
            run.open.try_remove(key);
        }
        let refused = if run.runtime_gone {
            Some(Why::Rejected(Rejection::RuntimeGone))
        } else if run.phase == Phase::Closed {
            Some(Why::Rejected(Rejection::ShutDown))
        } else if run.phase == Phase::Cancelled || (run.phase == Phase::Draining && !known) {
            Some(Why::Abandoned)
        } else if !reserved
            // Room reserved for admitted requests is theirs.
            && self.backlog(&run) + self.reserved.load(Relaxed) > self.settings.max_backlog
        {
            // Durable tasks are not refused for a full backlog: they only
            // wait to be stored, and their request was answered. The
            // in-process tasks are.
            match take_in_process(state) {
                None => Some(Why::Rejected(Rejection::BacklogFull)),
                Some(turned_away) => {
                    self.counters
                        .count(TaskOutcome::Rejected, turned_away.len());
                    rejected.extend(turned_away);
                    None
                }
            }
        } else {
            None
        };
        if let Some(why) = refused {
            state.owner.fate = Fate::Run { scheduled: false };
            let tasks: Vec<Task> = state.tasks.take_all();
            self.count_settled(&mut run, why, &tasks);
            self.wake_if_watched(run);
            return Admission::Settled(why, tasks, report);
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
            metrics::drains(run.running, run.waiting.len());
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
            Admission::Settled(why, tasks, report) => {
                report.send(&inner, report_of(why, tasks.len()));
                settle(tasks, why);
            }
        }
        // A drain started, or tasks were counted: either can make room.
        self.made_room();
    }
}

/// The in-process tasks of a queue that holds durable tasks, taken out;
/// `None` if it holds no durable task (it is refused whole).
#[cfg(feature = "durable")]
fn take_in_process(state: &mut State) -> Option<Vec<Task>> {
    let mut durable = false;
    state.tasks.for_each(|task| durable |= task.is_durable());
    durable.then(|| state.tasks.take_where(|task| !task.is_durable()))
}

#[cfg(not(feature = "durable"))]
fn take_in_process(_: &mut State) -> Option<Vec<Task>> {
    None
}

/// The report of `n` tasks settled for `why`.
fn report_of(why: Why<'_>, n: usize) -> DrainReport {
    DrainReport::of(why.outcome().unwrap_or(TaskOutcome::Abandoned), n)
}
