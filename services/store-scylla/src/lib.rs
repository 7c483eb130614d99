//! The ScyllaDB store adapter (issue 11): the `Store` trait over CQL with the `scylla` driver.
//!
//! * Schema: `schemas/cql/` (numbered migrations, applied by [`migrate`]), the tables of
//!   docs/data-model.md one for one, plus the small marker tables a partitioned range needs
//!   to be walked without a scan (`listing_buckets`, `cid_pin_buckets`, `journal_days`,
//!   `dead_letter_partitions`). The node index `node_cids` is split into [`NODE_CID_SLOTS`]
//!   partitions per (node, log partition), walked slot by slot; the expiry index
//!   `expiry_index` into [`EXPIRY_SLOTS`] partitions per (log partition, hour bucket), read
//!   window by window. The quarantine `quarantine` is one partition per log partition, at
//!   most `pinhive_store::QUARANTINE_LIMIT` rows.
//! * Access: prepared statements only, prepared once at [`ScyllaStore::open`]; each is a
//!   single-partition read (with `LIMIT`, or paged with the driver's paging state for
//!   listings) or a single-row write. All but the owner-epoch LWTs (below) are marked
//!   idempotent (absolute values keyed by what they describe: request id, CID, log offset — a
//!   replay writes the same cells), so the driver's default retry policy may retry them.
//!   Consistency is configurable ([`ScyllaOptions`], LOCAL_QUORUM by default for reads and
//!   writes; the driver's default LOCAL_SERIAL for the LWTs' Paxos round), token-aware load
//!   balancing (the driver's default), a request timeout, no speculative execution.
//! * Atomicity: only per partition. `persists_atomically()` is false, so the shard runs the
//!   attempt/undo protocol of docs/data-model.md ("Write protocol"): attempt (commit row),
//!   rows, commit. A commit — the commit row's static columns and the partition's counters —
//!   is one single-partition unlogged batch: atomic and isolated in ScyllaDB.
//! * Lightweight transactions: only for fencing (docs/data-model.md, "Fencing"), the one place
//!   two writers can meet (two instances that both believe they own a log partition during a
//!   rebalance). The owner epoch is the row `kind = 2, owner = '', status = 0` of the
//!   partition's `commits` partition (`value` = epoch; the commit and counter reads, on static
//!   columns and `kind = 1`, never see it). `claim_partition` reads it and compare-and-sets it
//!   to the next value (`INSERT … IF NOT EXISTS` the first time, `UPDATE … IF value = ?`
//!   after). A commit with an owner epoch is one conditional single-partition batch led by
//!   `UPDATE … SET value = e … IF value = e`: it applies whole only if the epoch is still `e`,
//!   else `StoreError::Fenced`. Conditional statements are not marked idempotent (a retried
//!   CAS could report its own first write as "not applied"); a timeout is the caller's error
//!   and the shard retries the batch. Everywhere else there is a single writer per partition
//!   (the shard of the log partition, the S3 ingester, the analytics actor of an access
//!   partition) writing absolute values, so last-write-wins is correct; client-side monotonic
//!   timestamps order a writer's own delete and re-insert of a row, and make an old owner's
//!   late row write lose to the new owner's rewrite of it.
//! * Threads: the `Store` trait is blocking; the driver runs on a tokio runtime the adapter
//!   owns (see `driver`). Call it from blocking threads (`spawn_blocking`, `SyncArbiter`).

mod batch;
mod driver;
mod expiry;
mod listing;
mod migrate;
mod node_index;
mod quarantine;
mod statements;
mod store;
mod uri;

pub use driver::ScyllaOptions;
pub use expiry::{EXPIRY_BUCKET_NS, EXPIRY_READS_PER_CALL, EXPIRY_SLOTS};
pub use migrate::{
    migrate, migrate_with, render, split_statements, Migration, Replication, Tablets, MIGRATIONS,
};
pub use node_index::NODE_CID_SLOTS;
pub use scylla::statement::Consistency;
pub use store::{ScyllaStore, SentCounts};
pub use uri::{ScyllaUri, UriError};
