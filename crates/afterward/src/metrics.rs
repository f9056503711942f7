//! Metrics through the `metrics` facade (feature `metrics`): every count of
//! the runner is also a series, so the conservation law holds over them.
//!
//! | series | kind | labels |
//! |---|---|---|
//! | `afterward_tasks_received_total` | counter | `task` |
//! | `afterward_tasks_total` | counter | `task`, `outcome` |
//! | `afterward_task_duration_seconds` | histogram | `task`, `outcome` (tasks that started) |
//! | `afterward_task_wait_seconds` | histogram | `task` (from the queue's hand-off to a runner to the task's start) |
//! | `afterward_drains_running`, `afterward_drains_waiting`, `afterward_backlog_tasks` | gauge | |
//!
//! Without the feature every function here is empty. With it, a task's
//! keys are made once per task name and thread and kept, so emitting costs
//! no allocation: without a recorder installed, a few calls into the
//! facade's no-op recorder.

/// Whether metrics are emitted: work done only for them is skipped
/// otherwise.
pub(crate) const ENABLED: bool = cfg!(feature = "metrics");

#[cfg(feature = "metrics")]
pub(crate) use self::on::*;

#[cfg(not(feature = "metrics"))]
pub(crate) use self::off::*;

#[cfg(not(feature = "metrics"))]
mod off {
    use crate::counts::TaskOutcome;
    use crate::task::TaskName;

    /// When something started, for a duration; nothing to measure here.
    #[derive(Clone, Copy, Debug, Default)]
    pub(crate) struct Started;

    /// When a queue was handed to a runner; nothing to measure here.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Handed;

    impl Handed {
        pub(crate) const NOT_YET: Handed = Handed;
    }

    /// Only a durable task run in place of its failed hand-off starts
    /// outside `waited`.
    #[cfg_attr(not(feature = "durable"), allow(dead_code))]
    #[inline(always)]
    pub(crate) fn now() -> Started {
        Started
    }
    #[inline(always)]
    pub(crate) fn handed() -> Handed {
        Handed
    }
    #[inline(always)]
    pub(crate) fn received(_: &TaskName) {}
    #[inline(always)]
    pub(crate) fn ended(_: &TaskName, _: TaskOutcome) {}
    #[inline(always)]
    pub(crate) fn ran(_: &TaskName, _: TaskOutcome, _: Started) {}
    #[inline(always)]
    pub(crate) fn waited(_: impl FnOnce() -> TaskName, _: Handed) -> Started {
        Started
    }
    #[inline(always)]
    pub(crate) fn drains(_: usize, _: usize) {}
    #[inline(always)]
    pub(crate) fn backlog(_: usize) {}
}

#[cfg(feature = "metrics")]
mod on {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::hash::BuildHasherDefault;
    use std::time::Instant;

    use metrics::{Key, Label, Level, Metadata};

    use crate::counts::TaskOutcome;
    use crate::task::TaskName;

    static METADATA: Metadata<'static> =
        Metadata::new("afterward", Level::INFO, Some(module_path!()));

    /// When something started, for a duration.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Started(Instant);

    /// When a queue was handed to a runner, if it was: a task's wait is
    /// measured from it. A queue drained directly has no wait to measure,
    /// and a queue that never gets a task costs no clock read.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Handed(Option<Instant>);

    impl Handed {
        pub(crate) const NOT_YET: Handed = Handed(None);
    }

    /// Only a durable task run in place of its failed hand-off starts
    /// outside `waited`.
    #[cfg_attr(not(feature = "durable"), allow(dead_code))]
    #[inline]
    pub(crate) fn now() -> Started {
        Started(Instant::now())
    }

    #[inline]
    pub(crate) fn handed() -> Handed {
        Handed(Some(Instant::now()))
    }

    /// The keys of one task name's series, made once.
    struct Keys {
        received: Key,
        ended: Vec<Key>,
        duration: Vec<Key>,
        wait: Key,
    }

    impl Keys {
        fn new(task: &str) -> Keys {
            let task = || Label::new("task", task.to_owned());
            let with_outcome = |name: &'static str| {
                TaskOutcome::ALL
                    .iter()
                    .map(|outcome| {
                        Key::from_parts(name, vec![task(), Label::new("outcome", outcome.label())])
                    })
                    .collect()
            };
            Keys {
                received: Key::from_parts("afterward_tasks_received_total", vec![task()]),
                ended: with_outcome("afterward_tasks_total"),
                duration: with_outcome("afterward_task_duration_seconds"),
                wait: Key::from_parts("afterward_task_wait_seconds", vec![task()]),
            }
        }
    }

    /// Hashes the address and length of a `'static` name with two
    /// multiplications.
    #[derive(Default)]
    struct Quick(u64);

    impl std::hash::Hasher for Quick {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.write_u64(u64::from(b));
            }
        }
        fn write_u64(&mut self, n: u64) {
            self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        fn write_usize(&mut self, n: usize) {
            self.write_u64(n as u64);
        }
    }

    /// This thread's keys, by task name: a `'static` name (a function's type
    /// name, or one given as `&'static str`) by where it is and which kind
    /// it is, so that a lookup neither reads nor shortens it; a name given
    /// as a `String` by its text. The last `'static` name looked up is
    /// kept apart: a task is looked up three times, and a queue's tasks
    /// often share a name.
    #[derive(Default)]
    struct Cache {
        last: Option<(At, &'static Keys)>,
        at: HashMap<At, &'static Keys, BuildHasherDefault<Quick>>,
        text: HashMap<Box<str>, &'static Keys>,
    }

    /// A `'static` name's address, length, and whether it is a type name.
    type At = (usize, usize, bool);

    impl Cache {
        fn get(&mut self, name: &TaskName) -> &'static Keys {
            let made = || -> &'static Keys { Box::leak(Box::new(Keys::new(name.short()))) };
            match name {
                TaskName::Fn(text) | TaskName::Static(text) => {
                    let fn_name = matches!(name, TaskName::Fn(_));
                    let at = (text.as_ptr() as usize, text.len(), fn_name);
                    match self.last {
                        Some((last, keys)) if last == at => keys,
                        _ => {
                            let keys = *self.at.entry(at).or_insert_with(made);
                            self.last = Some((at, keys));
                            keys
                        }
                    }
                }
                TaskName::Shared(text) => match self.text.get(&**text) {
                    Some(&found) => found,
                    None => self.text.entry(text.as_ref().into()).or_insert_with(made),
                },
            }
        }
    }

    thread_local! {
        static KEYS: RefCell<Cache> = RefCell::new(Cache::default());
    }

    /// Calls `f` with the keys of `name`'s series. They are leaked, once
    /// per task name and thread: names are a small, fixed set (the docs say
    /// so), and a recorder keeps its series anyway.
    fn with_keys(name: &TaskName, f: impl FnOnce(&Keys)) {
        f(KEYS.with(|keys| keys.borrow_mut().get(name)));
    }

    pub(crate) fn received(name: &TaskName) {
        with_keys(name, |keys| {
            metrics::with_recorder(|r| r.register_counter(&keys.received, &METADATA).increment(1));
        });
    }

    pub(crate) fn ended(name: &TaskName, outcome: TaskOutcome) {
        with_keys(name, |keys| {
            let key = &keys.ended[outcome as usize];
            metrics::with_recorder(|r| r.register_counter(key, &METADATA).increment(1));
        });
    }

    /// The seconds from one instant to another, or to now, worked out only
    /// if a histogram records them: the facade's no-op recorder does not.
    struct Seconds(Instant, Option<Instant>);

    impl metrics::IntoF64 for Seconds {
        fn into_f64(self) -> f64 {
            let end = self.1.unwrap_or_else(Instant::now);
            end.saturating_duration_since(self.0).as_secs_f64()
        }
    }

    /// A task that started and ended: counted, and its duration.
    pub(crate) fn ran(name: &TaskName, outcome: TaskOutcome, started: Started) {
        let took = Seconds(started.0, None);
        with_keys(name, |keys| {
            let (ended, duration) = (
                &keys.ended[outcome as usize],
                &keys.duration[outcome as usize],
            );
            metrics::with_recorder(|r| {
                r.register_counter(ended, &METADATA).increment(1);
                r.register_histogram(duration, &METADATA).record(took);
            });
        });
    }

    /// A task starts now, after waiting since its queue's hand-off at
    /// `handed`, if any; returns when it started. The task's name is made
    /// only if the wait is recorded.
    pub(crate) fn waited(name: impl FnOnce() -> TaskName, handed: Handed) -> Started {
        let now = Instant::now();
        if let Handed(Some(handed)) = handed {
            let waited = Seconds(handed, Some(now));
            with_keys(&name(), |keys| {
                metrics::with_recorder(|r| {
                    r.register_histogram(&keys.wait, &METADATA).record(waited);
                });
            });
        }
        Started(now)
    }

    static RUNNING: Key = Key::from_static_name("afterward_drains_running");
    static WAITING: Key = Key::from_static_name("afterward_drains_waiting");
    static BACKLOG: Key = Key::from_static_name("afterward_backlog_tasks");

    pub(crate) fn drains(running: usize, waiting: usize) {
        metrics::with_recorder(|r| {
            r.register_gauge(&RUNNING, &METADATA).set(running as f64);
            r.register_gauge(&WAITING, &METADATA).set(waiting as f64);
        });
    }

    pub(crate) fn backlog(tasks: usize) {
        metrics::with_recorder(|r| r.register_gauge(&BACKLOG, &METADATA).set(tasks as f64));
    }
}
