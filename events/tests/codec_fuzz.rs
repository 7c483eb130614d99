//! The codec reads records from outside (any Kafka producer, a damaged log segment): any bytes
//! under any content type decode to an envelope or a typed `DecodeError`, never a panic, and
//! what the codec writes it reads back.

use pinhive_events::codec::{self, DecodeError};
use pinhive_events::{
    Envelope, Event, NodeDescriptor, NodeState, PinRequested, Replaces, SCHEMA_VERSION,
};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

const BINCODE: u8 = 1;
const JSON: u8 = 2;

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[a-z0-9-]{0,12}",
        1 => prop::collection::vec(any::<char>(), 0..24).prop_map(String::from_iter),
    ]
    .boxed()
}

fn texts(max: usize) -> BoxedStrategy<Vec<String>> {
    prop::collection::vec(text(), 0..max).boxed()
}

fn pin_requested() -> BoxedStrategy<PinRequested> {
    (
        (text(), text(), text(), prop::option::of(text())),
        (texts(4), prop::collection::btree_map(text(), text(), 0..4)),
        (any::<i64>(), any::<u8>(), any::<u8>()),
        prop::option::of((text(), text()).prop_map(|(requestid, cid)| Replaces { requestid, cid })),
    )
        .prop_map(
            |((requestid, owner, cid, name), (origins, meta), (created_ns, min, max), replaces)| {
                PinRequested {
                    requestid,
                    owner,
                    cid,
                    name,
                    origins,
                    meta,
                    created_ns,
                    replicas_min: min,
                    replicas_max: max,
                    replaces,
                }
            },
        )
        .boxed()
}

/// Every event variant, every field arbitrary.
fn event() -> BoxedStrategy<Event> {
    prop_oneof![
        pin_requested().prop_map(Event::PinRequested),
        (text(), text()).prop_map(|(requestid, replaced_by)| Event::PinReplaced {
            requestid,
            replaced_by
        }),
        text().prop_map(|requestid| Event::ReplaceSettled { requestid }),
        (text(), text()).prop_map(|(requestid, owner)| Event::UnpinRequested { requestid, owner }),
        (texts(4), any::<u8>())
            .prop_map(|(nodes, target)| Event::ReplicasAllocated { nodes, target }),
        (text(), texts(4), any::<u32>(), any::<u64>()).prop_map(
            |(node, delegates, attempts, duration_ms)| Event::ReplicaPinned {
                node,
                delegates,
                attempts,
                duration_ms,
            }
        ),
        (text(), text(), any::<u32>()).prop_map(|(node, reason, attempts)| Event::ReplicaFailed {
            node,
            reason,
            attempts
        }),
        text().prop_map(|node| Event::ReplicaUnpinned { node }),
        (text(), text()).prop_map(|(node, reason)| Event::ReplicaMissing { node, reason }),
        text().prop_map(|node| Event::UnknownPinRemoved { node }),
        text().prop_map(|requestid| Event::PinRecoverRequested { requestid }),
        (text(), any::<i64>()).prop_map(|(requestid, expires_ns)| Event::PinExpired {
            requestid,
            expires_ns
        }),
        (text(), proptest::option::of(any::<i64>())).prop_map(|(requestid, expires_ns)| {
            Event::PinExpirySet {
                requestid,
                expires_ns,
            }
        }),
        (any::<u8>(), texts(4), text()).prop_map(|(replicas, preferred_regions, reason)| {
            Event::TargetChanged {
                replicas,
                preferred_regions,
                reason,
            }
        }),
        (text(), text(), text(), any::<u32>()).prop_map(|(id, rpc_url, region, weight)| {
            Event::NodeRegistered(NodeDescriptor {
                id,
                rpc_url,
                region,
                weight,
            })
        }),
        (text(), 0..4usize, text()).prop_map(|(node, state, reason)| {
            Event::NodeStatusChanged {
                node,
                state: [
                    NodeState::Up,
                    NodeState::Degraded,
                    NodeState::Down,
                    NodeState::Draining,
                ][state],
                reason,
            }
        }),
        (text(), text()).prop_map(|(node, reason)| Event::NodeRemoved { node, reason }),
    ]
    .boxed()
}

/// An envelope this build writes (current schema version).
fn envelope() -> BoxedStrategy<Envelope> {
    (
        (text(), text(), any::<i64>()),
        prop::option::of(text()),
        event(),
    )
        .prop_map(
            |((event_id, key, timestamp_ns), traceparent, event)| Envelope {
                schema_version: SCHEMA_VERSION,
                event_id,
                key,
                timestamp_ns,
                traceparent,
                event,
            },
        )
        .boxed()
}

/// One way to damage a valid encoding.
#[derive(Clone, Debug)]
enum Damage {
    Truncate(Index),
    FlipBit(Index, u8),
    Extend(Vec<u8>),
    Overwrite(Index, Vec<u8>),
}

fn damage() -> BoxedStrategy<Damage> {
    prop_oneof![
        any::<Index>().prop_map(Damage::Truncate),
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Damage::FlipBit(at, bit)),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(Damage::Extend),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Damage::Overwrite(at, bytes)),
    ]
    .boxed()
}

/// Applies `damage` to `bytes` (never empty: an envelope encodes to a few bytes at least).
fn damaged(mut bytes: Vec<u8>, damage: &Damage) -> Vec<u8> {
    match damage {
        Damage::Truncate(at) => bytes.truncate(at.index(bytes.len())),
        Damage::FlipBit(at, bit) => {
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
        }
        Damage::Extend(tail) => bytes.extend_from_slice(tail),
        Damage::Overwrite(at, patch) => {
            let at = at.index(bytes.len());
            for (offset, byte) in patch.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(at + offset) {
                    *slot = *byte;
                }
            }
        }
    }
    bytes
}

/// What any `decode` result must satisfy: an envelope of this schema version under the
/// record's key that survives another round trip, or a typed error.
fn check_decoded(
    result: &Result<Envelope, DecodeError>,
    content_type: u8,
    key: &[u8],
) -> Result<(), TestCaseError> {
    match result {
        Ok(envelope) => {
            prop_assert!(content_type == BINCODE || content_type == JSON);
            prop_assert_eq!(envelope.schema_version, SCHEMA_VERSION);
            prop_assert_eq!(envelope.key.as_bytes(), key);
            let again = codec::decode(BINCODE, key, &codec::encode(envelope));
            prop_assert_eq!(again.ok(), Some(envelope.clone()));
        }
        Err(DecodeError::UnknownContentType(byte)) => prop_assert_eq!(*byte, content_type),
        Err(_) => prop_assert!(content_type == BINCODE || content_type == JSON),
    }
    Ok(())
}

/// Arbitrary JSON values, with field names of the envelope among the object keys so decoding
/// gets past the first field now and then.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    let key = prop_oneof![
        prop::sample::select(vec![
            "schema_version",
            "event_id",
            "key",
            "timestamp_ns",
            "traceparent",
            "event",
            "pin_requested",
            "unpin_requested",
            "target_changed",
            "replicas_allocated",
            "node_registered",
            "requestid",
            "owner",
            "cid",
            "replicas",
            "nodes",
            "reason",
        ])
        .prop_map(String::from),
        text(),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Replaces, removes or adds one node somewhere in `value`, following `path`.
fn mutate(value: &mut Value, path: &[Index], replacement: Value, remove: bool) {
    let Some((step, rest)) = path.split_first() else {
        *value = replacement;
        return;
    };
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            let key = step
                .get(&fields.keys().cloned().collect::<Vec<_>>())
                .clone();
            if remove && rest.is_empty() {
                fields.remove(&key);
            } else if let Some(child) = fields.get_mut(&key) {
                mutate(child, rest, replacement, remove);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let at = step.index(items.len());
            mutate(&mut items[at], rest, replacement, remove);
        }
        _ => *value = replacement,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any bytes under any content type and key: an envelope or a typed error.
    #[test]
    fn arbitrary_bytes_decode_to_an_envelope_or_a_typed_error(
        content_type in prop_oneof![Just(BINCODE), Just(JSON), any::<u8>()],
        key in prop::collection::vec(any::<u8>(), 0..16),
        value in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let result = codec::decode(content_type, &key, &value);
        check_decoded(&result, content_type, &key)?;
    }

    /// What the codec writes it reads back, under the record's key; another key or another
    /// schema version is the typed error.
    #[test]
    fn valid_encodings_round_trip(envelope in envelope(), version in any::<u16>()) {
        let key = envelope.key.as_bytes();
        let bincode = codec::decode(BINCODE, key, &codec::encode(&envelope));
        prop_assert_eq!(bincode.ok(), Some(envelope.clone()));
        let json = codec::decode(JSON, key, &codec::encode_json(&envelope));
        prop_assert_eq!(json.ok(), Some(envelope.clone()));

        let other_key = [key, b"~"].concat();
        let mismatch = codec::decode(BINCODE, &other_key, &codec::encode(&envelope));
        prop_assert!(matches!(mismatch, Err(DecodeError::KeyMismatch { .. })), "{mismatch:?}");
        let versioned = Envelope { schema_version: version, ..envelope.clone() };
        let encodings = [
            (BINCODE, codec::encode(&versioned)),
            (JSON, codec::encode_json(&versioned)),
        ];
        for (content_type, bytes) in encodings {
            match codec::decode(content_type, key, &bytes) {
                Ok(decoded) => prop_assert_eq!(decoded.schema_version, SCHEMA_VERSION),
                // pinhive's own records of a later schema: a later release wrote them.
                Err(DecodeError::NewerSchema(read)) => {
                    prop_assert_eq!(read, version);
                    prop_assert!(content_type == BINCODE && version > SCHEMA_VERSION);
                }
                Err(DecodeError::UnsupportedVersion(read)) => {
                    prop_assert_eq!(read, version);
                    prop_assert!(content_type == JSON || version < SCHEMA_VERSION);
                }
                Err(other) => prop_assert!(false, "version {version}: {other}"),
            }
        }
    }

    /// A damaged bincode record is an envelope or a typed error; cut short it is always an
    /// error, and extra bytes are reported as trailing bytes.
    #[test]
    fn damaged_bincode_is_an_envelope_or_a_typed_error(envelope in envelope(), damage in damage()) {
        let valid = codec::encode(&envelope);
        let bytes = damaged(valid.clone(), &damage);
        let key = envelope.key.as_bytes();
        let result = codec::decode(BINCODE, key, &bytes);
        check_decoded(&result, BINCODE, key)?;
        match &damage {
            Damage::Truncate(_) => prop_assert!(result.is_err(), "a strict prefix decoded"),
            Damage::Extend(tail) => prop_assert!(
                matches!(result, Err(DecodeError::TrailingBytes(n)) if n == tail.len()),
                "{result:?}"
            ),
            _ => {}
        }
    }

    /// A damaged JSON record is an envelope or a typed error; cut short it is a JSON error.
    #[test]
    fn damaged_json_is_an_envelope_or_a_typed_error(envelope in envelope(), damage in damage()) {
        let bytes = damaged(codec::encode_json(&envelope), &damage);
        let key = envelope.key.as_bytes();
        let result = codec::decode(JSON, key, &bytes);
        check_decoded(&result, JSON, key)?;
        if let Damage::Truncate(_) = damage {
            prop_assert!(matches!(result, Err(DecodeError::Json(_))), "{result:?}");
        }
    }

    /// `decode_json` on any JSON value: an envelope that round-trips, or `DecodeError::Json`.
    #[test]
    fn decode_json_of_any_value_is_an_envelope_or_a_json_error(value in json_value()) {
        let bytes = serde_json::to_vec(&value).expect("a Value always serializes");
        match codec::decode_json(&bytes) {
            Ok(envelope) => {
                let again = codec::decode_json(&codec::encode_json(&envelope));
                prop_assert_eq!(again.ok(), Some(envelope));
            }
            Err(error) => prop_assert!(matches!(error, DecodeError::Json(_)), "{error}"),
        }
    }

    /// `decode_json` on a valid envelope's JSON with one node replaced, removed or added: the
    /// structure-aware counterpart of the byte damage above.
    #[test]
    fn decode_json_of_a_mutated_envelope_is_an_envelope_or_a_json_error(
        envelope in envelope(),
        path in prop::collection::vec(any::<Index>(), 0..5),
        replacement in json_value(),
        remove in any::<bool>(),
    ) {
        let mut value = serde_json::to_value(&envelope).expect("an envelope serializes");
        mutate(&mut value, &path, replacement, remove);
        let bytes = serde_json::to_vec(&value).expect("a Value always serializes");
        match codec::decode_json(&bytes) {
            Ok(decoded) => {
                let again = codec::decode_json(&codec::encode_json(&decoded));
                prop_assert_eq!(again.ok(), Some(decoded));
            }
            Err(error) => prop_assert!(matches!(error, DecodeError::Json(_)), "{error}"),
        }
    }
}

/// The input the fuzzing above first found: schema version 1, then an `event_id` whose length
/// prefix claims 2^60 bytes. Without a decode limit bincode allocates that up front and the
/// allocation failure aborts the process (no panic to catch, a crash loop on restart).
#[test]
fn a_huge_length_prefix_is_an_error_not_an_abort() {
    let value = [0x01, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f];
    let result = codec::decode(BINCODE, b"k", &value);
    assert!(matches!(result, Err(DecodeError::Bincode(_))), "{result:?}");
}
