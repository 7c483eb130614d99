//! A pin as the Pinning Service API shows it: one row per request id.

use std::collections::BTreeMap;

use pinhive_events::PinRequested;
use serde::{Deserialize, Serialize};

/// Status of a pin request, exactly the spec's four values.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum PinStatus {
    Queued,
    Pinning,
    Pinned,
    Failed,
}

impl PinStatus {
    pub const ALL: [PinStatus; 4] = [
        PinStatus::Queued,
        PinStatus::Pinning,
        PinStatus::Pinned,
        PinStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PinStatus::Queued => "queued",
            PinStatus::Pinning => "pinning",
            PinStatus::Pinned => "pinned",
            PinStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        PinStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// One byte, used as a key component in the store's indexes.
    pub fn code(self) -> u8 {
        match self {
            PinStatus::Queued => 0,
            PinStatus::Pinning => 1,
            PinStatus::Pinned => 2,
            PinStatus::Failed => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        PinStatus::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// The materialized view of one pin request (the API's `PinStatus` object plus owner).
/// Written only by the shard that owns `cid`'s partition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PinRecord {
    pub requestid: String,
    pub owner: String,
    pub cid: String,
    pub name: Option<String>,
    pub origins: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub created_ns: i64,
    pub status: PinStatus,
    /// Extra information for the `info` field (failure reasons, replica counts).
    pub info: BTreeMap<String, String>,
    /// Multiaddrs of nodes that hold (or are pinning) the content.
    pub delegates: Vec<String>,
}

impl PinRecord {
    /// The canonical form of the pin's CID (the row keeps the client's spelling for the echo;
    /// indexes and filters use this form, so every spelling of one CID finds the pin).
    pub fn canonical_cid(&self) -> String {
        crate::values::canonical_cid(&self.cid).unwrap_or_else(|_| self.cid.clone())
    }

    /// The row a pin request starts as, before any replica exists.
    pub fn queued(request: &PinRequested) -> Self {
        PinRecord {
            requestid: request.requestid.clone(),
            owner: request.owner.clone(),
            cid: request.cid.clone(),
            name: request.name.clone(),
            origins: request.origins.clone(),
            meta: request.meta.clone(),
            created_ns: request.created_ns,
            status: PinStatus::Queued,
            info: BTreeMap::new(),
            delegates: Vec::new(),
        }
    }
}
