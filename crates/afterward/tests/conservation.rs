//! The conservation property, over many random cases: every task a runner
//! receives is counted exactly once, no task body runs twice, and whatever
//! did not run is accounted for.
//!
//! Each case builds a runner with random settings, spawns random queues of
//! ok / failing / panicking / slow / sync / async tasks (some of which queue
//! more tasks while running, some of which hold values that panic when
//! dropped or panic with payloads that do), then either waits for idle or
//! shuts down with a tiny deadline. Set `AFTERWARD_SEED` to replay a run; a failure prints the
//! seed and the case.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use afterward::{DrainReport, FailurePolicy, Runner, TaskQueue};
use on_purpose::{PanicOnDrop, hide_panics, panic_with_nasty_payload};

mod on_purpose;

const CASES: usize = 600;

/// xorshift64*: small, seedable, and good enough to pick test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Shared by all tasks of a case: how often each task body started.
struct Ledger {
    runs: Vec<AtomicU8>,
    next_id: AtomicUsize,
}

impl Ledger {
    fn new(capacity: usize) -> Arc<Ledger> {
        Arc::new(Ledger {
            runs: (0..capacity).map(|_| AtomicU8::new(0)).collect(),
            next_id: AtomicUsize::new(0),
        })
    }

    fn id(&self) -> usize {
        self.next_id.fetch_add(1, SeqCst)
    }

    fn ran(&self, id: usize) {
        self.runs[id].fetch_add(1, SeqCst);
    }

    fn bodies_started(&self) -> usize {
        self.runs.iter().map(|r| usize::from(r.load(SeqCst))).sum()
    }

    fn max_runs(&self) -> u8 {
        self.runs.iter().map(|r| r.load(SeqCst)).max().unwrap_or(0)
    }

    fn created(&self) -> usize {
        self.next_id.load(SeqCst)
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    OkSync,
    OkAsync,
    ErrSync,
    ErrAsync,
    PanicSync,
    PanicAsync,
    SlowAsync(u64),
    SlowSync(u64),
    /// An async task that queues another task onto its own queue.
    Spawner,
    /// Holds a value that panics when dropped, across an `.await`: its drop
    /// panics wherever the task ends (finished, timed out, abandoned,
    /// skipped).
    DropPanicsAsync(u64),
    /// A sync task whose captured value panics when dropped.
    DropPanicsSync,
    /// Panics with a payload whose own destructor panics.
    NastyPayloadSync,
    NastyPayloadAsync,
}

fn random_kind(rng: &mut Rng) -> Kind {
    match rng.below(13) {
        0 => Kind::OkSync,
        1 => Kind::OkAsync,
        2 => Kind::ErrSync,
        3 => Kind::ErrAsync,
        4 => Kind::PanicSync,
        5 => Kind::PanicAsync,
        6 => Kind::SlowAsync(rng.below(6)),
        7 => Kind::SlowSync(rng.below(3)),
        8 => Kind::Spawner,
        9 => Kind::DropPanicsAsync(rng.below(4)),
        10 => Kind::DropPanicsSync,
        11 => Kind::NastyPayloadSync,
        _ => Kind::NastyPayloadAsync,
    }
}

fn add(queue: &TaskQueue, ledger: &Arc<Ledger>, kind: Kind) {
    let id = ledger.id();
    let l = ledger.clone();
    let _queued = match kind {
        Kind::OkSync => queue.add_task(move || l.ran(id), ()),
        Kind::OkAsync => queue.add_task(move || async move { l.ran(id) }, ()),
        Kind::ErrSync => queue.add_task(
            move || {
                l.ran(id);
                Err::<(), _>("sync failure")
            },
            (),
        ),
        Kind::ErrAsync => queue.add_task(
            move || async move {
                l.ran(id);
                Err::<(), _>("async failure")
            },
            (),
        ),
        Kind::PanicSync => queue.add_task(
            move || -> () {
                l.ran(id);
                panic!("sync panic");
            },
            (),
        ),
        Kind::PanicAsync => queue.add_task(
            move || async move {
                l.ran(id);
                tokio::task::yield_now().await;
                boom("async panic");
            },
            (),
        ),
        Kind::SlowAsync(ms) => queue.add_task(
            move || async move {
                l.ran(id);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            },
            (),
        ),
        Kind::SlowSync(ms) => queue.add_task(
            move || {
                l.ran(id);
                std::thread::sleep(Duration::from_millis(ms));
            },
            (),
        ),
        Kind::DropPanicsAsync(ms) => queue.add_task(
            move |guard: PanicOnDrop| async move {
                let _guard = guard;
                l.ran(id);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            },
            (PanicOnDrop,),
        ),
        Kind::DropPanicsSync => queue.add_task(
            move |_guard: PanicOnDrop| {
                l.ran(id);
            },
            (PanicOnDrop,),
        ),
        Kind::NastyPayloadSync => queue.add_task(
            move || {
                l.ran(id);
                panic_with_nasty_payload();
            },
            (),
        ),
        Kind::NastyPayloadAsync => queue.add_task(
            move || async move {
                l.ran(id);
                tokio::task::yield_now().await;
                panic_with_nasty_payload();
            },
            (),
        ),
        Kind::Spawner => {
            let q = queue.clone();
            queue.add_task(
                move || async move {
                    l.ran(id);
                    add(&q, &l, Kind::OkSync);
                },
                (),
            )
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_received_task_is_counted_exactly_once() {
    // Hundreds of tasks panic on purpose; only other panics are shown.
    hide_panics(&["sync panic", "async panic"]);
    let seed = std::env::var("AFTERWARD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_af7e_0a4d_0001_u64);
    let mut rng = Rng(seed);
    let mut shutdowns = 0;
    for case in 0..CASES {
        let why = format!("seed {seed}, case {case}");
        let mut builder = Runner::builder();
        if rng.chance(50) {
            builder = builder.max_concurrent_drains(1 + rng.below(3) as usize);
        }
        if rng.chance(40) {
            builder = builder.task_timeout(Duration::from_millis(1 + rng.below(4)));
        }
        if rng.chance(50) {
            builder = builder.failure_policy(FailurePolicy::StopQueue);
        }
        let runner = builder.build();

        let ledger = Ledger::new(64);
        let mut handles = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let queue = TaskQueue::new();
            for _ in 0..rng.below(7) {
                add(&queue, &ledger, random_kind(&mut rng));
            }
            handles.push(runner.spawn(queue));
        }

        let shut_down = rng.chance(20);
        if shut_down {
            shutdowns += 1;
            let deadline = Duration::from_millis(rng.below(3));
            let report = runner.shutdown(deadline).await;
            let stats = runner.stats();
            assert_eq!(report.abandoned(), stats.abandoned(), "{why}: {stats:?}");
        } else {
            runner.wait_idle().await;
        }

        let stats = runner.stats();
        let mut total = DrainReport::default();
        for handle in handles {
            total += handle.await;
        }
        assert_eq!(
            stats.tasks_received(),
            stats.accounted(),
            "{why}: {stats:?}"
        );
        assert!(ledger.max_runs() <= 1, "{why}: a task body ran twice");
        assert_eq!(
            total.total(),
            stats.tasks_received(),
            "{why}: {total:?} vs {stats:?}"
        );
        assert_eq!(total.completed(), stats.completed(), "{why}");
        assert_eq!(total.abandoned(), stats.abandoned(), "{why}");
        assert_eq!(
            (stats.drains_running(), stats.drains_waiting()),
            (0, 0),
            "{why}"
        );

        let finished = stats.completed() + stats.failed() + stats.panicked() + stats.timed_out();
        let started = ledger.bodies_started();
        if shut_down {
            // An abandoned task may have started; a counted one surely did.
            assert!(finished <= started, "{why}: {stats:?}, {started} started");
            assert!(
                started <= stats.tasks_received() - stats.skipped(),
                "{why}: {stats:?}, {started} started"
            );
        } else {
            assert_eq!(stats.abandoned(), 0, "{why}: {stats:?}");
            assert_eq!(stats.tasks_received(), ledger.created(), "{why}: {stats:?}");
            assert_eq!(finished, started, "{why}: {stats:?}");
        }
    }
    assert!(
        shutdowns > CASES / 10,
        "too few shutdown cases: {shutdowns}"
    );
}

/// Panics, but is typed `()`: a closure whose body only panics would be
/// typed `!`, which is not a task result.
fn boom(message: &str) {
    panic!("{message}");
}
