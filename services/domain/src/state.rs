//! Per-CID state and its fold over events.
//!
//! One [`CidState`] exists per CID that has (or had, until cleaned up) at least one pin. It is
//! owned by the shard of the CID's partition, the only writer. `apply` is total: an event that
//! does not fit the state (e.g. an outcome for a node no longer allocated) is recorded as a
//! no-op, never a panic, because the log is the ground truth and may contain anything.

use std::collections::BTreeMap;

use pinhive_events::{Event, NodeId, PinRequested, Replaces};
use serde::{Deserialize, Serialize};

use crate::pin::{PinRecord, PinStatus};

/// What the CID state remembers about each pin that references it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PinRef {
    pub owner: String,
    pub replicas_min: u8,
    pub replicas_max: u8,
    /// The pin this one replaces, until the replacement settles.
    pub replaces: Option<Replaces>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaStatus {
    /// Chosen by the allocator; the node driver has been (or will be) asked to pin.
    Allocated,
    Pinned,
    /// The node gave up; the shard may allocate elsewhere.
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReplicaState {
    pub status: ReplicaStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub delegates: Vec<String>,
}

/// State of one CID. `applied_offset` is the log offset of the last event folded in (per
/// partition, since a CID lives on exactly one partition): an event at or below it is skipped,
/// which makes replay after a crash idempotent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct CidState {
    pub cid: String,
    pub applied_offset: Option<u64>,
    /// Pins referencing this CID, by request id.
    pub pins: BTreeMap<String, PinRef>,
    /// Replaced pins whose replacement has not settled yet: gone from the API, but they
    /// still hold the content on the nodes (by old request id).
    pub holds: BTreeMap<String, PinRef>,
    pub replicas: BTreeMap<NodeId, ReplicaState>,
    /// Replica count set by analytics/operators; `None` = the pins' minimum.
    pub target_override: Option<u8>,
    pub preferred_regions: Vec<String>,
    /// Origins of the most recent pin request, for `swarm/connect`.
    pub origins: Vec<String>,
}

/// The effect of one event on the pin rows of this CID, for the shard to persist.
#[derive(Debug, Clone, PartialEq)]
pub enum PinChange {
    Created(PinRecord),
    Removed { requestid: String },
}

impl CidState {
    pub fn new(cid: impl Into<String>) -> Self {
        CidState {
            cid: cid.into(),
            ..CidState::default()
        }
    }

    /// True if this event was already folded in (at or below `applied_offset`).
    pub fn already_applied(&self, offset: u64) -> bool {
        self.applied_offset.is_some_and(|applied| offset <= applied)
    }

    /// Folds one event in. Returns the pin rows it creates or removes; status changes of
    /// existing pins are derived afterwards with [`CidState::pin_status`].
    pub fn apply(&mut self, offset: u64, event: &Event) -> Vec<PinChange> {
        if self.already_applied(offset) {
            return Vec::new();
        }
        self.applied_offset = Some(offset);
        let mut changes = Vec::new();
        match event {
            Event::PinRequested(request) => {
                if !self.pins.contains_key(&request.requestid) {
                    self.pins
                        .insert(request.requestid.clone(), pin_ref(request));
                    if !request.origins.is_empty() {
                        self.origins = request.origins.clone();
                    }
                    changes.push(PinChange::Created(self.new_pin_record(request)));
                }
            }
            Event::PinReplaced { requestid, .. } => {
                if let Some(pin) = self.pins.remove(requestid) {
                    self.holds.insert(requestid.clone(), pin);
                    changes.push(PinChange::Removed {
                        requestid: requestid.clone(),
                    });
                }
            }
            Event::ReplaceSettled { requestid } => {
                self.holds.remove(requestid);
            }
            Event::UnpinRequested { requestid, .. } => {
                if self.pins.remove(requestid).is_some() {
                    changes.push(PinChange::Removed {
                        requestid: requestid.clone(),
                    });
                }
            }
            Event::ReplicasAllocated { nodes, .. } => {
                for node in nodes {
                    let replica = self.replicas.entry(node.clone()).or_insert(ReplicaState {
                        status: ReplicaStatus::Allocated,
                        attempts: 0,
                        last_error: None,
                        delegates: Vec::new(),
                    });
                    if replica.status == ReplicaStatus::Failed {
                        replica.status = ReplicaStatus::Allocated;
                    }
                }
            }
            Event::ReplicaPinned {
                node,
                delegates,
                attempts,
                ..
            } => {
                if let Some(replica) = self.replicas.get_mut(node) {
                    replica.status = ReplicaStatus::Pinned;
                    replica.attempts = replica.attempts.saturating_add(*attempts);
                    replica.last_error = None;
                    replica.delegates = delegates.clone();
                }
            }
            Event::ReplicaFailed {
                node,
                reason,
                attempts,
            } => {
                if let Some(replica) = self.replicas.get_mut(node) {
                    if replica.status == ReplicaStatus::Allocated {
                        replica.status = ReplicaStatus::Failed;
                    }
                    replica.attempts = replica.attempts.saturating_add(*attempts);
                    replica.last_error = Some(reason.clone());
                }
            }
            Event::ReplicaUnpinned { node } => {
                // Unpins are only ever requested for replicas the planner found unwanted, so
                // the outcome removes the replica; if it is wanted again, the planner
                // allocates anew.
                self.replicas.remove(node);
            }
            Event::TargetChanged {
                replicas,
                preferred_regions,
                ..
            } => {
                self.target_override = Some(*replicas);
                self.preferred_regions = preferred_regions.clone();
            }
            Event::NodeRegistered(_) | Event::NodeStatusChanged { .. } => {}
        }
        changes
    }

    /// Replica count this CID should have: the analytics target if any, clamped to the pins'
    /// bounds; otherwise the largest `replicas_min` among its pins.
    pub fn desired_replicas(&self) -> usize {
        // Holds (replaced pins awaiting their replacement) keep their bounds meanwhile.
        let refs = || self.pins.values().chain(self.holds.values());
        let min = refs().map(|p| p.replicas_min).max().unwrap_or(0);
        let max = refs().map(|p| p.replicas_max).max().unwrap_or(0).max(min);
        let wanted = self.target_override.unwrap_or(min).clamp(min, max);
        usize::from(wanted)
    }

    pub fn count(&self, status: ReplicaStatus) -> usize {
        self.replicas
            .values()
            .filter(|r| r.status == status)
            .count()
    }

    /// The API status every pin of this CID shows.
    pub fn pin_status(&self) -> PinStatus {
        let pinned = self.count(ReplicaStatus::Pinned);
        let allocated = self.count(ReplicaStatus::Allocated);
        let failed = self.count(ReplicaStatus::Failed);
        let desired = self.desired_replicas().max(1);
        if pinned > 0 && (pinned >= desired || allocated == 0) {
            return PinStatus::Pinned;
        }
        if allocated > 0 || pinned > 0 {
            return PinStatus::Pinning;
        }
        if failed > 0 {
            return PinStatus::Failed;
        }
        PinStatus::Queued
    }

    /// Multiaddrs a client should connect to (the spec's `delegates`): the nodes that hold the
    /// content (as they reported when pinning), then, until the pin is `pinned`, the nodes
    /// allocated to pin it (`node_addresses` gives a node's current addresses), each group in
    /// placement order;
    /// public addresses before private ones, at most 20. Empty while nothing is allocated: the
    /// API then names the best candidate node.
    pub fn delegates(&self, node_addresses: &dyn Fn(&str) -> Vec<String>) -> Vec<String> {
        let mut nodes: Vec<NodeId> = self.replicas.keys().cloned().collect();
        crate::allocator::rank(&self.cid, &mut nodes);
        let of_status = |status: ReplicaStatus| {
            nodes
                .iter()
                .filter(move |node| self.replicas.get(*node).is_some_and(|r| r.status == status))
        };
        let pinned = of_status(ReplicaStatus::Pinned)
            .flat_map(|node| self.replicas[node].delegates.iter().cloned());
        // Nodes still fetching need the client's data; once the pin is `pinned`, a node still
        // allocated (an extra replica on its way in or out) is not one the client needs.
        let fetching = self.pin_status() != PinStatus::Pinned;
        let allocated = of_status(ReplicaStatus::Allocated)
            .filter(|_| fetching)
            .flat_map(|node| node_addresses(node));
        crate::values::dialable_first(pinned.chain(allocated), crate::values::MAX_ORIGINS)
    }

    /// The state-dependent admission rule: only a pin's owner may unpin it. (An unpin of a
    /// pin that is already gone is a harmless no-op, not a rejection.)
    pub fn check(&self, event: &Event) -> Result<(), crate::command::Rejection> {
        if let Event::UnpinRequested { requestid, owner } = event {
            if let Some(pin) = self.pins.get(requestid) {
                if &pin.owner != owner {
                    return Err(crate::command::Rejection::NotOwner {
                        requestid: requestid.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The `info` map every pin of this CID shows.
    pub fn pin_info(&self) -> BTreeMap<String, String> {
        let mut info = BTreeMap::new();
        info.insert(
            "replicas_pinned".into(),
            self.count(ReplicaStatus::Pinned).to_string(),
        );
        info.insert(
            "replicas_desired".into(),
            self.desired_replicas().to_string(),
        );
        let errors: Vec<String> = self
            .replicas
            .iter()
            .filter(|(_, r)| r.status == ReplicaStatus::Failed)
            .filter_map(|(node, r)| r.last_error.as_ref().map(|e| format!("{node}: {e}")))
            .collect();
        if !errors.is_empty() {
            info.insert("failure".into(), errors.join("; "));
        }
        info
    }

    fn new_pin_record(&self, request: &PinRequested) -> PinRecord {
        let mut pin = PinRecord::queued(request);
        pin.status = self.pin_status();
        pin.info = self.pin_info();
        pin
    }

    /// Folds in the state a previous release kept under another spelling of this CID (the
    /// one-time CID-key migration). Union of pins and holds; a node in both keeps this
    /// (canonical) state's replica. The legacy replicas were pinned under the old spelling, so they come in
    /// as `Allocated`: the planner pins the canonical form there again (instant, the node holds
    /// the blocks) and the pin row shows the truth once the node confirms. Idempotent: absorbing
    /// the same legacy state twice changes nothing more.
    pub fn absorb(&mut self, legacy: CidState) {
        for (requestid, pin) in legacy.pins {
            self.pins.entry(requestid).or_insert(pin);
        }
        for (requestid, hold) in legacy.holds {
            self.holds.entry(requestid).or_insert(hold);
        }
        for (node, mut replica) in legacy.replicas {
            if replica.status == ReplicaStatus::Pinned {
                replica.status = ReplicaStatus::Allocated;
            }
            self.replicas.entry(node).or_insert(replica);
        }
        self.target_override = match (self.target_override, legacy.target_override) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if self.preferred_regions.is_empty() {
            self.preferred_regions = legacy.preferred_regions;
        }
        if self.origins.is_empty() {
            self.origins = legacy.origins;
        }
    }

    /// True when nothing references the CID and no replica remains: the row can be deleted.
    pub fn is_garbage(&self) -> bool {
        self.pins.is_empty() && self.holds.is_empty() && self.replicas.is_empty()
    }

    /// True while anything (a pin or a hold) needs the content.
    pub fn is_referenced(&self) -> bool {
        !self.pins.is_empty() || !self.holds.is_empty()
    }
}

fn pin_ref(request: &PinRequested) -> PinRef {
    PinRef {
        owner: request.owner.clone(),
        replicas_min: request.replicas_min,
        replicas_max: request.replicas_max,
        replaces: request.replaces.clone(),
    }
}
