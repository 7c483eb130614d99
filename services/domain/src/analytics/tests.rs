//! The optimizer's rules as tables (one per rule, plus the worked example of
//! docs/analytics.md) and its invariants as properties.

use proptest::prelude::*;

use super::{optimize, Candidate, Decision, EpochOutcome, Memory, OptimizerParams, DAY_SECS};

const US: u16 = 0;
const EU: u16 = 1;
const AP: u16 = 2;
const MB: u64 = 1_000_000;
const GB: u64 = 1_000_000_000;

fn params() -> OptimizerParams {
    OptimizerParams {
        regions: vec!["us".into(), "eu".into(), "ap".into()],
        ..OptimizerParams::default()
    }
}

/// Bytes per second that read `views` full copies of `size` bytes per day.
fn rate(views: f64, size: u64) -> f64 {
    views * size as f64 / DAY_SECS
}

/// A CID with pins `min 2 max 8`, replicas held in us and eu, read `views` (us, eu, ap) full
/// copies per day.
fn candidate(cid: &str, size: u64, views: [f64; 3]) -> Candidate {
    Candidate {
        cid: cid.into(),
        size_bytes: size,
        demand: views.iter().map(|v| rate(*v, size)).collect(),
        other_demand: 0.0,
        sustained: Vec::new(),
        held_regions: vec![US, EU],
        min: 2,
        max: 8,
        memory: Memory::default(),
    }
}

/// The same CID with demand only from outside the regions, `bytes_per_sec` of it.
fn loaded(cid: &str, bytes_per_sec: f64) -> Candidate {
    Candidate {
        other_demand: bytes_per_sec,
        ..candidate(cid, 100 * MB, [0.0; 3])
    }
}

fn with_memory(candidate: Candidate, target: u8, raised_at: u64) -> Candidate {
    Candidate {
        memory: Memory {
            target,
            raised_at,
            ..Memory::default()
        },
        ..candidate
    }
}

fn held_in(candidate: Candidate, regions: &[u16]) -> Candidate {
    Candidate {
        held_regions: regions.to_vec(),
        ..candidate
    }
}

fn decision<'a>(outcome: &'a EpochOutcome, cid: &str) -> &'a Decision {
    outcome
        .decisions
        .iter()
        .find(|d| d.cid == cid)
        .expect("a decision per candidate")
}

/// Runs `epochs` epochs of one candidate, feeding its memory back; returns the targets.
fn targets_over(mut candidate: Candidate, params: &OptimizerParams, epochs: &[u64]) -> Vec<u8> {
    let mut targets = Vec::new();
    for epoch in epochs {
        let outcome = optimize(std::slice::from_ref(&candidate), params, *epoch);
        targets.push(outcome.decisions[0].target);
        candidate.memory = outcome.decisions[0].memory.clone();
    }
    targets
}

#[test]
fn load_raises_the_target() {
    // 150 MB/s at 70% of 100 MB/s per replica needs ⌈2.14⌉ = 3 replicas.
    let outcome = optimize(&[loaded("a", 150e6)], &params(), 7);
    let d = &outcome.decisions[0];
    assert_eq!((d.target, d.changed), (3, true));
    assert_eq!(d.explanation.load_replicas, 3);
    assert_eq!((d.memory.target, d.memory.raised_at), (3, 7));
    assert_eq!(
        d.explanation.reason,
        "3 replicas: load 150 MB/s needs 3 at 70% of 100 MB/s; budget granted 1 of 1 \
         (water level 43200 views/day)"
    );
    assert_eq!(outcome.budget_used_bytes, 100 * MB);
}

#[test]
fn geo_region_earns_a_replica() {
    // ap reads 60 ≥ 50 copies/day; both min replicas sit outside ap: 1 + 2 = 3.
    let outcome = optimize(&[candidate("a", 2 * GB, [0.0, 0.0, 60.0])], &params(), 1);
    let d = &outcome.decisions[0];
    assert_eq!(d.target, 3);
    assert_eq!(d.preferred_regions, ["ap"]);
    assert_eq!(d.explanation.geo_regions.len(), 1);
    assert_eq!(d.explanation.geo_regions[0].0, "ap");
    assert!((d.explanation.geo_regions[0].1 - 60.0).abs() < 1e-9);
    assert_eq!(d.memory.regions, [AP]);

    // A replica already in ap serves the geo term: no extra replica, but the region is noted.
    let held = held_in(candidate("a", 2 * GB, [0.0, 0.0, 60.0]), &[US, AP]);
    let d = &optimize(&[held], &params(), 1).decisions[0];
    assert_eq!((d.target, d.changed), (2, true));
    assert_eq!(
        (d.memory.target, d.memory.regions.as_slice()),
        (2, &[AP][..])
    );
}

#[test]
fn hysteresis_band_keeps_the_target() {
    // 120 MB/s: grow level ⌈1.7⌉ = 2, keep level ⌈2.4⌉ = 3: a target of 3 stays.
    let kept = optimize(&[with_memory(loaded("a", 120e6), 3, 0)], &params(), 100);
    let d = &kept.decisions[0];
    assert_eq!(
        (d.target, d.changed, d.explanation.load_replicas),
        (3, false, 3)
    );
    assert!(d
        .explanation
        .reason
        .contains("hysteresis keeps 3 (keep level 3)"));

    // 90 MB/s: keep level ⌈1.8⌉ = 2, so 3 is above the band and shrinks.
    let shrunk = optimize(&[with_memory(loaded("a", 90e6), 3, 0)], &params(), 100);
    assert_eq!(shrunk.decisions[0].target, 2);
}

#[test]
fn minimum_hold_keeps_a_raised_target() {
    let idle = with_memory(loaded("a", 0.0), 4, 10);
    let held = optimize(std::slice::from_ref(&idle), &params(), 15);
    assert_eq!(
        (held.decisions[0].target, held.decisions[0].changed),
        (4, false)
    );
    assert!(held.decisions[0]
        .explanation
        .reason
        .contains("minimum hold keeps 4 (raised at epoch 10)"));
    let released = optimize(&[idle], &params(), 16);
    assert_eq!(released.decisions[0].target, 3);
}

#[test]
fn shrinks_one_step_per_epoch() {
    let idle = with_memory(loaded("a", 0.0), 6, 0);
    assert_eq!(
        targets_over(idle.clone(), &params(), &[100, 101, 102, 103, 104, 105]),
        [5, 4, 3, 2, 2, 2]
    );
    let mut memory = idle.memory;
    for epoch in 100..104 {
        let c = Candidate {
            memory,
            ..loaded("a", 0.0)
        };
        memory = optimize(&[c], &params(), epoch).decisions[0].memory.clone();
    }
    assert_eq!(
        memory.target, 0,
        "back at min with no geo region: nothing in force"
    );
}

#[test]
fn geo_region_cools_down_before_it_goes() {
    let was_geo = |views: f64| Candidate {
        memory: Memory {
            target: 3,
            regions: vec![AP],
            raised_at: 0,
            below_since: Vec::new(),
        },
        ..candidate("a", 2 * GB, [0.0, 0.0, views])
    };
    // 40 ≥ 50 / 1.5 copies/day: inside the band, kept without a clock.
    let band = optimize(&[was_geo(40.0)], &params(), 100);
    assert_eq!(band.decisions[0].target, 3);
    assert!(band.decisions[0].memory.below_since.is_empty());

    // Nobody reads it: the clock starts at 100, the replica goes at 100 + 12.
    let first = optimize(&[was_geo(0.0)], &params(), 100);
    assert_eq!(first.decisions[0].memory.below_since, [(AP, 100)]);
    let epochs: Vec<u64> = (100..=112).collect();
    let targets = targets_over(was_geo(0.0), &params(), &epochs);
    assert_eq!(targets[..12], [3; 12]);
    assert_eq!(targets[12], 2);
}

#[test]
fn budget_denies_the_lowest_density() {
    // Each earns one geo replica: a carries 300 / 3 = 100 copies/day, b 80, c 60.
    let a = held_in(candidate("a", GB, [300.0, 0.0, 0.0]), &[EU, AP]);
    let b = held_in(candidate("b", GB, [0.0, 240.0, 0.0]), &[US, AP]);
    let c = held_in(candidate("c", 100 * MB, [180.0, 0.0, 0.0]), &[EU, AP]);
    let params = OptimizerParams {
        extra_budget_bytes: GB + 100 * MB,
        ..params()
    };
    let outcome = optimize(&[a, b, c], &params, 1);
    let targets: Vec<u8> = outcome.decisions.iter().map(|d| d.target).collect();
    assert_eq!(
        targets,
        [3, 2, 3],
        "b does not fit; the smaller c still does"
    );
    assert_eq!(outcome.water_level, Some(60.0));
    assert_eq!(outcome.denied_increments, 1);
    assert_eq!(outcome.budget_used_bytes, GB + 100 * MB);
    assert_eq!(decision(&outcome, "b").explanation.denied, 1);
}

#[test]
fn change_cap_defers_the_lower_density_raise() {
    let params = OptimizerParams {
        max_changes_per_epoch: 1,
        ..params()
    };
    let outcome = optimize(&[loaded("b", 145e6), loaded("a", 150e6)], &params, 5);
    assert_eq!(outcome.deferred_changes, 1);
    let a = decision(&outcome, "a");
    assert_eq!((a.target, a.changed), (3, true));
    let b = decision(&outcome, "b");
    assert_eq!((b.target, b.changed), (2, false));
    assert_eq!(b.memory, Memory::default());
    assert_eq!(b.explanation.denied, 1, "a deferred raise counts as denied");
    assert!(b.explanation.reason.contains("deferred by the cap of 1"));
}

#[test]
fn budget_forced_reductions_pass_the_cap() {
    // The budget was cut to 0 while a and b hold a load replica each: both go, cap or not.
    let params = OptimizerParams {
        max_changes_per_epoch: 1,
        extra_budget_bytes: 0,
        ..params()
    };
    let held = |cid| with_memory(loaded(cid, 150e6), 3, 0);
    let outcome = optimize(&[held("a"), held("b")], &params, 100);
    let targets: Vec<(u8, bool)> = outcome
        .decisions
        .iter()
        .map(|d| (d.target, d.changed))
        .collect();
    assert_eq!(targets, [(2, true), (2, true)]);
    assert_eq!(
        (outcome.deferred_changes, outcome.budget_used_bytes),
        (0, 0)
    );

    // Two idle CIDs shrink 4 → 3; the cap lets one through, but the budget (cut from 4 GB to
    // 2 GB) cannot keep the other at 4.
    let params = OptimizerParams {
        max_changes_per_epoch: 1,
        extra_budget_bytes: 2 * GB,
        ..params
    };
    let idle = |cid| Candidate {
        size_bytes: GB,
        ..with_memory(loaded(cid, 0.0), 4, 0)
    };
    let outcome = optimize(&[idle("c"), idle("d")], &params, 100);
    let targets: Vec<(u8, bool)> = outcome
        .decisions
        .iter()
        .map(|d| (d.target, d.changed))
        .collect();
    assert_eq!(targets, [(3, true), (3, true)]);
    assert_eq!(
        (outcome.deferred_changes, outcome.budget_used_bytes),
        (0, 2 * GB)
    );
    assert!(decision(&outcome, "d")
        .explanation
        .reason
        .contains("reduction forced by the budget"));
}

#[test]
fn budget_cuts_do_not_use_up_the_cap() {
    // x holds a geo replica (50 copies/day per replica); c earns more replicas than x's carry.
    // Were x's budget cut counted against the cap of 1, more demand would defer c's raise and
    // leave c lower than less demand does.
    let params = OptimizerParams {
        max_changes_per_epoch: 1,
        extra_budget_bytes: 2 * GB,
        ..params()
    };
    let mut x = held_in(candidate("x", GB, [150.0, 0.0, 0.0]), &[EU, AP]);
    x.memory = Memory {
        target: 3,
        regions: vec![US],
        ..Memory::default()
    };
    let c = |eu_views| held_in(candidate("c", GB, [180.0, eu_views, 0.0]), &[AP]);

    let calm = optimize(&[x.clone(), c(0.0)], &params, 100);
    assert_eq!(decision(&calm, "c").target, 3);
    assert_eq!(decision(&calm, "x").target, 3);

    let busy = optimize(&[x, c(300.0)], &params, 100);
    assert_eq!(decision(&busy, "c").target, 4);
    assert_eq!((decision(&busy, "x").target, busy.deferred_changes), (2, 0));
}

#[test]
fn a_raise_the_cap_defers_takes_no_replica() {
    // x holds 3 (one extra replica, all the budget) and is read enough to keep it; c would take
    // that budget for a denser raise, but the cap of 0 defers c's raise: x keeps its replica.
    let params = OptimizerParams {
        max_changes_per_epoch: 0,
        extra_budget_bytes: GB,
        min_hold_epochs: 0,
        ..params()
    };
    let x = with_memory(
        Candidate {
            size_bytes: GB,
            ..loaded("x", 150e6)
        },
        3,
        0,
    );
    let c = Candidate {
        size_bytes: GB / 2,
        ..loaded("c", 300e6)
    };
    let outcome = optimize(&[x, c], &params, 100);
    let x = decision(&outcome, "x");
    assert_eq!((x.target, x.changed), (3, false));
    assert_eq!(x.explanation.denied, 0);
    let c = decision(&outcome, "c");
    assert_eq!((c.target, c.changed), (2, false));
    assert_eq!(outcome.deferred_changes, 1);
    assert_eq!(outcome.budget_used_bytes, GB);
}

/// docs/analytics.md, "Worked example": every number there is checked here.
#[test]
fn worked_example() {
    let hot = candidate("hot", 100 * MB, [200_000.0, 180_000.0, 90_000.0]);
    let wide = candidate("wide", 2 * GB, [60.0, 60.0, 60.0]);
    let lukewarm = candidate("lukewarm", 50 * GB, [40.0, 0.0, 0.0]);
    let busy = held_in(candidate("busy", GB, [165.0, 0.0, 0.0]), &[EU, AP]);
    let big = held_in(candidate("big", 10 * GB, [0.0, 90.0, 0.0]), &[US, AP]);
    let outcome = optimize(&[hot, wide, lukewarm, busy, big], &params(), 1);

    let targets: Vec<(&str, u8)> = outcome
        .decisions
        .iter()
        .map(|d| (d.cid.as_str(), d.target))
        .collect();
    assert_eq!(
        targets,
        [
            ("hot", 8),
            ("wide", 3),
            ("lukewarm", 2),
            ("busy", 3),
            ("big", 2)
        ]
    );
    assert_eq!(outcome.water_level, Some(55.0));
    assert_eq!(outcome.budget_used_bytes, 6 * 100 * MB + 2 * GB + GB);
    assert_eq!(outcome.denied_increments, 1);
    assert_eq!(
        decision(&outcome, "wide").preferred_regions,
        ["us", "eu", "ap"]
    );
    assert_eq!(
        decision(&outcome, "hot").explanation.reason,
        "8 replicas: load 544 MB/s needs 8 at 70% of 100 MB/s; geo us (200000 views/day ≥ 50), \
         eu (180000 views/day ≥ 50), ap (90000 views/day ≥ 50); budget granted 6 of 6 \
         (water level 55 views/day)"
    );
    assert_eq!(
        decision(&outcome, "big").explanation.reason,
        "2 replicas: load 10 MB/s needs 1 at 70% of 100 MB/s; geo eu (90 views/day ≥ 50); \
         budget granted 0 of 1 (water level 55 views/day)"
    );
    assert_eq!(
        decision(&outcome, "lukewarm").explanation.reason,
        "2 replicas: load 23 MB/s needs 1 at 70% of 100 MB/s"
    );
    assert!(!decision(&outcome, "lukewarm").changed);
}

#[test]
fn bad_demand_counts_as_zero() {
    let mut c = candidate("a", 0, [f64::NAN, f64::INFINITY, -5.0]);
    c.other_demand = f64::NEG_INFINITY;
    c.min = 0;
    c.max = 0;
    let d = &optimize(&[c], &params(), 1).decisions[0];
    assert_eq!((d.target, d.changed), (1, false));
    assert_eq!(d.explanation.bytes_per_sec, 0.0);
}

#[test]
fn reason_stays_short() {
    let regions: Vec<String> = (0..300)
        .map(|r| format!("region-with-a-long-name-{r}"))
        .collect();
    let params = OptimizerParams {
        regions,
        ..params()
    };
    let mut c = candidate("a", MB, [0.0; 3]);
    c.demand = vec![1e9; 300];
    c.max = 255;
    let d = &optimize(&[c], &params, 1).decisions[0];
    assert!(d.explanation.reason.len() <= 1024);
    assert!(d.explanation.reason.contains("294 more"));
    assert_eq!(d.preferred_regions.len(), 16);
}

// ---- properties ----

fn arb_rate() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => 0.0..2e8f64,
        2 => Just(0.0),
        1 => prop::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 1e300]),
    ]
}

fn arb_candidate() -> impl Strategy<Value = Candidate> {
    let size = prop_oneof![Just(0u64), 1u64..1_000, MB..20 * GB];
    let memory = (
        0u8..12,
        prop::collection::vec(0u16..4, 0..3),
        0u64..60,
        prop::collection::vec((0u16..4, 0u64..60), 0..2),
    )
        .prop_map(|(target, regions, raised_at, below_since)| Memory {
            target,
            regions,
            raised_at,
            below_since,
        });
    (
        size,
        prop::collection::vec(arb_rate(), 0..5),
        arb_rate(),
        prop::collection::vec(0u16..4, 0..4),
        0u8..5,
        0u8..10,
        memory,
        prop::collection::vec(arb_rate(), 0..5),
    )
        .prop_map(
            |(size_bytes, demand, other_demand, held_regions, min, max, memory, sustained)| {
                Candidate {
                    cid: String::new(),
                    size_bytes,
                    demand,
                    other_demand,
                    sustained,
                    held_regions,
                    min,
                    max,
                    memory,
                }
            },
        )
}

/// Candidates with distinct cids.
fn arb_candidates() -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec(arb_candidate(), 1..8).prop_map(|mut candidates| {
        for (i, c) in candidates.iter_mut().enumerate() {
            c.cid = format!("cid-{i}");
        }
        candidates
    })
}

fn arb_params() -> impl Strategy<Value = OptimizerParams> {
    (0u64..30 * GB, 0usize..6, 0u64..5, 0u64..5).prop_map(|(budget, cap, hold, cool)| {
        OptimizerParams {
            extra_budget_bytes: budget,
            max_changes_per_epoch: cap,
            min_hold_epochs: hold,
            cool_down_epochs: cool,
            ..params()
        }
    })
}

fn bounds(c: &Candidate) -> (u8, u8) {
    let min = c.min.max(1);
    (min, c.max.max(min))
}

fn clean(rate: f64) -> f64 {
    if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        0.0
    }
}

proptest! {
    #[test]
    fn target_stays_within_bounds(
        candidates in arb_candidates(), params in arb_params(), epoch in 50u64..100,
    ) {
        let outcome = optimize(&candidates, &params, epoch);
        prop_assert_eq!(outcome.decisions.len(), candidates.len());
        for (c, d) in candidates.iter().zip(&outcome.decisions) {
            let (min, max) = bounds(c);
            prop_assert!(min <= d.target && d.target <= max, "{} not in {}..={}", d.target, min, max);
            prop_assert_eq!(&d.cid, &c.cid);
            prop_assert!(d.explanation.reason.len() <= 1024);
        }
    }

    #[test]
    fn more_demand_never_lowers_the_target(
        candidates in arb_candidates(),
        params in arb_params(),
        epoch in 50u64..100,
        which in any::<prop::sample::Index>(),
        factor in 1.0f64..10.0,
        region in 0usize..4,
        bump in 0.0f64..1e8,
    ) {
        let i = which.index(candidates.len());
        let mut busier = candidates.clone();
        let c = &mut busier[i];
        c.demand = c.demand.iter().map(|r| clean(*r) * factor).collect();
        if c.demand.len() <= region {
            c.demand.resize(region + 1, 0.0);
        }
        c.demand[region] += bump;
        c.other_demand = clean(c.other_demand) * factor;
        if !c.sustained.is_empty() {
            c.sustained = c.sustained.iter().map(|r| clean(*r) * factor).collect();
            if c.sustained.len() <= region {
                c.sustained.resize(region + 1, 0.0);
            }
            c.sustained[region] += bump;
        }
        let before = optimize(&candidates, &params, epoch).decisions[i].target;
        let after = optimize(&busier, &params, epoch).decisions[i].target;
        prop_assert!(after >= before, "target fell from {} to {}", before, after);
    }

    #[test]
    fn budget_is_never_exceeded_and_is_accounted(
        candidates in arb_candidates(), params in arb_params(), epoch in 50u64..100,
    ) {
        let outcome = optimize(&candidates, &params, epoch);
        let spent: u128 = candidates
            .iter()
            .zip(&outcome.decisions)
            .map(|(c, d)| u128::from(d.target - bounds(c).0) * u128::from(c.size_bytes.max(1)))
            .sum();
        prop_assert!(outcome.budget_used_bytes <= params.extra_budget_bytes);
        prop_assert_eq!(u128::from(outcome.budget_used_bytes), spent);
    }

    #[test]
    fn deterministic_and_independent_of_order(
        (candidates, shuffled) in arb_candidates()
            .prop_flat_map(|c| (Just(c.clone()), Just(c).prop_shuffle())),
        params in arb_params(),
        epoch in 50u64..100,
    ) {
        let outcome = optimize(&candidates, &params, epoch);
        prop_assert_eq!(&outcome, &optimize(&candidates, &params, epoch));
        let permuted = optimize(&shuffled, &params, epoch);
        for (c, d) in shuffled.iter().zip(&permuted.decisions) {
            prop_assert_eq!(d, decision(&outcome, &c.cid));
        }
        prop_assert_eq!(permuted.water_level, outcome.water_level);
        prop_assert_eq!(permuted.budget_used_bytes, outcome.budget_used_bytes);
        prop_assert_eq!(permuted.denied_increments, outcome.denied_increments);
        prop_assert_eq!(permuted.deferred_changes, outcome.deferred_changes);
    }

    #[test]
    fn constant_demand_becomes_stationary(
        mut candidates in arb_candidates(),
        params in arb_params().prop_map(|p| OptimizerParams {
            max_changes_per_epoch: p.max_changes_per_epoch.max(1),
            ..p
        }),
    ) {
        // Each CID moves at most ~max steps, one change per epoch at worst, after the hold and
        // the cool-down.
        let settle = candidates.len() as u64 * 12 + params.min_hold_epochs + params.cool_down_epochs + 2;
        let start = 60;
        for epoch in start..start + settle {
            let outcome = optimize(&candidates, &params, epoch);
            for (c, d) in candidates.iter_mut().zip(outcome.decisions) {
                c.memory = d.memory;
            }
        }
        for epoch in start + settle..start + settle + 5 {
            let outcome = optimize(&candidates, &params, epoch);
            for (c, d) in candidates.iter().zip(&outcome.decisions) {
                prop_assert!(!d.changed, "epoch {}: {} changed: {}", epoch, d.cid, d.explanation.reason);
                prop_assert_eq!(&d.memory, &c.memory, "epoch {}: memory of {} moved", epoch, d.cid);
            }
        }
    }
}

#[test]
fn geo_waits_for_sustained_demand() {
    // A burst: 60 copies/day in the fast window, 10 sustained. No local replica yet, but the
    // burst still counts for load.
    let burst = Candidate {
        sustained: vec![0.0, 0.0, rate(10.0, 2 * GB)],
        ..candidate("a", 2 * GB, [0.0, 0.0, 60.0])
    };
    let d = &optimize(std::slice::from_ref(&burst), &params(), 1).decisions[0];
    assert_eq!(d.target, 2);
    assert!(d.explanation.geo_regions.is_empty());
    assert!(d.explanation.bytes_per_sec > 0.0);
    // Sustained at 60: the region earns its replica.
    let lasting = Candidate {
        sustained: vec![0.0, 0.0, rate(60.0, 2 * GB)],
        ..burst
    };
    assert_eq!(optimize(&[lasting], &params(), 1).decisions[0].target, 3);
}

/// The operator's overview: demand summed per region (then "other"), the top CIDs by total
/// demand with their targets, highest first, ties by CID.
#[test]
fn the_demand_overview_sums_regions_and_ranks_the_top_cids() {
    let params = params();
    let candidates = vec![
        candidate("a", MB, [86_400.0, 0.0, 0.0]),
        candidate("b", MB, [0.0, 2.0 * 86_400.0, 0.0]),
        loaded("c", 3.0 * MB as f64),
        candidate("d", MB, [86_400.0, 0.0, 0.0]),
    ];
    let outcome = optimize(&candidates, &params, 1);
    let overview = super::demand_overview(&candidates, &outcome.decisions, &params.regions, 3);
    let region = |name: &str| {
        overview
            .by_region
            .iter()
            .find(|(r, _)| r == name)
            .map(|(_, v)| *v)
            .unwrap()
    };
    assert!((region("us") - 2.0 * MB as f64).abs() < 1.0, "{overview:?}");
    assert!((region("eu") - 2.0 * MB as f64).abs() < 1.0, "{overview:?}");
    assert_eq!(region("ap"), 0.0);
    assert!((region("other") - 3.0 * MB as f64).abs() < 1.0);
    let top: Vec<&str> = overview.top.iter().map(|t| t.cid.as_str()).collect();
    assert_eq!(top, ["c", "b", "a"], "highest first, a before d on a tie");
    for entry in &overview.top {
        let decision = outcome
            .decisions
            .iter()
            .find(|d| d.cid == entry.cid)
            .unwrap();
        assert_eq!(entry.target, decision.target);
    }
}
