//! Moving replicas to a node that joined: which CIDs give it a replica, and from where.
//!
//! Placement is rendezvous hashing ([`crate::allocator`]), so a node that joins is where
//! about k/N of the CIDs (k replicas each, N nodes) would be placed if they were pinned now.
//! A CID moves one replica to the joined node when, among its replicas and the joined node,
//! the replica the shard would drop first is not the joined node's ([`plan::keep_order`], the
//! same order that picks the replica to drop when a CID has more than its target): the move is
//! an allocation on the joined node, and the plan unpins the dropped replica once the ones
//! kept, the new one included, are pinned. Moves never lower a CID's region spread.
//!
//! Each CID is judged while walking the index of the node it would leave (the source), so a
//! walk over every node's index visits each CID once per replica and moves it at most once.

use std::collections::BTreeSet;

use pinhive_events::NodeId;

use crate::plan::{self, keep_order, PlanContext};
use crate::state::{CidState, ReplicaStatus};

/// The replica `state` should give up to `joined`, if any: `Some(node)` when the CID is
/// settled at its target (every counting replica pinned, nothing else in flight), `joined`
/// takes replicas (healthy, `up`, enough free space) and holds none of the CID's, and the
/// keep order of the CID's replicas plus `joined` puts `node` last. Moves that would leave the
/// CID in fewer regions are not made.
pub fn source(state: &CidState, context: &PlanContext, joined: &NodeId) -> Option<NodeId> {
    let desired = state.desired_replicas();
    if desired == 0 || !state.is_referenced() || state.replicas.contains_key(joined) {
        return None;
    }
    let target = context.nodes.iter().find(|n| &n.id == joined)?;
    if !target.healthy
        || target
            .free_bytes
            .is_some_and(|free| free < context.min_free_bytes)
    {
        return None;
    }
    // Settled: exactly the target, all pinned, no failed or leftover replica to sort out first.
    let live = plan::live_replicas(state, context);
    let settled = live.len() == desired
        && state.replicas.len() == desired
        && state
            .replicas
            .values()
            .all(|r| r.status == ReplicaStatus::Pinned);
    if !settled || !plan::plan(state, context).is_empty() {
        return None;
    }
    let mut candidates = live.clone();
    candidates.push(joined.clone());
    let order = keep_order(state, context, candidates);
    let dropped = order.last()?;
    if dropped == joined {
        return None;
    }
    let regions = |nodes: &mut dyn Iterator<Item = &NodeId>| -> usize {
        nodes
            .filter_map(|id| context.nodes.iter().find(|n| &n.id == id))
            .map(|n| n.region.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    };
    let before = regions(&mut live.iter());
    let after = regions(&mut order.iter().take(desired));
    (after >= before).then(|| dropped.clone())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pinhive_events::NodeState;

    use super::*;
    use crate::allocator::NodeView;
    use crate::plan::{plan, Action};
    use crate::state::{BoundCount, ReplicaState};

    fn node(id: &str, region: &str) -> NodeView {
        NodeView {
            id: id.into(),
            region: region.into(),
            weight: 1,
            healthy: true,
            free_bytes: None,
            state: NodeState::Up,
        }
    }

    fn fleet(n: usize, regions: usize) -> Vec<NodeView> {
        (0..n)
            .map(|i| node(&format!("n{i}"), &format!("r{}", i % regions)))
            .collect()
    }

    /// A CID with `replicas` pins' worth of min = max, pinned where the allocator puts it on
    /// `nodes`.
    fn settled(cid: &str, replicas: u8, nodes: &[NodeView]) -> (CidState, PlanContext) {
        let mut state = CidState::new(cid);
        state.bounds.push(BoundCount {
            min: replicas,
            max: replicas,
            pins: 1,
        });
        let context = PlanContext {
            nodes: nodes.to_vec(),
            ..PlanContext::default()
        };
        let placed = crate::allocator::allocate(
            cid,
            nodes,
            &BTreeSet::new(),
            &BTreeSet::new(),
            &[],
            usize::from(replicas),
            0,
        );
        state.replicas = placed
            .into_iter()
            .map(|n| (n, ReplicaState::new(ReplicaStatus::Pinned)))
            .collect::<BTreeMap<_, _>>();
        (state, context)
    }

    /// The first CID (of two replicas, settled on `before`) that moves a replica to `joined`
    /// once the nodes are `after`.
    fn a_moving_cid(
        before: &[NodeView],
        after: &[NodeView],
        joined: &NodeId,
    ) -> (CidState, PlanContext) {
        (0..1000)
            .map(|i| {
                let (state, mut context) = settled(&format!("cid-{i}"), 2, before);
                context.nodes = after.to_vec();
                (state, context)
            })
            .find(|(state, context)| source(state, context, joined).is_some())
            .expect("some CID moves")
    }

    #[test]
    fn about_k_over_n_of_cids_move_to_a_joined_node() {
        let before = fleet(10, 1);
        let mut after = before.clone();
        after.push(node("joined", "r0"));
        let cids = 6_000;
        let moved = (0..cids)
            .filter(|i| {
                let (state, mut context) = settled(&format!("cid-{i}"), 3, &before);
                context.nodes = after.clone();
                source(&state, &context, &"joined".to_string()).is_some()
            })
            .count();
        // Ideal: 3/11 ≈ 0.27 of the CIDs get a replica on the 11th node.
        let fraction = moved as f64 / f64::from(cids);
        assert!((0.23..0.31).contains(&fraction), "moved {fraction}");
    }

    #[test]
    fn a_move_is_an_allocation_then_the_dropped_replica_goes_once_the_new_one_is_pinned() {
        let before = fleet(6, 1);
        let mut after = before.clone();
        after.push(node("joined", "r0"));
        let joined = "joined".to_string();
        let (mut state, context) = a_moving_cid(&before, &after, &joined);
        let from = source(&state, &context, &joined).unwrap();
        // The walk appends the allocation; while the new replica pins, nothing is unpinned.
        state
            .replicas
            .insert(joined.clone(), ReplicaState::new(ReplicaStatus::Allocated));
        let actions = plan(&state, &context);
        assert!(
            actions.iter().all(|a| !matches!(a, Action::Unpin { .. })),
            "{actions:?}"
        );
        assert!(actions.contains(&Action::Pin {
            node: joined.clone(),
            origins: vec![]
        }));
        // Pinned: the dropped replica is unpinned, and nothing more moves.
        state.replicas.get_mut(&joined).unwrap().status = ReplicaStatus::Pinned;
        assert_eq!(
            plan(&state, &context),
            vec![Action::Unpin { node: from.clone() }]
        );
        state.replicas.remove(&from);
        assert!(plan(&state, &context).is_empty());
        assert_eq!(source(&state, &context, &joined), None);
    }

    #[test]
    fn a_cid_not_settled_or_a_node_that_cannot_take_replicas_moves_nothing() {
        let before = fleet(6, 1);
        let mut after = before.clone();
        after.push(node("joined", "r0"));
        let joined = "joined".to_string();
        let (state, context) = a_moving_cid(&before, &after, &joined);
        let mut pinning = state.clone();
        pinning.replicas.values_mut().next().unwrap().status = ReplicaStatus::Allocated;
        assert_eq!(source(&pinning, &context, &joined), None);
        let mut failed = state.clone();
        failed
            .replicas
            .insert("n9".into(), ReplicaState::new(ReplicaStatus::Failed));
        assert_eq!(source(&failed, &context, &joined), None);
        for change in [
            (|n: &mut NodeView| n.healthy = false) as fn(&mut NodeView),
            |n| n.free_bytes = Some(0),
        ] {
            let mut context = context.clone();
            context.min_free_bytes = 1;
            change(context.nodes.last_mut().unwrap());
            assert_eq!(source(&state, &context, &joined), None);
        }
        let mut gone = state;
        gone.bounds.clear();
        gone.holds.clear();
        assert_eq!(source(&gone, &context, &joined), None);
    }

    #[test]
    fn a_move_never_narrows_the_region_spread() {
        // Three regions, three replicas, one per region; the joined node is in r0: a CID may
        // only move its r0 replica there.
        let before = fleet(9, 3);
        let mut after = before.clone();
        after.push(node("joined", "r0"));
        let joined = "joined".to_string();
        let mut moves = 0;
        for i in 0..3000 {
            let (state, mut context) = settled(&format!("cid-{i}"), 3, &before);
            context.nodes = after.clone();
            if let Some(from) = source(&state, &context, &joined) {
                moves += 1;
                let region = &after.iter().find(|n| n.id == from).unwrap().region;
                assert_eq!(region, "r0", "cid-{i} would move its {from} replica");
            }
        }
        assert!(moves > 0);
    }
}
