//! `Recorder`: a runner for tests, which keeps what it is handed.

use std::sync::Arc;

use super::Runner;
use super::builder::RunnerBuilder;
use super::shared::Shared;
use super::state::{Phase, Waiting};
use crate::drain::Drain;
use crate::queue::Inner;
use crate::report::DrainReport;

/// A runner for tests: it keeps the queues handed to it instead of running
/// them, so a test can call a handler and then check what it queued before
/// anything ran, as Laravel's `Bus::fake()` or Django's
/// `captureOnCommitCallbacks` do. [`run`](Recorder::run) then runs them, on
/// demand.
///
/// Give [`runner`](Recorder::runner) to `TaskLayer` or `TaskService` (or to
/// [`Runner::spawn`] by hand). Everything else works as with a real runner:
/// the queues are counted received when handed over, run in hand-off order
/// with the runner's settings, and counted in its [`Stats`](crate::Stats).
/// Two things differ, since kept queues never run by themselves:
/// [`Runner::wait_idle`] does not wait for them, and [`Runner::shutdown`]
/// abandons and names them at once instead of waiting for its deadline.
///
/// # Examples
///
/// ```
/// use afterward::{Recorder, TaskQueue};
///
/// fn send_welcome_email(to: String) {}
/// async fn write_audit_log(line: String) {}
///
/// // A handler, as the app has it.
/// fn register(tasks: &TaskQueue, email: &str) {
///     tasks.add_task(send_welcome_email, (email.to_owned(),));
///     tasks.add_task(write_audit_log, (format!("register {email}"),)).name("audit-log");
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let recorder = Recorder::new();
/// let queue = TaskQueue::new();
/// register(&queue, "ada@example.com");
/// recorder.runner().spawn(queue); // what TaskLayer does once the response is out
///
/// assert_eq!(recorder.queued(), ["send_welcome_email", "audit-log"]);
/// assert_eq!(recorder.runner().stats().completed(), 0); // nothing ran yet
///
/// let report = recorder.run().await;
/// assert_eq!(report.completed(), 2);
/// assert!(recorder.queued().is_empty());
/// # }
/// ```
#[derive(Debug, Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub struct Recorder {
    runner: Runner,
}

impl Recorder {
    /// A recorder with the default settings, on the current tokio runtime.
    /// [`RunnerBuilder::build_recorder`](crate::RunnerBuilder::build_recorder)
    /// makes one with other settings.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    pub fn new() -> Recorder {
        Runner::builder().build_recorder()
    }

    fn from_runner(runner: Runner) -> Recorder {
        Recorder { runner }
    }

    /// The runner to hand queues to.
    pub fn runner(&self) -> Runner {
        self.runner.clone()
    }

    /// How many queues are kept, not yet run.
    pub fn queue_count(&self) -> usize {
        self.runner.shared.lock().held.len()
    }

    #[doc(hidden)]
    #[deprecated(note = "renamed `queue_count`: `queued` lists task names")]
    pub fn queues(&self) -> usize {
        self.queue_count()
    }

    /// The names of the tasks kept, queue after queue in hand-off order,
    /// each queue's in its own order: the names given with
    /// [`QueuedTask::name`](crate::QueuedTask::name), or the functions'.
    pub fn queued(&self) -> Vec<String> {
        let mut names = Vec::new();
        for queue in self.held_queues() {
            queue
                .lock()
                .tasks
                .for_each(|task| names.push(task.name().short().to_owned()));
        }
        names
    }

    /// Runs every queue kept, one after another in hand-off order, as the
    /// runner would have, and returns their reports added up. Queues handed
    /// over meanwhile are run too.
    ///
    /// A queue being run is work in progress, like any drain of the runner:
    /// [`Runner::shutdown`] waits for it until its deadline, then cancels it
    /// and names what it abandons; the queues not started yet are abandoned
    /// and named at once.
    pub async fn run(&self) -> DrainReport {
        let shared = &self.runner.shared;
        let mut total = DrainReport::default();
        while let Some(Waiting { queue, report }) = shared.start_held() {
            let running = Running(shared);
            let mut drain = Drain::new(queue.clone(), shared.ctx());
            shared.cancel.unless_cancelled(drain.run()).await;
            let drained = drain.close();
            report.send(&queue, drained);
            total += drained;
            drop(running);
        }
        total
    }

    /// The queues kept, taken under the runner's lock and then let go: a
    /// queue's lock is never taken while the runner's is held.
    fn held_queues(&self) -> Vec<Arc<Inner>> {
        let run = self.runner.shared.lock();
        run.held
            .iter()
            .map(|waiting| waiting.queue.clone())
            .collect()
    }
}

/// A recorded queue being run: counted among the running drains until it
/// ends, however it ends.
struct Running<'a>(&'a Arc<Shared>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut run = self.0.lock();
        self.0.fewer_running(&mut run, 1);
        self.0.wake_if_watched(run);
    }
}

impl Shared {
    /// Takes the oldest queue kept, counted as a running drain; `None` if
    /// none is kept, or the runner is past its shutdown's deadline.
    fn start_held(&self) -> Option<Waiting> {
        let mut run = self.lock();
        if run.held.is_empty() || matches!(run.phase, Phase::Cancelled | Phase::Closed) {
            return None;
        }
        let next = run.held.remove(0);
        self.more_running(&mut run, 1);
        Some(next)
    }
}

impl RunnerBuilder {
    /// Builds a [`Recorder`]: a runner with these settings that keeps the
    /// queues handed to it until the test runs them.
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn build_recorder(mut self) -> Recorder {
        self.settings.hold = true;
        Recorder::from_runner(self.build())
    }
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}
