//! The log tasks write to, and the marks that tell when a task's fate is
//! settled.

use std::sync::Arc;

use afterward::TaskQueue;
use tokio::sync::watch;

use super::within;

/// What happened, in order: tasks write to it, and so do the marks they
/// carry, when a task's fate is settled (run, or dropped unrun).
#[derive(Clone)]
pub struct Log(Arc<watch::Sender<Vec<String>>>);

impl Default for Log {
    fn default() -> Log {
        Log(Arc::new(watch::Sender::new(Vec::new())))
    }
}

impl Log {
    pub fn write(&self, line: impl Into<String>) {
        let line = line.into();
        self.0.send_modify(|lines| lines.push(line));
    }

    pub fn clear(&self) {
        self.0.send_modify(Vec::clear);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.borrow().clone()
    }

    /// The lines other than the marks' "settled ...".
    pub fn events(&self) -> Vec<String> {
        let lines = self.0.borrow();
        lines
            .iter()
            .filter(|line| !line.starts_with("settled "))
            .cloned()
            .collect()
    }

    /// Waits until `count` lines start with `prefix`.
    pub async fn wait_for(&self, prefix: &str, count: usize) {
        let mut rx = self.0.subscribe();
        let seen =
            rx.wait_for(|lines| lines.iter().filter(|l| l.starts_with(prefix)).count() >= count);
        within(seen).await.unwrap();
    }

    /// Waits until `count` tasks were settled: each was run, or dropped unrun
    /// and counted.
    pub async fn settled(&self, count: usize) {
        self.wait_for("settled ", count).await;
    }

    /// Writes "settled {label}" when dropped.
    pub fn mark(&self, label: &'static str) -> Mark {
        Mark {
            log: self.clone(),
            label,
        }
    }
}

/// Carried by a task, so that the log learns when its fate is settled.
pub struct Mark {
    log: Log,
    label: &'static str,
}

impl Drop for Mark {
    fn drop(&mut self) {
        self.log.write(format!("settled {}", self.label));
    }
}

/// Queues a sync task named `label` that writes "ran {label}", carrying a
/// mark.
pub fn add_logged<'q>(
    tasks: &'q TaskQueue,
    log: &Log,
    label: &'static str,
) -> afterward::QueuedTask<'q> {
    let mark = log.mark(label);
    let log = log.clone();
    let task = move || {
        let _mark = mark;
        log.write(format!("ran {label}"));
    };
    tasks.add_task(task, ()).name(label)
}
