//! `pinhive bench`: measurements of pinhive, each reported beside baselines taken in the same
//! run on the same machine (these machines are noisy, so ratios are what compare across runs).
//!
//! Modes:
//! * `pipeline` (the default, so `pinhive bench --pins N` runs it): the service in process;
//!   raw store and log baselines, `POST /pins`, pins end to end. Its `--tracing-overhead` and
//!   `--kafka` flags select the tracing-overhead and Kafka comparisons instead.
//! * `scale`: a real `pinhive serve` child process loaded with N pins, then listing walks,
//!   memory, disk and crash-recovery figures.
//! * `analytics`: the demand tracker and replica optimizer on a synthetic Zipf access stream,
//!   beside a fixed replication factor of 3 on the same stream and storage.
//! * `store-size`: N representative pins through the service into the ScyllaDB store (on the
//!   CQL test server), then rows, partitions and encoded bytes per CQL table, and the CQL
//!   statements per pin (docs/capacity.md).
//! * `rereplication`: a simulated fleet loses one node; time to full re-replication, peak
//!   allocation events/s and CIDs ever below `min`, with the re-replication caps beside the
//!   same run with the caps lifted.
//! * `anti-entropy`: one anti-entropy pass (`Orchestrator::reconcile`) over a node believed to
//!   hold N pins with injected drift both ways: pass time, peak RSS, filter bytes, drift found,
//!   beside the naive reconciliation (listing and index in hash sets) on the same store.
//! * `load`: open-loop HTTP load at a target rate (`POST /pins`, `GET /pins`, mixed), each
//!   beside the same run's `/health` at the same rate; latency percentiles from each request's
//!   scheduled start (coordinated omission corrected), in an `hdrhistogram`.
//!
//! Invariant: a benchmark never changes what it measures; it drives the service through its
//! public surfaces (HTTP, the log, the store before start) and the wiring in `pinhive-server`.

pub mod analytics;
pub mod anti_entropy;
pub mod kafka;
pub mod open_loop;
pub mod pipeline;
pub mod rereplication;
pub mod scale;
pub mod store_size;
pub mod tracing_overhead;

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub mode: Option<BenchMode>,
    /// Flags of the default mode: `pinhive bench --pins N` is `pinhive bench pipeline --pins N`.
    #[command(flatten)]
    pub pipeline: pipeline::PipelineArgs,
}

#[derive(Subcommand, Debug)]
pub enum BenchMode {
    /// The service in process: raw store/log baselines, POST /pins, pins end to end (default).
    Pipeline(pipeline::PipelineArgs),
    /// A real `pinhive serve` process loaded with N pins (HTTP, then the log): listing walks,
    /// RSS, disk per pin, crash recovery.
    Scale(scale::ScaleArgs),
    /// Demand tracker and replica optimizer on a synthetic Zipf stream with a popularity
    /// shift: ingest rate, recompute time, RSS, and locality/storage/churn against fixed RF3.
    Analytics(analytics::AnalyticsArgs),
    /// Representative pins into the ScyllaDB store on the CQL test server: rows, partitions
    /// and encoded bytes per table per pin, CQL statements per pin.
    StoreSize(store_size::StoreSizeArgs),
    /// A simulated fleet loses one node: time to full re-replication, peak allocation events/s,
    /// CIDs ever below min; capped beside lifted.
    Rereplication(rereplication::RereplicationArgs),
    /// One anti-entropy pass over a node believed to hold N pins, with drift both ways: time,
    /// peak RSS, filter bytes, drift found; beside the naive hash-set diff.
    AntiEntropy(anti_entropy::AntiEntropyArgs),
    /// Open-loop HTTP load at a target rate (POST /pins, GET /pins, mixed) beside the same
    /// run's /health: latency percentiles corrected for coordinated omission (hdrhistogram).
    Load(open_loop::LoadArgs),
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.mode {
        None => pipeline::run(args.pipeline),
        Some(BenchMode::Pipeline(pipeline)) => pipeline::run(pipeline),
        Some(BenchMode::Scale(scale)) => scale::run(scale),
        Some(BenchMode::Analytics(analytics)) => analytics::run(analytics),
        Some(BenchMode::StoreSize(store_size)) => store_size::run(store_size),
        Some(BenchMode::Rereplication(rereplication)) => rereplication::run(rereplication),
        Some(BenchMode::AntiEntropy(anti_entropy)) => anti_entropy::run(anti_entropy),
        Some(BenchMode::Load(load)) => open_loop::run(load),
    }
}

/// Writes a new token for `owner` into `store` and returns its secret.
pub(crate) fn put_token(
    store: &dyn pinhive_store::Store,
    owner: &str,
    admin: bool,
) -> anyhow::Result<String> {
    let secret = pinhive_store::new_secret();
    store.put_token(
        &pinhive_store::hash_secret(&secret),
        &pinhive_store::TokenRecord {
            owner: owner.into(),
            created_ns: pinhive_events::now_ns(),
            name: owner.into(),
            scopes: pinhive_domain::tokens::Scopes::legacy(admin),
            expires_ns: None,
            revoked_ns: None,
        },
    )?;
    Ok(secret)
}
