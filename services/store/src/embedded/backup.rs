//! Offline backup and restore of the embedded store, logically: every keyspace's entries in
//! key order, read from one snapshot across keyspaces, and written back into a fresh store in
//! bounded batches. Independent of fjall's file layout (a restore is compacted, and works
//! across fjall releases that read the same rows). `pinhive state export|import` drives it.

use fjall::config::CompressionPolicy;
use fjall::{CompressionType, KeyspaceCreateOptions, PersistMode, Readable};

use super::{backend, EmbeddedStore};
use crate::StoreError;

/// One entry of a keyspace: key and value.
pub type BackupEntry = Result<(Vec<u8>, Vec<u8>), StoreError>;

/// Bytes of entries per write batch of a restore.
const RESTORE_BATCH_BYTES: usize = 4 << 20;

/// A consistent view of the whole store for a backup.
pub struct BackupSnapshot<'a> {
    store: &'a EmbeddedStore,
    snapshot: fjall::Snapshot,
}

impl EmbeddedStore {
    /// A snapshot across every keyspace: what a backup reads.
    pub fn backup_snapshot(&self) -> BackupSnapshot<'_> {
        BackupSnapshot {
            store: self,
            snapshot: self.db.snapshot(),
        }
    }

    /// Writes `entries` (in ascending key order, as a backup holds them) into keyspace `name`,
    /// which must be empty but for the layout marker a fresh store writes; creates keyspaces
    /// this release does not open. Returns the entries written. Call [`EmbeddedStore::sync`]
    /// after the last keyspace.
    pub fn restore_keyspace<I>(&self, name: &str, entries: I) -> Result<u64, StoreError>
    where
        I: IntoIterator<Item = BackupEntry>,
    {
        let keyspace = self
            .db
            .keyspace(name, || {
                KeyspaceCreateOptions::default()
                    .data_block_compression_policy(CompressionPolicy::all(CompressionType::Lz4))
            })
            .map_err(backend)?;
        let existing = keyspace
            .iter()
            .take(2)
            .map(|guard| guard.key().map(|k| k.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        if !(existing.is_empty() || existing == [super::LAYOUT_KEY.to_vec()]) {
            return Err(StoreError::Backend(format!(
                "keyspace {name} is not empty: restore into a new store only"
            )));
        }
        let (mut written, mut batch_bytes) = (0u64, 0usize);
        let mut batch = self.db.batch();
        let mut previous: Option<Vec<u8>> = None;
        for entry in entries {
            let (key, value) = entry?;
            if previous.as_ref().is_some_and(|p| *p >= key) {
                return Err(StoreError::Corrupt {
                    what: "backup",
                    reason: format!("keyspace {name}: keys out of order"),
                });
            }
            batch_bytes += key.len() + value.len();
            batch.insert(&keyspace, key.clone(), value);
            previous = Some(key);
            written += 1;
            if batch_bytes >= RESTORE_BATCH_BYTES {
                std::mem::replace(&mut batch, self.db.batch())
                    .commit()
                    .map_err(backend)?;
                batch_bytes = 0;
            }
        }
        batch.commit().map_err(backend)?;
        Ok(written)
    }

    /// Makes everything written durable (fsync).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncAll).map_err(backend)
    }
}

impl BackupSnapshot<'_> {
    /// Every keyspace of the store, by name (sorted).
    pub fn keyspaces(&self) -> Vec<String> {
        self.store.keyspace_names()
    }

    /// The entries of keyspace `name` in key order, as of the snapshot.
    pub fn entries(
        &self,
        name: &str,
    ) -> Result<impl Iterator<Item = BackupEntry> + '_, StoreError> {
        let keyspace = self.store.existing_keyspace(name)?;
        Ok(self.snapshot.iter(&keyspace).map(|guard| {
            let (key, value) = guard.into_inner().map_err(backend)?;
            Ok((key.to_vec(), value.to_vec()))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_store_holds_every_entry_of_every_keyspace() {
        let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = EmbeddedStore::open(from.path()).unwrap();
        for i in 0..5000u32 {
            source
                .pins
                .insert(i.to_be_bytes(), vec![i as u8; 100])
                .unwrap();
        }
        source.tokens.insert("t", "v").unwrap();
        let snapshot = source.backup_snapshot();
        // Written after the snapshot: not in the backup.
        source.nodes.insert("late", "x").unwrap();
        let names = snapshot.keyspaces();
        assert!(names.contains(&"pins".to_string()) && names.contains(&"quarantine".to_string()));
        let target = EmbeddedStore::open(to.path()).unwrap();
        let mut total = 0;
        for name in &names {
            total += target
                .restore_keyspace(name, snapshot.entries(name).unwrap())
                .unwrap();
        }
        target.sync().unwrap();
        assert_eq!(total, 5000 + 1 + 1); // pins, the token, the layout marker
        let dump = |store: &EmbeddedStore| {
            let snapshot = store.backup_snapshot();
            names
                .iter()
                .map(|n| snapshot.entries(n).unwrap().map(Result::unwrap).collect())
                .collect::<Vec<Vec<_>>>()
        };
        source.nodes.remove("late").unwrap();
        assert_eq!(dump(&source), dump(&target));
        // Not into a store that holds data.
        let error = target
            .restore_keyspace("pins", std::iter::empty())
            .unwrap_err();
        assert!(error.to_string().contains("not empty"), "{error}");
        let error = EmbeddedStore::open(tempfile::tempdir().unwrap().path())
            .unwrap()
            .restore_keyspace(
                "pins",
                vec![Ok((b"b".to_vec(), vec![])), Ok((b"a".to_vec(), vec![]))],
            )
            .unwrap_err();
        assert!(error.to_string().contains("out of order"), "{error}");
    }
}
