//! Weighted rendezvous (highest-random-weight) placement.
//!
//! Every (key, node) pair gets a score from xxh3; a node's weight scales it the way
//! `-weight / ln(u)` does in weighted rendezvous hashing, so a node with twice the weight wins
//! twice as often. Adding a node moves only the keys it now wins (~1/N of them); removing one
//! moves only the keys it held. Placement is deterministic for a given node set.

use std::collections::BTreeSet;

use pinhive_events::{NodeId, NodeState};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// What the allocator needs to know about a node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub id: NodeId,
    pub region: String,
    pub weight: u32,
    /// Takes new replicas: the agreed state is `up` and this instance reaches the node (its
    /// circuit breaker not open).
    pub healthy: bool,
    /// Free repository space if known; nodes below the threshold get no new replicas.
    pub free_bytes: Option<u64>,
    /// The state every instance agrees on (the control log's): whether its replicas count.
    pub state: NodeState,
}

/// Rendezvous score of `node_id` for `key`: higher wins.
pub fn score(key: &str, node_id: &str, weight: u32) -> f64 {
    let hash = xxh3_64_with_seed(
        node_id.as_bytes(),
        xxh3_64_with_seed(key.as_bytes(), 0x5eed),
    );
    // Map to (0, 1): never exactly 0 or 1, so ln is finite and negative.
    let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight.max(1)) / -unit.ln()
}

/// Picks up to `count` nodes for `key`, best first: healthy, with at least `min_free_bytes`
/// free (unknown free space counts as enough), not in `exclude`. Nodes in regions not yet
/// used (`used_regions` plus earlier picks) come first, preferred regions before others, so
/// replicas spread across regions; the rest fill by score.
pub fn allocate(
    key: &str,
    nodes: &[NodeView],
    exclude: &BTreeSet<NodeId>,
    used_regions: &BTreeSet<String>,
    preferred_regions: &[String],
    count: usize,
    min_free_bytes: u64,
) -> Vec<NodeId> {
    let mut candidates: Vec<(&NodeView, f64)> = nodes
        .iter()
        .filter(|n| n.healthy && !exclude.contains(&n.id))
        .filter(|n| n.free_bytes.is_none_or(|free| free >= min_free_bytes))
        .map(|n| (n, score(key, &n.id, n.weight)))
        .collect();
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.id.cmp(&b.0.id)));

    let mut regions = used_regions.clone();
    let mut picked: Vec<NodeId> = Vec::with_capacity(count);
    // Pass 1: preferred regions not yet holding a replica; pass 2: any new region;
    // pass 3: best remaining scores.
    for pass in 0..3 {
        for (node, _) in &candidates {
            if picked.len() >= count {
                return picked;
            }
            if picked.contains(&node.id) {
                continue;
            }
            let new_region = !regions.contains(&node.region);
            let eligible = match pass {
                0 => new_region && preferred_regions.contains(&node.region),
                1 => new_region,
                _ => true,
            };
            if eligible {
                regions.insert(node.region.clone());
                picked.push(node.id.clone());
            }
        }
    }
    picked
}

/// Orders `node_ids` by their score for `key`, best first (used to choose which replicas to
/// drop when a CID has more than it needs: the worst-ranked go).
pub fn rank(key: &str, node_ids: &mut [NodeId]) {
    node_ids.sort_by(|a, b| {
        score(key, b, 1)
            .total_cmp(&score(key, a, 1))
            .then_with(|| a.cmp(b))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn fleet(n: usize, regions: usize) -> Vec<NodeView> {
        (0..n)
            .map(|i| NodeView {
                id: format!("node-{i}"),
                region: format!("r{}", i % regions.max(1)),
                weight: 1,
                healthy: true,
                free_bytes: None,
                state: pinhive_events::NodeState::Up,
            })
            .collect()
    }

    fn place(key: &str, nodes: &[NodeView], count: usize) -> Vec<NodeId> {
        allocate(
            key,
            nodes,
            &BTreeSet::new(),
            &BTreeSet::new(),
            &[],
            count,
            0,
        )
    }

    #[test]
    fn skips_unhealthy_full_and_excluded_nodes() {
        let mut nodes = fleet(4, 1);
        nodes[0].healthy = false;
        nodes[1].free_bytes = Some(10);
        let exclude: BTreeSet<NodeId> = ["node-2".to_string()].into();
        let got = allocate("k", &nodes, &exclude, &BTreeSet::new(), &[], 4, 100);
        assert_eq!(got, vec!["node-3".to_string()]);
    }

    #[test]
    fn spreads_across_regions_before_doubling_up() {
        let nodes = fleet(9, 3);
        for i in 0..200 {
            let got = place(&format!("cid-{i}"), &nodes, 3);
            let regions: BTreeSet<&str> = got
                .iter()
                .map(|id| nodes.iter().find(|n| &n.id == id).unwrap().region.as_str())
                .collect();
            assert_eq!(regions.len(), 3, "{got:?}");
        }
    }

    #[test]
    fn preferred_region_comes_first() {
        let nodes = fleet(9, 3);
        for i in 0..100 {
            let got = allocate(
                &format!("cid-{i}"),
                &nodes,
                &BTreeSet::new(),
                &BTreeSet::new(),
                &["r2".to_string()],
                1,
                0,
            );
            assert!(got[0].ends_with('2') || got[0].ends_with('5') || got[0].ends_with('8'));
        }
    }

    #[test]
    fn weight_biases_share() {
        let mut nodes = fleet(2, 1);
        nodes[0].weight = 3;
        let wins = (0..20_000)
            .filter(|i| place(&format!("k{i}"), &nodes, 1)[0] == "node-0")
            .count();
        let share = wins as f64 / 20_000.0;
        assert!((0.70..0.80).contains(&share), "share {share}");
    }

    #[test]
    fn spread_is_even_across_equal_nodes() {
        let nodes = fleet(10, 1);
        let mut load: BTreeMap<NodeId, usize> = BTreeMap::new();
        for i in 0..50_000 {
            *load
                .entry(place(&format!("k{i}"), &nodes, 1)[0].clone())
                .or_default() += 1;
        }
        for (node, n) in load {
            assert!((4_300..5_700).contains(&n), "{node} got {n}");
        }
    }

    proptest! {
        #[test]
        fn deterministic(key in "[a-z0-9]{1,40}", n in 1usize..20, count in 1usize..5) {
            let nodes = fleet(n, 3);
            prop_assert_eq!(place(&key, &nodes, count), place(&key, &nodes, count));
            let mut reversed = nodes.clone();
            reversed.reverse();
            prop_assert_eq!(place(&key, &nodes, count), place(&key, &reversed, count));
        }

        #[test]
        fn never_picks_twice(key in "[a-z0-9]{1,40}", n in 1usize..20, count in 1usize..25) {
            let nodes = fleet(n, 4);
            let got = place(&key, &nodes, count);
            let unique: BTreeSet<_> = got.iter().collect();
            prop_assert_eq!(unique.len(), got.len());
            prop_assert_eq!(got.len(), count.min(n));
        }
    }

    #[test]
    fn adding_a_node_moves_about_one_nth() {
        let keys = 20_000;
        let before = fleet(10, 1);
        let after = fleet(11, 1);
        let moved = (0..keys)
            .filter(|i| {
                let k = format!("cid-{i}");
                place(&k, &before, 1) != place(&k, &after, 1)
            })
            .count();
        let fraction = moved as f64 / keys as f64;
        // Ideal is 1/11 ≈ 0.091.
        assert!((0.07..0.115).contains(&fraction), "moved {fraction}");
    }
}
