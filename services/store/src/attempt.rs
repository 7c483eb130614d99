//! The attempt as bytes, for a store that keeps it as one value (the ScyllaDB commit row's
//! `attempt` cell). bincode is not self-describing: a layout change of [`Attempt`] would
//! make an attempt written by the previous release decode as garbage or fail, so the bytes
//! say which layout they hold.
//!
//! * Layout 1 (releases before [`Undo::Pin`] carried `attempted`): the bare bincode of the
//!   attempt. It starts with the varint of `batch`, whose first byte is never `0xFF` (bincode
//!   reserves it).
//! * Layout 2 on: `0xFF`, the layout number (one byte), the bincode of the attempt.
//! * Layout 3: the CID states of [`Undo::Cid`] in their row-version-2 layout (failure rounds,
//!   issue 12); layouts 1 and 2 hold them in the old one (`crate::row::v1`).
//!
//! A layout-1 attempt decodes with `attempted: None` for every pin row: its rollback removes
//! the entries of the values it reads back only, as the release that wrote it did. A layout
//! this release does not know is a [`StoreError::Corrupt`] that names it. A layout-1 release
//! reading a layout-2 attempt fails at the first byte (an invalid varint), never misreads it.

use pinhive_domain::PinRow;
use serde::{Deserialize, Serialize};

use crate::row::v1::CidState as CidStateV1;
use crate::{Attempt, StoreError, Undo};

/// First byte of a versioned attempt: bincode never starts a `u64` varint with it.
const VERSIONED: u8 = 0xFF;
/// The layout this release writes.
const LAYOUT: u8 = 3;
const WHAT: &str = "commit attempt";

impl Attempt {
    /// The attempt in the current layout (see the module docs).
    pub fn to_bytes(&self) -> Result<Vec<u8>, StoreError> {
        let mut bytes = vec![VERSIONED, LAYOUT];
        bincode::serde::encode_into_std_write(self, &mut bytes, bincode::config::standard())
            .map_err(|error| corrupt(format!("encoding: {error}")))?;
        Ok(bytes)
    }

    /// An attempt written by this release or by one that wrote layout 1.
    pub fn from_bytes(bytes: &[u8]) -> Result<Attempt, StoreError> {
        match bytes {
            [VERSIONED, LAYOUT, body @ ..] => decode_whole(body),
            [VERSIONED, 2, body @ ..] => decode_whole::<layout2::Attempt>(body).map(Attempt::from),
            // Not corrupt: the partition waits for an instance of that release.
            [VERSIONED, layout, ..] if *layout > LAYOUT => Err(StoreError::NewerRelease {
                what: WHAT,
                version: *layout,
            }),
            [VERSIONED, layout, ..] => Err(corrupt(format!(
                "layout {layout}, but this release reads layouts 1 to {LAYOUT}"
            ))),
            _ => decode_whole::<layout1::Attempt>(bytes).map(Attempt::from),
        }
    }
}

fn corrupt(reason: String) -> StoreError {
    StoreError::Corrupt { what: WHAT, reason }
}

/// Decodes `bytes` as one `T` and nothing after it (a layout mix-up leaves bytes over).
fn decode_whole<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|error| corrupt(error.to_string()))?;
    if read != bytes.len() {
        return Err(corrupt(format!(
            "{} bytes left over after the attempt",
            bytes.len() - read
        )));
    }
    Ok(value)
}

/// The attempt as releases before layout 2 wrote it (field for field, in order).
mod layout1 {
    use super::*;

    #[derive(Serialize, Deserialize)]
    pub(super) struct Attempt {
        pub(super) batch: u64,
        pub(super) undo: Vec<Undo>,
    }

    #[derive(Serialize, Deserialize)]
    #[allow(clippy::large_enum_variant)]
    pub(super) enum Undo {
        Pin {
            requestid: String,
            row: Option<PinRow>,
        },
        Cid {
            cid: String,
            state: Option<CidStateV1>,
        },
    }
}

/// The attempt as layout 2 holds it: the current [`Undo`], with CID states of the old layout.
mod layout2 {
    use super::*;

    #[derive(Serialize, Deserialize)]
    pub(super) struct Attempt {
        pub(super) batch: u64,
        pub(super) undo: Vec<Undo>,
    }

    #[derive(Serialize, Deserialize)]
    #[allow(clippy::large_enum_variant)]
    pub(super) enum Undo {
        Pin {
            requestid: String,
            row: Option<PinRow>,
            attempted: Option<PinRow>,
        },
        Cid {
            cid: String,
            state: Option<CidStateV1>,
        },
    }
}

impl From<layout2::Attempt> for Attempt {
    fn from(old: layout2::Attempt) -> Attempt {
        let undo = old
            .undo
            .into_iter()
            .map(|undo| match undo {
                layout2::Undo::Pin {
                    requestid,
                    row,
                    attempted,
                } => Undo::Pin {
                    requestid,
                    row,
                    attempted,
                },
                layout2::Undo::Cid { cid, state } => Undo::Cid {
                    cid,
                    state: state.map(Into::into),
                },
            })
            .collect();
        Attempt {
            batch: old.batch,
            undo,
        }
    }
}

impl From<layout1::Attempt> for Attempt {
    fn from(old: layout1::Attempt) -> Attempt {
        let undo = old
            .undo
            .into_iter()
            .map(|undo| match undo {
                layout1::Undo::Pin { requestid, row } => Undo::Pin {
                    requestid,
                    row,
                    attempted: None,
                },
                layout1::Undo::Cid { cid, state } => Undo::Cid {
                    cid,
                    state: state.map(Into::into),
                },
            })
            .collect();
        Attempt {
            batch: old.batch,
            undo,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pinhive_domain::{PinRecord, PinStatus};

    use pinhive_domain::CidState;

    use super::*;

    fn row(status: PinStatus) -> PinRow {
        PinRow {
            record: PinRecord {
                requestid: "r1".into(),
                owner: "alice".into(),
                cid: "cidA".into(),
                name: Some("photo".into()),
                origins: vec![],
                meta: BTreeMap::new(),
                created_ns: 10,
                status,
                info: BTreeMap::new(),
                delegates: vec![],
            },
            replicas_min: 1,
            replicas_max: 2,
            replaces: None,
            bucket: 3,
        }
    }

    fn layout1_bytes() -> Vec<u8> {
        let old = layout1::Attempt {
            batch: 300, // a multi-byte varint
            undo: vec![
                layout1::Undo::Pin {
                    requestid: "r1".into(),
                    row: Some(row(PinStatus::Queued)),
                },
                layout1::Undo::Cid {
                    cid: "cidA".into(),
                    state: Some(crate::row::tests::v1_state("cidA")),
                },
                layout1::Undo::Pin {
                    requestid: "r2".into(),
                    row: None,
                },
            ],
        };
        bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap()
    }

    #[test]
    fn the_current_layout_round_trips() {
        let attempt = Attempt {
            batch: 7,
            undo: vec![
                Undo::Pin {
                    requestid: "r1".into(),
                    row: Some(row(PinStatus::Queued)),
                    attempted: Some(row(PinStatus::Pinned)),
                },
                Undo::Pin {
                    requestid: "r2".into(),
                    row: None,
                    attempted: None,
                },
                Undo::Cid {
                    cid: "cidA".into(),
                    state: None,
                },
            ],
        };
        let bytes = attempt.to_bytes().unwrap();
        assert_eq!(bytes[..2], [VERSIONED, LAYOUT]);
        assert_eq!(Attempt::from_bytes(&bytes).unwrap(), attempt);
    }

    /// What the previous release wrote still reads, with nothing attempted known.
    #[test]
    fn a_layout_1_attempt_reads_with_no_attempted_values() {
        let bytes = layout1_bytes();
        assert!(bytes[0] != VERSIONED);
        let attempt = Attempt::from_bytes(&bytes).unwrap();
        assert_eq!(
            attempt,
            Attempt {
                batch: 300,
                undo: vec![
                    Undo::Pin {
                        requestid: "r1".into(),
                        row: Some(row(PinStatus::Queued)),
                        attempted: None,
                    },
                    Undo::Cid {
                        cid: "cidA".into(),
                        state: Some(CidState::new("cidA")),
                    },
                    Undo::Pin {
                        requestid: "r2".into(),
                        row: None,
                        attempted: None,
                    },
                ],
            }
        );
        // Read as the current layout without the header, the same bytes do not decode: the
        // fallback is needed, not a nicety.
        assert!(decode_whole::<Attempt>(&bytes).is_err());
    }

    /// A release that reads layout 1 only fails on the current layout, at its first byte.
    #[test]
    fn the_previous_release_refuses_the_current_layout() {
        let attempt = Attempt {
            batch: 1,
            undo: vec![Undo::Pin {
                requestid: "r1".into(),
                row: None,
                attempted: Some(row(PinStatus::Pinned)),
            }],
        };
        let bytes = attempt.to_bytes().unwrap();
        assert!(decode_whole::<layout1::Attempt>(&bytes).is_err());
    }

    #[test]
    fn an_unknown_layout_or_trailing_bytes_are_named() {
        // A later layout is a later release's, not corruption: the partition waits for it.
        let error = Attempt::from_bytes(&[VERSIONED, 9, 0, 0]).unwrap_err();
        assert!(
            matches!(error, StoreError::NewerRelease { version: 9, .. }),
            "{error}"
        );
        assert!(!error.is_corrupt());
        let mut bytes = Attempt::default().to_bytes().unwrap();
        bytes.push(0);
        let error = Attempt::from_bytes(&bytes).unwrap_err();
        assert!(error.to_string().contains("left over"), "{error}");
    }

    /// An attempt of layout 2 (the previous release) holds CID states of the old layout.
    #[test]
    fn a_layout_2_attempt_reads_its_old_cid_states() {
        let old = layout2::Attempt {
            batch: 9,
            undo: vec![
                layout2::Undo::Pin {
                    requestid: "r1".into(),
                    row: None,
                    attempted: Some(row(PinStatus::Pinned)),
                },
                layout2::Undo::Cid {
                    cid: "cidA".into(),
                    state: Some(crate::row::tests::v1_state("cidA")),
                },
            ],
        };
        let mut bytes = vec![VERSIONED, 2];
        bytes.extend(bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap());
        assert_eq!(
            Attempt::from_bytes(&bytes).unwrap(),
            Attempt {
                batch: 9,
                undo: vec![
                    Undo::Pin {
                        requestid: "r1".into(),
                        row: None,
                        attempted: Some(row(PinStatus::Pinned)),
                    },
                    Undo::Cid {
                        cid: "cidA".into(),
                        state: Some(CidState::new("cidA")),
                    },
                ],
            }
        );
    }
}
