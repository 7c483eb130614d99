//! The replica optimizer: from per-region demand to a replica target per CID, within an
//! extra-storage budget (docs/analytics.md). Pure: no clocks (epochs are numbers the caller
//! passes), no I/O, deterministic for a given input.
//!
//! Per epoch the analytics actor hands [`optimize`] one [`Candidate`] per tracked CID (its
//! decayed demand per region, its size, the pins' bounds and the [`Memory`] of earlier
//! decisions) and turns every [`Decision`] whose `changed` is set into a `TargetChanged` event on
//! the CID's partition. CIDs that are not candidates are at their pins' `min` by construction.

pub mod access;
mod optimizer;
#[cfg(test)]
mod tests;

pub use optimizer::optimize;

use serde::{Deserialize, Serialize};

/// Seconds in a day: views/day = bytes/s × DAY / size.
pub const DAY_SECS: f64 = 86_400.0;

/// The optimizer's knobs (config file `[analytics]`, see docs/analytics.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerParams {
    /// Regions with nodes; a region's index is its id in [`Candidate::demand`] and [`Memory`].
    pub regions: Vec<String>,
    /// μ: bytes per second one replica serves.
    pub replica_bytes_per_sec: f64,
    /// ρ_up: utilisation above which a CID gains a load replica (e.g. 0.7).
    pub rho_up: f64,
    /// ρ_down: a load replica is dropped only when the rest would run below this (e.g. 0.5).
    pub rho_down: f64,
    /// V_geo: full copies per day a region must read to earn a local replica.
    pub geo_views_per_day: f64,
    /// h: a region keeps its local replica while it reads ≥ V_geo / (1 + h).
    pub geo_hysteresis: f64,
    /// Epochs a region stays below the keep threshold before its replica goes (cool-down).
    pub cool_down_epochs: u64,
    /// Epochs an added replica is kept at least (minimum hold).
    pub min_hold_epochs: u64,
    /// At most this many CIDs change target per epoch; budget-forced reductions always pass.
    pub max_changes_per_epoch: usize,
    /// Bytes this optimizer may spend on replicas above the pins' `min`.
    pub extra_budget_bytes: u64,
}

impl Default for OptimizerParams {
    fn default() -> Self {
        OptimizerParams {
            regions: Vec::new(),
            replica_bytes_per_sec: 100e6,
            rho_up: 0.7,
            rho_down: 0.5,
            geo_views_per_day: 50.0,
            geo_hysteresis: 0.5,
            cool_down_epochs: 12,
            min_hold_epochs: 6,
            max_changes_per_epoch: 1_000,
            extra_budget_bytes: 10 << 30,
        }
    }
}

/// What the optimizer remembers about a CID between epochs (kept by the tracker, checkpointed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Target in force (the last one emitted); 0 = none emitted, i.e. the pins' `min`.
    pub target: u8,
    /// Regions holding a geo replica in force (region ids), by demand, highest first.
    pub regions: Vec<u16>,
    /// Epoch of the last increase of `target` (minimum hold).
    pub raised_at: u64,
    /// Geo regions below the keep threshold, and the epoch they fell below it (cool-down).
    pub below_since: Vec<(u16, u64)>,
}

/// One tracked CID, as the optimizer sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub cid: String,
    /// Bytes one replica costs (≥ 1).
    pub size_bytes: u64,
    /// β per region id: decayed bytes per second read from that region.
    pub demand: Vec<f64>,
    /// Bytes per second read from regions without nodes (counts for load, never for geo).
    pub other_demand: f64,
    /// β per region id at the slow half-life alone: sustained demand. The geo term reads it
    /// when it is not empty (a local replica moves data, so it waits for demand that lasts,
    /// not for a few reads in the fast window); empty: the geo term reads `demand`.
    pub sustained: Vec<f64>,
    /// Distinct region ids of the CID's live replicas now (from the shard's state; regions
    /// without an id are left out).
    pub held_regions: Vec<u16>,
    /// Bounds of the CID's pins (the largest `min` and `max` among them).
    pub min: u8,
    pub max: u8,
    pub memory: Memory,
}

/// Why a CID gets its target: every input that shaped it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// Total demand in bytes per second and in full copies per day.
    pub bytes_per_sec: f64,
    pub views_per_day: f64,
    /// Replicas the load term asks for (β / (ρ μ), after hysteresis).
    pub load_replicas: u8,
    /// Regions that earn (or keep) a local replica, with their views per day.
    pub geo_regions: Vec<(String, f64)>,
    /// Target demand alone would give, clamped to the bounds.
    pub wanted: u8,
    /// Increments the budget (or the change cap) denied.
    pub denied: u8,
    /// Short human form, used as the `reason` of `TargetChanged`.
    pub reason: String,
}

/// The optimizer's verdict for one candidate (same order as the input).
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub cid: String,
    /// Replica target, `min ≤ target ≤ max`.
    pub target: u8,
    /// Regions for the replicas above `min`, highest demand first (→ `preferred_regions`).
    pub preferred_regions: Vec<String>,
    /// True when target or preferred regions differ from what `memory` says is in force: the
    /// actor emits `TargetChanged` and stores `memory`.
    pub changed: bool,
    /// Memory to keep for the next epoch.
    pub memory: Memory,
    pub explanation: Explanation,
}

/// Result of one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochOutcome {
    pub decisions: Vec<Decision>,
    /// V*: views per day the last granted increment carries (None: nothing above min granted).
    pub water_level: Option<f64>,
    /// Bytes granted above the pins' `min` (≤ `extra_budget_bytes`).
    pub budget_used_bytes: u64,
    /// Increments wanted but denied by the budget.
    pub denied_increments: u64,
    /// Changes deferred to a later epoch by `max_changes_per_epoch`.
    pub deferred_changes: u64,
}

/// One of the CIDs with the most demand in an epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopCid {
    pub cid: String,
    /// Total decayed demand, all regions, bytes per second.
    pub bytes_per_sec: f64,
    /// The epoch's replica target.
    pub target: u8,
}

/// What an operator sees of an epoch's demand: bytes per second read from each region
/// (`regions` order, then `"other"` for regions without nodes), and the `top` candidates by
/// total demand, highest first (ties by CID).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DemandOverview {
    pub by_region: Vec<(String, f64)>,
    pub top: Vec<TopCid>,
}

/// The [`DemandOverview`] of `candidates` and their `decisions` (same order, as
/// [`optimize`] returns them). O(candidates · regions + candidates · log candidates).
pub fn demand_overview(
    candidates: &[Candidate],
    decisions: &[Decision],
    regions: &[String],
    top: usize,
) -> DemandOverview {
    let mut by_region = vec![0.0; regions.len()];
    let mut other = 0.0;
    let mut totals: Vec<(f64, &str, u8)> = Vec::with_capacity(candidates.len());
    for (candidate, decision) in candidates.iter().zip(decisions) {
        for (sum, demand) in by_region.iter_mut().zip(&candidate.demand) {
            *sum += demand;
        }
        other += candidate.other_demand;
        let total = candidate.demand.iter().sum::<f64>() + candidate.other_demand;
        totals.push((total, &candidate.cid, decision.target));
    }
    totals.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    DemandOverview {
        by_region: regions
            .iter()
            .cloned()
            .zip(by_region)
            .chain(std::iter::once(("other".to_string(), other)))
            .collect(),
        top: totals
            .into_iter()
            .take(top)
            .map(|(bytes_per_sec, cid, target)| TopCid {
                cid: cid.to_string(),
                bytes_per_sec,
                target,
            })
            .collect(),
    }
}
