//! Per-CID state and its fold over events.
//!
//! One [`CidState`] exists per CID that has (or had, until cleaned up) at least one pin. It is
//! owned by the shard of the CID's partition, the only writer. `apply` is total: an event that
//! does not fit the state (e.g. an outcome for a node no longer allocated) is recorded as a
//! no-op, never a panic, because the log is the ground truth and may contain anything.

use std::collections::BTreeMap;

use pinhive_events::{Event, NodeId, Replaces};
use serde::{Deserialize, Serialize};

use crate::pin::PinStatus;
use crate::rows::{PinRow, PinView, PIN_BUCKET};

/// What a hold (a replaced pin whose replacement has not settled) remembers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PinRef {
    pub owner: String,
    pub replicas_min: u8,
    pub replicas_max: u8,
    /// The pin this one replaced, until that replacement settles.
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

/// One node's replica. Its addresses (the pin's delegates) are the node's, from the registry:
/// per node, not per CID.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReplicaState {
    pub status: ReplicaStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Failure rounds since the replica was last pinned or recovered (`PinRecoverRequested`):
    /// the automatic retries of a failed replica back off by it and stop at a limit
    /// ([`crate::retry`]).
    pub failures: u32,
    /// When the replica last failed (the `ReplicaFailed` envelope's time, ns since the epoch).
    pub failed_ns: i64,
}

impl ReplicaState {
    /// A replica in `status` that never failed nor was tried.
    pub fn new(status: ReplicaStatus) -> Self {
        ReplicaState {
            status,
            attempts: 0,
            last_error: None,
            failures: 0,
            failed_ns: 0,
        }
    }
}

/// How many live pins of the CID ask for `replicas_min..=replicas_max`. The CID keeps these
/// counts instead of its pins: its row stays bounded (at most 64 × 64 entries, in practice a
/// handful) whatever the number of pins referencing it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundCount {
    pub min: u8,
    pub max: u8,
    pub pins: u64,
}

/// A hold this CID's pin `by` must release once it settles (or is gone): the pin it replaced,
/// `requestid` on `cid`. Kept until `ReplaceSettled` comes back, so the release is planned
/// from state (level-triggered) and survives a crash or a failed append.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Release {
    pub cid: String,
    pub by: String,
    /// The replacing pin is gone (replaced or deleted itself): release whatever the status.
    pub now: bool,
}

/// Where the propagation of the current view to the CID's pin rows stands: the walk goes on
/// after pin `after` of pin bucket `bucket` (see [`crate::rows`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Cursor {
    pub bucket: u64,
    pub after: Option<String>,
}

/// State of one CID: shared by all its pins, bounded in size. `applied_offset` is the log
/// offset of the last event folded in (per partition, since a CID lives on exactly one
/// partition): an event at or below it is skipped, which makes replay idempotent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct CidState {
    pub cid: String,
    pub applied_offset: Option<u64>,
    /// Live pins referencing this CID, counted by replica bounds (the pins themselves are
    /// rows of their own).
    pub bounds: Vec<BoundCount>,
    /// Replaced pins whose replacement has not settled yet: gone from the API, but they
    /// still hold the content on the nodes (by old request id). Bounded by the replaces in
    /// flight on this CID.
    pub holds: BTreeMap<String, PinRef>,
    /// Holds elsewhere that pins of this CID must release (by the replaced request id).
    pub releases: BTreeMap<String, Release>,
    pub replicas: BTreeMap<NodeId, ReplicaState>,
    /// Replica count set by analytics/operators; `None` = the pins' minimum.
    pub target_override: Option<u8>,
    pub preferred_regions: Vec<String>,
    /// Origins of the most recent pin request, for `swarm/connect`.
    pub origins: Vec<String>,
    /// Sequence number the next pin of this CID gets (its bucket is `seq / PIN_BUCKET`).
    pub next_seq: u64,
    /// Hash of the view (status, info, delegates) propagated to the pin rows, or being
    /// propagated (the view itself is in the pin rows; `PinView::digest`).
    pub view: Option<u64>,
    /// `Some` while pin rows remain that do not show `view` yet.
    pub propagation: Option<Cursor>,
    /// The view changed while a walk was under way: walk again from the start once it ends.
    pub rewalk: bool,
    /// Whether the CID is in its partition's pending set (the repair loop's work list): the
    /// shard writes the set only when this changes, so settled CIDs cost no pending-set write.
    pub pending: bool,
    /// When a failed replica of this CID is retried next (ns since the epoch), if one will be
    /// (`None`: no failed replica, or each ran out of automatic retries). Derived by the shard
    /// from the replicas and the retry policy ([`crate::retry::next_retry`]), like `pending`:
    /// while it is set, a CID without live replicas shows `queued`, not `failed`.
    pub retry_at_ns: Option<i64>,
}

/// The effect of one event on the pins of this CID, for the shard to persist.
#[derive(Debug, Clone, PartialEq)]
pub enum PinChange {
    /// A new pin; its status, info and delegates are filled in from the CID's view.
    Created(PinRow),
    /// The pin left the API (deleted, replaced or expired).
    Removed(PinRow),
    /// The pin's own fields changed (its expiry); it stays in the same pin bucket.
    Updated(PinRow),
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

    /// Number of live pins referencing the CID.
    pub fn pins(&self) -> u64 {
        self.bounds.iter().map(|b| b.pins).sum()
    }

    fn add_bound(&mut self, min: u8, max: u8) {
        match self
            .bounds
            .iter_mut()
            .find(|b| b.min == min && b.max == max)
        {
            Some(bound) => bound.pins += 1,
            None => {
                self.bounds.push(BoundCount { min, max, pins: 1 });
                self.bounds.sort_by_key(|b| (b.min, b.max));
            }
        }
    }

    fn remove_bound(&mut self, min: u8, max: u8) {
        if let Some(bound) = self
            .bounds
            .iter_mut()
            .find(|b| b.min == min && b.max == max)
        {
            bound.pins = bound.pins.saturating_sub(1);
        }
        self.bounds.retain(|b| b.pins > 0);
    }

    /// A pin of this CID left the API: a release it owes no longer waits for it to settle.
    fn pin_gone(&mut self, pin: &PinRow) {
        self.remove_bound(pin.replicas_min, pin.replicas_max);
        for release in self.releases.values_mut() {
            if release.by == pin.record.requestid {
                release.now = true;
            }
        }
    }

    /// Folds one event in. `pin` is the stored row of the pin the event names (request,
    /// replace, unpin), if it exists on this CID. Returns the pin row it creates or removes;
    /// the view every pin shows is derived afterwards with [`CidState::view`].
    pub fn apply(&mut self, offset: u64, event: &Event, pin: Option<&PinRow>) -> Option<PinChange> {
        self.apply_at(offset, 0, event, pin)
    }

    /// [`CidState::apply`] of an event whose envelope was created at `timestamp_ns`: the
    /// time a `ReplicaFailed` records, from which its retry backs off. (`apply` passes 0: a
    /// failure of unknown time is due for retry at once.)
    pub fn apply_at(
        &mut self,
        offset: u64,
        timestamp_ns: i64,
        event: &Event,
        pin: Option<&PinRow>,
    ) -> Option<PinChange> {
        if self.already_applied(offset) {
            return None;
        }
        self.applied_offset = Some(offset);
        match event {
            Event::PinRequested(request) => {
                if pin.is_some() {
                    return None;
                }
                self.add_bound(request.replicas_min, request.replicas_max);
                if !request.origins.is_empty() {
                    self.origins = request.origins.clone();
                }
                if let Some(replaces) = &request.replaces {
                    let cid = crate::values::canonical_cid(&replaces.cid)
                        .unwrap_or_else(|_| replaces.cid.clone());
                    self.releases.insert(
                        replaces.requestid.clone(),
                        Release {
                            cid,
                            by: request.requestid.clone(),
                            now: false,
                        },
                    );
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                return Some(PinChange::Created(PinRow::new(request, seq / PIN_BUCKET)));
            }
            Event::PinReplaced { requestid, .. } => {
                let pin = pin?;
                self.pin_gone(pin);
                self.holds.insert(
                    requestid.clone(),
                    PinRef {
                        owner: pin.record.owner.clone(),
                        replicas_min: pin.replicas_min,
                        replicas_max: pin.replicas_max,
                        replaces: pin.replaces.clone(),
                    },
                );
                return Some(PinChange::Removed(pin.clone()));
            }
            Event::ReplaceSettled { requestid } => {
                self.holds.remove(requestid);
                self.releases.remove(requestid);
            }
            Event::UnpinRequested { .. } => {
                let pin = pin?;
                self.pin_gone(pin);
                return Some(PinChange::Removed(pin.clone()));
            }
            Event::PinExpired { expires_ns, .. } => {
                // Like an unpin, without the owner check; only if the pin still expires by
                // then (its expiry may have been moved later since the entry was written).
                let pin = pin?;
                if pin.expiry().is_none_or(|expiry| expiry.ns() > *expires_ns) {
                    return None;
                }
                self.pin_gone(pin);
                return Some(PinChange::Removed(pin.clone()));
            }
            Event::PinExpirySet { expires_ns, .. } => {
                let pin = pin?;
                let expiry = expires_ns.and_then(|ns| crate::values::Expiry::from_ns(ns).ok());
                return Some(PinChange::Updated(pin.clone().with_expiry(expiry)));
            }
            Event::ReplicasAllocated { nodes, .. } => {
                for node in nodes {
                    let replica = self
                        .replicas
                        .entry(node.clone())
                        .or_insert_with(|| ReplicaState::new(ReplicaStatus::Allocated));
                    if replica.status == ReplicaStatus::Failed {
                        replica.status = ReplicaStatus::Allocated;
                    }
                }
            }
            Event::ReplicaPinned { node, attempts, .. } => {
                if let Some(replica) = self.replicas.get_mut(node) {
                    replica.status = ReplicaStatus::Pinned;
                    replica.attempts = replica.attempts.saturating_add(*attempts);
                    replica.last_error = None;
                    replica.failures = 0;
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
                        // One round per failure of an allocated replica: a repeated outcome
                        // of the same round does not count twice.
                        replica.failures = replica.failures.saturating_add(1);
                        replica.failed_ns = timestamp_ns;
                    }
                    replica.attempts = replica.attempts.saturating_add(*attempts);
                    replica.last_error = Some(reason.clone());
                }
            }
            Event::PinRecoverRequested { .. } => {
                // Every failed replica starts its rounds over: due for a retry at once.
                for replica in self.replicas.values_mut() {
                    if replica.status == ReplicaStatus::Failed {
                        replica.failures = 0;
                    }
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
                // 0 clears the target (back to the pins' min, whatever it is by then).
                self.target_override = (*replicas > 0).then_some(*replicas);
                self.preferred_regions = preferred_regions.clone();
            }
            Event::ReplicaMissing { node, reason } => {
                // Only a replica still recorded as pinned is pinned again: one the planner has
                // since unpinned, or that is already being pinned, needs nothing.
                if let Some(replica) = self.replicas.get_mut(node) {
                    if replica.status == ReplicaStatus::Pinned {
                        replica.status = ReplicaStatus::Allocated;
                        replica.last_error = Some(format!("missing on the node: {reason}"));
                    }
                }
            }
            Event::NodeRegistered(_)
            | Event::NodeStatusChanged { .. }
            | Event::NodeRemoved { .. }
            | Event::UnknownPinRemoved { .. } => {}
        }
        None
    }

    /// The replica bounds of this CID: the largest `min` and the largest `max` among its pins
    /// and holds (`max` never below `min`); `None` when nothing references it.
    pub fn replica_bounds(&self) -> Option<(u8, u8)> {
        // Holds (replaced pins awaiting their replacement) keep their bounds meanwhile.
        let bounds = || {
            self.bounds.iter().map(|b| (b.min, b.max)).chain(
                self.holds
                    .values()
                    .map(|p| (p.replicas_min, p.replicas_max)),
            )
        };
        let min = bounds().map(|(min, _)| min).max()?;
        let max = bounds().map(|(_, max)| max).max().unwrap_or(min).max(min);
        Some((min, max))
    }

    /// Replica count this CID should have: the analytics target if any, clamped to the pins'
    /// bounds; otherwise the largest `replicas_min` among its pins.
    pub fn desired_replicas(&self) -> usize {
        let (min, max) = self.replica_bounds().unwrap_or((0, 0));
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
            // Failed for good only once no automatic retry remains; until then it waits.
            if self.retry_at_ns.is_some() {
                return PinStatus::Queued;
            }
            return PinStatus::Failed;
        }
        PinStatus::Queued
    }

    /// True once the pins of this CID show a final status (pinned or failed).
    pub fn settled(&self) -> bool {
        matches!(self.pin_status(), PinStatus::Pinned | PinStatus::Failed)
    }

    /// What every pin of this CID shows: status, `info` and `delegates`.
    pub fn view(&self, node_addresses: &dyn Fn(&str) -> Vec<String>) -> PinView {
        PinView {
            status: self.pin_status(),
            info: self.pin_info(),
            delegates: self.delegates(node_addresses),
        }
    }

    /// Multiaddrs a client should connect to (the spec's `delegates`): the nodes that hold the
    /// content, then, until the pin is `pinned`, the nodes allocated to pin it
    /// (`node_addresses` gives a node's current addresses), each group in placement order;
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
        let pinned = of_status(ReplicaStatus::Pinned).flat_map(|node| node_addresses(node));
        // Nodes still fetching need the client's data; once the pin is `pinned`, a node still
        // allocated (an extra replica on its way in or out) is not one the client needs.
        let fetching = self.pin_status() != PinStatus::Pinned;
        let allocated = of_status(ReplicaStatus::Allocated)
            .filter(|_| fetching)
            .flat_map(|node| node_addresses(node));
        crate::values::dialable_first(pinned.chain(allocated), crate::values::MAX_ORIGINS)
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
        // The short form of the optimizer's decision (the admin API has the long one).
        if !self.preferred_regions.is_empty() {
            info.insert("replicas_regions".into(), self.preferred_regions.join(","));
        }
        // Every tenant pinning the CID sees this: the reasons' categories only, never a node
        // id or a node's raw error ([`crate::disclosure`]; admins read the raw reasons in the
        // pin's history).
        let reasons = self
            .replicas
            .values()
            .filter(|r| r.status == ReplicaStatus::Failed)
            .filter_map(|r| r.last_error.as_deref());
        if let Some(failure) = crate::disclosure::public_failure(reasons) {
            info.insert("failure".into(), failure);
        }
        if let Some(retry_at_ns) = self.retry_at_ns {
            info.insert("retry_at_ns".into(), retry_at_ns.to_string());
        }
        info
    }

    /// True when nothing references the CID, no replica remains and no release is owed: the
    /// row can be deleted.
    pub fn is_garbage(&self) -> bool {
        !self.is_referenced() && self.replicas.is_empty() && self.releases.is_empty()
    }

    /// True while anything (a pin or a hold) needs the content.
    pub fn is_referenced(&self) -> bool {
        !self.bounds.is_empty() || !self.holds.is_empty()
    }
}

/// The pin an event names (request, replace, unpin): the shard looks its row up before
/// folding the event in.
pub fn named_pin(event: &Event) -> Option<&str> {
    match event {
        Event::PinRequested(request) => Some(&request.requestid),
        Event::PinReplaced { requestid, .. }
        | Event::UnpinRequested { requestid, .. }
        | Event::PinExpired { requestid, .. }
        | Event::PinExpirySet { requestid, .. } => Some(requestid),
        _ => None,
    }
}

/// The state-dependent admission rule: only a pin's owner may unpin it (`pin` is the stored
/// row of the named pin). An unpin of a pin that is already gone is a harmless no-op, not a
/// rejection.
pub fn check(event: &Event, pin: Option<&PinRow>) -> Result<(), crate::command::Rejection> {
    if let (Event::UnpinRequested { requestid, owner }, Some(pin)) = (event, pin) {
        if &pin.record.owner != owner {
            return Err(crate::command::Rejection::NotOwner {
                requestid: requestid.clone(),
            });
        }
    }
    Ok(())
}
