//! Pin expiry: a pin whose `meta.expires_at` is due is unpinned through a `PinExpired` event,
//! found in the partition's expiry index (`Store::expiry_due`), never by a scan of the pins.
//!
//! * The shard writes an index entry for every pin with an expiry in the batch that writes
//!   the pin row, deletes it when the pin goes or its expiry moves, and deletes the entry a
//!   `PinExpired` names when it applies it (whether the pin went or the event was moot).
//! * The expiry task of an owned partition wakes every `expiry_interval` and walks the
//!   entries due in the window `(through, now]`, a page at a time through the shard
//!   ([`ExpireDue`]), appending one `PinExpired` per entry (keyed by its CID, so the CID's
//!   shard applies it in log order with everything else of that CID). At most
//!   [`PAGES_PER_TICK`] pages of [`PAGE`] entries a tick: a backlog is worked off over the
//!   following ticks, in bounded memory. When the window is done ([`ExpiryPassDone`]) the
//!   shard persists `through` (checkpoint [`EXPIRY_MARK`]); the next window starts after it,
//!   so no read crosses the deleted entries of past windows again.
//! * Late entries: a pin applied after a window that covers its expiry (a lagging shard, an
//!   expiry set at the edge moments before) must not land in that window, which is read
//!   already. Reads go through the shard, between its batches, so the shard knows how far
//!   the task has read ([`ExpiryMark`]): an entry it writes is due at
//!   `max(expiry, mark + 1)`, i.e. in the next window. The entry keeps its own time; the
//!   `PinExpired` carries it, and the shard removes the pin only if its expiry is at or
//!   before that time, so an entry left behind by a moved expiry never removes a pin early.
//! * Crashes: `through` only moves once every entry of the window has its `PinExpired`
//!   appended (durable), so a crash re-reads the window and appends some of them again; a
//!   second `PinExpired` of a pin finds it gone and only deletes the entry (if still there).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use pinhive_events::{Envelope, Event};
use pinhive_log::Record;
use pinhive_store::{ExpiryCursor, ExpiryEntry, Store, StoreError};
use tokio::sync::watch;

use crate::consumer::Orchestrator;
use crate::metrics::METRICS;
use crate::shard::ShardActor;

/// Checkpoint row (per partition): the end of the last expiry window walked completely, ns.
pub const EXPIRY_MARK: &str = "#expiry/through";
/// Entries per page (one `PinExpired` append per page).
pub const PAGE: usize = 512;
/// Pages per tick and partition: at most `PAGE * PAGES_PER_TICK` expiries per tick.
pub const PAGES_PER_TICK: usize = 16;
/// The default pause between two ticks.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// What the shard knows of its partition's expiry walk: `through` (persisted: every entry due
/// at or before it has had its `PinExpired` appended) and `read` (in memory: the end of the
/// latest window the task has started to read). Entries the shard writes land after both.
#[derive(Debug, Default)]
pub struct ExpiryMark {
    through: Option<i64>,
    read: i64,
}

impl ExpiryMark {
    /// The persisted end of the last complete window. A partition without one starts at the
    /// current time, persisted before any entry is written, so no entry is ever below it.
    fn through(&mut self, store: &dyn Store, partition: u32) -> Result<i64, StoreError> {
        if let Some(through) = self.through {
            return Ok(through);
        }
        let through = persisted_through(store, partition)?;
        self.through = Some(through);
        Ok(through)
    }

    /// Where an entry for a pin expiring at `expires_ns` goes: at its time, unless a window
    /// covering that time is read already; then just after the latest window.
    pub fn due_ns(
        &mut self,
        store: &dyn Store,
        partition: u32,
        expires_ns: i64,
    ) -> Result<i64, StoreError> {
        let mark = self.through(store, partition)?.max(self.read);
        Ok(expires_ns.max(mark.saturating_add(1)))
    }
}

/// The persisted end of `partition`'s last complete expiry window; a partition without one
/// starts at the current time, persisted first.
pub fn persisted_through(store: &dyn Store, partition: u32) -> Result<i64, StoreError> {
    Ok(match store.checkpoint(EXPIRY_MARK, partition)? {
        Some(through) => i64::try_from(through).unwrap_or(i64::MAX),
        None => {
            let now = pinhive_events::now_ns();
            store.set_checkpoint(EXPIRY_MARK, partition, now.max(0) as u64)?;
            now
        }
    })
}

/// Sent by the partition's expiry task: the next page of the entries due in the window
/// `(through, up_to_ns]` from `cursor`. Handled between batches, so every entry a batch
/// before it wrote is visible to the read, and every entry a batch after it writes lands after
/// `up_to_ns` ([`ExpiryMark::due_ns`]).
#[derive(Message)]
#[rtype(result = "Result<ExpiryPage, StoreError>")]
pub struct ExpireDue {
    pub up_to_ns: i64,
    pub cursor: ExpiryCursor,
    pub limit: usize,
}

#[derive(Debug, Default)]
pub struct ExpiryPage {
    pub entries: Vec<ExpiryEntry>,
    /// `None`: the window holds no more.
    pub next: Option<ExpiryCursor>,
}

/// Sent by the expiry task once every entry of the window up to `up_to_ns` has its
/// `PinExpired` appended: the shard persists `up_to_ns` as `through`.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct ExpiryPassDone {
    pub up_to_ns: i64,
}

impl Handler<ExpireDue> for ShardActor {
    type Result = Result<ExpiryPage, StoreError>;

    fn handle(&mut self, message: ExpireDue, _: &mut Self::Context) -> Self::Result {
        METRICS
            .mailbox_depth
            .with_label_values(&[&self.partition.to_string()])
            .dec();
        let store = self.store.clone();
        let through = self.expiry.through(store.as_ref(), self.partition)?;
        // From here on, entries the shard writes land after this window.
        self.expiry.read = self.expiry.read.max(message.up_to_ns);
        let (entries, next) = store.expiry_due(
            self.partition,
            through,
            message.up_to_ns,
            &message.cursor,
            message.limit,
        )?;
        Ok(ExpiryPage { entries, next })
    }
}

impl Handler<ExpiryPassDone> for ShardActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, message: ExpiryPassDone, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let through = self.expiry.through(store.as_ref(), self.partition)?;
        if message.up_to_ns <= through {
            return Ok(());
        }
        // Only the partition's owner moves its mark (a fenced shard fails here).
        let commit = self.committed()?;
        self.check_owner(&commit)?;
        store.set_checkpoint(EXPIRY_MARK, self.partition, message.up_to_ns as u64)?;
        self.expiry.through = Some(message.up_to_ns);
        Ok(())
    }
}

impl Orchestrator {
    /// The expiry task of one owned partition (runs beside its consumer and repair loop).
    pub(crate) async fn expire(self: Arc<Self>, partition: u32, mut stop: watch::Receiver<bool>) {
        let interval = self.config.expiry_interval;
        if interval.is_zero() {
            return;
        }
        let shard = self.shards[partition as usize].clone();
        let mut shutdown = self.shutdown.subscribe();
        // The window under way (its end and where the walk is), if a tick stopped inside it.
        let mut pass: Option<(i64, ExpiryCursor)> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
                _ = stop.changed() => return,
            }
            if self.stopping() || *stop.borrow() {
                return;
            }
            let (up_to_ns, mut cursor) = pass
                .take()
                .unwrap_or_else(|| (pinhive_events::now_ns(), ExpiryCursor::default()));
            let mut finished = false;
            for _ in 0..PAGES_PER_TICK {
                METRICS
                    .mailbox_depth
                    .with_label_values(&[&partition.to_string()])
                    .inc();
                let request = ExpireDue {
                    up_to_ns,
                    cursor: cursor.clone(),
                    limit: PAGE,
                };
                let page = match shard.send(request).await {
                    Ok(Ok(page)) => page,
                    Ok(Err(error @ StoreError::Fenced { .. })) => {
                        self.give_up_fenced(partition, &stop, &error);
                        return;
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(partition, error = %error, "expiry could not read the expiry index; retrying next tick");
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(partition, error = %error, "shard actor unavailable for expiry");
                        break;
                    }
                };
                if !page.entries.is_empty() && !self.append_expired(partition, &page.entries).await
                {
                    break; // the same page again next tick
                }
                match page.next {
                    Some(next) => cursor = next,
                    None => {
                        finished = true;
                        break;
                    }
                }
            }
            if !finished {
                pass = Some((up_to_ns, cursor));
                continue;
            }
            match shard.send(ExpiryPassDone { up_to_ns }).await {
                Ok(Ok(())) => {}
                Ok(Err(error @ StoreError::Fenced { .. })) => {
                    self.give_up_fenced(partition, &stop, &error);
                    return;
                }
                // The window is walked again from the last persisted mark: repeats are moot.
                Ok(Err(error)) => {
                    tracing::warn!(partition, error = %error, "could not persist the expiry mark")
                }
                Err(error) => {
                    tracing::warn!(partition, error = %error, "shard actor unavailable for expiry")
                }
            }
        }
    }

    /// Appends one `PinExpired` per entry (one durable append); false if it failed.
    async fn append_expired(&self, partition: u32, entries: &[ExpiryEntry]) -> bool {
        let records: Vec<Record> = entries
            .iter()
            .map(|entry| {
                let event = Event::PinExpired {
                    requestid: entry.requestid.clone(),
                    expires_ns: entry.due_ns,
                };
                Record::from_envelope(&Envelope::new(entry.cid.clone(), event))
            })
            .collect();
        match self.log.append(records).await {
            Ok(_) => {
                METRICS
                    .expired
                    .with_label_values(&[&partition.to_string()])
                    .inc_by(entries.len() as u64);
                tracing::debug!(partition, count = entries.len(), "appended pin expiries");
                true
            }
            Err(error) => {
                tracing::warn!(partition, error = %error, "could not append pin expiries; retrying next tick");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_land_after_the_windows_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = pinhive_store::EmbeddedStore::open(dir.path()).unwrap();
        store.set_checkpoint(EXPIRY_MARK, 0, 1_000).unwrap();
        let mut mark = ExpiryMark::default();
        assert_eq!(mark.due_ns(&store, 0, 5_000).unwrap(), 5_000);
        assert_eq!(mark.due_ns(&store, 0, 1_000).unwrap(), 1_001, "at the mark");
        mark.read = 6_000;
        assert_eq!(
            mark.due_ns(&store, 0, 5_000).unwrap(),
            6_001,
            "in a window read"
        );
        assert_eq!(mark.due_ns(&store, 0, 7_000).unwrap(), 7_000);
        // A partition without a mark starts at the current time, persisted.
        let mut fresh = ExpiryMark::default();
        let before = pinhive_events::now_ns();
        assert!(fresh.due_ns(&store, 1, 0).unwrap() > before);
        assert!(store.checkpoint(EXPIRY_MARK, 1).unwrap().unwrap() >= before as u64);
    }
}
