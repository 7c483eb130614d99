//! The store: materialized state (per-CID state, pin rows), listing indexes, the journal that
//! backs pin history, consumer checkpoints, tokens and nodes.
//!
//! [`Store`] promises only what ScyllaDB can keep: each write is atomic per partition key, never
//! across keys. A shard writes one [`ShardBatch`] of rows (pins with their listing entries,
//! journal, pending set, node index, CID states last), then one [`Commit`] (checkpoint, batch
//! number and counters: one partition, atomic). The attempt, written to the commit row before
//! the rows, holds the committed value of every row the batch writes (but the node index, a
//! superset that needs no undo), so an interrupted batch is rolled back to the committed state
//! whatever prefix of it reached the store. The table design, and
//! its mapping onto ScyllaDB, is in docs/data-model.md.
//!
//! Implementations: [`embedded::EmbeddedStore`] (fjall LSM on local disk). The ScyllaDB adapter
//! implements the same trait and must pass [`contract`].

mod attempt;
#[cfg(any(test, feature = "contract-tests"))]
pub mod contract;
pub mod embedded;
mod keys;
pub mod merge;
pub mod query;
pub mod row;

use std::collections::BTreeMap;

use pinhive_domain::{CidState, Cursor, PinRecord, PinRow, PinStatus};
use pinhive_events::{Event, NodeDescriptor};
use serde::{Deserialize, Serialize};

pub use embedded::EmbeddedStore;
pub use query::{NameMatch, PinPage, PinQuery};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store i/o error: {0}")]
    Backend(String),
    #[error("stored value is corrupt ({what}): {reason}")]
    Corrupt { what: &'static str, reason: String },
    /// A row read by its key that cannot be decoded: the key says which row (a CID state's
    /// key is its CID, a pin row's its request id), so a shard can quarantine the CID whose
    /// records need it instead of retrying its batch forever.
    #[error("stored {what} {key} is corrupt: {reason}")]
    CorruptRow {
        what: &'static str,
        key: String,
        reason: String,
    },
    /// A row a later pinhive release wrote (a newer row version): not corrupt. A shard holds
    /// its partition at a record that needs it (never quarantines) until an upgraded instance
    /// runs the partition.
    #[error("stored {what} has row version {version}, written by a later pinhive release (this release reads versions 0 to {ROW_VERSION}): the partition waits for an upgraded instance", ROW_VERSION = crate::row::ROW_VERSION)]
    NewerRelease { what: &'static str, version: u8 },
    #[error("data directory {path} is in use by another pinhive process (stop it, or use the admin API)")]
    Locked { path: String },
    #[error("data directory {path} holds store layout {found}, written by an earlier pinhive release; this release writes layout 2 (docs/data-model.md) and cannot read it: serve it with the release that wrote it, or start from an empty data directory")]
    Layout { path: String, found: String },
    /// A commit (or attempt) of an owner the partition has since been claimed from: another
    /// instance owns the partition now, and nothing of the commit was written.
    #[error("log partition {partition} is owned by epoch {current} now; the write of owner epoch {epoch} was refused (fenced)")]
    Fenced {
        partition: u32,
        epoch: u64,
        current: u64,
    },
}

impl StoreError {
    /// A stored value that cannot be decoded: retrying cannot help (not transient).
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. } | StoreError::CorruptRow { .. }
        )
    }

    /// `Corrupt` of the row read under `key` (the other errors pass unchanged).
    pub fn of_row(self, key: &str) -> StoreError {
        match self {
            StoreError::Corrupt { what, reason } => StoreError::CorruptRow {
                what,
                key: key.to_string(),
                reason,
            },
            other => other,
        }
    }
}

/// A pin row write. The store writes (or, for `new: None`, deletes) the row and maintains the
/// listing entries and the CID's pin list from it: entries of `old` (the committed value) and
/// of every `stale` value that `new` does not have are removed. `stale` names, when rolling an
/// interrupted batch back, the values that batch may have left: the row as read back, and the
/// value the batch attempted to write (its entries may be in the store, or still arrive,
/// whatever the row reads back as).
#[derive(Clone, Debug, PartialEq)]
pub struct PinWrite {
    pub requestid: String,
    pub old: Option<PinRow>,
    pub stale: Vec<PinRow>,
    pub new: Option<PinRow>,
}

/// A CID state row write (`None` deletes the row).
#[derive(Clone, Debug, PartialEq)]
pub struct CidWrite {
    pub cid: String,
    pub state: Option<CidState>,
}

/// The committed value of a row a batch is about to write: what a rollback puts back.
/// Persisted in the commit row: a store that keeps the attempt as bytes uses
/// [`Attempt::to_bytes`] and [`Attempt::from_bytes`] (which reads earlier releases' layout).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // one per row of a batch, serialized at once
pub enum Undo {
    Pin {
        requestid: String,
        row: Option<PinRow>,
        /// The value the batch writes (`None`: it deletes the row). A rollback removes its
        /// listing and pin-list entries even when the row does not read back as it: a write
        /// of the batch that failed may still land, and entries may outlive their row.
        /// `None` also in an attempt of a release before this field (layout 1).
        attempted: Option<PinRow>,
    },
    Cid {
        cid: String,
        state: Option<CidState>,
    },
}

/// The commit row of one log partition, written atomically (one partition of the commit
/// table, with the partition's counters): before a batch's rows, to record what they hold
/// now (`attempt`), and after them, to commit the batch (checkpoint, counters). A shard that
/// finds an attempt it did not commit puts those rows back (their undo) before anything else,
/// so every batch starts from exactly the committed state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct CommitState {
    /// Number of committed batches (diagnostics).
    pub batch: u64,
    /// Offset the partition's shard reads next.
    pub next_offset: Option<u64>,
    /// The batch being written: the committed value of every row it writes.
    pub attempt: Option<Attempt>,
}

/// A batch in flight (bounded by the batch size).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Attempt {
    pub batch: u64,
    pub undo: Vec<Undo>,
}

/// One atomic commit: the new commit state and the counters whose values changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Commit {
    pub partition: u32,
    pub state: CommitState,
    pub counters: Vec<CounterRow>,
    /// The writer's owner epoch ([`Store::claim_partition`]): a commit whose epoch is not the
    /// partition's current one (below it: the partition was claimed since) is refused with
    /// [`StoreError::Fenced`], atomically with the commit (nothing of it is written).
    /// 0: unfenced (written whatever the epoch).
    pub owner_epoch: u64,
}

/// Counter scope of the pins of every owner (per status).
pub const SCOPE_ALL_PINS: &str = "#all";
/// Counter scope of desired replicas (status field: `Pinned`).
pub const SCOPE_REPLICAS_DESIRED: &str = "#replicas_desired";
/// Counter scope of pinned replicas (status field: `Pinned`).
pub const SCOPE_REPLICAS_PINNED: &str = "#replicas_pinned";

/// Counter scope of the replicas (allocated or pinned) node `node` holds (status field:
/// `Pinned`): summed over partitions, 0 means the node holds nothing (a drain is complete).
pub fn node_scope(node: &str) -> String {
    format!("#node/{node}")
}

/// True if `name` may own pins (scopes starting with `#` are reserved for aggregates).
pub fn valid_owner(name: &str) -> bool {
    pinhive_domain::values::Owner::parse(name).is_ok()
}

/// Number of pin rows of `owner` in `status` that partition `partition` holds, as of its last
/// committed batch (absolute value, written only in the partition's atomic commit). `owner`
/// may also be one of the reserved aggregate scopes (`SCOPE_*`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CounterRow {
    pub owner: String,
    pub status: PinStatus,
    pub partition: u32,
    pub value: i64,
}

/// One applied event, kept per CID for the pin history admin endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct JournalEntry {
    pub cid: String,
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ns: i64,
    pub event_id: String,
    pub event: Event,
}

/// A node-index membership write: `cid` (of the batch's partition) has (`present`) or no
/// longer has a replica on `node`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCidWrite {
    pub node: String,
    pub cid: String,
    pub present: bool,
}

/// Where a walk of a node's index goes on (opaque to callers; stores that split the index into
/// slots use `slot`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCidCursor {
    pub slot: u32,
    pub after: Option<String>,
}

/// An expiry-index write: pin `requestid` of `cid` (a CID of the batch's partition) is due at
/// `due_ns` (`present`), or that entry goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiryWrite {
    pub due_ns: i64,
    pub cid: String,
    pub requestid: String,
    pub present: bool,
}

/// One entry of a partition's expiry index: pin `requestid` of `cid` is due at `due_ns`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExpiryEntry {
    pub due_ns: i64,
    pub cid: String,
    pub requestid: String,
}

/// Where a walk of the due entries of a partition goes on (opaque to callers: a store that
/// splits the index by time and slot, ScyllaDB, keeps its place in `bucket` and `slot`; `after`
/// is the last entry returned, if the walk stopped inside a slot).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpiryCursor {
    pub bucket: i64,
    pub slot: u32,
    pub after: Option<ExpiryEntry>,
}

/// The rows one shard batch writes before its commit. No write here is atomic with another:
/// they reach the store in [`ShardBatch::prefix`] order, any prefix of them may be all a crash
/// leaves, and the rollback of the attempt plus a retry of the batch ends in the same state as
/// one clean write (the orchestrator's crash-point tests check it).
///
/// The node index (`node_cids`, walked by [`Store::node_cids`] to re-replicate what a lost or
/// drained node held) is a *superset* of the (node, CID) pairs with a live replica, not an
/// exact copy: membership writes are idempotent, and an entry an interrupted batch left
/// behind is harmless (the walker finds that the CID has no replica on that node and deletes
/// the entry). So the attempt records no undo for it.
///
/// The expiry index (`expiry`, read by [`Store::expiry_due`]) is a superset too: an entry of a
/// pin that is gone, or whose expiry moved, only makes the expiry task append a `PinExpired`
/// that the shard finds moot (and deletes the entry). A rollback writes back the entries of
/// the pin rows it restores.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardBatch {
    pub partition: u32,
    pub pins: Vec<PinWrite>,
    pub journal: Vec<JournalEntry>,
    /// CIDs that still need work (`true`) or are settled (`false`); the repair loop walks the
    /// pending set of its partition.
    pub pending: Vec<(String, bool)>,
    /// Node-index membership of the partition's CIDs (written after `pending`, before `expiry`).
    pub node_cids: Vec<NodeCidWrite>,
    /// Expiry-index entries of the partition's pins (written after `node_cids`, before `cids`).
    pub expiry: Vec<ExpiryWrite>,
    /// Written last: a CID row carries `applied_offset`, the last thing written per CID.
    pub cids: Vec<CidWrite>,
}

impl ShardBatch {
    /// Number of separately written rows.
    pub fn len(&self) -> usize {
        self.pins.len()
            + self.journal.len()
            + self.pending.len()
            + self.node_cids.len()
            + self.expiry.len()
            + self.cids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` writes of this batch, in write order (fault injection: what a crash
    /// after `n` writes leaves in the store).
    pub fn prefix(&self, n: usize) -> ShardBatch {
        let mut left = n;
        let mut take = |len: usize| {
            let k = len.min(left);
            left -= k;
            k
        };
        ShardBatch {
            partition: self.partition,
            pins: self.pins[..take(self.pins.len())].to_vec(),
            journal: self.journal[..take(self.journal.len())].to_vec(),
            pending: self.pending[..take(self.pending.len())].to_vec(),
            node_cids: self.node_cids[..take(self.node_cids.len())].to_vec(),
            expiry: self.expiry[..take(self.expiry.len())].to_vec(),
            cids: self.cids[..take(self.cids.len())].to_vec(),
        }
    }
}

/// An API access token, stored by the SHA-256 of its secret (row version 3 on; a row of an
/// earlier version reads as `name` = owner and the scopes its admin bit implied, see
/// [`row`]). Its public id is [`token_id`] of that hash.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// The owner name pins are scoped to.
    pub owner: String,
    pub created_ns: i64,
    /// What the token is for (one per device), shown in listings and audit lines.
    pub name: String,
    pub scopes: pinhive_domain::tokens::Scopes,
    /// From this instant on the token is refused (checked per request, no background job).
    pub expires_ns: Option<i64>,
    /// When it was revoked; a revoked token is refused and no longer listed.
    pub revoked_ns: Option<i64>,
}

impl TokenRecord {
    pub fn status(&self, now_ns: i64) -> pinhive_domain::tokens::TokenStatus {
        pinhive_domain::tokens::token_status(self.expires_ns, self.revoked_ns, now_ns)
    }
}

/// A dead-lettered log record, as the admin API shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub partition: u32,
    pub offset: u64,
    pub reason: String,
    pub key: String,
    /// The first bytes of the record value, hex.
    pub value_prefix_hex: String,
    pub dead_lettered_ns: i64,
}

/// A CID whose records its shard dead-letters instead of applying, because a stored row a
/// record of it needed could not be decoded (`reason` names the row). Persisted per log
/// partition; the shard writes it, an operator removes it (`DELETE /admin/quarantine/{cid}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Quarantine {
    pub partition: u32,
    pub cid: String,
    pub reason: String,
    /// First offset of the batch that quarantined it.
    pub offset: u64,
    pub quarantined_ns: i64,
}

/// Most quarantined CIDs per log partition: past it a corrupt row stalls its partition
/// (retried, logged at ERROR) rather than growing a list every batch reads.
pub const QUARANTINE_LIMIT: usize = 1_000;

/// What an analytics actor persists for its access partition: the encoded demand tracker and
/// the access-log offset it covers. Written as one value, so state and offset never disagree.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AnalyticsCheckpoint {
    /// The access-log offset to resume reading at.
    pub next_offset: u64,
    /// `pinhive_analytics::tracker::Tracker::encode` output.
    pub state: Vec<u8>,
}

/// Where an S3 object's content is pinned: the pin that holds `bucket/key` now.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct S3Object {
    pub bucket: String,
    pub key: String,
    pub cid: String,
    pub requestid: String,
    /// S3 `sequencer` (or version id / eTag) of the event that set it; orders events per key.
    pub sequencer: String,
}

/// The store adapter. All methods are blocking; async callers use `spawn_blocking` or a
/// `SyncArbiter` actor.
pub trait Store: Send + Sync + 'static {
    fn load_cid(&self, cid: &str) -> Result<Option<CidState>, StoreError>;
    fn load_pin(&self, requestid: &str) -> Result<Option<PinRow>, StoreError>;
    /// Pins listed for `cid` at or after `from` (bucket, then request id after `from.after`),
    /// in order, at most `limit`, as (bucket, request id). One bounded range read.
    fn cid_pins(
        &self,
        cid: &str,
        from: &Cursor,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError>;
    /// Writes a batch's rows (see [`ShardBatch`]); not atomic. A store that writes a pin row
    /// and its listing and pin-list entries separately writes the row first: a rollback finds
    /// the entries to remove from the row it reads back. A store where a failed write may
    /// still be applied later (a timeout: ScyllaDB) must let every write sent after that
    /// failure was returned win over it, wherever it lands in time: a rollback's rewrite and
    /// deletes, sent after the batch failed, are final.
    fn write_shard_batch(&self, batch: &ShardBatch) -> Result<(), StoreError>;
    /// True if [`Store::persist_batch`] writes rows and commit in one atomic write: the shard
    /// then records no undo (there is never an attempt to roll back).
    fn persists_atomically(&self) -> bool {
        false
    }
    /// Persists one shard batch by the commit protocol: the attempt (if the batch writes
    /// rows), the rows, the commit. A store that can write rows and commit in one atomic write
    /// may do that instead and skip the attempt (nothing can be left half-written to roll
    /// back): the embedded store does. The attempt and the commit are fenced like
    /// [`Store::commit`]: a stale owner's attempt fails before any row is written.
    fn persist_batch(
        &self,
        attempt: Option<&Commit>,
        rows: &ShardBatch,
        commit: &Commit,
    ) -> Result<(), StoreError> {
        if let Some(attempt) = attempt {
            self.commit(attempt)?;
        }
        // Failpoints (tests only): a crash or error after the attempt, or after the rows.
        fail::fail_point!("store::rows", |_| Err(StoreError::Backend(
            "injected fault at store::rows".into()
        )));
        self.write_shard_batch(rows)?;
        fail::fail_point!("store::commit", |_| Err(StoreError::Backend(
            "injected fault at store::commit".into()
        )));
        self.commit(commit)
    }
    /// Makes the caller the owner of log partition `partition`: returns a new owner epoch,
    /// greater than every epoch handed out before for that partition by any process sharing
    /// the store. From then on a commit (or attempt) of that partition carrying another
    /// nonzero epoch (a lower one: an earlier owner's) fails with [`StoreError::Fenced`] and
    /// writes nothing (docs/data-model.md,
    /// "Fencing"). The default hands out 0 (unfenced): only for test wrappers; every real
    /// store overrides it.
    fn claim_partition(&self, partition: u32) -> Result<u64, StoreError> {
        let _ = partition;
        Ok(0)
    }
    /// The partition's commit row (default: nothing committed yet).
    fn committed(&self, partition: u32) -> Result<CommitState, StoreError>;
    /// Writes a commit row and its counters atomically (one partition of the commit table);
    /// refused with [`StoreError::Fenced`] if `commit.owner_epoch` is nonzero and not the
    /// partition's current owner epoch.
    fn commit(&self, commit: &Commit) -> Result<(), StoreError>;
    fn checkpoint(&self, consumer: &str, partition: u32) -> Result<Option<u64>, StoreError>;
    /// Persists a consumer checkpoint (consumers other than the shards: S3 ingest, markers).
    fn set_checkpoint(&self, consumer: &str, partition: u32, offset: u64)
        -> Result<(), StoreError>;
    /// A counter's committed value.
    fn counter(
        &self,
        owner: &str,
        status: PinStatus,
        partition: u32,
    ) -> Result<Option<i64>, StoreError>;
    /// CIDs of `partition` with outstanding work, in key order after `after`.
    fn pending_cids(
        &self,
        partition: u32,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// CIDs of `partition` indexed under `node`, from `from` on, at most `limit`, and the
    /// cursor to go on with (`None`: the walk is complete). Each call is a bounded number of
    /// bounded range reads; a walk visits every entry present for its whole duration exactly
    /// once (order unspecified).
    fn node_cids(
        &self,
        node: &str,
        partition: u32,
        from: &NodeCidCursor,
        limit: usize,
    ) -> Result<(Vec<String>, Option<NodeCidCursor>), StoreError>;
    /// Entries of `partition`'s expiry index due in `(after_ns, up_to_ns]`, from `from` on, at
    /// most `limit`, and the cursor to go on with (`None`: the window holds no more). Each call
    /// is a bounded number of bounded range reads — never a scan of the index or of the pins —
    /// so a page may come back empty with a cursor (a store split by time walked empty parts
    /// of a wide window). A walk visits every entry present in the window for its whole
    /// duration exactly once (order unspecified).
    fn expiry_due(
        &self,
        partition: u32,
        after_ns: i64,
        up_to_ns: i64,
        from: &ExpiryCursor,
        limit: usize,
    ) -> Result<(Vec<ExpiryEntry>, Option<ExpiryCursor>), StoreError>;

    /// The pin as the API shows it.
    fn get_pin(&self, requestid: &str) -> Result<Option<PinRecord>, StoreError> {
        Ok(self.load_pin(requestid)?.map(|row| row.record))
    }
    /// A bounded key-range read of the listing indexes (see [`query`]).
    fn list_pins(&self, query: &PinQuery, partitions: u32) -> Result<PinPage, StoreError>;
    /// Deletes journal entries of `partition` recorded before `before_ns`, oldest first, at most
    /// `limit` per call; returns how many. (ScyllaDB: a TTL on the journal table does it.)
    fn prune_journal(
        &self,
        partition: u32,
        before_ns: i64,
        limit: usize,
    ) -> Result<usize, StoreError>;
    /// Deletes dead letters recorded before `before_ns`, oldest first per partition, at most
    /// `limit` per call; returns how many.
    fn prune_dead_letters(&self, before_ns: i64, limit: usize) -> Result<usize, StoreError>;
    /// Journal of `cid`, oldest first, starting after log offset `after`.
    fn journal(
        &self,
        cid: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError>;

    /// Writes a token row and its index entries: id → hash, and (owner, id) → record while
    /// the token is not revoked (a revoked one's owner entry is deleted). Durable on return.
    fn put_token(&self, secret_hash: &str, token: &TokenRecord) -> Result<(), StoreError>;
    /// The token whose secret hashes to `secret_hash`. A row written before row version 3 is
    /// rewritten in the current layout, with its index entries, the first time it is read.
    fn get_token(&self, secret_hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// The token with public id `id` ([`token_id`]) and its secret hash. The default (test
    /// wrappers) has no token index.
    fn token_by_id(&self, id: &str) -> Result<Option<(String, TokenRecord)>, StoreError> {
        let _ = id;
        Err(StoreError::Backend(
            "this store keeps no token index".into(),
        ))
    }
    /// `owner`'s tokens that are not revoked (expired ones included), in id order after
    /// `after`, at most `limit`, as (id, record): one bounded range read.
    fn list_tokens(
        &self,
        owner: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, TokenRecord)>, StoreError> {
        let _ = (owner, after, limit);
        Err(StoreError::Backend(
            "this store keeps no token index".into(),
        ))
    }

    fn put_node(&self, node: &NodeDescriptor) -> Result<(), StoreError>;
    fn remove_node(&self, id: &str) -> Result<(), StoreError>;
    fn list_nodes(&self) -> Result<Vec<NodeDescriptor>, StoreError>;

    /// Sets (Some) or clears (None) the object at `bucket/key`, maintaining the by-CID index.
    /// Written only by the S3 ingester; idempotent.
    fn put_s3_object(
        &self,
        bucket: &str,
        key: &str,
        object: Option<&S3Object>,
    ) -> Result<(), StoreError>;
    fn get_s3_object(&self, bucket: &str, key: &str) -> Result<Option<S3Object>, StoreError>;
    /// Objects of `bucket` whose key starts with `prefix`, in key order after `after`.
    fn list_s3_objects(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<S3Object>, StoreError>;
    /// Objects whose content is `cid`.
    fn s3_objects_by_cid(&self, cid: &str, limit: usize) -> Result<Vec<S3Object>, StoreError>;

    fn put_dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError>;
    fn dead_letters(
        &self,
        after: Option<(u32, u64)>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError>;

    /// Quarantines `entry.cid` in `entry.partition` (idempotent: an existing entry is kept,
    /// not overwritten). Refused with `Backend`, writing nothing, when the partition holds
    /// [`QUARANTINE_LIMIT`] entries already (the shard then retries its batch).
    fn put_quarantine(&self, entry: &Quarantine) -> Result<(), StoreError>;
    /// The quarantined CIDs of `partition` (at most [`QUARANTINE_LIMIT`]), in CID order: one
    /// bounded range read.
    fn quarantined(&self, partition: u32) -> Result<Vec<Quarantine>, StoreError>;
    /// Ends the quarantine of `cid` in `partition`; false if it was not quarantined. The
    /// shard applies its records again from the next one it reads.
    fn clear_quarantine(&self, partition: u32, cid: &str) -> Result<bool, StoreError>;

    /// Replaces the analytics checkpoint of access partition `partition`.
    fn put_analytics_checkpoint(
        &self,
        partition: u32,
        checkpoint: &AnalyticsCheckpoint,
    ) -> Result<(), StoreError>;
    fn analytics_checkpoint(
        &self,
        partition: u32,
    ) -> Result<Option<AnalyticsCheckpoint>, StoreError>;

    /// Forces everything written so far to disk (shutdown).
    fn flush(&self) -> Result<(), StoreError>;
}

/// SHA-256 of a token secret, hex: what the store keeps instead of the secret.
pub fn hash_secret(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// The public id of a token: the first 16 hex digits of its secret's hash. Stable for every
/// token ever made (none needs rewriting to get one); it reveals nothing usable about the
/// secret (a 256-bit random value behind SHA-256).
pub fn token_id(secret_hash: &str) -> String {
    secret_hash.chars().take(16).collect()
}

/// A new random token secret (256 bits).
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("ph_{}", hex::encode(bytes))
}

/// Sums per-partition counters into an owner's total for `status`.
pub fn total_count(
    store: &dyn Store,
    owner: &str,
    status: PinStatus,
    partitions: u32,
) -> Result<u64, StoreError> {
    let mut total: i64 = 0;
    for partition in 0..partitions {
        total += store.counter(owner, status, partition)?.unwrap_or(0);
    }
    Ok(total.max(0) as u64)
}

pub(crate) type Meta = BTreeMap<String, String>;
