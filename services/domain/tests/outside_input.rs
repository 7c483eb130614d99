//! Every parser of outside input in the domain (CID text, origins and delegates, owner, name,
//! meta, request id, and `admit` of a whole log record) answers any input with a value or a
//! typed `Rejection`, never a panic, and the values it accepts keep their promises.

use std::collections::BTreeMap;
use std::str::FromStr;

use cid::multibase::Base;
use cid::multihash::Multihash;
use multiaddr::{Multiaddr, PeerId, Protocol};
use pinhive_domain::state::{check, named_pin, PinChange};
use pinhive_domain::values::{self, Cid, MAX_ORIGINS, MAX_ORIGINS_EXAMINED};
use pinhive_domain::{admit, plan, CidState, NodeView, PlanContext, Provenance, Rejection};
use pinhive_events::{Envelope, Event, NodeDescriptor, NodeState, PinRequested, Replaces};
use proptest::prelude::*;
use proptest::sample::{select, Index};

// ---------------------------------------------------------------------------------------------
// Text

/// Arbitrary unicode, controls and NULs included.
fn text(max: usize) -> BoxedStrategy<String> {
    prop::collection::vec(any::<char>(), 0..max)
        .prop_map(String::from_iter)
        .boxed()
}

/// Multibase prefixes with bodies from their alphabets.
const ALPHABETS: [(&str, &str); 7] = [
    ("b", "abcdefghijklmnopqrstuvwxyz234567"),
    ("B", "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
    (
        "z",
        "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz",
    ),
    ("k", "0123456789abcdefghijklmnopqrstuvwxyz"),
    ("K", "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    (
        "Qm",
        "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz",
    ),
    ("f", "0123456789abcdef"),
];

fn multibase_shaped() -> BoxedStrategy<String> {
    let length = prop_oneof![Just(44usize), 56usize..=60, 0usize..120];
    (select(ALPHABETS.to_vec()), length)
        .prop_flat_map(|((prefix, alphabet), length)| {
            let chars: Vec<char> = alphabet.chars().collect();
            prop::collection::vec(select(chars), length)
                .prop_map(move |body| format!("{prefix}{}", String::from_iter(body)))
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// CIDs

const BASES: [Base; 5] = [
    Base::Base32Lower,
    Base::Base32Upper,
    Base::Base58Btc,
    Base::Base36Lower,
    Base::Base36Upper,
];

/// A CID made with the `cid` crate: v0 (sha2-256, dag-pb) or v1 with raw, dag-pb or dag-cbor
/// and a random digest of any length a 64-byte multihash holds.
fn generated_cid() -> BoxedStrategy<cid::Cid> {
    let v0 = prop::collection::vec(any::<u8>(), 32).prop_map(|digest| {
        let hash = Multihash::<64>::wrap(0x12, &digest).expect("32 bytes fit");
        cid::Cid::new_v0(hash).expect("sha2-256 of 32 bytes is a CIDv0")
    });
    let v1 = (
        select(vec![0x55u64, 0x70, 0x71]),
        select(vec![0x00u64, 0x12, 0x13, 0x1e, 0xb220]),
        prop::collection::vec(any::<u8>(), 0..=64),
    )
        .prop_map(|(codec, code, digest)| {
            let hash = Multihash::<64>::wrap(code, &digest).expect("at most 64 bytes");
            cid::Cid::new_v1(codec, hash)
        });
    prop_oneof![1 => v0, 3 => v1].boxed()
}

/// The canonical form the domain promises: CIDv1, base32 lower case.
fn expected_canonical(cid: &cid::Cid) -> String {
    let v1 = cid.into_v1().expect("v0 and v1 both have a v1 form");
    v1.to_string_of_base(Base::Base32Lower)
        .expect("a v1 CID has a base32 form")
}

/// Every text the `cid` crate writes for `cid` (a CIDv0 also as each of its v1 spellings),
/// some with surrounding whitespace.
fn spellings(cid: &cid::Cid) -> Vec<String> {
    let mut texts = Vec::new();
    if cid.version() == cid::Version::V0 {
        texts.push(cid.to_string());
    }
    let v1 = cid.into_v1().expect("v1 form");
    for base in BASES {
        texts.push(v1.to_string_of_base(base).expect("v1 in any base"));
    }
    texts.push(format!(" \t{}\n", texts[0]));
    texts
}

/// A spelling of a generated CID with one character replaced, inserted or removed, or cut
/// short: near misses reach deeper into the decoders than random text.
fn mutated_spelling() -> BoxedStrategy<String> {
    (
        generated_cid(),
        any::<Index>(),
        any::<Index>(),
        0u8..4,
        any::<char>(),
    )
        .prop_map(|(cid, which, at, operation, c)| {
            let texts = spellings(&cid);
            let mut chars: Vec<char> = which.get(&texts).chars().collect();
            let position = at.index(chars.len() + 1);
            match operation {
                0 if position < chars.len() => chars[position] = c,
                1 => chars.insert(position, c),
                2 if position < chars.len() => {
                    chars.remove(position);
                }
                _ => chars.truncate(position),
            }
            String::from_iter(chars)
        })
        .boxed()
}

/// A spelling of a generated CID behind a path-like prefix.
fn cid_path() -> BoxedStrategy<String> {
    (text(20), generated_cid(), any::<Index>())
        .prop_map(|(prefix, cid, which)| format!("{prefix}/ipfs/{}", which.get(&spellings(&cid))))
        .boxed()
}

fn cid_text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => text(80),
        3 => multibase_shaped(),
        3 => mutated_spelling(),
        1 => cid_path(),
    ]
    .boxed()
}

/// The bytes a CID text spells: base58btc for a CIDv0 text, multibase otherwise.
fn spelled_bytes(text: &str) -> Option<Vec<u8>> {
    if text.len() == 46 && text.starts_with("Qm") {
        return Base::Base58Btc.decode(text).ok();
    }
    cid::multibase::decode(text).ok().map(|(_, bytes)| bytes)
}

// ---------------------------------------------------------------------------------------------
// Multiaddrs

fn ip4() -> BoxedStrategy<[u8; 4]> {
    prop_oneof![
        any::<[u8; 4]>(),
        select(vec![
            [127, 0, 0, 1],
            [10, 1, 2, 3],
            [192, 168, 1, 1],
            [172, 16, 0, 9],
            [100, 64, 1, 1],
            [169, 254, 0, 1],
            [0, 0, 0, 0],
            [255, 255, 255, 255],
            [203, 0, 113, 7],
            [8, 8, 8, 8],
        ]),
    ]
    .boxed()
}

fn ip6() -> BoxedStrategy<[u16; 8]> {
    prop_oneof![
        any::<[u16; 8]>(),
        select(vec![
            [0, 0, 0, 0, 0, 0, 0, 1],
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0xfe80, 0, 0, 0, 0, 0, 0, 1],
            [0xfd00, 0, 0, 0, 0, 0, 0, 1],
            [0, 0, 0, 0, 0, 0xffff, 0x7f00, 1],
            [0, 0, 0, 0, 0, 0xffff, 0x0808, 0x0808],
            [0x2001, 0x0db8, 0, 0, 0, 0, 0, 1],
            [0x2606, 0x4700, 0, 0, 0, 0, 0, 1],
        ]),
    ]
    .boxed()
}

/// A peer id from random bytes: a sha2-256 multihash or an inlined (identity) key.
fn peer_id() -> BoxedStrategy<PeerId> {
    let sha = prop::collection::vec(any::<u8>(), 32).prop_map(|digest| (0x12, digest));
    let inline = prop::collection::vec(any::<u8>(), 0..=42).prop_map(|key| (0x00, key));
    prop_oneof![sha, inline]
        .prop_map(|(code, bytes)| {
            let hash = multiaddr::multihash::Multihash::<64>::wrap(code, &bytes).expect("fits");
            PeerId::from_multihash(hash).expect("sha2-256 or a short identity hash")
        })
        .boxed()
}

/// A parseable multiaddr: an IP or DNS host, a transport, and sometimes a `/p2p/` peer.
fn multiaddr_text() -> BoxedStrategy<String> {
    let host = prop_oneof![
        ip4().prop_map(|o| Protocol::Ip4(o.into())),
        ip6().prop_map(|s| Protocol::Ip6(s.into())),
        "[a-z]{1,8}\\.example".prop_map(|name| Protocol::Dns4(name.into())),
    ];
    let transport = prop_oneof![
        any::<u16>().prop_map(|port| vec![Protocol::Tcp(port)]),
        any::<u16>().prop_map(|port| vec![Protocol::Udp(port), Protocol::QuicV1]),
    ];
    (host, transport, prop::option::weighted(0.8, peer_id()))
        .prop_map(|(host, transport, peer)| {
            let mut address = Multiaddr::empty().with(host);
            for protocol in transport {
                address.push(protocol);
            }
            if let Some(peer) = peer {
                address.push(Protocol::P2p(peer));
            }
            address.to_string()
        })
        .boxed()
}

/// Slash-separated protocol names and values that are mostly not valid multiaddrs.
fn multiaddr_shaped() -> BoxedStrategy<String> {
    let token = prop_oneof![
        select(vec![
            "ip4",
            "ip6",
            "tcp",
            "udp",
            "dns",
            "dns4",
            "dns6",
            "dnsaddr",
            "p2p",
            "ipfs",
            "quic",
            "quic-v1",
            "ws",
            "wss",
            "tls",
            "noise",
            "onion",
            "onion3",
            "garlic32",
            "garlic64",
            "unix",
            "memory",
            "certhash",
            "webtransport",
            "webrtc-direct",
            "p2p-circuit",
            "sni",
            "http-path",
            "ip6zone",
            "ipcidr",
            "http",
            "https",
        ])
        .prop_map(String::from),
        "[0-9]{1,6}",
        "[0-9a-fA-F:.]{0,40}",
        "[1-9A-Za-z]{0,60}",
        "[a-z2-7=]{0,60}",
        text(12),
    ];
    prop::collection::vec(token, 0..8)
        .prop_map(|tokens| format!("/{}", tokens.join("/")))
        .boxed()
}

fn address() -> BoxedStrategy<String> {
    prop_oneof![
        4 => multiaddr_text(),
        1 => multiaddr_text().prop_map(|a| format!("  {a}\n")),
        1 => multiaddr_text().prop_map(|a| a.replace("/p2p/", "/ipfs/")),
        3 => multiaddr_shaped(),
        1 => text(40),
    ]
    .boxed()
}

/// Addresses with duplicates mixed in (Kubo sends every address it has, repeats included),
/// and now and then more than the sanitizer examines.
fn address_list() -> BoxedStrategy<Vec<String>> {
    let listed = (
        prop::collection::vec(address(), 0..60),
        prop::collection::vec((any::<Index>(), any::<Index>()), 0..20),
    )
        .prop_map(|(mut addresses, copies)| {
            for (from, to) in copies {
                if addresses.is_empty() {
                    break;
                }
                let copy = from.get(&addresses).clone();
                let at = to.index(addresses.len() + 1);
                addresses.insert(at, copy);
            }
            addresses
        });
    let flood = (address(), MAX_ORIGINS_EXAMINED..MAX_ORIGINS_EXAMINED + 50)
        .prop_map(|(address, count)| vec![address; count]);
    prop_oneof![30 => listed, 1 => flood].boxed()
}

fn is_p2p_address(text: &str) -> bool {
    Multiaddr::from_str(text.trim())
        .is_ok_and(|address| matches!(address.iter().last(), Some(Protocol::P2p(_))))
}

// ---------------------------------------------------------------------------------------------
// Envelopes

/// A small pool of texts a record's CID fields are drawn from: every spelling of one generated
/// CID, its canonical form, and near misses.
#[derive(Clone, Debug)]
struct CidPool {
    canonical: String,
    texts: Vec<String>,
}

fn cid_pool() -> BoxedStrategy<CidPool> {
    (generated_cid(), prop::collection::vec(cid_text(), 1..3))
        .prop_map(|(cid, mut noise)| {
            let mut texts = spellings(&cid);
            texts.append(&mut noise);
            CidPool {
                canonical: expected_canonical(&cid),
                texts,
            }
        })
        .boxed()
}

fn pool_cid(pool: &CidPool) -> BoxedStrategy<String> {
    prop_oneof![
        2 => Just(pool.canonical.clone()),
        1 => select(pool.texts.clone()),
    ]
    .boxed()
}

fn owner() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(vec!["alice", "bob", "#all", ""]).prop_map(String::from),
        1 => text(20),
    ]
    .boxed()
}

fn requestid() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(vec!["r-1", "r-2", "s3-0123abcd"]).prop_map(String::from),
        1 => text(20),
    ]
    .boxed()
}

fn node() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(vec!["n0", "n1", "n2"]).prop_map(String::from),
        1 => text(12),
    ]
    .boxed()
}

fn meta() -> BoxedStrategy<BTreeMap<String, String>> {
    let value = prop_oneof![
        4 => text(20),
        1 => (any::<char>(), 0usize..5000).prop_map(|(c, n)| c.to_string().repeat(n)),
    ];
    prop::collection::btree_map(text(12), value, 0..4).boxed()
}

fn pin_requested(pool: &CidPool) -> BoxedStrategy<PinRequested> {
    let replicas = prop_oneof![3 => (1u8..=3, 3u8..=6), 1 => any::<(u8, u8)>()];
    let created = prop_oneof![3 => 1i64..=i64::MAX, 1 => any::<i64>()];
    let replaces = prop::option::weighted(
        0.2,
        (requestid(), pool_cid(pool)).prop_map(|(requestid, cid)| Replaces { requestid, cid }),
    );
    (
        (requestid(), owner(), pool_cid(pool)),
        prop::option::of(text(40)),
        prop::collection::vec(address(), 0..6),
        meta(),
        (created, replicas, replaces),
    )
        .prop_map(
            |((requestid, owner, cid), name, origins, meta, (created_ns, (min, max), replaces))| {
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

/// Any event variant with arbitrary field values, CID fields drawn from `pool`.
fn event(pool: &CidPool) -> BoxedStrategy<Event> {
    let target = prop_oneof![0u8..=70, any::<u8>()];
    let regions = prop::collection::vec(text(8), 0..20);
    prop_oneof![
        3 => pin_requested(pool).prop_map(Event::PinRequested),
        1 => (requestid(), requestid())
            .prop_map(|(requestid, replaced_by)| Event::PinReplaced { requestid, replaced_by }),
        1 => requestid().prop_map(|requestid| Event::ReplaceSettled { requestid }),
        2 => (requestid(), owner())
            .prop_map(|(requestid, owner)| Event::UnpinRequested { requestid, owner }),
        1 => (prop::collection::vec(node(), 0..5), any::<u8>())
            .prop_map(|(nodes, target)| Event::ReplicasAllocated { nodes, target }),
        1 => (node(), prop::collection::vec(address(), 0..25), any::<u32>(), any::<u64>()).prop_map(
            |(node, delegates, attempts, duration_ms)| Event::ReplicaPinned {
                node,
                delegates,
                attempts,
                duration_ms,
            }
        ),
        1 => (node(), text(30), any::<u32>())
            .prop_map(|(node, reason, attempts)| Event::ReplicaFailed { node, reason, attempts }),
        1 => node().prop_map(|node| Event::ReplicaUnpinned { node }),
        1 => (node(), text(30)).prop_map(|(node, reason)| Event::ReplicaMissing { node, reason }),
        1 => node().prop_map(|node| Event::UnknownPinRemoved { node }),
        1 => requestid().prop_map(|requestid| Event::PinRecoverRequested { requestid }),
        1 => (target, regions, text(30)).prop_map(|(replicas, preferred_regions, reason)| {
            Event::TargetChanged {
                replicas,
                preferred_regions,
                reason,
            }
        }),
        1 => (node(), text(30), text(8), any::<u32>()).prop_map(|(id, rpc_url, region, weight)| {
            Event::NodeRegistered(NodeDescriptor {
                id,
                rpc_url,
                region,
                weight,
            })
        }),
        1 => (node(), 0..4usize, text(30)).prop_map(|(node, state, reason)| {
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
        1 => (node(), text(30)).prop_map(|(node, reason)| Event::NodeRemoved { node, reason }),
    ]
    .boxed()
}

fn envelope_in(pool: &CidPool) -> BoxedStrategy<Envelope> {
    (
        (any::<u16>(), text(36), pool_cid(pool)),
        (any::<i64>(), prop::option::of(text(55))),
        event(pool),
    )
        .prop_map(
            |((schema_version, event_id, key), (timestamp_ns, traceparent), event)| Envelope {
                schema_version,
                event_id,
                key,
                timestamp_ns,
                traceparent,
                event,
            },
        )
        .boxed()
}

fn provenance() -> BoxedStrategy<Provenance> {
    select(vec![Provenance::Internal, Provenance::External]).boxed()
}

fn envelope() -> BoxedStrategy<(Envelope, Provenance)> {
    cid_pool()
        .prop_flat_map(|pool| (envelope_in(&pool), provenance()))
        .boxed()
}

fn fleet() -> PlanContext {
    PlanContext {
        nodes: ["n0", "n1", "n2"]
            .iter()
            .enumerate()
            .map(|(i, id)| NodeView {
                id: id.to_string(),
                region: format!("r{}", i % 2),
                weight: 1,
                healthy: true,
                free_bytes: None,
                state: pinhive_events::NodeState::Up,
            })
            .collect(),
        min_free_bytes: 0,
        dial_private_origins: false,
        ..PlanContext::default()
    }
}

fn node_addresses(node: &str) -> Vec<String> {
    let peer = "12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf";
    vec![
        format!("/ip4/10.0.0.9/tcp/4001/p2p/{peer}"),
        format!("/dns4/n{}.example/tcp/4001/p2p/{peer}", node.len()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Any text is a CID or an `InvalidCid`; an accepted one keeps the trimmed spelling, and its
    /// canonical form is CIDv1 base32 and a fixed point of parsing.
    #[test]
    fn cid_parse_is_total_and_canonical_is_a_fixed_point(text in cid_text()) {
        match Cid::parse(&text) {
            Ok(cid) => {
                prop_assert!(cid.canonical().starts_with('b'), "{text:?} -> {cid:?}");
                prop_assert_eq!(cid.spelling(), text.trim());
                let again = Cid::parse(cid.canonical());
                prop_assert_eq!(again.as_ref().map(Cid::canonical), Ok(cid.canonical()));
            }
            Err(rejection) => {
                prop_assert!(matches!(rejection, Rejection::InvalidCid { .. }), "{rejection:?}");
            }
        }
    }

    /// An accepted text is a bare CID text (the spelling is stored and echoed to clients):
    /// base58btc for a CIDv0, multibase otherwise, decoding to the CID it was accepted as.
    #[test]
    fn an_accepted_cid_text_is_a_bare_cid_text(text in cid_text()) {
        let Ok(cid) = Cid::parse(&text) else {
            return Ok(());
        };
        let decoded = spelled_bytes(cid.spelling())
            .and_then(|bytes| cid::Cid::try_from(bytes.as_slice()).ok());
        prop_assert!(decoded.is_some(), "{:?} is accepted but is not a CID text", cid.spelling());
        let canonical = decoded.map(|d| expected_canonical(&d));
        prop_assert_eq!(canonical.as_deref(), Some(cid.canonical()));
    }

    /// An accepted text has no bytes after its CID: otherwise many texts that are not CIDs
    /// pass for the CID they start with.
    #[test]
    fn an_accepted_cid_text_has_no_bytes_after_its_cid(text in cid_text()) {
        let Ok(cid) = Cid::parse(&text) else {
            return Ok(());
        };
        let bytes = spelled_bytes(cid.spelling()).unwrap_or_default();
        let decoded = cid::Cid::try_from(bytes.as_slice()).map(|d| d.to_bytes().len());
        prop_assert_eq!(decoded.ok(), Some(bytes.len()), "{:?} has bytes after its CID", cid.spelling());
    }

    /// Every spelling of one CID (v0 and v1, five bases, padded with whitespace) has the one
    /// canonical form, and that form decodes to the CIDv1 of the generated CID.
    #[test]
    fn every_spelling_of_a_cid_has_one_canonical_form(cid in generated_cid()) {
        let expected = expected_canonical(&cid);
        for spelling in spellings(&cid) {
            let parsed = Cid::parse(&spelling);
            prop_assert_eq!(parsed.as_ref().map(Cid::canonical), Ok(expected.as_str()), "{}", spelling);
        }
        prop_assert_eq!(cid::Cid::from_str(&expected).ok(), cid.into_v1().ok());
    }

    /// Owner: 1..=128 bytes, not starting with '#', no control characters; else `InvalidOwner`.
    #[test]
    fn owner_parse_is_total(text in text(140)) {
        let valid = !text.is_empty()
            && text.len() <= 128
            && !text.starts_with('#')
            && !text.contains('\0');
        match values::Owner::parse(&text) {
            Ok(owner) => {
                prop_assert!(valid, "{text:?}");
                prop_assert_eq!(owner.as_str(), text.as_str());
            }
            Err(rejection) => {
                prop_assert!(!valid, "{text:?}: {rejection}");
                prop_assert!(matches!(rejection, Rejection::InvalidOwner(_)));
            }
        }
    }

    /// Name: at most 255 characters, no NUL; else `InvalidName`.
    #[test]
    fn pin_name_parse_is_total(text in prop_oneof![text(300), "\\PC{250,260}"]) {
        let valid = text.chars().count() <= 255 && !text.contains('\0');
        match values::PinName::parse(&text) {
            Ok(name) => {
                prop_assert!(valid, "{text:?}");
                prop_assert_eq!(name.into_string(), text);
            }
            Err(rejection) => {
                prop_assert!(!valid, "{text:?}: {rejection}");
                prop_assert!(matches!(rejection, Rejection::InvalidName(_)));
            }
        }
    }

    /// Request id: 1..=128 bytes of A-Z a-z 0-9 - _ . :; else `InvalidRequestId`.
    #[test]
    fn check_requestid_is_total(text in prop_oneof![text(140), "[A-Za-z0-9_.:-]{0,130}"]) {
        let valid = (1..=128).contains(&text.len())
            && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        match values::check_requestid(&text) {
            Ok(()) => prop_assert!(valid, "{text:?}"),
            Err(rejection) => {
                prop_assert!(!valid, "{text:?}: {rejection}");
                prop_assert!(matches!(rejection, Rejection::InvalidRequestId(_)));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Meta: ≤ 1000 entries, keys 1..=256 bytes, values ≤ 4096 bytes, no NUL, ≤ 64 KiB in all;
    /// else `InvalidMeta`.
    #[test]
    fn check_meta_is_total(
        meta in prop_oneof![
            8 => prop::collection::btree_map(
                text(270),
                prop_oneof![
                    text(40),
                    (any::<char>(), 3000usize..4200).prop_map(|(c, n)| c.to_string().repeat(n)),
                ],
                0..24,
            ),
            1 => (995usize..1005).prop_map(|n| (0..n).map(|i| (format!("k{i}"), String::new())).collect::<BTreeMap<_, _>>()),
        ]
    ) {
        let entries_ok = meta.len() <= 1000;
        let each_ok = meta.iter().all(|(k, v)| {
            (1..=256).contains(&k.len()) && v.len() <= 4096 && !k.contains('\0') && !v.contains('\0')
        });
        let total_ok = meta.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() <= 64 * 1024;
        let valid = entries_ok && each_ok && total_ok;
        match values::check_meta(&meta) {
            Ok(()) => prop_assert!(valid),
            Err(rejection) => {
                prop_assert!(!valid, "{rejection}");
                prop_assert!(matches!(rejection, Rejection::InvalidMeta(_)));
            }
        }
    }

    /// Origins are hints: never an error, at most 20 kept, no duplicates, each a parseable
    /// multiaddr ending in `/p2p/<peer>` in its normal spelling; every input is either kept or
    /// counted as dropped, and a valid one is dropped only when 20 are already kept.
    #[test]
    fn sanitize_origins_keeps_a_bounded_unique_list_of_p2p_addresses(origins in address_list()) {
        let sanitized = values::sanitize_origins(&origins);
        prop_assert!(sanitized.kept.len() <= MAX_ORIGINS);
        prop_assert_eq!(sanitized.kept.len() + sanitized.dropped, origins.len());
        for (i, kept) in sanitized.kept.iter().enumerate() {
            prop_assert!(!sanitized.kept[..i].contains(kept), "duplicate {kept}");
            prop_assert!(is_p2p_address(kept), "{kept}");
            let normal = Multiaddr::from_str(kept).ok().map(|a| a.to_string());
            prop_assert_eq!(normal.as_deref(), Some(kept.as_str()));
        }
        if sanitized.kept.len() < MAX_ORIGINS {
            for origin in origins.iter().take(MAX_ORIGINS_EXAMINED).filter(|o| is_p2p_address(o)) {
                let normal = Multiaddr::from_str(origin.trim()).map(|a| a.to_string());
                prop_assert!(sanitized.kept.contains(&normal.unwrap_or_default()), "{origin} dropped");
            }
        }
    }

    /// Delegates: at most `limit`, no duplicates, only parseable inputs, public before private,
    /// and nothing distinct and parseable left out below the limit.
    #[test]
    fn dialable_first_is_bounded_unique_and_public_first(
        addresses in address_list(),
        limit in 0usize..30,
    ) {
        let ordered = values::dialable_first(addresses.clone(), limit);
        prop_assert!(ordered.len() <= limit);
        let mut seen_private = false;
        for (i, address) in ordered.iter().enumerate() {
            prop_assert!(!ordered[..i].contains(address), "duplicate {address}");
            prop_assert!(addresses.contains(address));
            prop_assert!(Multiaddr::from_str(address).is_ok(), "{address}");
            let public = values::is_public_multiaddr(address);
            prop_assert!(!(public && seen_private), "public {address} after a private one");
            seen_private |= !public;
        }
        let mut distinct: Vec<&String> = addresses
            .iter()
            .filter(|a| Multiaddr::from_str(a).is_ok())
            .collect();
        distinct.sort();
        distinct.dedup();
        prop_assert_eq!(ordered.len(), distinct.len().min(limit));
    }

    /// `is_public_multiaddr` answers any text, and only parseable text can be public.
    #[test]
    fn is_public_multiaddr_is_total(text in prop_oneof![address(), text(60)]) {
        if values::is_public_multiaddr(&text) {
            prop_assert!(Multiaddr::from_str(&text).is_ok(), "{text:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Admission answers any record; an external producer gets requests admitted, never
    /// outcomes, placement decisions or node events, and never a replacement.
    #[test]
    fn external_producers_may_only_send_requests((envelope, provenance) in envelope()) {
        let admitted = admit(&envelope, provenance);
        if provenance == Provenance::External {
            if let Ok(event) = &admitted {
                prop_assert!(
                    matches!(
                        event,
                        Event::PinRequested(PinRequested { replaces: None, .. })
                            | Event::UnpinRequested { .. }
                            | Event::TargetChanged { .. }
                    ),
                    "external {} admitted", event.kind()
                );
            }
        }
    }

    /// An admitted pin request is keyed by the canonical form of its CID, echoes the spelling
    /// and carries the sanitized origins.
    #[test]
    fn admitted_pin_requests_are_keyed_by_their_canonical_cid(
        (envelope, provenance) in envelope()
    ) {
        let (Event::PinRequested(sent), Ok(Event::PinRequested(admitted))) =
            (&envelope.event, admit(&envelope, provenance))
        else {
            return Ok(());
        };
        prop_assert_eq!(values::canonical_cid(&admitted.cid), Ok(envelope.key.clone()));
        if provenance == Provenance::External {
            // External requests pass every value check; pinhive's own records were checked at
            // their edge (perhaps by an earlier release) and keep their fields.
            prop_assert_eq!(admitted.cid.as_str(), sent.cid.trim());
            prop_assert_eq!(admitted.origins, values::sanitize_origins(&sent.origins).kept);
        } else {
            prop_assert_eq!(&admitted.cid, &sent.cid);
            prop_assert_eq!(&admitted.origins, &sent.origins);
        }
        if let Some(replaces) = &admitted.replaces {
            prop_assert_eq!(values::canonical_cid(&replaces.cid), Ok(replaces.cid.clone()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The shard's path for every record: admit, check the owner, fold. No admitted sequence
    /// panics the fold, the status, the plan or the delegates.
    #[test]
    fn folding_admitted_records_never_panics(
        records in cid_pool().prop_flat_map(|pool| {
            let records = prop::collection::vec((envelope_in(&pool), provenance()), 0..40);
            (Just(pool.canonical), records)
        })
    ) {
        let (canonical, records) = records;
        let mut state = CidState::new(canonical);
        let mut rows = BTreeMap::new();
        let context = fleet();
        for (offset, (envelope, provenance)) in records.iter().enumerate() {
            let Ok(event) = admit(envelope, *provenance) else {
                continue;
            };
            let pin = named_pin(&event).and_then(|id| rows.get(id)).cloned();
            if check(&event, pin.as_ref()).is_err() {
                continue;
            }
            match state.apply(offset as u64, &event, pin.as_ref()) {
                Some(PinChange::Created(row)) | Some(PinChange::Updated(row)) => {
                    rows.insert(row.record.requestid.clone(), row);
                }
                Some(PinChange::Removed(row)) => {
                    rows.remove(&row.record.requestid);
                }
                None => {}
            }
            let _ = state.view(&node_addresses);
            let _ = state.pin_status();
            let _ = state.pin_info();
            let actions = plan(&state, &context);
            let _ = pinhive_domain::needs_work(&state, &context, &actions);
            let delegates = state.delegates(&node_addresses);
            prop_assert!(delegates.len() <= MAX_ORIGINS);
        }
    }
}
