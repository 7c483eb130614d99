//! The quarantine (`quarantine`, schemas/cql/0004_quarantine.cql): the CIDs a shard
//! dead-letters because a stored row they need cannot be decoded. One CQL partition per log
//! partition, clustered by CID, at most [`QUARANTINE_LIMIT`] rows: every read is one bounded
//! range of one partition.

use pinhive_store::{Quarantine, StoreError, QUARANTINE_LIMIT};

use crate::store::{decode, encode, limit_of, rows, ScyllaStore};

impl ScyllaStore {
    /// Whether `cid` has an entry in `partition` (a point read).
    async fn is_quarantined(&self, partition: i64, cid: &str) -> Result<bool, StoreError> {
        let found: Vec<(String,)> = rows(
            self.exec(&self.statements.quarantine_cid, (partition, cid))
                .await?,
        )?;
        Ok(!found.is_empty())
    }

    /// A point read (an existing entry is kept: nothing more), then the partition's CIDs up
    /// to the limit (`LIMIT`), then one insert. No LWT: the shard of the log partition is
    /// the only writer of its entries (an operator only deletes them).
    pub(crate) async fn put_quarantine_async(&self, entry: &Quarantine) -> Result<(), StoreError> {
        let partition = i64::from(entry.partition);
        if self.is_quarantined(partition, &entry.cid).await? {
            return Ok(());
        }
        let held: Vec<(String,)> = rows(
            self.exec(
                &self.statements.quarantine_cids,
                (partition, limit_of(QUARANTINE_LIMIT)),
            )
            .await?,
        )?;
        if held.len() >= QUARANTINE_LIMIT {
            return Err(StoreError::Backend(format!(
                "log partition {} has {QUARANTINE_LIMIT} quarantined CIDs already; clear some",
                entry.partition
            )));
        }
        self.exec(
            &self.statements.put_quarantine,
            (partition, entry.cid.as_str(), encode(entry)),
        )
        .await
        .map(drop)
    }

    /// The partition's entries in CID order: one range read, `LIMIT` [`QUARANTINE_LIMIT`].
    pub(crate) async fn quarantined_async(
        &self,
        partition: u32,
    ) -> Result<Vec<Quarantine>, StoreError> {
        let entries: Vec<(Vec<u8>,)> = rows(
            self.exec(
                &self.statements.quarantined,
                (i64::from(partition), limit_of(QUARANTINE_LIMIT)),
            )
            .await?,
        )?;
        entries
            .iter()
            .take(QUARANTINE_LIMIT)
            .map(|(entry,)| decode("quarantine entry", entry))
            .collect()
    }

    /// A point read, then a delete only if the entry is there (no tombstone for a CID that
    /// was never quarantined).
    pub(crate) async fn clear_quarantine_async(
        &self,
        partition: u32,
        cid: &str,
    ) -> Result<bool, StoreError> {
        let partition = i64::from(partition);
        if !self.is_quarantined(partition, cid).await? {
            return Ok(false);
        }
        self.exec(&self.statements.delete_quarantine, (partition, cid))
            .await?;
        Ok(true)
    }
}
