//! The write side: shard batches, commits, retention.
//!
//! A shard batch is written in three waves, each a set of independent single-row writes sent
//! concurrently (at most 64 in flight): (1) the pin rows, (2) their listing and pin-list
//! entries (new ones written, those of the committed and stale values that the new value
//! lacks deleted) with bucket markers, the journal, the pending set, the node index and the
//! expiry index, (3)
//! the CID states.
//! So a pin row always reaches the store before its entries (a rollback reads the row back to
//! find them) and the CID states (which carry `applied_offset`) come last, as the `Store`
//! contract asks; any subset of a wave is a state the attempt's rollback handles like a
//! prefix. With the attempt before and the commit after, a batch waits for five waves of
//! requests. Writes are keyed by what they describe (request id, CID, log offset), so a
//! replay writes the same cells.
//!
//! Write timestamps decide what a late write does. A write that timed out may still be
//! applied by a replica, after anything sent since; ScyllaDB then keeps, per cell, the write
//! (or tombstone) with the newest timestamp, not the last to arrive. Every request of this
//! store is stamped on the client when it is sent, from the session's one monotonic
//! generator (driver.rs): a write sent after another carries a newer timestamp. A wave
//! (`ScyllaStore::all`) returns its first error only after dropping the writes it has not
//! sent, so every write of a failed batch that can still land was stamped before the error
//! reached the shard. The shard's rollback — every undo value rewritten, the entries of the
//! read-back and of the attempted value deleted — and its replay are sent after that, so
//! they win over the failed batch's late writes whenever those land: a late pin row is
//! shadowed by the rewrite, late entries by the deletes. That holds within one process (one
//! session). A restarted process, or another instance after a claim, stamps from its clock:
//! its writes win if its clock is ahead of the old writes' stamps (docs/data-model.md,
//! "Fencing").

use std::collections::HashMap;

use futures::future::BoxFuture;
use pinhive_store::{Attempt, Commit, DeadLetter, PinWrite, ShardBatch, StoreError};
use scylla::response::query_result::QueryResult;
use scylla::statement::batch::{Batch, BatchType};
use scylla::value::{CqlValue, Row};

use crate::listing::{entries_of, CidPinEntry, ListingEntry};
use crate::store::{backend, day_of, decode, encode, limit_of, ordered, rows, Marker, ScyllaStore};

type Write<'a> = BoxFuture<'a, Result<(), StoreError>>;

impl ScyllaStore {
    pub(crate) async fn write_rows(&self, batch: &ShardBatch) -> Result<(), StoreError> {
        let (mut side_writes, side_markers) = self.journal_and_pending(batch);
        side_writes.extend(self.node_cid_writes(batch));
        side_writes.extend(self.expiry_writes(batch));
        // A request id written twice in one batch: the later write goes in a later round, so
        // the two never race. The journal, pending and node-index writes join the last
        // round's entries.
        let rounds = rounds(&batch.pins);
        if rounds.is_empty() {
            self.all(std::mem::take(&mut side_writes)).await?;
        }
        let last = rounds.len().saturating_sub(1);
        for (i, round) in rounds.iter().enumerate() {
            let extra = if i == last {
                std::mem::take(&mut side_writes)
            } else {
                Vec::new()
            };
            self.write_pins(round, extra).await?;
        }
        self.remember(side_markers);
        let statements = &self.statements;
        let mut cids: HashMap<&str, Option<Vec<u8>>> = HashMap::new();
        for cid in &batch.cids {
            cids.insert(&cid.cid, cid.state.as_ref().map(encode));
        }
        let writes = cids
            .into_iter()
            .map(|(cid, state)| match state {
                Some(state) => self.write(&statements.put_cid, (cid, state)),
                None => self.write(&statements.delete_cid, (cid,)),
            })
            .collect();
        self.all(writes).await
    }

    /// The journal's and the pending set's writes of a batch, and the day markers they write.
    fn journal_and_pending<'a>(&'a self, batch: &'a ShardBatch) -> (Vec<Write<'a>>, Vec<Marker>) {
        let statements = &self.statements;
        let mut writes: Vec<Write<'a>> = Vec::new();
        let mut markers = Vec::new();
        for entry in &batch.journal {
            let day = day_of(entry.timestamp_ns);
            let offset = ordered(entry.offset);
            writes.push(self.write(
                &statements.put_journal,
                (entry.cid.as_str(), day, offset, encode(entry)),
            ));
            writes.push(self.write(
                &statements.put_journal_time,
                (
                    entry.partition as i64,
                    day,
                    entry.timestamp_ns,
                    offset,
                    entry.cid.as_str(),
                ),
            ));
            let marker = Marker::JournalDay {
                cid: entry.cid.clone(),
                day,
            };
            if !self.known(&marker) && !markers.contains(&marker) {
                // A day's marker outlives the entries of that day (written during it,
                // expiring a TTL later): it expires a day after them.
                let ttl = (self.options.journal_ttl_days + 1) * 86_400;
                writes.push(self.write(
                    &statements.put_journal_day,
                    (
                        entry.cid.as_str(),
                        day,
                        ttl.clamp(1, i32::MAX as i64) as i32,
                    ),
                ));
                markers.push(marker);
            }
        }
        let partition = batch.partition as i64;
        let mut pending: HashMap<&str, bool> = HashMap::new();
        for (cid, needed) in &batch.pending {
            pending.insert(cid, *needed);
        }
        for (cid, needed) in pending {
            writes.push(if needed {
                self.write(&statements.put_pending, (partition, cid))
            } else {
                self.write(&statements.delete_pending, (partition, cid))
            });
        }
        (writes, markers)
    }

    /// Pin rows first, then their entries (with `extra`, independent writes of the batch).
    async fn write_pins<'a>(
        &'a self,
        pins: &[&'a PinWrite],
        extra: Vec<Write<'a>>,
    ) -> Result<(), StoreError> {
        let statements = &self.statements;
        let rows: Vec<Write<'_>> = pins
            .iter()
            .map(|pin| match &pin.new {
                Some(row) => self.write(&statements.put_pin, (pin.requestid.as_str(), encode(row))),
                None => self.write(&statements.delete_pin, (pin.requestid.as_str(),)),
            })
            .collect();
        self.all(rows).await?;
        let width = self.options.listing_bucket_ns;
        let mut writes: Vec<Write<'a>> = extra;
        let mut markers = Vec::new();
        for pin in pins {
            let (new_listing, new_pin) = match &pin.new {
                Some(row) => {
                    let (listing, pin) = entries_of(row, width);
                    (listing, Some(pin))
                }
                None => (Vec::new(), None),
            };
            // The committed value's pin-list entry exists (written before its commit): an
            // unchanged one is not written again.
            let committed_pin = pin.old.as_ref().map(|old| entries_of(old, width).1);
            // The values whose entries go share most of them (a rollback names two or three):
            // each entry is deleted once.
            let mut deleted_listing: Vec<ListingEntry> = Vec::new();
            let mut deleted_pins: Vec<CidPinEntry> = Vec::new();
            for old in pin.old.iter().chain(pin.stale.iter()) {
                let (listing, cid_pin) = entries_of(old, width);
                for entry in listing {
                    if !new_listing.contains(&entry) && !deleted_listing.contains(&entry) {
                        deleted_listing.push(entry.clone());
                        writes.push(self.delete_listing(entry));
                    }
                }
                if new_pin.as_ref() != Some(&cid_pin) && !deleted_pins.contains(&cid_pin) {
                    deleted_pins.push(cid_pin.clone());
                    writes.push(self.write(
                        &statements.delete_cid_pin,
                        (cid_pin.cid, cid_pin.bucket, cid_pin.requestid),
                    ));
                }
            }
            if let Some(row) = &pin.new {
                let record = encode(&row.record);
                for entry in new_listing {
                    let marker = entry.marker();
                    if !self.known(&marker) && !markers.contains(&marker) {
                        writes.push(self.write(
                            &statements.put_listing_bucket,
                            (
                                entry.owner.clone(),
                                entry.kind,
                                entry.key_text(),
                                entry.bucket,
                            ),
                        ));
                        markers.push(marker);
                    }
                    writes.push(self.put_listing(entry, record.clone()));
                }
            }
            if let Some(CidPinEntry {
                cid,
                bucket,
                requestid,
            }) = new_pin.filter(|new| committed_pin.as_ref() != Some(new))
            {
                let marker = Marker::CidPins {
                    cid: cid.clone(),
                    bucket,
                };
                if !self.known(&marker) && !markers.contains(&marker) {
                    writes.push(self.write(&statements.put_cid_pin_bucket, (cid.clone(), bucket)));
                    markers.push(marker);
                }
                writes.push(self.write(&statements.put_cid_pin, (cid, bucket, requestid)));
            }
        }
        self.all(writes).await?;
        self.remember(markers);
        Ok(())
    }

    fn put_listing(&self, entry: ListingEntry, record: Vec<u8>) -> Write<'_> {
        let kind = entry.kind as usize;
        self.write(
            &self.statements.listing_put[kind],
            (
                entry.owner,
                entry.key,
                entry.bucket,
                entry.created,
                entry.requestid,
                record,
            ),
        )
    }

    fn delete_listing(&self, entry: ListingEntry) -> Write<'_> {
        let kind = entry.kind as usize;
        self.write(
            &self.statements.listing_delete[kind],
            (
                entry.owner,
                entry.key,
                entry.bucket,
                entry.created,
                entry.requestid,
            ),
        )
    }

    /// The commit row (static columns) and the changed counters: one statement, or one
    /// unlogged batch on the partition's key (a single-partition batch is applied atomically
    /// and in isolation; logging it would add the batchlog round trip for nothing). A fenced
    /// commit (`owner_epoch > 0`) is always a batch, led by `UPDATE … SET value = epoch … IF
    /// value = epoch` on the partition's epoch row: a conditional batch, so the whole commit
    /// applies only if the epoch is still the writer's (one Paxos round; `[applied] = false`
    /// is [`StoreError::Fenced`]). Not marked idempotent then.
    pub(crate) async fn commit_async(&self, commit: &Commit) -> Result<(), StoreError> {
        let statements = &self.statements;
        let partition = commit.partition as i64;
        let state = &commit.state;
        let attempt = state.attempt.as_ref().map(Attempt::to_bytes).transpose()?;
        let row = (
            state.batch as i64,
            state.next_offset.map(|offset| offset as i64),
            attempt,
            partition,
        );
        let fenced = commit.owner_epoch > 0;
        if commit.counters.is_empty() && !fenced {
            return self.exec(&statements.commit_row, row).await.map(drop);
        }
        let mut batch = Batch::new(BatchType::Unlogged);
        batch.set_consistency(self.options.consistency);
        batch.set_is_idempotent(!fenced);
        let mut values: Vec<Vec<Option<CqlValue>>> = Vec::new();
        if fenced {
            let epoch = Some(CqlValue::BigInt(epoch_value(commit.owner_epoch)?));
            batch.append_statement(statements.cas_owner_epoch.clone());
            values.push(vec![
                epoch.clone(),
                Some(CqlValue::BigInt(partition)),
                epoch,
            ]);
        }
        batch.append_statement(statements.commit_row.clone());
        values.push(vec![
            Some(CqlValue::BigInt(row.0)),
            row.1.map(CqlValue::BigInt),
            row.2.map(CqlValue::Blob),
            Some(CqlValue::BigInt(partition)),
        ]);
        for counter in &commit.counters {
            // Counters live in their commit's partition (the Commit names it once).
            if counter.partition != commit.partition {
                return Err(backend(format!(
                    "commit of partition {} carries a counter of partition {}",
                    commit.partition, counter.partition
                )));
            }
            batch.append_statement(statements.put_counter.clone());
            values.push(vec![
                Some(CqlValue::BigInt(counter.value)),
                Some(CqlValue::BigInt(partition)),
                Some(CqlValue::Text(counter.owner.clone())),
                Some(CqlValue::TinyInt(counter.status.code() as i8)),
            ]);
        }
        self.sent.add(values.len() as u64);
        let result = self
            .session()?
            .batch(&batch, values)
            .await
            .map_err(|e| backend(format!("commit of partition {}: {e}", commit.partition)))?;
        if !fenced || applied(result)? {
            return Ok(());
        }
        Err(StoreError::Fenced {
            partition: commit.partition,
            epoch: commit.owner_epoch,
            current: self.owner_epoch_async(commit.partition).await?.unwrap_or(0),
        })
    }

    /// The partition's owner epoch (`None`: never claimed).
    pub(crate) async fn owner_epoch_async(
        &self,
        partition: u32,
    ) -> Result<Option<u64>, StoreError> {
        Ok(rows::<(Option<i64>,)>(
            self.exec(&self.statements.owner_epoch, (partition as i64,))
                .await?,
        )?
        .into_iter()
        .next()
        .and_then(|(value,)| value)
        .map(|value| value as u64))
    }

    /// A new owner epoch: the first claim inserts 1 if no epoch row exists (`IF NOT EXISTS`),
    /// later ones read the epoch and compare-and-set it to the next (`IF value = ?`), again
    /// after a lost race, at most [`CLAIM_ATTEMPTS`] times.
    pub(crate) async fn claim_async(&self, partition: u32) -> Result<u64, StoreError> {
        let key = partition as i64;
        for _ in 0..CLAIM_ATTEMPTS {
            let (result, next) = match self.owner_epoch_async(partition).await? {
                None => (self.exec(&self.statements.claim_first, (key,)).await?, 1),
                Some(current) => {
                    let next = current + 1;
                    let values = (epoch_value(next)?, key, epoch_value(current)?);
                    (
                        self.exec(&self.statements.cas_owner_epoch, values).await?,
                        next,
                    )
                }
            };
            if applied(result)? {
                return Ok(next);
            }
        }
        Err(backend(format!(
            "claiming log partition {partition}: the owner epoch changed {CLAIM_ATTEMPTS} times \
             while claiming (another instance claims it in a loop?)"
        )))
    }

    pub(crate) async fn prune_journal_async(
        &self,
        partition: u32,
        before_ns: i64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let statements = &self.statements;
        let last_day = day_of(before_ns);
        let first_day = (last_day - self.options.journal_ttl_days).max(0);
        let mut pruned = 0;
        for day in first_day..=last_day {
            if pruned >= limit {
                break;
            }
            let found: Vec<(i64, i64, String)> = rows(
                self.exec(
                    &statements.journal_by_time,
                    (partition as i64, day, before_ns, limit_of(limit - pruned)),
                )
                .await?,
            )?;
            let mut deletes: Vec<Write<'_>> = Vec::new();
            for (recorded_ns, offset, cid) in found.into_iter().take(limit - pruned) {
                deletes.push(self.write(
                    &statements.delete_journal,
                    (cid, day_of(recorded_ns), offset),
                ));
                deletes.push(self.write(
                    &statements.delete_journal_time,
                    (partition as i64, day, recorded_ns, offset),
                ));
                pruned += 1;
            }
            self.all(deletes).await?;
        }
        Ok(pruned)
    }

    /// Log partitions with dead letters at or after `from`, in order.
    async fn dead_letter_partitions(
        &self,
        from: i64,
        limit: usize,
    ) -> Result<Vec<i64>, StoreError> {
        Ok(rows::<(i64,)>(
            self.exec(
                &self.statements.dead_letter_partitions,
                (from, limit_of(limit)),
            )
            .await?,
        )?
        .into_iter()
        .map(|(partition,)| partition)
        .collect())
    }

    pub(crate) async fn dead_letters_async(
        &self,
        after: Option<(u32, u64)>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let statements = &self.statements;
        let mut out = Vec::new();
        let mut next_partition = after.map(|(partition, _)| partition as i64).unwrap_or(0);
        while out.len() < limit {
            let partitions = self.dead_letter_partitions(next_partition, 64).await?;
            let Some(last) = partitions.last().copied() else {
                break;
            };
            for partition in partitions {
                let left = limit_of(limit - out.len());
                let result = match after {
                    Some((p, offset)) if p as i64 == partition => {
                        self.exec(
                            &statements.dead_letters_after,
                            (partition, ordered(offset), left),
                        )
                        .await?
                    }
                    _ => {
                        self.exec(&statements.dead_letters_from, (partition, ordered(0), left))
                            .await?
                    }
                };
                for (letter,) in rows::<(Vec<u8>,)>(result)? {
                    out.push(decode("dead letter", &letter)?);
                }
                if out.len() >= limit {
                    break;
                }
            }
            next_partition = last + 1;
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Per partition, oldest first, until a letter newer than the cutoff or the limit.
    pub(crate) async fn prune_dead_letters_async(
        &self,
        before_ns: i64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let statements = &self.statements;
        let mut pruned = 0;
        let mut next_partition = 0;
        while pruned < limit {
            let partitions = self.dead_letter_partitions(next_partition, 64).await?;
            let Some(last) = partitions.last().copied() else {
                break;
            };
            for partition in partitions {
                if pruned >= limit {
                    break;
                }
                let letters: Vec<(Vec<u8>,)> = rows(
                    self.exec(
                        &statements.dead_letters_from,
                        (partition, ordered(0), limit_of(limit - pruned)),
                    )
                    .await?,
                )?;
                let mut deletes: Vec<Write<'_>> = Vec::new();
                for (letter,) in letters {
                    let letter: DeadLetter = decode("dead letter", &letter)?;
                    if letter.dead_lettered_ns >= before_ns || pruned >= limit {
                        break;
                    }
                    deletes.push(self.write(
                        &statements.delete_dead_letter,
                        (partition, ordered(letter.offset)),
                    ));
                    pruned += 1;
                }
                self.all(deletes).await?;
            }
            next_partition = last + 1;
        }
        Ok(pruned)
    }
}

/// Compare-and-set rounds a claim tries before it gives up (each lost only to another claim).
const CLAIM_ATTEMPTS: usize = 16;

/// An owner epoch as the `bigint` it is stored as.
fn epoch_value(epoch: u64) -> Result<i64, StoreError> {
    i64::try_from(epoch).map_err(|_| backend(format!("owner epoch {epoch} out of range")))
}

/// The `[applied]` column (the first) of a conditional statement's or batch's result.
fn applied(result: QueryResult) -> Result<bool, StoreError> {
    let rows = result.into_rows_result().map_err(backend)?;
    let first = rows.rows::<Row>().map_err(backend)?.next();
    match first {
        Some(Ok(row)) => match row.columns.first() {
            Some(Some(CqlValue::Boolean(applied))) => Ok(*applied),
            _ => Err(backend(
                "conditional write: no [applied] column in the result",
            )),
        },
        Some(Err(error)) => Err(backend(error)),
        None => Err(backend("conditional write: an empty result")),
    }
}

/// Splits pin writes into rounds in which each request id appears at most once, keeping
/// their order (almost always one round).
fn rounds(pins: &[PinWrite]) -> Vec<Vec<&PinWrite>> {
    let mut rounds: Vec<Vec<&PinWrite>> = Vec::new();
    let mut round_of: HashMap<&str, usize> = HashMap::new();
    for pin in pins {
        let round = round_of
            .get(pin.requestid.as_str())
            .map(|r| r + 1)
            .unwrap_or(0);
        round_of.insert(&pin.requestid, round);
        if rounds.len() <= round {
            rounds.push(Vec::new());
        }
        rounds[round].push(pin);
    }
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(id: &str) -> PinWrite {
        PinWrite {
            requestid: id.into(),
            old: None,
            stale: Vec::new(),
            new: None,
        }
    }

    #[test]
    fn a_request_id_twice_goes_in_a_later_round() {
        let pins = [write("a"), write("b"), write("a"), write("a"), write("c")];
        let ids: Vec<Vec<&str>> = rounds(&pins)
            .iter()
            .map(|round| round.iter().map(|p| p.requestid.as_str()).collect())
            .collect();
        assert_eq!(ids, vec![vec!["a", "b", "c"], vec!["a"], vec!["a"]]);
    }
}
