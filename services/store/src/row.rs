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
//!
//! A row of a version this release does not know is a [`StoreError::Corrupt`] that names the
//! version. The same scheme as the commit attempt's layout ([`crate::Attempt::to_bytes`]).

use serde::{de::DeserializeOwned, Serialize};

use crate::StoreError;

/// First byte of a versioned row: bincode never starts a varint with it.
const VERSIONED: u8 = 0xFF;
/// The row version this release writes.
pub const ROW_VERSION: u8 = 1;

/// `value` in the current row version.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![VERSIONED, ROW_VERSION];
    // Serializing our own types into a vector cannot fail (no I/O, no unsupported types).
    let _ = bincode::serde::encode_into_std_write(value, &mut bytes, bincode::config::standard());
    bytes
}

/// A row of version 0 (no header) or of the current version; `what` names the row in errors.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    let body = match bytes {
        [VERSIONED, ROW_VERSION, body @ ..] => body,
        [VERSIONED, version, ..] => {
            return Err(StoreError::Corrupt {
                what,
                reason: format!(
                    "row version {version}, but this release reads versions 0 to {ROW_VERSION}: \
                     it was written by a later pinhive release"
                ),
            })
        }
        [VERSIONED] => {
            return Err(StoreError::Corrupt {
                what,
                reason: "row version marker without a version".into(),
            })
        }
        unversioned => unversioned,
    };
    bincode::serde::decode_from_slice(body, bincode::config::standard())
        .map(|(value, _)| value)
        .map_err(|error| StoreError::Corrupt {
            what,
            reason: error.to_string(),
        })
}

#[cfg(test)]
mod tests {
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
    fn an_unknown_row_version_is_corrupt_with_its_version_named() {
        let mut bytes = encode(&pin());
        bytes[1] = 9;
        let error = decode::<PinRow>("pin", &bytes).unwrap_err();
        assert!(
            matches!(&error, StoreError::Corrupt { what: "pin", reason } if reason.contains("row version 9")),
            "{error}"
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
}
