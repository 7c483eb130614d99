//! Versioned encoding of persisted rows (CID states, pin rows, listing entries, the commit
//! row, dead letters, journal entries, tokens, nodes, S3 objects, analytics checkpoints): what
//! both stores write as a value. bincode is not self-describing, so a row says which encoding
//! it holds, and a later release can still decode the rows an earlier one wrote.
//!
//! * Version 0 (releases before row versions): the bare bincode of the row. Every persisted
//!   row type starts with a varint (an integer, a string's or a vector's length, an option or
//!   enum tag), whose first byte is never `0xFF` (bincode reserves it): see the test
//!   `no_row_type_starts_with_the_marker`.
//! * Version 1 on: `0xFF`, the version (one byte), the bincode of the row. Version 1 is the
//!   same bincode as version 0; the header is what lets version 2 differ.
//! * Version 2: a CID state's replicas record their failure rounds and last failure time, and
//!   the state its next retry (issue 12: failed pins retried with backoff). Every other row
//!   type is the same bincode as in versions 0 and 1; a CID state of version 0 or 1 is read
//!   in its old layout ([`v1::CidState`]); its failed replicas count as out of retries.
//!
//! * Version 3: a token row carries its name, scopes, expiry and revocation (issue 13). A token
//!   row of version 0 to 2 is read in its old layout ([`v2::TokenRecord`]): named after its
//!   owner, with the scopes its admin bit implied, no expiry.
//!
//! A row of a version this release does not know is a [`StoreError::Corrupt`] that names the
//! version. The same scheme as the commit attempt's layout ([`crate::Attempt::to_bytes`]).

use serde::{de::DeserializeOwned, Serialize};

use crate::{StoreError, TokenRecord};

use pinhive_domain::CidState;

/// First byte of a versioned row: bincode never starts a varint with it.
const VERSIONED: u8 = 0xFF;
/// The row version this release writes.
pub const ROW_VERSION: u8 = 3;

/// `value` in the current row version.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![VERSIONED, ROW_VERSION];
    // Serializing our own types into a vector cannot fail (no I/O, no unsupported types).
    let _ = bincode::serde::encode_into_std_write(value, &mut bytes, bincode::config::standard());
    bytes
}

/// A row of version 0 (no header) or of the current version; `what` names the row in errors.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    let (version, body) = match bytes {
        [VERSIONED, version @ 1..=ROW_VERSION, body @ ..] => (*version, body),
        [VERSIONED, version, ..] => {
            return Err(StoreError::NewerRelease {
                what,
                version: *version,
            })
        }
        [VERSIONED] => {
            return Err(StoreError::Corrupt {
                what,
                reason: "row version marker without a version".into(),
            })
        }
        unversioned => (0, unversioned),
    };
    let corrupt = |error: bincode::error::DecodeError| StoreError::Corrupt {
        what,
        reason: error.to_string(),
    };
    // Every caller decodes through here, whatever store or helper it uses, so the one type
    // whose layout changed is told apart by its type, not by a name its caller passes.
    if version < 2 && std::any::type_name::<T>() == std::any::type_name::<CidState>() {
        return upgrade::<v1::CidState, CidState, T>(what, body);
    }
    if version < 3 && std::any::type_name::<T>() == std::any::type_name::<TokenRecord>() {
        return upgrade::<v2::TokenRecord, TokenRecord, T>(what, body);
    }
    bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map(|(value, _)| value)
        .map_err(corrupt)
}

/// The row version of stored bytes (0: no header).
pub fn version_of(bytes: &[u8]) -> u8 {
    match bytes {
        [VERSIONED, version, ..] => *version,
        _ => 0,
    }
}

/// The token row as row versions 0 to 2 hold it.
pub(crate) mod v2 {
    use pinhive_domain::tokens::Scopes;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
    pub struct TokenRecord {
        pub owner: String,
        pub created_ns: i64,
        pub admin: bool,
    }

    /// A token made before names and scopes keeps working as it did: named after its owner,
    /// with every scope if it was an admin token (it could pin, use the admin API and post S3
    /// notifications and access events), `pins:read,pins:write` otherwise; it never expires.
    impl From<TokenRecord> for crate::TokenRecord {
        fn from(old: TokenRecord) -> Self {
            crate::TokenRecord {
                name: old.owner.clone(),
                owner: old.owner,
                created_ns: old.created_ns,
                scopes: Scopes::legacy(old.admin),
                expires_ns: None,
                revoked_ns: None,
            }
        }
    }
}

/// `body` in an earlier layout `Old`, read as the current `New` (which the caller's `T` is:
/// re-encoded once and decoded as `T`).
fn upgrade<Old, New, T>(what: &'static str, body: &[u8]) -> Result<T, StoreError>
where
    Old: DeserializeOwned,
    New: From<Old> + Serialize,
    T: DeserializeOwned,
{
    let corrupt = |reason: String| StoreError::Corrupt { what, reason };
    let (old, _): (Old, usize) =
        bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map_err(|error| corrupt(error.to_string()))?;
    let current = bincode::serde::encode_to_vec(New::from(old), bincode::config::standard())
        .map_err(|error| corrupt(error.to_string()))?;
    bincode::serde::decode_from_slice(&current, bincode::config::standard())
        .map(|(value, _)| value)
        .map_err(|error| corrupt(error.to_string()))
}

/// The CID state as row versions 0 and 1 (and commit attempts of layouts 1 and 2) hold it,
/// field for field, in order.
pub(crate) mod v1 {
    use std::collections::BTreeMap;

    use pinhive_domain::state::BoundCount;
    use pinhive_domain::{Cursor, PinRef, Release, ReplicaStatus};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    pub struct ReplicaState {
        pub status: ReplicaStatus,
        pub attempts: u32,
        pub last_error: Option<String>,
    }

    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    pub struct CidState {
        pub cid: String,
        pub applied_offset: Option<u64>,
        pub bounds: Vec<BoundCount>,
        pub holds: BTreeMap<String, PinRef>,
        pub releases: BTreeMap<String, Release>,
        pub replicas: BTreeMap<String, ReplicaState>,
        pub target_override: Option<u8>,
        pub preferred_regions: Vec<String>,
        pub origins: Vec<String>,
        pub next_seq: u64,
        pub view: Option<u64>,
        pub propagation: Option<Cursor>,
        pub rewalk: bool,
        pub pending: bool,
    }

    /// A replica that failed before failure rounds were recorded has run out of automatic
    /// retries (`u32::MAX` rounds, whatever the limit): it stays failed, as it did in the
    /// release that wrote it, until `pins recover` — an upgrade does not retry every failed
    /// pin at once. The retry time is derived again when the shard next settles the CID.
    impl From<CidState> for pinhive_domain::CidState {
        fn from(old: CidState) -> Self {
            let replicas = old
                .replicas
                .into_iter()
                .map(|(node, replica)| {
                    let failures = if replica.status == ReplicaStatus::Failed {
                        u32::MAX
                    } else {
                        0
                    };
                    let replica = pinhive_domain::ReplicaState {
                        status: replica.status,
                        attempts: replica.attempts,
                        last_error: replica.last_error,
                        failures,
                        failed_ns: 0,
                    };
                    (node, replica)
                })
                .collect();
            pinhive_domain::CidState {
                cid: old.cid,
                applied_offset: old.applied_offset,
                bounds: old.bounds,
                holds: old.holds,
                releases: old.releases,
                replicas,
                target_override: old.target_override,
                preferred_regions: old.preferred_regions,
                origins: old.origins,
                next_seq: old.next_seq,
                view: old.view,
                propagation: old.propagation,
                rewalk: old.rewalk,
                pending: old.pending,
                retry_at_ns: None,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use pinhive_domain::{CidState, PinRecord, PinRow, PinStatus};

    use super::*;
    use crate::{
        AnalyticsCheckpoint, CommitState, DeadLetter, JournalEntry, Quarantine, S3Object,
        TokenRecord,
    };

    fn pin() -> PinRow {
        PinRow {
            record: PinRecord {
                requestid: "r1".into(),
                owner: "alice".into(),
                cid: "cidA".into(),
                name: None,
                origins: vec![],
                meta: BTreeMap::new(),
                created_ns: 1,
                status: PinStatus::Queued,
                info: BTreeMap::new(),
                delegates: vec![],
            },
            replicas_min: 1,
            replicas_max: 2,
            replaces: None,
            bucket: 0,
        }
    }

    fn legacy<T: Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
    }

    #[test]
    fn current_and_version_0_rows_decode() {
        let state = CidState::new("cidA");
        let bytes = encode(&state);
        assert_eq!(bytes[..2], [VERSIONED, ROW_VERSION]);
        assert_eq!(decode::<CidState>("cid state", &bytes).unwrap(), state);
        assert_eq!(
            decode::<CidState>("cid state", &legacy(&state)).unwrap(),
            state
        );
        assert_eq!(decode::<PinRow>("pin", &legacy(&pin())).unwrap(), pin());
    }

    /// (b) of issue 12: a version this release does not know is `Corrupt`, and says why.
    #[test]
    fn a_later_row_version_is_a_later_release_not_corruption() {
        let mut bytes = encode(&pin());
        bytes[1] = 9;
        let error = decode::<PinRow>("pin", &bytes).unwrap_err();
        assert!(
            matches!(
                &error,
                StoreError::NewerRelease {
                    what: "pin",
                    version: 9
                }
            ),
            "{error}"
        );
        assert!(
            !error.is_corrupt(),
            "a later release's row is not quarantined"
        );
        assert!(
            error.to_string().contains("later pinhive release"),
            "{error}"
        );
        let error = decode::<PinRow>("pin", &[VERSIONED]).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    }

    /// Version 0 is told from a versioned row by its first byte only: no row type may start
    /// with the marker. Each starts with a varint (bincode's first byte of a varint is at most
    /// 254), here at the values that make the largest first bytes.
    #[test]
    fn no_row_type_starts_with_the_marker() {
        let firsts = [
            legacy(&CidState::new("c".repeat(300)))[0],
            legacy(&pin())[0],
            legacy(&CommitState {
                batch: u64::MAX,
                ..CommitState::default()
            })[0],
            legacy(&DeadLetter {
                partition: u32::MAX,
                offset: 0,
                reason: String::new(),
                key: String::new(),
                value_prefix_hex: String::new(),
                dead_lettered_ns: 0,
            })[0],
            legacy(&JournalEntry {
                cid: "c".repeat(70_000),
                partition: 0,
                offset: 0,
                timestamp_ns: 0,
                event_id: String::new(),
                event: pinhive_events::Event::PinReplaced {
                    requestid: "r1".into(),
                    replaced_by: "r2".into(),
                },
            })[0],
            legacy(&TokenRecord {
                owner: "o".repeat(70_000),
                created_ns: 0,
                name: String::new(),
                scopes: pinhive_domain::tokens::Scopes::all(),
                expires_ns: None,
                revoked_ns: None,
            })[0],
            legacy(&v2::TokenRecord {
                owner: "o".repeat(70_000),
                created_ns: 0,
                admin: true,
            })[0],
            legacy(&S3Object {
                bucket: "b".repeat(70_000),
                key: String::new(),
                cid: String::new(),
                requestid: String::new(),
                sequencer: String::new(),
            })[0],
            legacy(&AnalyticsCheckpoint {
                next_offset: u64::MAX,
                state: vec![],
            })[0],
            legacy(&Quarantine {
                partition: u32::MAX,
                cid: String::new(),
                reason: String::new(),
                offset: 0,
                quarantined_ns: 0,
            })[0],
        ];
        assert!(firsts.iter().all(|first| *first != VERSIONED), "{firsts:?}");
    }

    /// A CID state as versions 0 and 1 held it, with nothing in it.
    pub(crate) fn v1_state(cid: &str) -> v1::CidState {
        v1::CidState {
            cid: cid.into(),
            applied_offset: None,
            bounds: vec![],
            holds: BTreeMap::new(),
            releases: BTreeMap::new(),
            replicas: BTreeMap::new(),
            target_override: None,
            preferred_regions: vec![],
            origins: vec![],
            next_seq: 0,
            view: None,
            propagation: None,
            rewalk: false,
            pending: false,
        }
    }

    /// A CID state written before failure rounds (version 1, or 0 without a header) reads in
    /// its old layout; its failed replica is out of automatic retries, its pinned one has no
    /// failure round.
    #[test]
    fn a_cid_state_of_version_1_reads_with_its_failed_replicas_out_of_retries() {
        use pinhive_domain::ReplicaStatus;
        let mut old = v1_state("cidA");
        old.applied_offset = Some(42);
        old.pending = true;
        for (node, status) in [("n0", ReplicaStatus::Failed), ("n1", ReplicaStatus::Pinned)] {
            old.replicas.insert(
                node.into(),
                v1::ReplicaState {
                    status,
                    attempts: 3,
                    last_error: Some("timed out".into()),
                },
            );
        }
        let mut version_1 = vec![VERSIONED, 1];
        version_1.extend(legacy(&old));
        for bytes in [version_1, legacy(&old)] {
            let state: CidState = decode("cid state", &bytes).unwrap();
            assert_eq!(state.applied_offset, Some(42));
            assert!(state.pending);
            assert_eq!(state.replicas["n0"].failures, u32::MAX);
            assert_eq!(
                state.replicas["n0"].last_error.as_deref(),
                Some("timed out")
            );
            assert_eq!(state.replicas["n1"].failures, 0);
            assert_eq!(state.replicas["n1"].status, ReplicaStatus::Pinned);
            assert_eq!(state.retry_at_ns, None);
        }
        // The old layout does not read as the current one: the fallback is needed.
        let mut as_current = vec![VERSIONED, ROW_VERSION];
        as_current.extend(legacy(&old));
        assert!(decode::<CidState>("cid state", &as_current).is_err());
        // Other row types read the same in every version.
        let mut pin_1 = vec![VERSIONED, 1];
        pin_1.extend(legacy(&pin()));
        assert_eq!(decode::<PinRow>("pin", &pin_1).unwrap(), pin());
    }

    /// A token row written before names and scopes (versions 0 to 2) reads with the scopes its
    /// admin bit implied, named after its owner, without expiry; a current row round-trips.
    #[test]
    fn a_token_of_version_2_or_earlier_reads_with_the_scopes_its_admin_bit_implied() {
        use pinhive_domain::tokens::{Scope, Scopes};
        for admin in [true, false] {
            let old = v2::TokenRecord {
                owner: "alice".into(),
                created_ns: 7,
                admin,
            };
            let mut version_2 = vec![VERSIONED, 2];
            version_2.extend(legacy(&old));
            let mut version_1 = vec![VERSIONED, 1];
            version_1.extend(legacy(&old));
            for bytes in [legacy(&old), version_1, version_2] {
                let token: TokenRecord = decode("token", &bytes).unwrap();
                assert_eq!(token.owner, "alice");
                assert_eq!(token.name, "alice");
                assert_eq!(token.created_ns, 7);
                assert_eq!(token.scopes, Scopes::legacy(admin));
                assert_eq!(token.scopes.contains(Scope::Admin), admin);
                assert!(token.scopes.contains(Scope::PinsWrite));
                assert_eq!(token.expires_ns, None);
                assert_eq!(token.revoked_ns, None);
                assert!(version_of(&bytes) < 3);
            }
        }
        let current = TokenRecord {
            owner: "bob".into(),
            created_ns: 1,
            name: "laptop".into(),
            scopes: Scopes::of(&[Scope::S3Ingest]),
            expires_ns: Some(99),
            revoked_ns: Some(50),
        };
        let bytes = encode(&current);
        assert_eq!(version_of(&bytes), ROW_VERSION);
        assert_eq!(decode::<TokenRecord>("token", &bytes).unwrap(), current);
    }
}
