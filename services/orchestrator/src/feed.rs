//! The live feed of applied pin changes: what the operator console (`/ws/dashboard`) pushes.
//!
//! A shard publishes one [`PinChange`] per pin whose status changed (or that was created or
//! removed) in a batch, right after the batch is committed — never before, so a watcher never
//! sees a change that is rolled back. The channel is a bounded `tokio::sync::broadcast`
//! ([`FEED_CAPACITY`] changes): a subscriber that falls behind loses the oldest changes and is
//! told so (`RecvError::Lagged`), a shard never waits for a watcher, and with no subscriber a
//! batch builds no change at all (one atomic load).

use std::sync::Arc;

use pinhive_domain::PinStatus;
use tokio::sync::broadcast;

/// Changes the feed holds for its slowest subscriber.
pub const FEED_CAPACITY: usize = 4_096;

/// One pin's status as committed by its shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinChange {
    pub requestid: String,
    /// The canonical CID.
    pub cid: String,
    pub owner: String,
    /// `None`: the pin was removed.
    pub status: Option<PinStatus>,
    /// `None`: the pin is new.
    pub previous: Option<PinStatus>,
    pub partition: u32,
    /// When the shard committed the batch (ns since the epoch).
    pub applied_ns: i64,
}

/// The sending side, shared by every shard of the process.
#[derive(Clone)]
pub struct PinFeed {
    sender: broadcast::Sender<Arc<PinChange>>,
}

impl Default for PinFeed {
    fn default() -> Self {
        PinFeed {
            sender: broadcast::channel(FEED_CAPACITY).0,
        }
    }
}

impl PinFeed {
    /// True if anyone listens (a shard builds no change otherwise).
    pub fn watched(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub fn publish(&self, change: PinChange) {
        // No receiver: nothing to do (the error only says so).
        let _ = self.sender.send(Arc::new(change));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<PinChange>> {
        self.sender.subscribe()
    }
}

/// The changes one batch's pin writes make (`(committed, new)` row pairs): a pin whose status
/// did not change is left out.
pub fn changes<'a>(
    writes: impl IntoIterator<
        Item = (
            Option<&'a pinhive_domain::PinRow>,
            Option<&'a pinhive_domain::PinRow>,
        ),
    >,
    partition: u32,
    applied_ns: i64,
) -> Vec<PinChange> {
    writes
        .into_iter()
        .filter_map(|(old, new)| {
            let row = new.or(old)?;
            let status = new.map(|r| r.record.status);
            let previous = old.map(|r| r.record.status);
            (status != previous).then(|| PinChange {
                requestid: row.record.requestid.clone(),
                cid: row.record.canonical_cid(),
                owner: row.record.owner.clone(),
                status,
                previous,
                partition,
                applied_ns,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhive_domain::PinRow;

    fn row(requestid: &str, status: PinStatus) -> PinRow {
        let request = pinhive_events::PinRequested {
            requestid: requestid.into(),
            owner: "alice".into(),
            cid: "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy".into(),
            name: None,
            origins: Vec::new(),
            meta: Default::default(),
            created_ns: 1,
            replicas_min: 1,
            replicas_max: 1,
            replaces: None,
        };
        let mut row = PinRow::new(&request, 0);
        row.record.status = status;
        row
    }

    #[test]
    fn only_pins_whose_status_changed_are_published() {
        let queued = row("a", PinStatus::Queued);
        let pinned = row("a", PinStatus::Pinned);
        let other = row("b", PinStatus::Pinning);
        let changes = changes(
            [
                (None, Some(&queued)),
                (Some(&queued), Some(&pinned)),
                (Some(&other), Some(&other)),
                (Some(&pinned), None),
                (None, None),
            ],
            3,
            7,
        );
        let seen: Vec<_> = changes
            .iter()
            .map(|c| (c.requestid.as_str(), c.previous, c.status))
            .collect();
        assert_eq!(
            seen,
            [
                ("a", None, Some(PinStatus::Queued)),
                ("a", Some(PinStatus::Queued), Some(PinStatus::Pinned)),
                ("a", Some(PinStatus::Pinned), None),
            ]
        );
        assert!(changes
            .iter()
            .all(|c| c.partition == 3 && c.applied_ns == 7));
        assert_eq!(changes[0].owner, "alice");
    }

    #[test]
    fn a_feed_without_subscribers_is_not_watched_and_publishing_is_harmless() {
        let feed = PinFeed::default();
        assert!(!feed.watched());
        feed.publish(changes([(None, Some(&row("a", PinStatus::Queued)))], 0, 0).remove(0));
        let mut receiver = feed.subscribe();
        assert!(feed.watched());
        feed.publish(changes([(None, Some(&row("b", PinStatus::Queued)))], 0, 0).remove(0));
        assert_eq!(receiver.try_recv().unwrap().requestid, "b");
    }
}
