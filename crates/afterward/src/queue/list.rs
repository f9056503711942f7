//! The tasks of a queue, in order, linked through their own boxes.
//!
//! Every task is one allocation already (its box, see `task.rs`); the list
//! links those boxes instead of keeping a buffer of its own, so a queue
//! never allocates or grows a buffer, whatever its length, and pushing or
//! popping is O(1). It is two stacks: tasks arrive on `back`, newest first,
//! and leave from `front`, oldest first; when `front` runs out, `back` is
//! reversed onto it. Each task is moved that way once.

use crate::job::Task;

#[derive(Default)]
pub(crate) struct TaskList {
    /// Oldest first.
    front: Option<Task>,
    /// Newest first.
    back: Option<Task>,
    len: usize,
}

fn take_next(task: &mut Task) -> Option<Task> {
    task.info_mut().next.take()
}

fn set_next(task: &mut Task, next: Option<Task>) {
    task.info_mut().next = next;
}

impl TaskList {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn push_back(&mut self, mut task: Task) {
        set_next(&mut task, self.back.take());
        self.back = Some(task);
        self.len += 1;
    }

    /// Moves every task of `other` to the end of this list, in order.
    pub(crate) fn append(&mut self, mut other: TaskList) {
        while let Some(task) = other.pop_front() {
            self.push_back(task);
        }
    }

    /// Puts a task back at the front, as if it had not been popped.
    pub(crate) fn push_front(&mut self, mut task: Task) {
        set_next(&mut task, self.front.take());
        self.front = Some(task);
        self.len += 1;
    }

    /// The oldest task, left in place.
    pub(crate) fn front(&mut self) -> Option<&Task> {
        if self.front.is_none() {
            self.turn();
        }
        self.front.as_ref()
    }

    pub(crate) fn pop_front(&mut self) -> Option<Task> {
        if self.front.is_none() {
            self.turn();
        }
        let mut task = self.front.take()?;
        self.front = take_next(&mut task);
        self.len -= 1;
        Some(task)
    }

    /// Every task, oldest first, leaving the list empty.
    pub(crate) fn take_all(&mut self) -> Vec<Task> {
        let mut all = Vec::with_capacity(self.len);
        while let Some(task) = self.pop_front() {
            all.push(task);
        }
        all
    }

    /// Calls `f` on the task at `position`, if it is in the list; returns
    /// whether it was. The newest task, the usual one, is found first.
    pub(crate) fn find_mut(&mut self, position: usize, f: impl FnOnce(&mut Task)) -> bool {
        let mut f = Some(f);
        for chain in [&mut self.back, &mut self.front] {
            let mut task = chain.as_mut();
            while let Some(t) = task {
                if t.position() == position {
                    if let Some(f) = f.take() {
                        f(t);
                    }
                    return true;
                }
                task = t.info_mut().next.as_mut();
            }
        }
        false
    }

    /// Takes out the tasks for which `remove` holds, oldest first, keeping
    /// the order of the others.
    pub(crate) fn take_where(&mut self, mut remove: impl FnMut(&Task) -> bool) -> Vec<Task> {
        let mut removed = Vec::new();
        let mut kept = TaskList::default();
        while let Some(task) = self.pop_front() {
            if remove(&task) {
                removed.push(task);
            } else {
                kept.push_back(task);
            }
        }
        *self = kept;
        removed
    }

    /// Calls `f` on every task, oldest first.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Task)) {
        let mut task = self.front.as_ref();
        while let Some(t) = task {
            f(t);
            task = t.info().next.as_ref();
        }
        let mut newest_first = Vec::new();
        let mut task = self.back.as_ref();
        while let Some(t) = task {
            newest_first.push(t);
            task = t.info().next.as_ref();
        }
        newest_first.into_iter().rev().for_each(f);
    }

    /// Moves `back` onto `front`, reversing it.
    fn turn(&mut self) {
        let mut back = self.back.take();
        while let Some(mut task) = back {
            back = take_next(&mut task);
            set_next(&mut task, self.front.take());
            self.front = Some(task);
        }
    }
}

impl Drop for TaskList {
    /// Unlinks the tasks one by one: dropping the first would otherwise drop
    /// the whole chain recursively, one stack frame per task.
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        for mut chain in [self.front.take(), self.back.take()] {
            while let Some(mut task) = chain {
                chain = take_next(&mut task);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing::Span;

    use super::TaskList;
    use crate::job::Task;
    use crate::task::task_of;

    fn task() -> Task {
        task_of(|| (), (), Span::none())
    }

    fn positions(list: &TaskList) -> Vec<usize> {
        let mut all = Vec::new();
        list.for_each(|task| all.push(task.position()));
        all
    }

    #[test]
    fn first_in_first_out_across_turns() {
        let mut list = TaskList::default();
        let mut popped = Vec::new();
        let mut next = 1;
        for round in 0..5 {
            for _ in 0..round + 1 {
                let mut t = task();
                t.info_mut().position = next;
                next += 1;
                list.push_back(t);
            }
            assert_eq!(positions(&list).len(), list.len());
            popped.push(list.pop_front().unwrap().position());
        }
        let first = list.pop_front().unwrap();
        let second = list.pop_front().unwrap();
        assert_eq!(second.position(), first.position() + 1);
        list.push_front(second);
        list.push_front(first);
        popped.extend(list.take_all().iter().map(Task::position));
        assert_eq!(popped, (1..next).collect::<Vec<_>>());
        assert!(list.is_empty());
    }

    #[test]
    fn a_long_list_drops_without_recursion() {
        let mut list = TaskList::default();
        for _ in 0..1_000_000 {
            list.push_back(task());
        }
        list.pop_front();
        drop(list);
    }
}
