//! Commands and admission: the business rules every entry path shares.
//!
//! * [`decide`] turns a command from an edge (HTTP handler, S3 ingester) into the events to
//!   append, keyed by the canonical CID. Every field was checked by the typed values of
//!   [`crate::values`] when the command was built.
//! * [`admit`] is the shard's check of every record it reads from the log, whoever produced it:
//!   the same value checks again (an external Kafka producer skips the HTTP edge), the record
//!   key must be the canonical CID, and external producers (JSON records) may send requests
//!   only, never outcomes.
//! * [`crate::state::check`] is the state-dependent part (the owner of a
//!   pin is the only one who may unpin it).
//!
//! A rejection is a value: the HTTP edge answers 400 with it, the shard dead-letters the record
//! with it as the reason. Nothing here panics on any input.

use std::collections::BTreeMap;

use pinhive_events::{Envelope, Event, PinRequested, Replaces};

use crate::values::{
    check_meta, check_requestid, check_requestid_reference, sanitize_origins, Cid, Expiry, Origins,
    Owner, PinName,
};

/// Most replicas a pin or a target may ask for.
pub const MAX_REPLICAS: u8 = 64;
const MAX_REGIONS: usize = 16;
const MAX_REGION_BYTES: usize = 64;
const MAX_REASON_BYTES: usize = 1024;

/// Why a command or a log record was refused. The text is the reason clients and dead letters
/// show, so it names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("invalid cid {text:?}: {reason}")]
    InvalidCid { text: String, reason: String },
    #[error("record key {key:?} is not the canonical form of its cid: key it by {canonical:?} (CIDv1, base32)")]
    KeyNotCanonical { key: String, canonical: String },
    #[error("invalid owner: {0}")]
    InvalidOwner(String),
    #[error("invalid name: {0}")]
    InvalidName(String),
    #[error("invalid meta: {0}")]
    InvalidMeta(String),
    #[error("invalid expiry: {0}")]
    InvalidExpiry(String),
    #[error("invalid requestid {0:?}: 1..128 characters of A-Z a-z 0-9 - _ . :")]
    InvalidRequestId(String),
    #[error("invalid replica bounds: {0}")]
    InvalidReplicas(String),
    #[error("invalid created time {0}: must be positive nanoseconds since the Unix epoch")]
    InvalidCreated(i64),
    #[error("invalid target: {0}")]
    InvalidTarget(String),
    #[error("{kind} events are produced by pinhive only; external producers may send pin_requested, unpin_requested and target_changed")]
    NotARequest { kind: &'static str },
    #[error(
        "an external pin request cannot replace a pin: replace through POST /pins/{{requestid}}"
    )]
    ReplaceFromOutside,
    #[error("pin {requestid} belongs to another owner")]
    NotOwner { requestid: String },
}

/// Who wrote a log record: pinhive itself (bincode) or an external producer (JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provenance {
    Internal,
    External,
}

/// A pin's replica bounds: 1 ≤ min ≤ max ≤ [`MAX_REPLICAS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaBounds {
    min: u8,
    max: u8,
}

impl ReplicaBounds {
    pub fn new(min: u8, max: u8) -> Result<Self, Rejection> {
        if min == 0 || min > max || max > MAX_REPLICAS {
            return Err(Rejection::InvalidReplicas(format!(
                "need 1 <= replicas_min ({min}) <= replicas_max ({max}) <= {MAX_REPLICAS}"
            )));
        }
        Ok(ReplicaBounds { min, max })
    }

    /// The nearest valid bounds (for configured values that `validate()` already checked).
    pub fn clamped(min: u8, max: u8) -> Self {
        let min = min.clamp(1, MAX_REPLICAS);
        ReplicaBounds {
            min,
            max: max.clamp(min, MAX_REPLICAS),
        }
    }

    pub fn min(self) -> u8 {
        self.min
    }

    pub fn max(self) -> u8 {
        self.max
    }
}

/// The spec's `Pin` object as any edge received it, before checks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawPin {
    pub cid: String,
    pub name: Option<String>,
    pub origins: Vec<String>,
    pub meta: BTreeMap<String, String>,
}

/// A pin whose every field passed its check.
#[derive(Clone, Debug, PartialEq)]
pub struct PinCommand {
    pub cid: Cid,
    pub owner: Owner,
    pub name: Option<PinName>,
    pub origins: Origins,
    pub meta: BTreeMap<String, String>,
    /// `meta.expires_at`, parsed: the pin is unpinned once it is due.
    pub expiry: Option<Expiry>,
    pub replicas: ReplicaBounds,
}

impl PinCommand {
    pub fn new(raw: RawPin, owner: &str, replicas: ReplicaBounds) -> Result<Self, Rejection> {
        let cid = Cid::parse(&raw.cid)?;
        let owner = Owner::parse(owner)?;
        let name = raw.name.as_deref().map(PinName::parse).transpose()?;
        check_meta(&raw.meta)?;
        let expiry = Expiry::of_meta(&raw.meta)?;
        Ok(PinCommand {
            cid,
            owner,
            name,
            origins: sanitize_origins(&raw.origins),
            meta: raw.meta,
            expiry,
            replicas,
        })
    }

    fn into_request(
        self,
        requestid: String,
        created_ns: i64,
        replaces: Option<Replaces>,
    ) -> Result<(String, PinRequested), Rejection> {
        check_requestid(&requestid)?;
        if created_ns <= 0 {
            return Err(Rejection::InvalidCreated(created_ns));
        }
        if let Some(expiry) = self.expiry {
            expiry.check_after(created_ns)?;
        }
        let (canonical, spelling) = self.cid.into_parts();
        Ok((
            canonical,
            PinRequested {
                requestid,
                owner: self.owner.into_string(),
                cid: spelling,
                name: self.name.map(PinName::into_string),
                origins: self.origins.kept,
                meta: self.meta,
                created_ns,
                replicas_min: self.replicas.min(),
                replicas_max: self.replicas.max(),
                replaces,
            },
        ))
    }
}

/// What an edge asks of the system. Request ids and creation times are chosen by the edge
/// (random / clock), since the domain has neither.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Pin {
        pin: PinCommand,
        requestid: String,
        created_ns: i64,
    },
    /// Replace pin `old_requestid` (of `old_cid`, owned by the caller: the edge checked it
    /// against the stored pin) with a new one.
    Replace {
        pin: PinCommand,
        requestid: String,
        created_ns: i64,
        old_requestid: String,
        old_cid: Cid,
    },
    Unpin {
        requestid: String,
        owner: Owner,
        cid: Cid,
    },
    /// Set (`Some`) or clear (`None`) the expiry of pin `requestid` of `cid` (the edge checked
    /// that the caller owns it or is an admin). `now_ns`: the edge's clock; an expiry must be
    /// after it.
    SetExpiry {
        requestid: String,
        cid: Cid,
        expiry: Option<Expiry>,
        now_ns: i64,
    },
}

/// One event to append, with its partition key (the canonical CID).
#[derive(Clone, Debug, PartialEq)]
pub struct Decided {
    pub key: String,
    pub event: Event,
}

/// The events that carry out `command`, in append order.
pub fn decide(command: Command) -> Result<Vec<Decided>, Rejection> {
    match command {
        Command::Pin {
            pin,
            requestid,
            created_ns,
        } => {
            let (key, request) = pin.into_request(requestid, created_ns, None)?;
            Ok(vec![Decided {
                key,
                event: Event::PinRequested(request),
            }])
        }
        Command::Replace {
            pin,
            requestid,
            created_ns,
            old_requestid,
            old_cid,
        } => {
            check_requestid_reference(&old_requestid)?;
            let replaces = Replaces {
                requestid: old_requestid.clone(),
                cid: old_cid.canonical().to_string(),
            };
            let (key, request) = pin.into_request(requestid, created_ns, Some(replaces))?;
            let replaced_by = request.requestid.clone();
            Ok(vec![
                Decided {
                    key,
                    event: Event::PinRequested(request),
                },
                // The old pin leaves the API at once but keeps holding its content until the
                // new pin settles (`ReplaceSettled`), so blocks both share are never collected.
                Decided {
                    key: old_cid.canonical().to_string(),
                    event: Event::PinReplaced {
                        requestid: old_requestid,
                        replaced_by,
                    },
                },
            ])
        }
        Command::Unpin {
            requestid,
            owner,
            cid,
        } => {
            check_requestid_reference(&requestid)?;
            Ok(vec![Decided {
                key: cid.canonical().to_string(),
                event: Event::UnpinRequested {
                    requestid,
                    owner: owner.into_string(),
                },
            }])
        }
        Command::SetExpiry {
            requestid,
            cid,
            expiry,
            now_ns,
        } => {
            check_requestid_reference(&requestid)?;
            let expiry = expiry
                .map(|expiry| expiry.check_after(now_ns))
                .transpose()?;
            Ok(vec![Decided {
                key: cid.canonical().to_string(),
                event: Event::PinExpirySet {
                    requestid,
                    expires_ns: expiry.map(Expiry::ns),
                },
            }])
        }
    }
}

fn check_key(key: &str) -> Result<(), Rejection> {
    let cid = Cid::parse(key)?;
    if cid.canonical() != key {
        return Err(Rejection::KeyNotCanonical {
            key: key.chars().take(128).collect(),
            canonical: cid.canonical().to_string(),
        });
    }
    Ok(())
}

/// What to do with a record pinhive itself wrote before CID keys were canonical (its key is
/// the client's spelling). Only internal records qualify: an external producer must key by the
/// canonical CID.
#[derive(Clone, Debug, PartialEq)]
pub enum Legacy {
    /// Not a legacy record: the key is canonical (or not a CID at all).
    No,
    /// Re-keyed by the canonical CID: the shard forwards it to that key's partition instead of
    /// applying it under a second key (see `ShardActor::forward_legacy` in the orchestrator).
    Forward(Box<Envelope>),
    /// A node outcome for the old spelling: dropped. The forwarded request is planned under
    /// the canonical form, whose own outcomes follow.
    Drop,
}

pub fn legacy(envelope: &Envelope) -> Legacy {
    let Ok(canonical) = crate::values::canonical_cid(&envelope.key) else {
        return Legacy::No;
    };
    if canonical == envelope.key {
        return Legacy::No;
    }
    if matches!(
        envelope.event,
        Event::ReplicaPinned { .. }
            | Event::ReplicaFailed { .. }
            | Event::ReplicaUnpinned { .. }
            | Event::ReplicaMissing { .. }
            | Event::UnknownPinRemoved { .. }
    ) {
        return Legacy::Drop;
    }
    let mut forwarded = envelope.clone();
    forwarded.key = canonical;
    if let Event::PinRequested(request) = &mut forwarded.event {
        if let Some(replaces) = &mut request.replaces {
            if let Ok(cid) = crate::values::canonical_cid(&replaces.cid) {
                replaces.cid = cid;
            }
        }
    }
    Legacy::Forward(Box::new(forwarded))
}

/// Admission of a log record into its shard: returns the event to fold in (a pin request's
/// origins sanitized) or why the record must be dead-lettered.
pub fn admit(envelope: &Envelope, provenance: Provenance) -> Result<Event, Rejection> {
    let external = provenance == Provenance::External;
    match &envelope.event {
        Event::PinRequested(request) if !external => {
            // pinhive's own record: its edge ran every value check when it was written (perhaps
            // by an earlier release with other limits, which must not lose it now). What must
            // hold here is the key: the CID's canonical form, and a canonical `replaces`.
            let cid = Cid::parse(&request.cid)?;
            if cid.canonical() != envelope.key {
                return Err(Rejection::KeyNotCanonical {
                    key: envelope.key.chars().take(128).collect(),
                    canonical: cid.canonical().to_string(),
                });
            }
            let mut admitted = request.clone();
            if let Some(replaces) = &mut admitted.replaces {
                replaces.cid = Cid::parse(&replaces.cid)?.canonical().to_string();
            }
            Ok(Event::PinRequested(admitted))
        }
        Event::PinRequested(request) => {
            if request.replaces.is_some() {
                return Err(Rejection::ReplaceFromOutside);
            }
            let bounds = ReplicaBounds::new(request.replicas_min, request.replicas_max)?;
            let raw = RawPin {
                cid: request.cid.clone(),
                name: request.name.clone(),
                origins: request.origins.clone(),
                meta: request.meta.clone(),
            };
            let pin = PinCommand::new(raw, &request.owner, bounds)?;
            if pin.cid.canonical() != envelope.key {
                return Err(Rejection::KeyNotCanonical {
                    key: envelope.key.chars().take(128).collect(),
                    canonical: pin.cid.canonical().to_string(),
                });
            }
            let (_, admitted) =
                pin.into_request(request.requestid.clone(), request.created_ns, None)?;
            Ok(Event::PinRequested(admitted))
        }
        Event::UnpinRequested { requestid, owner } => {
            check_key(&envelope.key)?;
            check_requestid_reference(requestid)?;
            Owner::parse(owner)?;
            Ok(envelope.event.clone())
        }
        Event::TargetChanged {
            replicas,
            preferred_regions,
            reason,
        } => {
            check_key(&envelope.key)?;
            // 0 clears the target: the CID goes back to its pins' `min`.
            if *replicas > MAX_REPLICAS {
                return Err(Rejection::InvalidTarget(format!(
                    "replicas must be 0 (back to min) ..={MAX_REPLICAS}, not {replicas}"
                )));
            }
            if preferred_regions.len() > MAX_REGIONS
                || preferred_regions
                    .iter()
                    .any(|r| r.is_empty() || r.len() > MAX_REGION_BYTES || r.contains('\0'))
            {
                return Err(Rejection::InvalidTarget(format!(
                    "at most {MAX_REGIONS} preferred regions of 1..{MAX_REGION_BYTES} bytes"
                )));
            }
            if reason.len() > MAX_REASON_BYTES {
                return Err(Rejection::InvalidTarget(format!(
                    "reason is longer than {MAX_REASON_BYTES} bytes"
                )));
            }
            Ok(envelope.event.clone())
        }
        other if external => Err(Rejection::NotARequest { kind: other.kind() }),
        Event::PinExpired { requestid, .. } => {
            check_key(&envelope.key)?;
            check_requestid_reference(requestid)?;
            Ok(envelope.event.clone())
        }
        Event::PinExpirySet {
            requestid,
            expires_ns,
        } => {
            check_key(&envelope.key)?;
            check_requestid_reference(requestid)?;
            if let Some(ns) = expires_ns {
                Expiry::from_ns(*ns)?;
            }
            Ok(envelope.event.clone())
        }
        Event::NodeRegistered(_) | Event::NodeStatusChanged { .. } | Event::NodeRemoved { .. } => {
            Ok(envelope.event.clone())
        }
        Event::PinReplaced { .. }
        | Event::ReplaceSettled { .. }
        | Event::ReplicasAllocated { .. }
        | Event::ReplicaPinned { .. }
        | Event::ReplicaFailed { .. }
        | Event::ReplicaUnpinned { .. }
        | Event::ReplicaMissing { .. }
        | Event::UnknownPinRemoved { .. }
        | Event::PinRecoverRequested { .. } => {
            check_key(&envelope.key)?;
            Ok(envelope.event.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANONICAL: &str = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    const BASE58: &str = "zb2rhk6GMPQF3hfzwXTaNYFLKomMeC6UXdUt6jZKPpeVirLtV";

    fn request() -> PinRequested {
        PinRequested {
            requestid: "r-1".into(),
            owner: "alice".into(),
            cid: BASE58.into(),
            name: Some("n".into()),
            origins: vec!["junk".into()],
            meta: BTreeMap::new(),
            created_ns: 1,
            replicas_min: 1,
            replicas_max: 3,
            replaces: None,
        }
    }

    fn envelope(key: &str, event: Event) -> Envelope {
        Envelope {
            schema_version: pinhive_events::SCHEMA_VERSION,
            event_id: "e".into(),
            key: key.into(),
            timestamp_ns: 1,
            traceparent: None,
            event,
        }
    }

    fn check(key: &str, event: Event, provenance: Provenance) -> Result<Event, String> {
        admit(&envelope(key, event), provenance).map_err(|r| r.to_string())
    }

    #[test]
    fn decide_keys_by_the_canonical_cid_and_echoes_the_spelling() {
        let pin = PinCommand::new(
            RawPin {
                cid: BASE58.into(),
                ..RawPin::default()
            },
            "alice",
            ReplicaBounds::new(1, 2).unwrap(),
        )
        .unwrap();
        let decided = decide(Command::Pin {
            pin,
            requestid: "r-1".into(),
            created_ns: 5,
        })
        .unwrap();
        assert_eq!(decided.len(), 1);
        assert_eq!(decided[0].key, CANONICAL);
        let Event::PinRequested(request) = &decided[0].event else {
            panic!("{decided:?}");
        };
        assert_eq!(request.cid, BASE58);
    }

    #[test]
    fn admission_table() {
        use Provenance::{External, Internal};
        let with = |edit: fn(&mut PinRequested)| {
            let mut r = request();
            edit(&mut r);
            Event::PinRequested(r)
        };
        // One request that replaces a pin and one node outcome, each checked from both sides.
        let replacing = with(|r| {
            r.replaces = Some(Replaces {
                requestid: "old".into(),
                cid: CANONICAL.into(),
            })
        });
        let forged_outcome = Event::ReplicaPinned {
            node: "n".into(),
            delegates: vec![],
            attempts: u32::MAX,
            duration_ms: 1,
        };
        // (key, event, provenance, Ok or the start of the reason)
        let cases: Vec<(&str, Event, Provenance, Result<(), &str>)> = vec![
            (CANONICAL, with(|_| {}), External, Ok(())),
            (BASE58, with(|_| {}), External, Err("record key")),
            (
                CANONICAL,
                with(|r| r.owner = "#all".into()),
                External,
                Err("invalid owner"),
            ),
            (
                CANONICAL,
                with(|r| r.name = Some("a\0b".into())),
                External,
                Err("invalid name"),
            ),
            (
                CANONICAL,
                with(|r| r.cid = "QmNope".into()),
                External,
                Err("invalid cid"),
            ),
            (
                CANONICAL,
                with(|r| r.requestid = "a b".into()),
                External,
                Err("invalid requestid"),
            ),
            (
                CANONICAL,
                with(|r| r.replicas_min = 0),
                External,
                Err("invalid replica"),
            ),
            (
                CANONICAL,
                with(|r| r.replicas_max = 200),
                External,
                Err("invalid replica"),
            ),
            (
                CANONICAL,
                with(|r| r.created_ns = -1),
                External,
                Err("invalid created"),
            ),
            (
                CANONICAL,
                with(|r| {
                    r.meta = [("k".into(), "v\0".into())].into();
                }),
                External,
                Err("invalid meta"),
            ),
            (
                CANONICAL,
                replacing.clone(),
                External,
                Err("an external pin request cannot replace"),
            ),
            (CANONICAL, replacing.clone(), Internal, Ok(())),
            (
                CANONICAL,
                forged_outcome.clone(),
                External,
                Err("replica_pinned events are produced by pinhive only"),
            ),
            (CANONICAL, forged_outcome.clone(), Internal, Ok(())),
            (
                "node-1",
                Event::NodeStatusChanged {
                    node: "node-1".into(),
                    state: pinhive_events::NodeState::Up,
                    reason: String::new(),
                },
                External,
                Err("node_status_changed events are produced by pinhive only"),
            ),
            (
                CANONICAL,
                Event::UnpinRequested {
                    requestid: "r-1".into(),
                    owner: "#all".into(),
                },
                External,
                Err("invalid owner"),
            ),
            (
                CANONICAL,
                Event::TargetChanged {
                    replicas: 65,
                    preferred_regions: vec![],
                    reason: String::new(),
                },
                External,
                Err("invalid target"),
            ),
            (
                CANONICAL,
                Event::TargetChanged {
                    replicas: 0,
                    preferred_regions: vec![],
                    reason: "back to min".into(),
                },
                External,
                Ok(()),
            ),
            (
                CANONICAL,
                Event::TargetChanged {
                    replicas: 2,
                    preferred_regions: vec!["eu".into()],
                    reason: "hot".into(),
                },
                External,
                Ok(()),
            ),
        ];
        for (key, event, provenance, expected) in cases {
            let got = check(key, event.clone(), provenance);
            match (expected, &got) {
                (Ok(()), Ok(_)) => {}
                (Err(prefix), Err(reason)) if reason.starts_with(prefix) => {}
                _ => panic!("{key} {event:?} {provenance:?}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn records_of_earlier_releases_are_forwarded_or_dropped() {
        let v0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
        let canonical = crate::values::canonical_cid(v0).unwrap();
        let mut old = request();
        old.cid = v0.into();
        old.replaces = Some(Replaces {
            requestid: "older".into(),
            cid: BASE58.into(),
        });
        let Legacy::Forward(forwarded) = legacy(&envelope(v0, Event::PinRequested(old))) else {
            panic!("a legacy pin request is forwarded");
        };
        assert_eq!(forwarded.key, canonical);
        let Event::PinRequested(forwarded) = forwarded.event else {
            panic!("same event");
        };
        assert_eq!(forwarded.cid, v0, "the spelling stays for the echo");
        assert_eq!(forwarded.replaces.unwrap().cid, CANONICAL);
        let outcome = Event::ReplicaPinned {
            node: "n".into(),
            delegates: vec![],
            attempts: 1,
            duration_ms: 1,
        };
        assert_eq!(legacy(&envelope(v0, outcome.clone())), Legacy::Drop);
        assert_eq!(legacy(&envelope(CANONICAL, outcome.clone())), Legacy::No);
        assert_eq!(legacy(&envelope("node-1", outcome)), Legacy::No);
    }

    #[test]
    fn internal_records_are_held_to_their_key_not_to_new_limits() {
        // What an earlier release may have accepted at its edge: a meta value over today's
        // limit, replica bounds above 64, a non-canonical `replaces`.
        let mut old = request();
        old.cid = CANONICAL.into();
        old.meta = [("k".to_string(), "v".repeat(10_000))].into();
        old.replicas_max = 200;
        old.replaces = Some(Replaces {
            requestid: "order/1".into(),
            cid: BASE58.into(),
        });
        let admitted = check(
            CANONICAL,
            Event::PinRequested(old.clone()),
            Provenance::Internal,
        );
        let Ok(Event::PinRequested(admitted)) = admitted else {
            panic!("{admitted:?}");
        };
        assert_eq!(admitted.replaces.unwrap().cid, CANONICAL);
        assert!(check(CANONICAL, Event::PinRequested(old), Provenance::External).is_err());
        // A pin an earlier release made with another id alphabet can still be deleted.
        let unpin = Event::UnpinRequested {
            requestid: "order/1".into(),
            owner: "alice".into(),
        };
        assert!(check(CANONICAL, unpin, Provenance::External).is_ok());
    }

    #[test]
    fn admitted_pin_requests_carry_sanitized_origins() {
        let Ok(Event::PinRequested(admitted)) = check(
            CANONICAL,
            Event::PinRequested(request()),
            Provenance::External,
        ) else {
            panic!("not admitted");
        };
        assert!(admitted.origins.is_empty(), "junk origin dropped");
        assert_eq!(admitted.cid, BASE58, "the spelling is kept for the echo");
    }
}
