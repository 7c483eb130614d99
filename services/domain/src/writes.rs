//! What one CID's part of a shard batch writes: the pure rules the shard's I/O shell follows.
//!
//! After a batch's events are folded into a CID's state, the CID's pins must show its new
//! view (status, `info`, `delegates`) and the partition's counters must follow the pin rows.
//! A CID may be referenced by any number of pins, so the view is not written to all of them
//! at once: new pins get it as they are created, and the existing ones are walked in steps of
//! at most [`PROPAGATE_STEP`] pins per batch (the cursor lives in the CID state, so the walk
//! goes on in later batches and from the repair loop; a view change during a walk adds one
//! more pass over the pins it had passed). Every event therefore costs a bounded number of store operations, and a listing
//! may show a CID's old status on some of its pins for as long as the walk takes (a CID with
//! at most [`PROPAGATE_STEP`] pins, the common case, is updated in the same batch).
//!
//! Counters move with the rows they count, by the same rule: +1 for a created row, −1 for a
//! removed one, −1/+1 for a row whose status the walk changes, all relative to the
//! *committed* rows (see [`crate::rows`]), so a retried batch produces the same deltas.

use pinhive_events::NodeId;

use crate::pin::PinStatus;
use crate::rows::{PinRow, PinView};
use crate::state::{CidState, Cursor, ReplicaStatus};

/// Most existing pin rows of one CID a batch rewrites to show the CID's new view.
pub const PROPAGATE_STEP: usize = 64;

/// Where this batch's walk over the CID's existing pins starts, if there is one: where the
/// walk under way stopped (a view change does not restart it: the pins behind its cursor get
/// a second pass, see [`derive_writes`], so a view that keeps changing cannot keep the walk
/// from reaching the end); from the start when the view changed and pins already exist.
pub fn walk_start(before: &CidState, after: &CidState, view: &PinView) -> Option<Cursor> {
    match &after.propagation {
        Some(cursor) => Some(cursor.clone()),
        None => (after.view != Some(view.digest()) && before.pins() > 0).then(Cursor::default),
    }
}

/// Everything [`derive_writes`] needs for one CID.
pub struct CidInput<'a> {
    /// The committed state before the batch.
    pub before: &'a CidState,
    /// The state after folding the batch's events in.
    pub after: CidState,
    /// The view `after` shows (`CidState::view`).
    pub view: PinView,
    /// Pins created by this batch and still live at its end.
    pub created: Vec<PinRow>,
    /// Committed pins this batch removed (deleted or replaced).
    pub removed: Vec<PinRow>,
    /// The committed rows of the walk's next step (from [`walk_start`]; at most
    /// [`PROPAGATE_STEP`], none of them created or removed by this batch).
    pub step: Vec<PinRow>,
    /// Where the walk goes on after `step`; `None` when it reached the end.
    pub step_end: Option<Cursor>,
    /// Expiry-index entries (request id, time) that the batch's `PinExpired` events name:
    /// carried out or moot, they go whether or not the pin went.
    pub expired: Vec<(String, i64)>,
}

/// An expiry-index change for one pin of the CID: it has (`present`) or no longer has an entry
/// at `expires_ns`. The index is a superset of the live pins' expiries: an entry left behind
/// (a crash, a moved expiry) is harmless, since the shard checks the pin when the entry's
/// `PinExpired` comes back and deletes the entry then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiryIndexChange {
    pub requestid: String,
    pub expires_ns: i64,
    pub present: bool,
}

/// A pin row write: the committed row (if any) and the new value (`None`: delete).
#[derive(Clone, Debug, PartialEq)]
pub struct PinRowWrite {
    pub committed: Option<PinRow>,
    pub new: Option<PinRow>,
}

/// What one CID's part of a batch writes.
#[derive(Clone, Debug, PartialEq)]
pub struct CidWrites {
    /// The state to store (delete the row when `is_garbage()`).
    pub state: CidState,
    pub pins: Vec<PinRowWrite>,
    /// Per-owner pin count changes by status.
    pub owner_deltas: Vec<(String, PinStatus, i64)>,
    pub replicas_desired_delta: i64,
    pub replicas_pinned_delta: i64,
    /// Node-index membership changes (the node now holds, or no longer holds, an allocated or
    /// pinned replica), in node order; each is also a ±1 of the node's replica counter.
    pub node_index: Vec<(NodeId, bool)>,
    /// Expiry-index changes, in (time, request id) order: entries of pins created (or whose
    /// expiry was set) by the batch, removed entries of pins that went or whose expiry moved,
    /// and the entries the batch's `PinExpired` events name.
    pub expiry_index: Vec<ExpiryIndexChange>,
}

/// The rows and counter changes of one CID's part of a batch (see the module docs).
pub fn derive_writes(input: CidInput<'_>) -> CidWrites {
    let CidInput {
        before,
        mut after,
        view,
        created,
        removed,
        step,
        step_end,
        expired,
    } = input;
    let expiry_index = expiry_index_changes(&created, &removed, expired);
    let mut pins = Vec::with_capacity(created.len() + removed.len() + step.len());
    let mut owner_deltas = Vec::new();
    let mut removed = removed;
    for row in created {
        let row = row.with_view(&view);
        owner_deltas.push((row.record.owner.clone(), view.status, 1));
        // A request id removed and requested again within the batch: one row replaced.
        let committed = removed
            .iter()
            .position(|old| old.record.requestid == row.record.requestid)
            .map(|i| removed.swap_remove(i));
        if let Some(old) = &committed {
            owner_deltas.push((old.record.owner.clone(), old.record.status, -1));
        }
        pins.push(PinRowWrite {
            committed,
            new: Some(row),
        });
    }
    for row in removed {
        owner_deltas.push((row.record.owner.clone(), row.record.status, -1));
        pins.push(PinRowWrite {
            committed: Some(row),
            new: None,
        });
    }
    let walking = walk_start(before, &after, &view).is_some();
    // A view change while a walk is under way: the pins it already passed show an older view
    // and get another pass once it reaches the end.
    let digest = view.digest();
    if after.view != Some(digest) && after.propagation.is_some() {
        after.rewalk = true;
    }
    for row in step {
        if row.shows(&view) {
            continue;
        }
        if row.record.status != view.status {
            owner_deltas.push((row.record.owner.clone(), row.record.status, -1));
            owner_deltas.push((row.record.owner.clone(), view.status, 1));
        }
        pins.push(PinRowWrite {
            new: Some(row.clone().with_view(&view)),
            committed: Some(row),
        });
    }
    after.propagation = if walking { step_end } else { None };
    if after.propagation.is_none() && after.rewalk {
        after.propagation = Some(Cursor::default());
        after.rewalk = false;
    }
    after.view = Some(digest);
    let replicas_desired_delta = after.desired_replicas() as i64 - before.desired_replicas() as i64;
    let replicas_pinned_delta =
        after.count(ReplicaStatus::Pinned) as i64 - before.count(ReplicaStatus::Pinned) as i64;
    let node_index = node_index_changes(before, &after);
    CidWrites {
        state: after,
        pins,
        owner_deltas,
        replicas_desired_delta,
        replicas_pinned_delta,
        node_index,
        expiry_index,
    }
}

/// The expiry-index side of a batch: entries of pins gone or moved go, entries named by
/// `PinExpired` events go, and every live pin of the batch with an expiry has its entry (which
/// wins over a removal of the same entry: a pin rewritten with the same expiry).
fn expiry_index_changes(
    created: &[PinRow],
    removed: &[PinRow],
    expired: Vec<(String, i64)>,
) -> Vec<ExpiryIndexChange> {
    let mut changes: std::collections::BTreeMap<(i64, String), bool> = expired
        .into_iter()
        .map(|(requestid, expires_ns)| ((expires_ns, requestid), false))
        .collect();
    for row in removed {
        if let Some(expiry) = row.expiry() {
            changes.insert((expiry.ns(), row.record.requestid.clone()), false);
        }
    }
    for row in created {
        if let Some(expiry) = row.expiry() {
            changes.insert((expiry.ns(), row.record.requestid.clone()), true);
        }
    }
    changes
        .into_iter()
        .map(|((expires_ns, requestid), present)| ExpiryIndexChange {
            requestid,
            expires_ns,
            present,
        })
        .collect()
}

/// The nodes holding an allocated or pinned replica of the CID (what the node index lists).
pub fn held_on(state: &CidState) -> impl Iterator<Item = &NodeId> {
    state
        .replicas
        .iter()
        .filter(|(_, r)| matches!(r.status, ReplicaStatus::Allocated | ReplicaStatus::Pinned))
        .map(|(node, _)| node)
}

/// Which nodes gained (`true`) or lost (`false`) the CID between two states.
fn node_index_changes(before: &CidState, after: &CidState) -> Vec<(NodeId, bool)> {
    let old: std::collections::BTreeSet<&NodeId> = held_on(before).collect();
    let new: std::collections::BTreeSet<&NodeId> = held_on(after).collect();
    let mut changes: Vec<(NodeId, bool)> = new
        .difference(&old)
        .map(|node| ((*node).clone(), true))
        .chain(old.difference(&new).map(|node| ((*node).clone(), false)))
        .collect();
    changes.sort();
    changes
}
