//! Node lifecycle: what every instance agrees on about each IPFS node, folded from the control
//! log, and the health rule that moves a node between states.
//!
//! Every instance health-checks every node, but only one (the control leader) turns what it
//! observes into [`NodeState`] changes, so instances never disagree about whether a node is
//! down: the state is the fold of the control log's events ([`NodeTable::apply`]), the same on
//! every instance and after every restart.
//!
//! ```text
//!            fails a check                 still failing after the grace period
//!   up ──────────────────────> degraded ───────────────────────────────────────> down
//!    ^  <──────────────────────   │                                               │
//!    │      passes a check        │                   passes a check              │
//!    └────────────────────────────┴───────────────────────────────────────────────┘
//!   any ── operator drain ──> draining ── operator undrain ──> up;  any ── remove ──> gone
//! ```
//!
//! A degraded node takes no new replicas, but its replicas still count, so a node that comes
//! back within the grace period moves nothing. A down node's replicas no longer count: the
//! shards make them again elsewhere, at the re-replication rate. A draining node's replicas are
//! unpinned one CID at a time, once the CID's replicas elsewhere are pinned.

use std::collections::BTreeMap;

use pinhive_events::{Event, NodeDescriptor, NodeId, NodeState};

/// One node as every instance sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRecord {
    pub descriptor: NodeDescriptor,
    pub state: NodeState,
    /// When the node entered `state` (the timestamp of the event that put it there).
    pub since_ns: i64,
    /// Why it is in `state` (the event's reason).
    pub reason: String,
}

/// What folding one control event changed.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeChange {
    /// A node joined, or its description (URL, region, weight) changed.
    Registered(NodeDescriptor),
    /// A known node's state changed from `from`.
    State {
        node: NodeId,
        from: NodeState,
        to: NodeState,
    },
    Removed(NodeId),
}

/// The fold of the control log: every registered node and its state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeTable {
    nodes: BTreeMap<NodeId, NodeRecord>,
}

impl NodeTable {
    /// Folds one control event (timestamped `at_ns`). Total: an event about an unknown node,
    /// or one that changes nothing, returns `None`.
    pub fn apply(&mut self, event: &Event, at_ns: i64) -> Option<NodeChange> {
        match event {
            Event::NodeRegistered(descriptor) => match self.nodes.get_mut(&descriptor.id) {
                Some(record) if record.descriptor == *descriptor => None,
                Some(record) => {
                    record.descriptor = descriptor.clone();
                    Some(NodeChange::Registered(descriptor.clone()))
                }
                None => {
                    self.nodes.insert(
                        descriptor.id.clone(),
                        NodeRecord {
                            descriptor: descriptor.clone(),
                            state: NodeState::Up,
                            since_ns: at_ns,
                            reason: "registered".into(),
                        },
                    );
                    Some(NodeChange::Registered(descriptor.clone()))
                }
            },
            Event::NodeStatusChanged {
                node,
                state,
                reason,
            } => {
                let record = self.nodes.get_mut(node)?;
                if record.state == *state {
                    return None;
                }
                let from = record.state;
                record.state = *state;
                record.since_ns = at_ns;
                record.reason = reason.clone();
                Some(NodeChange::State {
                    node: node.clone(),
                    from,
                    to: *state,
                })
            }
            Event::NodeRemoved { node, .. } => self
                .nodes
                .remove(node)
                .map(|_| NodeChange::Removed(node.clone())),
            _ => None,
        }
    }

    pub fn get(&self, id: &str) -> Option<&NodeRecord> {
        self.nodes.get(id)
    }

    pub fn records(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// The health rule's one parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthRule {
    /// How long a node may fail its health checks before it is `down`.
    pub grace_ns: i64,
}

/// The state change (if any) the control leader publishes for `record`, given whether the
/// node passes its health checks now (`healthy`: reachable and its circuit breaker not open)
/// and the time. Draining is an operator's decision: health never changes it.
pub fn transition(
    record: &NodeRecord,
    healthy: bool,
    now_ns: i64,
    rule: HealthRule,
) -> Option<(NodeState, String)> {
    match (record.state, healthy) {
        (NodeState::Draining, _) => None,
        (NodeState::Up, false) => Some((NodeState::Degraded, "failing health checks".into())),
        (NodeState::Degraded, false) if now_ns.saturating_sub(record.since_ns) >= rule.grace_ns => {
            Some((
                NodeState::Down,
                format!(
                    "failing health checks for longer than the grace period ({} s)",
                    rule.grace_ns / 1_000_000_000
                ),
            ))
        }
        (NodeState::Degraded | NodeState::Down, true) => {
            Some((NodeState::Up, "health checks pass again".into()))
        }
        _ => None,
    }
}

/// How endangered a CID is, most endangered first: the order re-replication works in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Urgency {
    /// No replica counts: the content may be gone from the cluster.
    NoReplica,
    /// Fewer counting replicas than the pins' minimum.
    BelowMin,
    /// At least the minimum, fewer than the target.
    BelowTarget,
    /// Nothing to make.
    Met,
}

impl Urgency {
    pub const ORDER: [Urgency; 3] = [Urgency::NoReplica, Urgency::BelowMin, Urgency::BelowTarget];

    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::NoReplica => "no_replica",
            Urgency::BelowMin => "below_min",
            Urgency::BelowTarget => "below_target",
            Urgency::Met => "met",
        }
    }

    /// The urgency of a CID with `live` counting replicas, bounds minimum `min` and target
    /// `desired`.
    pub fn of(live: usize, min: usize, desired: usize) -> Urgency {
        if desired == 0 || live >= desired {
            Urgency::Met
        } else if live == 0 {
            Urgency::NoReplica
        } else if live < min {
            Urgency::BelowMin
        } else {
            Urgency::BelowTarget
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn descriptor(id: &str) -> NodeDescriptor {
        NodeDescriptor {
            id: id.into(),
            rpc_url: format!("http://{id}:5001"),
            region: "eu".into(),
            weight: 1,
        }
    }

    fn status(node: &str, state: NodeState) -> Event {
        Event::NodeStatusChanged {
            node: node.into(),
            state,
            reason: "test".into(),
        }
    }

    #[test]
    fn registration_starts_up_and_re_registration_keeps_the_state() {
        let mut table = NodeTable::default();
        assert_eq!(
            table.apply(&Event::NodeRegistered(descriptor("a")), 5),
            Some(NodeChange::Registered(descriptor("a")))
        );
        assert_eq!(table.get("a").unwrap().state, NodeState::Up);
        table.apply(&status("a", NodeState::Draining), 6);
        // The same description again changes nothing; a new URL is a change, the state stays.
        assert_eq!(
            table.apply(&Event::NodeRegistered(descriptor("a")), 7),
            None
        );
        let moved = NodeDescriptor {
            rpc_url: "http://elsewhere:5001".into(),
            ..descriptor("a")
        };
        assert!(table.apply(&Event::NodeRegistered(moved), 8).is_some());
        assert_eq!(table.get("a").unwrap().state, NodeState::Draining);
        assert_eq!(table.get("a").unwrap().since_ns, 6);
    }

    #[test]
    fn fold_is_total() {
        let mut table = NodeTable::default();
        // Unknown nodes, repeated states and foreign events are no-ops.
        assert_eq!(table.apply(&status("x", NodeState::Down), 1), None);
        assert_eq!(
            table.apply(
                &Event::NodeRemoved {
                    node: "x".into(),
                    reason: String::new()
                },
                1
            ),
            None
        );
        assert_eq!(
            table.apply(&Event::ReplicaUnpinned { node: "x".into() }, 1),
            None
        );
        table.apply(&Event::NodeRegistered(descriptor("a")), 1);
        assert_eq!(table.apply(&status("a", NodeState::Up), 2), None);
        assert_eq!(
            table.apply(&status("a", NodeState::Down), 3),
            Some(NodeChange::State {
                node: "a".into(),
                from: NodeState::Up,
                to: NodeState::Down
            })
        );
        assert_eq!(
            table.apply(
                &Event::NodeRemoved {
                    node: "a".into(),
                    reason: String::new()
                },
                4
            ),
            Some(NodeChange::Removed("a".into()))
        );
        assert!(table.is_empty());
    }

    fn record(state: NodeState, since_ns: i64) -> NodeRecord {
        NodeRecord {
            descriptor: descriptor("a"),
            state,
            since_ns,
            reason: String::new(),
        }
    }

    #[test]
    fn health_rule_table() {
        let rule = HealthRule { grace_ns: 30 * S };
        let cases = [
            // (state, since, healthy, now, expected)
            (NodeState::Up, 0, true, 100 * S, None),
            (NodeState::Up, 0, false, 100 * S, Some(NodeState::Degraded)),
            (NodeState::Degraded, 100 * S, false, 129 * S, None),
            (
                NodeState::Degraded,
                100 * S,
                false,
                130 * S,
                Some(NodeState::Down),
            ),
            (
                NodeState::Degraded,
                100 * S,
                true,
                129 * S,
                Some(NodeState::Up),
            ),
            (NodeState::Down, 100 * S, false, 900 * S, None),
            (NodeState::Down, 100 * S, true, 900 * S, Some(NodeState::Up)),
            (NodeState::Draining, 0, false, 900 * S, None),
            (NodeState::Draining, 0, true, 900 * S, None),
        ];
        for (state, since, healthy, now, expected) in cases {
            let got = transition(&record(state, since), healthy, now, rule).map(|(s, _)| s);
            assert_eq!(
                got, expected,
                "{state:?} since {since} healthy={healthy} now={now}"
            );
        }
    }

    #[test]
    fn urgency_orders_the_most_endangered_first() {
        assert_eq!(Urgency::of(0, 2, 3), Urgency::NoReplica);
        assert_eq!(Urgency::of(1, 2, 3), Urgency::BelowMin);
        assert_eq!(Urgency::of(2, 2, 3), Urgency::BelowTarget);
        assert_eq!(Urgency::of(3, 2, 3), Urgency::Met);
        assert_eq!(Urgency::of(0, 0, 0), Urgency::Met);
        assert!(Urgency::NoReplica < Urgency::BelowMin && Urgency::BelowMin < Urgency::BelowTarget);
    }
}
