//! The embedded store: fjall (an LSM tree) on local disk, one keyspace per table.
//!
//! The tables are those of docs/data-model.md, each a keyspace. A shard batch's rows are
//! written as one fjall write batch and its commit as another (the first being atomic here is
//! never relied on: see the crate docs). Neither is fsynced: the log is the ground truth, the
//! commit is written in the same journal after the rows it covers, so a power loss loses rows
//! and commit together and the shard replays. Tokens and nodes are fsynced. The block cache,
//! memtables and journal are sized by [`StoreMemory`].

mod backup;
mod footprint;
mod watchdog;

use std::path::Path;

pub use backup::BackupSnapshot;
pub use footprint::TableFootprint;

use fjall::config::CompressionPolicy;
use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use pinhive_domain::{CidState, Cursor, PinRow, PinStatus};
use pinhive_events::NodeDescriptor;
use serde::de::DeserializeOwned;

use crate::keys;
use crate::merge::{self, ListingSource, MergeSource};
use crate::query::{NameMatch, PinPage, PinQuery};
use crate::{
    AnalyticsCheckpoint, Commit, CommitState, DeadLetter, ExpiryCursor, ExpiryEntry, JournalEntry,
    NodeCidCursor, Quarantine, S3Object, ShardBatch, Store, StoreError, TokenRecord,
    QUARANTINE_LIMIT,
};

pub struct EmbeddedStore {
    /// First, so it stops (and drops its table handles) before the database closes.
    watchdog: Option<watchdog::Watchdog>,
    db: Database,
    cids: Keyspace,
    pins: Keyspace,
    cid_pins: Keyspace,
    listing: Keyspace,
    commits: Keyspace,
    journal: Keyspace,
    journal_by_time: Keyspace,
    pending: Keyspace,
    node_cids: Keyspace,
    expiry: Keyspace,
    checkpoints: Keyspace,
    tokens: Keyspace,
    /// `i\0{id}` → secret hash; `o\0{owner}\0{id}` → token row of a live token.
    token_index: Keyspace,
    nodes: Keyspace,
    dead_letters: Keyspace,
    quarantine: Keyspace,
    s3_objects: Keyspace,
    s3_by_cid: Keyspace,
    analytics: Keyspace,
    /// Held while a partition's owner epoch is read and the write it guards is committed, so
    /// the check and the write are one step (claims and fenced commits of one process; the
    /// data directory's lock keeps other processes out).
    fence: std::sync::Mutex<()>,
    /// Serialises token writes with the upgrade of a token row read by `get_token`, so an old
    /// row's rewrite can never land after (and undo) a revocation.
    tokens_lock: std::sync::Mutex<()>,
}

/// Memory the embedded store may use, set explicitly (fjall's defaults have no overall cap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreMemory {
    /// Block cache shared by every table.
    pub cache_bytes: u64,
    /// Memtable size per table before it is flushed to disk.
    pub memtable_bytes: u64,
    /// Journal (write-ahead) size across tables before memtables are flushed (≥ 64 MiB); what
    /// a restart after a crash replays at most.
    pub journal_bytes: u64,
}

impl Default for StoreMemory {
    fn default() -> Self {
        StoreMemory {
            cache_bytes: 128 << 20,
            memtable_bytes: 4 << 20,
            journal_bytes: 64 << 20,
        }
    }
}

/// Layout of the tables this release writes (docs/data-model.md). A data directory written by
/// an earlier layout is refused at open rather than misread.
const LAYOUT: &[u8] = b"2";
const LAYOUT_KEY: &[u8] = b"#layout";

/// Up to `limit` rows of `keyspace` after key `after`, decoded, in key order.
fn scan_page<T: DeserializeOwned>(
    keyspace: &Keyspace,
    what: &'static str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<T>, StoreError> {
    let start = match after {
        Some(after) => std::ops::Bound::Excluded(after.as_bytes().to_vec()),
        None => std::ops::Bound::Unbounded,
    };
    let mut out = Vec::new();
    for guard in keyspace
        .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded))
        .take(limit)
    {
        let (_, value) = guard.into_inner().map_err(backend)?;
        out.push(decode(what, &value)?);
    }
    Ok(out)
}

fn s3_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut out = bucket.as_bytes().to_vec();
    out.push(0);
    out.extend_from_slice(key.as_bytes());
    out
}

fn s3_cid_key(cid: &str, bucket: &str, key: &str) -> Vec<u8> {
    let mut out = cid.as_bytes().to_vec();
    out.push(0);
    out.extend_from_slice(&s3_key(bucket, key));
    out
}

/// A partition's owner epoch, in the commits keyspace beside its commit row (`… 0`) and
/// counters (`… 1 owner NUL status`): `partition 2`, an 8-byte big-endian value.
fn owner_epoch_key(partition: u32) -> Vec<u8> {
    let mut key = partition.to_be_bytes().to_vec();
    key.push(2);
    key
}

fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

use crate::row::{decode, encode};

fn token_id_key(id: &str) -> Vec<u8> {
    [b"i\0", id.as_bytes()].concat()
}

/// Owner names hold no control characters (`valid_owner`), so `\0` ends one.
fn token_owner_key(owner: &str, id: &str) -> Vec<u8> {
    [b"o\0", owner.as_bytes(), b"\0", id.as_bytes()].concat()
}

/// A quarantine entry's key: `partition` (4 bytes, big-endian), then the CID.
fn quarantine_key(partition: u32, cid: &str) -> Vec<u8> {
    let mut key = partition.to_be_bytes().to_vec();
    key.extend_from_slice(cid.as_bytes());
    key
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir` with the default memory budget.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, StoreMemory::default())
    }

    /// Opens (creating if needed) the store in `dir`. Fails with [`StoreError::Locked`] if
    /// another process has it open, and with [`StoreError::Layout`] if an earlier release's
    /// layout is found.
    pub fn open_with(dir: &Path, memory: StoreMemory) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(backend)?;
        let db = Database::builder(dir)
            .cache_size(memory.cache_bytes)
            .max_journaling_size(memory.journal_bytes.max(64 << 20))
            .open()
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("lock") || text.contains("Locked") || text.contains("WouldBlock") {
                    StoreError::Locked {
                        path: dir.display().to_string(),
                    }
                } else {
                    backend(e)
                }
            })?;
        let memtable = memory.memtable_bytes.max(1 << 20);
        // Every level compressed: rows of one table repeat most of their bytes (field
        // layout, node addresses in delegates, owner names), so LZ4 halves the disk per pin.
        let open = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(memtable)
                    .data_block_compression_policy(CompressionPolicy::all(CompressionType::Lz4))
            })
            .map_err(backend)
        };
        let checkpoints = open("checkpoints")?;
        match checkpoints.get(LAYOUT_KEY).map_err(backend)? {
            Some(layout) if layout.as_ref() == LAYOUT => {}
            Some(layout) => {
                return Err(StoreError::Layout {
                    path: dir.display().to_string(),
                    found: String::from_utf8_lossy(&layout).into_owned(),
                })
            }
            None if db.keyspace_exists("pin_index") => {
                return Err(StoreError::Layout {
                    path: dir.display().to_string(),
                    found: "1".into(),
                })
            }
            None => {
                checkpoints.insert(LAYOUT_KEY, LAYOUT).map_err(backend)?;
            }
        }
        let mut store = EmbeddedStore {
            watchdog: None,
            cids: open("cids")?,
            pins: open("pins")?,
            cid_pins: open("cid_pins")?,
            listing: open("listing")?,
            commits: open("commits")?,
            journal: open("journal")?,
            journal_by_time: open("journal_by_time")?,
            pending: open("pending")?,
            node_cids: open("node_cids")?,
            expiry: open("expiry")?,
            checkpoints,
            tokens: open("tokens")?,
            token_index: open("token_index")?,
            nodes: open("nodes")?,
            dead_letters: open("dead_letters")?,
            quarantine: open("quarantine")?,
            s3_objects: open("s3_objects")?,
            s3_by_cid: open("s3_by_cid")?,
            analytics: open("analytics")?,
            fence: std::sync::Mutex::new(()),
            tokens_lock: std::sync::Mutex::new(()),
            db,
        };
        let tables = store
            .keyspace_names()
            .into_iter()
            .map(|name| Ok((name.clone(), store.existing_keyspace(&name)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        store.watchdog = Some(
            watchdog::Watchdog::start(
                store.db.clone(),
                tables,
                memtable,
                memory.journal_bytes.max(64 << 20),
            )
            .map_err(backend)?,
        );
        Ok(store)
    }

    /// Adds a shard batch's rows to a write batch.
    fn stage_rows(&self, write: &mut fjall::OwnedWriteBatch, batch: &ShardBatch) {
        for pin in &batch.pins {
            let new_entries = pin.new.as_ref().map(Self::pin_entries).unwrap_or_default();
            for old in pin.old.iter().chain(pin.stale.iter()) {
                for (key, value) in Self::pin_entries(old) {
                    if !new_entries.iter().any(|(new, _)| *new == key) {
                        // A listing entry has a value (the record); a pin-list entry has none.
                        let keyspace = if value.is_some() {
                            &self.listing
                        } else {
                            &self.cid_pins
                        };
                        write.remove(keyspace, key);
                    }
                }
            }
            for (key, value) in new_entries {
                match value {
                    Some(value) => write.insert(&self.listing, key, value),
                    None => write.insert(&self.cid_pins, key, []),
                }
            }
            match &pin.new {
                Some(row) => write.insert(&self.pins, pin.requestid.as_bytes(), encode(row)),
                None => write.remove(&self.pins, pin.requestid.as_bytes()),
            }
        }
        for entry in &batch.journal {
            write.insert(
                &self.journal,
                keys::journal_key(&entry.cid, entry.offset),
                encode(entry),
            );
            write.insert(
                &self.journal_by_time,
                keys::journal_time_key(entry.partition, entry.timestamp_ns, entry.offset),
                entry.cid.as_bytes(),
            );
        }
        for (cid, needed) in &batch.pending {
            let key = keys::pending_key(batch.partition, cid);
            if *needed {
                write.insert(&self.pending, key, []);
            } else {
                write.remove(&self.pending, key);
            }
        }
        // The last write of a (node, CID) pair wins: one write per key in the fjall batch.
        let mut node_cids = std::collections::BTreeMap::new();
        for entry in &batch.node_cids {
            let key = keys::node_cid_key(&entry.node, batch.partition, &entry.cid);
            node_cids.insert(key, entry.present);
        }
        for (key, present) in node_cids {
            if present {
                write.insert(&self.node_cids, key, []);
            } else {
                write.remove(&self.node_cids, key);
            }
        }
        // The last write of an entry wins, as for the node index.
        let mut expiry = std::collections::BTreeMap::new();
        for entry in &batch.expiry {
            let key = keys::expiry_key(batch.partition, entry.due_ns, &entry.cid, &entry.requestid);
            expiry.insert(key, entry.present);
        }
        for (key, present) in expiry {
            if present {
                write.insert(&self.expiry, key, []);
            } else {
                write.remove(&self.expiry, key);
            }
        }
        for cid in &batch.cids {
            match &cid.state {
                Some(state) => write.insert(&self.cids, cid.cid.as_bytes(), encode(state)),
                None => write.remove(&self.cids, cid.cid.as_bytes()),
            }
        }
    }

    /// Adds a commit row and its counters to a write batch.
    fn stage_commit(&self, write: &mut fjall::OwnedWriteBatch, commit: &Commit) {
        write.insert(
            &self.commits,
            keys::commit_key(commit.partition),
            encode(&commit.state),
        );
        for counter in &commit.counters {
            write.insert(
                &self.commits,
                keys::counter_key(&counter.owner, counter.status, counter.partition),
                counter.value.to_be_bytes(),
            );
        }
    }

    /// The partition's current owner epoch (0: never claimed).
    fn owner_epoch(&self, partition: u32) -> Result<u64, StoreError> {
        Ok(self
            .get_word(&self.commits, "owner epoch", &owner_epoch_key(partition))?
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Commits `write` if `commit`'s owner epoch is the partition's current one (checked and
    /// written under the fence lock), else [`StoreError::Fenced`].
    fn commit_fenced(
        &self,
        commit: &Commit,
        write: fjall::OwnedWriteBatch,
    ) -> Result<(), StoreError> {
        if commit.owner_epoch == 0 {
            return write.commit().map_err(backend);
        }
        let _fence = self.fence.lock().map_err(backend)?;
        let current = self.owner_epoch(commit.partition)?;
        if commit.owner_epoch != current {
            return Err(StoreError::Fenced {
                partition: commit.partition,
                epoch: commit.owner_epoch,
                current,
            });
        }
        write.commit().map_err(backend)
    }

    /// Raw batched write rate baseline for benchmarks: `batches` × `per_batch` inserts of
    /// `value_len`-byte values into a scratch keyspace, committed like shard batches.
    pub fn write_baseline(
        &self,
        batches: usize,
        per_batch: usize,
        value_len: usize,
    ) -> Result<(), StoreError> {
        let scratch = self
            .db
            .keyspace("bench_scratch", KeyspaceCreateOptions::default)
            .map_err(backend)?;
        let value = vec![7u8; value_len];
        for b in 0..batches {
            let mut batch = self.db.batch();
            for i in 0..per_batch {
                let key = format!("{b:016}{i:016}");
                batch.insert(&scratch, key.as_bytes(), value.as_slice());
            }
            batch.commit().map_err(backend)?;
        }
        Ok(())
    }

    fn lock_tokens(&self) -> Result<std::sync::MutexGuard<'_, ()>, StoreError> {
        self.tokens_lock
            .lock()
            .map_err(|_| StoreError::Backend("token lock poisoned".into()))
    }

    /// A token row, its id index entry and its owner listing entry, in one synced batch
    /// (the caller holds `tokens_lock`).
    fn write_token(&self, secret_hash: &str, token: &TokenRecord) -> Result<(), StoreError> {
        let id = crate::token_id(secret_hash);
        let row = encode(token);
        let mut write = self.db.batch();
        write.insert(&self.tokens, secret_hash.as_bytes(), row.as_slice());
        write.insert(&self.token_index, token_id_key(&id), secret_hash.as_bytes());
        let owner_key = token_owner_key(&token.owner, &id);
        match token.revoked_ns {
            None => write.insert(&self.token_index, owner_key, row.as_slice()),
            Some(_) => write.remove(&self.token_index, owner_key),
        }
        write.commit().map_err(backend)?;
        self.db.persist(PersistMode::SyncAll).map_err(backend)
    }

    /// One page of every CID state, in CID order, after `after`: a scan of the whole table,
    /// for one-time upgrades only ([`crate::StoreError`] on a row that does not decode).
    pub fn cid_states_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CidState>, StoreError> {
        scan_page(&self.cids, "cid state", after, limit)
    }

    /// One page of every pin row, in requestid order, after `after`: a scan of the whole
    /// table, for one-time upgrades only.
    pub fn pin_rows_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PinRow>, StoreError> {
        scan_page(&self.pins, "pin row", after, limit)
    }

    fn get_decoded<T: DeserializeOwned>(
        &self,
        keyspace: &Keyspace,
        what: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match keyspace.get(key).map_err(backend)? {
            Some(bytes) => decode(what, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// An 8-byte value (checkpoints, counters), big-endian.
    fn get_word(
        &self,
        keyspace: &Keyspace,
        what: &'static str,
        key: &[u8],
    ) -> Result<Option<[u8; 8]>, StoreError> {
        match keyspace.get(key).map_err(backend)? {
            Some(bytes) => bytes
                .as_ref()
                .try_into()
                .map(Some)
                .map_err(|_| StoreError::Corrupt {
                    what,
                    reason: "not 8 bytes".into(),
                }),
            None => Ok(None),
        }
    }

    /// Index sources for a query, each a key prefix; merged newest first.
    fn sources(&self, query: &PinQuery) -> Vec<Vec<u8>> {
        if !query.cids.is_empty() {
            return query
                .cids
                .iter()
                .map(|cid| keys::cid_prefix(&query.owner, cid))
                .collect();
        }
        if let Some((name, NameMatch::Exact | NameMatch::IExact)) = &query.name {
            return vec![keys::name_prefix(&query.owner, name)];
        }
        query
            .statuses
            .iter()
            .map(|status| keys::status_prefix(&query.owner, *status))
            .collect()
    }

    /// Iterator over one prefix of the listing table, newest first, honouring
    /// `before`/`after`, yielding ((inverted time, requestid), encoded record).
    fn source_iter<'a>(
        &'a self,
        prefix: Vec<u8>,
        query: &PinQuery,
    ) -> Box<dyn Iterator<Item = Result<ListingEntry, StoreError>> + 'a> {
        let mut start = prefix.clone();
        if let Some(before) = query.before_ns {
            // created < before  <=>  inverted >= MAX - before + 1
            start.extend_from_slice(
                &(u64::MAX - before.max(0) as u64)
                    .saturating_add(1)
                    .to_be_bytes(),
            );
        }
        let mut end = prefix.clone();
        match query.after_ns {
            // created > after  <=>  inverted < MAX - after
            Some(after) => end.extend_from_slice(&keys::inverted(after)),
            None => end.extend_from_slice(&[0xff; 9]),
        }
        let prefix_len = prefix.len();
        Box::new(self.listing.range(start..end).map(move |guard| {
            let (key, value) = guard.into_inner().map_err(backend)?;
            let position = keys::split(&key, prefix_len).ok_or(StoreError::Corrupt {
                what: "listing key",
                reason: "short key".into(),
            })?;
            Ok((position, value))
        }))
    }

    /// The listing entries and CID pin-list entry of a pin row value, with their values.
    fn pin_entries(row: &PinRow) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let record = &row.record;
        let encoded = encode(record);
        let mut entries: Vec<(Vec<u8>, Option<Vec<u8>>)> = keys::index_keys(record)
            .into_iter()
            .map(|key| (key, Some(encoded.clone())))
            .collect();
        entries.push((
            keys::cid_pin_key(&record.canonical_cid(), row.bucket, &record.requestid),
            None,
        ));
        entries
    }
}

/// (inverted creation time, request id) of a listing entry, and the encoded record.
type ListingEntry = ((u64, String), fjall::Slice);

/// One range of the listing table, for the shared k-way merge.
struct Range<'a>(Box<dyn Iterator<Item = Result<ListingEntry, StoreError>> + 'a>);

impl ListingSource for Range<'_> {
    type Value = fjall::Slice;

    fn next_entry(&mut self) -> Result<Option<ListingEntry>, StoreError> {
        self.0.next().transpose()
    }
}

impl Store for EmbeddedStore {
    fn load_cid(&self, cid: &str) -> Result<Option<CidState>, StoreError> {
        self.get_decoded(&self.cids, "cid state", cid.as_bytes())
            .map_err(|error| error.of_row(cid))
    }

    fn load_pin(&self, requestid: &str) -> Result<Option<PinRow>, StoreError> {
        self.get_decoded(&self.pins, "pin", requestid.as_bytes())
            .map_err(|error| error.of_row(requestid))
    }

    fn cid_pins(
        &self,
        cid: &str,
        from: &Cursor,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        use std::ops::Bound;
        let prefix = keys::cid_pin_prefix(cid);
        let start = match &from.after {
            Some(after) => Bound::Excluded(keys::cid_pin_key(cid, from.bucket, after)),
            None => Bound::Included(keys::cid_pin_key(cid, from.bucket, "")),
        };
        let mut end = prefix.clone();
        end.extend_from_slice(&[0xff; 9]);
        let mut out = Vec::new();
        for guard in self
            .cid_pins
            .range::<Vec<u8>, _>((start, Bound::Excluded(end)))
            .take(limit)
        {
            let key = guard.key().map_err(backend)?;
            let rest = key.get(prefix.len()..).unwrap_or_default();
            let (bucket, requestid) = rest.split_at(8.min(rest.len()));
            let bucket =
                u64::from_be_bytes(bucket.try_into().map_err(|_| StoreError::Corrupt {
                    what: "cid pin key",
                    reason: "short key".into(),
                })?);
            out.push((bucket, String::from_utf8_lossy(requestid).into_owned()));
        }
        Ok(out)
    }

    fn write_shard_batch(&self, batch: &ShardBatch) -> Result<(), StoreError> {
        let mut write = self.db.batch();
        self.stage_rows(&mut write, batch);
        write.commit().map_err(backend)
    }

    fn persists_atomically(&self) -> bool {
        true
    }

    fn persist_batch(
        &self,
        _attempt: Option<&Commit>,
        rows: &ShardBatch,
        commit: &Commit,
    ) -> Result<(), StoreError> {
        // One fjall write batch is atomic: rows and commit land together or not at all, so
        // there is never an attempt to roll back and it is not written.
        // The owner epoch is checked in the same step: a stale owner writes no row either.
        let mut write = self.db.batch();
        self.stage_rows(&mut write, rows);
        self.stage_commit(&mut write, commit);
        self.commit_fenced(commit, write)
    }

    /// Increments the partition's epoch under the fence lock, fsynced (an epoch is never
    /// handed out twice, even across a crash).
    fn claim_partition(&self, partition: u32) -> Result<u64, StoreError> {
        let _fence = self.fence.lock().map_err(backend)?;
        let epoch = self.owner_epoch(partition)? + 1;
        self.commits
            .insert(owner_epoch_key(partition), epoch.to_be_bytes())
            .map_err(backend)?;
        self.db.persist(PersistMode::SyncAll).map_err(backend)?;
        Ok(epoch)
    }

    fn committed(&self, partition: u32) -> Result<CommitState, StoreError> {
        Ok(self
            .get_decoded(&self.commits, "commit row", &keys::commit_key(partition))?
            .unwrap_or_default())
    }

    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        let mut write = self.db.batch();
        self.stage_commit(&mut write, commit);
        self.commit_fenced(commit, write)
    }

    fn checkpoint(&self, consumer: &str, partition: u32) -> Result<Option<u64>, StoreError> {
        Ok(self
            .get_word(
                &self.checkpoints,
                "checkpoint",
                &keys::checkpoint_key(consumer, partition),
            )?
            .map(u64::from_be_bytes))
    }

    fn set_checkpoint(
        &self,
        consumer: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), StoreError> {
        self.checkpoints
            .insert(
                keys::checkpoint_key(consumer, partition),
                offset.to_be_bytes(),
            )
            .map_err(backend)
    }

    fn counter(
        &self,
        owner: &str,
        status: PinStatus,
        partition: u32,
    ) -> Result<Option<i64>, StoreError> {
        Ok(self
            .get_word(
                &self.commits,
                "counter",
                &keys::counter_key(owner, status, partition),
            )?
            .map(i64::from_be_bytes))
    }

    fn pending_cids(
        &self,
        partition: u32,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let prefix = partition.to_be_bytes();
        let mut start = prefix.to_vec();
        if let Some(after) = after {
            start.extend_from_slice(after.as_bytes());
            start.push(0);
        }
        // CIDs are ASCII, so 0xff sorts after every key of this partition.
        let mut end = prefix.to_vec();
        end.push(0xff);
        let mut out = Vec::new();
        for guard in self.pending.range(start..end).take(limit) {
            let key = guard.key().map_err(backend)?;
            out.push(String::from_utf8_lossy(&key[4..]).into_owned());
        }
        Ok(out)
    }

    /// One range read of the `node NUL partition` prefix from the cursor's CID on (the
    /// cursor's slot is always 0: the embedded index is not split); one entry past `limit` is
    /// read to tell whether the walk goes on.
    fn node_cids(
        &self,
        node: &str,
        partition: u32,
        from: &NodeCidCursor,
        limit: usize,
    ) -> Result<(Vec<String>, Option<NodeCidCursor>), StoreError> {
        use std::ops::Bound;
        if limit == 0 {
            return Ok((Vec::new(), Some(from.clone())));
        }
        let prefix = keys::node_cid_prefix(node, partition);
        let start = match &from.after {
            Some(after) => Bound::Excluded(keys::node_cid_key(node, partition, after)),
            None => Bound::Included(prefix.clone()),
        };
        let end = match keys::prefix_end(&prefix) {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        let mut cids = Vec::new();
        for guard in self
            .node_cids
            .range::<Vec<u8>, _>((start, end))
            .take(limit + 1)
        {
            let key = guard.key().map_err(backend)?;
            let cid = key.get(prefix.len()..).unwrap_or_default();
            cids.push(String::from_utf8_lossy(cid).into_owned());
        }
        if cids.len() <= limit {
            return Ok((cids, None));
        }
        cids.truncate(limit);
        let next = NodeCidCursor {
            slot: 0,
            after: cids.last().cloned(),
        };
        Ok((cids, Some(next)))
    }

    /// One range read of the partition's entries from the window's start (or after the
    /// cursor's entry) to its end; one entry past `limit` is read to tell whether the walk
    /// goes on. The cursor's bucket and slot are always 0: the embedded index is one ordered
    /// range per partition.
    fn expiry_due(
        &self,
        partition: u32,
        after_ns: i64,
        up_to_ns: i64,
        from: &ExpiryCursor,
        limit: usize,
    ) -> Result<(Vec<ExpiryEntry>, Option<ExpiryCursor>), StoreError> {
        use std::ops::Bound;
        if limit == 0 {
            return Ok((Vec::new(), Some(from.clone())));
        }
        if up_to_ns <= after_ns {
            return Ok((Vec::new(), None));
        }
        let start = match &from.after {
            Some(after) => Bound::Excluded(keys::expiry_key(
                partition,
                after.due_ns,
                &after.cid,
                &after.requestid,
            )),
            None => Bound::Included(keys::expiry_time_prefix(partition, after_ns + 1)),
        };
        let end = match up_to_ns.checked_add(1) {
            Some(next) => Bound::Excluded(keys::expiry_time_prefix(partition, next)),
            None => match keys::prefix_end(&partition.to_be_bytes()) {
                Some(end) => Bound::Excluded(end),
                None => Bound::Unbounded,
            },
        };
        let mut entries = Vec::new();
        for guard in self
            .expiry
            .range::<Vec<u8>, _>((start, end))
            .take(limit + 1)
        {
            let key = guard.key().map_err(backend)?;
            let (due_ns, cid, requestid) =
                keys::parse_expiry_key(&key).ok_or_else(|| StoreError::Corrupt {
                    what: "expiry index key",
                    reason: format!(
                        "{} bytes, not partition, time, cid NUL requestid",
                        key.len()
                    ),
                })?;
            entries.push(ExpiryEntry {
                due_ns,
                cid,
                requestid,
            });
        }
        if entries.len() <= limit {
            return Ok((entries, None));
        }
        entries.truncate(limit);
        let next = ExpiryCursor {
            bucket: 0,
            slot: 0,
            after: entries.last().cloned(),
        };
        Ok((entries, Some(next)))
    }

    fn list_pins(&self, query: &PinQuery, partitions: u32) -> Result<PinPage, StoreError> {
        let key_decides = merge::key_decides(query);
        let by_status = query.cids.is_empty() && !query.is_indexed();
        // Per status, how many pins the owner has (the counters): a status with none is not
        // read at all (its range may hold the deletions of pins that moved on, which an
        // LSM must step over), and without time bounds a source stops after that many.
        let mut totals = Vec::with_capacity(query.statuses.len());
        if by_status {
            for status in &query.statuses {
                totals.push(crate::total_count(self, &query.owner, *status, partitions)?);
            }
        }
        let unbounded_in_time = query.before_ns.is_none() && query.after_ns.is_none();
        let mut sources: Vec<MergeSource<Range<'_>>> = if by_status {
            query
                .statuses
                .iter()
                .zip(&totals)
                .filter(|(_, total)| **total > 0)
                .map(|(status, total)| {
                    MergeSource::new(
                        Range(self.source_iter(keys::status_prefix(&query.owner, *status), query)),
                        (unbounded_in_time && key_decides).then_some(*total),
                    )
                })
                .collect()
        } else {
            self.sources(query)
                .into_iter()
                .map(|prefix| MergeSource::new(Range(self.source_iter(prefix, query)), None))
                .collect()
        };
        merge::merge_page(query, &mut sources, &totals)
    }

    fn prune_journal(
        &self,
        partition: u32,
        before_ns: i64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let start = keys::journal_time_key(partition, 0, 0);
        let end = keys::journal_time_key(partition, before_ns, 0);
        let mut write = self.db.batch();
        let mut pruned = 0;
        for guard in self.journal_by_time.range(start..end).take(limit) {
            let (key, cid) = guard.into_inner().map_err(backend)?;
            let offset = key
                .get(12..20)
                .and_then(|raw| raw.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or(StoreError::Corrupt {
                    what: "journal time key",
                    reason: "short key".into(),
                })?;
            write.remove(
                &self.journal,
                keys::journal_key(&String::from_utf8_lossy(&cid), offset),
            );
            write.remove(&self.journal_by_time, key);
            pruned += 1;
        }
        write.commit().map_err(backend)?;
        Ok(pruned)
    }

    fn prune_dead_letters(&self, before_ns: i64, limit: usize) -> Result<usize, StoreError> {
        // Dead letters are keyed by (partition, offset): per partition, oldest first.
        let mut write = self.db.batch();
        let mut pruned = 0;
        let mut partition_start: Option<Vec<u8>> = Some(Vec::new());
        while let Some(start) = partition_start.take() {
            let mut next_partition = None;
            for guard in self.dead_letters.range(start..) {
                let (key, value) = guard.into_inner().map_err(backend)?;
                let letter: DeadLetter = decode("dead letter", &value)?;
                if letter.dead_lettered_ns < before_ns && pruned < limit {
                    write.remove(&self.dead_letters, key);
                    pruned += 1;
                    continue;
                }
                // The rest of this partition is newer: go on with the next partition (taken
                // from the key, which orders the scan).
                if pruned < limit {
                    next_partition = key
                        .get(..4)
                        .and_then(|raw| <[u8; 4]>::try_from(raw).ok())
                        .and_then(|raw| u32::from_be_bytes(raw).checked_add(1))
                        .map(|p| p.to_be_bytes().to_vec());
                }
                break;
            }
            partition_start = next_partition;
        }
        write.commit().map_err(backend)?;
        Ok(pruned)
    }

    fn journal(
        &self,
        cid: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let prefix = keys::journal_prefix(cid);
        let start = match after {
            Some(offset) => keys::journal_key(cid, offset.saturating_add(1)),
            None => prefix.clone(),
        };
        let mut end = prefix;
        end.extend_from_slice(&[0xff; 9]);
        let mut out = Vec::new();
        for guard in self.journal.range(start..end).take(limit) {
            let (_, value) = guard.into_inner().map_err(backend)?;
            out.push(decode("journal entry", &value)?);
        }
        Ok(out)
    }

    fn put_token(&self, secret_hash: &str, token: &TokenRecord) -> Result<(), StoreError> {
        let _guard = self.lock_tokens()?;
        self.write_token(secret_hash, token)
    }

    fn get_token(&self, secret_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let Some(bytes) = self.tokens.get(secret_hash.as_bytes()).map_err(backend)? else {
            return Ok(None);
        };
        if crate::row::version_of(&bytes) >= 3 {
            return decode("token", &bytes).map(Some);
        }
        // Made before the token index: rewritten once, so it is listed and revocable. Read
        // again under the lock: a revocation written meanwhile is kept, not overwritten.
        let _guard = self.lock_tokens()?;
        let Some(bytes) = self.tokens.get(secret_hash.as_bytes()).map_err(backend)? else {
            return Ok(None);
        };
        let token: TokenRecord = decode("token", &bytes)?;
        if crate::row::version_of(&bytes) < 3 {
            self.write_token(secret_hash, &token)?;
        }
        Ok(Some(token))
    }

    fn token_by_id(&self, id: &str) -> Result<Option<(String, TokenRecord)>, StoreError> {
        let hash = match self.token_index.get(token_id_key(id)).map_err(backend)? {
            Some(hash) => String::from_utf8_lossy(&hash).into_owned(),
            // A token made before the index, not used since: its id is its hash's prefix, so
            // one bounded prefix read of the token table finds it.
            None if id.len() == 16 => match self.tokens.prefix(id.as_bytes()).next() {
                Some(guard) => {
                    let (key, _) = guard.into_inner().map_err(backend)?;
                    String::from_utf8_lossy(&key).into_owned()
                }
                None => return Ok(None),
            },
            None => return Ok(None),
        };
        Ok(self.get_token(&hash)?.map(|token| (hash, token)))
    }

    fn list_tokens(
        &self,
        owner: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, TokenRecord)>, StoreError> {
        let prefix = token_owner_key(owner, "");
        let start = match after {
            Some(after) => {
                let mut key = token_owner_key(owner, after);
                key.push(0);
                key
            }
            None => prefix.clone(),
        };
        let mut end = prefix.clone();
        end.push(0xff);
        let mut out = Vec::new();
        for guard in self.token_index.range(start..end).take(limit) {
            let (key, value) = guard.into_inner().map_err(backend)?;
            let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            out.push((id, decode("token", &value)?));
        }
        Ok(out)
    }

    fn put_node(&self, node: &NodeDescriptor) -> Result<(), StoreError> {
        self.nodes
            .insert(node.id.as_bytes(), encode(node))
            .map_err(backend)?;
        self.db.persist(PersistMode::SyncAll).map_err(backend)
    }

    fn remove_node(&self, id: &str) -> Result<(), StoreError> {
        self.nodes.remove(id.as_bytes()).map_err(backend)?;
        self.db.persist(PersistMode::SyncAll).map_err(backend)
    }

    fn list_nodes(&self) -> Result<Vec<NodeDescriptor>, StoreError> {
        let mut out = Vec::new();
        // The node table is small by nature (one row per IPFS node).
        for guard in self.nodes.iter() {
            let (_, value) = guard.into_inner().map_err(backend)?;
            out.push(decode("node", &value)?);
        }
        Ok(out)
    }

    fn put_s3_object(
        &self,
        bucket: &str,
        key: &str,
        object: Option<&S3Object>,
    ) -> Result<(), StoreError> {
        let previous = self.get_s3_object(bucket, key)?;
        let mut write = self.db.batch();
        if let Some(previous) = &previous {
            write.remove(&self.s3_by_cid, s3_cid_key(&previous.cid, bucket, key));
        }
        match object {
            Some(object) => {
                write.insert(&self.s3_by_cid, s3_cid_key(&object.cid, bucket, key), []);
                write.insert(&self.s3_objects, s3_key(bucket, key), encode(object));
            }
            None => write.remove(&self.s3_objects, s3_key(bucket, key)),
        }
        write.commit().map_err(backend)
    }

    fn get_s3_object(&self, bucket: &str, key: &str) -> Result<Option<S3Object>, StoreError> {
        self.get_decoded(&self.s3_objects, "s3 object", &s3_key(bucket, key))
    }

    fn list_s3_objects(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<S3Object>, StoreError> {
        let start = match after {
            Some(after) => {
                let mut start = s3_key(bucket, after);
                start.push(0);
                start
            }
            None => s3_key(bucket, prefix),
        };
        let range_prefix = s3_key(bucket, prefix);
        let mut out = Vec::new();
        for guard in self.s3_objects.range(start..) {
            let (key, value) = guard.into_inner().map_err(backend)?;
            if !key.starts_with(&range_prefix) || out.len() >= limit {
                break;
            }
            out.push(decode("s3 object", &value)?);
        }
        Ok(out)
    }

    fn s3_objects_by_cid(&self, cid: &str, limit: usize) -> Result<Vec<S3Object>, StoreError> {
        let mut prefix = cid.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for guard in self.s3_by_cid.prefix(&prefix).take(limit) {
            let key = guard.key().map_err(backend)?;
            let rest = &key[prefix.len()..];
            let Some(split) = rest.iter().position(|b| *b == 0) else {
                continue;
            };
            let bucket = String::from_utf8_lossy(&rest[..split]).into_owned();
            let object_key = String::from_utf8_lossy(&rest[split + 1..]).into_owned();
            if let Some(object) = self.get_s3_object(&bucket, &object_key)? {
                if object.cid == cid {
                    out.push(object);
                }
            }
        }
        Ok(out)
    }

    fn put_analytics_checkpoint(
        &self,
        partition: u32,
        checkpoint: &AnalyticsCheckpoint,
    ) -> Result<(), StoreError> {
        self.analytics
            .insert(partition.to_be_bytes(), encode(checkpoint))
            .map_err(backend)
    }

    fn analytics_checkpoint(
        &self,
        partition: u32,
    ) -> Result<Option<AnalyticsCheckpoint>, StoreError> {
        match self
            .analytics
            .get(partition.to_be_bytes())
            .map_err(backend)?
        {
            Some(bytes) => decode("analytics checkpoint", &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// One keyspace, `quarantine`, keyed partition and CID (one range read per partition).
    fn put_quarantine(&self, entry: &Quarantine) -> Result<(), StoreError> {
        let key = quarantine_key(entry.partition, &entry.cid);
        if self.quarantine.get(&key).map_err(backend)?.is_some() {
            return Ok(());
        }
        if self.quarantined(entry.partition)?.len() >= QUARANTINE_LIMIT {
            return Err(StoreError::Backend(format!(
                "log partition {} has {QUARANTINE_LIMIT} quarantined CIDs already; clear some",
                entry.partition
            )));
        }
        self.quarantine.insert(key, encode(entry)).map_err(backend)
    }

    fn quarantined(&self, partition: u32) -> Result<Vec<Quarantine>, StoreError> {
        let mut out = Vec::new();
        for guard in self
            .quarantine
            .prefix(partition.to_be_bytes())
            .take(QUARANTINE_LIMIT)
        {
            let (_, value) = guard.into_inner().map_err(backend)?;
            out.push(decode("quarantine entry", &value)?);
        }
        Ok(out)
    }

    fn clear_quarantine(&self, partition: u32, cid: &str) -> Result<bool, StoreError> {
        let key = quarantine_key(partition, cid);
        let present = self.quarantine.get(&key).map_err(backend)?.is_some();
        self.quarantine.remove(key).map_err(backend)?;
        Ok(present)
    }

    fn put_dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        self.dead_letters
            .insert(
                keys::dead_letter_key(letter.partition, letter.offset),
                encode(letter),
            )
            .map_err(backend)
    }

    fn dead_letters(
        &self,
        after: Option<(u32, u64)>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        use std::ops::Bound;
        // Keyset, exclusive: the letter at the cursor was on the previous page. (An excluded
        // bound, not `offset + 1`, so a cursor at `u64::MAX` moves on to the next partition.)
        let start = match after {
            Some((partition, offset)) => Bound::Excluded(keys::dead_letter_key(partition, offset)),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for guard in self
            .dead_letters
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take(limit)
        {
            let (_, value) = guard.into_inner().map_err(backend)?;
            out.push(decode("dead letter", &value)?);
        }
        Ok(out)
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Memtables go to disk too (not only the journal): a restart then has no journal to
        // replay, which would cost time and memory (every entry back in a memtable).
        self.flush_tables()?;
        self.db.persist(PersistMode::SyncAll).map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> (Box<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        (Box::new(store), dir)
    }

    /// The same data directory opened again (the first store is dropped by then).
    fn reopen(dir: &tempfile::TempDir) -> Box<dyn Store> {
        Box::new(EmbeddedStore::open(dir.path()).unwrap())
    }

    /// The store contract, one test per check.
    mod contract {
        crate::store_contract_tests!(super::fresh, reopen super::reopen);
    }

    /// A token row an earlier release wrote (version 2, admin bit) works after the upgrade
    /// with the scopes it implied, is found by id before it is used (a prefix read of the
    /// token table), and is rewritten as version 3 and listed once it has been read.
    #[test]
    fn a_legacy_token_is_found_by_id_and_indexed_once_read() {
        use pinhive_domain::tokens::Scopes;
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let hash = crate::hash_secret("ph_old");
        let id = crate::token_id(&hash);
        let old = crate::row::v2::TokenRecord {
            owner: "alice".into(),
            created_ns: 3,
            admin: true,
        };
        let mut bytes = vec![0xFF, 2];
        bytes.extend(bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap());
        store.tokens.insert(hash.as_bytes(), bytes).unwrap();
        assert!(store.list_tokens("alice", None, 10).unwrap().is_empty());
        let (found_hash, found) = store.token_by_id(&id).unwrap().unwrap();
        assert_eq!(found_hash, hash);
        assert_eq!(found.scopes, Scopes::all());
        assert_eq!(found.name, "alice");
        // The read rewrote it: version 3, listed under its owner.
        let raw = store.tokens.get(hash.as_bytes()).unwrap().unwrap();
        assert_eq!(crate::row::version_of(&raw), crate::row::ROW_VERSION);
        let listed = store.list_tokens("alice", None, 10).unwrap();
        assert_eq!(listed, vec![(id, found)]);
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store.set_checkpoint("c", 0, 9).unwrap();
            store.flush().unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.checkpoint("c", 0).unwrap(), Some(9));
    }

    /// A data directory of the earlier layout (pins inside their CID's row, keyspace
    /// `pin_index`) is refused with an error naming it, never misread.
    #[test]
    fn an_earlier_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::builder(dir.path()).open().unwrap();
            db.keyspace("pin_index", KeyspaceCreateOptions::default)
                .unwrap()
                .insert("k", "v")
                .unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        let error = EmbeddedStore::open(dir.path()).err().unwrap();
        assert!(
            matches!(&error, StoreError::Layout { found, .. } if found == "1"),
            "{error}"
        );
        assert!(
            error.to_string().contains("earlier pinhive release"),
            "{error}"
        );
        // A directory this release wrote opens again.
        let fresh = tempfile::tempdir().unwrap();
        drop(EmbeddedStore::open(fresh.path()).unwrap());
        EmbeddedStore::open(fresh.path()).unwrap();
    }

    #[test]
    fn second_open_reports_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _store = EmbeddedStore::open(dir.path()).unwrap();
        let error = EmbeddedStore::open(dir.path()).err().unwrap();
        assert!(matches!(error, StoreError::Locked { .. }), "{error}");
    }
}
