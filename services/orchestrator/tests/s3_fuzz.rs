//! S3 event notifications come from any gateway (or anyone who can write to the topic or the
//! webhook): any payload is a count of usable records or `S3Error::Malformed` (dead-lettered),
//! never a panic and never a transient error (which would be retried for ever).

use std::collections::BTreeMap;

use cid::multibase::Base;
use cid::multihash::Multihash;
use pinhive_domain::Cid;
use pinhive_orchestrator::s3::{parse_notification, S3Error};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::{json, Map, Value};

fn text(max: usize) -> BoxedStrategy<String> {
    prop::collection::vec(any::<char>(), 0..max)
        .prop_map(String::from_iter)
        .boxed()
}

/// What the CID metadata holds: a valid CID in some base (padded now and then), or garbage.
fn cid_value() -> BoxedStrategy<String> {
    let valid = (
        prop::collection::vec(any::<u8>(), 32),
        any::<bool>(),
        select(vec![Base::Base32Lower, Base::Base58Btc, Base::Base36Lower]),
        select(vec!["", " ", "\t", "\n"]),
    )
        .prop_map(|(digest, v0, base, pad)| {
            let hash = Multihash::<64>::wrap(0x12, &digest).expect("32 bytes fit");
            let text = if v0 {
                cid::Cid::new_v0(hash).expect("a CIDv0").to_string()
            } else {
                let cid = cid::Cid::new_v1(0x55, hash);
                cid.to_string_of_base(base).expect("v1 in any base")
            };
            format!("{pad}{text}{pad}")
        });
    prop_oneof![4 => valid, 1 => "[a-zA-Z0-9]{0,60}", 1 => text(20)].boxed()
}

/// An object key as S3 sends it: URL-encoded with '+' for spaces, escapes valid or not.
fn object_key() -> BoxedStrategy<String> {
    let piece = prop_oneof![
        "[a-zA-Z0-9/._-]{1,8}",
        select(vec![
            "+", "%20", "%2B", "%2F", "%C3%A9", "%FF", "%", "%2", "%zz", "%00"
        ])
        .prop_map(String::from),
        text(4),
    ];
    prop::collection::vec(piece, 0..8)
        .prop_map(|pieces| pieces.concat())
        .boxed()
}

fn event_name() -> BoxedStrategy<String> {
    prop_oneof![
        6 => select(vec![
            "s3:ObjectCreated:Put",
            "ObjectCreated:CompleteMultipartUpload",
            "s3:ObjectCreated:Copy",
            "s3:ObjectRemoved:Delete",
            "ObjectRemoved:DeleteMarkerCreated",
            "s3:ObjectCreated",
            "s3:ObjectRemoved",
            "objectcreated:put",
            "s3:TestEvent",
            "s3:ObjectAccessed:Get",
            "s3:s3:ObjectCreated:Put",
        ])
        .prop_map(String::from),
        1 => text(20),
    ]
    .boxed()
}

fn user_metadata() -> BoxedStrategy<BTreeMap<String, String>> {
    let key = prop_oneof![
        4 => select(vec![
            "X-Amz-Meta-Cid",
            "x-amz-meta-cid",
            "cid",
            "CID",
            "content-type",
            "x-amz-meta-name",
        ])
        .prop_map(String::from),
        1 => text(10),
    ];
    prop::collection::btree_map(key, cid_value(), 0..4).boxed()
}

/// One notification record, and whether the parser must accept it and count it (`Some(1)`),
/// skip it (`Some(0)`) or refuse the notification (`None`).
#[derive(Clone, Debug)]
struct Record {
    value: Value,
    expected: Option<usize>,
}

fn record() -> BoxedStrategy<Record> {
    (
        (event_name(), text(16), object_key()),
        (
            prop::option::of("[0-9A-F]{16}"),
            prop::option::of(text(8)),
            prop::option::of(text(8)),
        ),
        prop::option::weighted(0.9, user_metadata()),
    )
        .prop_map(
            |((name, bucket, key), (sequencer, version_id, e_tag), metadata)| {
                let mut object = json!({ "key": key, "size": 5 });
                for (field, value) in [
                    ("sequencer", sequencer),
                    ("versionId", version_id),
                    ("eTag", e_tag),
                ] {
                    if let Some(value) = value {
                        object[field] = Value::String(value);
                    }
                }
                if let Some(metadata) = &metadata {
                    object["userMetadata"] = json!(metadata);
                }
                let value = json!({
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "eventName": name,
                    "s3": { "bucket": { "name": bucket }, "object": object },
                });
                Record {
                    value,
                    expected: expected(&name, metadata.as_ref()),
                }
            },
        )
        .boxed()
}

/// The documented rules: `s3:ObjectCreated:*` needs a valid CID in `x-amz-meta-cid` (or
/// `cid`, any case; the first such key in sorted order), `s3:ObjectRemoved:*` needs nothing,
/// other events are skipped.
fn expected(name: &str, metadata: Option<&BTreeMap<String, String>>) -> Option<usize> {
    let name = name.trim_start_matches("s3:");
    if name.starts_with("ObjectRemoved:") {
        return Some(1);
    }
    if !name.starts_with("ObjectCreated:") {
        return Some(0);
    }
    let cid = metadata?.iter().find_map(|(key, value)| {
        let key = key.to_ascii_lowercase();
        (key == "x-amz-meta-cid" || key == "cid").then_some(value)
    })?;
    Cid::parse(cid.trim()).ok().map(|_| 1)
}

/// A field the parser requires, removed or given the wrong type.
#[derive(Clone, Debug)]
enum Breakage {
    None,
    Remove(&'static [&'static str]),
    WrongType(&'static [&'static str], Value),
}

const REQUIRED: [&[&str]; 5] = [
    &["eventName"],
    &["s3"],
    &["s3", "bucket", "name"],
    &["s3", "object"],
    &["s3", "object", "key"],
];

fn breakage() -> BoxedStrategy<Breakage> {
    let wrong = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
    ];
    prop_oneof![
        6 => Just(Breakage::None),
        1 => select(REQUIRED.to_vec()).prop_map(Breakage::Remove),
        1 => (select(REQUIRED.to_vec()), wrong).prop_map(|(path, v)| Breakage::WrongType(path, v)),
    ]
    .boxed()
}

/// Applies `breakage` to `record`; true if it broke a required field.
fn apply(record: &mut Value, breakage: &Breakage) -> bool {
    let (path, replacement) = match breakage {
        Breakage::None => return false,
        Breakage::Remove(path) => (*path, None),
        Breakage::WrongType(path, value) => (*path, Some(value.clone())),
    };
    let (last, parents) = path.split_last().expect("paths are not empty");
    let mut node = record;
    for step in parents {
        node = &mut node[*step];
    }
    let Some(fields) = node.as_object_mut() else {
        return false;
    };
    match replacement {
        None => fields.remove(*last).is_some(),
        Some(value) => {
            // Null, a number, an array or an object: the wrong type for each of them.
            fields.insert(last.to_string(), value);
            true
        }
    }
}

/// A notification and the parser's expected answer.
fn notification() -> BoxedStrategy<(Vec<u8>, Option<usize>)> {
    (
        prop::collection::vec(record(), 0..5),
        breakage(),
        any::<Index>(),
    )
        .prop_map(|(records, breakage, which)| {
            let mut expected = records
                .iter()
                .try_fold(0, |count, record| Some(count + record.expected?));
            let mut values: Vec<Value> = records.into_iter().map(|r| r.value).collect();
            if !values.is_empty() {
                let at = which.index(values.len());
                if apply(&mut values[at], &breakage) {
                    expected = None;
                }
            }
            let payload = json!({ "EventName": "s3:ObjectCreated:Put", "Records": values });
            (
                serde_json::to_vec(&payload).expect("a Value serializes"),
                expected,
            )
        })
        .boxed()
}

/// Arbitrary JSON values, S3 field names among the keys.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        text(12).prop_map(Value::String),
    ];
    let key = prop_oneof![
        select(vec![
            "Records",
            "eventName",
            "s3",
            "bucket",
            "name",
            "object",
            "key",
            "userMetadata",
            "sequencer",
            "x-amz-meta-cid",
        ])
        .prop_map(String::from),
        text(8),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..5)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
    .boxed()
}

fn is_malformed(result: &Result<usize, S3Error>) -> bool {
    matches!(result, Err(S3Error::Malformed(_)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any bytes: a count or `Malformed`.
    #[test]
    fn arbitrary_bytes_are_counted_or_malformed(
        payload in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            text(64).prop_map(String::into_bytes),
        ]
    ) {
        let result = parse_notification(&payload);
        prop_assert!(result.is_ok() || is_malformed(&result), "{result:?}");
    }

    /// Any JSON value: a count or `Malformed`.
    #[test]
    fn arbitrary_json_is_counted_or_malformed(value in json_value()) {
        let payload = serde_json::to_vec(&value).expect("a Value serializes");
        let result = parse_notification(&payload);
        prop_assert!(result.is_ok() || is_malformed(&result), "{result:?}");
    }

    /// Notifications shaped like S3's: created objects with a valid CID and removed objects
    /// are counted, other events skipped; a created object without a valid CID, or a record
    /// missing a required field, makes the notification `Malformed`.
    #[test]
    fn s3_shaped_notifications_follow_the_documented_rules((payload, expected) in notification()) {
        let result = parse_notification(&payload);
        match expected {
            Some(count) => prop_assert_eq!(result.ok(), Some(count)),
            None => prop_assert!(is_malformed(&result), "{result:?}"),
        }
    }

    /// An S3-shaped notification cut short or with a byte changed: a count or `Malformed`.
    #[test]
    fn damaged_notifications_are_counted_or_malformed(
        (payload, _) in notification(),
        at in any::<Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let mut payload = payload;
        let at = at.index(payload.len());
        if cut {
            payload.truncate(at);
        } else {
            payload[at] = byte;
        }
        let result = parse_notification(&payload);
        prop_assert!(result.is_ok() || is_malformed(&result), "{result:?}");
        if cut {
            prop_assert!(is_malformed(&result), "a strict prefix parsed: {result:?}");
        }
    }
}
