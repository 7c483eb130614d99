//! `GET /pins` query strings come straight from clients: the handler decodes them with
//! `serde_urlencoded` and builds the listing query with `parse_list_query`. Neither panics on
//! any input; a query that is accepted respects every bound, and one that is refused is a 400.

use cid::multibase::Base;
use cid::multihash::Multihash;
use pinhive_api::error::ErrorCode;
use pinhive_api::model::{parse_list_query, MAX_CIDS_PER_QUERY, MAX_NAME_CHARS};
use proptest::prelude::*;
use proptest::sample::select;

const KNOWN_KEYS: [&str; 8] = [
    "cid", "name", "match", "status", "before", "after", "limit", "meta",
];

fn text(max: usize) -> BoxedStrategy<String> {
    prop::collection::vec(any::<char>(), 0..max)
        .prop_map(String::from_iter)
        .boxed()
}

/// A CID text: a valid CID in one of several bases (v0 included), or garbage.
fn cid_text() -> BoxedStrategy<String> {
    let valid = (
        prop::collection::vec(any::<u8>(), 32),
        any::<bool>(),
        select(vec![
            Base::Base32Lower,
            Base::Base32Upper,
            Base::Base58Btc,
            Base::Base36Lower,
        ]),
    )
        .prop_map(|(digest, v0, base)| {
            let hash = Multihash::<64>::wrap(0x12, &digest).expect("32 bytes fit");
            if v0 {
                return cid::Cid::new_v0(hash).expect("a CIDv0").to_string();
            }
            cid::Cid::new_v1(0x55, hash)
                .to_string_of_base(base)
                .expect("v1 in any base")
        });
    prop_oneof![12 => valid, 1 => "[a-zA-Z0-9]{0,60}", 1 => text(20)].boxed()
}

/// An RFC 3339-like timestamp with components a little out of range now and then.
fn time_text() -> BoxedStrategy<String> {
    let fraction = prop_oneof![Just(String::new()), "\\.[0-9]{1,12}"];
    let zone = prop_oneof![
        3 => Just("Z".to_string()),
        1 => Just("z".to_string()),
        3 => (any::<bool>(), 0u32..26, 0u32..62)
            .prop_map(|(plus, h, m)| format!("{}{h:02}:{m:02}", if plus { '+' } else { '-' })),
        1 => Just(String::new()),
    ];
    let in_range = (
        (1970u32..2200, 1u32..13, 1u32..29),
        (0u32..24, 0u32..60, 0u32..60),
    );
    let wild = (
        (0u32..10_000, 0u32..14, 0u32..33),
        (0u32..26, 0u32..62, 0u32..62),
    );
    let stamp = (prop_oneof![4 => in_range, 1 => wild], fraction, zone).prop_map(
        |(((y, mo, d), (h, mi, s)), fraction, zone)| {
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{fraction}{zone}")
        },
    );
    prop_oneof![8 => stamp, 1 => text(30)].boxed()
}

fn comma_list(item: BoxedStrategy<String>, max: usize) -> BoxedStrategy<String> {
    let separator = select(vec![",", ", ", " ,", ",,"]);
    prop::collection::vec((item, separator), 0..max)
        .prop_map(|items| {
            items
                .into_iter()
                .flat_map(|(item, separator)| [item, separator.to_string()])
                .collect()
        })
        .boxed()
}

fn meta_text() -> BoxedStrategy<String> {
    let object = prop::collection::btree_map(text(8), text(8), 0..4)
        .prop_map(|map| serde_json::to_string(&map).expect("a string map serializes"));
    prop_oneof![
        6 => object,
        1 => Just("{\"a\":1}".to_string()),
        1 => Just("[]".to_string()),
        1 => text(30),
    ]
    .boxed()
}

/// A value that fits `key`'s parameter, or not.
fn value_for(key: &str) -> BoxedStrategy<String> {
    let fitting = match key {
        "cid" => comma_list(cid_text(), 13),
        "name" => prop_oneof![text(40), "[a-z]{250,260}"].boxed(),
        "match" => prop_oneof![
            4 => select(vec!["exact", "iexact", "partial", "ipartial"]).prop_map(String::from),
            1 => text(10),
        ]
        .boxed(),
        "status" => comma_list(
            prop_oneof![
                12 => select(vec!["queued", "pinning", "pinned", "failed"]).prop_map(String::from),
                1 => text(8),
            ]
            .boxed(),
            6,
        ),
        "before" | "after" => time_text(),
        "limit" => prop_oneof![
            4 => (-5i64..1100).prop_map(|n| n.to_string()),
            1 => any::<i64>().prop_map(|n| n.to_string()),
            1 => "[0-9]{19,25}",
        ]
        .boxed(),
        "meta" => meta_text(),
        _ => text(20),
    };
    prop_oneof![12 => fitting, 1 => text(20)].boxed()
}

fn param() -> BoxedStrategy<(String, String)> {
    prop_oneof![
        6 => select(KNOWN_KEYS.to_vec()).prop_map(String::from),
        1 => text(10),
    ]
    .prop_flat_map(|key| {
        let value = value_for(&key);
        (Just(key), value)
    })
    .boxed()
}

/// Query strings as a client might send them: encoded parameters, raw separators and
/// percent escapes (valid or not), or anything.
fn query_string() -> BoxedStrategy<String> {
    let encoded = prop::collection::vec(param(), 0..8).prop_map(|params| {
        serde_urlencoded::to_string(&params).expect("string pairs always encode")
    });
    let piece = prop_oneof![
        select(vec![
            "&", "=", "+", "%", "%2", "%25", "%FF", "%C3%A9", "%00", "%zz", ";"
        ])
        .prop_map(String::from),
        "[a-z]{1,6}",
        text(6),
    ];
    let raw = prop::collection::vec(piece, 0..20).prop_map(|pieces| pieces.concat());
    prop_oneof![encoded, raw, text(60)].boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any parameters: a query within every bound, or a 400.
    #[test]
    fn parse_list_query_is_total_and_bounded(
        owner in "[a-z]{1,8}",
        params in prop::collection::vec(param(), 0..7),
    ) {
        match parse_list_query(&owner, &params) {
            Ok(query) => {
                prop_assert!((1..=1000).contains(&query.limit), "limit {}", query.limit);
                prop_assert!(query.cids.len() <= MAX_CIDS_PER_QUERY, "{} cids", query.cids.len());
                prop_assert!(!query.statuses.is_empty());
                prop_assert_eq!(&query.owner, &owner);
                for (i, cid) in query.cids.iter().enumerate() {
                    prop_assert!(!query.cids[..i].contains(cid), "duplicate {cid}");
                    let canonical = pinhive_domain::canonical_cid(cid);
                    prop_assert_eq!(canonical.as_ref(), Ok(cid), "not canonical");
                }
                for (i, status) in query.statuses.iter().enumerate() {
                    prop_assert!(!query.statuses[..i].contains(status), "duplicate {status:?}");
                }
                if let Some((name, _)) = &query.name {
                    prop_assert!(!name.is_empty() && name.chars().count() <= MAX_NAME_CHARS);
                }
            }
            Err(error) => prop_assert_eq!(error.code, ErrorCode::BadRequest, "{}", error),
        }
    }

    /// The handler's whole path: decode the query string, then build the query. Neither
    /// panics; a decoded query string gives pairs `parse_list_query` answers.
    #[test]
    fn query_strings_decode_or_are_refused(query in query_string()) {
        let Ok(params) = serde_urlencoded::from_str::<Vec<(String, String)>>(&query) else {
            return Ok(());
        };
        if let Err(error) = parse_list_query("o", &params) {
            prop_assert_eq!(error.code, ErrorCode::BadRequest, "{}", error);
        }
    }
}
