//! One-time migration of CID states kept under a non-canonical CID spelling.
//!
//! Releases before the canonical CID key (CIDv1, base32) keyed a CID's state, journal and log
//! records by the text the client sent, so `Qm…` (CIDv0), `zb2…` and `bafk…` of one content were
//! separate states — and deleting one spelling's pin could unpin the content another spelling
//! still needed. This pass, run at startup before any shard consumes, folds every such state
//! into the canonical one ([`CidState::absorb`]), moving its counters to the canonical key's
//! partition and re-pointing its pin rows' indexes. Pin rows keep the spelling (responses echo
//! it). Records still in the log under an old spelling are forwarded by the shard (see
//! `shard.rs`). Journal entries stay under the old key; the pin history reads both.
//!
//! Crash safety: each legacy key is migrated in two writes — (1) the canonical side (merged
//! state, its pin rows, counters as the difference of the merged state's contributions and the
//! canonical state's before), (2) the legacy side (its counters decremented, its state and
//! pending entry deleted). A crash after (1) reruns both: absorbing again is idempotent, so (1)
//! writes a zero difference, and (2) runs once. The whole pass is skipped once its marker
//! checkpoint is set.

use std::collections::BTreeMap;

use pinhive_domain::{canonical_cid, CidState, PinStatus, ReplicaStatus};
use pinhive_store::{
    CidWrite, CounterRow, PinWrite, ShardBatch, Store, StoreError, SCOPE_ALL_PINS,
    SCOPE_REPLICAS_DESIRED, SCOPE_REPLICAS_PINNED,
};

/// Checkpoint row marking the pass done (consumer name; partition 0; value 1).
pub const MARKER: &str = "#migration/canonical-cid-keys";
/// Checkpoint row (per partition): legacy-keyed records below this offset were forwarded.
pub const FORWARD_MARK: &str = "#migration/forwarded";

/// Checkpoint row (consumer name; partition = the legacy key's) recording the offset below
/// which the legacy state had applied its records when it was folded in: the shard does not
/// forward those again.
pub fn applied_row(legacy_key: &str) -> String {
    format!("#migration/applied/{legacy_key}")
}
const PAGE: usize = 1024;

/// What the pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub examined: u64,
    pub migrated: u64,
    pub already_done: bool,
}

/// Runs the pass unless its marker is set. Blocking (store I/O): call from a blocking thread,
/// before the orchestrator starts.
pub fn canonical_cid_keys(
    store: &dyn Store,
    partitions: u32,
) -> Result<MigrationReport, StoreError> {
    if store.checkpoint(MARKER, 0)?.is_some() {
        return Ok(MigrationReport {
            already_done: true,
            ..MigrationReport::default()
        });
    }
    let mut report = MigrationReport::default();
    let mut after: Option<String> = None;
    loop {
        let keys = store.cid_keys(after.as_deref(), PAGE)?;
        let Some(last) = keys.last().cloned() else {
            break;
        };
        for key in keys {
            report.examined += 1;
            if migrate_key(store, partitions, &key, Step::Both)? {
                report.migrated += 1;
            }
        }
        after = Some(last);
    }
    store.set_checkpoint(MARKER, 0, 1)?;
    if report.migrated > 0 {
        tracing::info!(
            examined = report.examined,
            migrated = report.migrated,
            "migrated CID states to canonical keys"
        );
    }
    Ok(report)
}

/// Which writes of one key's migration to make (tests stop after the first, as a crash would).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    CanonicalSideOnly,
    Both,
}

/// Migrates the state under `key` if `key` is a CID spelled non-canonically. Returns whether
/// it did. Keys that do not parse as CIDs are left alone.
pub fn migrate_key(
    store: &dyn Store,
    partitions: u32,
    key: &str,
    step: Step,
) -> Result<bool, StoreError> {
    let canonical = match canonical_cid(key) {
        Ok(canonical) if canonical != key => canonical,
        _ => return Ok(false),
    };
    let Some(legacy) = store.load_cid(key)? else {
        return Ok(false);
    };
    let legacy_partition = pinhive_log::partition_for(key.as_bytes(), partitions);
    let canonical_partition = pinhive_log::partition_for(canonical.as_bytes(), partitions);
    let before = store
        .load_cid(&canonical)?
        .unwrap_or_else(|| CidState::new(canonical.clone()));
    let mut merged = before.clone();
    merged.absorb(legacy.clone());

    // (1) The canonical side.
    let mut batch = ShardBatch {
        partition: canonical_partition,
        ..ShardBatch::default()
    };
    let mut deltas = contributions(&merged);
    for (scope, value) in contributions(&before) {
        *deltas.entry(scope).or_default() -= value;
    }
    batch.counters = counter_rows(store, canonical_partition, deltas)?;
    let (status, info) = (merged.pin_status(), merged.pin_info());
    for requestid in merged.pins.keys() {
        let Some(old) = store.get_pin(requestid)? else {
            continue;
        };
        let mut new = old.clone();
        new.status = status;
        new.info = info.clone();
        // Old rows' CID index entries were keyed by the spelling; `Put` writes the canonical
        // one (the stale entry is filtered on read, like any stale index entry).
        batch.pins.push(PinWrite::Put {
            old: Some(old),
            new,
        });
    }
    batch.pending.push((canonical.clone(), true));
    batch.cids.push(CidWrite::Put(merged));
    store.write_shard_batch(&batch)?;
    if step == Step::CanonicalSideOnly {
        return Ok(true);
    }

    // (2) The legacy side. First remember how far the legacy state had applied its partition,
    // so records at or below that offset still in the log are not forwarded and applied again.
    if let Some(applied) = legacy.applied_offset {
        store.set_checkpoint(&applied_row(key), legacy_partition, applied + 1)?;
    }
    let negated = contributions(&legacy)
        .into_iter()
        .map(|(scope, value)| (scope, -value))
        .collect();
    store.write_shard_batch(&ShardBatch {
        partition: legacy_partition,
        counters: counter_rows(store, legacy_partition, negated)?,
        cids: vec![CidWrite::Delete {
            cid: key.to_string(),
        }],
        pending: vec![(key.to_string(), false)],
        ..ShardBatch::default()
    })?;
    Ok(true)
}

/// What one CID state adds to the counters, exactly as the shard counts it: one per pin in
/// the state's status (per owner and all owners), its desired and its pinned replicas.
fn contributions(state: &CidState) -> BTreeMap<(String, PinStatus), i64> {
    let mut out: BTreeMap<(String, PinStatus), i64> = BTreeMap::new();
    let status = state.pin_status();
    for pin in state.pins.values() {
        *out.entry((pin.owner.clone(), status)).or_default() += 1;
        *out.entry((SCOPE_ALL_PINS.to_string(), status)).or_default() += 1;
    }
    *out.entry((SCOPE_REPLICAS_DESIRED.to_string(), PinStatus::Pinned))
        .or_default() += state.desired_replicas() as i64;
    *out.entry((SCOPE_REPLICAS_PINNED.to_string(), PinStatus::Pinned))
        .or_default() += state.count(ReplicaStatus::Pinned) as i64;
    out
}

fn counter_rows(
    store: &dyn Store,
    partition: u32,
    deltas: BTreeMap<(String, PinStatus), i64>,
) -> Result<Vec<CounterRow>, StoreError> {
    let mut rows = Vec::new();
    for ((owner, status), delta) in deltas {
        if delta == 0 {
            continue;
        }
        let current = store
            .counter(&owner, status, partition)?
            .map(|row| row.value)
            .unwrap_or(0);
        rows.push(CounterRow {
            owner,
            status,
            partition,
            value: current + delta,
            offset: 0,
        });
    }
    Ok(rows)
}
