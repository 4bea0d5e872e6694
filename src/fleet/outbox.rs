//! The publisher's queue: local events waiting to go out to Redis, in order, bounded and
//! counted. The watch loop pushes (a lock held for a push, never across network I/O: detection
//! never waits on Redis); the publisher thread looks at the front, sends, and only then removes
//! what Redis took, so what is in the queue is exactly what is not published yet — what watch
//! saves about once a second and gives again after a restart. When the queue is full (Redis
//! away for long, under a flood of bans) new messages are dropped and counted: the bans still
//! hold on this server.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::message::Message;

pub struct Outbox {
    queue: Mutex<Queue>,
    ready: Condvar,
    capacity: usize,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Message>,
    /// Messages dropped because the queue was full.
    dropped: u64,
    /// Changes whenever `items` changes (for saving only what changed).
    stamp: u64,
    /// Set at stop: a waiting publisher wakes.
    closed: bool,
}

impl Outbox {
    pub fn new(capacity: usize, restored: Vec<Message>) -> Outbox {
        let mut items: VecDeque<Message> = restored.into();
        // A capacity lowered since the last run: the oldest are the ones to keep (order).
        let mut dropped = 0;
        while items.len() > capacity.max(1) {
            items.pop_back();
            dropped += 1;
        }
        Outbox {
            queue: Mutex::new(Queue {
                items,
                dropped,
                stamp: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic elsewhere while holding the lock leaves a queue that is still consistent
        // (every change is a single push or drain).
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `m`; false when the queue is full (dropped, counted).
    pub fn push(&self, m: Message) -> bool {
        let mut q = self.lock();
        if q.items.len() >= self.capacity {
            q.dropped += 1;
            return false;
        }
        q.items.push_back(m);
        q.stamp += 1;
        drop(q);
        self.ready.notify_one();
        true
    }

    /// Up to `n` messages from the front, left in the queue; waits up to `wait` for one when
    /// it is empty (none: nothing came, or the outbox was closed).
    pub fn front(&self, n: usize, wait: Duration) -> Vec<Message> {
        let mut q = self.lock();
        if q.items.is_empty() && !q.closed {
            q = self
                .ready
                .wait_timeout(q, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        q.items.iter().take(n).cloned().collect()
    }

    /// Removes the first `n` messages (those [`Outbox::front`] gave and Redis took).
    pub fn remove_front(&self, n: usize) {
        let mut q = self.lock();
        let n = n.min(q.items.len());
        q.items.drain(..n);
        q.stamp += 1;
    }

    /// Wakes a waiting publisher for good (stop).
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// What is queued, and a stamp that changes whenever it does.
    pub fn contents(&self) -> (Vec<Message>, u64) {
        let q = self.lock();
        (q.items.iter().cloned().collect(), q.stamp)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fleet::message::Kind;

    fn msg(i: u8) -> Message {
        Message {
            kind: Kind::Ban,
            node: Arc::from("a"),
            key: format!("192.0.2.{i}").parse().unwrap(),
            rule: Arc::from("r"),
            time_ms: 0,
            until_ms: 1,
            sent_ms: 0,
        }
    }

    #[test]
    fn bounded_ordered_and_emptied_only_by_what_was_taken() {
        let o = Outbox::new(3, vec![msg(1)]);
        assert!(o.push(msg(2)) && o.push(msg(3)));
        assert!(!o.push(msg(4)));
        assert_eq!(o.dropped(), 1);
        let front = o.front(2, Duration::ZERO);
        assert_eq!(front, [msg(1), msg(2)]);
        assert_eq!(o.len(), 3, "looking does not take");
        let stamp = o.contents().1;
        o.remove_front(2);
        assert_ne!(o.contents().1, stamp);
        assert_eq!(o.contents().0, [msg(3)]);
        o.remove_front(5);
        assert_eq!(o.len(), 0);
        o.close();
        assert!(o.front(1, Duration::from_secs(60)).is_empty());
        let shrunk = Outbox::new(1, vec![msg(1), msg(2)]);
        assert_eq!((shrunk.contents().0, shrunk.dropped()), (vec![msg(1)], 1));
    }
}
