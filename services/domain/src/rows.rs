//! The rows a shard writes, and the versioning that makes any prefix of a batch replayable.
//!
//! A shard batch writes many rows (pins, CID states) that no store can write atomically
//! across keys (ScyllaDB cannot either), then one *commit row* per log partition, atomically:
//! checkpoint, batch number and the partition's counters. Every row a batch writes is a
//! [`Versioned`] row: its new value, the batch number that wrote it, and the value as of the
//! last *committed* batch (`undo`). A reader that knows the partition's committed batch number
//! sees through rows an interrupted batch left behind ([`Versioned::committed`]), so the retry
//! starts from exactly the state the counters in the commit row describe, whatever prefix of
//! the interrupted batch reached the store.

use std::collections::BTreeMap;

use pinhive_events::{PinRequested, Replaces};
use serde::{Deserialize, Serialize};

use crate::pin::{PinRecord, PinStatus};

/// Pins per bucket of a CID's pin list: the pin list of a CID is partitioned by
/// `(cid, seq / PIN_BUCKET)`, so no partition grows past this many rows however many
/// requests pin one CID.
pub const PIN_BUCKET: u64 = 10_000;

/// What every pin of one CID shows, derived from the CID state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PinView {
    pub status: PinStatus,
    pub info: BTreeMap<String, String>,
    pub delegates: Vec<String>,
}

/// A pin as stored: the API's record (carrying the view propagated to it) and what the
/// shard needs when the pin goes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PinRow {
    pub record: PinRecord,
    pub replicas_min: u8,
    pub replicas_max: u8,
    /// The pin this one replaces, until the replacement settles.
    pub replaces: Option<Replaces>,
    /// Bucket of the CID's pin list this pin is listed in.
    pub bucket: u64,
}

impl PinRow {
    pub fn new(request: &PinRequested, bucket: u64) -> Self {
        PinRow {
            record: PinRecord::queued(request),
            replicas_min: request.replicas_min,
            replicas_max: request.replicas_max,
            replaces: request.replaces.clone(),
            bucket,
        }
    }

    pub fn requestid(&self) -> &str {
        &self.record.requestid
    }

    /// True if the row shows `view`.
    pub fn shows(&self, view: &PinView) -> bool {
        self.record.status == view.status
            && self.record.info == view.info
            && self.record.delegates == view.delegates
    }

    /// This row showing `view`.
    pub fn with_view(mut self, view: &PinView) -> Self {
        self.record.status = view.status;
        self.record.info = view.info.clone();
        self.record.delegates = view.delegates.clone();
        self
    }
}

/// A row written by a shard batch (see the module docs). `value: None` is a deletion
/// (tombstone) that still remembers its committed value until the store purges it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    pub batch: u64,
    pub value: Option<T>,
    pub undo: Option<T>,
}

impl<T: Clone> Versioned<T> {
    /// The value as of the partition's last committed batch.
    pub fn committed(&self, committed_batch: u64) -> Option<&T> {
        if self.batch > committed_batch {
            self.undo.as_ref()
        } else {
            self.value.as_ref()
        }
    }

    /// The value an uncommitted batch left here, if one did and it differs from the
    /// committed one (what a retry must clean up after).
    pub fn uncommitted(&self, committed_batch: u64) -> Option<&T> {
        if self.batch > committed_batch {
            self.value.as_ref()
        } else {
            None
        }
    }

    /// The row batch `batch` writes to make this key hold `value`, keeping the committed
    /// value as its undo.
    pub fn next(stored: Option<&Versioned<T>>, committed_batch: u64, batch: u64, value: Option<T>) -> Self {
        Versioned {
            batch,
            value,
            undo: stored.and_then(|row| row.committed(committed_batch).cloned()),
        }
    }
}
