//! `add_task`: argument capture, arity, and where each kind of task runs.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::Duration;

use afterward::TaskQueue;

type Log = Arc<Mutex<Vec<String>>>;

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn push(log: &Log, line: impl Into<String>) {
    log.lock().unwrap().push(line.into());
}

#[tokio::test]
async fn arguments_are_moved_in_at_add_time() {
    let seen = log();
    let queue = TaskQueue::new();

    let mut email = String::from("ada@example.com");
    let mut attempt = 1_u32;
    queue.add_task(
        |seen: Log, email: String, attempt: u32| push(&seen, format!("{email} #{attempt}")),
        (seen.clone(), email.clone(), attempt),
    );
    // Reassigning the caller's variables after add_task must not reach the task.
    email = String::from("mallory@example.com");
    attempt += 1;
    assert_eq!((email.as_str(), attempt), ("mallory@example.com", 2));

    queue.drain().await;
    assert_eq!(*seen.lock().unwrap(), ["ada@example.com #1"]);
}

#[tokio::test]
async fn shared_handles_stay_shared() {
    let items: Arc<Mutex<Vec<u32>>> = Arc::new(Mutex::new(vec![1]));
    let seen = log();
    let queue = TaskQueue::new();
    queue.add_task(
        |items: Arc<Mutex<Vec<u32>>>, seen: Log| {
            push(&seen, format!("{:?}", items.lock().unwrap()));
        },
        (items.clone(), seen.clone()),
    );
    // The task holds the same Vec, so this mutation is what it will see.
    items.lock().unwrap().push(2);

    queue.drain().await;
    assert_eq!(*seen.lock().unwrap(), ["[1, 2]"]);
}

fn zero(log: Log) {
    push(&log, "0");
}
fn one(log: Log, a: u8) {
    push(&log, format!("{a}"));
}
#[allow(clippy::too_many_arguments)]
fn eight(log: Log, a: u8, b: u16, c: u32, d: u64, e: i8, f: i16, g: &'static str) {
    push(&log, format!("{a}{b}{c}{d}{e}{f}{g}"));
}
#[allow(clippy::too_many_arguments)]
async fn eight_async(log: Log, a: u8, b: u16, c: u32, d: u64, e: i8, f: i16, g: String) {
    push(&log, format!("{a}{b}{c}{d}{e}{f}{g}"));
}
#[allow(clippy::too_many_arguments)]
fn twelve(
    log: Log,
    a: u8,
    b: u8,
    c: u8,
    d: u8,
    e: u8,
    f: u8,
    g: u8,
    h: u8,
    i: u8,
    j: u8,
    k: u8,
) -> Result<(), String> {
    push(
        &log,
        format!("{}", a + b + c + d + e + f + g + h + i + j + k),
    );
    Ok(())
}

#[tokio::test]
async fn every_arity_from_none_to_twelve() {
    let seen = log();
    let queue = TaskQueue::new();
    let s = seen.clone();
    queue.add_task(move || push(&s, "no args"), ());
    queue.add_task(zero, (seen.clone(),));
    queue.add_task(one, (seen.clone(), 1));
    queue.add_task(eight, (seen.clone(), 1, 2, 3, 4, 5, 6, "7"));
    queue.add_task(
        eight_async,
        (seen.clone(), 1, 2, 3, 4, 5, 6, "8".to_owned()),
    );
    queue.add_task(twelve, (seen.clone(), 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1));

    let report = queue.drain().await;
    assert_eq!(report.completed(), 6);
    assert_eq!(
        *seen.lock().unwrap(),
        ["no args", "0", "1", "1234567", "1234568", "11"]
    );
}

#[tokio::test]
async fn every_kind_of_function_and_return_type() {
    let seen = log();
    let queue = TaskQueue::new();

    fn sync_unit(log: Log) {
        push(&log, "sync ()");
    }
    fn sync_result(log: Log) -> Result<u64, std::io::Error> {
        push(&log, "sync Result");
        Ok(1)
    }
    async fn async_unit(log: Log) {
        push(&log, "async ()");
    }
    async fn async_result(log: Log) -> Result<&'static str, String> {
        push(&log, "async Result");
        Ok("fine")
    }
    queue.add_task(sync_unit, (seen.clone(),));
    queue.add_task(sync_result, (seen.clone(),));
    queue.add_task(async_unit, (seen.clone(),));
    queue.add_task(async_result, (seen.clone(),));
    let s = seen.clone();
    queue.add_task(move || push(&s, "sync closure"), ());
    let s = seen.clone();
    queue.add_task(move || async move { push(&s, "async block closure") }, ());
    let s = seen.clone();
    queue.add_task(async move || push(&s, "async closure"), ());
    queue.add_task(
        |log: Log, n: i32| async move {
            push(&log, format!("async closure with args {n}"));
            Ok::<_, std::fmt::Error>(())
        },
        (seen.clone(), 5),
    );

    let report = queue.drain().await;
    assert_eq!(report.completed(), 8, "{report:?}");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "sync ()",
            "sync Result",
            "async ()",
            "async Result",
            "sync closure",
            "async block closure",
            "async closure",
            "async closure with args 5",
        ]
    );
}

#[tokio::test]
async fn a_closure_returning_a_future_is_called_at_drain_time_not_at_add_time() {
    let seen = log();
    let queue = TaskQueue::new();
    let s = seen.clone();
    queue.add_task(
        move || {
            push(&s, "closure body");
            async {}
        },
        (),
    );
    push(&seen, "after add_task");
    queue.drain().await;
    assert_eq!(*seen.lock().unwrap(), ["after add_task", "closure body"]);
}

#[tokio::test(flavor = "current_thread")]
async fn sync_tasks_run_off_the_runtime_thread_and_async_tasks_on_it() {
    let runtime_thread = thread::current().id();
    let (tx, rx) = mpsc::channel::<(&'static str, ThreadId)>();
    let queue = TaskQueue::new();
    let t = tx.clone();
    queue.add_task(
        move || t.send(("sync", thread::current().id())).unwrap(),
        (),
    );
    queue.add_task(
        move || async move { tx.send(("async", thread::current().id())).unwrap() },
        (),
    );
    queue.drain().await;

    let (kind, sync_thread) = rx.recv().unwrap();
    assert_eq!(kind, "sync");
    assert_ne!(
        sync_thread, runtime_thread,
        "a sync task ran on the runtime's only worker thread"
    );
    let (kind, async_thread) = rx.recv().unwrap();
    assert_eq!(kind, "async");
    assert_eq!(async_thread, runtime_thread);
}

/// A sync task that blocks does not stall the runtime: on a single-threaded
/// runtime, the blocked task waits for a message that only an async task on
/// that one worker can send. Were the sync task on the worker, the message
/// could never be sent and the task would give up after its 10 s limit.
#[tokio::test(flavor = "current_thread")]
async fn a_blocking_sync_task_does_not_stall_async_work() {
    let (ping_tx, ping_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<bool>();
    let queue = TaskQueue::new();
    queue.add_task(
        move || {
            // Blocks, as file I/O or SMTP would, for 200 ms and then until
            // the async side answers.
            thread::sleep(Duration::from_millis(200));
            let answered = ping_rx.recv_timeout(Duration::from_secs(10)).is_ok();
            done_tx.send(answered).unwrap();
        },
        (),
    );
    let drain = tokio::spawn(async move { queue.drain().await });
    // Runs on the only worker while the sync task blocks.
    tokio::task::yield_now().await;
    ping_tx.send(()).unwrap();
    assert!(done_rx.await.unwrap(), "the async side could not run");
    assert_eq!(drain.await.unwrap().completed(), 1);
}

#[tokio::test]
async fn debug_shows_length_and_task_names() {
    fn send_welcome_email() {}
    async fn append_audit_log() {}
    let queue = TaskQueue::new();
    queue.add_task(send_welcome_email, ());
    queue.add_task(append_audit_log, ());
    let debug = format!("{queue:?}");
    assert_eq!(
        debug,
        r#"TaskQueue { len: 2, tasks: ["send_welcome_email", "append_audit_log"] }"#
    );
    assert_eq!(queue.len(), 2);
    let clone = queue.clone();
    clone.drain().await;
    assert!(queue.is_empty(), "clones are the same queue");
}
