//! The pin rows a shard writes, and the view every pin of a CID shows.
//!
//! A shard batch writes many rows (pins, CID states) that no store can write atomically
//! across keys (ScyllaDB cannot either). The store crate's commit protocol records the
//! committed value of each before the batch writes it, so an interrupted batch is rolled back
//! and retried from exactly the committed state (docs/data-model.md).

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

impl PinView {
    /// A stable 64-bit digest (xxh3 of the view's fields), kept in the CID state to tell
    /// whether the pins show the current view.
    pub fn digest(&self) -> u64 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(&[self.status.code()]);
        for (key, value) in &self.info {
            hasher.update(key.as_bytes());
            hasher.update(&[0]);
            hasher.update(value.as_bytes());
            hasher.update(&[0]);
        }
        hasher.update(&[1]);
        for delegate in &self.delegates {
            hasher.update(delegate.as_bytes());
            hasher.update(&[0]);
        }
        hasher.digest()
    }
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

    /// When the pin expires (`meta.expires_at`). A value that does not parse (only a pin made
    /// before expiry existed can hold one: every edge checks it now) means no expiry.
    pub fn expiry(&self) -> Option<crate::values::Expiry> {
        crate::values::Expiry::of_meta(&self.record.meta)
            .ok()
            .flatten()
    }

    /// This row with its expiry set or cleared (`meta.expires_at` rewritten).
    pub fn with_expiry(mut self, expiry: Option<crate::values::Expiry>) -> Self {
        let key = crate::values::META_EXPIRES_AT;
        match expiry {
            Some(expiry) => {
                self.record
                    .meta
                    .insert(key.to_string(), expiry.to_rfc3339());
            }
            None => {
                self.record.meta.remove(key);
            }
        }
        self
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
