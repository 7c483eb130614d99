//! The budgeted water-level optimizer (docs/analytics.md).
//!
//! One epoch is four passes over the candidates: analyse (demand and memory → the target
//! demand alone wants, with hysteresis), budget (grant replicas above `min` by density until
//! the extra budget is spent), cap (apply at most `max_changes_per_epoch` changes; budget-forced
//! reductions always pass), decide (memory and explanation).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::{Candidate, Decision, EpochOutcome, Explanation, Memory, OptimizerParams, DAY_SECS};

/// `TargetChanged` carries at most this many preferred regions.
const MAX_PREFERRED_REGIONS: usize = 16;
/// Bound of `Explanation::reason` (it becomes an event field).
const MAX_REASON_BYTES: usize = 1024;
/// Budget hysteresis: an extra replica in force ranks as if it carried this much more.
pub const INCUMBENT_ADVANTAGE: f64 = 0.25;
/// Geo regions named in a reason; the rest are counted.
const REASON_REGIONS: usize = 6;

/// Computes every candidate's target for `epoch`.
pub fn optimize(candidates: &[Candidate], params: &OptimizerParams, epoch: u64) -> EpochOutcome {
    let knobs = Knobs::new(params);
    let mut analyses: Vec<Analysis> = candidates
        .iter()
        .map(|candidate| analyse(candidate, &knobs, epoch))
        .collect();
    let (water_level, denied_increments) =
        grant_budget(candidates, &mut analyses, params.extra_budget_bytes);
    // A geo region the budget granted no replica for is not in force unless a replica already
    // sits there: remembering it would mark the CID as raised (kept by the tracker, a
    // `TargetChanged` for nothing) while it holds only its `min`.
    for (candidate, analysis) in candidates.iter().zip(&mut analyses) {
        if analysis.granted <= analysis.min {
            analysis.geo.retain(|r| candidate.held_regions.contains(r));
            analysis
                .below_since
                .retain(|(r, _)| candidate.held_regions.contains(r));
        }
    }
    apply_change_cap(candidates, &mut analyses, params);
    let restored = restore_forced(candidates, &mut analyses, params.extra_budget_bytes);
    let denied_increments = denied_increments.saturating_sub(restored);
    let deferred_changes = analyses
        .iter()
        .filter(|a| a.outcome == Outcome::Deferred)
        .count() as u64;
    let budget_used_bytes = extra_bytes(&analyses);
    let decisions = candidates
        .iter()
        .zip(&analyses)
        .map(|(candidate, analysis)| decide(candidate, analysis, &knobs, water_level, epoch))
        .collect();
    EpochOutcome {
        decisions,
        water_level,
        budget_used_bytes: u64::try_from(budget_used_bytes).unwrap_or(u64::MAX),
        denied_increments,
        deferred_changes,
    }
}

/// Parameters made safe to compute with: non-finite or negative knobs cannot produce NaN.
struct Knobs<'a> {
    params: &'a OptimizerParams,
    /// Regions that can hold geo replicas (ids must fit a u16).
    region_count: usize,
    /// ρ_up·μ and ρ_down·μ: bytes per second one replica may serve before growing / after
    /// shrinking.
    up_capacity: f64,
    down_capacity: f64,
    geo_earn: f64,
    geo_keep: f64,
}

impl<'a> Knobs<'a> {
    fn new(params: &'a OptimizerParams) -> Self {
        let mu = non_negative(params.replica_bytes_per_sec);
        let hysteresis = non_negative(params.geo_hysteresis);
        let geo_earn = non_negative(params.geo_views_per_day);
        Knobs {
            params,
            region_count: params.regions.len().min(usize::from(u16::MAX) + 1),
            up_capacity: non_negative(params.rho_up) * mu,
            down_capacity: non_negative(params.rho_down) * mu,
            geo_earn,
            geo_keep: geo_earn / (1.0 + hysteresis),
        }
    }
}

/// Which rule set `wanted` (for the explanation).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    /// wanted = what demand asks for now (grow, or steady at it).
    Demand,
    /// T is above what demand asks for but within the hysteresis band (≤ keep).
    Band { keep: u8 },
    /// T is above the band but was raised less than `min_hold_epochs` ago.
    Hold,
    /// One step down from T.
    Shrink,
}

/// What happened to a candidate's change in the cap pass.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    /// Nothing to change.
    Unchanged,
    /// Applied within the cap.
    Applied,
    /// Applied outside the cap because the budget needs it.
    Forced,
    /// Deferred by the cap: T and the old memory stay.
    Deferred,
}

/// One candidate after the analyse pass, completed by the budget and cap passes.
struct Analysis {
    min: u8,
    max: u8,
    /// T: the target in force, clamped to today's bounds.
    previous: u8,
    size: u64,
    bytes_per_sec: f64,
    views_per_day: f64,
    /// V_r per region id < region_count.
    region_views: Vec<f64>,
    /// Geo regions, by V_r desc, and the cool-down clocks of those below the keep threshold.
    geo: Vec<u16>,
    /// Geo regions demand asked for (for the explanation), before the budget's verdict.
    wanted_geo: Vec<u16>,
    below_since: Vec<(u16, u64)>,
    /// ⌈B / (ρ_up μ)⌉, unclamped (for the reason) and the load count the explanation shows.
    load_needed: u64,
    load_replicas: u8,
    rule: Rule,
    wanted: u8,
    granted: u8,
    outcome: Outcome,
}

impl Analysis {
    fn final_target(&self) -> u8 {
        match self.outcome {
            Outcome::Deferred => self.previous,
            Outcome::Unchanged | Outcome::Applied | Outcome::Forced => self.granted,
        }
    }

    /// Views per day the k-th replica carries.
    fn density(&self, k: u8) -> f64 {
        self.views_per_day / f64::from(k)
    }

    /// What the budget ranks the k-th replica by: its density, raised by
    /// [`INCUMBENT_ADVANTAGE`] when the replica is in force already. A newcomer must carry
    /// clearly more than an incumbent to take its budget, so two CIDs of nearly equal density
    /// at the water level do not swap replicas every epoch as their estimates jitter.
    fn ranking_density(&self, k: u8) -> f64 {
        let density = self.density(k);
        if k <= self.previous {
            density * (1.0 + INCUMBENT_ADVANTAGE)
        } else {
            density
        }
    }
}

fn analyse(candidate: &Candidate, knobs: &Knobs, epoch: u64) -> Analysis {
    let params = knobs.params;
    let memory = &candidate.memory;
    let min = candidate.min.max(1);
    let max = candidate.max.max(min);
    let stored = if memory.target == 0 {
        min
    } else {
        memory.target
    };
    let previous = stored.clamp(min, max);
    let size = candidate.size_bytes.max(1);
    let per_view = DAY_SECS / size as f64;

    let bytes_per_sec = candidate
        .demand
        .iter()
        .fold(non_negative(candidate.other_demand), |sum, rate| {
            sum + non_negative(*rate)
        })
        .min(f64::MAX);
    let views_per_day = (bytes_per_sec * per_view).min(f64::MAX);
    let geo_demand = if candidate.sustained.is_empty() {
        &candidate.demand
    } else {
        &candidate.sustained
    };
    let region_views: Vec<f64> = (0..knobs.region_count)
        .map(|r| {
            let rate = geo_demand.get(r).copied().unwrap_or(0.0);
            (non_negative(rate) * per_view).min(f64::MAX)
        })
        .collect();

    let (geo, below_since) = geo_regions(&region_views, memory, knobs, epoch);
    let geo_held = geo
        .iter()
        .filter(|r| candidate.held_regions.contains(r))
        .count();
    let geo_replicas = geo.len() + usize::from(min).saturating_sub(geo_held);

    let load_needed = replicas_for(bytes_per_sec, knobs.up_capacity);
    let load_kept = replicas_for(bytes_per_sec, knobs.down_capacity).max(load_needed);
    let bounded = |count: u64| count.clamp(u64::from(min), u64::from(max)) as u8;
    let geo_count = u64::try_from(geo_replicas).unwrap_or(u64::MAX);
    let grow_to = bounded(load_needed.max(geo_count));
    let keep = bounded(load_kept.max(geo_count));
    let held =
        memory.target != 0 && epoch.saturating_sub(memory.raised_at) < params.min_hold_epochs;

    let (rule, wanted) = if grow_to >= previous {
        (Rule::Demand, grow_to)
    } else if previous <= keep {
        (Rule::Band { keep }, previous)
    } else if held {
        (Rule::Hold, previous)
    } else {
        (Rule::Shrink, (previous - 1).max(grow_to))
    };
    let load_replicas = match rule {
        Rule::Band { .. } => bounded(load_needed.max(load_kept.min(u64::from(previous)))),
        Rule::Demand | Rule::Hold | Rule::Shrink => bounded(load_needed),
    };

    Analysis {
        min,
        max,
        previous,
        size,
        bytes_per_sec,
        views_per_day,
        region_views,
        wanted_geo: geo.clone(),
        geo,
        below_since,
        load_needed,
        load_replicas,
        rule,
        wanted,
        granted: min,
        outcome: Outcome::Unchanged,
    }
}

/// Geo regions (by V_r desc, ties by id) and the updated cool-down clocks.
fn geo_regions(
    region_views: &[f64],
    memory: &Memory,
    knobs: &Knobs,
    epoch: u64,
) -> (Vec<u16>, Vec<(u16, u64)>) {
    let mut geo = Vec::new();
    let mut below_since = Vec::new();
    for (index, &views) in region_views.iter().enumerate() {
        let Ok(region) = u16::try_from(index) else {
            break;
        };
        // A region nobody reads never earns or keeps a replica, whatever the thresholds.
        if views > 0.0 && views >= knobs.geo_earn {
            geo.push(region);
            continue;
        }
        if !memory.regions.contains(&region) {
            continue;
        }
        if views > 0.0 && views >= knobs.geo_keep {
            geo.push(region);
            continue;
        }
        let since = memory
            .below_since
            .iter()
            .find(|(id, _)| *id == region)
            .map_or(epoch, |(_, since)| *since);
        if epoch.saturating_sub(since) < knobs.params.cool_down_epochs {
            geo.push(region);
            below_since.push((region, since));
        }
    }
    geo.sort_by(|a, b| {
        region_views[usize::from(*b)]
            .total_cmp(&region_views[usize::from(*a)])
            .then(a.cmp(b))
    });
    (geo, below_since)
}

/// The next increment of one candidate in the water-level merge. The heap pops the highest
/// density first, ties by cid then k ascending (then input order, for duplicate cids).
struct Increment<'a> {
    density: f64,
    cid: &'a str,
    k: u8,
    index: usize,
}

impl Ord for Increment<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.density
            .total_cmp(&other.density)
            .then_with(|| other.cid.cmp(self.cid))
            .then_with(|| other.k.cmp(&self.k))
            .then_with(|| other.index.cmp(&self.index))
    }
}

impl PartialOrd for Increment<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Increment<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Increment<'_> {}

/// Grants increments in density order while they fit; returns the water level and the number
/// of denied increments. A CID's increments have non-increasing density, so merging the
/// per-CID sequences through a heap visits them in the same order as sorting them all, with
/// memory proportional to the number of candidates rather than of increments.
fn grant_budget(
    candidates: &[Candidate],
    analyses: &mut [Analysis],
    budget_bytes: u64,
) -> (Option<f64>, u64) {
    let mut heap = BinaryHeap::new();
    for (index, (candidate, analysis)) in candidates.iter().zip(analyses.iter_mut()).enumerate() {
        analysis.granted = analysis.min;
        if analysis.wanted > analysis.min {
            let k = analysis.min + 1;
            heap.push(Increment {
                density: analysis.ranking_density(k),
                cid: &candidate.cid,
                k,
                index,
            });
        }
    }
    let mut remaining = budget_bytes;
    let mut water_level = None;
    let mut denied = 0u64;
    while let Some(increment) = heap.pop() {
        let analysis = &mut analyses[increment.index];
        if analysis.size > remaining {
            // This increment and every later one of the CID are denied; smaller increments of
            // other CIDs may still fit.
            denied += u64::from(analysis.wanted - increment.k) + 1;
            continue;
        }
        remaining -= analysis.size;
        analysis.granted = increment.k;
        water_level = Some(analysis.density(increment.k));
        if increment.k < analysis.wanted {
            let k = increment.k + 1;
            heap.push(Increment {
                density: analysis.ranking_density(k),
                k,
                ..increment
            });
        }
    }
    (water_level, denied)
}

/// Applies at most `max_changes_per_epoch` changes: voluntary reductions first, then raises by
/// the density of their first new increment, then region-only changes. Reductions the budget
/// causes always pass and do not count.
fn apply_change_cap(candidates: &[Candidate], analyses: &mut [Analysis], params: &OptimizerParams) {
    // (rank, density of the first new increment, index) of every capped change.
    let mut capped: Vec<(u8, f64, usize)> = Vec::new();
    for (index, (candidate, analysis)) in candidates.iter().zip(analyses.iter_mut()).enumerate() {
        let (granted, previous) = (analysis.granted, analysis.previous);
        if granted < previous && granted < analysis.wanted {
            analysis.outcome = Outcome::Forced;
        } else if granted < previous {
            capped.push((0, 0.0, index));
        } else if granted > previous {
            capped.push((1, analysis.density(previous + 1), index));
        } else if !same_set(&analysis.geo, &candidate.memory.regions) {
            capped.push((2, 0.0, index));
        }
    }
    capped.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| b.1.total_cmp(&a.1))
            .then_with(|| candidates[a.2].cid.cmp(&candidates[b.2].cid))
            .then(a.2.cmp(&b.2))
    });
    for (position, (_, _, index)) in capped.iter().enumerate() {
        analyses[*index].outcome = if position < params.max_changes_per_epoch {
            Outcome::Applied
        } else {
            Outcome::Deferred
        };
    }

    // A deferred reduction keeps replicas the budget pass gave to others: apply deferred
    // reductions until the budget holds. Once all are applied every target is ≤ its grant, so
    // this always ends within the budget.
    let budget = u128::from(params.extra_budget_bytes);
    let mut used = extra_bytes(analyses);
    for (rank, _, index) in &capped {
        if used <= budget {
            break;
        }
        let analysis = &mut analyses[*index];
        if *rank == 0 && analysis.outcome == Outcome::Deferred {
            let freed = u128::from(analysis.previous - analysis.granted);
            used -= freed * u128::from(analysis.size);
            analysis.outcome = Outcome::Forced;
        }
    }
    debug_assert!(used <= budget, "budget exceeded after forced reductions");
}

/// The budget pass forces a reduction to make room for raises, but the cap may then defer
/// those raises: their bytes stay unspent. Forced reductions take back what still fits, highest
/// density first, up to the replicas in force (never above what demand wants), so a CID never
/// loses a replica to a raise that does not happen. A reduction undone in full changes
/// nothing. Returns the number of increments given back.
fn restore_forced(candidates: &[Candidate], analyses: &mut [Analysis], budget_bytes: u64) -> u64 {
    let mut spare = u128::from(budget_bytes).saturating_sub(extra_bytes(analyses));
    let ceiling = |a: &Analysis| a.previous.min(a.wanted);
    let mut heap = BinaryHeap::new();
    for (index, (candidate, analysis)) in candidates.iter().zip(analyses.iter()).enumerate() {
        if analysis.outcome == Outcome::Forced && analysis.granted < ceiling(analysis) {
            let k = analysis.granted + 1;
            heap.push(Increment {
                density: analysis.ranking_density(k),
                cid: &candidate.cid,
                k,
                index,
            });
        }
    }
    let mut restored = 0u64;
    while let Some(increment) = heap.pop() {
        let analysis = &mut analyses[increment.index];
        let size = u128::from(analysis.size);
        if size > spare {
            continue;
        }
        spare -= size;
        analysis.granted = increment.k;
        restored += 1;
        if increment.k < ceiling(analysis) {
            let k = increment.k + 1;
            heap.push(Increment {
                density: analysis.ranking_density(k),
                k,
                ..increment
            });
        } else if analysis.granted == analysis.previous {
            analysis.outcome =
                if same_set(&analysis.geo, &candidates[increment.index].memory.regions) {
                    Outcome::Unchanged
                } else {
                    // Only the regions would change: that is a capped change, and the cap is spent.
                    Outcome::Deferred
                };
        }
    }
    restored
}

/// Σ (target − min) · size over the final targets.
fn extra_bytes(analyses: &[Analysis]) -> u128 {
    analyses
        .iter()
        .map(|a| u128::from(a.final_target() - a.min) * u128::from(a.size))
        .sum()
}

fn decide(
    candidate: &Candidate,
    analysis: &Analysis,
    knobs: &Knobs,
    water_level: Option<f64>,
    epoch: u64,
) -> Decision {
    let old = &candidate.memory;
    let target = analysis.final_target();
    let (geo, memory) = match analysis.outcome {
        Outcome::Deferred => {
            let in_force: Vec<u16> = old
                .regions
                .iter()
                .copied()
                .filter(|r| usize::from(*r) < knobs.region_count)
                .collect();
            (in_force, old.clone())
        }
        // Nothing emitted: what is in force stays in force (a target clamped by narrowed
        // bounds comes back with them, as the shard's own clamp does).
        Outcome::Unchanged => (
            analysis.geo.clone(),
            Memory {
                target: old.target,
                regions: analysis.geo.clone(),
                raised_at: old.raised_at,
                below_since: analysis.below_since.clone(),
            },
        ),
        Outcome::Applied | Outcome::Forced => (
            analysis.geo.clone(),
            Memory {
                target: if target == analysis.min && analysis.geo.is_empty() {
                    0
                } else {
                    target
                },
                regions: analysis.geo.clone(),
                raised_at: if target > analysis.previous {
                    epoch
                } else {
                    old.raised_at
                },
                below_since: analysis.below_since.clone(),
            },
        ),
    };
    let changed = matches!(analysis.outcome, Outcome::Applied | Outcome::Forced);
    let cap_denied = match analysis.outcome {
        Outcome::Deferred => analysis.granted.saturating_sub(analysis.previous),
        Outcome::Unchanged | Outcome::Applied | Outcome::Forced => 0,
    };
    let names = &knobs.params.regions;
    let explanation = Explanation {
        bytes_per_sec: analysis.bytes_per_sec,
        views_per_day: analysis.views_per_day,
        load_replicas: analysis.load_replicas,
        geo_regions: analysis
            .wanted_geo
            .iter()
            .map(|r| {
                let r = usize::from(*r);
                (names[r].clone(), analysis.region_views[r])
            })
            .collect(),
        wanted: analysis.wanted,
        denied: (analysis.wanted - analysis.granted).saturating_add(cap_denied),
        reason: reason(
            analysis,
            target,
            if matches!(analysis.outcome, Outcome::Deferred) {
                &geo
            } else {
                &analysis.wanted_geo
            },
            old,
            knobs,
            water_level,
        ),
    };
    Decision {
        cid: candidate.cid.clone(),
        target,
        preferred_regions: preferred_regions(analysis, &geo, names),
        changed,
        memory,
        explanation,
    }
}

/// Geo regions in force, then the other regions that read the CID by demand; at most 16.
fn preferred_regions(analysis: &Analysis, geo: &[u16], names: &[String]) -> Vec<String> {
    let views = &analysis.region_views;
    let mut others: Vec<usize> = (0..views.len())
        .filter(|r| views[*r] > 0.0 && !geo.iter().any(|g| usize::from(*g) == *r))
        .collect();
    others.sort_by(|a, b| views[*b].total_cmp(&views[*a]).then(a.cmp(b)));
    geo.iter()
        .map(|r| usize::from(*r))
        .chain(others)
        .take(MAX_PREFERRED_REGIONS)
        .map(|r| names[r].clone())
        .collect()
}

/// One line: `3 replicas: load 2.3 MB/s needs 1 at 70% of 100 MB/s; geo us (120 views/day
/// ≥ 50); budget granted 1 of 2 (water level 55 views/day)`.
fn reason(
    analysis: &Analysis,
    target: u8,
    geo: &[u16],
    old: &Memory,
    knobs: &Knobs,
    water_level: Option<f64>,
) -> String {
    let params = knobs.params;
    let mut parts = vec![format!(
        "load {} needs {} at {}% of {}",
        rate(analysis.bytes_per_sec),
        analysis.load_needed,
        number(non_negative(params.rho_up) * 100.0),
        rate(non_negative(params.replica_bytes_per_sec)),
    )];
    if !geo.is_empty() {
        let mut regions: Vec<String> = geo
            .iter()
            .take(REASON_REGIONS)
            .map(|r| geo_region(*r, analysis, old, knobs))
            .collect();
        if geo.len() > REASON_REGIONS {
            regions.push(format!("{} more", geo.len() - REASON_REGIONS));
        }
        parts.push(format!("geo {}", regions.join(", ")));
    }
    match analysis.rule {
        Rule::Demand => {}
        Rule::Band { keep } => parts.push(format!(
            "hysteresis keeps {} (keep level {keep})",
            analysis.previous
        )),
        Rule::Hold => parts.push(format!(
            "minimum hold keeps {} (raised at epoch {})",
            analysis.previous, old.raised_at
        )),
        Rule::Shrink => parts.push(format!("shrinks one step from {}", analysis.previous)),
    }
    if analysis.wanted > analysis.min {
        let mut budget = format!(
            "budget granted {} of {}",
            analysis.granted - analysis.min,
            analysis.wanted - analysis.min
        );
        if let Some(level) = water_level {
            budget.push_str(&format!(" (water level {} views/day)", number(level)));
        }
        parts.push(budget);
    }
    match analysis.outcome {
        Outcome::Deferred => parts.push(format!(
            "change deferred by the cap of {} per epoch",
            params.max_changes_per_epoch
        )),
        Outcome::Forced => parts.push("reduction forced by the budget".to_string()),
        Outcome::Unchanged | Outcome::Applied => {}
    }
    if analysis.min == analysis.max {
        parts.push(format!("pins fix {} replicas", analysis.min));
    }
    let line = format!("{target} replicas: {}", parts.join("; "));
    truncate(line, MAX_REASON_BYTES)
}

fn geo_region(region: u16, analysis: &Analysis, old: &Memory, knobs: &Knobs) -> String {
    let r = usize::from(region);
    let views = analysis.region_views.get(r).copied().unwrap_or(0.0);
    let name = &knobs.params.regions[r];
    let why = if views > 0.0 && views >= knobs.geo_earn {
        format!("≥ {}", number(knobs.geo_earn))
    } else if views > 0.0 && views >= knobs.geo_keep {
        format!("kept ≥ {}", number(knobs.geo_keep))
    } else {
        let since = analysis
            .below_since
            .iter()
            .chain(&old.below_since)
            .find(|(id, _)| *id == region)
            .map(|(_, since)| *since);
        match since {
            Some(since) => format!("cooling down since epoch {since}"),
            None => "in force".to_string(),
        }
    };
    format!("{name} ({} views/day {why})", number(views))
}

fn same_set(a: &[u16], b: &[u16]) -> bool {
    a.iter().all(|r| b.contains(r)) && b.iter().all(|r| a.contains(r))
}

/// ⌈rate / capacity⌉ replicas; without a usable capacity any demand needs "all of them".
fn replicas_for(bytes_per_sec: f64, capacity: f64) -> u64 {
    if bytes_per_sec <= 0.0 {
        return 0;
    }
    if capacity <= 0.0 || !capacity.is_finite() {
        return u64::MAX;
    }
    // Float → int casts saturate, which is the clamp wanted here.
    (bytes_per_sec / capacity).ceil() as u64
}

/// Non-finite or negative input counts as 0.
fn non_negative(value: f64) -> f64 {
    if value.is_finite() && value > 0.0 {
        value
    } else {
        0.0
    }
}

fn number(value: f64) -> String {
    if !value.is_finite() {
        "∞".to_string()
    } else if value >= 1e9 {
        format!("{value:.2e}")
    } else if value >= 10.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn rate(bytes_per_sec: f64) -> String {
    for (unit, scale) in [("TB/s", 1e12), ("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)] {
        if bytes_per_sec >= scale {
            return format!("{} {unit}", number(bytes_per_sec / scale));
        }
    }
    format!("{} B/s", number(bytes_per_sec))
}

fn truncate(mut line: String, limit: usize) -> String {
    if line.len() > limit {
        let mut end = limit;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line
}
