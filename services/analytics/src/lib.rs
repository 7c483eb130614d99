//! Analytics actors: access events → replica targets.
//!
//! * [`tracker`]: per-partition demand in memory that does not grow with the number of CIDs —
//!   a Count-Min sketch (Apache DataSketches) admits CIDs into a bounded table of heavy hitters
//!   with exact, per-epoch decayed per-region counters; checkpointable.
//! * the actor (one per access-log partition) feeds the tracker, runs the domain optimizer
//!   (`pinhive_domain::analytics::optimize`) every epoch and appends `TargetChanged` events to
//!   the CIDs' partitions of the pin log.

pub mod config;
pub mod metrics;
pub mod service;
pub mod tracker;

pub use config::AnalyticsConfig;
pub use service::{Analytics, CidAnalytics, IngestError, NodeRegion, PartitionSummary};
