//! The expiry index (`expiry_index`, schemas/cql/0003_expiry_index.cql): which pins of a log
//! partition are due when, split into [`EXPIRY_SLOTS`] CQL partitions per (log partition, hour
//! bucket) so that none grows without bound, and read window by window.

use std::collections::HashMap;

use pinhive_store::{ExpiryCursor, ExpiryEntry, ShardBatch, StoreError};
use xxhash_rust::xxh3::xxh3_64;

use crate::store::{limit_of, rows, ScyllaStore};

/// Width of a time bucket: an entry's CQL partition is `(log_partition, due_ns /
/// EXPIRY_BUCKET_NS, slot)`. Part of the table's key: changing it needs a new table.
pub const EXPIRY_BUCKET_NS: i64 = 3_600 * 1_000_000_000;

/// Slots per (log partition, bucket), by `xxh3_64(requestid) % EXPIRY_SLOTS`: the pins of one
/// CID (or of one bulk upload) expiring at one time still spread over every slot. Part of the
/// table's key.
pub const EXPIRY_SLOTS: u32 = 64;

/// Most slot reads one `expiry_due` call makes (one bucket's worth): a wide window (a restart
/// after hours down) is walked over several calls, each bounded.
pub const EXPIRY_READS_PER_CALL: usize = EXPIRY_SLOTS as usize;

fn bucket_of(due_ns: i64) -> i64 {
    due_ns.div_euclid(EXPIRY_BUCKET_NS)
}

/// The slot of a pin's entries (xxh3: stable across releases and platforms).
fn slot_of(requestid: &str) -> i32 {
    (xxh3_64(requestid.as_bytes()) % u64::from(EXPIRY_SLOTS)) as i32
}

impl ScyllaStore {
    /// The expiry-index writes of a batch: one single-row upsert or delete per entry, the last
    /// write of an entry in the batch winning.
    pub(crate) fn expiry_writes<'a>(
        &'a self,
        batch: &'a ShardBatch,
    ) -> Vec<futures::future::BoxFuture<'a, Result<(), StoreError>>> {
        let statements = &self.statements;
        let partition = batch.partition as i64;
        let mut last: HashMap<(i64, &str, &str), bool> = HashMap::new();
        for entry in &batch.expiry {
            last.insert((entry.due_ns, &entry.cid, &entry.requestid), entry.present);
        }
        last.into_iter()
            .map(|((due_ns, cid, requestid), present)| {
                let key = (
                    partition,
                    bucket_of(due_ns),
                    slot_of(requestid),
                    due_ns,
                    cid,
                    requestid,
                );
                if present {
                    self.write(&statements.put_expiry, key)
                } else {
                    self.write(&statements.delete_expiry, key)
                }
            })
            .collect()
    }

    /// Bucket by bucket over the window, slot by slot from the cursor's: `SELECT due_ns, cid,
    /// requestid … WHERE log_partition = ? AND bucket = ? AND slot = ? AND due_ns > ? AND
    /// due_ns <= ? LIMIT ?` (after the cursor's entry: `(due_ns, cid, requestid) > (?, ?, ?)
    /// AND (due_ns) <= (?)`), until `limit` entries or [`EXPIRY_READS_PER_CALL`] reads. A slot
    /// that fills the page may hold more: the cursor then stays in it, after the page's last
    /// entry.
    pub(crate) async fn expiry_due_async(
        &self,
        partition: u32,
        after_ns: i64,
        up_to_ns: i64,
        from: &ExpiryCursor,
        limit: usize,
    ) -> Result<(Vec<ExpiryEntry>, Option<ExpiryCursor>), StoreError> {
        if limit == 0 {
            return Ok((Vec::new(), Some(from.clone())));
        }
        if up_to_ns <= after_ns {
            return Ok((Vec::new(), None));
        }
        let statements = &self.statements;
        let log_partition = partition as i64;
        let first_bucket = bucket_of(after_ns.saturating_add(1));
        let last_bucket = bucket_of(up_to_ns);
        let (mut bucket, mut slot, mut after) = if from.bucket >= first_bucket {
            (from.bucket, from.slot, from.after.clone())
        } else {
            (first_bucket, 0, None)
        };
        let mut entries: Vec<ExpiryEntry> = Vec::new();
        let mut reads = 0;
        while bucket <= last_bucket {
            while slot < EXPIRY_SLOTS {
                if reads == EXPIRY_READS_PER_CALL {
                    let next = ExpiryCursor {
                        bucket,
                        slot,
                        after,
                    };
                    return Ok((entries, Some(next)));
                }
                reads += 1;
                let want = limit - entries.len();
                let slot_key = slot as i32;
                let result = match &after {
                    Some(after) => {
                        self.exec(
                            &statements.expiry_due_after,
                            (
                                log_partition,
                                bucket,
                                slot_key,
                                after.due_ns,
                                after.cid.as_str(),
                                after.requestid.as_str(),
                                up_to_ns,
                                limit_of(want),
                            ),
                        )
                        .await?
                    }
                    None => {
                        self.exec(
                            &statements.expiry_due_from,
                            (
                                log_partition,
                                bucket,
                                slot_key,
                                after_ns,
                                up_to_ns,
                                limit_of(want),
                            ),
                        )
                        .await?
                    }
                };
                let found: Vec<(i64, String, String)> = rows(result)?;
                let full = found.len() >= want;
                entries.extend(
                    found
                        .into_iter()
                        .take(want)
                        .map(|(due_ns, cid, requestid)| ExpiryEntry {
                            due_ns,
                            cid,
                            requestid,
                        }),
                );
                if full {
                    let next = ExpiryCursor {
                        bucket,
                        slot,
                        after: entries.last().cloned(),
                    };
                    return Ok((entries, Some(next)));
                }
                after = None;
                slot += 1;
            }
            slot = 0;
            bucket += 1;
        }
        Ok((entries, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_slots_are_stable() {
        // Fixed values: bucket and slot are part of the stored key, so they must never change.
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(EXPIRY_BUCKET_NS - 1), 0);
        assert_eq!(bucket_of(EXPIRY_BUCKET_NS), 1);
        assert_eq!(bucket_of(-1), -1);
        assert_eq!(bucket_of(1_796_083_200_000_000_000), 498_912);
        assert_eq!(slot_of(""), 2);
        let slots: std::collections::HashSet<i32> =
            (0..1_000).map(|i| slot_of(&format!("r-{i}"))).collect();
        assert!(slots.iter().all(|slot| (0..64).contains(slot)));
        assert_eq!(slots.len(), 64, "1,000 request ids reach every slot");
    }
}
