//! What must happen next for one CID, computed from its state alone (level-triggered).
//!
//! The shard calls [`plan`] after applying events and again from its repair loop; because the
//! plan depends only on state, an action lost to a crash is simply planned again. Node drivers
//! make pin/unpin idempotent, so planning the same action twice costs one extra RPC.

use std::collections::BTreeSet;

use pinhive_events::{NodeId, NodeState};

use crate::allocator::{allocate, rank, NodeView};
use crate::nodes::Urgency;
use crate::state::{CidState, ReplicaStatus};
use crate::values::is_public_multiaddr;

/// Inputs besides the state: the node registry snapshot and placement thresholds.
#[derive(Clone, Debug, Default)]
pub struct PlanContext {
    pub nodes: Vec<NodeView>,
    pub min_free_bytes: u64,
    /// Let nodes dial loopback/private/link-local origins (a private cluster whose content
    /// providers share its network). Off by default: a client's origins must not make the
    /// cluster's nodes probe their own internal network.
    pub dial_private_origins: bool,
    /// The time of planning (ns since the epoch): whether a failed replica's retry is due.
    pub now_ns: i64,
    /// When failed replicas are retried ([`crate::retry`]).
    pub retry: crate::retry::RetryPolicy,
}

/// One step for the shard to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Append `ReplicasAllocated { nodes, target }` to the CID's partition.
    Allocate { nodes: Vec<NodeId>, target: u8 },
    /// Ask `node`'s driver to pin the CID (connecting to `origins` first).
    Pin { node: NodeId, origins: Vec<String> },
    /// Ask `node`'s driver to unpin the CID.
    Unpin { node: NodeId },
    /// Append `ReplaceSettled { requestid }` to `cid`'s partition (the pin that replaced
    /// `requestid` settled, so the old content may be released) and to the replacing pin's
    /// CID (which then stops planning it). Planned while a replacing pin is pinned or failed,
    /// or gone.
    ReleaseHold { requestid: String, cid: String },
}

/// Plans the actions that move `state` towards its desired placement.
pub fn plan(state: &CidState, context: &PlanContext) -> Vec<Action> {
    let desired = state.desired_replicas();
    let node_state = |node: &NodeId| {
        context
            .nodes
            .iter()
            .find(|n| &n.id == node)
            .map(|n| n.state)
    };
    // Replicas on nodes that left the registry are lost, and on `down` nodes they no longer
    // count: neither is live, and nothing is asked of those nodes (a node that comes back is
    // planned again). A `degraded` node's replicas still count; a `draining` node's do not,
    // but it is asked to unpin them once enough replicas elsewhere are pinned.
    let live = keep_order(state, context, live_replicas(state, context));

    let origins: Vec<String> = state
        .origins
        .iter()
        .filter(|origin| context.dial_private_origins || is_public_multiaddr(origin))
        .cloned()
        .collect();
    let mut actions = Vec::new();
    let pinned =
        |node: &NodeId| state.replicas.get(node).map(|r| r.status) == Some(ReplicaStatus::Pinned);
    // Replicas beyond the target go once the ones kept are pinned, never before: a replica
    // moving to a better-ranked node (a node that joined) is unpinned from the old one only
    // when the new one holds the data, and a shrinking target never drops a pinned copy
    // while a kept one is still pinning.
    let mut unwanted: BTreeSet<NodeId> = if live.iter().take(desired).all(pinned) {
        live.iter().skip(desired).cloned().collect()
    } else {
        BTreeSet::new()
    };
    if !state.is_referenced() {
        // Nothing references the CID: every replica goes, failed ones included (a failed pin
        // may have left a partial or late pin behind; `pin/rm` of an absent pin is a no-op).
        unwanted.extend(state.replicas.keys().cloned());
    }
    // A draining node gives its replica up once the CID's counting replicas are pinned.
    let pinned_live = live.iter().filter(|node| pinned(node)).count();
    if pinned_live >= desired {
        unwanted.extend(
            state
                .replicas
                .keys()
                .filter(|node| node_state(node) == Some(NodeState::Draining))
                .cloned(),
        );
    }

    if live.len() < desired {
        let exclude: BTreeSet<NodeId> = state.replicas.keys().cloned().collect();
        let used_regions: BTreeSet<String> = live
            .iter()
            .filter_map(|id| context.nodes.iter().find(|n| &n.id == id))
            .map(|n| n.region.clone())
            .collect();
        let mut nodes = allocate(
            &state.cid,
            &context.nodes,
            &exclude,
            &used_regions,
            &state.preferred_regions,
            desired - live.len(),
            context.min_free_bytes,
        );
        // Short of nodes that never failed: failed replicas whose backoff has passed are
        // tried again on their node (with the same placement filters).
        let short = (desired - live.len()).saturating_sub(nodes.len());
        let due = crate::retry::due_retries(state, &context.retry, context.now_ns);
        if short > 0 && !due.is_empty() {
            let mut exclude = exclude;
            for node in &due {
                exclude.remove(node);
            }
            exclude.extend(nodes.iter().cloned());
            let mut regions = used_regions;
            regions.extend(
                nodes
                    .iter()
                    .filter_map(|id| context.nodes.iter().find(|n| &n.id == id))
                    .map(|n| n.region.clone()),
            );
            nodes.extend(allocate(
                &state.cid,
                &context.nodes,
                &exclude,
                &regions,
                &state.preferred_regions,
                short,
                context.min_free_bytes,
            ));
        }
        if !nodes.is_empty() {
            actions.push(Action::Allocate {
                nodes,
                target: u8::try_from(desired).unwrap_or(u8::MAX),
            });
        }
    }

    for (node, replica) in state.replicas.iter() {
        let Some(node_state) = node_state(node) else {
            continue;
        };
        if node_state == NodeState::Down {
            continue;
        }
        if unwanted.contains(node) {
            actions.push(Action::Unpin { node: node.clone() });
        } else if replica.status == ReplicaStatus::Allocated && node_state.holds_replicas() {
            actions.push(Action::Pin {
                node: node.clone(),
                origins: origins.clone(),
            });
        }
    }
    // A replacing pin releases the replaced pin's hold once it settles or is gone; planned
    // again until `ReplaceSettled` comes back, so a lost append only delays it.
    let settled = state.settled();
    for (requestid, release) in &state.releases {
        if release.now || settled {
            actions.push(Action::ReleaseHold {
                requestid: requestid.clone(),
                cid: release.cid.clone(),
            });
        }
    }
    actions
}

/// True while the CID needs attention from the repair loop: actions to carry out, or fewer
/// live replicas than desired (e.g. queued while no node is reachable).
///
/// A CID whose pins show `failed` (its failed replicas ran out of automatic retries) needs
/// nothing more until `PinRecoverRequested` (or an event of its own) changes its state.
pub fn needs_work(state: &CidState, context: &PlanContext, actions: &[Action]) -> bool {
    !actions.is_empty()
        || (live_replicas(state, context).len() < state.desired_replicas()
            && state.pin_status() != crate::pin::PinStatus::Failed)
}

/// `replicas` in the order they are kept, best first: the stable rendezvous order, with the
/// replicas in the preferred regions (where the demand is) first — the last ones go when the
/// CID has more than its target.
pub fn keep_order(
    state: &CidState,
    context: &PlanContext,
    mut replicas: Vec<NodeId>,
) -> Vec<NodeId> {
    rank(&state.cid, &mut replicas);
    if !state.preferred_regions.is_empty() {
        let preferred = |id: &NodeId| {
            context
                .nodes
                .iter()
                .find(|n| &n.id == id)
                .is_some_and(|n| state.preferred_regions.contains(&n.region))
        };
        replicas.sort_by_key(|id| !preferred(id));
    }
    replicas
}

/// The replicas that count towards the CID's target: allocated or pinned on a node that is
/// registered and `up` or `degraded`.
pub(crate) fn live_replicas(state: &CidState, context: &PlanContext) -> Vec<NodeId> {
    state
        .replicas
        .iter()
        .filter(|(node, r)| {
            matches!(r.status, ReplicaStatus::Allocated | ReplicaStatus::Pinned)
                && context
                    .nodes
                    .iter()
                    .any(|n| &n.id == *node && n.state.holds_replicas())
        })
        .map(|(node, _)| node.clone())
        .collect()
}

/// How endangered the CID is (re-replication works most endangered first).
pub fn urgency(state: &CidState, context: &PlanContext) -> Urgency {
    let min = state
        .replica_bounds()
        .map_or(0, |(min, _)| usize::from(min));
    Urgency::of(
        live_replicas(state, context).len(),
        min,
        state.desired_replicas(),
    )
}
