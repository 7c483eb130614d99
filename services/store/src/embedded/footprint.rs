//! What each table of the embedded store occupies on disk, and an offline major compaction:
//! the per-table bytes per pin `pinhive bench scale` reports (docs/capacity.md).

use super::{backend, EmbeddedStore};
use crate::StoreError;

/// One table (fjall keyspace) of the store on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFootprint {
    pub name: String,
    /// Bytes of its flushed tables (SSTables) on disk, compressed as stored. Entries still in
    /// a memtable are not counted: call [`EmbeddedStore::flush_tables`] first.
    pub disk_bytes: u64,
    /// Entries as fjall estimates them (overwritten versions and tombstones not yet compacted
    /// away count too).
    pub approximate_entries: u64,
}

impl EmbeddedStore {
    /// Every table of the store with its bytes on disk, by name.
    pub fn footprint(&self) -> Result<Vec<TableFootprint>, StoreError> {
        let mut tables = Vec::new();
        for name in self.keyspace_names() {
            let keyspace = self.existing_keyspace(&name)?;
            tables.push(TableFootprint {
                disk_bytes: keyspace.disk_space(),
                approximate_entries: keyspace.approximate_len() as u64,
                name,
            });
        }
        Ok(tables)
    }

    /// Writes every table's memtable out as a table on disk and waits for it.
    pub fn flush_tables(&self) -> Result<(), StoreError> {
        for name in self.keyspace_names() {
            self.existing_keyspace(&name)?
                .rotate_memtable_and_wait()
                .map_err(backend)?;
        }
        Ok(())
    }

    /// Flushes, then rewrites every table into one sorted run (major compaction), dropping
    /// overwritten versions and tombstones no reader needs. It blocks for as long as
    /// rewriting the whole store takes: an offline step (benchmarks), never on a serving path.
    pub fn compact_all(&self) -> Result<(), StoreError> {
        self.flush_tables()?;
        for name in self.keyspace_names() {
            self.existing_keyspace(&name)?
                .major_compact()
                .map_err(backend)?;
        }
        Ok(())
    }

    pub(super) fn keyspace_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .db
            .list_keyspace_names()
            .iter()
            .map(|name| name.to_string())
            .collect();
        names.sort();
        names
    }

    /// An existing keyspace by name (opening it with its stored options).
    pub(super) fn existing_keyspace(&self, name: &str) -> Result<fjall::Keyspace, StoreError> {
        if !self.db.keyspace_exists(name) {
            return Err(StoreError::Backend(format!("no keyspace {name}")));
        }
        self.db
            .keyspace(name, fjall::KeyspaceCreateOptions::default)
            .map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pins_table(store: &EmbeddedStore) -> TableFootprint {
        store
            .footprint()
            .unwrap()
            .into_iter()
            .find(|table| table.name == "pins")
            .unwrap()
    }

    #[test]
    fn flushed_rows_are_counted_and_compaction_drops_overwritten_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        // Incompressible values, so the sizes are the data's, not LZ4's.
        let value = |i: u32, round: u32| -> Vec<u8> {
            (0..200u32)
                .map(|j| (i.wrapping_mul(2_654_435_761) ^ j.wrapping_mul(40_503) ^ round) as u8)
                .collect()
        };
        for round in 0..3 {
            for i in 0..2000u32 {
                store.pins.insert(i.to_be_bytes(), value(i, round)).unwrap();
            }
            store.flush_tables().unwrap();
        }
        let before = pins_table(&store);
        // Three versions of 2000 rows of 200 bytes, on disk.
        assert!(before.disk_bytes > 3 * 2000 * 150, "{before:?}");
        assert!(before.approximate_entries >= 2000, "{before:?}");
        store.compact_all().unwrap();
        let after = pins_table(&store);
        assert!(after.disk_bytes > 2000 * 150, "{after:?}");
        assert!(
            after.disk_bytes < before.disk_bytes / 2,
            "{before:?} → {after:?}"
        );
        for i in [0u32, 999, 1999] {
            assert_eq!(
                store.pins.get(i.to_be_bytes()).unwrap().unwrap().as_ref(),
                value(i, 2)
            );
        }
        let names: Vec<String> = store
            .footprint()
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert!(names.contains(&"listing".to_string()) && names.contains(&"journal".to_string()));
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }
}
