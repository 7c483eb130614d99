//! Given events / then state and plan: the pin lifecycle as tables, plus replay properties.

use std::collections::BTreeMap;

use pinhive_events::{Event, PinRequested};
use proptest::prelude::*;

use crate::state::{check as check_unpin, named_pin, PinChange};
use crate::{plan, Action, CidState, NodeView, PinRow, PinStatus, PlanContext};

const PEER: &str = "12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf";
const CID: &str = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";

fn request(id: &str, min: u8, max: u8) -> Event {
    Event::PinRequested(PinRequested {
        requestid: id.into(),
        owner: "alice".into(),
        cid: CID.into(),
        name: None,
        origins: vec!["/ip4/10.0.0.1/tcp/4001/p2p/QmOrigin".into()],
        meta: BTreeMap::new(),
        created_ns: 1,
        replicas_min: min,
        replicas_max: max,
        replaces: None,
    })
}

fn allocated(nodes: &[&str]) -> Event {
    Event::ReplicasAllocated {
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        target: nodes.len() as u8,
    }
}

fn pinned(node: &str) -> Event {
    Event::ReplicaPinned {
        node: node.into(),
        delegates: vec![
            format!("/ip4/127.0.0.1/tcp/4001/p2p/{PEER}"),
            format!("/dns4/{node}.example.org/tcp/4001/p2p/{PEER}"),
        ],
        attempts: 1,
        duration_ms: 1,
    }
}

fn failed(node: &str) -> Event {
    Event::ReplicaFailed {
        node: node.into(),
        reason: "request timed out".into(),
        attempts: 3,
    }
}

fn nodes(n: usize) -> PlanContext {
    PlanContext {
        nodes: (0..n)
            .map(|i| NodeView {
                id: format!("n{i}"),
                region: String::new(),
                weight: 1,
                healthy: true,
                free_bytes: None,
                state: pinhive_events::NodeState::Up,
            })
            .collect(),
        min_free_bytes: 0,
        dial_private_origins: true,
        ..PlanContext::default()
    }
}

/// A CID state and its pin rows, as the shard keeps them.
#[derive(Clone, Debug, PartialEq)]
struct Folded {
    state: CidState,
    rows: BTreeMap<String, PinRow>,
}

impl Folded {
    fn new() -> Self {
        Folded {
            state: CidState::new(CID),
            rows: BTreeMap::new(),
        }
    }

    fn apply(&mut self, offset: u64, event: &Event) {
        let pin = named_pin(event).and_then(|id| self.rows.get(id)).cloned();
        match self.state.apply(offset, event, pin.as_ref()) {
            Some(PinChange::Created(row)) | Some(PinChange::Updated(row)) => {
                self.rows.insert(row.record.requestid.clone(), row);
            }
            Some(PinChange::Removed(row)) => {
                self.rows.remove(&row.record.requestid);
            }
            None => {}
        }
    }
}

fn fold_rows(events: &[Event]) -> Folded {
    let mut folded = Folded::new();
    for (offset, event) in events.iter().enumerate() {
        folded.apply(offset as u64, event);
    }
    folded
}

fn fold(events: &[Event]) -> CidState {
    fold_rows(events).state
}

/// One row of the lifecycle table: events so far, expected status, expected action kinds.
fn check(events: &[Event], fleet: usize, status: PinStatus, expected: &[&str]) {
    let state = fold(events);
    assert_eq!(state.pin_status(), status, "after {events:?}");
    let kinds: Vec<&str> = plan(&state, &nodes(fleet))
        .iter()
        .map(|a| match a {
            Action::Allocate { .. } => "allocate",
            Action::Pin { .. } => "pin",
            Action::Unpin { .. } => "unpin",
            Action::ReleaseHold { .. } => "release",
        })
        .collect();
    assert_eq!(kinds, expected, "after {events:?}");
}

#[test]
fn lifecycle_table() {
    let r = || request("r1", 1, 3);
    check(&[r()], 0, PinStatus::Queued, &[]);
    check(&[r()], 2, PinStatus::Queued, &["allocate"]);
    check(&[r(), allocated(&["n0"])], 2, PinStatus::Pinning, &["pin"]);
    check(
        &[r(), allocated(&["n0"]), pinned("n0")],
        2,
        PinStatus::Pinned,
        &[],
    );
    // A failed replica is replaced by another node while one is left.
    check(
        &[r(), allocated(&["n0"]), failed("n0")],
        2,
        PinStatus::Failed,
        &["allocate"],
    );
    check(
        &[r(), allocated(&["n0"]), failed("n0")],
        1,
        PinStatus::Failed,
        &[],
    );
    // Delete: every replica is unpinned, then the state is garbage.
    let unpin = Event::UnpinRequested {
        requestid: "r1".into(),
        owner: "alice".into(),
    };
    check(
        &[r(), allocated(&["n0"]), pinned("n0"), unpin.clone()],
        2,
        PinStatus::Pinned,
        &["unpin"],
    );
    let done = fold(&[
        r(),
        allocated(&["n0"]),
        pinned("n0"),
        unpin,
        Event::ReplicaUnpinned { node: "n0".into() },
    ]);
    assert!(done.is_garbage());
}

#[test]
fn a_replica_missing_on_its_node_is_pinned_there_again() {
    let missing = |node: &str| Event::ReplicaMissing {
        node: node.into(),
        reason: "absent from pin/ls".into(),
    };
    let r = || request("r1", 2, 3);
    let both = || vec![r(), allocated(&["n0", "n1"]), pinned("n0"), pinned("n1")];
    let mut events = both();
    events.push(missing("n1"));
    // One of the two replicas the pin needs is gone: pinning until the node holds it again.
    check(&events, 3, PinStatus::Pinning, &["pin"]);
    let state = fold(&events);
    assert_eq!(
        plan(&state, &nodes(3)),
        [Action::Pin {
            node: "n1".into(),
            origins: vec!["/ip4/10.0.0.1/tcp/4001/p2p/QmOrigin".into()],
        }]
    );
    events.push(pinned("n1"));
    check(&events, 3, PinStatus::Pinned, &[]);
    // Only a replica recorded as pinned is pinned again: a stale report about a node being
    // unpinned, or one that never held the CID, changes nothing.
    let mut stale = both();
    stale.push(Event::UnpinRequested {
        requestid: "r1".into(),
        owner: "alice".into(),
    });
    stale.push(Event::ReplicaUnpinned { node: "n1".into() });
    let before = fold(&stale);
    stale.push(missing("n1"));
    stale.push(missing("n2"));
    let after = fold(&stale);
    assert_eq!(after.replicas, before.replicas);
    // The only replica missing: the pin shows pinning until the node holds it again.
    check(
        &[
            request("r1", 1, 1),
            allocated(&["n0"]),
            pinned("n0"),
            missing("n0"),
        ],
        2,
        PinStatus::Pinning,
        &["pin"],
    );
}

#[test]
fn two_pins_of_one_cid_share_replicas_and_survive_one_delete() {
    let events = vec![
        request("r1", 1, 3),
        allocated(&["n0"]),
        pinned("n0"),
        request("r2", 1, 3),
        Event::UnpinRequested {
            requestid: "r1".into(),
            owner: "alice".into(),
        },
    ];
    check(&events, 3, PinStatus::Pinned, &[]);
}

#[test]
fn target_change_adds_and_removes_replicas() {
    let mut events = vec![request("r1", 1, 3), allocated(&["n0"]), pinned("n0")];
    events.push(Event::TargetChanged {
        replicas: 3,
        preferred_regions: vec![],
        reason: "hot".into(),
    });
    check(&events, 5, PinStatus::Pinned, &["allocate"]);
    // Clamped to the pin's max.
    events.push(Event::TargetChanged {
        replicas: 9,
        preferred_regions: vec![],
        reason: "hotter".into(),
    });
    assert_eq!(fold(&events).desired_replicas(), 3);
    events.push(allocated(&["n1", "n2"]));
    events.push(Event::TargetChanged {
        replicas: 1,
        preferred_regions: vec![],
        reason: "cold".into(),
    });
    let actions = plan(&fold(&events), &nodes(5));
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::Unpin { .. }))
            .count(),
        2
    );
    // 0 clears the target: the pins' min applies again, whatever it becomes later.
    events.push(Event::TargetChanged {
        replicas: 0,
        preferred_regions: vec![],
        reason: "back to min".into(),
    });
    let state = fold(&events);
    assert_eq!(state.target_override, None);
    assert_eq!(state.desired_replicas(), 1);
}

#[test]
fn a_shrinking_target_keeps_the_replicas_in_preferred_regions() {
    let mut context = nodes(3);
    for (i, node) in context.nodes.iter_mut().enumerate() {
        node.region = ["eu", "us", "ap"][i].into();
    }
    let mut events = vec![
        request("r1", 1, 3),
        allocated(&["n0", "n1", "n2"]),
        pinned("n0"),
        pinned("n1"),
        pinned("n2"),
    ];
    for region in ["eu", "us", "ap"] {
        events.push(Event::TargetChanged {
            replicas: 1,
            preferred_regions: vec![region.into()],
            reason: "demand moved".into(),
        });
        let kept: Vec<String> = ["n0", "n1", "n2"]
            .iter()
            .filter(|n| {
                !plan(&fold(&events), &context)
                    .iter()
                    .any(|a| matches!(a, Action::Unpin { node } if node == *n))
            })
            .map(|n| n.to_string())
            .collect();
        let expected = context.nodes.iter().find(|n| n.region == region).unwrap();
        assert_eq!(kept, vec![expected.id.clone()], "preferred {region}");
    }
}

#[test]
fn info_names_the_preferred_regions() {
    let mut events = vec![request("r1", 1, 3)];
    assert!(!fold(&events).pin_info().contains_key("replicas_regions"));
    events.push(Event::TargetChanged {
        replicas: 2,
        preferred_regions: vec!["us".into(), "eu".into()],
        reason: "geo".into(),
    });
    assert_eq!(fold(&events).pin_info()["replicas_regions"], "us,eu");
}

#[test]
fn a_replaced_pin_holds_its_content_until_the_replacement_settles() {
    let replaced = Event::PinReplaced {
        requestid: "r1".into(),
        replaced_by: "r9".into(),
    };
    let mut events = vec![
        request("r1", 1, 1),
        allocated(&["n0"]),
        pinned("n0"),
        replaced,
    ];
    // The pin row is gone, the replica stays.
    let state = fold(&events);
    assert_eq!(state.pins(), 0);
    check(&events, 2, PinStatus::Pinned, &[]);
    events.push(Event::ReplaceSettled {
        requestid: "r1".into(),
    });
    check(&events, 2, PinStatus::Pinned, &["unpin"]);
}

fn node_addresses(node: &str) -> Vec<String> {
    vec![
        format!("/ip4/10.0.0.9/tcp/4001/p2p/{PEER}"),
        format!("/dns4/{node}.allocated.example/tcp/4001/p2p/{PEER}"),
    ]
}

/// Delegates are the addresses of the nodes holding the content (the registry's, per node),
/// public first; a replica still allocated is not listed once the pin is pinned.
#[test]
fn delegates_come_from_pinned_replicas_public_first() {
    let state = fold(&[request("r1", 1, 2), allocated(&["n0", "n1"]), pinned("n0")]);
    assert_eq!(state.pin_status(), PinStatus::Pinned);
    assert_eq!(
        state.delegates(&node_addresses),
        vec![
            format!("/dns4/n0.allocated.example/tcp/4001/p2p/{PEER}"),
            format!("/ip4/10.0.0.9/tcp/4001/p2p/{PEER}"),
        ]
    );
}

#[test]
fn delegates_while_pinning_are_the_allocated_nodes() {
    let state = fold(&[request("r1", 2, 2), allocated(&["n0", "n1"])]);
    let delegates = state.delegates(&node_addresses);
    assert_eq!(delegates.len(), 3, "{delegates:?}");
    assert!(delegates[0].contains(".allocated.example"), "{delegates:?}");
    assert!(delegates[1].contains(".allocated.example"), "{delegates:?}");
    assert!(fold(&[request("r1", 1, 1)])
        .delegates(&node_addresses)
        .is_empty());
}

#[test]
fn private_origins_are_dialled_only_when_allowed() {
    let state = fold(&[request("r1", 1, 1), allocated(&["n0"])]);
    let mut context = nodes(1);
    let origins = |context: &PlanContext| -> Vec<String> {
        plan(&state, context)
            .into_iter()
            .find_map(|a| match a {
                Action::Pin { origins, .. } => Some(origins),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(origins(&context).len(), 1);
    context.dial_private_origins = false;
    assert!(origins(&context).is_empty());
}

#[test]
fn only_the_owner_may_unpin() {
    let folded = fold_rows(&[request("r1", 1, 1)]);
    let row = folded.rows.get("r1");
    let by = |owner: &str| Event::UnpinRequested {
        requestid: "r1".into(),
        owner: owner.into(),
    };
    assert!(check_unpin(&by("alice"), row).is_ok());
    assert_eq!(
        check_unpin(&by("mallory"), row),
        Err(crate::Rejection::NotOwner {
            requestid: "r1".into()
        })
    );
    let gone = Event::UnpinRequested {
        requestid: "r9".into(),
        owner: "mallory".into(),
    };
    assert!(
        check_unpin(&gone, None).is_ok(),
        "unpin of a gone pin is a no-op"
    );
}

#[test]
fn huge_attempt_counts_saturate() {
    let mut events = vec![request("r1", 1, 1), allocated(&["n0"])];
    for _ in 0..3 {
        events.push(Event::ReplicaFailed {
            node: "n0".into(),
            reason: "x".into(),
            attempts: u32::MAX,
        });
    }
    let state = fold(&events);
    assert_eq!(state.replicas["n0"].attempts, u32::MAX);
}

fn arbitrary_event() -> impl Strategy<Value = Event> {
    let node = prop::sample::select(vec!["n0", "n1", "n2"]);
    let rid = prop::sample::select(vec!["r1", "r2"]);
    prop_oneof![
        rid.clone().prop_map(|r| request(r, 1, 2)),
        rid.prop_map(|r| Event::UnpinRequested {
            requestid: r.into(),
            owner: "alice".into()
        }),
        node.clone().prop_map(|n| allocated(&[n])),
        node.clone().prop_map(pinned),
        node.clone().prop_map(failed),
        node.prop_map(|n| Event::ReplicaUnpinned { node: n.into() }),
        (0u8..4).prop_map(|r| Event::TargetChanged {
            replicas: r,
            preferred_regions: vec![],
            reason: "t".into()
        }),
    ]
}

proptest! {
    /// Crash + replay: re-applying any prefix of already-applied events changes nothing.
    #[test]
    fn replay_is_idempotent(events in prop::collection::vec(arbitrary_event(), 0..40), cut in 0usize..40) {
        let full = fold_rows(&events);
        let mut replayed = full.clone();
        for (offset, event) in events.iter().enumerate().take(cut) {
            replayed.apply(offset as u64, event);
        }
        prop_assert_eq!(&replayed, &full);
        // Resuming from a checkpoint gives the same state as one uninterrupted fold.
        let cut = cut.min(events.len());
        let mut resumed = fold_rows(&events[..cut]);
        for (offset, event) in events.iter().enumerate().skip(cut) {
            resumed.apply(offset as u64, event);
        }
        prop_assert_eq!(resumed, full);
    }

    /// The plan never asks to pin and unpin the same node, nor to allocate a node already used.
    #[test]
    fn plan_is_consistent(events in prop::collection::vec(arbitrary_event(), 0..40)) {
        let state = fold(&events);
        let actions = plan(&state, &nodes(3));
        for action in &actions {
            if let Action::Allocate { nodes, .. } = action {
                for n in nodes { prop_assert!(!state.replicas.contains_key(n)); }
            }
            if let Action::Pin { node, .. } = action {
                let unpin = Action::Unpin { node: node.clone() };
                prop_assert!(!actions.contains(&unpin), "pin and unpin of one node");
            }
        }
    }
}

/// `fleet` with node `i` in `state` (and not taking new replicas unless `up`).
fn with_state(mut context: PlanContext, i: usize, state: pinhive_events::NodeState) -> PlanContext {
    context.nodes[i].state = state;
    context.nodes[i].healthy = state == pinhive_events::NodeState::Up;
    context
}

#[test]
fn node_states_decide_what_counts_and_what_moves() {
    use crate::{needs_work, urgency, Urgency};
    use pinhive_events::NodeState;
    // Three replicas pinned on n0, n1, n2 of a five-node fleet.
    let state = fold(&[
        request("r1", 3, 3),
        allocated(&["n0", "n1", "n2"]),
        pinned("n0"),
        pinned("n1"),
        pinned("n2"),
    ]);
    assert!(plan(&state, &nodes(5)).is_empty());

    // Degraded (within the grace period): its replica still counts, nothing moves.
    let degraded = with_state(nodes(5), 0, NodeState::Degraded);
    assert!(plan(&state, &degraded).is_empty());
    assert!(!needs_work(&state, &degraded, &[]));
    assert_eq!(urgency(&state, &degraded), Urgency::Met);

    // Down: the replica no longer counts; one more is made elsewhere, and nothing is asked of
    // the down node.
    let down = with_state(nodes(5), 0, NodeState::Down);
    let actions = plan(&state, &down);
    assert_eq!(actions.len(), 1, "{actions:?}");
    let Action::Allocate { nodes: picked, .. } = &actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(picked.len(), 1);
    assert!(picked[0] == "n3" || picked[0] == "n4", "{picked:?}");
    assert_eq!(urgency(&state, &down), Urgency::BelowMin);
    // All three down: nothing counts.
    let all_down = with_state(
        with_state(with_state(nodes(5), 0, NodeState::Down), 1, NodeState::Down),
        2,
        NodeState::Down,
    );
    assert_eq!(urgency(&state, &all_down), Urgency::NoReplica);

    // Draining: a replacement is allocated first, and the draining replica is kept...
    let draining = with_state(nodes(5), 0, NodeState::Draining);
    let actions = plan(&state, &draining);
    assert!(
        matches!(actions.as_slice(), [Action::Allocate { .. }]),
        "{actions:?}"
    );
    let Action::Allocate { nodes: picked, .. } = &actions[0] else {
        unreachable!()
    };
    let moved = picked[0].clone();
    let mut events = vec![
        request("r1", 3, 3),
        allocated(&["n0", "n1", "n2"]),
        pinned("n0"),
        pinned("n1"),
        pinned("n2"),
        allocated(&[moved.as_str()]),
    ];
    let actions = plan(&fold(&events), &draining);
    assert_eq!(
        actions,
        vec![Action::Pin {
            node: moved.clone(),
            origins: vec!["/ip4/10.0.0.1/tcp/4001/p2p/QmOrigin".into()]
        }]
    );
    // ...until the replacement is pinned; then the draining node unpins.
    events.push(pinned(&moved));
    let actions = plan(&fold(&events), &draining);
    assert_eq!(actions, vec![Action::Unpin { node: "n0".into() }]);
    events.push(Event::ReplicaUnpinned { node: "n0".into() });
    assert!(plan(&fold(&events), &draining).is_empty());

    // A down node that comes back finds its replica surplus: it is unpinned there.
    events = vec![
        request("r1", 3, 3),
        allocated(&["n0", "n1", "n2"]),
        pinned("n0"),
        pinned("n1"),
        pinned("n2"),
        allocated(&["n3"]),
        pinned("n3"),
    ];
    assert!(plan(&fold(&events), &down).is_empty());
    let actions = plan(&fold(&events), &nodes(5));
    assert!(
        matches!(actions.as_slice(), [Action::Unpin { .. }]),
        "{actions:?}"
    );
}
