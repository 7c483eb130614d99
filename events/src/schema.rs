//! JSON Schema of the external event form, generated from the Rust types.
//!
//! The committed files in `schemas/events/` are the contract for external producers. The test
//! `committed_schema_matches_types` fails when the types change without regenerating them
//! (`PINHIVE_BLESS=1 cargo test -p pinhive-events` rewrites the files).

use crate::Envelope;

/// The JSON Schema (draft 2020-12) of [`Envelope`], pretty-printed with a trailing newline.
pub fn envelope_schema_json() -> String {
    let schema = schemars::schema_for!(Envelope);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Path of the committed schema file relative to the workspace root.
pub const ENVELOPE_SCHEMA_PATH: &str = "schemas/events/envelope.schema.json";

/// The JSON Schema of [`crate::access::AccessBatch`] (`POST /access`), pretty-printed.
pub fn access_batch_schema_json() -> String {
    let schema = schemars::schema_for!(crate::access::AccessBatch);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// The JSON Schema of one [`crate::access::AccessEvent`] (a record of the access topic).
pub fn access_event_schema_json() -> String {
    let schema = schemars::schema_for!(crate::access::AccessEvent);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Committed schema files of the access contract, relative to the workspace root.
pub const ACCESS_BATCH_SCHEMA_PATH: &str = "schemas/access/access-batch.schema.json";
pub const ACCESS_EVENT_SCHEMA_PATH: &str = "schemas/access/access-event.schema.json";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{codec, Envelope, Event, NodeDescriptor, PinRequested};
    use std::path::PathBuf;

    fn workspace_root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default()
    }

    fn check_committed(relative: &str, generated: String) {
        let path = workspace_root().join(relative);
        if std::env::var_os("PINHIVE_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).expect("schema file is committed");
        assert!(
            committed == generated,
            "{relative} is stale: rerun with PINHIVE_BLESS=1"
        );
    }

    #[test]
    fn committed_schema_matches_types() {
        check_committed(ENVELOPE_SCHEMA_PATH, envelope_schema_json());
    }

    #[test]
    fn committed_access_batch_schema_matches_types() {
        check_committed(ACCESS_BATCH_SCHEMA_PATH, access_batch_schema_json());
    }

    #[test]
    fn committed_access_event_schema_matches_types() {
        check_committed(ACCESS_EVENT_SCHEMA_PATH, access_event_schema_json());
    }

    fn every_event() -> Vec<Event> {
        vec![
            Event::PinRequested(PinRequested {
                requestid: "r".into(),
                owner: "o".into(),
                cid: "c".into(),
                name: None,
                origins: vec!["/ip4/1.2.3.4/tcp/4001/p2p/QmX".into()],
                meta: [("a".into(), "b".into())].into(),
                created_ns: 5,
                replicas_min: 1,
                replicas_max: 2,
                replaces: Some(crate::Replaces {
                    requestid: "old".into(),
                    cid: "c0".into(),
                }),
            }),
            Event::PinReplaced {
                requestid: "a".into(),
                replaced_by: "b".into(),
            },
            Event::ReplaceSettled {
                requestid: "a".into(),
            },
            Event::UnpinRequested {
                requestid: "a".into(),
                owner: "o".into(),
            },
            Event::ReplicasAllocated {
                nodes: vec!["n1".into()],
                target: 1,
            },
            Event::ReplicaPinned {
                node: "n1".into(),
                delegates: vec![],
                attempts: 1,
                duration_ms: 3,
            },
            Event::ReplicaFailed {
                node: "n1".into(),
                reason: "x".into(),
                attempts: 3,
            },
            Event::ReplicaUnpinned { node: "n1".into() },
            Event::ReplicaMissing {
                node: "n1".into(),
                reason: "absent from pin/ls".into(),
            },
            Event::UnknownPinRemoved { node: "n1".into() },
            Event::PinRecoverRequested {
                requestid: "a".into(),
            },
            Event::PinExpired {
                requestid: "a".into(),
                expires_ns: 7,
            },
            Event::PinExpirySet {
                requestid: "a".into(),
                expires_ns: Some(7),
            },
            Event::TargetChanged {
                replicas: 3,
                preferred_regions: vec!["eu".into()],
                reason: "hot".into(),
            },
            Event::NodeRegistered(NodeDescriptor {
                id: "n1".into(),
                rpc_url: "http://127.0.0.1:5001".into(),
                region: "eu".into(),
                weight: 1,
            }),
            Event::NodeStatusChanged {
                node: "n1".into(),
                state: crate::NodeState::Down,
                reason: "down".into(),
            },
            Event::NodeRemoved {
                node: "n1".into(),
                reason: "retired".into(),
            },
        ]
    }

    #[test]
    fn every_event_validates_against_the_committed_schema() {
        let path = workspace_root().join(ENVELOPE_SCHEMA_PATH);
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).expect("schema compiles");
        for event in every_event() {
            let envelope = Envelope::new("k", event);
            let json: serde_json::Value =
                serde_json::from_slice(&codec::encode_json(&envelope)).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&json)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{json}: {errors:?}");
        }
    }

    #[test]
    fn schema_rejects_what_serde_rejects() {
        let path = workspace_root().join(ENVELOPE_SCHEMA_PATH);
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let bad = [
            serde_json::json!({"schema_version": 1}),
            serde_json::json!({"schema_version": 1, "event_id": "e", "key": "k", "timestamp_ns": 1,
                "event": {"no_such_event": {}}}),
            serde_json::json!({"schema_version": 1, "event_id": "e", "key": "k", "timestamp_ns": 1,
                "surprise": true, "event": {"replica_unpinned": {"node": "n"}}}),
            serde_json::json!({"schema_version": "1", "event_id": "e", "key": "k", "timestamp_ns": 1,
                "event": {"replica_unpinned": {"node": "n"}}}),
        ];
        for json in bad {
            assert!(!validator.is_valid(&json), "schema accepted {json}");
            assert!(
                codec::decode_json(json.to_string().as_bytes()).is_err(),
                "serde accepted {json}"
            );
        }
    }
}
