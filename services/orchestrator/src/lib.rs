//! Orchestration: one shard actor per log partition, the consumer that feeds it, the repair
//! loop, log retention, and the wiring that starts and stops them.
//!
//! Invariants:
//! * a shard is the only writer of the CIDs of its partition;
//! * a checkpoint is persisted only after the state it covers;
//! * side effects (allocation events, node commands) are issued only after the state that
//!   planned them is persisted, and are re-planned from state by the repair loop, so a crash
//!   between the two loses nothing.

pub mod consumer;
pub mod metrics;
pub mod migrate;
pub mod s3;
pub mod shard;

pub use consumer::{Orchestrator, OrchestratorConfig};
pub use shard::{ShardActor, ShardSnapshot};

/// Consumer name under which shard checkpoints are stored.
pub const SHARD_CONSUMER: &str = "shard";
