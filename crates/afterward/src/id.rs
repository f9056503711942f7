//! `TaskId`: every task's id, from the moment it is added.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::str::FromStr;

/// A task's id: 128 bits, unique to the task, given when it is added.
///
/// [`QueuedTask::id`](crate::QueuedTask::id) returns it; every log line
/// about the task carries it; a durable task keeps it as its step's id
/// ([`Step::id`](crate::durable::Step::id) with the `durable` feature), so
/// it can be looked up once the response has gone. Shown and parsed as 32
/// lowercase hex digits.
///
/// Making one costs no system call and no lock: each thread draws 64
/// random bits once (from the same source as std's `RandomState`) and
/// counts from there, so ids differ across threads, processes and machines.
///
/// # Examples
///
/// ```
/// use afterward::{TaskId, TaskQueue};
///
/// let queue = TaskQueue::new();
/// let id = queue.add_task(|| (), ()).id();
/// let shown = id.to_string();
/// assert_eq!(shown.len(), 32);
/// assert_eq!(shown.parse::<TaskId>(), Ok(id));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(u128);

thread_local! {
    /// This thread's random half of every id it makes, and the count of
    /// ids made; the half is drawn at the first id (0 until then).
    static NEXT: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

impl TaskId {
    /// A new id, different from every other: for tasks stored by other
    /// means than a queue (a backend's transactional enqueue, say).
    #[inline]
    #[allow(clippy::new_without_default)]
    pub fn new() -> TaskId {
        NEXT.with(|next| {
            let (mut prefix, count) = next.get();
            if prefix == 0 {
                prefix = random_prefix();
            }
            next.set((prefix, count.wrapping_add(1)));
            TaskId(u128::from(prefix) << 64 | u128::from(count))
        })
    }

    /// The id as a number.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// The id with this number: for ids read back from storage.
    pub fn from_u128(id: u128) -> TaskId {
        TaskId(id)
    }
}

#[cold]
fn random_prefix() -> u64 {
    let prefix = RandomState::new().hash_one(std::thread::current().id());
    // 0 means "not drawn yet".
    prefix.max(1)
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({self})")
    }
}

/// The error of parsing a [`TaskId`] from text that is not 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseTaskIdError;

impl fmt::Display for ParseTaskIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a task id is 32 hex digits")
    }
}

impl std::error::Error for ParseTaskIdError {}

impl FromStr for TaskId {
    type Err = ParseTaskIdError;

    fn from_str(s: &str) -> Result<TaskId, ParseTaskIdError> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseTaskIdError);
        }
        u128::from_str_radix(s, 16)
            .map(TaskId)
            .map_err(|_| ParseTaskIdError)
    }
}

#[cfg(test)]
mod tests {
    use super::TaskId;

    #[test]
    fn ids_are_distinct_across_threads_and_round_trip() {
        let ids: Vec<TaskId> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| (0..10_000).map(|_| TaskId::new()).collect::<Vec<_>>()))
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids[..100] {
            let shown = id.to_string();
            assert_eq!(shown.len(), 32);
            assert!(
                shown
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert_eq!(shown.parse::<TaskId>(), Ok(*id));
        }
        assert!("xyz".parse::<TaskId>().is_err());
        assert!("0".repeat(31).parse::<TaskId>().is_err());
        assert!("+".repeat(32).parse::<TaskId>().is_err());
    }
}
