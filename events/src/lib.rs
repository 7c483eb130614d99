//! Event model of pinhive: the versioned [`Envelope`] and every [`Event`] of the flow.
//!
//! Only events cross the log; actor messages never do. Internal records are encoded with
//! bincode 2 ([`codec`]); external producers send the JSON form, validated against the JSON
//! Schema in `schemas/events/` (generated from these types, see [`schema`]).

pub mod access;
pub mod codec;
pub mod schema;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version of the envelope layout and event payloads. Bump on any incompatible change; the
/// decoder rejects (dead-letters) versions it does not know.
pub const SCHEMA_VERSION: u16 = 1;

/// Identifier of an IPFS node as configured in pinhive (stable, operator-chosen or derived from
/// the RPC URL). Not the libp2p peer id, which a node may change.
pub type NodeId = String;

/// One record of the log. `key` is the partition key: the CID for every pin event, the node id
/// for node events. Replaying a partition's envelopes in order rebuilds every state it owns.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Layout version, [`SCHEMA_VERSION`] for records written by this build.
    pub schema_version: u16,
    /// Unique id of this event (UUID text); used to deduplicate and to join logs and traces.
    pub event_id: String,
    /// Partition key: CID (pin events) or node id (node events).
    pub key: String,
    /// Wall-clock time the event was created, nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// W3C `traceparent` of the span that produced the event, if traced.
    #[serde(default)]
    pub traceparent: Option<String>,
    pub event: Event,
}

impl Envelope {
    /// Wraps `event` for partition key `key` with a fresh event id and the current time.
    pub fn new(key: impl Into<String>, event: Event) -> Self {
        Envelope {
            schema_version: SCHEMA_VERSION,
            event_id: new_event_id(),
            key: key.into(),
            timestamp_ns: now_ns(),
            traceparent: None,
            event,
        }
    }
}

/// Every event of the flow. Sent by: the API (requests), the shard actors (decisions), the node
/// drivers (replica outcomes), the analytics actors (targets), the node registry (node events).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A user asked to pin `cid`. Sent by the API (or an external producer) once per request;
    /// `requestid` is unique per request, so two requests for one CID are two pins.
    PinRequested(PinRequested),
    /// The pin `requestid` was replaced by `replaced_by` (a `PinRequested` whose `replaces`
    /// names it, on the new CID's partition). Keyed by the old pin's CID. The old pin is gone
    /// from the API at once, but its content stays held on the nodes until `ReplaceSettled`:
    /// that is what protects blocks shared by both pins from garbage collection.
    PinReplaced {
        requestid: String,
        replaced_by: String,
    },
    /// Sent by the shard of the replacing pin once it settles (pinned, failed or deleted).
    /// Keyed by the old pin's CID; releases the hold `PinReplaced` left there.
    ReplaceSettled { requestid: String },
    /// The owner deleted pin `requestid`. Keyed by the pin's CID.
    UnpinRequested { requestid: String, owner: String },
    /// The shard decided that `nodes` must hold the CID (a decision recorded as an event so
    /// replay rebuilds the exact placement). `target` is the replica count it aimed for.
    ReplicasAllocated { nodes: Vec<NodeId>, target: u8 },
    /// Node driver: `node` confirmed a recursive pin. `delegates` are the node's multiaddrs.
    ReplicaPinned {
        node: NodeId,
        delegates: Vec<String>,
        attempts: u32,
        duration_ms: u64,
    },
    /// Node driver: `node` could not pin after `attempts` tries (retries exhausted or the error
    /// is permanent). The shard may allocate another node.
    ReplicaFailed {
        node: NodeId,
        reason: String,
        attempts: u32,
    },
    /// Node driver: `node` no longer pins the CID.
    ReplicaUnpinned { node: NodeId },
    /// Analytics (or an operator): the optimal replica count / placement for the CID changed.
    /// `replicas` is clamped to the pins' bounds by the shard; 0 clears the target (the CID
    /// goes back to its pins' `min`).
    TargetChanged {
        replicas: u8,
        #[serde(default)]
        preferred_regions: Vec<String>,
        reason: String,
    },
    /// Control log: a node joined (or its description changed). Keyed by node id. A new node
    /// starts `up`; a re-registered one keeps its state.
    NodeRegistered(NodeDescriptor),
    /// Control log: a node's agreed lifecycle state changed (health transitions decided by the
    /// instance that leads the control log, or an operator's drain). Keyed by node id.
    NodeStatusChanged {
        node: NodeId,
        state: NodeState,
        reason: String,
    },
    /// Control log: an operator removed the node. Keyed by node id.
    NodeRemoved { node: NodeId, reason: String },
    // New variants go last: the internal encoding (bincode) numbers variants in order.
    /// Anti-entropy: `node` does not pin the CID it was recorded as pinning (absent from the
    /// node's streamed `pin/ls` and from a point `pin/ls` made after it). The shard pins it
    /// there again.
    ReplicaMissing { node: NodeId, reason: String },
    /// Anti-entropy: `node` pinned the CID although pinhive holds no replica of it there, and
    /// the operator let anti-entropy remove such pins: it was unpinned there. A record for the
    /// pin history; the CID's state does not change.
    UnknownPinRemoved { node: NodeId },
    /// The owner of pin `requestid` (or an admin) asked to retry the CID's failed replicas
    /// now (`pinhive pins recover`): their failure rounds start over, so the planner retries
    /// them at once and, if they fail again, with the full number of automatic retries.
    /// Keyed by the pin's CID. Sent by the API only.
    PinRecoverRequested { requestid: String },
    /// Pin `requestid` expired: the partition owner's expiry task appends it once the pin's
    /// entry in the expiry index is due (`expires_ns` is the entry's time, not after now).
    /// Keyed by the pin's CID. The shard removes the pin like an unpin, without the owner
    /// check, if the pin still expires at or before `expires_ns` (an expiry moved later since
    /// leaves it), and deletes the index entry either way. Sent by pinhive only.
    PinExpired { requestid: String, expires_ns: i64 },
    /// The owner of pin `requestid` (or an admin) set its expiry (`Some`, ns since the Unix
    /// epoch, after the request's time) or cleared it (`None`) through the admin API. Keyed by
    /// the pin's CID; the shard rewrites the pin's `meta.expires_at` and its expiry-index
    /// entry. Sent by the API only.
    PinExpirySet {
        requestid: String,
        expires_ns: Option<i64>,
    },
}

/// The lifecycle state every instance agrees on for a node (folded from the control log).
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Healthy: takes new replicas; its replicas count.
    Up,
    /// Failing health checks for less than the grace period: takes no new replicas, but its
    /// replicas still count (nothing moves if it comes back in time).
    Degraded,
    /// Failing for longer than the grace period: its replicas no longer count and are made
    /// again elsewhere, at the re-replication rate.
    Down,
    /// An operator is emptying it: takes no new replicas; each of its replicas is unpinned
    /// once the CID's replicas elsewhere are pinned.
    Draining,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Degraded => "degraded",
            NodeState::Down => "down",
            NodeState::Draining => "draining",
        }
    }

    /// Whether the node's replicas count towards a CID's target.
    pub fn holds_replicas(self) -> bool {
        matches!(self, NodeState::Up | NodeState::Degraded)
    }
}

impl Event {
    /// Short stable name, used in logs, metrics labels and the pin history.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::PinRequested(_) => "pin_requested",
            Event::PinReplaced { .. } => "pin_replaced",
            Event::ReplaceSettled { .. } => "replace_settled",
            Event::UnpinRequested { .. } => "unpin_requested",
            Event::ReplicasAllocated { .. } => "replicas_allocated",
            Event::ReplicaPinned { .. } => "replica_pinned",
            Event::ReplicaFailed { .. } => "replica_failed",
            Event::ReplicaUnpinned { .. } => "replica_unpinned",
            Event::ReplicaMissing { .. } => "replica_missing",
            Event::UnknownPinRemoved { .. } => "unknown_pin_removed",
            Event::PinRecoverRequested { .. } => "pin_recover_requested",
            Event::PinExpired { .. } => "pin_expired",
            Event::PinExpirySet { .. } => "pin_expiry_set",
            Event::TargetChanged { .. } => "target_changed",
            Event::NodeRegistered(_) => "node_registered",
            Event::NodeStatusChanged { .. } => "node_status_changed",
            Event::NodeRemoved { .. } => "node_removed",
        }
    }
}

/// Payload of [`Event::PinRequested`]: the Pinning Service API `Pin` object plus what pinhive
/// adds (owner, request id, creation time, replication bounds).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PinRequested {
    pub requestid: String,
    /// Name of the access token's owner; pins are scoped to it.
    pub owner: String,
    pub cid: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Multiaddrs of peers known to provide the data (passed to `swarm/connect`).
    #[serde(default)]
    pub origins: Vec<String>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Creation time, nanoseconds since the Unix epoch; the listing order.
    pub created_ns: i64,
    pub replicas_min: u8,
    pub replicas_max: u8,
    /// The pin this one replaces (Pinning Service API replace).
    #[serde(default)]
    pub replaces: Option<Replaces>,
}

/// Which pin a replacing pin retires: its request id and CID (the CID names the partition the
/// `ReplaceSettled` event goes to).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Replaces {
    pub requestid: String,
    pub cid: String,
}

/// Description of an IPFS node as registered with pinhive.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeDescriptor {
    pub id: NodeId,
    /// Base URL of the node's Kubo RPC API, e.g. `http://127.0.0.1:5001`.
    pub rpc_url: String,
    #[serde(default)]
    pub region: String,
    /// Relative capacity weight for placement (1 = default).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// A fresh random event or request id (UUID v4 text, formatted without external crates).
pub fn new_event_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let mut b = bytes;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Current wall-clock time in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}
