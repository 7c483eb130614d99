//! Wire types of the Pinning Service API and the parsing that turns requests into
//! preconditions-in-types (the domain's [`PinCommand`], the store's [`PinQuery`]).

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use pinhive_domain::command::ReplicaBounds;
use pinhive_domain::values::PinName;
use pinhive_domain::{PinCommand, PinRecord, PinStatus, RawPin};
use pinhive_store::{NameMatch, PinQuery};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

pub use pinhive_domain::values::{MAX_NAME_CHARS, MAX_ORIGINS};
pub const MAX_CIDS_PER_QUERY: usize = 10;

/// The spec's `Pin` object as clients send it.
#[derive(Deserialize, Debug)]
pub struct PinBody {
    pub cid: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub origins: Option<Vec<String>>,
    #[serde(default)]
    pub meta: Option<BTreeMap<String, String>>,
}

impl PinBody {
    /// Checks every field through the domain's typed values (the same checks the shard applies
    /// to external producers' records). Origins are hints: invalid, duplicate and surplus ones
    /// are dropped, never an error.
    pub fn into_command(
        self,
        owner: &str,
        replicas: ReplicaBounds,
    ) -> Result<PinCommand, ApiError> {
        let raw = RawPin {
            cid: self.cid,
            name: self.name,
            origins: self.origins.unwrap_or_default(),
            meta: self.meta.unwrap_or_default(),
        };
        Ok(PinCommand::new(raw, owner, replicas)?)
    }
}

/// Parses a CID (v0 or v1, any multibase) and returns its canonical form (CIDv1, base32), the
/// form the `cid` filter compares.
pub fn validate_cid(text: &str) -> Result<String, ApiError> {
    Ok(pinhive_domain::canonical_cid(text)?)
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    PinName::parse(name)?;
    Ok(())
}

#[derive(Serialize, Debug)]
pub struct PinJson {
    pub cid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub origins: Vec<String>,
    pub meta: BTreeMap<String, String>,
}

/// The spec's `PinStatus` object.
#[derive(Serialize, Debug)]
pub struct PinStatusJson {
    pub requestid: String,
    pub status: PinStatus,
    pub created: String,
    pub pin: PinJson,
    pub delegates: Vec<String>,
    pub info: BTreeMap<String, String>,
}

#[derive(Serialize, Debug)]
pub struct PinResultsJson {
    pub count: u64,
    pub results: Vec<PinStatusJson>,
}

pub fn format_created(created_ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(created_ns).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Renders a pin row. The row's `delegates` (holders, then allocated nodes, public addresses
/// first) are used when it has any; `fallback_delegates` (the best candidate node for the CID)
/// while nothing is allocated yet, since the spec wants at least one.
pub fn pin_status_json(pin: PinRecord, fallback_delegates: &[String]) -> PinStatusJson {
    let delegates = if pin.delegates.is_empty() {
        fallback_delegates
            .iter()
            .take(MAX_ORIGINS)
            .cloned()
            .collect()
    } else {
        pin.delegates.into_iter().take(MAX_ORIGINS).collect()
    };
    PinStatusJson {
        requestid: pin.requestid,
        status: pin.status,
        created: format_created(pin.created_ns),
        pin: PinJson {
            cid: pin.cid,
            name: pin.name,
            origins: pin.origins,
            meta: pin.meta,
        },
        delegates,
        info: tenant_info(pin.info),
    }
}

/// `info` as every tenant pinning the CID may see it: a `failure` written by an earlier
/// release (`"{node}: {raw error}"`) shows as its categories
/// ([`pinhive_domain::disclosure::sanitize_failure`]); current rows already hold them.
fn tenant_info(mut info: BTreeMap<String, String>) -> BTreeMap<String, String> {
    if let Some(failure) = info.get_mut("failure") {
        *failure = pinhive_domain::disclosure::sanitize_failure(failure);
    }
    info
}

fn parse_time(name: &str, text: &str) -> Result<i64, ApiError> {
    let time = DateTime::parse_from_rfc3339(text)
        .map_err(|e| ApiError::bad_request(format!("{name} must be an RFC 3339 timestamp: {e}")))?;
    time.timestamp_nanos_opt()
        .ok_or_else(|| ApiError::bad_request(format!("{name} is out of range")))
}

fn split_list(text: &str) -> Vec<&str> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// `GET /pins` parameters that take one value: a second occurrence is a 400 rather than
/// silently replacing the first. `cid` and `status` are lists: their occurrences (each
/// itself comma-separated) are joined, still at most [`MAX_CIDS_PER_QUERY`] distinct CIDs.
const SINGLE_VALUED_PARAMS: [&str; 6] = ["name", "match", "before", "after", "limit", "meta"];

/// Builds the listing query from `GET /pins` parameters (defaults per the spec: status
/// `pinned`, limit 10, match `exact`). Unknown parameters are ignored.
pub fn parse_list_query(owner: &str, params: &[(String, String)]) -> Result<PinQuery, ApiError> {
    let mut query = PinQuery {
        owner: owner.to_string(),
        cids: Vec::new(),
        name: None,
        statuses: vec![PinStatus::Pinned],
        before_ns: None,
        after_ns: None,
        meta: BTreeMap::new(),
        limit: 10,
    };
    let mut name: Option<String> = None;
    let mut strategy = NameMatch::Exact;
    let mut statuses: Vec<PinStatus> = Vec::new();
    let mut seen_single: Vec<&str> = Vec::new();
    for (key, value) in params {
        if let Some(single) = SINGLE_VALUED_PARAMS.iter().find(|p| **p == key.as_str()) {
            if seen_single.contains(single) {
                return Err(ApiError::bad_request(format!(
                    "{single} is given more than once; it takes a single value"
                )));
            }
            seen_single.push(single);
        }
        match key.as_str() {
            "cid" => {
                for cid in split_list(value) {
                    let cid = validate_cid(cid)?;
                    if !query.cids.contains(&cid) {
                        query.cids.push(cid);
                    }
                }
                if query.cids.len() > MAX_CIDS_PER_QUERY {
                    return Err(ApiError::bad_request(format!(
                        "at most {MAX_CIDS_PER_QUERY} distinct cids per query, over every cid parameter"
                    )));
                }
            }
            "name" => {
                validate_name(value)?;
                name = Some(value.clone());
            }
            "match" => {
                strategy = NameMatch::parse(value).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "match must be exact, iexact, partial or ipartial, not {value:?}"
                    ))
                })?;
            }
            "status" => {
                let texts = split_list(value);
                if texts.is_empty() {
                    return Err(ApiError::bad_request("status must not be empty"));
                }
                for text in texts {
                    let status = PinStatus::parse(text).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "status must be queued, pinning, pinned or failed, not {text:?}"
                        ))
                    })?;
                    if !statuses.contains(&status) {
                        statuses.push(status);
                    }
                }
            }
            "before" => query.before_ns = Some(parse_time("before", value)?),
            "after" => query.after_ns = Some(parse_time("after", value)?),
            "limit" => {
                let limit: i64 = value.parse().map_err(|_| {
                    ApiError::bad_request(format!("limit must be an integer, not {value:?}"))
                })?;
                if !(1..=1000).contains(&limit) {
                    return Err(ApiError::bad_request("limit must be between 1 and 1000"));
                }
                query.limit = limit as usize;
            }
            "meta" => {
                query.meta =
                    serde_json::from_str::<BTreeMap<String, String>>(value).map_err(|e| {
                        ApiError::bad_request(format!(
                            "meta must be a JSON object of string values: {e}"
                        ))
                    })?;
            }
            _ => {}
        }
    }
    if !statuses.is_empty() {
        query.statuses = statuses;
    }
    if let Some(name) = name {
        if !name.is_empty() {
            query.name = Some((name, strategy));
        }
    }
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const V0: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
    const V1: &str = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";

    #[test]
    fn defaults_follow_the_spec() {
        let q = parse_list_query("o", &[]).unwrap();
        assert_eq!(q.statuses, vec![PinStatus::Pinned]);
        assert_eq!(q.limit, 10);
        assert!(q.is_status_only());
    }

    #[test]
    fn parses_every_filter() {
        let q = parse_list_query(
            "o",
            &params(&[
                ("cid", &format!("{V0},{V1}")),
                ("name", "x"),
                ("match", "ipartial"),
                ("status", "queued,failed"),
                ("before", "2024-01-01T00:00:00.5Z"),
                ("after", "2023-01-01T00:00:00Z"),
                ("limit", "1000"),
                ("meta", r#"{"app":"a"}"#),
            ]),
        )
        .unwrap();
        assert_eq!(q.cids.len(), 2);
        assert_eq!(q.name, Some(("x".into(), NameMatch::IPartial)));
        assert_eq!(q.statuses, vec![PinStatus::Queued, PinStatus::Failed]);
        assert_eq!(q.before_ns, Some(1_704_067_200_500_000_000));
        assert_eq!(q.limit, 1000);
        assert_eq!(q.meta.get("app").map(String::as_str), Some("a"));
    }

    #[test]
    fn rejects_bad_parameters() {
        for bad in [
            ("limit", "0"),
            ("limit", "1001"),
            ("limit", "ten"),
            ("status", "done"),
            ("match", "fuzzy"),
            ("cid", "not-a-cid"),
            ("before", "yesterday"),
            ("meta", "{\"a\":1}"),
            ("meta", "[1]"),
        ] {
            assert!(parse_list_query("o", &params(&[bad])).is_err(), "{bad:?}");
        }
        let eleven = [V1; 11].join(",");
        // Duplicates collapse; eleven distinct CIDs are needed to exceed the bound.
        assert!(parse_list_query("o", &params(&[("cid", &eleven)])).is_ok());
        let long = "n".repeat(256);
        assert!(parse_list_query("o", &params(&[("name", &long)])).is_err());
    }

    #[test]
    fn repeated_list_parameters_combine() {
        let q = parse_list_query(
            "o",
            &params(&[
                ("status", "pinned"),
                ("status", "failed,pinned"),
                ("status", "queued"),
                ("cid", V0),
                ("cid", &format!("{V1},{V0}")),
            ]),
        )
        .unwrap();
        assert_eq!(
            q.statuses,
            vec![PinStatus::Pinned, PinStatus::Failed, PinStatus::Queued]
        );
        let canonical = |cid| validate_cid(cid).unwrap();
        assert_eq!(q.cids, vec![canonical(V0), canonical(V1)]);
        // An empty occurrence is still an error, even next to a valid one.
        let empty = params(&[("status", "pinned"), ("status", "")]);
        assert!(parse_list_query("o", &empty).is_err());
    }

    #[test]
    fn repeated_cids_stay_bounded() {
        // Eleven distinct CIDs spread over two parameters exceed the bound.
        let distinct: Vec<String> = (0u8..11)
            .map(|i| {
                let digest = cid::multihash::Multihash::<64>::wrap(0x12, &[i; 32]).unwrap();
                cid::Cid::new_v1(0x55, digest).to_string()
            })
            .collect();
        let (first, second) = distinct.split_at(6);
        let split = params(&[("cid", &first.join(",")), ("cid", &second.join(","))]);
        let error = parse_list_query("o", &split).unwrap_err();
        assert!(error.details.contains("at most 10"), "{error}");
        let ten = params(&[("cid", &first.join(",")), ("cid", &second[..4].join(","))]);
        assert_eq!(parse_list_query("o", &ten).unwrap().cids.len(), 10);
    }

    #[test]
    fn repeated_single_valued_parameters_are_rejected() {
        for (key, value) in [
            ("name", "x"),
            ("match", "exact"),
            ("before", "2024-01-01T00:00:00Z"),
            ("after", "2023-01-01T00:00:00Z"),
            ("limit", "5"),
            ("meta", r#"{"app":"a"}"#),
        ] {
            // Once is fine; twice is a 400 naming the parameter, even with equal values.
            assert!(
                parse_list_query("o", &params(&[(key, value)])).is_ok(),
                "{key}"
            );
            let twice = params(&[(key, value), ("status", "failed"), (key, value)]);
            let error = parse_list_query("o", &twice).unwrap_err();
            assert_eq!(error.code, crate::error::ErrorCode::BadRequest);
            assert!(
                error
                    .details
                    .starts_with(&format!("{key} is given more than once")),
                "{error}"
            );
        }
        // Unknown parameters, repeated or not, are ignored.
        let unknown = params(&[("page", "1"), ("page", "2")]);
        assert!(parse_list_query("o", &unknown).is_ok());
    }

    #[test]
    fn validates_pin_bodies() {
        let bounds = ReplicaBounds::new(1, 3).unwrap();
        let body = |cid: &str, name: Option<String>, origins: Vec<&str>| PinBody {
            cid: cid.into(),
            name,
            origins: Some(origins.into_iter().map(String::from).collect()),
            meta: None,
        };
        let origin = "/ip4/203.0.113.1/tcp/4001/p2p/QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
        let ok = body(V0, Some("ü".repeat(255)), vec![origin])
            .into_command("alice", bounds)
            .unwrap();
        assert_eq!(ok.cid.spelling(), V0);
        assert!(ok.cid.canonical().starts_with("bafybei"));
        // Origins are hints: a bad one is dropped, the pin is accepted.
        let hints = body(
            V1,
            None,
            vec!["/ip4/203.0.113.1/tcp/4001", "junk", origin, origin],
        )
        .into_command("alice", bounds)
        .unwrap();
        assert_eq!(hints.origins.kept, vec![origin.to_string()]);
        assert_eq!(hints.origins.dropped, 3);
        let long_name = body(V1, Some("x".repeat(256)), vec![]).into_command("alice", bounds);
        assert!(long_name.is_err());
        assert!(body("QmNope", None, vec![])
            .into_command("alice", bounds)
            .is_err());
        assert!(body(V1, None, vec![]).into_command("#all", bounds).is_err());
    }

    #[test]
    fn created_round_trips_with_nanoseconds() {
        let ns = 1_700_000_000_123_456_789;
        let text = format_created(ns);
        assert_eq!(parse_time("before", &text).unwrap(), ns);
    }
}
