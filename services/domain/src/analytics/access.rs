//! Admission of access events: the one check every entry path (`POST /access`, the access
//! topic, `pinhive access import`) applies before an event may count.

use pinhive_events::access::{AccessEvent, MAX_REGION_BYTES};

use crate::values::canonical_cid;

/// Why an access event was refused (a 400 on the API, a dead letter on the topic).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessRejection {
    #[error("cid: {0}")]
    Cid(String),
    #[error("region must be 1 to {MAX_REGION_BYTES} printable bytes")]
    Region,
    #[error("ts must be a finite number of seconds since the Unix epoch")]
    Timestamp,
}

/// Checks `event` and returns it with its CID in canonical form. A path below the CID
/// (`<cid>/a/b`) or an `/ipfs/` prefix is reduced to the root CID, which is what pins name.
pub fn admit_access(event: &AccessEvent) -> Result<AccessEvent, AccessRejection> {
    let root = event
        .cid
        .trim_start_matches("/ipfs/")
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let cid =
        canonical_cid(root).map_err(|rejection| AccessRejection::Cid(rejection.to_string()))?;
    let region_ok = !event.region.is_empty()
        && event.region.len() <= MAX_REGION_BYTES
        && event.region.chars().all(|c| !c.is_control());
    if !region_ok {
        return Err(AccessRejection::Region);
    }
    if event.ts.is_some_and(|ts| !ts.is_finite() || ts < 0.0) {
        return Err(AccessRejection::Timestamp);
    }
    Ok(AccessEvent {
        cid,
        ..event.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V0: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

    fn event(cid: &str, region: &str, ts: Option<f64>) -> AccessEvent {
        AccessEvent {
            cid: cid.into(),
            region: region.into(),
            bytes: 10,
            ts,
            size: None,
        }
    }

    #[test]
    fn a_valid_event_gets_the_canonical_cid() {
        let admitted = admit_access(&event(V0, "eu", Some(1.5))).unwrap();
        assert_eq!(admitted.cid, canonical_cid(V0).unwrap());
        assert_eq!(admitted.region, "eu");
    }

    #[test]
    fn a_path_counts_for_its_root_cid() {
        let admitted =
            admit_access(&event(&format!("/ipfs/{V0}/a/b.txt?x=1"), "eu", None)).unwrap();
        assert_eq!(admitted.cid, canonical_cid(V0).unwrap());
    }

    #[test]
    fn bad_cid_region_and_time_are_refused() {
        assert!(matches!(
            admit_access(&event("nope", "eu", None)),
            Err(AccessRejection::Cid(_))
        ));
        assert_eq!(
            admit_access(&event(V0, "", None)),
            Err(AccessRejection::Region)
        );
        assert_eq!(
            admit_access(&event(V0, "e\nu", None)),
            Err(AccessRejection::Region)
        );
        assert_eq!(
            admit_access(&event(V0, &"r".repeat(65), None)),
            Err(AccessRejection::Region)
        );
        assert_eq!(
            admit_access(&event(V0, "eu", Some(f64::NAN))),
            Err(AccessRejection::Timestamp)
        );
        assert_eq!(
            admit_access(&event(V0, "eu", Some(-1.0))),
            Err(AccessRejection::Timestamp)
        );
    }
}
