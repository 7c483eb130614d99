//! The log's internal encoding (bincode) writes an event as its variant's position in
//! `Event`: a variant inserted anywhere but last would make every record already in a log
//! decode as another event. This pins the position of every variant written so far.

use std::collections::BTreeMap;

use pinhive_events::{Event, NodeDescriptor, NodeState, PinRequested};

fn position(event: &Event) -> u8 {
    let bytes = bincode::serde::encode_to_vec(event, bincode::config::standard()).unwrap();
    // Positions below 251 are one byte (bincode's variable-length integers).
    bytes[0]
}

#[test]
fn variants_keep_their_positions() {
    let node = || "n1".to_string();
    let known: Vec<(Event, u8)> = vec![
        (
            Event::PinRequested(PinRequested {
                requestid: "r".into(),
                owner: "o".into(),
                cid: "c".into(),
                name: None,
                origins: vec![],
                meta: BTreeMap::new(),
                created_ns: 0,
                replicas_min: 1,
                replicas_max: 1,
                replaces: None,
            }),
            0,
        ),
        (
            Event::PinReplaced {
                requestid: "r".into(),
                replaced_by: "s".into(),
            },
            1,
        ),
        (
            Event::ReplaceSettled {
                requestid: "r".into(),
            },
            2,
        ),
        (
            Event::UnpinRequested {
                requestid: "r".into(),
                owner: "o".into(),
            },
            3,
        ),
        (
            Event::ReplicasAllocated {
                nodes: vec![node()],
                target: 1,
            },
            4,
        ),
        (
            Event::ReplicaPinned {
                node: node(),
                delegates: vec![],
                attempts: 1,
                duration_ms: 1,
            },
            5,
        ),
        (
            Event::ReplicaFailed {
                node: node(),
                reason: "x".into(),
                attempts: 1,
            },
            6,
        ),
        (Event::ReplicaUnpinned { node: node() }, 7),
        (
            Event::TargetChanged {
                replicas: 2,
                preferred_regions: vec![],
                reason: "x".into(),
            },
            8,
        ),
        (
            Event::NodeRegistered(NodeDescriptor {
                id: node(),
                rpc_url: "http://127.0.0.1:5001".into(),
                region: String::new(),
                weight: 1,
            }),
            9,
        ),
        (
            Event::NodeStatusChanged {
                node: node(),
                state: NodeState::Down,
                reason: "x".into(),
            },
            10,
        ),
        (
            Event::NodeRemoved {
                node: node(),
                reason: "x".into(),
            },
            11,
        ),
        (
            Event::ReplicaMissing {
                node: node(),
                reason: "x".into(),
            },
            12,
        ),
        (Event::UnknownPinRemoved { node: node() }, 13),
        (
            Event::PinRecoverRequested {
                requestid: "r".into(),
            },
            14,
        ),
        (
            Event::PinExpired {
                requestid: "r".into(),
                expires_ns: 1,
            },
            15,
        ),
        (
            Event::PinExpirySet {
                requestid: "r".into(),
                expires_ns: None,
            },
            16,
        ),
    ];
    for (event, expected) in &known {
        assert_eq!(
            position(event),
            *expected,
            "{} moved: new variants go last",
            event.kind()
        );
    }
}
