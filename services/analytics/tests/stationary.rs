//! The tracker and the optimizer together, as the actor runs them epoch after epoch: a
//! stationary access stream settles and then changes no target; a popularity shift moves
//! targets, within the cap per epoch, and settles again once old demand has faded; bounds
//! and budget hold throughout.

use pinhive_analytics::tracker::{Tracker, TrackerConfig};
use pinhive_domain::analytics::{optimize, OptimizerParams};

const REGIONS: [&str; 3] = ["eu", "us", "ap"];
const CIDS: usize = 2_000;
const MIN: u8 = 2;
const MAX: u8 = 8;

fn config() -> TrackerConfig {
    TrackerConfig {
        regions: REGIONS.iter().map(|r| r.to_string()).collect(),
        top_k: 500,
        sketch_hashes: 4,
        sketch_buckets: 4096,
        epoch_secs: 60.0,
        // Ten epochs and half an hour: old demand is forgotten within the test's horizon.
        fast_half_life_secs: 600.0,
        slow_half_life_secs: 1800.0,
    }
}

fn params() -> OptimizerParams {
    OptimizerParams {
        regions: REGIONS.iter().map(|r| r.to_string()).collect(),
        replica_bytes_per_sec: 2e6,
        geo_views_per_day: 200.0,
        max_changes_per_epoch: 50,
        extra_budget_bytes: 4 << 30,
        cool_down_epochs: 3,
        min_hold_epochs: 3,
        ..OptimizerParams::default()
    }
}

fn size(cid: usize) -> u64 {
    // 1 MiB .. 64 MiB, deterministic.
    1 << (20 + (cid * 7919) % 7)
}

/// One epoch of a deterministic Zipf-like stream: CID at rank k is read ~C/k times, mostly
/// from its home region. `shift` rotates which CID holds which rank.
fn feed(tracker: &mut Tracker, shift: usize) {
    for rank in 1..=CIDS {
        let cid = (rank + shift) % CIDS;
        let reads = 3_000 / rank;
        for read in 0..reads {
            let region = if read % 10 < 7 { cid % 3 } else { read % 3 };
            tracker.record(
                &format!("cid-{cid:05}"),
                REGIONS[region],
                size(cid) / 4,
                Some(size(cid)),
                0.0,
            );
        }
    }
}

/// Runs `epochs` epochs; returns the target changes of each.
fn run(tracker: &mut Tracker, epochs: usize, shift: usize) -> Vec<usize> {
    let params = params();
    let mut changes = Vec::new();
    for _ in 0..epochs {
        feed(tracker, shift);
        let candidates = tracker.candidates(&mut |_| Some((MIN, MAX)));
        let outcome = optimize(&candidates, &params, tracker.epoch());
        assert!(outcome.budget_used_bytes <= params.extra_budget_bytes);
        for decision in &outcome.decisions {
            assert!((MIN..=MAX).contains(&decision.target));
        }
        // Budget-forced reductions pass the cap by design; every other change counts.
        let capped = outcome
            .decisions
            .iter()
            .filter(|d| d.changed && !d.explanation.reason.contains("forced by the budget"))
            .count();
        assert!(
            capped <= params.max_changes_per_epoch,
            "cap exceeded: {capped}"
        );
        changes.push(outcome.decisions.iter().filter(|d| d.changed).count());
        tracker.remember(&outcome.decisions);
        tracker.end_epoch();
    }
    changes
}

#[test]
fn a_stationary_stream_settles_and_then_changes_nothing() {
    let mut tracker = Tracker::new(config());
    let warm_up = run(&mut tracker, 60, 0);
    assert!(
        warm_up.iter().sum::<usize>() > 0,
        "demand raised some targets"
    );
    let settled = run(&mut tracker, 30, 0);
    assert_eq!(
        settled.iter().sum::<usize>(),
        0,
        "changes after warm-up: {settled:?}"
    );
}

#[test]
fn a_popularity_shift_moves_targets_within_the_cap_and_settles_again() {
    let mut tracker = Tracker::new(config());
    run(&mut tracker, 60, 0);
    // Old demand fades at the slow half-life (30 epochs): ten of them to be forgotten.
    let shifted = run(&mut tracker, 400, CIDS / 2);
    assert!(
        shifted.iter().take(10).sum::<usize>() > 0,
        "the shift moved targets"
    );
    let tail: usize = shifted.iter().rev().take(30).sum();
    assert_eq!(tail, 0, "changes at the end: {shifted:?}");
}
