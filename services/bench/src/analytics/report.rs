//! Figures of `pinhive bench analytics`: per epoch, per phase (before the shift, the first
//! epochs after it, after it once settled), as a table or JSON.

use serde_json::{json, Value};

use super::AnalyticsArgs;

/// Epochs right after the shift reported on their own.
const FIRST_AFTER_SHIFT: u64 = 3;

#[derive(Clone, Debug, Default)]
pub struct EpochFigures {
    pub epoch: u64,
    pub events: u64,
    /// Time in `Tracker::record` alone.
    pub record_secs: f64,
    pub end_epoch_secs: f64,
    pub candidates_secs: f64,
    /// Filling `held_regions` from the placement model (not part of the recompute).
    pub held_regions_secs: f64,
    pub optimize_secs: f64,
    pub candidates: u64,
    pub tracked: u64,
    pub tracker_memory_bytes: u64,
    pub sampled_reads: u64,
    pub sampled_bytes: u128,
    pub fixed_local_reads: u64,
    pub fixed_local_bytes: u128,
    pub optimized_local_reads: u64,
    pub optimized_local_bytes: u128,
    /// Targets changed (decisions with `changed`, and raised CIDs the tracker evicted).
    pub target_changes: u64,
    pub evicted_resets: u64,
    /// Replicas added plus replicas removed by those changes.
    pub replica_moves: u64,
    pub raised_cids: u64,
    /// Σ (target − min) · size over the targets in force.
    pub raised_bytes: u64,
    pub water_level: Option<f64>,
    pub budget_used_bytes: u64,
    pub denied_increments: u64,
    pub deferred_changes: u64,
    pub storage_fixed_bytes: u64,
    pub storage_optimized_bytes: u64,
}

impl EpochFigures {
    pub fn recompute_secs(&self) -> f64 {
        self.candidates_secs + self.optimize_secs
    }

    pub fn progress_line(&self) -> String {
        format!(
            "epoch {:>3}: record {:>6.2} M/s, recompute {:>6.3} s ({} candidates), tracked {}, local bytes RF3 {:>5.1}% opt {:>5.1}%, changes {}, moves {}, raised {}, V* {}",
            self.epoch,
            rate(self.events, self.record_secs) / 1e6,
            self.recompute_secs(),
            self.candidates,
            self.tracked,
            share(self.fixed_local_bytes, self.sampled_bytes),
            share(self.optimized_local_bytes, self.sampled_bytes),
            self.target_changes,
            self.replica_moves,
            self.raised_cids,
            water(self.water_level),
        )
    }

    fn json(&self) -> Value {
        json!({
            "epoch": self.epoch,
            "events": self.events,
            "record_secs": self.record_secs,
            "end_epoch_secs": self.end_epoch_secs,
            "candidates_secs": self.candidates_secs,
            "held_regions_secs": self.held_regions_secs,
            "optimize_secs": self.optimize_secs,
            "candidates": self.candidates,
            "tracked": self.tracked,
            "tracker_memory_bytes": self.tracker_memory_bytes,
            "sampled_reads": self.sampled_reads,
            "local_bytes_share_fixed": share(self.fixed_local_bytes, self.sampled_bytes) / 100.0,
            "local_bytes_share_optimized": share(self.optimized_local_bytes, self.sampled_bytes) / 100.0,
            "local_reads_share_fixed": share(self.fixed_local_reads.into(), self.sampled_reads.into()) / 100.0,
            "local_reads_share_optimized": share(self.optimized_local_reads.into(), self.sampled_reads.into()) / 100.0,
            "target_changes": self.target_changes,
            "evicted_resets": self.evicted_resets,
            "replica_moves": self.replica_moves,
            "raised_cids": self.raised_cids,
            "raised_bytes": self.raised_bytes,
            "water_level_views_per_day": self.water_level,
            "budget_used_bytes": self.budget_used_bytes,
            "denied_increments": self.denied_increments,
            "deferred_changes": self.deferred_changes,
            "storage_fixed_bytes": self.storage_fixed_bytes,
            "storage_optimized_bytes": self.storage_optimized_bytes,
        })
    }
}

pub struct Report {
    pub args: AnalyticsArgs,
    pub total_size_bytes: u64,
    pub total_size_secs: f64,
    pub extra_budget_bytes: u64,
    pub generation_secs: f64,
    pub rss_at_start_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
    pub shift_epoch: u64,
    pub epochs: Vec<EpochFigures>,
}

/// Aggregate of a range of epochs.
struct Phase {
    name: &'static str,
    epochs: std::ops::Range<u64>,
    local_bytes_fixed: f64,
    local_bytes_optimized: f64,
    local_reads_fixed: f64,
    local_reads_optimized: f64,
    storage_fixed_bytes: f64,
    storage_optimized_bytes: f64,
    target_changes_per_epoch: f64,
    replica_moves_per_epoch: f64,
    water_level: Option<f64>,
    denied_increments: u64,
}

impl Report {
    fn phases(&self) -> Vec<Phase> {
        let total = self.epochs.len() as u64;
        let shift = self.shift_epoch;
        let ranges = [
            ("before shift (2nd quarter)", shift / 2..shift),
            (
                "first epochs after shift",
                shift..(shift + FIRST_AFTER_SHIFT).min(total),
            ),
            (
                "after shift (4th quarter)",
                shift + (total - shift) / 2..total,
            ),
        ];
        ranges
            .into_iter()
            .filter(|(_, range)| !range.is_empty())
            .map(|(name, range)| {
                let epochs = &self.epochs[range.start as usize..range.end as usize];
                let count = epochs.len() as f64;
                let sum128 = |f: fn(&EpochFigures) -> u128| epochs.iter().map(f).sum::<u128>();
                let sum = |f: fn(&EpochFigures) -> u64| epochs.iter().map(f).sum::<u64>();
                let sampled_bytes = sum128(|e| e.sampled_bytes);
                let sampled_reads = u128::from(sum(|e| e.sampled_reads));
                Phase {
                    name,
                    epochs: range.clone(),
                    local_bytes_fixed: share(sum128(|e| e.fixed_local_bytes), sampled_bytes),
                    local_bytes_optimized: share(
                        sum128(|e| e.optimized_local_bytes),
                        sampled_bytes,
                    ),
                    local_reads_fixed: share(sum(|e| e.fixed_local_reads).into(), sampled_reads),
                    local_reads_optimized: share(
                        sum(|e| e.optimized_local_reads).into(),
                        sampled_reads,
                    ),
                    storage_fixed_bytes: sum(|e| e.storage_fixed_bytes) as f64 / count,
                    storage_optimized_bytes: sum(|e| e.storage_optimized_bytes) as f64 / count,
                    target_changes_per_epoch: sum(|e| e.target_changes) as f64 / count,
                    replica_moves_per_epoch: sum(|e| e.replica_moves) as f64 / count,
                    water_level: epochs.last().and_then(|e| e.water_level),
                    denied_increments: epochs.last().map_or(0, |e| e.denied_increments),
                }
            })
            .collect()
    }

    fn events(&self) -> u64 {
        self.epochs.iter().map(|e| e.events).sum()
    }

    fn record_secs(&self) -> f64 {
        self.epochs.iter().map(|e| e.record_secs).sum()
    }

    fn recompute(&self) -> (f64, f64, u64) {
        let mut times: Vec<f64> = self
            .epochs
            .iter()
            .map(EpochFigures::recompute_secs)
            .collect();
        times.sort_by(f64::total_cmp);
        let median = times.get(times.len() / 2).copied().unwrap_or(0.0);
        let max = times.last().copied().unwrap_or(0.0);
        let candidates = self.epochs.iter().map(|e| e.candidates).max().unwrap_or(0);
        (median, max, candidates)
    }

    fn end_epoch_max_secs(&self) -> f64 {
        self.epochs
            .iter()
            .map(|e| e.end_epoch_secs)
            .fold(0.0, f64::max)
    }

    pub fn print(&self) {
        let args = &self.args;
        let events = self.events();
        let (recompute_median, recompute_max, candidates) = self.recompute();
        let tracker_memory = self.epochs.iter().map(|e| e.tracker_memory_bytes).max();
        let tracked = self.epochs.iter().map(|e| e.tracked).max().unwrap_or(0);
        println!();
        println!(
            "pinhive bench analytics: {} CIDs, {} events, Zipf({}), {} regions × {} nodes, {} epochs of {} s (shift at epoch {}), top-k {}, seed {}",
            args.cids, events, args.zipf, args.regions, args.nodes_per_region, args.epochs,
            args.epoch_secs, self.shift_epoch, args.top_k, args.seed
        );
        println!();
        println!("{:<44} {:>18}", "figure", "value");
        let row = |name: &str, value: String| println!("{name:<44} {value:>18}");
        if !args.baseline_only {
            row(
                "events ingested /s /core (record only)",
                format!("{:.2} M", rate(events, self.record_secs()) / 1e6),
            );
        }
        row(
            "generation (not timed above) ns/event",
            format!("{:.0}", self.generation_secs * 1e9 / events.max(1) as f64),
        );
        if !args.baseline_only {
            row(
                "recompute, median over epochs",
                format!("{recompute_median:.3} s"),
            );
            row(
                "recompute, max over epochs",
                format!("{recompute_max:.3} s"),
            );
            row(
                "end_epoch (decay + trim), max",
                format!("{:.3} s", self.end_epoch_max_secs()),
            );
            row("candidates per epoch, max", candidates.to_string());
            row("tracked CIDs, max", tracked.to_string());
            row("tracker memory_bytes, max", mib(tracker_memory));
        }
        row("peak RSS (VmHWM)", mib(self.peak_rss_bytes));
        row("VmHWM before the run", mib(self.rss_at_start_bytes));
        row(
            "Σ size of all CIDs",
            format!("{:.3} TiB", tib(self.total_size_bytes as f64)),
        );
        row(
            "extra budget (= Σ size)",
            format!("{:.3} TiB", tib(self.extra_budget_bytes as f64)),
        );
        println!();
        println!(
            "{:<28} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>9} {:>9} {:>10}",
            "phase (epochs)",
            "bytes",
            "local",
            "reads",
            "local",
            "storage",
            "storage",
            "changes",
            "moves",
            "V*"
        );
        println!(
            "{:<28} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>9} {:>9} {:>10}",
            "", "RF3", "opt", "RF3", "opt", "RF3 TiB", "opt TiB", "/epoch", "/epoch", "views/day"
        );
        for phase in self.phases() {
            println!(
                "{:<28} {:>7.1}% {:>7.1}% {:>7.1}% {:>7.1}% {:>10.3} {:>10.3} {:>9.0} {:>9.0} {:>10}",
                format!("{} {}..{}", phase.name, phase.epochs.start, phase.epochs.end),
                phase.local_bytes_fixed,
                phase.local_bytes_optimized,
                phase.local_reads_fixed,
                phase.local_reads_optimized,
                tib(phase.storage_fixed_bytes),
                tib(phase.storage_optimized_bytes),
                phase.target_changes_per_epoch,
                phase.replica_moves_per_epoch,
                water(phase.water_level),
            );
        }
        println!();
        println!(
            "local = share of sampled reads (1 in {}) served from a replica in the reader's region, by bytes and by reads; \
             RF3: 3 replicas per CID by the allocator; opt: min 2 + the optimizer's targets, budget Σ size (same total as RF3); \
             changes: targets changed per epoch (RF3: none); moves: replicas added + removed; V*: water level at the phase's last epoch",
            args.sample_every
        );
    }

    pub fn json(&self) -> Value {
        let args = &self.args;
        let events = self.events();
        let (recompute_median, recompute_max, candidates) = self.recompute();
        json!({
            "config": {
                "cids": args.cids,
                "events": events,
                "regions": args.regions,
                "nodes_per_region": args.nodes_per_region,
                "zipf": args.zipf,
                "epochs": args.epochs,
                "epoch_secs": args.epoch_secs,
                "fast_half_life_secs": args.fast_half_life_secs,
                "slow_half_life_secs": args.slow_half_life_secs,
                "top_k": args.top_k,
                "sketch_hashes": args.sketch_hashes,
                "sketch_buckets": args.sketch_buckets,
                "geo_views_per_day": args.geo_views_per_day,
                "replica_bytes_per_sec": args.replica_bytes_per_sec,
                "max_changes_per_epoch": args.max_changes_per_epoch,
                "sample_every": args.sample_every,
                "seed": args.seed,
                "baseline_only": args.baseline_only,
                "shift_epoch": self.shift_epoch,
            },
            "events_per_sec_per_core": rate(events, self.record_secs()),
            "generation_ns_per_event": self.generation_secs * 1e9 / events.max(1) as f64,
            "recompute_secs_median": recompute_median,
            "recompute_secs_max": recompute_max,
            "end_epoch_secs_max": self.end_epoch_max_secs(),
            "candidates_max": candidates,
            "tracker_memory_bytes_max": self.epochs.iter().map(|e| e.tracker_memory_bytes).max(),
            "peak_rss_bytes": self.peak_rss_bytes,
            "rss_at_start_bytes": self.rss_at_start_bytes,
            "total_size_bytes": self.total_size_bytes,
            "total_size_secs": self.total_size_secs,
            "extra_budget_bytes": self.extra_budget_bytes,
            "phases": self.phases().iter().map(|phase| json!({
                "name": phase.name,
                "epochs": [phase.epochs.start, phase.epochs.end],
                "local_bytes_share_fixed": phase.local_bytes_fixed / 100.0,
                "local_bytes_share_optimized": phase.local_bytes_optimized / 100.0,
                "local_reads_share_fixed": phase.local_reads_fixed / 100.0,
                "local_reads_share_optimized": phase.local_reads_optimized / 100.0,
                "storage_fixed_bytes": phase.storage_fixed_bytes,
                "storage_optimized_bytes": phase.storage_optimized_bytes,
                "target_changes_per_epoch": phase.target_changes_per_epoch,
                "replica_moves_per_epoch": phase.replica_moves_per_epoch,
                "water_level_views_per_day": phase.water_level,
                "denied_increments": phase.denied_increments,
            })).collect::<Vec<_>>(),
            "per_epoch": self.epochs.iter().map(EpochFigures::json).collect::<Vec<_>>(),
        })
    }
}

fn rate(events: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        events as f64 / secs
    } else {
        0.0
    }
}

/// Percent.
fn share(part: u128, whole: u128) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn tib(bytes: f64) -> f64 {
    bytes / (1u64 << 40) as f64
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    })
}

fn water(level: Option<f64>) -> String {
    level.map_or("-".into(), |v| format!("{v:.1}"))
}
