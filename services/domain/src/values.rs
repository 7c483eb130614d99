//! Typed values of outside input: a value of these types has passed every check, so code that
//! holds one never re-validates. Every entry path (HTTP, Kafka JSON producers, S3 notifications)
//! builds them through the same constructors, so the same input gets the same verdict anywhere.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use cid::multibase::Base;

use crate::command::Rejection;

/// Longest CID text accepted (a CIDv1 with a 64-byte digest is ~110 characters).
pub const MAX_CID_CHARS: usize = 512;
/// The spec's `name` bound.
pub const MAX_NAME_CHARS: usize = 255;
/// The spec's bound on `origins` (and on `delegates`).
pub const MAX_ORIGINS: usize = 20;
/// Origins examined at most; a client sending more gets the first valid ones.
pub const MAX_ORIGINS_EXAMINED: usize = 1000;
pub const MAX_META_ENTRIES: usize = 1000;
pub const MAX_META_KEY_BYTES: usize = 256;
pub const MAX_META_VALUE_BYTES: usize = 4096;
/// Bound on all of `meta` (keys and values), so one pin row stays small on every entry path.
pub const MAX_META_BYTES: usize = 64 * 1024;
pub const MAX_OWNER_BYTES: usize = 128;
pub const MAX_REQUESTID_BYTES: usize = 128;

/// A content identifier. `canonical` (CIDv1, base32 lower case; a CIDv0 becomes its CIDv1
/// `dag-pb` equivalent) is what the log is keyed by, what states, indexes and filters use, and
/// what IPFS nodes are asked to pin. `spelling` is the text the client sent (trimmed), which
/// responses echo: Kubo compares the echoed CID with its own, and a CIDv0 is not byte-equal to
/// its CIDv1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cid {
    canonical: String,
    spelling: String,
}

impl Cid {
    pub fn parse(text: &str) -> Result<Cid, Rejection> {
        let spelling = text.trim();
        let invalid = |reason: String| Rejection::InvalidCid {
            text: spelling.chars().take(64).collect(),
            reason,
        };
        if spelling.is_empty() {
            return Err(invalid("empty".into()));
        }
        if spelling.len() > MAX_CID_CHARS {
            return Err(invalid(format!("longer than {MAX_CID_CHARS} characters")));
        }
        // `cid` also reads `<any text>/ipfs/<cid>`, which would be stored and echoed as is.
        if spelling.contains("/ipfs/") {
            return Err(invalid("a bare CID is expected, not a path".into()));
        }
        let parsed = cid::Cid::from_str(spelling).map_err(|e| invalid(e.to_string()))?;
        // The parser stops after the multihash; bytes after it would make two texts one CID.
        // A bare CIDv0 is base58btc without a multibase prefix; every other form has one.
        let multibase_text = if spelling.len() == 46 && spelling.starts_with("Qm") {
            format!("z{spelling}")
        } else {
            spelling.to_string()
        };
        let (_, bytes) =
            cid::multibase::decode(&multibase_text).map_err(|e| invalid(e.to_string()))?;
        if bytes != parsed.to_bytes() {
            return Err(invalid(format!(
                "{} bytes after the CID",
                bytes.len().saturating_sub(parsed.to_bytes().len())
            )));
        }
        let v1 = parsed.into_v1().map_err(|e| invalid(e.to_string()))?;
        let canonical = v1
            .to_string_of_base(Base::Base32Lower)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Cid {
            canonical,
            spelling: spelling.to_string(),
        })
    }

    /// The canonical text (CIDv1, base32 lower case).
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The text as the client spelled it.
    pub fn spelling(&self) -> &str {
        &self.spelling
    }

    pub fn into_parts(self) -> (String, String) {
        (self.canonical, self.spelling)
    }
}

/// The canonical form of a CID text (see [`Cid`]).
pub fn canonical_cid(text: &str) -> Result<String, Rejection> {
    Cid::parse(text).map(|cid| cid.canonical)
}

/// The owner pins are scoped to (a token's name). Names starting with `#` are reserved for
/// the aggregate counters; NUL separates index key parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner(String);

impl Owner {
    pub fn parse(text: &str) -> Result<Owner, Rejection> {
        let bad = |why: &str| Rejection::InvalidOwner(format!("{why} (owner {:?})", short(text)));
        if text.is_empty() || text.len() > MAX_OWNER_BYTES {
            return Err(bad("owner must be 1..128 bytes"));
        }
        if text.starts_with('#') {
            return Err(bad("owner names starting with '#' are reserved"));
        }
        if text.contains('\0') {
            return Err(bad("owner must not contain NUL"));
        }
        Ok(Owner(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A pin name: at most 255 characters, no NUL (index keys are NUL-separated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinName(String);

impl PinName {
    pub fn parse(text: &str) -> Result<PinName, Rejection> {
        if text.chars().count() > MAX_NAME_CHARS {
            return Err(Rejection::InvalidName(format!(
                "name is longer than {MAX_NAME_CHARS} characters"
            )));
        }
        if text.contains('\0') {
            return Err(Rejection::InvalidName("name must not contain NUL".into()));
        }
        Ok(PinName(text.to_string()))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A request id (a pin's identity). Generated by pinhive for HTTP pins; external producers and
/// the S3 ingester bring their own, so it is checked like any other key part.
pub fn check_requestid(text: &str) -> Result<(), Rejection> {
    if text.is_empty()
        || text.len() > MAX_REQUESTID_BYTES
        || !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(Rejection::InvalidRequestId(short(text)));
    }
    Ok(())
}

/// A request id that names an existing pin (unpin, replace): it was accepted when the pin was
/// made, perhaps under other rules, so only what keeps keys sound is checked.
pub fn check_requestid_reference(text: &str) -> Result<(), Rejection> {
    if text.is_empty() || text.len() > 1024 || text.contains('\0') {
        return Err(Rejection::InvalidRequestId(short(text)));
    }
    Ok(())
}

/// Pin metadata, bounded in entries and bytes.
pub fn check_meta(meta: &BTreeMap<String, String>) -> Result<(), Rejection> {
    if meta.len() > MAX_META_ENTRIES {
        return Err(Rejection::InvalidMeta(format!(
            "meta holds more than {MAX_META_ENTRIES} entries"
        )));
    }
    let mut total = 0usize;
    for (key, value) in meta {
        if key.is_empty() || key.len() > MAX_META_KEY_BYTES {
            return Err(Rejection::InvalidMeta(format!(
                "meta keys must be 1..{MAX_META_KEY_BYTES} bytes ({:?})",
                short(key)
            )));
        }
        if value.len() > MAX_META_VALUE_BYTES {
            return Err(Rejection::InvalidMeta(format!(
                "meta value of {:?} is longer than {MAX_META_VALUE_BYTES} bytes",
                short(key)
            )));
        }
        if key.contains('\0') || value.contains('\0') {
            return Err(Rejection::InvalidMeta("meta must not contain NUL".into()));
        }
        total += key.len() + value.len();
    }
    if total > MAX_META_BYTES {
        return Err(Rejection::InvalidMeta(format!(
            "meta is larger than {MAX_META_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The `meta` key that carries a pin's expiry (Pinning Service API and external producers):
/// an RFC 3339 timestamp with a time zone, e.g. `2026-12-01T00:00:00Z`. A pin whose
/// `meta.expires_at` is due is unpinned (docs/api.md, "Expiry").
pub const META_EXPIRES_AT: &str = "expires_at";

/// A pin's expiry: nanoseconds since the Unix epoch, positive. Built from the RFC 3339 text of
/// `meta.expires_at` (or the admin API's body); written back in UTC with the nanoseconds it
/// has (`to_rfc3339`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expiry(i64);

impl Expiry {
    pub fn parse(text: &str) -> Result<Expiry, Rejection> {
        let bad = |why: String| {
            Rejection::InvalidExpiry(format!(
                "{why} ({META_EXPIRES_AT} {:?}): an RFC 3339 time with a zone is expected, \
                 e.g. 2026-12-01T00:00:00Z",
                short(text)
            ))
        };
        let time = chrono::DateTime::parse_from_rfc3339(text.trim())
            .map_err(|error| bad(error.to_string()))?;
        match time.timestamp_nanos_opt() {
            Some(ns) if ns > 0 => Ok(Expiry(ns)),
            _ => Err(bad("out of range (1970 to 2262)".into())),
        }
    }

    /// An expiry from its nanoseconds (the log's and the store's form).
    pub fn from_ns(ns: i64) -> Result<Expiry, Rejection> {
        if ns <= 0 {
            return Err(Rejection::InvalidExpiry(format!(
                "{ns} is not after the Unix epoch"
            )));
        }
        Ok(Expiry(ns))
    }

    /// The expiry `meta` asks for, if it has the key.
    pub fn of_meta(meta: &BTreeMap<String, String>) -> Result<Option<Expiry>, Rejection> {
        meta.get(META_EXPIRES_AT)
            .map(|text| Expiry::parse(text))
            .transpose()
    }

    /// A request made at `now_ns` may only ask for a later expiry: an expiry in the past is a
    /// mistake the client should hear about (400), not a pin that vanishes at once.
    pub fn check_after(self, now_ns: i64) -> Result<Expiry, Rejection> {
        if self.0 <= now_ns {
            return Err(Rejection::InvalidExpiry(format!(
                "{META_EXPIRES_AT} {} is not in the future",
                self.to_rfc3339()
            )));
        }
        Ok(self)
    }

    pub fn ns(self) -> i64 {
        self.0
    }

    /// UTC, with as many fraction digits as the value needs (`2026-12-01T00:00:00Z`).
    pub fn to_rfc3339(self) -> String {
        chrono::DateTime::from_timestamp_nanos(self.0)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }
}

/// Origins are hints: a client (Kubo's `pin remote add`, its MFS auto-pinning) sends every
/// address its node has. Unparseable ones, ones without a `/p2p/<peer id>`, and duplicates are
/// dropped; the first [`MAX_ORIGINS`] valid ones are kept, in the client's order. Never an
/// error: a pin never fails over its hints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origins {
    pub kept: Vec<String>,
    pub dropped: usize,
}

pub fn sanitize_origins(origins: &[String]) -> Origins {
    let mut kept: Vec<String> = Vec::new();
    let mut dropped = origins.len().saturating_sub(MAX_ORIGINS_EXAMINED);
    for origin in origins.iter().take(MAX_ORIGINS_EXAMINED) {
        let valid = multiaddr::Multiaddr::from_str(origin.trim())
            .ok()
            .filter(|address| matches!(address.iter().last(), Some(multiaddr::Protocol::P2p(_))))
            .map(|address| address.to_string());
        match valid {
            Some(text) if kept.len() < MAX_ORIGINS && !kept.contains(&text) => kept.push(text),
            _ => dropped += 1,
        }
    }
    Origins { kept, dropped }
}

/// True when a multiaddr can be dialled from the public internet: its first IP component is
/// not loopback, private, link-local, shared (CGNAT), unique-local or unspecified. DNS names
/// count as public. Unparseable text is not dialable.
pub fn is_public_multiaddr(text: &str) -> bool {
    let Ok(address) = multiaddr::Multiaddr::from_str(text) else {
        return false;
    };
    for protocol in address.iter() {
        match protocol {
            multiaddr::Protocol::Ip4(ip) => return is_public_v4(ip),
            multiaddr::Protocol::Ip6(ip) => return is_public_v6(ip),
            multiaddr::Protocol::Dns(name)
            | multiaddr::Protocol::Dns4(name)
            | multiaddr::Protocol::Dns6(name)
            | multiaddr::Protocol::Dnsaddr(name) => return is_public_name(&name),
            _ => {}
        }
    }
    false
}

/// A DNS name counts as public unless it names this host or a private zone. (What a name
/// resolves to is not known here; an operator who must be sure keeps `dial_private_origins`
/// off and firewalls the nodes' egress.)
fn is_public_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let private_zones = [
        ".localhost",
        ".local",
        ".internal",
        ".lan",
        ".home.arpa",
        ".test",
    ];
    !(name.is_empty()
        || name == "localhost"
        || !name.contains('.')
        || private_zones.iter().any(|zone| name.ends_with(zone)))
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let shared = ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64; // 100.64.0.0/10
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || ip.octets()[0] == 0
        || ip.octets()[0] >= 240
        || shared)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64: the embedded IPv4 address decides.
        let [a, b] = segments[6].to_be_bytes();
        let [c, d] = segments[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    if ip.is_multicast() {
        return false;
    }
    let first = ip.segments()[0];
    let unique_local = (first & 0xfe00) == 0xfc00;
    let link_local = (first & 0xffc0) == 0xfe80;
    let documentation = first == 0x2001 && ip.segments()[1] == 0x0db8;
    !(ip.is_loopback() || ip.is_unspecified() || unique_local || link_local || documentation)
}

/// Orders addresses for a client to dial: public before private/loopback (a client cut at 20
/// keeps the useful ones), original order otherwise; duplicates and unparseable text removed.
pub fn dialable_first(addresses: impl IntoIterator<Item = String>, limit: usize) -> Vec<String> {
    let mut public = Vec::new();
    let mut private = Vec::new();
    for address in addresses {
        if public.contains(&address) || private.contains(&address) {
            continue;
        }
        if multiaddr::Multiaddr::from_str(&address).is_err() {
            continue;
        }
        if is_public_multiaddr(&address) {
            public.push(address);
        } else {
            private.push(address);
        }
    }
    public.extend(private);
    public.truncate(limit);
    public
}

fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // One raw-leaves CIDv1 in four spellings, and one dag-pb CID as v0 and v1.
    const B32: &str = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    const V0: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

    fn spellings(canonical: &str) -> Vec<String> {
        let cid = cid::Cid::from_str(canonical).unwrap();
        vec![
            cid.to_string_of_base(Base::Base32Lower).unwrap(),
            cid.to_string_of_base(Base::Base32Upper).unwrap(),
            cid.to_string_of_base(Base::Base58Btc).unwrap(),
            cid.to_string_of_base(Base::Base36Lower).unwrap(),
            cid.to_string_of_base(Base::Base36Upper).unwrap(),
            format!("  {canonical}\n"),
        ]
    }

    #[test]
    fn every_spelling_of_a_cid_has_one_canonical_form() {
        for spelling in spellings(B32) {
            let cid = Cid::parse(&spelling).unwrap();
            assert_eq!(cid.canonical(), B32, "{spelling}");
            assert_eq!(cid.spelling(), spelling.trim());
        }
    }

    #[test]
    fn cidv0_becomes_its_cidv1() {
        let v0 = Cid::parse(V0).unwrap();
        let v1 = cid::Cid::from_str(V0).unwrap().into_v1().unwrap();
        assert_eq!(
            v0.canonical(),
            v1.to_string_of_base(Base::Base32Lower).unwrap()
        );
        assert!(v0.canonical().starts_with("bafybei"));
        assert_eq!(v0.spelling(), V0);
        // A CIDv0 in multibase (base58btc with its `z` prefix) is the same CID.
        assert_eq!(
            Cid::parse(&format!("z{V0}")).unwrap().canonical(),
            v0.canonical()
        );
        assert_eq!(
            Cid::parse(v0.canonical()).unwrap().canonical(),
            v0.canonical()
        );
    }

    #[test]
    fn bad_cids_are_rejections() {
        for bad in [
            "",
            "   ",
            "QmNope",
            "bafy",
            "zzzz",
            &"b".repeat(600),
            "Qm\0x",
            &format!("{B32}aaaaaaaa"),
        ] {
            assert!(
                matches!(Cid::parse(bad), Err(Rejection::InvalidCid { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn owners() {
        assert!(Owner::parse("alice").is_ok());
        for bad in ["", "#all", "a\0b", &"x".repeat(129)] {
            assert!(Owner::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_and_meta() {
        assert!(PinName::parse(&"ü".repeat(255)).is_ok());
        assert!(PinName::parse(&"x".repeat(256)).is_err());
        assert!(PinName::parse("a\0b").is_err());
        let ok: BTreeMap<String, String> = [("app".into(), "x".into())].into();
        assert!(check_meta(&ok).is_ok());
        let nul: BTreeMap<String, String> = [("a\0".into(), "x".into())].into();
        assert!(check_meta(&nul).is_err());
        let big: BTreeMap<String, String> = (0..20)
            .map(|i| (format!("k{i}"), "v".repeat(4000)))
            .collect();
        assert!(check_meta(&big).is_err(), "over 64 KiB in all");
        let empty_key: BTreeMap<String, String> = [(String::new(), "x".into())].into();
        assert!(check_meta(&empty_key).is_err());
    }

    #[test]
    fn expiries() {
        let at = Expiry::parse("2026-12-01T00:00:00Z").unwrap();
        assert_eq!(at.ns(), 1_796_083_200_000_000_000);
        assert_eq!(at.to_rfc3339(), "2026-12-01T00:00:00Z");
        // Any zone, any precision; written back in UTC.
        let zoned = Expiry::parse(" 2026-12-01T01:00:00.5+01:00 ").unwrap();
        assert_eq!(zoned.ns(), at.ns() + 500_000_000);
        assert_eq!(zoned.to_rfc3339(), "2026-12-01T00:00:00.500Z");
        assert_eq!(Expiry::parse(&zoned.to_rfc3339()).unwrap(), zoned);
        for bad in [
            "",
            "tomorrow",
            "2026-12-01",
            "2026-12-01T00:00:00",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00Z",
            "2300-01-01T00:00:00Z",
            "2026-13-01T00:00:00Z",
        ] {
            assert!(
                matches!(Expiry::parse(bad), Err(Rejection::InvalidExpiry(_))),
                "{bad:?}"
            );
        }
        let meta: BTreeMap<String, String> =
            [(META_EXPIRES_AT.into(), "2026-12-01T00:00:00Z".into())].into();
        assert_eq!(Expiry::of_meta(&meta).unwrap(), Some(at));
        assert_eq!(Expiry::of_meta(&BTreeMap::new()).unwrap(), None);
        assert!(at.check_after(at.ns() - 1).is_ok());
        assert!(at.check_after(at.ns()).is_err(), "not in the future");
        assert!(Expiry::from_ns(0).is_err());
    }

    #[test]
    fn request_ids() {
        assert!(check_requestid("0191a2b3-0000-4000-8000-000000000000").is_ok());
        assert!(check_requestid("s3-0123abcd").is_ok());
        for bad in ["", "a b", "a\0", "ä", &"r".repeat(129)] {
            assert!(check_requestid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn origins_are_hints_never_errors() {
        let peer = "12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf";
        let mut origins = vec![
            "garbage".to_string(),
            format!("/ip4/203.0.113.1/tcp/4001/p2p/{peer}"),
            format!("/ip4/203.0.113.1/tcp/4001/p2p/{peer}"),
            "/ip4/203.0.113.1/tcp/4001".to_string(),
            format!("/ip6/::1/tcp/4001/p2p/{peer}"),
        ];
        for port in 0..40 {
            origins.push(format!("/ip4/198.51.100.7/udp/{port}/quic-v1/p2p/{peer}"));
        }
        let sanitized = sanitize_origins(&origins);
        assert_eq!(sanitized.kept.len(), MAX_ORIGINS);
        assert_eq!(sanitized.kept[0], origins[1]);
        assert_eq!(sanitized.kept[1], origins[4]);
        assert_eq!(sanitized.dropped, origins.len() - MAX_ORIGINS);
        assert_eq!(sanitize_origins(&[]), Origins::default());
    }

    #[test]
    fn public_addresses_come_first() {
        let ordered = dialable_first(
            [
                "/ip4/127.0.0.1/tcp/4001".to_string(),
                "/ip4/10.1.2.3/tcp/4001".into(),
                "/ip6/fe80::1/tcp/4001".into(),
                "/ip4/203.0.113.9/tcp/4001".into(),
                "/dns4/node.example.com/tcp/443/wss".into(),
                "/ip4/100.64.1.1/tcp/1".into(),
                "/ip4/8.8.8.8/tcp/4001".into(),
                "/ip4/8.8.8.8/tcp/4001".into(),
                "not an address".into(),
            ],
            20,
        );
        assert_eq!(ordered[0], "/dns4/node.example.com/tcp/443/wss");
        assert_eq!(ordered[1], "/ip4/8.8.8.8/tcp/4001");
        assert_eq!(ordered.len(), 7, "{ordered:?}");
        assert!(!is_public_multiaddr("/ip4/192.168.1.1/tcp/1"));
        assert!(!is_public_multiaddr("/ip6/fd00::1/tcp/1"));
        assert!(!is_public_multiaddr("/ip6/::ffff:127.0.0.1/tcp/1"));
        assert!(is_public_multiaddr("/ip6/2606:4700::1/tcp/1"));
        assert!(
            !is_public_multiaddr("/ip6/64:ff9b::a00:1/tcp/1"),
            "NAT64 of 10.0.0.1"
        );
        assert!(!is_public_multiaddr("/ip4/224.0.0.1/udp/1"));
        assert!(!is_public_multiaddr("/ip4/0.1.2.3/tcp/1"));
        for private in ["localhost", "node.local", "db.internal", "intranet"] {
            assert!(
                !is_public_multiaddr(&format!("/dns4/{private}/tcp/1")),
                "{private}"
            );
        }
        assert!(is_public_multiaddr("/dnsaddr/bootstrap.libp2p.io"));
        assert_eq!(dialable_first(ordered.clone(), 2).len(), 2);
    }
}
