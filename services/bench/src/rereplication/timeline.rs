//! The figures of one run, folded from the pin log after it (the log is the ground truth: every
//! replica outcome is an event with the time it was created).
//!
//! Each CID starts from the nodes the simulated fleet held it on just before the loss; from the
//! lost node's `down` transition on, a replica there no longer counts. A replica *counts* when
//! it is pinned (`ReplicaPinned`, not yet `ReplicaUnpinned`/`ReplicaFailed`) on a node that is
//! not down: an allocated replica holds no data yet, so it does not count here, although the
//! planner counts it towards the target.

use std::collections::HashMap;

use pinhive_events::Event;

/// What the fleet held before the loss: per CID, the indices of the nodes holding it.
pub struct Holdings {
    pub nodes: Vec<String>,
    pub of: HashMap<String, Vec<u16>>,
}

impl Holdings {
    pub fn index(&self, node: &str) -> Option<u16> {
        self.nodes
            .iter()
            .position(|n| n == node)
            .and_then(|i| u16::try_from(i).ok())
    }
}

/// One pin-log event appended after the loss.
pub struct Observed {
    pub timestamp_ns: i64,
    pub cid: String,
    pub event: Event,
}

/// The run's figures; durations in nanoseconds from the `down` transition.
#[derive(Debug, Default, PartialEq)]
pub struct Figures {
    /// CIDs the lost node held.
    pub affected: usize,
    /// Of those, back at `replicas` counting replicas by the end of the log read.
    pub restored: usize,
    /// Down → the last affected CID back at `replicas` counting replicas.
    pub full_ns: Option<i64>,
    /// Down → the first `ReplicasAllocated` after it.
    pub first_allocation_ns: Option<i64>,
    /// CIDs with fewer than `min` counting replicas at any instant.
    pub ever_below_min: usize,
    /// Most CIDs below `min` at one instant.
    pub most_below_min_at_once: usize,
    /// Sum over CIDs of the time spent below `min` (CID-seconds of exposure).
    pub below_min_cid_secs: f64,
    /// Median and 99th percentile of one CID's time below `min`.
    pub below_min_p50_ns: i64,
    pub below_min_p99_ns: i64,
    pub allocation_events: usize,
    pub replicas_allocated: usize,
    /// Most `ReplicasAllocated` events in any one-second window.
    pub peak_allocations_per_sec: usize,
    /// Most `ReplicasAllocated` events in any 100 ms window, times ten (bursts a one-second
    /// window averages away, and the peak of a run shorter than a second).
    pub peak_allocations_per_sec_100ms: usize,
    /// Most pin-log events of any kind in any one-second window.
    pub peak_events_per_sec: usize,
    pub events: usize,
}

/// A change of one CID's counting replicas, in time order.
enum Step {
    Pinned(u16),
    Gone(u16),
    /// The lost node's replicas stop counting.
    Down,
}

/// Folds `observed` (each CID's events in log order) into the run's figures. `end_ns`: when
/// the log was read (still-open spells below `min` end there).
pub fn fold(
    holdings: &Holdings,
    lost: u16,
    down_ns: i64,
    min: usize,
    replicas: usize,
    observed: &[Observed],
    end_ns: i64,
) -> Figures {
    let mut figures = Figures {
        events: observed.len(),
        ..Figures::default()
    };
    let mut steps: HashMap<&str, Vec<(i64, Step)>> = HashMap::new();
    let mut allocations = Vec::new();
    for seen in observed {
        let node = |id: &str| holdings.index(id);
        let step = match &seen.event {
            Event::ReplicasAllocated { nodes, .. } => {
                if seen.timestamp_ns >= down_ns {
                    allocations.push(seen.timestamp_ns);
                    figures.replicas_allocated += nodes.len();
                }
                None
            }
            Event::ReplicaPinned { node: id, .. } => node(id).map(Step::Pinned),
            Event::ReplicaFailed { node: id, .. } | Event::ReplicaUnpinned { node: id } => {
                node(id).map(Step::Gone)
            }
            _ => None,
        };
        if let Some(step) = step {
            steps
                .entry(seen.cid.as_str())
                .or_default()
                .push((seen.timestamp_ns, step));
        }
    }
    for (cid, held) in &holdings.of {
        if held.contains(&lost) {
            figures.affected += 1;
            let cid_steps = steps.entry(cid.as_str()).or_default();
            // Stable: an event stamped at the same instant as the transition stays before it.
            let at = cid_steps.partition_point(|(ts, _)| *ts <= down_ns);
            cid_steps.insert(at, (down_ns, Step::Down));
        }
    }

    let mut spells = Vec::new();
    let mut restored_at = Vec::new();
    for (cid, cid_steps) in &steps {
        let mut held: Vec<u16> = holdings.of.get(*cid).cloned().unwrap_or_default();
        let was_affected = held.contains(&lost);
        let mut down = false;
        let mut below_since: Option<i64> = None;
        let mut restored: Option<i64> = None;
        let mut ever_below = false;
        for (ts, step) in cid_steps {
            match step {
                Step::Pinned(node) if !held.contains(node) => held.push(*node),
                Step::Pinned(_) => {}
                Step::Gone(node) => held.retain(|n| n != node),
                Step::Down => down = true,
            }
            let counting = held.iter().filter(|n| !(down && **n == lost)).count();
            ever_below |= counting < min;
            match (counting < min, below_since) {
                (true, None) => below_since = Some(*ts),
                (false, Some(since)) => {
                    spells.push((since, *ts));
                    below_since = None;
                }
                _ => {}
            }
            if was_affected && down && restored.is_none() && counting >= replicas {
                restored = Some(*ts);
            }
        }
        if let Some(since) = below_since {
            spells.push((since, end_ns));
        }
        if let Some(at) = restored {
            restored_at.push(at);
        }
        figures.ever_below_min += usize::from(ever_below);
    }

    figures.restored = restored_at.len();
    if figures.restored == figures.affected {
        figures.full_ns = restored_at.iter().max().map(|at| at - down_ns);
    }
    figures.first_allocation_ns = allocations.iter().min().map(|at| at - down_ns);
    figures.allocation_events = allocations.len();
    allocations.sort_unstable();
    figures.peak_allocations_per_sec = most_within(&allocations, SECOND);
    figures.peak_allocations_per_sec_100ms = 10 * most_within(&allocations, SECOND / 10);
    let mut all: Vec<i64> = observed.iter().map(|o| o.timestamp_ns).collect();
    all.sort_unstable();
    figures.peak_events_per_sec = most_within(&all, SECOND);

    let mut lengths: Vec<i64> = spells.iter().map(|(from, to)| to - from).collect();
    lengths.sort_unstable();
    figures.below_min_cid_secs = lengths.iter().map(|ns| *ns as f64 / 1e9).sum();
    figures.below_min_p50_ns = percentile(&lengths, 0.50);
    figures.below_min_p99_ns = percentile(&lengths, 0.99);
    figures.most_below_min_at_once = most_at_once(&spells);
    figures
}

const SECOND: i64 = 1_000_000_000;

/// Most of the (sorted) `timestamps` within any window of `window_ns`.
fn most_within(timestamps: &[i64], window_ns: i64) -> usize {
    let mut first = 0;
    let mut best = 0;
    for last in 0..timestamps.len() {
        while timestamps[last] - timestamps[first] >= window_ns {
            first += 1;
        }
        best = best.max(last - first + 1);
    }
    best
}

/// Most spells `[from, to)` open at one instant.
fn most_at_once(spells: &[(i64, i64)]) -> usize {
    let mut edges: Vec<(i64, i32)> = spells
        .iter()
        .flat_map(|(from, to)| [(*from, 1), (*to, -1)])
        .collect();
    // At the same instant, a spell that ends is counted out before one that starts.
    edges.sort_unstable();
    let (mut open, mut most) = (0i64, 0i64);
    for (_, delta) in edges {
        open += i64::from(delta);
        most = most.max(open);
    }
    usize::try_from(most).unwrap_or(0)
}

fn percentile(sorted: &[i64], quantile: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() - 1) as f64 * quantile).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn holdings() -> Holdings {
        Holdings {
            nodes: (0..5).map(|i| format!("n{i}")).collect(),
            of: HashMap::from([
                ("a".to_string(), vec![0, 1, 2]),
                ("b".to_string(), vec![0, 3, 4]),
                ("c".to_string(), vec![1, 2, 3]),
            ]),
        }
    }

    fn seen(secs: i64, cid: &str, event: Event) -> Observed {
        Observed {
            timestamp_ns: secs * S,
            cid: cid.into(),
            event,
        }
    }

    fn allocated(node: &str) -> Event {
        Event::ReplicasAllocated {
            nodes: vec![node.into()],
            target: 3,
        }
    }

    fn pinned(node: &str) -> Event {
        Event::ReplicaPinned {
            node: node.into(),
            delegates: vec![],
            attempts: 1,
            duration_ms: 0,
        }
    }

    #[test]
    fn a_lost_nodes_cids_are_below_min_until_pinned_elsewhere() {
        // n0 goes down at 10 s; a is re-made at 12 s, b at 13 s; c never lost a replica.
        let observed = [
            seen(11, "a", allocated("n3")),
            seen(11, "b", allocated("n1")),
            seen(12, "a", pinned("n3")),
            seen(13, "b", pinned("n1")),
        ];
        let figures = fold(&holdings(), 0, 10 * S, 3, 3, &observed, 20 * S);
        assert_eq!(figures.affected, 2);
        assert_eq!(figures.restored, 2);
        assert_eq!(figures.full_ns, Some(3 * S));
        assert_eq!(figures.first_allocation_ns, Some(S));
        assert_eq!(figures.ever_below_min, 2);
        assert_eq!(figures.most_below_min_at_once, 2);
        assert_eq!(figures.below_min_cid_secs, 5.0);
        assert_eq!(figures.peak_allocations_per_sec, 2);
        assert_eq!(figures.replicas_allocated, 2);
    }

    #[test]
    fn with_min_two_one_lost_replica_is_not_below_min() {
        let observed = [seen(12, "a", pinned("n3"))];
        let figures = fold(&holdings(), 0, 10 * S, 2, 3, &observed, 20 * S);
        assert_eq!(figures.ever_below_min, 0);
        // b was never re-made: the run is not complete.
        assert_eq!((figures.affected, figures.restored), (2, 1));
        assert_eq!(figures.full_ns, None);
    }

    #[test]
    fn a_collateral_unpin_counts_and_an_open_spell_ends_at_the_read() {
        let observed = [seen(15, "c", Event::ReplicaUnpinned { node: "n1".into() })];
        let figures = fold(&holdings(), 0, 10 * S, 3, 3, &observed, 20 * S);
        // a and b from the down (10 s → 20 s), c from its unpin (15 s → 20 s).
        assert_eq!(figures.ever_below_min, 3);
        assert_eq!(figures.below_min_cid_secs, 25.0);
        assert_eq!(figures.most_below_min_at_once, 3);
    }

    #[test]
    fn peaks_are_per_sliding_window() {
        assert_eq!(most_within(&[0, S / 2, S - 1, S, 3 * S], S), 3);
        assert_eq!(most_within(&[0, S / 2, S - 1, S, 3 * S], S / 10), 2);
        assert_eq!(most_within(&[], S), 0);
    }
}
