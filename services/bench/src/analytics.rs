//! `pinhive bench analytics`: the demand tracker and the replica optimizer on a synthetic
//! Zipf access stream (N CIDs, R regions, heavy-tailed sizes, a popularity shift half way),
//! beside a fixed replication factor of 3 on the same stream and the same total storage.
//!
//! Measured:
//! * access events ingested per second on one core (`Tracker::record` alone, over events
//!   generated beforehand in chunks; generation is timed and reported apart);
//! * recompute time per epoch: `Tracker::candidates` + `optimize` for every tracked CID;
//! * peak RSS (VmHWM) and the tracker's own `memory_bytes`;
//! * for a deterministic sample of reads (1 in `--sample-every`): share of bytes served from
//!   the reader's own region under RF3 and under the optimizer, both placed by the shard's
//!   allocator on the same fleet (`nodes-per-region` nodes in each region);
//! * storage used (RF3: 3·Σsize; optimizer: 2·Σsize + budget granted, the budget being Σsize,
//!   so both may use the same total) and churn: targets changed and replicas moved per epoch.
//!
//! Invariant: nothing is stored per CID outside the tracker and the optimizer's raised targets
//! in force; a CID's size, name and home region are hashes of its index, so the RSS figure
//! is the tracker's.

mod placement;
mod report;
mod workload;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Args;
use pinhive_analytics::tracker::{Tracker, TrackerConfig};
use pinhive_domain::analytics::{optimize, OptimizerParams};

use placement::{mask_regions, moves, Fleet, Raised, MIN_REPLICAS};
use report::{EpochFigures, Report};
use workload::{parse_cid, Chunk, Generator, Population};

/// Bounds of every synthetic pin.
const MAX_REPLICAS: u8 = 8;

#[derive(Args, Debug, Clone)]
pub struct AnalyticsArgs {
    /// Distinct CIDs in the stream.
    #[arg(long, default_value_t = 10_000_000)]
    pub cids: u64,
    /// Access events in all, spread evenly over the epochs.
    #[arg(long, default_value_t = 50_000_000)]
    pub events: u64,
    /// Regions; each gets `--nodes-per-region` nodes.
    #[arg(long, default_value_t = 8)]
    pub regions: u16,
    #[arg(long, default_value_t = 2)]
    pub nodes_per_region: usize,
    /// Zipf exponent of CID popularity.
    #[arg(long, default_value_t = 1.1)]
    pub zipf: f64,
    /// Analytics epochs; popularity shifts at the half.
    #[arg(long, default_value_t = 40)]
    pub epochs: u64,
    /// Simulated seconds per epoch (the tracker decays once per epoch).
    #[arg(long, default_value_t = 3600.0)]
    pub epoch_secs: f64,
    #[arg(long, default_value_t = 3600.0)]
    pub fast_half_life_secs: f64,
    #[arg(long, default_value_t = 86_400.0)]
    pub slow_half_life_secs: f64,
    /// Heavy hitters the tracker keeps exact state for.
    #[arg(long, default_value_t = 100_000)]
    pub top_k: usize,
    /// Count-Min sketch shape of the tracker.
    #[arg(long, default_value_t = 4)]
    pub sketch_hashes: u8,
    #[arg(long, default_value_t = 1 << 20)]
    pub sketch_buckets: u32,
    /// V_geo of the optimizer: full copies per day a region must read to earn a replica.
    #[arg(long, default_value_t = 50.0)]
    pub geo_views_per_day: f64,
    /// μ of the optimizer: bytes per second one replica serves.
    #[arg(long, default_value_t = 100e6)]
    pub replica_bytes_per_sec: f64,
    /// Target changes the optimizer may make per epoch.
    #[arg(long, default_value_t = 10_000)]
    pub max_changes_per_epoch: usize,
    /// One read in this many is checked for locality.
    #[arg(long, default_value_t = 64)]
    pub sample_every: u64,
    /// Events generated per chunk (generation is not timed with ingestion).
    #[arg(long, default_value_t = 1 << 18)]
    pub chunk_events: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The generator and the RF3 baseline only: no tracker, no optimizer.
    #[arg(long)]
    pub baseline_only: bool,
    /// Print the report as JSON (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
}

impl AnalyticsArgs {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=workload::MAX_CIDS).contains(&self.cids),
            "--cids must be in 1..={}",
            workload::MAX_CIDS
        );
        anyhow::ensure!(
            (1..=64).contains(&self.regions),
            "--regions must be in 1..=64"
        );
        anyhow::ensure!(self.nodes_per_region >= 1, "--nodes-per-region must be ≥ 1");
        anyhow::ensure!(
            self.epochs >= 2,
            "--epochs must be ≥ 2 (the shift is at the half)"
        );
        anyhow::ensure!(self.events >= self.epochs, "--events must be ≥ --epochs");
        anyhow::ensure!(self.zipf > 0.0, "--zipf must be > 0");
        anyhow::ensure!(self.sample_every >= 1, "--sample-every must be ≥ 1");
        anyhow::ensure!(self.chunk_events >= 1, "--chunk-events must be ≥ 1");
        Ok(())
    }
}

/// Peak resident set size of this process (VmHWM), bytes.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

pub fn run(args: AnalyticsArgs) -> anyhow::Result<()> {
    args.validate()?;
    let rss_at_start = peak_rss_bytes();
    let population = Population::new(args.cids, args.regions, args.seed);
    let fleet = Fleet::new(args.regions, args.nodes_per_region);
    let started = Instant::now();
    let total_size = u64::try_from(population.total_size()).unwrap_or(u64::MAX);
    let total_size_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "analytics: {} CIDs, Σsize {:.2} TiB ({total_size_secs:.2} s), {} events over {} epochs, {} regions × {} nodes",
        args.cids,
        total_size as f64 / (1u64 << 40) as f64,
        args.events,
        args.epochs,
        args.regions,
        args.nodes_per_region
    );

    let mut optimized = if args.baseline_only {
        None
    } else {
        let config = TrackerConfig {
            regions: fleet.region_names.clone(),
            top_k: args.top_k,
            sketch_hashes: args.sketch_hashes,
            sketch_buckets: args.sketch_buckets,
            epoch_secs: args.epoch_secs,
            fast_half_life_secs: args.fast_half_life_secs,
            slow_half_life_secs: args.slow_half_life_secs,
        };
        Some(Optimized {
            tracker: Tracker::try_new(config).map_err(anyhow::Error::msg)?,
            raised: HashMap::new(),
            pending_resets: Vec::new(),
        })
    };
    // Same total storage as RF3: the pins' min of 2 plus one more copy of everything to spend.
    let extra_budget_bytes =
        total_size.saturating_mul(placement::FIXED_REPLICAS as u64 - u64::from(MIN_REPLICAS));
    let params = OptimizerParams {
        regions: fleet.region_names.clone(),
        replica_bytes_per_sec: args.replica_bytes_per_sec,
        geo_views_per_day: args.geo_views_per_day,
        max_changes_per_epoch: args.max_changes_per_epoch,
        extra_budget_bytes,
        ..OptimizerParams::default()
    };

    let mut generator = Generator::new(population.clone(), args.zipf, args.seed)?;
    let mut chunk = Chunk::default();
    let no_targets = HashMap::new();
    let shift_epoch = args.epochs / 2;
    let mut epochs = Vec::with_capacity(args.epochs as usize);
    let mut generation = Duration::ZERO;
    for epoch in 0..args.epochs {
        let phase = usize::from(epoch >= shift_epoch);
        let first = args.events * epoch / args.epochs;
        let end = args.events * (epoch + 1) / args.epochs;
        let mut figures = EpochFigures {
            epoch,
            events: end - first,
            ..EpochFigures::default()
        };
        let mut next = first;
        while next < end {
            let count = (end - next).min(args.chunk_events as u64) as usize;
            let started = Instant::now();
            generator.fill(&mut chunk, count, phase);
            generation += started.elapsed();
            if let Some(Optimized { tracker, .. }) = optimized.as_mut() {
                let started = Instant::now();
                for event in 0..chunk.len() {
                    let bytes = chunk.bytes[event];
                    let region = &fleet.region_names[usize::from(chunk.regions[event])];
                    tracker.record(chunk.cid(event), region, bytes, Some(bytes), 0.0);
                }
                figures.record_secs += started.elapsed().as_secs_f64();
            }
            sample_locality(
                &fleet,
                optimized.as_ref().map_or(&no_targets, |o| &o.raised),
                &chunk,
                next,
                args.sample_every,
                &mut figures,
            );
            next += count as u64;
        }
        if let Some(optimized) = optimized.as_mut() {
            recompute(optimized, &fleet, &params, &population, &mut figures);
        }
        figures.storage_fixed_bytes = total_size.saturating_mul(placement::FIXED_REPLICAS as u64);
        figures.storage_optimized_bytes = total_size
            .saturating_mul(u64::from(MIN_REPLICAS))
            .saturating_add(figures.budget_used_bytes);
        eprintln!("{}", figures.progress_line());
        epochs.push(figures);
    }

    let report = Report {
        args: args.clone(),
        total_size_bytes: total_size,
        total_size_secs,
        extra_budget_bytes,
        generation_secs: generation.as_secs_f64(),
        rss_at_start_bytes: rss_at_start,
        peak_rss_bytes: peak_rss_bytes(),
        shift_epoch,
        epochs,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        report.print();
    }
    Ok(())
}

/// Checks every `sample_every`-th read of the stream (by its position, so the sample is the
/// same for both strategies and every run): is a replica in the reader's region?
fn sample_locality(
    fleet: &Fleet,
    raised: &HashMap<u64, Raised>,
    chunk: &Chunk,
    first_event: u64,
    sample_every: u64,
    figures: &mut EpochFigures,
) {
    let skip = (sample_every - first_event % sample_every) % sample_every;
    for event in (skip as usize..chunk.len()).step_by(sample_every as usize) {
        let cid = chunk.cid(event);
        let reader = 1u64 << chunk.regions[event];
        let bytes = chunk.bytes[event];
        figures.sampled_reads += 1;
        figures.sampled_bytes += u128::from(bytes);
        if fleet.fixed_regions(cid) & reader != 0 {
            figures.fixed_local_reads += 1;
            figures.fixed_local_bytes += u128::from(bytes);
        }
        let in_force = raised.get(&chunk.indexes[event]);
        if fleet.optimized_regions(cid, in_force) & reader != 0 {
            figures.optimized_local_reads += 1;
            figures.optimized_local_bytes += u128::from(bytes);
        }
    }
}

/// The optimizer's side between epochs: the tracker, the targets above min in force (by CID
/// index: what the shards' states would say), and the CIDs evicted with a raised target, reset
/// by the next epoch's changes (as the analytics actor appends them).
struct Optimized {
    tracker: Tracker,
    raised: HashMap<u64, Raised>,
    pending_resets: Vec<String>,
}

/// Closes the epoch in the analytics actor's order: candidates + optimize on the rates before
/// the epoch's decay (timed together as the recompute), pending resets and changed decisions
/// applied to the targets in force, decisions remembered, then `end_epoch`.
fn recompute(
    optimized: &mut Optimized,
    fleet: &Fleet,
    params: &OptimizerParams,
    population: &Population,
    figures: &mut EpochFigures,
) {
    let Optimized {
        tracker,
        raised,
        pending_resets,
    } = optimized;
    let epoch = tracker.epoch();
    let started = Instant::now();
    let mut candidates = tracker.candidates(&mut |_| Some((MIN_REPLICAS, MAX_REPLICAS)));
    figures.candidates_secs = started.elapsed().as_secs_f64();
    // In the service the held regions come from the shards' states; here from the placement
    // model, outside the timed recompute.
    let started = Instant::now();
    for candidate in &mut candidates {
        let in_force = parse_cid(&candidate.cid).and_then(|index| raised.get(&index));
        candidate.held_regions = mask_regions(fleet.optimized_regions(&candidate.cid, in_force));
    }
    figures.held_regions_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let outcome = optimize(&candidates, params, epoch);
    figures.optimize_secs = started.elapsed().as_secs_f64();
    figures.candidates = candidates.len() as u64;
    drop(candidates);

    for cid in pending_resets.drain(..) {
        let Some(index) = parse_cid(&cid) else {
            continue;
        };
        if let Some(before) = raised.remove(&index) {
            figures.evicted_resets += 1;
            figures.target_changes += 1;
            figures.replica_moves += moves(
                &fleet.optimized_nodes(&cid, Some(&before)),
                &fleet.optimized_nodes(&cid, None),
            ) as u64;
        }
    }

    for decision in outcome.decisions.iter().filter(|d| d.changed) {
        let Some(index) = parse_cid(&decision.cid) else {
            continue;
        };
        let after = (decision.target > MIN_REPLICAS).then(|| Raised {
            target: decision.target,
            preferred: decision
                .preferred_regions
                .iter()
                .filter_map(|name| fleet.region_id(name))
                .collect(),
        });
        let before = raised.get(&index);
        figures.target_changes += 1;
        figures.replica_moves += moves(
            &fleet.optimized_nodes(&decision.cid, before),
            &fleet.optimized_nodes(&decision.cid, after.as_ref()),
        ) as u64;
        match after {
            Some(after) => raised.insert(index, after),
            None => raised.remove(&index),
        };
    }
    tracker.remember(&outcome.decisions);
    let started = Instant::now();
    pending_resets.extend(tracker.end_epoch());
    figures.end_epoch_secs = started.elapsed().as_secs_f64();

    figures.raised_cids = raised.len() as u64;
    figures.raised_bytes = raised
        .iter()
        .map(|(&index, r)| u64::from(r.target - MIN_REPLICAS) * population.size(index))
        .sum();
    figures.tracked = tracker.tracked() as u64;
    figures.tracker_memory_bytes = tracker.memory_bytes() as u64;
    figures.water_level = outcome.water_level;
    figures.budget_used_bytes = outcome.budget_used_bytes;
    figures.denied_increments = outcome.denied_increments;
    figures.deferred_changes = outcome.deferred_changes;
}
