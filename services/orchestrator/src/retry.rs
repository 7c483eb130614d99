//! Wake-ups of CIDs whose failed replicas wait for their retry (see `pinhive_domain::retry`).
//!
//! A CID waiting for a retry stays in its partition's pending set (durable), but the repair
//! pass over that set should neither reload and re-plan it every interval until the backoff
//! ends nor leave it waiting for the next pass once it does. So each shard puts such a CID in
//! an in-memory queue ordered by due time: the repair task sleeps until the earliest entry,
//! then re-plans the due CIDs; a pass over the pending set skips CIDs queued as having
//! nothing else to do (no store read). The queue is a cache of the pending set: bounded per
//! partition (a CID that finds it full is handled by the passes, as before), emptied when the
//! node registry changes (a new node may take the replica at once) or the partition changes
//! hands, and filled again by the next pass, which re-plans every pending CID it does not
//! skip. Cost per waiting CID: one queue entry and one re-plan when it is due.

use std::collections::{BTreeSet, HashMap};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Entries the queues of one process hold at most, split evenly among the partitions (≈ 200 B
/// each with a CID of 59 bytes: ≈ 26 MiB when full).
pub const RETRY_QUEUE_CAPACITY: usize = 131_072;
/// Entries a partition's queue holds at least, however many partitions share the capacity.
const MIN_PARTITION_CAPACITY: usize = 64;

/// The queues of every partition, shared by the shards (which fill them) and the repair
/// tasks (which wait on them).
pub struct RetryTimers {
    partitions: Vec<PartitionTimers>,
}

struct PartitionTimers {
    queue: Mutex<Queue>,
    /// Ticked when the earliest due time moves earlier.
    wake: Notify,
}

#[derive(Default)]
struct Queue {
    by_time: BTreeSet<(i64, String)>,
    /// Due time, and whether the CID has nothing else to do until then (a pass may skip it).
    by_cid: HashMap<String, (i64, bool)>,
    capacity: usize,
}

impl Queue {
    fn remove(&mut self, cid: &str) {
        if let Some((at, _)) = self.by_cid.remove(cid) {
            self.by_time.remove(&(at, cid.to_string()));
        }
    }

    /// Queues `cid` due at `at`; true if that is now the earliest entry.
    fn schedule(&mut self, cid: &str, at: i64, idle: bool) -> bool {
        self.remove(cid);
        if self.by_cid.len() >= self.capacity {
            // Full: the latest entry gives way to an earlier one (it stays pending, so the
            // passes reach it); a later one is not queued.
            match self.by_time.iter().next_back().cloned() {
                Some((latest, victim)) if latest > at => self.remove(&victim),
                _ => return false,
            }
        }
        self.by_time.insert((at, cid.to_string()));
        self.by_cid.insert(cid.to_string(), (at, idle));
        self.by_time.first().is_some_and(|(first, _)| *first == at)
    }

    fn take_due(&mut self, now_ns: i64, max: usize) -> Vec<String> {
        let mut due = Vec::new();
        while due.len() < max {
            match self.by_time.first() {
                Some((at, _)) if *at <= now_ns => {}
                _ => break,
            }
            if let Some((_, cid)) = self.by_time.pop_first() {
                self.by_cid.remove(&cid);
                due.push(cid);
            }
        }
        due
    }
}

impl RetryTimers {
    pub fn new(partitions: u32) -> Self {
        let share = RETRY_QUEUE_CAPACITY / usize::try_from(partitions.max(1)).unwrap_or(1);
        Self::with_capacity(partitions, share.max(MIN_PARTITION_CAPACITY))
    }

    /// Queues of `capacity` entries per partition.
    pub fn with_capacity(partitions: u32, capacity: usize) -> Self {
        RetryTimers {
            partitions: (0..partitions)
                .map(|_| PartitionTimers {
                    queue: Mutex::new(Queue {
                        capacity,
                        ..Queue::default()
                    }),
                    wake: Notify::new(),
                })
                .collect(),
        }
    }

    fn of(&self, partition: u32) -> Option<&PartitionTimers> {
        self.partitions.get(partition as usize)
    }

    /// `cid` waits for a retry due at `at` (`idle`: it has nothing else to do until then).
    pub fn schedule(&self, partition: u32, cid: &str, at: i64, idle: bool) {
        let Some(timers) = self.of(partition) else {
            return;
        };
        if timers.queue.lock().schedule(cid, at, idle) {
            timers.wake.notify_one();
        }
    }

    /// `cid` waits for no retry (any more).
    pub fn cancel(&self, partition: u32, cid: &str) {
        if let Some(timers) = self.of(partition) {
            timers.queue.lock().remove(cid);
        }
    }

    /// True if a pass may skip `cid`: it is queued, idle, and not due at `now_ns`.
    pub fn deferred(&self, partition: u32, cid: &str, now_ns: i64) -> bool {
        self.of(partition).is_some_and(|timers| {
            timers
                .queue
                .lock()
                .by_cid
                .get(cid)
                .is_some_and(|(at, idle)| *idle && *at > now_ns)
        })
    }

    /// Removes and returns up to `max` CIDs due at `now_ns`, earliest first.
    pub fn take_due(&self, partition: u32, now_ns: i64, max: usize) -> Vec<String> {
        self.of(partition)
            .map(|timers| timers.queue.lock().take_due(now_ns, max))
            .unwrap_or_default()
    }

    /// The earliest due time queued for `partition`.
    pub fn next_due(&self, partition: u32) -> Option<i64> {
        self.of(partition)
            .and_then(|timers| timers.queue.lock().by_time.first().map(|(at, _)| *at))
    }

    /// Waits until an entry earlier than every other is queued for `partition`.
    pub async fn earlier(&self, partition: u32) {
        match self.of(partition) {
            Some(timers) => timers.wake.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Forgets `partition`'s entries (the next pass queues its waiting CIDs again).
    pub fn clear(&self, partition: u32) {
        if let Some(timers) = self.of(partition) {
            let mut queue = timers.queue.lock();
            queue.by_time.clear();
            queue.by_cid.clear();
        }
    }

    /// Entries queued for `partition`.
    pub fn len(&self, partition: u32) -> usize {
        self.of(partition)
            .map_or(0, |timers| timers.queue.lock().by_cid.len())
    }

    pub fn is_empty(&self, partition: u32) -> bool {
        self.len(partition) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_entries_come_out_earliest_first_and_only_when_due() {
        let timers = RetryTimers::new(1);
        timers.schedule(0, "b", 20, true);
        timers.schedule(0, "a", 10, true);
        timers.schedule(0, "c", 30, false);
        assert_eq!(timers.next_due(0), Some(10));
        assert!(timers.deferred(0, "a", 9));
        assert!(!timers.deferred(0, "a", 10), "due: not skipped");
        assert!(!timers.deferred(0, "c", 0), "not idle: never skipped");
        assert_eq!(timers.take_due(0, 20, 10), ["a", "b"]);
        assert_eq!(timers.take_due(0, 20, 10), Vec::<String>::new());
        assert_eq!(timers.len(0), 1);
    }

    #[test]
    fn rescheduling_replaces_and_cancel_removes() {
        let timers = RetryTimers::new(1);
        timers.schedule(0, "a", 10, true);
        timers.schedule(0, "a", 50, true);
        assert_eq!(timers.len(0), 1);
        assert_eq!(timers.take_due(0, 20, 10), Vec::<String>::new());
        timers.cancel(0, "a");
        assert!(timers.is_empty(0));
        assert!(!timers.deferred(0, "a", 0));
    }

    #[test]
    fn a_full_queue_keeps_the_earliest_entries() {
        let timers = RetryTimers::with_capacity(1, 2);
        timers.schedule(0, "a", 10, true);
        timers.schedule(0, "b", 30, true);
        timers.schedule(0, "c", 20, true); // evicts b
        timers.schedule(0, "d", 40, true); // later than all: not queued
        assert_eq!(timers.len(0), 2);
        assert!(!timers.deferred(0, "b", 0));
        assert!(!timers.deferred(0, "d", 0));
        assert_eq!(timers.take_due(0, 100, 10), ["a", "c"]);
    }

    #[test]
    fn an_earlier_entry_wakes_the_waiter() {
        let timers = RetryTimers::new(1);
        timers.schedule(0, "a", 10, true);
        // The permit is stored: a waiter that arrives later returns at once.
        futures::executor::block_on(timers.earlier(0));
        timers.schedule(0, "b", 20, true); // not the earliest: no wake-up
        assert_eq!(timers.next_due(0), Some(10));
    }
}
