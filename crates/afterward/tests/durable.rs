//! Durable tasks in the core: in-process without a backend, one ordered
//! chain per hand-off with one, and every task counted once either way.
#![cfg(feature = "durable")]

mod capture_logs;
mod on_purpose;

use std::future::Future;
use std::sync::{Arc, Mutex};

use afterward::durable::{Chain, DurableBackend, PersistFuture};
use afterward::{DurableTask, FailurePolicy, Outcome, RunIf, Runner, Stats, Step, TaskQueue};
use on_purpose::{PanicOnDrop, hide_panics};
use serde::{Deserialize, Serialize};

type Log = Arc<Mutex<Vec<String>>>;

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A durable task that logs its label to `LOG` (durable tasks hold data,
/// not handles, so the log is global; each test uses its own labels).
#[derive(Serialize, Deserialize)]
struct Mark {
    label: String,
    fail: bool,
}

impl DurableTask for Mark {
    const NAME: &'static str = "mark";
    type Error = String;

    async fn run(self, step: Step) -> Result<(), String> {
        assert_eq!(step.attempt(), 1);
        LOG.lock().unwrap().push(self.label.clone());
        if self.fail {
            Err(format!("{} failed", self.label))
        } else {
            Ok(())
        }
    }
}

fn mark(label: &str) -> Mark {
    Mark {
        label: label.to_owned(),
        fail: false,
    }
}

fn marks(prefix: &str) -> Vec<String> {
    LOG.lock()
        .unwrap()
        .iter()
        .filter(|label| label.starts_with(prefix))
        .cloned()
        .collect()
}

/// A backend that keeps chains in memory, or fails, and records what the
/// in-process log held when each chain was stored.
#[derive(Clone, Default)]
struct Memory {
    chains: Arc<Mutex<Vec<Chain>>>,
    seen_at_store: Log,
    local: Log,
    fail: bool,
    panic: bool,
    panic_at_call: bool,
}

impl DurableBackend for Memory {
    fn persist<'a>(&'a self, chain: &'a Chain) -> PersistFuture<'a> {
        if self.panic_at_call {
            panic!("backend bug, before any future");
        }
        Box::pin(async move {
            tokio::task::yield_now().await;
            if self.panic {
                panic!("backend bug");
            }
            if self.fail {
                return Err("connection refused".into());
            }
            let seen = self.local.lock().unwrap().clone();
            self.seen_at_store.lock().unwrap().extend(seen);
            self.chains.lock().unwrap().push(chain.clone());
            Ok(())
        })
    }
}

fn labels(chain: &Chain) -> Vec<String> {
    chain
        .steps()
        .iter()
        .map(|step| {
            assert_eq!(step.name(), "mark");
            step.payload()["label"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn local(log: &Log, label: &'static str) -> impl FnOnce() + Send + 'static {
    let log = log.clone();
    move || log.lock().unwrap().push(label.to_owned())
}

fn assert_conserved(stats: Stats) {
    assert_eq!(stats.tasks_received(), stats.accounted(), "{stats:?}");
}

#[tokio::test]
async fn without_backend_durable_tasks_run_in_process_in_queue_order() {
    let queue = TaskQueue::new();
    let log: Log = Log::default();
    queue.add_durable(mark("nb-1"));
    let l = log.clone();
    queue.add_task(move || l.lock().unwrap().push("nb-local".into()), ());
    queue.add_durable(Mark {
        label: "nb-2".into(),
        fail: true,
    });
    queue.add_durable(mark("nb-3"));
    let names = queue.task_names();
    assert_eq!(
        (names[0].as_ref(), names[2].as_ref(), names[3].as_ref()),
        ("mark", "mark", "mark")
    );
    let report = queue.drain().await;
    assert_eq!(report.completed(), 3);
    assert_eq!(report.failed(), 1);
    assert_eq!(marks("nb-"), ["nb-1", "nb-2", "nb-3"]);

    // Under a runner without a backend, too, with its failure policy.
    let runner = Runner::builder()
        .failure_policy(FailurePolicy::StopQueue)
        .build();
    let queue = TaskQueue::new();
    queue.add_durable(mark("nr-1"));
    queue.add_durable(Mark {
        label: "nr-2".into(),
        fail: true,
    });
    queue.add_durable(mark("nr-3"));
    let report = runner.spawn(queue).await;
    assert_eq!(
        (report.completed(), report.failed(), report.skipped()),
        (1, 1, 1)
    );
    assert_eq!(report.persisted(), 0);
    assert_eq!(marks("nr-"), ["nr-1", "nr-2"]);
    assert_conserved(runner.stats());
}

#[tokio::test]
async fn with_backend_durable_tasks_leave_as_one_chain_before_local_tasks_run() {
    let backend = Memory::default();
    let runner = Runner::builder()
        .failure_policy(FailurePolicy::StopQueue)
        .durable(backend.clone())
        .build();
    let queue = TaskQueue::new();
    queue.add_task(local(&backend.local, "local-1"), ());
    queue.add_durable(mark("wb-1"));
    queue.add_task(local(&backend.local, "local-2"), ());
    queue.add_durable(mark("wb-2"));
    queue.add_durable(mark("wb-3"));
    let report = runner.spawn(queue).await;

    assert_eq!((report.persisted(), report.completed()), (3, 2));
    assert_eq!(report.total(), 5);
    let chains = backend.chains.lock().unwrap().clone();
    assert_eq!(chains.len(), 1);
    assert_eq!(labels(&chains[0]), ["wb-1", "wb-2", "wb-3"]);
    assert_eq!(chains[0].policy(), FailurePolicy::StopQueue);
    assert_eq!(chains[0].id().len(), 32);
    // Stored before the first in-process task ran; none ran in-process.
    assert!(backend.seen_at_store.lock().unwrap().is_empty());
    assert_eq!(*backend.local.lock().unwrap(), ["local-1", "local-2"]);
    assert!(marks("wb-").is_empty());

    let stats = runner.stats();
    assert_eq!(stats.persisted(), 3);
    assert_eq!(stats.persist_failed(), 0);
    assert_conserved(stats);
}

#[tokio::test]
async fn each_hand_off_is_its_own_chain_and_a_late_durable_task_leaves_alone() {
    let backend = Memory::default();
    let runner = Runner::builder().durable(backend.clone()).build();
    let first = TaskQueue::new();
    first.add_durable(mark("ho-a1"));
    let second = TaskQueue::new();
    second.add_durable(mark("ho-b1"));
    second.add_durable(mark("ho-b2"));
    runner.spawn(first).await;
    runner.spawn(second).await;

    // A task adds a durable task to its own queue while the drain runs.
    let queue = TaskQueue::new();
    queue.add_durable(mark("ho-c1"));
    let q = queue.clone();
    queue.add_task(
        move || {
            q.add_durable(mark("ho-c2"));
        },
        (),
    );
    let report = runner.spawn(queue).await;
    assert_eq!((report.persisted(), report.completed()), (2, 1));
    runner.wait_idle().await;

    let chains = backend.chains.lock().unwrap().clone();
    let all: Vec<Vec<String>> = chains.iter().map(labels).collect();
    assert_eq!(
        all,
        [
            vec!["ho-a1"],
            vec!["ho-b1", "ho-b2"],
            vec!["ho-c1"],
            vec!["ho-c2"]
        ]
    );
    let ids: std::collections::HashSet<&str> = chains.iter().map(Chain::id).collect();
    assert_eq!(ids.len(), 4);
    assert_conserved(runner.stats());
}

#[tokio::test]
async fn a_failed_hand_off_is_counted_and_the_local_tasks_still_run() {
    for (fail, panic, panic_at_call) in [
        (true, false, false),
        (false, true, false),
        (false, false, true),
    ] {
        let backend = Memory {
            fail,
            panic,
            panic_at_call,
            ..Memory::default()
        };
        let runner = Runner::builder().durable(backend.clone()).build();
        let queue = TaskQueue::new();
        queue.add_durable(mark("ff-1"));
        queue.add_task(local(&backend.local, "after"), ());
        queue.add_durable(mark("ff-2"));
        let report = runner.spawn(queue).await;
        assert_eq!((report.persist_failed(), report.completed()), (2, 1));
        assert_eq!(*backend.local.lock().unwrap(), ["after"]);
        let stats = runner.stats();
        assert_eq!((stats.persisted(), stats.persist_failed()), (0, 2));
        assert_conserved(stats);
    }
    assert!(marks("ff-").is_empty());
}

#[tokio::test]
async fn a_failed_hand_off_logs_each_task_by_name_with_the_error() {
    let capture = capture_logs::Capture::default();
    let _default = tracing::subscriber::set_default(capture.subscriber());
    let backend = Memory {
        fail: true,
        ..Memory::default()
    };
    let runner = Runner::builder().durable(backend).build();
    let queue = TaskQueue::new();
    queue
        .add_durable(mark("lg-1"))
        .name(format!("welcome email to user {}", 42));
    queue.add_durable(mark("lg-2"));
    assert_eq!(runner.spawn(queue).await.persist_failed(), 2);
    let line = capture.line_with("welcome email to user 42");
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("durable task not stored"), "{line}");
    assert!(line.contains("connection refused"), "{line}");
    assert!(line.contains("position=1"), "{line}");
}

/// Serializes to an error.
#[derive(Deserialize)]
struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("no wire form"))
    }
}

impl DurableTask for Unserializable {
    const NAME: &'static str = "unserializable";
    type Error = String;

    async fn run(self, _: Step) -> Result<(), String> {
        Ok(())
    }
}

#[tokio::test]
async fn a_chain_is_stored_whole_or_not_at_all() {
    let backend = Memory::default();
    let runner = Runner::builder().durable(backend.clone()).build();
    let queue = TaskQueue::new();
    queue.add_durable(mark("sw-1"));
    queue.add_durable(Unserializable);
    let report = runner.spawn(queue).await;
    assert_eq!(report.persist_failed(), 2);
    assert!(backend.chains.lock().unwrap().is_empty());
    assert_conserved(runner.stats());
}

#[tokio::test]
async fn a_skipped_queue_and_unmet_conditions_store_nothing() {
    let backend = Memory::default();
    let runner = Runner::builder().durable(backend.clone()).build();

    let queue = TaskQueue::new();
    queue.add_durable(mark("sk-1"));
    let report = runner.skip(queue, "the handler failed");
    assert_eq!(report.skipped(), 1);

    let queue = TaskQueue::new();
    afterward::adapter::set_outcome(&queue, Outcome::Failure);
    queue.add_durable(mark("sk-2")).run_if(RunIf::Success);
    queue.add_durable(mark("sk-3")).run_if(RunIf::Failure);
    let report = runner.spawn(queue).await;
    assert_eq!((report.skipped(), report.persisted()), (1, 1));

    let chains = backend.chains.lock().unwrap().clone();
    assert_eq!(chains.len(), 1);
    assert_eq!(labels(&chains[0]), ["sk-3"]);
    assert_conserved(runner.stats());
}

/// A backend that never answers, to be cut off by a shutdown.
struct Hang;

impl DurableBackend for Hang {
    fn persist<'a>(&'a self, _: &'a Chain) -> PersistFuture<'a> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn a_shutdown_during_the_hand_off_names_the_tasks_it_abandons() {
    let runner = Runner::builder().durable(Hang).build();
    let queue = TaskQueue::new();
    queue.add_durable(mark("hang-1"));
    queue.add_durable(mark("hang-2"));
    let handle = runner.spawn(queue);
    let report = runner.shutdown(std::time::Duration::from_millis(50)).await;
    assert_eq!(report.abandoned_tasks(), ["mark", "mark"]);
    assert_eq!(handle.await.abandoned(), 2);
    let stats = runner.stats();
    assert_eq!(stats.abandoned(), 2);
    assert_conserved(stats);
}

// ===== randomized: every task counted once, every stored task stored once =====

/// xorshift64*, seedable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A durable task with an id, that may fail to serialize, panic while
/// serializing, or panic when dropped.
#[derive(Deserialize)]
struct Numbered {
    id: u64,
    #[serde(skip)]
    trouble: Trouble,
}

#[derive(Default, Clone, Copy, PartialEq)]
enum Trouble {
    #[default]
    None,
    SerializeErr,
    SerializePanic,
    DropPanic,
}

impl Serialize for Numbered {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.trouble {
            Trouble::SerializeErr => Err(serde::ser::Error::custom("no wire form")),
            Trouble::SerializePanic => panic!("a serializer panics"),
            _ => s.serialize_u64(self.id),
        }
    }
}

impl Drop for Numbered {
    fn drop(&mut self) {
        if self.trouble == Trouble::DropPanic && !std::thread::panicking() {
            panic!("a destructor panics");
        }
    }
}

impl DurableTask for Numbered {
    const NAME: &'static str = "numbered";
    type Error = String;

    async fn run(self, _: Step) -> Result<(), String> {
        Ok(())
    }
}

/// A backend whose behaviour each case draws.
#[derive(Clone)]
struct Random {
    chains: Arc<Mutex<Vec<Chain>>>,
    mode: u64,
    delay_ms: u64,
}

/// A future that stores its chain at its first poll and panics when
/// dropped.
struct StoredThenDropPanics(Option<(Arc<Mutex<Vec<Chain>>>, Chain)>);

impl Future for StoredThenDropPanics {
    type Output = Result<(), afterward::durable::PersistError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if let Some((chains, chain)) = self.0.take() {
            chains.lock().unwrap().push(chain);
        }
        std::task::Poll::Ready(Ok(()))
    }
}

impl Drop for StoredThenDropPanics {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("a destructor panics");
        }
    }
}

impl DurableBackend for Random {
    fn persist<'a>(&'a self, chain: &'a Chain) -> PersistFuture<'a> {
        if self.mode == 2 {
            panic!("a backend panics");
        }
        if self.mode == 4 {
            return Box::pin(StoredThenDropPanics(Some((
                self.chains.clone(),
                chain.clone(),
            ))));
        }
        Box::pin(async move {
            let _guard = (self.mode == 3).then_some(PanicOnDrop);
            tokio::time::sleep(std::time::Duration::from_millis(self.delay_ms)).await;
            match self.mode {
                0 => Err("database unreachable".into()),
                1 => panic!("a backend panics"),
                _ => {
                    self.chains.lock().unwrap().push(chain.clone());
                    Ok(())
                }
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_mixes_with_a_backend_count_every_task_once() {
    hide_panics(&["a serializer panics", "a backend panics", "local panic"]);
    let seed = std::env::var("AFTERWARD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xd0ab_1e5e_ed00_0001_u64);
    println!("AFTERWARD_SEED={seed}");
    let mut rng = Rng(seed);
    for case in 0..300 {
        let why = format!("seed {seed}, case {case}");
        let backend = Random {
            chains: Arc::default(),
            // 0 fails, 1 panics in a poll, 2 panics when called, 3 stores
            // and then panics in the same poll, 4 stores and its future
            // panics when dropped, 5 and 6 store.
            mode: rng.below(7),
            delay_ms: rng.below(3),
        };
        let mut builder = Runner::builder().durable(backend.clone());
        if rng.below(2) == 0 {
            builder = builder.failure_policy(FailurePolicy::StopQueue);
        }
        if rng.below(3) == 0 {
            builder = builder.max_concurrent_drains(1);
        }
        let runner = builder.build();
        let mut next_id = 0;
        let mut handles = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let queue = TaskQueue::new();
            for _ in 0..rng.below(8) {
                match rng.below(6) {
                    0 => {
                        queue.add_task(|| (), ());
                    }
                    1 => {
                        queue.add_task(|| -> () { panic!("local panic") }, ());
                    }
                    2 => {
                        // Adds a durable task to its own queue mid-drain.
                        let q = queue.clone();
                        let id = next_id;
                        next_id += 1;
                        queue.add_task(
                            move || async move {
                                q.add_durable(Numbered {
                                    id,
                                    trouble: Trouble::None,
                                });
                            },
                            (),
                        );
                    }
                    _ => {
                        let trouble = match rng.below(8) {
                            0 => Trouble::SerializeErr,
                            1 => Trouble::SerializePanic,
                            2 => Trouble::DropPanic,
                            _ => Trouble::None,
                        };
                        queue.add_durable(Numbered {
                            id: next_id,
                            trouble,
                        });
                        next_id += 1;
                    }
                }
            }
            handles.push(runner.spawn(queue));
        }
        if rng.below(5) == 0 {
            let report = runner
                .shutdown(std::time::Duration::from_millis(rng.below(3)))
                .await;
            assert_eq!(report.abandoned(), runner.stats().abandoned(), "{why}");
        } else {
            runner.wait_idle().await;
        }
        let stats = runner.stats();
        let mut total = afterward::DrainReport::default();
        for handle in handles {
            total += handle.await;
        }
        assert_eq!(
            stats.tasks_received(),
            stats.accounted(),
            "{why}: {stats:?}"
        );
        assert_eq!(total.total(), stats.tasks_received(), "{why}: {total:?}");
        assert_eq!(total.persisted(), stats.persisted(), "{why}");
        assert_eq!(total.persist_failed(), stats.persist_failed(), "{why}");
        let chains = backend.chains.lock().unwrap().clone();
        let mut stored: Vec<u64> = chains
            .iter()
            .flat_map(|chain| {
                chain
                    .steps()
                    .iter()
                    .map(|step| step.payload().as_u64().unwrap())
            })
            .collect();
        if backend.mode == 3 {
            // Stored, but the backend panicked before it answered: a failed
            // hand-off as far as the runner can tell.
            assert_eq!(stats.persisted(), 0, "{why}");
            assert!(stored.len() <= stats.persist_failed(), "{why}");
            continue;
        }
        assert_eq!(stored.len(), stats.persisted(), "{why}: {stats:?}");
        stored.sort_unstable();
        stored.dedup();
        assert_eq!(
            stored.len(),
            stats.persisted(),
            "{why}: a task stored twice"
        );
        if backend.mode < 3 {
            assert_eq!(stats.persisted(), 0, "{why}");
        }
    }
}

/// A full backlog refuses in-process tasks, never durable ones: their
/// request was answered, and storing them is all they wait for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_refuses_in_process_tasks_but_stores_durable_ones() {
    let backend = Memory::default();
    let runner = Runner::builder()
        .max_concurrent_drains(1)
        .max_backlog(1)
        .durable(backend.clone())
        .build();
    // One drain slot, held, and the backlog filled.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let holder = TaskQueue::new();
    holder.add_task(
        move || async move {
            started_tx.send(()).unwrap();
            let _ = released.await;
        },
        (),
    );
    runner.spawn(holder);
    started.await.unwrap();
    let filler = TaskQueue::new();
    filler.add_task(|| (), ());
    runner.spawn(filler);

    let mut handles = Vec::new();
    for i in 0..20 {
        let queue = TaskQueue::new();
        queue.add_durable(mark(&format!("flood-{i}")));
        queue.add_task(|| (), ()).name("in-process");
        handles.push(runner.spawn(queue));
    }
    release.send(()).unwrap();
    for handle in handles {
        handle.await;
    }
    runner.wait_idle().await;
    let stats = runner.stats();
    assert_eq!(
        (stats.persisted(), stats.rejected(), stats.completed()),
        (20, 20, 2),
        "{stats:?}"
    );
    assert_eq!(backend.chains.lock().unwrap().len(), 20);
    assert_conserved(stats);
}
