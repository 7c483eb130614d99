//! The node index (`node_cids`, schemas/cql/0002_node_cids.cql): which CIDs of a log
//! partition may have a replica on an IPFS node, split into [`NODE_CID_SLOTS`] CQL partitions
//! per (node, log partition) so that none grows without bound.

use std::collections::HashMap;

use pinhive_store::{NodeCidCursor, ShardBatch, StoreError};
use xxhash_rust::xxh3::xxh3_64;

use crate::store::{limit_of, rows, ScyllaStore};

/// Slots per (node, log partition): the CQL partition of an entry is `(node, log_partition,
/// xxh3_64(cid) % NODE_CID_SLOTS)`. Part of the table's key: changing it needs a new table.
pub const NODE_CID_SLOTS: u32 = 64;

/// The slot of `cid`'s entries (xxh3, like the domain's allocator: stable across releases and
/// platforms).
pub(crate) fn node_cid_slot(cid: &str) -> i32 {
    (xxh3_64(cid.as_bytes()) % u64::from(NODE_CID_SLOTS)) as i32
}

impl ScyllaStore {
    /// The node-index writes of a batch: one single-row upsert or delete per (node, CID), the
    /// last write of a pair in the batch winning.
    pub(crate) fn node_cid_writes<'a>(
        &'a self,
        batch: &'a ShardBatch,
    ) -> Vec<futures::future::BoxFuture<'a, Result<(), StoreError>>> {
        let statements = &self.statements;
        let partition = batch.partition as i64;
        let mut last: HashMap<(&str, &str), bool> = HashMap::new();
        for entry in &batch.node_cids {
            last.insert((&entry.node, &entry.cid), entry.present);
        }
        last.into_iter()
            .map(|((node, cid), present)| {
                let key = (node, partition, node_cid_slot(cid), cid);
                if present {
                    self.write(&statements.put_node_cid, key)
                } else {
                    self.write(&statements.delete_node_cid, key)
                }
            })
            .collect()
    }

    /// Slot by slot from the cursor's: `SELECT cid … WHERE node = ? AND log_partition = ? AND
    /// slot = ? [AND cid > ?] LIMIT ?` until `limit` CIDs (at most [`NODE_CID_SLOTS`] reads a
    /// call, each bounded by `LIMIT`). A slot that fills the page may hold more: the cursor
    /// then stays in it, after the page's last CID.
    pub(crate) async fn node_cids_async(
        &self,
        node: &str,
        partition: u32,
        from: &NodeCidCursor,
        limit: usize,
    ) -> Result<(Vec<String>, Option<NodeCidCursor>), StoreError> {
        if limit == 0 {
            return Ok((Vec::new(), Some(from.clone())));
        }
        let statements = &self.statements;
        let partition = partition as i64;
        let mut cids: Vec<String> = Vec::new();
        let mut after = from.after.clone();
        for slot in from.slot..NODE_CID_SLOTS {
            let want = limit - cids.len();
            let slot_key = slot as i32;
            let result = match &after {
                Some(after) => {
                    self.exec(
                        &statements.node_cids_after,
                        (node, partition, slot_key, after.as_str(), limit_of(want)),
                    )
                    .await?
                }
                None => {
                    self.exec(
                        &statements.node_cids_from,
                        (node, partition, slot_key, limit_of(want)),
                    )
                    .await?
                }
            };
            let found: Vec<(String,)> = rows(result)?;
            let full = found.len() >= want;
            cids.extend(found.into_iter().take(want).map(|(cid,)| cid));
            if full {
                let next = NodeCidCursor {
                    slot,
                    after: cids.last().cloned(),
                };
                return Ok((cids, Some(next)));
            }
            after = None;
        }
        Ok((cids, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_stable_and_spread() {
        // Fixed values: the slot is part of the stored key, so it must never change. XXH3-64 of
        // the empty input is the published test vector 0x2D06800538D394C2.
        assert_eq!(xxh3_64(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(node_cid_slot(""), 2);
        assert_eq!(
            node_cid_slot("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"),
            56
        );
        let slots: std::collections::HashSet<i32> = (0..1_000)
            .map(|i| node_cid_slot(&format!("bafkrei{i:052}")))
            .collect();
        assert!(slots.iter().all(|slot| (0..64).contains(slot)));
        assert_eq!(slots.len(), 64, "1,000 CIDs reach every slot");
    }
}
