//! Fair sharing of one node's RPC slots between owners: the node driver's queue.
//!
//! Commands wait in one queue per owner. A free slot goes to the owner with queued commands
//! that runs the fewest (ties: round-robin order), if it runs fewer than its fair share
//! (`slots / owners with work`, rounded up) or the slot is outside the reserve. `reserved` slots are kept for owners below
//! their share: a tenant flooding the node with content nobody can find (each command holding
//! its slot for up to attempts × pin timeout) fills at most `slots − reserved`, and another
//! tenant's first commands start at once in the reserve; once the reserve is taken too, each
//! slot that frees goes to the owners below their share first. Alone, an owner uses
//! `slots − reserved` slots.
//!
//! Unit costs and equal weights make deficit round-robin plain round-robin, which this is.
//!
//! Bounded: at most `max_total` commands (queued and running) and `max_per_owner` per owner;
//! a command beyond either is refused (the caller drops it; the shard plans it again).
//! Deterministic: no clock, no randomness; `start_next` is O(owners with queued commands).

use std::collections::{HashMap, VecDeque};

/// Why a command was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `max_total` commands are queued or running.
    Full,
    /// Its owner has `max_per_owner` commands queued or running.
    OwnerFull,
}

impl Refused {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Full => "queue_full",
            Refused::OwnerFull => "owner_queue_full",
        }
    }
}

/// The shape of a [`FairQueue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FairLimits {
    /// Commands running at once.
    pub slots: usize,
    /// Slots only owners below their fair share may take (< `slots`).
    pub reserved: usize,
    /// Commands queued or running, all owners.
    pub max_total: usize,
    /// Commands queued or running, one owner.
    pub max_per_owner: usize,
}

impl FairLimits {
    /// A quarter of the slots reserved (none with a single slot), an owner may hold a quarter
    /// of the queue.
    pub fn new(slots: usize, max_total: usize) -> Self {
        let slots = slots.max(1);
        let max_total = max_total.max(1);
        FairLimits {
            slots,
            reserved: slots / 4,
            max_total,
            max_per_owner: (max_total / 4).max(1),
        }
    }
}

struct OwnerQueue<T> {
    waiting: VecDeque<T>,
    running: usize,
}

pub struct FairQueue<T> {
    limits: FairLimits,
    /// Owners with queued or running commands.
    owners: HashMap<String, OwnerQueue<T>>,
    /// Owners with queued commands, in round-robin order (each once).
    ring: VecDeque<String>,
    queued: usize,
    running: usize,
}

impl<T> FairQueue<T> {
    pub fn new(limits: FairLimits) -> Self {
        let reserved = limits.reserved.min(limits.slots.saturating_sub(1));
        FairQueue {
            limits: FairLimits { reserved, ..limits },
            owners: HashMap::new(),
            ring: VecDeque::new(),
            queued: 0,
            running: 0,
        }
    }

    /// Queues `item` for `owner`, unless a bound refuses it.
    pub fn push(&mut self, owner: &str, item: T) -> Result<(), Refused> {
        if self.queued + self.running >= self.limits.max_total {
            return Err(Refused::Full);
        }
        let queue = match self.owners.get_mut(owner) {
            Some(queue) => queue,
            None => self.owners.entry(owner.to_string()).or_insert(OwnerQueue {
                waiting: VecDeque::new(),
                running: 0,
            }),
        };
        if queue.waiting.len() + queue.running >= self.limits.max_per_owner {
            return Err(Refused::OwnerFull);
        }
        if queue.waiting.is_empty() {
            self.ring.push_back(owner.to_string());
        }
        queue.waiting.push_back(item);
        self.queued += 1;
        Ok(())
    }

    /// The next command to start, with its owner, if a slot is free and an owner may take it
    /// (counted as running until [`FairQueue::done`]).
    pub fn start_next(&mut self) -> Option<(String, T)> {
        if self.running >= self.limits.slots || self.ring.is_empty() {
            return None;
        }
        let open = self.limits.slots - self.limits.reserved;
        let share = self
            .limits
            .slots
            .div_ceil(self.owners.len().max(1))
            .min(open);
        // Max-min fair: the owner running the fewest goes first; the first in ring order on
        // ties, so equal owners take turns.
        let (index, fewest) = self
            .ring
            .iter()
            .enumerate()
            .map(|(index, owner)| (index, self.running_of(owner)))
            .min_by_key(|(index, running)| (*running, *index))?;
        if fewest >= share && self.running >= open {
            return None;
        }
        let owner = self.ring.remove(index)?;
        let queue = self.owners.get_mut(&owner)?;
        let item = queue.waiting.pop_front()?;
        queue.running += 1;
        self.queued -= 1;
        self.running += 1;
        if !queue.waiting.is_empty() {
            self.ring.push_back(owner.clone());
        }
        Some((owner, item))
    }

    /// One of `owner`'s running commands ended.
    pub fn done(&mut self, owner: &str) {
        let Some(queue) = self.owners.get_mut(owner) else {
            return;
        };
        if queue.running == 0 {
            return;
        }
        queue.running -= 1;
        self.running -= 1;
        if queue.running == 0 && queue.waiting.is_empty() {
            self.owners.remove(owner);
        }
    }

    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn running(&self) -> usize {
        self.running
    }

    /// Owners with queued or running commands.
    pub fn owners(&self) -> usize {
        self.owners.len()
    }

    /// Commands `owner` has running.
    pub fn running_of(&self, owner: &str) -> usize {
        self.owners.get(owner).map_or(0, |queue| queue.running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(slots: usize, reserved: usize) -> FairLimits {
        FairLimits {
            slots,
            reserved,
            max_total: 10_000,
            max_per_owner: 10_000,
        }
    }

    /// Starts commands until none may start; returns their owners in order.
    fn drain(queue: &mut FairQueue<u32>) -> Vec<String> {
        std::iter::from_fn(|| queue.start_next().map(|(owner, _)| owner)).collect()
    }

    #[test]
    fn an_owner_alone_fills_all_but_the_reserve_in_fifo_order() {
        let mut queue = FairQueue::new(limits(8, 2));
        for i in 0..20 {
            queue.push("a", i).unwrap();
        }
        let started: Vec<u32> =
            std::iter::from_fn(|| queue.start_next().map(|(_, item)| item)).collect();
        assert_eq!(started, (0..6).collect::<Vec<_>>());
        assert_eq!((queue.running(), queue.queued()), (6, 14));
    }

    #[test]
    fn a_second_owner_starts_at_once_in_the_reserve_while_the_first_floods() {
        let mut queue = FairQueue::new(limits(8, 2));
        for i in 0..500 {
            queue.push("flood", i).unwrap();
        }
        assert_eq!(drain(&mut queue).len(), 6);
        for i in 0..5 {
            queue.push("b", 1000 + i).unwrap();
        }
        // Both reserved slots go to b at once; the flood stays at 6.
        assert_eq!(drain(&mut queue), ["b", "b"]);
        assert_eq!(queue.running_of("flood"), 6);
        // Every slot the flood frees goes to b while b is below its share (4 of 8).
        queue.done("flood");
        assert_eq!(drain(&mut queue), ["b"]);
        queue.done("flood");
        assert_eq!(drain(&mut queue), ["b"]);
        // b at its share (4), the flood below it: the freed slot is the flood's again.
        queue.done("flood");
        assert_eq!(drain(&mut queue), ["flood"]);
        assert_eq!((queue.running_of("flood"), queue.running_of("b")), (4, 4));
    }

    #[test]
    fn without_a_reserve_an_owner_alone_uses_every_slot_and_a_newcomer_takes_the_next_free_one() {
        let mut queue = FairQueue::new(limits(4, 0));
        for i in 0..10 {
            queue.push("flood", i).unwrap();
        }
        assert_eq!(drain(&mut queue), ["flood"; 4]);
        queue.push("b", 0).unwrap();
        assert!(queue.start_next().is_none(), "no slot is kept for b");
        queue.done("flood");
        assert_eq!(
            drain(&mut queue),
            ["b"],
            "the freed slot goes to b, below its share"
        );
    }

    #[test]
    fn free_slots_go_round_robin_between_owners_below_their_share() {
        let mut queue = FairQueue::new(limits(6, 0));
        for owner in ["a", "b", "c"] {
            for i in 0..10 {
                queue.push(owner, i).unwrap();
            }
        }
        assert_eq!(drain(&mut queue), ["a", "b", "c", "a", "b", "c"]);
        queue.done("b");
        assert_eq!(drain(&mut queue), ["b"]);
    }

    #[test]
    fn a_third_owner_gets_the_next_free_slot_when_the_reserve_is_taken() {
        let mut queue = FairQueue::new(limits(4, 1));
        for i in 0..100 {
            queue.push("a", i).unwrap();
            queue.push("b", i).unwrap();
        }
        assert_eq!(drain(&mut queue), ["a", "b", "a", "b"]);
        queue.push("c", 0).unwrap();
        assert!(queue.start_next().is_none(), "every slot is taken");
        queue.done("a");
        assert_eq!(drain(&mut queue), ["c"]);
    }

    #[test]
    fn bounds_refuse_in_total_and_per_owner_and_free_up_when_done() {
        let mut queue = FairQueue::new(FairLimits {
            slots: 1,
            reserved: 0,
            max_total: 3,
            max_per_owner: 2,
        });
        queue.push("a", 1).unwrap();
        queue.push("a", 2).unwrap();
        assert_eq!(queue.push("a", 3), Err(Refused::OwnerFull));
        queue.push("b", 1).unwrap();
        assert_eq!(queue.push("c", 1), Err(Refused::Full));
        let (owner, _) = queue.start_next().unwrap();
        assert_eq!(owner, "a");
        assert_eq!(
            queue.push("c", 1),
            Err(Refused::Full),
            "a running one still counts"
        );
        queue.done("a");
        queue.push("c", 1).unwrap();
        assert_eq!(queue.owners(), 3);
    }

    #[test]
    fn owners_without_work_are_forgotten() {
        let mut queue = FairQueue::new(limits(2, 0));
        queue.push("a", 1).unwrap();
        queue.start_next().unwrap();
        assert_eq!(queue.owners(), 1);
        queue.done("a");
        assert_eq!(queue.owners(), 0);
        queue.done("a"); // a stray completion is ignored
        assert_eq!((queue.running(), queue.queued()), (0, 0));
    }

    #[test]
    fn defaults_reserve_a_quarter_and_never_every_slot() {
        let defaults = FairLimits::new(32, 4096);
        assert_eq!((defaults.reserved, defaults.max_per_owner), (8, 1024));
        let mut single = FairQueue::new(FairLimits {
            reserved: 5,
            ..FairLimits::new(1, 10)
        });
        single.push("a", 1).unwrap();
        assert!(
            single.start_next().is_some(),
            "one slot is never all reserve"
        );
    }
}
