//! The tasks of a queue, in order, reachable by position and by key.
//!
//! A task's position is its place in insertion order (1 for the first task
//! ever added). The list keeps one slot per position from its oldest
//! waiting task on, so finding, changing or removing a task by position is
//! O(1): a removed task leaves an empty slot behind, skipped when the front
//! reaches it. At most one waiting task has a given key (a newer one
//! replaces it), and an index from keys to positions finds it in O(1) too.
//! The oldest task has a slot of its own, so a queue of one task allocates
//! nothing but the task.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::task::Task;

#[derive(Default)]
pub(crate) struct TaskList {
    /// The oldest waiting task, at position `first`: kept out of `rest` so
    /// that a queue of one task, the usual request, needs no buffer. `None`
    /// only when the list is empty.
    head: Option<Task>,
    /// The slots of positions `first + 1 ..= added`; `None` where a task
    /// left from the middle.
    rest: VecDeque<Option<Task>>,
    /// The position of `head`.
    first: usize,
    /// Tasks in the list.
    len: usize,
    /// Positions given so far: the position of the newest task.
    added: usize,
    /// The position of the waiting task with each key; made at the first key.
    keys: Option<HashMap<Arc<str>, usize>>,
}

impl TaskList {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The position of the newest task ever added, kept or not.
    pub(crate) fn newest(&self) -> usize {
        self.added
    }

    /// Adds `task` at the end and gives it the next position, which it
    /// returns. A task that carries a key is not looked up: only
    /// [`set_key`](TaskList::set_key) and [`append`](TaskList::append) key
    /// tasks.
    #[inline]
    pub(crate) fn push(&mut self, mut task: Task) -> usize {
        self.added += 1;
        let position = self.added;
        task.header_mut().position = position;
        if self.len == 0 {
            self.first = position;
            self.head = Some(task);
        } else {
            if self.rest.capacity() == 0 {
                // Room for a request's usual tasks at once, 128 bytes,
                // rather than growing through 4 and 8 first.
                self.rest.reserve_exact(16);
            }
            self.rest.push_back(Some(task));
        }
        self.len += 1;
        position
    }

    /// Gives `task` the next position without keeping it: a task that
    /// arrives and is turned away still has its place in the order, for its
    /// log line.
    pub(crate) fn number(&mut self, task: &mut Task) -> usize {
        self.added += 1;
        task.header_mut().position = self.added;
        if self.len == 0 {
            self.first = self.added + 1;
        } else {
            self.rest.push_back(None);
        }
        self.added
    }

    /// Moves every task of `other` to the end of this list, in order, with
    /// new positions. Keys keep their rule across the two: a task of
    /// `other` replaces a task of this list with its key, and the tasks
    /// replaced are returned.
    pub(crate) fn append(&mut self, mut other: TaskList) -> Vec<Task> {
        let mut replaced = Vec::new();
        while let Some(task) = other.pop_front() {
            let key = task.key().cloned();
            let position = self.push(task);
            if let Some(key) = key {
                replaced.extend(self.index_key(position, key));
            }
        }
        replaced
    }

    /// The oldest task, left in place.
    #[inline]
    pub(crate) fn front(&self) -> Option<&Task> {
        self.head.as_ref()
    }

    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<Task> {
        let task = self.head.take()?;
        self.len -= 1;
        self.first += 1;
        if task.key().is_some() {
            self.unindex(&task);
        }
        if self.len > 0 || !self.rest.is_empty() {
            self.refill();
        }
        Some(task)
    }

    /// Moves the next task of `rest` into `head`, past the slots left
    /// empty, after `head` was taken.
    fn refill(&mut self) {
        while let Some(slot) = self.rest.pop_front() {
            match slot {
                Some(task) => {
                    self.head = Some(task);
                    return;
                }
                None => self.first += 1,
            }
        }
        self.first = self.added + 1;
    }

    /// The task at `position`, if it is waiting.
    pub(crate) fn get_mut(&mut self, position: usize) -> Option<&mut Task> {
        let index = position.checked_sub(self.first)?;
        match index {
            0 => self.head.as_mut(),
            _ => self.rest.get_mut(index - 1)?.as_mut(),
        }
    }

    /// Takes out the task at `position`, if it is waiting.
    pub(crate) fn remove(&mut self, position: usize) -> Option<Task> {
        let index = position.checked_sub(self.first)?;
        if index == 0 {
            return self.pop_front();
        }
        let task = self.rest.get_mut(index - 1)?.take()?;
        self.len -= 1;
        self.unindex(&task);
        Some(task)
    }

    /// Gives the task at `position` a key. The newest task with a key wins:
    /// if an older one waits with it, that one is taken out and returned; if
    /// a newer one does, the task at `position` is. Nothing happens to a
    /// task that is not waiting.
    pub(crate) fn set_key(&mut self, position: usize, key: Arc<str>) -> Option<Task> {
        let task = self.get_mut(position)?;
        if task.key() == Some(&key) {
            return None;
        }
        let previous = task.key().cloned();
        task.set_key(key.clone());
        if let (Some(previous), Some(keys)) = (previous, self.keys.as_mut()) {
            if keys.get(&previous) == Some(&position) {
                keys.remove(&previous);
            }
        }
        self.index_key(position, key)
    }

    /// Takes out the waiting task with `key`, if any.
    pub(crate) fn take_key(&mut self, key: &str) -> Option<Task> {
        let position = *self.keys.as_ref()?.get(key)?;
        self.remove(position)
    }

    /// Records the task at `position` under `key`, and takes out whichever
    /// of it and the task already under `key` is older.
    fn index_key(&mut self, position: usize, key: Arc<str>) -> Option<Task> {
        let keys = self.keys.get_or_insert_with(HashMap::default);
        match keys.get(&key).copied() {
            None => {
                keys.insert(key, position);
                None
            }
            Some(other) if other == position => None,
            Some(other) if other < position => {
                keys.insert(key, position);
                self.remove(other)
            }
            Some(_) => self.remove(position),
        }
    }

    /// Forgets the key of `task`, which left the list.
    #[cold]
    fn unindex(&mut self, task: &Task) {
        if let (Some(key), Some(keys)) = (task.key(), self.keys.as_mut()) {
            if keys.get(key) == Some(&task.position()) {
                keys.remove(key);
            }
        }
    }

    /// Every task, oldest first, leaving the list empty.
    pub(crate) fn take_all(&mut self) -> Vec<Task> {
        let mut all = Vec::with_capacity(self.len);
        all.extend(self.head.take());
        all.extend(self.rest.drain(..).flatten());
        self.len = 0;
        self.first = self.added + 1;
        self.keys = None;
        all
    }

    /// Every task, as a list of its own, leaving this one empty; tasks
    /// added to this list later keep their places after them.
    pub(crate) fn take_list(&mut self) -> TaskList {
        let taken = TaskList {
            head: self.head.take(),
            rest: std::mem::take(&mut self.rest),
            first: self.first,
            len: self.len,
            added: self.added,
            keys: self.keys.take(),
        };
        self.len = 0;
        self.first = self.added + 1;
        taken
    }

    /// Takes out the tasks for which `remove` holds, oldest first, keeping
    /// the order and positions of the others.
    #[cfg(any(feature = "durable", test))]
    pub(crate) fn take_where(&mut self, mut remove: impl FnMut(&Task) -> bool) -> Vec<Task> {
        let head_goes = self.head.as_ref().is_some_and(&mut remove);
        let mut removed = Vec::new();
        for slot in self.rest.iter_mut() {
            if slot.as_ref().is_some_and(&mut remove) {
                removed.extend(slot.take());
            }
        }
        self.len -= removed.len();
        for task in &removed {
            self.unindex(task);
        }
        if head_goes {
            if let Some(head) = self.pop_front() {
                removed.insert(0, head);
            }
        }
        removed
    }

    /// Calls `f` on every task, oldest first.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Task)) {
        if let Some(head) = &self.head {
            f(head);
        }
        self.rest.iter().flatten().for_each(f);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tracing::Span;

    use super::TaskList;
    use crate::task::{Task, task_of};

    fn task() -> Task {
        task_of(|| (), (), Span::none())
    }

    fn positions(list: &TaskList) -> Vec<usize> {
        let mut all = Vec::new();
        list.for_each(|task| all.push(task.position()));
        all
    }

    #[test]
    fn first_in_first_out_with_holes() {
        let mut list = TaskList::default();
        for _ in 0..6 {
            list.push(task());
        }
        assert_eq!(list.remove(3).map(|t| t.position()), Some(3));
        assert_eq!(list.remove(1).map(|t| t.position()), Some(1));
        assert!(list.remove(1).is_none());
        assert_eq!(positions(&list), [2, 4, 5, 6]);
        assert_eq!(list.pop_front().unwrap().position(), 2);
        // The hole at 3 is skipped.
        assert_eq!(list.front().unwrap().position(), 4);
        let mut turned_away = task();
        assert_eq!(list.number(&mut turned_away), 7);
        assert_eq!(list.push(task()), 8);
        assert!(list.get_mut(7).is_none());
        assert_eq!(positions(&list), [4, 5, 6, 8]);
        assert_eq!(list.len(), 4);
        let all: Vec<usize> = list.take_all().iter().map(Task::position).collect();
        assert_eq!(all, [4, 5, 6, 8]);
        assert!(list.is_empty());
        assert_eq!(list.push(task()), 9);
        assert_eq!(list.front().unwrap().position(), 9);
    }

    #[test]
    fn the_newest_task_with_a_key_wins_whenever_the_key_is_set() {
        let k: Arc<str> = Arc::from("k");
        let mut list = TaskList::default();
        let older = list.push(task());
        list.push(task());
        let newer = list.push(task());
        assert!(list.set_key(newer, k.clone()).is_none());
        // Keying the older task later takes out the older, not the newer.
        assert_eq!(list.set_key(older, k.clone()).unwrap().position(), older);
        assert_eq!(positions(&list), [2, 3]);
        let newest = list.push(task());
        assert_eq!(list.set_key(newest, k).unwrap().position(), newer);
        assert_eq!(list.take_key("k").unwrap().position(), newest);
        assert!(list.take_key("k").is_none());
        assert_eq!(positions(&list), [2]);
    }

    #[test]
    fn appended_tasks_replace_older_ones_with_their_key() {
        let mut list = TaskList::default();
        let a = list.push(task());
        list.set_key(a, Arc::from("k"));
        list.push(task());
        let mut other = TaskList::default();
        let b = other.push(task());
        other.set_key(b, Arc::from("k"));
        let replaced = list.append(other);
        assert_eq!(replaced.len(), 1);
        assert_eq!(replaced[0].position(), a);
        assert_eq!(positions(&list), [2, 3]);
        assert_eq!(list.take_key("k").unwrap().position(), 3);
    }

    #[test]
    fn a_long_list_of_distinct_keys_stays_indexed() {
        let mut list = TaskList::default();
        for i in 0..10_000 {
            let position = list.push(task());
            assert!(list.set_key(position, Arc::from(i.to_string())).is_none());
        }
        assert_eq!(list.take_key("5000").unwrap().position(), 5001);
        assert_eq!(list.len(), 9_999);
        let removed = list.take_where(|t| t.position() % 2 == 0);
        assert_eq!(removed.len(), 5_000);
        assert!(list.take_key("1").is_none());
        assert_eq!(list.take_key("2").unwrap().position(), 3);
    }
}
