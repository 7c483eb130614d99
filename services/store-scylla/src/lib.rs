//! The ScyllaDB store adapter (issue 11): the `Store` trait over CQL with the `scylla` driver.
//!
//! * Schema: `schemas/cql/` (numbered migrations, applied by [`migrate`]), the tables of
//!   docs/data-model.md one for one, plus the small marker tables a partitioned range needs
//!   to be walked without a scan (`listing_buckets`, `cid_pin_buckets`, `journal_days`,
//!   `dead_letter_partitions`).
//! * Access: prepared statements only, prepared once at [`ScyllaStore::open`]; each is a
//!   single-partition read (with `LIMIT`, or paged with the driver's paging state for
//!   listings) or a single-row write, all marked idempotent (absolute values keyed by what
//!   they describe: request id, CID, log offset — a replay writes the same cells), so the
//!   driver's default retry policy may retry them. Consistency is configurable
//!   ([`ScyllaOptions`], LOCAL_QUORUM by default for reads and writes), token-aware load
//!   balancing (the driver's default), a request timeout, no speculative execution.
//! * Atomicity: only per partition. `persists_atomically()` is false, so the shard runs the
//!   attempt/undo protocol of docs/data-model.md ("Write protocol"): attempt (commit row),
//!   rows, commit. A commit — the commit row's static columns and the partition's counters —
//!   is one single-partition unlogged batch: atomic and isolated in ScyllaDB.
//! * Lightweight transactions: none. Every table has a single writer per partition (the shard
//!   of the log partition, the S3 ingester, the analytics actor of an access partition), and
//!   each write is an absolute value, so last-write-wins is correct and no read-before-write
//!   needs a compare-and-set; client-side monotonic timestamps order a writer's own delete
//!   and re-insert of a row. Fencing is not built yet: two instances that both believe they
//!   own a log partition (during a rebalance) can both write its rows and commit row. The
//!   owner epoch on the commit row, with the attempt and commit written as LWTs conditioned on
//!   it, is the next step (docs/data-model.md, "Fencing"); that will be the one place LWT is
//!   used, because it is the one place two writers can meet.
//! * Threads: the `Store` trait is blocking; the driver runs on a tokio runtime the adapter
//!   owns (see `driver`). Call it from blocking threads (`spawn_blocking`, `SyncArbiter`).

mod batch;
mod driver;
mod listing;
mod migrate;
mod statements;
mod store;
mod uri;

pub use driver::ScyllaOptions;
pub use migrate::{
    migrate, migrate_with, render, split_statements, Migration, Replication, MIGRATIONS,
};
pub use scylla::statement::Consistency;
pub use store::{ScyllaStore, SentCounts};
pub use uri::{ScyllaUri, UriError};
