//! The store: materialized state (per-CID state, pin rows), listing indexes, the journal that
//! backs pin history, consumer checkpoints, tokens and nodes.
//!
//! [`Store`] promises only what ScyllaDB can keep: each write is atomic per partition key, never
//! across keys. A shard writes one [`ShardBatch`] in the order counters → indexes → rows →
//! journal/pending, then the checkpoint in a separate call. Every state row carries the last
//! applied log offset, so a batch interrupted at any point is simply applied again on replay:
//! derived rows (indexes, counters) are idempotent upserts/deletes, and readers verify index
//! hits against the pin row (a stale index entry is skipped, never shown).
//!
//! Implementations: [`embedded::EmbeddedStore`] (fjall LSM on local disk). The ScyllaDB adapter
//! implements the same trait and must pass [`contract`].

#[cfg(any(test, feature = "contract-tests"))]
pub mod contract;
pub mod embedded;
mod keys;
pub mod query;

use std::collections::BTreeMap;

use pinhive_domain::{CidState, PinRecord, PinStatus};
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
    #[error("data directory {path} is in use by another pinhive process (stop it, or use the admin API)")]
    Locked { path: String },
}

/// A pin row write, with the row as it was before (so the store can maintain its indexes
/// without reading it back).
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // built and consumed once per write; boxing buys nothing
pub enum PinWrite {
    Put {
        old: Option<PinRecord>,
        new: PinRecord,
    },
    Delete {
        old: PinRecord,
    },
}

/// Per-CID state row write.
#[derive(Clone, Debug, PartialEq)]
pub enum CidWrite {
    Put(CidState),
    Delete { cid: String },
}

/// Counter scope of the pins of every owner (per status).
pub const SCOPE_ALL_PINS: &str = "#all";
/// Counter scope of desired replicas (status field: `Pinned`).
pub const SCOPE_REPLICAS_DESIRED: &str = "#replicas_desired";
/// Counter scope of pinned replicas (status field: `Pinned`).
pub const SCOPE_REPLICAS_PINNED: &str = "#replicas_pinned";

/// True if `name` may own pins (scopes starting with `#` are reserved for aggregates).
pub fn valid_owner(name: &str) -> bool {
    pinhive_domain::values::Owner::parse(name).is_ok()
}

/// Number of pins of `owner` in `status` that partition `partition` holds, as of log offset
/// `offset` (absolute value, so rewriting it on replay is harmless). `owner` may also be one
/// of the reserved aggregate scopes (`SCOPE_*`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CounterRow {
    pub owner: String,
    pub status: PinStatus,
    pub partition: u32,
    pub value: i64,
    pub offset: u64,
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

/// Everything one shard persists for one batch of applied events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardBatch {
    pub partition: u32,
    pub counters: Vec<CounterRow>,
    pub pins: Vec<PinWrite>,
    pub cids: Vec<CidWrite>,
    pub journal: Vec<JournalEntry>,
    /// CIDs that still need work (`true`) or are settled (`false`); the repair loop walks the
    /// pending set of its partition.
    pub pending: Vec<(String, bool)>,
}

/// An API access token, stored by the SHA-256 of its secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// The owner name pins are scoped to.
    pub owner: String,
    pub created_ns: i64,
    pub admin: bool,
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
    fn write_shard_batch(&self, batch: &ShardBatch) -> Result<(), StoreError>;
    fn checkpoint(&self, consumer: &str, partition: u32) -> Result<Option<u64>, StoreError>;
    /// Persists a consumer checkpoint. Callers only do this after the batch it covers.
    fn set_checkpoint(&self, consumer: &str, partition: u32, offset: u64)
        -> Result<(), StoreError>;
    fn counter(
        &self,
        owner: &str,
        status: PinStatus,
        partition: u32,
    ) -> Result<Option<CounterRow>, StoreError>;
    /// Keys of the CID state table in key order after `after`, at most `limit`. Maintenance
    /// only (the one-time CID-key migration walks it in pages); never on a request path.
    fn cid_keys(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError>;
    /// CIDs of `partition` with outstanding work, in key order after `after`.
    fn pending_cids(
        &self,
        partition: u32,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    fn get_pin(&self, requestid: &str) -> Result<Option<PinRecord>, StoreError>;
    /// A bounded key-range read of the listing indexes (see [`query`]).
    fn list_pins(&self, query: &PinQuery, partitions: u32) -> Result<PinPage, StoreError>;
    /// Journal of `cid`, oldest first, starting after log offset `after`.
    fn journal(
        &self,
        cid: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError>;

    fn put_token(&self, secret_hash: &str, token: &TokenRecord) -> Result<(), StoreError>;
    fn get_token(&self, secret_hash: &str) -> Result<Option<TokenRecord>, StoreError>;

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

    /// Forces everything written so far to disk (shutdown).
    fn flush(&self) -> Result<(), StoreError>;
}

/// SHA-256 of a token secret, hex: what the store keeps instead of the secret.
pub fn hash_secret(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
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
        if let Some(row) = store.counter(owner, status, partition)? {
            total += row.value;
        }
    }
    Ok(total.max(0) as u64)
}

pub(crate) type Meta = BTreeMap<String, String>;
