//! Orchestration: one shard actor per log partition, the consumer that feeds it, the repair
//! loop, log retention, and the wiring that starts and stops them.
//!
//! Invariants:
//! * a shard is the only writer of the CIDs of its partition;
//! * a checkpoint is committed only with the state it covers (the commit protocol of the
//!   store crate: attempt, rows, commit; an uncommitted attempt is rolled back first);
//! * side effects (allocation events, node commands) are issued only after the state that
//!   planned them is persisted, and are re-planned from state by the repair loop, so a crash
//!   between the two loses nothing.

pub mod antientropy;
pub mod backfill;
pub mod cache;
pub mod consumer;
pub mod control;
pub mod expiry;
pub mod feed;
pub mod metrics;
pub mod quota;
pub mod rereplicate;
pub mod retry;
pub mod s3;
pub mod shard;

pub use cache::StateCache;
pub use consumer::{Orchestrator, OrchestratorConfig};
pub use shard::{ShardActor, ShardSnapshot};
