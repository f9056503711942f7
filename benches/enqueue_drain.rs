//! The core path: what queuing and draining a task costs, per task, against
//! the floor of doing the same with plain boxed closures and futures.
//!
//! ```text
//! cargo bench --bench enqueue_drain [-- FILTER] [--quick] [--json PATH]
//! ```

mod support;

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::time::{Duration, Instant};

use afterward::{RunIf, Runner, TaskQueue};
use support::{Bench, Sample, allocations, net_bytes};
use tokio::runtime::Runtime;

const SIZES: [usize; 4] = [1, 10, 100, 10_000];

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type BoxFn = Box<dyn FnOnce() + Send>;
/// Queues task number `i`.
type Adder = dyn Fn(&TaskQueue, u64);

fn noop_sync() {}
fn noop_sync1(a: u64) {
    black_box(a);
}
fn noop_sync3(a: u64, b: u64, c: u64) {
    black_box((a, b, c));
}
async fn noop_async() {}

fn main() {
    let mut bench =
        Bench::from_args("enqueue_drain: per task, 21 samples per case (7 with --quick)");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for n in SIZES {
        enqueue(&mut bench, n);
        async_tasks(&mut bench, &rt, n);
        sync_tasks(&mut bench, &rt, n);
    }
    allocation_counts(&mut bench, &rt);
    waiting_queue_bytes(&mut bench);
    bench.finish();
}

/// Times only the `add_task` calls of `n` tasks, not making or dropping the
/// queue.
fn time_enqueue(bench: &Bench, n: usize, add: &Adder) -> Sample {
    timed(bench, n, || {
        let queue = TaskQueue::new();
        let start = Instant::now();
        for i in 0..n as u64 {
            add(&queue, i);
        }
        let elapsed = start.elapsed();
        // Drained unrun tasks would be logged; run them instead, untimed.
        run_untimed(&queue);
        elapsed
    })
}

fn enqueue(bench: &mut Bench, n: usize) {
    let names = ["args0", "args1", "args3", "args1+run_if", "args1+key"]
        .map(|case| format!("enqueue/{case}/{n}"));
    if !bench.wants_any(names.iter().map(String::as_str)) {
        return;
    }
    let floor = timed(bench, n, || {
        let mut tasks: Vec<BoxFn> = Vec::new();
        let start = Instant::now();
        for i in 0..n as u64 {
            tasks.push(Box::new(move || noop_sync1(i)));
        }
        let elapsed = start.elapsed();
        black_box(tasks);
        elapsed
    });
    let floor_name = format!("enqueue/floor: Vec<Box<dyn FnOnce>>/{n}");
    bench.report(&floor_name, "ns", &floor, None);
    // The QueuedTask each returns is ignored, as most callers do; the last
    // two set an option, which takes the queue's lock once more. Each task
    // of `args1+key` has a key of its own: its cost per task stays flat
    // whatever the queue's length.
    let adders: [&Adder; 5] = [
        &|q, _| {
            q.add_task(noop_sync, ());
        },
        &|q, i| {
            q.add_task(noop_sync1, (i,));
        },
        &|q, i| {
            q.add_task(noop_sync3, (i, i, i));
        },
        &|q, i| {
            q.add_task(noop_sync1, (i,)).run_if(RunIf::Success);
        },
        &|q, i| {
            q.add_task(noop_sync1, (i,)).key(i.to_string());
        },
    ];
    for (name, add) in names.iter().zip(adders) {
        if bench.wants(name) {
            let sample = time_enqueue(bench, n, add);
            bench.report(name, "ns", &sample, Some((&floor_name, &floor)));
        }
    }
}

fn async_tasks(bench: &mut Bench, rt: &Runtime, n: usize) {
    let names = ["drain", "drain+tracing", "runner", "runner+timeout"]
        .map(|case| format!("async/{case}/{n}"));
    if !bench.wants_any(names.iter().map(String::as_str)) {
        return;
    }
    let floor_name = format!("async/floor: Vec<Pin<Box<dyn Future>>>/{n}");
    let floor = || {
        rt.block_on(async {
            let mut tasks: Vec<BoxFuture> = Vec::with_capacity(0);
            for _ in 0..n {
                tasks.push(Box::pin(noop_async()));
            }
            for task in tasks {
                task.await;
            }
        });
    };
    let runner = rt.block_on(async { Runner::new() });
    let timeout_runner = rt.block_on(async {
        Runner::builder()
            .task_timeout(Duration::from_secs(60))
            .build()
    });
    // Each case alternates with the floor, sample by sample: allocator state
    // and machine drift then weigh on both alike.
    // (name, case, whether a tracing subscriber is installed throughout)
    let cases: [(&String, &dyn Fn(), bool); 4] = [
        (&names[0], &|| queue_and_drain(rt, n, add_async), false),
        (&names[1], &|| queue_and_drain(rt, n, add_async), true),
        (
            &names[2],
            &|| queue_and_spawn(rt, &runner, n, add_async),
            false,
        ),
        (
            &names[3],
            &|| queue_and_spawn(rt, &timeout_runner, n, add_async),
            false,
        ),
    ];
    let mut floor_reported = false;
    for (name, case, traced) in cases {
        if !bench.wants(name) {
            continue;
        }
        let (floor_samples, case_samples) = if traced {
            with_subscriber(|| bench.time_paired(n, floor, case))
        } else {
            bench.time_paired(n, floor, case)
        };
        if !floor_reported {
            bench.report(&floor_name, "ns", &Sample::new(floor_samples.clone()), None);
            floor_reported = true;
        }
        bench.report_paired(name, "ns", &case_samples, (&floor_name, &floor_samples));
    }
}

fn sync_tasks(bench: &mut Bench, rt: &Runtime, n: usize) {
    let drain_name = format!("sync/drain/{n}");
    let traced_name = format!("sync/drain+tracing/{n}");
    let runner_name = format!("sync/runner+timeout/{n}");
    if !bench.wants_any([
        drain_name.as_str(),
        traced_name.as_str(),
        runner_name.as_str(),
    ]) {
        return;
    }
    let floor = bench.time(n, || {
        let mut tasks: Vec<BoxFn> = Vec::with_capacity(0);
        for _ in 0..n {
            tasks.push(Box::new(noop_sync));
        }
        for task in tasks {
            task();
        }
    });
    let floor_name = format!("sync/floor: Vec<Box<dyn FnOnce>>/{n}");
    bench.report(&floor_name, "ns", &floor, None);

    let naive = bench.time(n, || {
        rt.block_on(async {
            let mut tasks: Vec<BoxFn> = Vec::with_capacity(0);
            for _ in 0..n {
                tasks.push(Box::new(noop_sync));
            }
            for task in tasks {
                tokio::task::spawn_blocking(task).await.unwrap();
            }
        });
    });
    let naive_name = format!("sync/naive: spawn_blocking each/{n}");
    bench.report(&naive_name, "ns", &naive, Some((&floor_name, &floor)));

    if bench.wants(&drain_name) {
        let drain = bench.time(n, || {
            queue_and_drain(rt, n, add_sync);
        });
        bench.report(
            &format!("sync/drain/{n}"),
            "ns",
            &drain,
            Some((&naive_name, &naive)),
        );
        bench.report(
            &format!("sync/drain vs floor/{n}"),
            "ns",
            &drain,
            Some((&floor_name, &floor)),
        );
    }
    if bench.wants(&traced_name) {
        let traced = with_subscriber(|| {
            bench.time(n, || {
                queue_and_drain(rt, n, add_sync);
            })
        });
        bench.report(&traced_name, "ns", &traced, Some((&naive_name, &naive)));
    }
    if !bench.wants(&runner_name) {
        return;
    }
    let timeout_runner = rt.block_on(async {
        Runner::builder()
            .task_timeout(Duration::from_secs(60))
            .build()
    });
    let sample = bench.time(n, || {
        queue_and_spawn(rt, &timeout_runner, n, add_sync);
    });
    bench.report(
        &format!("sync/runner+timeout/{n}"),
        "ns",
        &sample,
        Some((&naive_name, &naive)),
    );
}

/// Allocations per task, counted rather than timed.
fn allocation_counts(bench: &mut Bench, rt: &Runtime) {
    if !bench.wants_any(["alloc/enqueue", "alloc/drain"]) {
        return;
    }
    const N: usize = 1000;
    let per_task = |count: usize| Sample::new(vec![count as f64 / N as f64]);
    let (_, floor) = allocations(|| {
        let mut tasks: Vec<BoxFn> = Vec::with_capacity(N);
        for i in 0..N as u64 {
            tasks.push(Box::new(move || noop_sync1(i)));
        }
        black_box(tasks)
    });
    let floor = per_task(floor);
    let floor_name = "alloc/floor: Box<dyn FnOnce> per task";
    bench.report(floor_name, "allocs", &floor, None);
    let count_enqueue = |add: &dyn Fn(&TaskQueue, u64)| {
        let queue = TaskQueue::new();
        let (_, count) = allocations(|| {
            for i in 0..N as u64 {
                add(&queue, i);
            }
        });
        run_untimed(&queue);
        per_task(count)
    };
    let cases: [(&str, &Adder); 5] = [
        ("args0", &|q, _| {
            q.add_task(noop_sync, ());
        }),
        ("args1", &|q, i| {
            q.add_task(noop_sync1, (i,));
        }),
        ("args3", &|q, i| {
            q.add_task(noop_sync3, (i, i, i));
        }),
        ("args1+run_if", &|q, i| {
            q.add_task(noop_sync1, (i,)).run_if(RunIf::Success);
        }),
        ("args1+name", &|q, i| {
            q.add_task(noop_sync1, (i,)).name("named");
        }),
    ];
    let cases = cases.map(|(name, add)| (name, count_enqueue(add)));
    for (name, sample) in cases {
        bench.report(
            &format!("alloc/enqueue {name} per task"),
            "allocs",
            &sample,
            Some((floor_name, &floor)),
        );
    }
    for (kind, add) in [("async", add_async as fn(&TaskQueue)), ("sync", add_sync)] {
        let queue = TaskQueue::new();
        for _ in 0..N {
            add(&queue);
        }
        let (_, count) = allocations(|| rt.block_on(queue.drain()));
        bench.report(
            &format!("alloc/drain {kind} per task"),
            "allocs",
            &per_task(count),
            Some((floor_name, &floor)),
        );
    }
}

/// What a queue waiting for a drain slot costs the runner, beyond the
/// queue and its tasks: 10,000 one-task queues handed to a runner whose
/// only slot is taken, the bytes allocated by the hand-offs counted.
fn waiting_queue_bytes(bench: &mut Bench) {
    const N: usize = 10_000;
    let name = "waiting/bytes per waiting queue";
    let queue_name = "waiting/bytes of a queue with one task";
    if !bench.wants_any([name, queue_name]) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let runner = rt.block_on(async {
        Runner::builder()
            .max_concurrent_drains(1)
            .max_backlog(N + 1)
            .build()
    });
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (started, is_started) = std::sync::mpsc::channel();
    let holder = TaskQueue::new();
    holder.add_task(
        move || {
            started.send(()).unwrap();
            released.recv().unwrap();
        },
        (),
    );
    runner.spawn(holder);
    is_started.recv().unwrap();

    let (queues, queue_bytes) = net_bytes(|| {
        (0..N)
            .map(|_| {
                let queue = TaskQueue::new();
                queue.add_task(noop_async, ());
                queue
            })
            .collect::<Vec<_>>()
    });
    let (_, waiting_bytes) = net_bytes(|| {
        for queue in queues {
            drop(runner.spawn(queue));
        }
    });
    assert_eq!(runner.stats().drains_waiting(), N);
    bench.report(
        queue_name,
        "B",
        &Sample::new(vec![queue_bytes as f64 / N as f64]),
        None,
    );
    bench.report(
        name,
        "B",
        &Sample::new(vec![waiting_bytes as f64 / N as f64]),
        None,
    );
    release.send(()).unwrap();
    rt.block_on(runner.wait_idle());
}

fn add_async(queue: &TaskQueue) {
    queue.add_task(noop_async, ());
}

fn add_sync(queue: &TaskQueue) {
    queue.add_task(noop_sync, ());
}

/// Queues `n` tasks with `add`, then drains them on `rt`.
fn queue_and_drain(rt: &Runtime, n: usize, add: fn(&TaskQueue)) {
    rt.block_on(async {
        let queue = TaskQueue::new();
        for _ in 0..n {
            add(&queue);
        }
        queue.drain().await;
    });
}

/// Queues `n` tasks with `add`, then has `runner` drain them.
fn queue_and_spawn(rt: &Runtime, runner: &Runner, n: usize, add: fn(&TaskQueue)) {
    rt.block_on(async {
        let queue = TaskQueue::new();
        for _ in 0..n {
            add(&queue);
        }
        runner.spawn(queue).await;
    });
}

/// Times `op`, which measures its own duration for `n` operations.
fn timed(bench: &Bench, n: usize, mut op: impl FnMut() -> Duration) -> Sample {
    let samples = if bench.quick { 7 } else { 21 };
    let mut values = Vec::with_capacity(samples);
    // Enough rounds per sample that n = 1 is not all timer noise.
    let rounds = (10_000 / n).max(1);
    for _ in 0..rounds {
        op();
    }
    for _ in 0..samples {
        let mut total = Duration::ZERO;
        for _ in 0..rounds {
            total += op();
        }
        values.push(total.as_nanos() as f64 / (rounds * n) as f64);
    }
    Sample::new(values)
}

/// Runs a queue's tasks outside the timed part.
fn run_untimed(queue: &TaskQueue) {
    thread_local! {
        static RT: Runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    }
    RT.with(|rt| rt.block_on(queue.drain()));
}

/// Runs `f` with a `tracing` subscriber that formats every enabled event and
/// span (at INFO) into a sink, as a service with logging on would.
fn with_subscriber<R>(f: impl FnOnce() -> R) -> R {
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, f)
}
