//! The side-by-side table of the capped and lifted runs.

use super::{Caps, RereplicationArgs, Run};

fn secs(ns: i64) -> f64 {
    ns as f64 / 1e9
}

fn caps_label(run: &Run) -> String {
    match run.caps {
        Caps::Capped => format!("capped {}/s, {}/s/node", run.rate, run.rate_per_node),
        Caps::Lifted => "lifted (0, 0)".into(),
    }
}

pub fn print(args: &RereplicationArgs, runs: &[Run]) {
    println!();
    print!("{:<52}", "measure");
    for run in runs {
        print!(" {:>24}", caps_label(run));
    }
    if runs.len() == 2 {
        print!(" {:>9}", "ratio");
    }
    println!();
    let row = |name: &str, value: &dyn Fn(&Run) -> Option<f64>, decimals: usize| {
        print!("{name:<52}");
        let values: Vec<Option<f64>> = runs.iter().map(value).collect();
        for v in &values {
            match v {
                Some(v) => print!(" {:>24.*}", decimals, v),
                None => print!(" {:>24}", "incomplete"),
            }
        }
        if let [Some(capped), Some(lifted)] = values[..] {
            if lifted != 0.0 {
                print!(" {:>8.2}x", capped / lifted);
            }
        }
        println!();
    };
    row(
        "CIDs on the lost node",
        &|r| Some(r.figures.affected as f64),
        0,
    );
    row(
        "fault injected → down (s)",
        &|r| Some(r.inject_to_down.as_secs_f64()),
        2,
    );
    row(
        "down → first allocation (s)",
        &|r| r.figures.first_allocation_ns.map(secs),
        3,
    );
    row(
        "down → full re-replication (s)",
        &|r| r.figures.full_ns.map(secs),
        2,
    );
    row(
        "replicas re-made per second (mean)",
        &|r| {
            r.figures
                .full_ns
                .map(|ns| r.figures.restored as f64 / secs(ns).max(1e-9))
        },
        0,
    );
    row(
        "peak allocation events / s (1 s window)",
        &|r| Some(r.figures.peak_allocations_per_sec as f64),
        0,
    );
    row(
        "peak allocation events / s (100 ms window × 10)",
        &|r| Some(r.figures.peak_allocations_per_sec_100ms as f64),
        0,
    );
    row(
        "peak pin-log events / s (1 s window)",
        &|r| Some(r.figures.peak_events_per_sec as f64),
        0,
    );
    row(
        "replicas allocated after down (log)",
        &|r| Some(r.figures.replicas_allocated as f64),
        0,
    );
    row(
        "  of which by node walks (metric)",
        &|r| Some(r.walk_replicas as f64),
        0,
    );
    row(
        &format!("CIDs ever below min ({})", args.replicas),
        &|r| Some(r.figures.ever_below_min as f64),
        0,
    );
    row(
        "  most below min at once",
        &|r| Some(r.figures.most_below_min_at_once as f64),
        0,
    );
    row(
        "  time below min per CID, p50 (s)",
        &|r| Some(secs(r.figures.below_min_p50_ns)),
        2,
    );
    row(
        "  time below min per CID, p99 (s)",
        &|r| Some(secs(r.figures.below_min_p99_ns)),
        2,
    );
    row(
        "  exposure (CID-seconds below min)",
        &|r| Some(r.figures.below_min_cid_secs),
        0,
    );
    row(
        "load: pins → pinned on every replica (s)",
        &|r| Some(r.load.as_secs_f64()),
        1,
    );
    row(
        "then until the store settled (s)",
        &|r| Some(r.settle.as_secs_f64()),
        1,
    );
    println!(
        "ratio = capped / lifted. Counting replica: pinned on a node that is not down (data \
         present); min = max = {0}, so each CID the lost node held is below min from `down` until \
         a new replica is pinned; more CIDs than it held would mean collateral losses.",
        args.replicas
    );
    for run in runs {
        if run.figures.full_ns.is_none() {
            println!(
                "{:?}: only {} of {} CIDs were seen back at {} replicas in the log",
                run.caps, run.figures.restored, run.figures.affected, args.replicas
            );
        }
    }
}
