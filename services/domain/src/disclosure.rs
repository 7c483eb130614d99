//! What a tenant may learn about a pin: the rules that keep tenants who pin the same CID from
//! seeing each other (docs/security.md, "What a tenant can infer").
//!
//! A CID's state is shared by every pin of it (replicas are deduplicated), so anything derived
//! from it — status, `info`, the CID's journal — is seen by every tenant pinning the CID. The
//! rules here strip what belongs to someone else or to the operator:
//!
//! * failure reasons are a fixed vocabulary ([`failure_category`]): no node id, no raw error of
//!   an IPFS node (which may quote URLs, peer ids or another request's timeout);
//! * a pin's history ([`tenant_event`]) keeps only the events of the pin itself (its request
//!   id) and the CID-wide replica events since the pin was created, each without node ids,
//!   other request ids or raw errors.
//!
//! Admins see the raw events and reasons through the admin routes.

use pinhive_events::Event;
use serde::Serialize;

use crate::rows::PinRow;

/// Fixed reasons a tenant sees for a failed replica (`info.failure`, `replica_failed` in the
/// history). The raw reason stays in the journal for admins.
pub const FAILURE_NOT_FOUND: &str = "content not found on the network (timeout)";
pub const FAILURE_REJECTED: &str = "rejected by the IPFS node (invalid or unsupported content)";
pub const FAILURE_NODE_UNAVAILABLE: &str = "storage node unavailable";
pub const FAILURE_NODE_ERROR: &str = "storage node error";
pub const FAILURE_OTHER: &str = "pin failed";

/// Every reason a tenant can see, most specific first.
pub const FAILURE_VOCABULARY: [&str; 5] = [
    FAILURE_NOT_FOUND,
    FAILURE_REJECTED,
    FAILURE_NODE_UNAVAILABLE,
    FAILURE_NODE_ERROR,
    FAILURE_OTHER,
];

/// The tenant-visible category of a raw replica failure reason. The node drivers write the
/// reason as the IPFS adapter's error (`IpfsError`'s display: "node timed out: …", "node
/// rejected the request: …", "node unreachable: …", "unexpected answer: …"; the ipfs crate's
/// tests pin these prefixes against this function). A reason already in the vocabulary maps
/// to itself.
pub fn failure_category(reason: &str) -> &'static str {
    if let Some(known) = FAILURE_VOCABULARY.iter().find(|known| reason == **known) {
        return known;
    }
    let table: [(&str, &'static str); 4] = [
        ("node timed out", FAILURE_NOT_FOUND),
        ("node rejected the request", FAILURE_REJECTED),
        ("node unreachable", FAILURE_NODE_UNAVAILABLE),
        ("unexpected answer", FAILURE_NODE_ERROR),
    ];
    // The earliest marker decides: the raw text after it may quote anything (another error's
    // wording included).
    table
        .iter()
        .filter_map(|(marker, category)| reason.find(marker).map(|at| (at, *category)))
        .min_by_key(|(at, _)| *at)
        .map(|(_, category)| category)
        .unwrap_or(FAILURE_OTHER)
}

/// `info.failure` from the failed replicas' raw reasons: their categories, each once, in
/// vocabulary order, joined by "; ". `None` when nothing failed.
pub fn public_failure<'a>(reasons: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut seen = [false; FAILURE_VOCABULARY.len()];
    for reason in reasons {
        let category = failure_category(reason);
        if let Some(index) = FAILURE_VOCABULARY.iter().position(|c| *c == category) {
            seen[index] = true;
        }
    }
    let categories: Vec<&str> = FAILURE_VOCABULARY
        .iter()
        .zip(seen)
        .filter(|(_, seen)| *seen)
        .map(|(category, _)| *category)
        .collect();
    (!categories.is_empty()).then(|| categories.join("; "))
}

/// `info.failure` as a tenant may see it, from a stored value that may predate the vocabulary
/// (`"{node}: {raw error}; …"` in rows written by earlier releases): the categories its parts
/// fall in.
pub fn sanitize_failure(stored: &str) -> String {
    public_failure(stored.split("; ")).unwrap_or_else(|| FAILURE_OTHER.to_string())
}

/// One event of a pin's history as its owner sees it (the same JSON shape as the raw event,
/// externally tagged by kind, with fewer fields).
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum TenantEvent {
    PinRequested {
        requestid: String,
        cid: String,
        name: Option<String>,
    },
    PinReplaced {
        requestid: String,
        replaced_by: String,
    },
    ReplaceSettled {
        requestid: String,
    },
    UnpinRequested {
        requestid: String,
    },
    PinExpired {
        requestid: String,
        expires_ns: i64,
    },
    PinExpirySet {
        requestid: String,
        expires_ns: Option<i64>,
    },
    PinRecoverRequested {
        requestid: String,
    },
    /// Replicas placed: how many, not where.
    ReplicasAllocated {
        replicas: usize,
    },
    ReplicaPinned {
        attempts: u32,
        duration_ms: u64,
    },
    ReplicaFailed {
        reason: &'static str,
        attempts: u32,
    },
    ReplicaUnpinned {},
    ReplicaMissing {},
    TargetChanged {
        replicas: u8,
        preferred_regions: Vec<String>,
    },
}

/// What the owner of `pin` may see of one event of its CID's journal (recorded at
/// `timestamp_ns`), or `None`: events naming another pin (a request id not its own, nor the
/// one it replaced), events before the pin existed, node membership and anti-entropy events.
pub fn tenant_event(event: &Event, pin: &PinRow, timestamp_ns: i64) -> Option<TenantEvent> {
    let requestid = pin.record.requestid.as_str();
    let own = |other: &str| other == requestid;
    let since_created = timestamp_ns >= pin.record.created_ns;
    match event {
        Event::PinRequested(request) => {
            own(&request.requestid).then(|| TenantEvent::PinRequested {
                requestid: request.requestid.clone(),
                cid: request.cid.clone(),
                name: request.name.clone(),
            })
        }
        // `replaced_by` is the owner's own new pin: only the owner may replace a pin.
        Event::PinReplaced {
            requestid: r,
            replaced_by,
        } => own(r).then(|| TenantEvent::PinReplaced {
            requestid: r.clone(),
            replaced_by: replaced_by.clone(),
        }),
        // The release of the pin this one replaced (same owner: only the owner replaces).
        Event::ReplaceSettled { requestid: r } => (own(r)
            || pin.replaces.as_ref().is_some_and(|old| old.requestid == *r))
        .then(|| TenantEvent::ReplaceSettled {
            requestid: r.clone(),
        }),
        Event::UnpinRequested { requestid: r, .. } => own(r).then(|| TenantEvent::UnpinRequested {
            requestid: r.clone(),
        }),
        Event::PinExpired {
            requestid: r,
            expires_ns,
        } => own(r).then(|| TenantEvent::PinExpired {
            requestid: r.clone(),
            expires_ns: *expires_ns,
        }),
        Event::PinExpirySet {
            requestid: r,
            expires_ns,
        } => own(r).then(|| TenantEvent::PinExpirySet {
            requestid: r.clone(),
            expires_ns: *expires_ns,
        }),
        Event::PinRecoverRequested { requestid: r } => {
            own(r).then(|| TenantEvent::PinRecoverRequested {
                requestid: r.clone(),
            })
        }
        Event::ReplicasAllocated { nodes, .. } => {
            since_created.then_some(TenantEvent::ReplicasAllocated {
                replicas: nodes.len(),
            })
        }
        Event::ReplicaPinned {
            attempts,
            duration_ms,
            ..
        } => since_created.then_some(TenantEvent::ReplicaPinned {
            attempts: *attempts,
            duration_ms: *duration_ms,
        }),
        Event::ReplicaFailed {
            reason, attempts, ..
        } => since_created.then(|| TenantEvent::ReplicaFailed {
            reason: failure_category(reason),
            attempts: *attempts,
        }),
        Event::ReplicaUnpinned { .. } => since_created.then_some(TenantEvent::ReplicaUnpinned {}),
        Event::ReplicaMissing { .. } => since_created.then_some(TenantEvent::ReplicaMissing {}),
        Event::TargetChanged {
            replicas,
            preferred_regions,
            ..
        } => since_created.then(|| TenantEvent::TargetChanged {
            replicas: *replicas,
            preferred_regions: preferred_regions.clone(),
        }),
        Event::NodeRegistered(_)
        | Event::NodeStatusChanged { .. }
        | Event::NodeRemoved { .. }
        | Event::UnknownPinRemoved { .. } => None,
    }
}

/// Whether an event of the CID's journal belongs in the history of `pin` as an admin sees it:
/// the same selection as [`tenant_event`], unredacted.
pub fn in_history(event: &Event, pin: &PinRow, timestamp_ns: i64) -> bool {
    tenant_event(event, pin, timestamp_ns).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_reasons_map_to_the_vocabulary() {
        let table = [
            ("node timed out: request timed out", FAILURE_NOT_FOUND),
            (
                "node rejected the request: invalid path \"x\"",
                FAILURE_REJECTED,
            ),
            (
                "node unreachable: error sending request for url (http://u:p@10.0.0.7:5001/api/v0/pin/add)",
                FAILURE_NODE_UNAVAILABLE,
            ),
            ("unexpected answer: <html>", FAILURE_NODE_ERROR),
            ("something new", FAILURE_OTHER),
            ("", FAILURE_OTHER),
        ];
        for (raw, category) in table {
            assert_eq!(failure_category(raw), category, "{raw}");
        }
        for known in FAILURE_VOCABULARY {
            assert_eq!(failure_category(known), known);
        }
    }

    #[test]
    fn info_failure_names_each_category_once_without_nodes() {
        let reasons = [
            "node timed out: a",
            "node unreachable: b",
            "node timed out: c",
        ];
        assert_eq!(
            public_failure(reasons).as_deref(),
            Some("content not found on the network (timeout); storage node unavailable")
        );
        assert_eq!(public_failure(Vec::<&str>::new()), None);
        // Rows of earlier releases carry "{node}: {raw}; …".
        let stored = "ipfs-a: node timed out: request timed out; n1: node rejected the request: x";
        let clean = sanitize_failure(stored);
        assert_eq!(clean, format!("{FAILURE_NOT_FOUND}; {FAILURE_REJECTED}"));
        assert!(!clean.contains("ipfs-a") && !clean.contains("n1"));
        // Sanitizing is idempotent.
        assert_eq!(sanitize_failure(&clean), clean);
    }

    fn requested(requestid: &str) -> pinhive_events::PinRequested {
        pinhive_events::PinRequested {
            requestid: requestid.into(),
            owner: "alice".into(),
            cid: "bafy".into(),
            name: Some("n".into()),
            origins: vec![],
            meta: Default::default(),
            created_ns: 10,
            replicas_min: 1,
            replicas_max: 3,
            replaces: None,
        }
    }

    fn request(requestid: &str) -> Event {
        Event::PinRequested(requested(requestid))
    }

    #[test]
    fn history_keeps_own_events_and_redacted_cid_events_since_creation() {
        let mine = "r-mine";
        let mut own = requested(mine);
        own.created_ns = 100;
        own.replaces = Some(pinhive_events::Replaces {
            requestid: "r-replaced".into(),
            cid: "bafy-old".into(),
        });
        let pin = PinRow::new(&own, 0);
        let view = |event: &Event, at: i64| tenant_event(event, &pin, at);
        // Another pin's events never appear, whenever they happened.
        for other in [
            request("r-other"),
            Event::UnpinRequested {
                requestid: "r-other".into(),
                owner: "bob".into(),
            },
            Event::PinRecoverRequested {
                requestid: "r-other".into(),
            },
            Event::PinExpirySet {
                requestid: "r-other".into(),
                expires_ns: Some(5),
            },
            Event::ReplaceSettled {
                requestid: "r-other".into(),
            },
        ] {
            assert_eq!(view(&other, 200), None, "{other:?}");
        }
        assert!(matches!(
            view(&request(mine), 100),
            Some(TenantEvent::PinRequested { .. })
        ));
        let failed = Event::ReplicaFailed {
            node: "ipfs-secret-node".into(),
            reason: "node timed out: http://user:pw@10.1.1.1:5001".into(),
            attempts: 4,
        };
        // CID-wide events before the pin existed are someone else's story.
        assert_eq!(view(&failed, 99), None);
        let shown = view(&failed, 150).expect("shown after creation");
        let json = serde_json::to_string(&shown).unwrap();
        assert_eq!(
            json,
            r#"{"replica_failed":{"reason":"content not found on the network (timeout)","attempts":4}}"#
        );
        let allocated = Event::ReplicasAllocated {
            nodes: vec!["n1".into(), "n2".into()],
            target: 2,
        };
        assert_eq!(
            view(&allocated, 150),
            Some(TenantEvent::ReplicasAllocated { replicas: 2 })
        );
        assert_eq!(
            view(&Event::UnknownPinRemoved { node: "n1".into() }, 150),
            None
        );
        // The release of the pin it replaced is its own story.
        let settled = Event::ReplaceSettled {
            requestid: "r-replaced".into(),
        };
        assert!(view(&settled, 150).is_some());
        assert!(in_history(&allocated, &pin, 150));
        assert!(!in_history(&request("r-other"), &pin, 150));
    }
}
