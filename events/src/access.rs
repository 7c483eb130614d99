//! Access events: what a gateway or CDN log shipper reports about reads of pinned content.
//!
//! They feed the analytics actors (replica optimizer) through the access log (embedded) or the
//! access topic (Kafka), keyed by CID like pin events. The JSON form below is the contract for
//! `POST /access`, external producers on the access topic and `pinhive access import`; the
//! committed schema `schemas/access/access-batch.schema.json` is generated from these types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest region name accepted (bytes).
pub const MAX_REGION_BYTES: usize = 64;
/// Most events in one `POST /access` batch.
pub const MAX_ACCESS_BATCH: usize = 10_000;

/// One read of pinned content.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessEvent {
    /// The CID read (any spelling; stored canonical). A path below it (`/ipfs/<cid>/a/b`) counts
    /// for the root CID, which is what pins name.
    pub cid: String,
    /// Region of the reader (a region nodes are configured with, e.g. `eu`). Unknown regions
    /// count towards the CID's total demand but never earn a local replica.
    pub region: String,
    /// Bytes served by this read.
    pub bytes: u64,
    /// When the read happened, seconds since the Unix epoch (fractions allowed). Absent: the
    /// time pinhive received it. Old reads count less (they are decayed by their age).
    #[serde(default)]
    pub ts: Option<f64>,
    /// Size of the whole object if the reporter knows it (e.g. a full `200` response); used as
    /// the cost of a replica. Absent: the largest `bytes` seen for the CID.
    #[serde(default)]
    pub size: Option<u64>,
}

/// Body of `POST /access`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessBatch {
    /// 1 to [`MAX_ACCESS_BATCH`] events.
    pub events: Vec<AccessEvent>,
}
