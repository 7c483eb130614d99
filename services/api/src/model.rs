//! Wire types of the Pinning Service API and the validation that turns requests into
//! preconditions-in-types ([`ValidatedPin`], [`PinQuery`]).

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use pinhive_domain::{PinRecord, PinStatus};
use pinhive_store::{NameMatch, PinQuery};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

pub const MAX_NAME_CHARS: usize = 255;
pub const MAX_ORIGINS: usize = 20;
pub const MAX_META_ENTRIES: usize = 1000;
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

/// A pin request whose every field has been checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedPin {
    pub cid: String,
    pub name: Option<String>,
    pub origins: Vec<String>,
    pub meta: BTreeMap<String, String>,
}

/// Parses a CID (v0 or v1) with the `cid` crate; the original text is kept as given.
pub fn validate_cid(text: &str) -> Result<String, ApiError> {
    let text = text.trim();
    cid::Cid::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("invalid cid {text:?}: {e}")))?;
    Ok(text.to_string())
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!(
            "name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if name.contains('\0') {
        return Err(ApiError::bad_request("name must not contain NUL"));
    }
    Ok(())
}

fn validate_origin(origin: &str) -> Result<(), ApiError> {
    let address = multiaddr::Multiaddr::from_str(origin)
        .map_err(|e| ApiError::bad_request(format!("invalid origin multiaddr {origin:?}: {e}")))?;
    match address.iter().last() {
        Some(multiaddr::Protocol::P2p(_)) => Ok(()),
        _ => Err(ApiError::bad_request(format!(
            "origin {origin:?} must end with /p2p/<peer id>"
        ))),
    }
}

impl PinBody {
    pub fn validate(self) -> Result<ValidatedPin, ApiError> {
        let cid = validate_cid(&self.cid)?;
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        let origins = self.origins.unwrap_or_default();
        if origins.len() > MAX_ORIGINS {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_ORIGINS} origins are accepted"
            )));
        }
        for origin in &origins {
            validate_origin(origin)?;
        }
        let mut unique = origins.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != origins.len() {
            return Err(ApiError::bad_request("origins must be unique"));
        }
        let meta = self.meta.unwrap_or_default();
        if meta.len() > MAX_META_ENTRIES {
            return Err(ApiError::bad_request(format!(
                "meta holds more than {MAX_META_ENTRIES} entries"
            )));
        }
        Ok(ValidatedPin {
            cid,
            name: self.name,
            origins,
            meta,
        })
    }
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

/// Renders a pin row. `fallback_delegates` are used while no replica holds the pin yet (the
/// spec requires at least one delegate: the nodes that will receive the data).
pub fn pin_status_json(pin: PinRecord, fallback_delegates: &[String]) -> PinStatusJson {
    let delegates = if pin.delegates.is_empty() {
        fallback_delegates.iter().take(20).cloned().collect()
    } else {
        pin.delegates.into_iter().take(20).collect()
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
        info: pin.info,
    }
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

/// Builds the listing query from `GET /pins` parameters (defaults per the spec: status
/// `pinned`, limit 10, match `exact`).
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
    for (key, value) in params {
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
                        "at most {MAX_CIDS_PER_QUERY} cids per query"
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
                let mut statuses = Vec::new();
                for text in split_list(value) {
                    let status = PinStatus::parse(text).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "status must be queued, pinning, pinned or failed, not {text:?}"
                        ))
                    })?;
                    if !statuses.contains(&status) {
                        statuses.push(status);
                    }
                }
                if statuses.is_empty() {
                    return Err(ApiError::bad_request("status must not be empty"));
                }
                query.statuses = statuses;
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
    fn validates_pin_bodies() {
        let ok = PinBody {
            cid: V0.into(),
            name: Some("ü".repeat(255)),
            origins: Some(vec![
                "/ip4/203.0.113.1/tcp/4001/p2p/QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
                    .into(),
            ]),
            meta: None,
        };
        assert!(ok.validate().is_ok());
        let bad_origin = PinBody {
            cid: V1.into(),
            name: None,
            origins: Some(vec!["/ip4/203.0.113.1/tcp/4001".into()]),
            meta: None,
        };
        assert!(bad_origin.validate().is_err());
        let long_name = PinBody {
            cid: V1.into(),
            name: Some("x".repeat(256)),
            origins: None,
            meta: None,
        };
        assert!(long_name.validate().is_err());
        let bad_cid = PinBody {
            cid: "QmNope".into(),
            name: None,
            origins: None,
            meta: None,
        };
        assert!(bad_cid.validate().is_err());
    }

    #[test]
    fn created_round_trips_with_nanoseconds() {
        let ns = 1_700_000_000_123_456_789;
        let text = format_created(ns);
        assert_eq!(parse_time("before", &text).unwrap(), ns);
    }
}
