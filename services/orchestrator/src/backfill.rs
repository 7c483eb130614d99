//! One-time upgrade of an embedded data directory written before the node index and the
//! expiry index existed (releases before issue 12): every CID state's replicas go into the
//! node index (`node_cids`), and every pin whose `meta.expires_at` is set goes into its
//! partition's expiry index. Without it, node walks (re-replication, drains) and anti-entropy
//! would not see replicas placed by the earlier release, and its pins would never expire.
//!
//! Run at start, before any shard: it reads both tables whole, once, in pages (bounded
//! memory), then persists a mark so that later starts skip it. The writes are idempotent (an
//! interrupted backfill is simply run again) and need no commit: both indexes are supersets of
//! what they index (see `ShardBatch::node_cids`), and a moot expiry entry costs one moot
//! `PinExpired`. A data directory created by this release is marked at its first start (both
//! tables are empty).

use std::collections::BTreeMap;

use pinhive_domain::writes::held_on;
use pinhive_store::{EmbeddedStore, ExpiryWrite, NodeCidWrite, ShardBatch, Store, StoreError};

use crate::expiry::persisted_through;

/// The checkpoint (consumer name, partition 0) that says the backfill ran.
pub const BACKFILL_MARK: &str = "#backfill/indexes";
/// Rows read per page.
const PAGE: usize = 4096;

/// What a backfill wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Backfilled {
    pub cid_states: u64,
    pub node_entries: u64,
    pub pins: u64,
    pub expiry_entries: u64,
}

/// Backfills the indexes of `store` for a deployment of `partitions` log partitions, unless
/// it ran already (`None`).
pub fn backfill_indexes(
    store: &EmbeddedStore,
    partitions: u32,
) -> Result<Option<Backfilled>, StoreError> {
    if store.checkpoint(BACKFILL_MARK, 0)?.is_some() {
        return Ok(None);
    }
    let partition_of = |cid: &str| pinhive_log::partition_for(cid.as_bytes(), partitions);
    let mut done = Backfilled::default();

    let mut after: Option<String> = None;
    loop {
        let states = store.cid_states_page(after.as_deref(), PAGE)?;
        let Some(last) = states.last() else { break };
        after = Some(last.cid.clone());
        let mut batches: BTreeMap<u32, ShardBatch> = BTreeMap::new();
        for state in &states {
            let partition = partition_of(&state.cid);
            let batch = batches.entry(partition).or_insert_with(|| ShardBatch {
                partition,
                ..ShardBatch::default()
            });
            for node in held_on(state) {
                batch.node_cids.push(NodeCidWrite {
                    node: node.clone(),
                    cid: state.cid.clone(),
                    present: true,
                });
            }
        }
        done.cid_states += states.len() as u64;
        for batch in batches.values().filter(|b| !b.is_empty()) {
            done.node_entries += batch.node_cids.len() as u64;
            store.write_shard_batch(batch)?;
        }
    }

    // An expiry goes where the partition's expiry task will read it: at its time, or just
    // after the last window read if that time is past (as `ExpiryMark::due_ns` places it).
    let mut through: BTreeMap<u32, i64> = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let rows = store.pin_rows_page(after.as_deref(), PAGE)?;
        let Some(last) = rows.last() else { break };
        after = Some(last.record.requestid.clone());
        let mut batches: BTreeMap<u32, ShardBatch> = BTreeMap::new();
        for row in &rows {
            let Some(expiry) = row.expiry() else { continue };
            let cid = row.record.canonical_cid();
            let partition = partition_of(&cid);
            let mark = match through.get(&partition) {
                Some(mark) => *mark,
                None => {
                    let mark = persisted_through(store, partition)?;
                    through.insert(partition, mark);
                    mark
                }
            };
            batches
                .entry(partition)
                .or_insert_with(|| ShardBatch {
                    partition,
                    ..ShardBatch::default()
                })
                .expiry
                .push(ExpiryWrite {
                    due_ns: expiry.ns().max(mark.saturating_add(1)),
                    cid,
                    requestid: row.record.requestid.clone(),
                    present: true,
                });
        }
        done.pins += rows.len() as u64;
        for batch in batches.values() {
            done.expiry_entries += batch.expiry.len() as u64;
            store.write_shard_batch(batch)?;
        }
    }
    store.flush()?;
    store.set_checkpoint(BACKFILL_MARK, 0, 1)?;
    Ok(Some(done))
}
