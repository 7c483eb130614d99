//! The shard actor: owns the CIDs of one log partition.
//!
//! Runs on its own thread (`SyncArbiter`), because applying a batch does blocking store I/O.
//! It is a thin shell around the domain: it folds each event into its CID's state
//! (`CidState::apply`), asks `derive_writes` what the batch writes for each CID and `plan`
//! what must happen next, and persists it all in the commit protocol of the store crate:
//! the attempt (the rows it will write), the rows, then the commit (batch number, checkpoint,
//! counters) — only then are the planned actions handed back to the consumer. A batch that
//! failed part-way is rolled back to the committed state before the next one starts.
//! CID states come from the process-wide byte-bounded [`StateCache`].

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;

use actix::prelude::*;
use lru::LruCache;
use pinhive_domain::state::{check, named_pin, PinChange};
use pinhive_domain::{
    admit, derive_writes, legacy, needs_work, plan, walk_start, Action, CidInput, CidState, Legacy,
    PinRow, PinStatus, PlanContext, Provenance, PROPAGATE_STEP,
};
use pinhive_events::codec::{self, ContentType};
use pinhive_ipfs::NodeRegistry;
use pinhive_log::{Log, Record, StoredRecord};
use pinhive_store::{
    node_scope, Attempt, CidWrite, Commit, CommitState, CounterRow, DeadLetter, JournalEntry,
    NodeCidWrite, PinWrite, ShardBatch, Store, StoreError, Undo, SCOPE_ALL_PINS,
    SCOPE_REPLICAS_DESIRED, SCOPE_REPLICAS_PINNED,
};

use crate::cache::StateCache;
use crate::metrics::METRICS;
use crate::quota::Entry;
use crate::retry::RetryTimers;
use pinhive_domain::quota::Admission;

/// An action planned for one CID, for the consumer to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedAction {
    pub cid: String,
    pub action: Action,
    pub traceparent: Option<String>,
    /// For a pin: the owner whose share of the node's slots it uses (the owner of one of the
    /// CID's oldest pins, see [`ShardActor::slot_owner`]); `None` for other actions.
    pub owner: Option<String>,
}

/// Sent by the partition's consumer with the next records in log order. The reply comes after
/// the state and the checkpoint are persisted.
#[derive(Message)]
#[rtype(result = "Result<BatchOutcome, StoreError>")]
pub struct ApplyBatch {
    pub records: Vec<StoredRecord>,
}

#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Offset the consumer reads from next (also the persisted checkpoint).
    pub next_offset: u64,
    pub actions: Vec<PlannedAction>,
    pub applied: usize,
    pub dead_lettered: usize,
    /// Published by the consumer after the batch is persisted (Kafka: dead-letter topic).
    pub dead_letters: Vec<pinhive_log::DeadLetterRecord>,
    /// The batch stopped at a record a later pinhive release wrote (`next_offset` is that
    /// record's): the partition waits there for an upgraded instance.
    pub held: Option<String>,
}

/// Sent by the repair loop: plan these CIDs again from their persisted state.
#[derive(Message)]
#[rtype(result = "Result<Vec<PlannedAction>, StoreError>")]
pub struct Replan {
    pub cids: Vec<String>,
}

/// Sent by a node walk: plan again those of these CIDs (listed in `node`'s index) whose
/// urgency is `urgency` (`Urgency::Met`: every CID, e.g. a node that came back), and delete
/// index entries of CIDs that hold no replica on `node` any more.
#[derive(Message)]
#[rtype(result = "Result<NodeWalkStep, StoreError>")]
pub struct WalkNode {
    pub node: String,
    pub cids: Vec<String>,
    pub urgency: pinhive_domain::Urgency,
    /// A rebalance walk instead: plan, for each CID that should move its replica on `node` to
    /// this joined node ([`pinhive_domain::rebalance::source`]), the allocation there (the
    /// plan unpins `node`'s replica once the new one is pinned). Nothing else is planned.
    pub rebalance_to: Option<String>,
}

/// What one step of a node walk found and planned.
#[derive(Debug, Default)]
pub struct NodeWalkStep {
    pub actions: Vec<PlannedAction>,
    /// CIDs of the urgency asked for, planned.
    pub planned: usize,
    /// CIDs of another urgency, left for their pass.
    pub skipped: usize,
    /// Index entries of CIDs without a replica on the node, deleted.
    pub stray: usize,
}

/// Sent when this instance stops owning the partition: cached states may go stale, since
/// another instance writes them from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClearCache;

/// Sent by the partition's runner once it has claimed the partition in the store
/// (`Store::claim_partition`), before any batch or repair of this ownership: every commit and
/// attempt the shard writes from then on carries `epoch`, so a write after another instance
/// claimed the partition fails with `StoreError::Fenced` and writes nothing.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Claimed {
    pub epoch: u64,
}

impl Handler<Claimed> for ShardActor {
    type Result = ();

    fn handle(&mut self, claimed: Claimed, _: &mut Self::Context) {
        // A new ownership starts from the store, not from what an earlier one cached.
        self.forget();
        self.expiry = crate::expiry::ExpiryMark::default();
        self.owner_epoch = claimed.epoch;
        self.snapshot.owner_epoch = claimed.epoch;
    }
}

impl Handler<ClearCache> for ShardActor {
    type Result = ();

    fn handle(&mut self, _: ClearCache, _: &mut Self::Context) {
        self.forget();
    }
}

/// Asks for the shard's observable snapshot (tests, metrics, admin API).
#[derive(Message)]
#[rtype(result = "ShardSnapshot")]
pub struct GetSnapshot;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShardSnapshot {
    pub partition: u32,
    pub next_offset: u64,
    /// CID states cached by the whole process (the cache is shared by every shard).
    pub cached_states: usize,
    pub events_applied: u64,
    pub events_skipped: u64,
    pub dead_lettered: u64,
    pub batches: u64,
    /// The owner epoch this shard's commits carry (0: unfenced).
    pub owner_epoch: u64,
}

/// Checkpoint row (per partition) of how far legacy-keyed records were forwarded.
pub const FORWARD_MARK: &str = "#migration/forwarded";

pub struct ShardActor {
    pub(crate) partition: u32,
    partitions: u32,
    pub(crate) store: Arc<dyn Store>,
    /// For forwarding legacy-keyed records only; the shard appends nothing else.
    log: Arc<dyn Log>,
    registry: NodeRegistry,
    min_free_bytes: u64,
    dial_private_origins: bool,
    retry: pinhive_domain::RetryPolicy,
    /// Wake-ups of this partition's CIDs waiting for a retry (shared with the repair task).
    timers: Arc<RetryTimers>,
    cache: StateCache,
    /// Committed counter values of this partition.
    counters: LruCache<(String, PinStatus), i64>,
    quota: Arc<crate::quota::QuotaGate>,
    feed: crate::feed::PinFeed,
    /// Whose share of the node slots a CID's pins use ([`ShardActor::slot_owner`]).
    slot_owners: LruCache<String, String>,
    /// The partition's commit row as last written (`None`: read it, and roll back an
    /// uncommitted attempt, before the next batch).
    commit: Option<CommitState>,
    /// The epoch of this instance's ownership of the partition, carried by every commit and
    /// attempt (0 until [`Claimed`]: unfenced).
    owner_epoch: u64,
    /// The partition's quarantined CIDs and why (`None`: read them before the next batch).
    quarantine: Option<HashMap<String, String>>,
    /// The CID whose record needed the stored row that could not be decoded, when the batch
    /// failed on one (see `Handler<ApplyBatch>`).
    blamed: Option<String>,
    snapshot: ShardSnapshot,
    /// How far the partition's expiry task has read the expiry index (see `crate::expiry`).
    pub(crate) expiry: crate::expiry::ExpiryMark,
}

/// What a shard is given besides its partition.
#[derive(Clone)]
pub struct ShardParts {
    pub partitions: u32,
    pub store: Arc<dyn Store>,
    /// For forwarding legacy-keyed records only.
    pub log: Arc<dyn Log>,
    pub registry: NodeRegistry,
    /// Shared by every shard of the process.
    pub cache: StateCache,
    pub min_free_bytes: u64,
    pub dial_private_origins: bool,
    /// When failed replicas are retried.
    pub retry: pinhive_domain::RetryPolicy,
    /// Shared by every shard and repair task of the process.
    pub timers: Arc<RetryTimers>,
    /// Per-owner quotas: checked here for external producers' pin requests.
    pub quota: Arc<crate::quota::QuotaGate>,
    /// Committed pin status changes, for live watchers ([`crate::feed`]).
    pub feed: crate::feed::PinFeed,
}

/// Counter rows a shard keeps in memory (per partition; owners × statuses touched).
const COUNTER_CACHE: usize = 4_096;
/// CIDs whose slot owner a shard keeps in memory.
const SLOT_OWNER_CACHE: usize = 4_096;

/// One CID touched by a batch.
struct Touched {
    /// Committed state before the batch.
    before: CidState,
    after: CidState,
    /// Whether a row exists for it in the store.
    stored: bool,
    /// Pins created by this batch (request ids; the rows are in the batch's pin slots).
    created: Vec<String>,
    /// Committed pins this batch removed.
    removed: Vec<PinRow>,
    /// Expiry-index entries named by the batch's `PinExpired` events (request id, time).
    expired: Vec<(String, i64)>,
}

/// The working set of one batch.
#[derive(Default)]
struct Work {
    touched: BTreeMap<String, Touched>,
    /// Pin rows the batch looked up or changed, by request id: their value within the batch.
    pins: HashMap<String, Option<PinRow>>,
    /// Planned by a node walk, which appends the allocations at the re-replication rate and
    /// walks again if one is lost: a CID missing replicas is not put in the pending set for
    /// that (the repair loop would allocate it again, unpaced, while it waits for a permit).
    node_walk: bool,
}

impl ShardActor {
    pub fn new(partition: u32, parts: ShardParts) -> Self {
        ShardActor {
            partition,
            partitions: parts.partitions,
            store: parts.store,
            log: parts.log,
            registry: parts.registry,
            min_free_bytes: parts.min_free_bytes,
            dial_private_origins: parts.dial_private_origins,
            retry: parts.retry,
            timers: parts.timers,
            quota: parts.quota,
            feed: parts.feed,
            cache: parts.cache,
            counters: LruCache::new(NonZeroUsize::new(COUNTER_CACHE).unwrap_or(NonZeroUsize::MIN)),
            slot_owners: LruCache::new(
                NonZeroUsize::new(SLOT_OWNER_CACHE).unwrap_or(NonZeroUsize::MIN),
            ),
            commit: None,
            owner_epoch: 0,
            quarantine: None,
            blamed: None,
            snapshot: ShardSnapshot {
                partition,
                ..ShardSnapshot::default()
            },
            expiry: crate::expiry::ExpiryMark::default(),
        }
    }

    /// Drops everything cached about this partition: the next batch reads the store again.
    fn forget(&mut self) {
        self.cache.clear_partition(self.partition);
        self.timers.clear(self.partition);
        self.counters.clear();
        self.commit = None;
        self.quarantine = None;
    }

    /// Why `cid` is quarantined, if it is. The cached list is a hint: a CID found in it is
    /// looked up again in the store once per batch, so an operator's clear takes effect at
    /// the next batch (`reread`).
    fn quarantined(&mut self, cid: &str, reread: &mut bool) -> Result<Option<String>, StoreError> {
        if self.quarantine.is_none() || (!*reread && self.quarantine_hint(cid)) {
            *reread = true;
            let entries = self.store.quarantined(self.partition)?;
            self.quarantine = Some(
                entries
                    .into_iter()
                    .map(|entry| (entry.cid, entry.reason))
                    .collect(),
            );
        }
        Ok(self
            .quarantine
            .as_ref()
            .and_then(|quarantine| quarantine.get(cid).cloned()))
    }

    fn quarantine_hint(&self, cid: &str) -> bool {
        self.quarantine
            .as_ref()
            .is_some_and(|quarantine| quarantine.contains_key(cid))
    }

    /// Remembers that a record of `cid` needed a stored row that could not be decoded.
    fn blame(&mut self, cid: &str, error: StoreError) -> StoreError {
        if error.is_corrupt() {
            self.blamed = Some(cid.to_string());
        }
        error
    }

    /// Quarantines `cid` (persisted) for the corrupt row `error` names.
    fn quarantine_cid(
        &mut self,
        cid: &str,
        error: &StoreError,
        offset: u64,
    ) -> Result<(), StoreError> {
        let reason = format!("quarantined CID: {error}");
        self.store.put_quarantine(&pinhive_store::Quarantine {
            partition: self.partition,
            cid: cid.to_string(),
            reason: reason.clone(),
            offset,
            quarantined_ns: pinhive_events::now_ns(),
        })?;
        tracing::error!(partition = self.partition, cid = %cid, error = %error, "stored row is corrupt; CID quarantined, its records are dead-lettered until an operator clears it (DELETE /admin/quarantine/{cid})");
        METRICS
            .quarantined
            .with_label_values(&[&self.partition.to_string()])
            .inc();
        self.quarantine
            .get_or_insert_with(HashMap::new)
            .insert(cid.to_string(), reason);
        Ok(())
    }

    fn context(&self) -> PlanContext {
        PlanContext {
            nodes: self.registry.views(),
            min_free_bytes: self.min_free_bytes,
            dial_private_origins: self.dial_private_origins,
            now_ns: pinhive_events::now_ns(),
            retry: self.retry,
        }
    }

    /// The partition's commit row, after rolling back an attempt that never committed.
    pub(crate) fn committed(&mut self) -> Result<CommitState, StoreError> {
        if let Some(commit) = &self.commit {
            return Ok(commit.clone());
        }
        let mut commit = self.store.committed(self.partition)?;
        if let Some(attempt) = commit.attempt.clone() {
            // The attempt may be a newer owner's batch in flight: a fenced shard must not
            // roll it back.
            self.check_owner(&commit)?;
            commit.attempt = None;
            self.roll_back(&attempt)?;
            self.store.commit(&Commit {
                partition: self.partition,
                state: commit.clone(),
                counters: Vec::new(),
                owner_epoch: self.owner_epoch,
            })?;
        }
        self.commit = Some(commit.clone());
        Ok(commit)
    }

    /// Fails with `StoreError::Fenced` if another instance has claimed the partition since
    /// this shard did: rewrites the commit row as read (`state`), conditioned on the owner
    /// epoch. Guards the row writes no attempt covers (a rollback, a pending-set cleanup),
    /// so a fenced shard does not start them. Nothing to check when unfenced.
    pub(crate) fn check_owner(&self, state: &CommitState) -> Result<(), StoreError> {
        if self.owner_epoch == 0 {
            return Ok(());
        }
        self.store.commit(&Commit {
            partition: self.partition,
            state: state.clone(),
            counters: Vec::new(),
            owner_epoch: self.owner_epoch,
        })
    }

    /// Puts every row an interrupted batch wrote back to its committed value, and removes the
    /// listing and pin-list entries of every value the batch may have left: the row as read
    /// back now, and the value the batch attempted to write.
    ///
    /// Every pin row the attempt names is rewritten, also one that reads back as its committed
    /// value, and the attempted value's entries go whatever the row reads back as: a write of
    /// the batch that failed may still land after this read (a timeout on ScyllaDB: a replica
    /// applies it late), and entries the batch wrote outlive a row put back by an earlier,
    /// interrupted rollback. Skipping such a row would let the late write stand — and the
    /// replay that follows would read it as committed. The store makes these writes final:
    /// everything written after a failure was returned wins over the failed write, wherever
    /// it lands in time (`Store::write_shard_batch`; ScyllaDB by write timestamp, see
    /// services/store-scylla/src/batch.rs).
    fn roll_back(&mut self, attempt: &Attempt) -> Result<(), StoreError> {
        let mut batch = ShardBatch {
            partition: self.partition,
            ..ShardBatch::default()
        };
        // Request id → its write in `batch.pins`: a row the batch wrote twice is put back to
        // its first undo value (its value before the batch), and every value it attempted goes.
        let mut pin_writes: HashMap<&str, usize> = HashMap::new();
        for undo in &attempt.undo {
            match undo {
                Undo::Pin {
                    requestid,
                    row,
                    attempted,
                } => {
                    let index = match pin_writes.get(requestid.as_str()) {
                        Some(index) => *index,
                        None => {
                            let mut write = PinWrite {
                                requestid: requestid.clone(),
                                old: None,
                                stale: Vec::new(),
                                new: row.clone(),
                            };
                            name_stale(&mut write, self.store.load_pin(requestid)?);
                            batch.pins.push(write);
                            pin_writes.insert(requestid.as_str(), batch.pins.len() - 1);
                            batch.pins.len() - 1
                        }
                    };
                    name_stale(&mut batch.pins[index], attempted.clone());
                    // The expiry entry of a restored pin: the batch may have deleted it.
                    if let Some(expiry) = row.as_ref().and_then(PinRow::expiry) {
                        let due_ns =
                            self.expiry
                                .due_ns(self.store.as_ref(), self.partition, expiry.ns())?;
                        batch.expiry.push(pinhive_store::ExpiryWrite {
                            due_ns,
                            cid: row
                                .as_ref()
                                .map(|row| row.record.canonical_cid())
                                .unwrap_or_default(),
                            requestid: requestid.clone(),
                            present: true,
                        });
                    }
                }
                Undo::Cid { cid, state } => {
                    // The pending set follows the state's flag (a batch writes the set only
                    // with a state row that changes the flag).
                    let pending = state.as_ref().is_some_and(|state| state.pending);
                    batch.pending.push((cid.clone(), pending));
                    // The node index lists (at least) the nodes the restored state holds the
                    // CID on: a removal the batch wrote is undone, so a node walk finds them.
                    for node in state.iter().flat_map(pinhive_domain::writes::held_on) {
                        batch.node_cids.push(NodeCidWrite {
                            node: node.clone(),
                            cid: cid.clone(),
                            present: true,
                        });
                    }
                    batch.cids.push(CidWrite {
                        cid: cid.clone(),
                        state: state.clone(),
                    });
                }
            }
        }
        tracing::warn!(
            partition = self.partition,
            batch = attempt.batch,
            rows = batch.len(),
            "rolling back a batch that did not commit"
        );
        self.store.write_shard_batch(&batch)
    }

    /// The committed state of `cid` (new if it has none), and whether a row exists.
    fn load(&mut self, cid: &str) -> Result<(CidState, bool), StoreError> {
        if let Some(state) = self.cache.get(cid) {
            METRICS.cache.with_label_values(&["hit"]).inc();
            return Ok((state, true));
        }
        METRICS.cache.with_label_values(&["miss"]).inc();
        Ok(match self.store.load_cid(cid)? {
            Some(state) => (state, true),
            None => (CidState::new(cid), false),
        })
    }

    /// The current value (within this batch) of pin `requestid`, if it is a pin of `cid`.
    fn pin_of(
        &self,
        work: &mut Work,
        requestid: &str,
        cid: &str,
    ) -> Result<Option<PinRow>, StoreError> {
        if !work.pins.contains_key(requestid) {
            let committed = self.store.load_pin(requestid)?;
            work.pins.insert(requestid.to_string(), committed);
        }
        Ok(work
            .pins
            .get(requestid)
            .and_then(Option::clone)
            .filter(|row| row.record.canonical_cid() == cid))
    }

    fn counter(&mut self, owner: &str, status: PinStatus) -> Result<i64, StoreError> {
        let key = (owner.to_string(), status);
        if let Some(value) = self.counters.get(&key) {
            return Ok(*value);
        }
        let value = self
            .store
            .counter(owner, status, self.partition)?
            .unwrap_or(0);
        self.counters.put(key, value);
        Ok(value)
    }

    /// Mirrors an aggregate counter row into its gauge.
    fn publish_gauge(&self, scope: &str, status: PinStatus, value: i64) {
        let partition = self.partition.to_string();
        match scope {
            SCOPE_ALL_PINS => METRICS
                .pins
                .with_label_values(&[status.as_str(), &partition])
                .set(value),
            SCOPE_REPLICAS_DESIRED => METRICS
                .replicas
                .with_label_values(&["desired", &partition])
                .set(value),
            SCOPE_REPLICAS_PINNED => METRICS
                .replicas
                .with_label_values(&["pinned", &partition])
                .set(value),
            _ => {}
        }
    }

    /// Loads the aggregate counters of this partition into the gauges (at start).
    fn publish_aggregates(&mut self) -> Result<(), StoreError> {
        for status in PinStatus::ALL {
            let value = self.counter(SCOPE_ALL_PINS, status)?;
            self.publish_gauge(SCOPE_ALL_PINS, status, value);
        }
        for scope in [SCOPE_REPLICAS_DESIRED, SCOPE_REPLICAS_PINNED] {
            let value = self.counter(scope, PinStatus::Pinned)?;
            self.publish_gauge(scope, PinStatus::Pinned, value);
        }
        Ok(())
    }

    fn dead_letter(&mut self, record: &StoredRecord, reason: String) -> Result<(), StoreError> {
        let (key, prefix) = match &record.record {
            Ok(r) => (
                String::from_utf8_lossy(&r.key).into_owned(),
                r.value
                    .iter()
                    .take(64)
                    .map(|b| format!("{b:02x}"))
                    .collect(),
            ),
            Err(_) => (String::new(), String::new()),
        };
        tracing::warn!(partition = self.partition, offset = record.offset, reason = %reason, "dead-lettering log record");
        self.snapshot.dead_lettered += 1;
        METRICS
            .dead_letters
            .with_label_values(&[&self.partition.to_string()])
            .inc();
        self.store.put_dead_letter(&DeadLetter {
            partition: self.partition,
            offset: record.offset,
            reason,
            key,
            value_prefix_hex: prefix,
            dead_lettered_ns: pinhive_events::now_ns(),
        })
    }

    /// Whether the legacy-keyed record at `offset` still has to be forwarded: not if this
    /// partition forwarded it already (a batch retried after its forwards were appended: the
    /// forward mark).
    fn forward_needed(&mut self, offset: u64) -> Result<bool, StoreError> {
        let forwarded = self.store.checkpoint(FORWARD_MARK, self.partition)?;
        Ok(forwarded.is_none_or(|below| offset >= below))
    }

    /// Appends the re-keyed records to their canonical partitions, then records how far this
    /// partition has forwarded — both before the batch and its checkpoint are persisted, so a
    /// crash forwards again rather than losing a record. Only a crash between the append and
    /// the mark can forward a record twice (a repeat is harmless for these request and decision
    /// events: pins and replicas are keyed by request id and node).
    fn forward_legacy(&mut self, forwards: Vec<(u64, Record)>) -> Result<(), StoreError> {
        let Some(last) = forwards.last().map(|(offset, _)| *offset) else {
            return Ok(());
        };
        let count = forwards.len();
        let records = forwards.into_iter().map(|(_, record)| record).collect();
        // The log adapters' appends need no async runtime; this thread is the shard's own.
        futures::executor::block_on(self.log.append(records)).map_err(|error| {
            StoreError::Backend(format!("forwarding {count} legacy-keyed records: {error}"))
        })?;
        self.store
            .set_checkpoint(FORWARD_MARK, self.partition, last + 1)?;
        tracing::info!(
            partition = self.partition,
            count,
            "forwarded legacy-keyed records to their canonical keys"
        );
        Ok(())
    }

    /// Dead-letters a record the shard cannot apply: in the store, and (Kafka) on the
    /// dead-letter topic once the batch is persisted. The shard goes on with the next record.
    fn reject(
        &mut self,
        record: &StoredRecord,
        reason: String,
        outcome: &mut BatchOutcome,
    ) -> Result<(), StoreError> {
        if let Ok(raw) = &record.record {
            outcome.dead_letters.push(pinhive_log::DeadLetterRecord {
                partition: self.partition,
                offset: record.offset,
                key: raw.key.clone(),
                value: raw.value.clone(),
                content_type: raw.content_type,
                reason: reason.clone(),
            });
        }
        self.dead_letter(record, reason)?;
        outcome.dead_lettered += 1;
        Ok(())
    }

    fn apply_batch(&mut self, mut records: Vec<StoredRecord>) -> Result<BatchOutcome, StoreError> {
        // A record a later release wrote is applied by that release, never dead-lettered: the
        // batch ends before it, and the partition waits there (rolling upgrades: docs/deploy.md).
        let mut held = None;
        let later = records.iter().enumerate().find_map(|(at, record)| {
            let raw = record.record.as_ref().ok()?;
            codec::later_schema(raw.content_type, &raw.value).map(|schema| (at, schema))
        });
        if let Some((at, schema)) = later {
            let offset = records[at].offset;
            held = Some(format!(
                "offset {offset}: a record of event schema {schema} (this release reads {}), \
                 written by a later pinhive release",
                pinhive_events::SCHEMA_VERSION
            ));
            records.truncate(at);
            if records.is_empty() {
                return Ok(BatchOutcome {
                    next_offset: offset,
                    held,
                    ..BatchOutcome::default()
                });
            }
        }
        let Some(next_offset) = records.last().map(|r| r.next_offset) else {
            return Ok(BatchOutcome::default());
        };
        self.committed()?;
        let mut work = Work::default();
        // Spans of traced events (those carrying a traceparent): the last one per CID parents
        // the planning of that CID; all of them parent the store write.
        let mut spans: HashMap<String, tracing::Span> = HashMap::new();
        let mut apply_spans: Vec<tracing::Span> = Vec::new();
        let mut journal = Vec::new();
        let mut forwards: Vec<(u64, Record)> = Vec::new();
        let mut outcome = BatchOutcome {
            next_offset,
            ..BatchOutcome::default()
        };
        self.blamed = None;
        let mut quarantine_reread = false;
        for record in &records {
            let envelope = match &record.record {
                Err(reason) => Err(reason.clone()),
                Ok(raw) => {
                    codec::decode(raw.content_type, &raw.key, &raw.value).map_err(|e| e.to_string())
                }
            };
            // A record an external producer put on another partition than murmur2(key) picks
            // would break the single-writer rule: refuse it.
            let envelope = envelope.and_then(|envelope| {
                let expected = pinhive_log::partition_for(envelope.key.as_bytes(), self.partitions);
                if expected == self.partition {
                    Ok(envelope)
                } else {
                    Err(format!(
                        "record for key {} is on partition {} but murmur2 assigns it to {expected}; produce with the murmur2 partitioner",
                        envelope.key, self.partition
                    ))
                }
            });
            // Every record passes the domain's admission, whoever produced it: JSON records
            // come from external producers, which may send requests only.
            let provenance = match record.record.as_ref().map(|raw| raw.content_type) {
                Ok(content_type) if content_type == ContentType::Json as u8 => Provenance::External,
                _ => Provenance::Internal,
            };
            // A record an earlier release wrote under a non-canonical CID spelling goes to the
            // canonical key's partition (see `forward_legacy`), never applied under a second key.
            if let (Ok(envelope), Provenance::Internal) = (&envelope, provenance) {
                match legacy(envelope) {
                    Legacy::No => {}
                    Legacy::Drop => continue,
                    Legacy::Forward(forwarded) => {
                        if self.forward_needed(record.offset)? {
                            forwards.push((record.offset, Record::from_envelope(&forwarded)));
                        }
                        continue;
                    }
                }
            }
            let envelope = envelope.and_then(|mut envelope| {
                envelope.event = admit(&envelope, provenance)
                    .map_err(|rejection| format!("rejected: {rejection}"))?;
                Ok(envelope)
            });
            let envelope = match envelope {
                Ok(envelope) => envelope,
                Err(reason) => {
                    self.reject(record, reason, &mut outcome)?;
                    continue;
                }
            };
            if matches!(
                envelope.event,
                pinhive_events::Event::NodeRegistered(_)
                    | pinhive_events::Event::NodeStatusChanged { .. }
                    | pinhive_events::Event::NodeRemoved { .. }
            ) {
                // Node events belong to the registry, not to a CID; nothing to fold here.
                continue;
            }
            let cid = envelope.key.clone();
            if let Some(reason) = self.quarantined(&cid, &mut quarantine_reread)? {
                self.reject(record, reason, &mut outcome)?;
                continue;
            }
            self.touch(&mut work, &cid)
                .map_err(|error| self.blame(&cid, error))?;
            if work.touched[&cid].after.already_applied(record.offset) {
                self.snapshot.events_skipped += 1;
                METRICS
                    .events_skipped
                    .with_label_values(&[&self.partition.to_string()])
                    .inc();
                continue;
            }
            let sampled = envelope
                .traceparent
                .as_deref()
                .filter(|traceparent| pinhive_telemetry::is_sampled(traceparent));
            let pin = match named_pin(&envelope.event) {
                Some(requestid) => self
                    .pin_of(&mut work, requestid, &cid)
                    .map_err(|error| self.blame(&cid, error))?,
                None => None,
            };
            if let Err(rejection) = check(&envelope.event, pin.as_ref()) {
                self.reject(record, format!("rejected: {rejection}"), &mut outcome)?;
                continue;
            }
            // Pin rows are keyed by request id across every CID and owner: no record (an
            // external producer's, or any other) may take over another CID's pin by reusing
            // its id.
            if let pinhive_events::Event::PinRequested(request) = &envelope.event {
                let elsewhere = work
                    .pins
                    .get(&request.requestid)
                    .and_then(Option::as_ref)
                    .is_some_and(|row| row.record.canonical_cid() != cid);
                if elsewhere {
                    let reason = format!(
                        "rejected: requestid {} is already in use",
                        request.requestid
                    );
                    self.reject(record, reason, &mut outcome)?;
                    continue;
                }
                // The edges checked their own requests against the owner's quota before
                // appending them; an external producer's are checked here, when first applied.
                if provenance == Provenance::External {
                    use crate::quota::QuotaError;
                    match self
                        .quota
                        .admit(&request.owner, Admission::NewPin, Entry::Kafka)
                    {
                        Ok(()) => {}
                        Err(QuotaError::Exceeded(exceeded)) => {
                            self.reject(record, format!("rejected: {exceeded}"), &mut outcome)?;
                            continue;
                        }
                        Err(QuotaError::Store(error)) => return Err(error),
                    }
                }
            }
            let span = sampled.map(|traceparent| {
                let kind = envelope.event.kind();
                let span = tracing::info_span!(
                    "shard.apply",
                    otel.name = %format!("apply {kind}"),
                    event = kind,
                    partition = self.partition,
                    offset = record.offset,
                    cid = %cid,
                    pin.status = tracing::field::Empty,
                    trace_id = tracing::field::Empty,
                );
                pinhive_telemetry::continue_trace(&span, Some(traceparent));
                pinhive_telemetry::record_trace_id(&span);
                span
            });
            let Some(touched) = work.touched.get_mut(&cid) else {
                continue;
            };
            match touched.after.apply_at(
                record.offset,
                envelope.timestamp_ns,
                &envelope.event,
                pin.as_ref(),
            ) {
                Some(PinChange::Created(row)) => {
                    let requestid = row.record.requestid.clone();
                    touched.created.push(requestid.clone());
                    work.pins.insert(requestid, Some(row));
                }
                Some(PinChange::Removed(row)) => {
                    let requestid = row.record.requestid.clone();
                    if let Some(i) = touched.created.iter().position(|id| *id == requestid) {
                        touched.created.remove(i); // created and removed within one batch
                    } else {
                        touched.removed.push(row);
                    }
                    work.pins.insert(requestid, None);
                }
                Some(PinChange::Updated(row)) => {
                    // Written like a pin removed and made again under its request id (one
                    // row write, in the same bucket: see `derive_writes`).
                    let requestid = row.record.requestid.clone();
                    if !touched.created.contains(&requestid) {
                        if let Some(committed) = pin.clone() {
                            touched.removed.push(committed);
                        }
                        touched.created.push(requestid.clone());
                    }
                    work.pins.insert(requestid, Some(row));
                }
                None => {}
            }
            if let pinhive_events::Event::PinExpired {
                requestid,
                expires_ns,
            } = &envelope.event
            {
                touched.expired.push((requestid.clone(), *expires_ns));
            }
            if let Some(span) = span {
                spans.insert(cid.clone(), span.clone());
                apply_spans.push(span);
            }
            journal.push(JournalEntry {
                cid: cid.clone(),
                partition: self.partition,
                offset: record.offset,
                timestamp_ns: envelope.timestamp_ns,
                event_id: envelope.event_id.clone(),
                event: envelope.event,
            });
            outcome.applied += 1;
        }
        self.forward_legacy(forwards)?;
        outcome.actions = self.settle(work, journal, Some(next_offset), &spans, &apply_spans)?;
        let partition = self.partition.to_string();
        METRICS
            .events_applied
            .with_label_values(&[&partition])
            .inc_by(outcome.applied as u64);
        METRICS
            .batch_events
            .with_label_values::<&str>(&[])
            .observe(records.len() as f64);
        self.snapshot.next_offset = next_offset;
        self.snapshot.events_applied += outcome.applied as u64;
        self.snapshot.batches += 1;
        outcome.held = held;
        Ok(outcome)
    }

    /// Adds `cid` to the batch's working set (its committed state, loaded once).
    fn touch(&mut self, work: &mut Work, cid: &str) -> Result<(), StoreError> {
        if !work.touched.contains_key(cid) {
            let (state, stored) = self.load(cid)?;
            work.touched.insert(
                cid.to_string(),
                Touched {
                    before: state.clone(),
                    after: state,
                    stored,
                    created: Vec::new(),
                    removed: Vec::new(),
                    expired: Vec::new(),
                },
            );
        }
        Ok(())
    }

    /// The committed rows of the next step of the walk over `cid`'s pins from `cursor`
    /// (pins this batch removed are left out: they are written anyway), and where
    /// the walk goes on (`None`: it reached the end).
    fn walk_step(
        &self,
        cid: &str,
        cursor: &pinhive_domain::Cursor,
        touched: &Touched,
    ) -> Result<(Vec<PinRow>, Option<pinhive_domain::Cursor>), StoreError> {
        let listed = self.store.cid_pins(cid, cursor, PROPAGATE_STEP)?;
        let end = (listed.len() == PROPAGATE_STEP)
            .then(|| listed.last())
            .flatten()
            .map(|(bucket, requestid)| pinhive_domain::Cursor {
                bucket: *bucket,
                after: Some(requestid.clone()),
            });
        let mut step = Vec::with_capacity(listed.len());
        for (_, requestid) in listed {
            // (Pins created by this batch are not in the store yet.)
            if touched
                .removed
                .iter()
                .any(|row| row.record.requestid == requestid)
            {
                continue;
            }
            if let Some(row) = self.store.load_pin(&requestid)? {
                if row.record.canonical_cid() == cid {
                    step.push(row);
                }
            }
        }
        Ok((step, end))
    }

    /// Derives, persists (attempt, rows, commit) and plans a batch's CIDs; returns the actions.
    fn settle(
        &mut self,
        work: Work,
        journal: Vec<JournalEntry>,
        next_offset: Option<u64>,
        spans: &HashMap<String, tracing::Span>,
        apply_spans: &[tracing::Span],
    ) -> Result<Vec<PlannedAction>, StoreError> {
        let commit = self.committed()?;
        let batch_no = commit.batch + 1;
        let context = self.context();
        let addresses = self.registry.addresses();
        let node_addresses = |node: &str| addresses.get(node).cloned().unwrap_or_default();
        let mut rows = ShardBatch {
            partition: self.partition,
            journal,
            ..ShardBatch::default()
        };
        // The committed value of every row written, for the attempt (a store that persists a
        // batch in one atomic write needs none).
        let keep_undo = !self.store.persists_atomically();
        let mut undo: Vec<Undo> = Vec::new();
        let mut deltas: BTreeMap<(String, PinStatus), i64> = BTreeMap::new();
        let mut planned: Vec<PlannedAction> = Vec::new();
        let mut settled: Vec<CidState> = Vec::new();
        let mut wakes: Vec<(String, Option<(i64, bool)>)> = Vec::new();
        let mut retries: u64 = 0;
        let Work {
            touched,
            mut pins,
            node_walk,
        } = work;
        for (cid, mut touched) in touched {
            let created: Vec<PinRow> = std::mem::take(&mut touched.created)
                .iter()
                .filter_map(|id| pins.get_mut(id).and_then(Option::take))
                .collect();
            let created_owner = created.first().map(|pin| pin.record.owner.clone());
            // Derived like `pending`: when a failed replica is retried next (the view shows
            // `queued` rather than `failed` meanwhile).
            touched.after.retry_at_ns =
                pinhive_domain::next_retry(&touched.after, &context.nodes, &context.retry);
            let view = touched.after.view(&node_addresses);
            let (step, step_end) = match walk_start(&touched.before, &touched.after, &view) {
                Some(cursor) => self.walk_step(&cid, &cursor, &touched)?,
                None => (Vec::new(), None),
            };
            let writes = derive_writes(CidInput {
                before: &touched.before,
                after: touched.after,
                view,
                created,
                removed: touched.removed,
                step,
                step_end,
                expired: touched.expired,
            });
            for write in writes.pins {
                let requestid = match (&write.new, &write.committed) {
                    (Some(row), _) | (None, Some(row)) => row.record.requestid.clone(),
                    (None, None) => continue,
                };
                if keep_undo {
                    undo.push(Undo::Pin {
                        requestid: requestid.clone(),
                        row: write.committed.clone(),
                        attempted: write.new.clone(),
                    });
                }
                rows.pins.push(PinWrite {
                    requestid,
                    old: write.committed,
                    stale: Vec::new(),
                    new: write.new,
                });
            }
            for (owner, status, delta) in writes.owner_deltas {
                *deltas.entry((owner, status)).or_default() += delta;
            }
            *deltas
                .entry((SCOPE_REPLICAS_DESIRED.to_string(), PinStatus::Pinned))
                .or_default() += writes.replicas_desired_delta;
            *deltas
                .entry((SCOPE_REPLICAS_PINNED.to_string(), PinStatus::Pinned))
                .or_default() += writes.replicas_pinned_delta;
            for (node, present) in writes.node_index {
                *deltas
                    .entry((node_scope(&node), PinStatus::Pinned))
                    .or_default() += if present { 1 } else { -1 };
                rows.node_cids.push(NodeCidWrite {
                    node,
                    cid: cid.clone(),
                    present,
                });
            }
            for change in writes.expiry_index {
                // An entry written at or before a window the expiry task has read already
                // is moved just after it (`ExpiryMark::due_ns`); a removal names the entry as
                // it was written for the pin's expiry.
                let due_ns = if change.present {
                    self.expiry
                        .due_ns(self.store.as_ref(), self.partition, change.expires_ns)?
                } else {
                    change.expires_ns
                };
                rows.expiry.push(pinhive_store::ExpiryWrite {
                    due_ns,
                    cid: cid.clone(),
                    requestid: change.requestid,
                    present: change.present,
                });
            }
            let mut state = writes.state;
            let parent = spans.get(&cid);
            let plan_span = match parent {
                Some(parent) => {
                    parent.record("pin.status", state.pin_status().as_str());
                    tracing::info_span!(parent: parent, "allocator.plan", actions = tracing::field::Empty)
                }
                None => tracing::Span::none(),
            };
            let actions = plan_span.in_scope(|| plan(&state, &context));
            plan_span.record("actions", actions.len());
            let action_traceparent =
                parent.and_then(|_| pinhive_telemetry::traceparent_of(&plan_span));
            let garbage = state.is_garbage();
            let allocates = actions.iter().any(|a| matches!(a, Action::Allocate { .. }));
            retries += allocated_again(&state, &actions);
            // (Without an allocation — no node to take the replica — the CID is pending as
            // usual, and the repair loop places it once a node can take it.)
            let needed = !garbage
                && if node_walk && allocates {
                    actions
                        .iter()
                        .any(|a| !matches!(a, Action::Allocate { .. }))
                        || state.propagation.is_some()
                } else {
                    needs_work(&state, &context, &actions) || state.propagation.is_some()
                };
            if needed != state.pending {
                rows.pending.push((cid.clone(), needed));
                state.pending = needed;
            }
            // A CID waiting for a retry is woken when it is due (see `crate::retry`).
            let wake = state
                .retry_at_ns
                .filter(|at| needed && *at > context.now_ns)
                .map(|at| (at, actions.is_empty()));
            wakes.push((cid.clone(), wake));
            if (state != touched.before || garbage) && (touched.stored || !garbage) {
                if keep_undo {
                    undo.push(Undo::Cid {
                        cid: cid.clone(),
                        state: touched.stored.then_some(touched.before),
                    });
                }
                rows.cids.push(CidWrite {
                    cid: cid.clone(),
                    state: (!garbage).then(|| state.clone()),
                });
            }
            let owner = if actions.iter().any(|a| matches!(a, Action::Pin { .. })) {
                self.slot_owner(&cid, created_owner)
            } else {
                None
            };
            planned.extend(actions.into_iter().map(|action| {
                PlannedAction {
                    owner: matches!(action, Action::Pin { .. })
                        .then(|| owner.clone())
                        .flatten(),
                    cid: cid.clone(),
                    action,
                    traceparent: action_traceparent.clone(),
                }
            }));
            settled.push(state);
        }
        // Owner counters also roll up into the all-owners scope.
        let per_owner: Vec<((String, PinStatus), i64)> = deltas
            .iter()
            .filter(|((owner, _), _)| !owner.starts_with('#'))
            .map(|(key, delta)| (key.clone(), *delta))
            .collect();
        for ((_, status), delta) in per_owner {
            *deltas
                .entry((SCOPE_ALL_PINS.to_string(), status))
                .or_default() += delta;
        }
        let mut counters = Vec::new();
        for ((owner, status), delta) in deltas {
            if delta == 0 {
                continue;
            }
            let value = self.counter(&owner, status)? + delta;
            counters.push(CounterRow {
                owner,
                status,
                partition: self.partition,
                value,
            });
        }
        let writes_rows = !rows.pins.is_empty() || !rows.cids.is_empty();
        if !writes_rows && counters.is_empty() && next_offset.is_none() {
            // Nothing changed (a repair pass over settled CIDs): only the pending set moves.
            if !rows.pending.is_empty() {
                self.check_owner(&commit)?;
            }
            self.store.write_shard_batch(&rows)?;
            self.set_wakes(wakes);
            METRICS
                .replica_retries
                .with_label_values(&[&self.partition.to_string()])
                .inc_by(retries);
            return Ok(planned);
        }
        let write_spans: Vec<tracing::Span> = apply_spans
            .iter()
            .map(|parent| tracing::info_span!(parent: parent, "store.write", rows = rows.len()))
            .collect();
        // Any failure from here leaves `self.commit` unset: the next batch re-reads the commit
        // row and rolls back what this one wrote.
        self.commit = None;
        let attempt = (writes_rows && keep_undo).then(|| Commit {
            partition: self.partition,
            state: CommitState {
                attempt: Some(Attempt {
                    batch: batch_no,
                    undo,
                }),
                ..commit.clone()
            },
            counters: Vec::new(),
            owner_epoch: self.owner_epoch,
        });
        let committed = CommitState {
            batch: if writes_rows { batch_no } else { commit.batch },
            next_offset: next_offset.or(commit.next_offset),
            attempt: None,
        };
        // Failpoint (tests only): the batch's rows and checkpoint are not written.
        fail::fail_point!("store::persist", |_| Err(StoreError::Backend(
            "injected fault at store::persist".into()
        )));
        self.store.persist_batch(
            attempt.as_ref(),
            &rows,
            &Commit {
                partition: self.partition,
                state: committed.clone(),
                counters: counters.clone(),
                owner_epoch: self.owner_epoch,
            },
        )?;
        drop(write_spans);
        self.commit = Some(committed);
        if self.feed.watched() {
            let changes = crate::feed::changes(
                rows.pins.iter().map(|w| (w.old.as_ref(), w.new.as_ref())),
                self.partition,
                pinhive_events::now_ns(),
            );
            for change in changes {
                self.feed.publish(change);
            }
        }

        // Only now, with the batch committed, update the caches and release the actions.
        self.set_wakes(wakes);
        for state in settled {
            if state.is_garbage() {
                self.cache.remove(&state.cid);
            } else {
                self.cache.put(self.partition, state);
            }
        }
        for counter in counters {
            self.publish_gauge(&counter.owner, counter.status, counter.value);
            self.counters
                .put((counter.owner, counter.status), counter.value);
        }
        METRICS
            .replica_retries
            .with_label_values(&[&self.partition.to_string()])
            .inc_by(retries);
        for planned in &planned {
            let kind = match planned.action {
                Action::Allocate { .. } => "allocate",
                Action::Pin { .. } => "pin",
                Action::Unpin { .. } => "unpin",
                Action::ReleaseHold { .. } => "release",
            };
            METRICS.actions.with_label_values(&[kind]).inc();
        }
        self.snapshot.cached_states = self.cache.len();
        METRICS
            .cache_bytes
            .with_label_values::<&str>(&[])
            .set(i64::try_from(self.cache.weight()).unwrap_or(i64::MAX));
        Ok(planned)
    }

    /// The owner whose fair share of a node's slots a pin of `cid` uses: the owner of the
    /// first pin listed for the CID (its first pin bucket, lowest request id: one of its
    /// oldest pins), else of a pin this batch created. A CID pinned by several owners is
    /// charged to one of them, not split. Cached (bounded); a stale entry only shifts whose
    /// share a command counts against, and a store error leaves the command unowned.
    fn slot_owner(&mut self, cid: &str, created_owner: Option<String>) -> Option<String> {
        if let Some(owner) = self.slot_owners.get(cid) {
            return Some(owner.clone());
        }
        let first = self
            .store
            .cid_pins(cid, &pinhive_domain::Cursor::default(), 1)
            .ok()
            .and_then(|listed| listed.into_iter().next())
            .and_then(|(_, requestid)| self.store.load_pin(&requestid).ok().flatten())
            .map(|pin| pin.record.owner);
        let owner = first.or(created_owner)?;
        self.slot_owners.put(cid.to_string(), owner.clone());
        Some(owner)
    }

    /// Plans these CIDs again from their committed state (the repair loop), going on with
    /// any propagation of their view that is still under way.
    fn replan(&mut self, cids: Vec<String>) -> Result<Vec<PlannedAction>, StoreError> {
        self.committed()?;
        let mut work = Work::default();
        let now_ns = pinhive_events::now_ns();
        for cid in cids {
            // Waiting for a retry with nothing else to do: its wake-up re-plans it.
            if self.timers.deferred(self.partition, &cid, now_ns) {
                continue;
            }
            self.touch(&mut work, &cid)?;
            // It came from the pending set: if it needs nothing, the entry goes, whatever
            // its state's flag says.
            if let Some(touched) = work.touched.get_mut(&cid) {
                touched.after.pending = true;
            }
        }
        if work.touched.is_empty() {
            return Ok(Vec::new());
        }
        self.settle(work, Vec::new(), None, &HashMap::new(), &[])
    }

    /// Queues (or drops) the retry wake-ups of a committed batch's CIDs.
    fn set_wakes(&self, wakes: Vec<(String, Option<(i64, bool)>)>) {
        for (cid, wake) in wakes {
            match wake {
                Some((at, idle)) => self.timers.schedule(self.partition, &cid, at, idle),
                None => self.timers.cancel(self.partition, &cid),
            }
        }
        METRICS
            .retry_queue
            .with_label_values(&[&self.partition.to_string()])
            .set(i64::try_from(self.timers.len(self.partition)).unwrap_or(i64::MAX));
    }

    /// One step of a node walk (see [`WalkNode`]).
    fn walk_node(&mut self, message: WalkNode) -> Result<NodeWalkStep, StoreError> {
        self.committed()?;
        let context = self.context();
        let mut step = NodeWalkStep::default();
        let mut work = Work {
            node_walk: true,
            ..Work::default()
        };
        let mut stray = ShardBatch {
            partition: self.partition,
            ..ShardBatch::default()
        };
        for cid in message.cids {
            let (state, _) = self.load(&cid)?;
            if !pinhive_domain::writes::held_on(&state).any(|node| *node == message.node) {
                stray.node_cids.push(NodeCidWrite {
                    node: message.node.clone(),
                    cid,
                    present: false,
                });
                continue;
            }
            if let Some(joined) = &message.rebalance_to {
                if pinhive_domain::rebalance::source(&state, &context, joined).as_ref()
                    == Some(&message.node)
                {
                    step.planned += 1;
                    step.actions.push(PlannedAction {
                        cid,
                        action: Action::Allocate {
                            nodes: vec![joined.clone()],
                            target: u8::try_from(state.desired_replicas()).unwrap_or(u8::MAX),
                        },
                        traceparent: None,
                        owner: None,
                    });
                } else {
                    step.skipped += 1;
                }
                continue;
            }
            let urgency = pinhive_domain::urgency(&state, &context);
            if message.urgency != pinhive_domain::Urgency::Met && urgency != message.urgency {
                step.skipped += 1;
                continue;
            }
            step.planned += 1;
            self.touch(&mut work, &cid)?;
        }
        step.stray = stray.node_cids.len();
        if !stray.is_empty() {
            // Membership deletes are idempotent and need no commit (the index is a superset
            // of the replicas; see `ShardBatch::node_cids`).
            self.store.write_shard_batch(&stray)?;
        }
        if !work.touched.is_empty() {
            step.actions = self.settle(work, Vec::new(), None, &HashMap::new(), &[])?;
        }
        Ok(step)
    }
}

/// Failed replicas `actions` allocate again (retries), for the metric.
fn allocated_again(state: &CidState, actions: &[Action]) -> u64 {
    let again = actions
        .iter()
        .filter_map(|action| match action {
            Action::Allocate { nodes, .. } => Some(nodes),
            _ => None,
        })
        .flatten()
        .filter(|node| {
            state
                .replicas
                .get(*node)
                .is_some_and(|replica| replica.status == pinhive_domain::ReplicaStatus::Failed)
        })
        .count();
    u64::try_from(again).unwrap_or(u64::MAX)
}

/// Names `value` among the values whose entries a rollback's `write` removes, unless it is the
/// value put back (its entries stay) or named already.
fn name_stale(write: &mut PinWrite, value: Option<PinRow>) {
    let Some(value) = value else {
        return;
    };
    if write.new.as_ref() != Some(&value) && !write.stale.contains(&value) {
        write.stale.push(value);
    }
}

impl Actor for ShardActor {
    type Context = SyncContext<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        // Export every per-partition series from the start (zero), so alerts and dashboards
        // see a value, not an absent series, before the first event of its kind.
        let partition = self.partition.to_string();
        for counter in [
            &METRICS.events_applied,
            &METRICS.events_skipped,
            &METRICS.dead_letters,
            &METRICS.store_errors,
            &METRICS.replica_retries,
        ] {
            counter.with_label_values(&[&partition]);
        }
        METRICS.mailbox_depth.with_label_values(&[&partition]);
        METRICS.retry_queue.with_label_values(&[&partition]);
        METRICS.batch_seconds.with_label_values(&[&partition]);
        if let Err(error) = self.publish_aggregates() {
            tracing::warn!(partition = self.partition, error = %error, "could not load aggregate counters");
        }
    }
}

impl Handler<ApplyBatch> for ShardActor {
    type Result = Result<BatchOutcome, StoreError>;

    fn handle(&mut self, message: ApplyBatch, _: &mut Self::Context) -> Self::Result {
        let partition = self.partition.to_string();
        METRICS.mailbox_depth.with_label_values(&[&partition]).dec();
        let timer = METRICS
            .batch_seconds
            .with_label_values(&[&partition])
            .start_timer();
        let mut result = self.apply_batch(message.records.clone());
        // A record that needs a stored row that cannot be decoded fails every retry: its CID
        // is quarantined and the batch runs again without its records (dead-lettered). Each
        // round quarantines one more CID of the batch, so this ends.
        while let Err(error) = &result {
            let Some(cid) = self.blamed.take().filter(|_| error.is_corrupt()) else {
                break;
            };
            if self.quarantine_hint(&cid) {
                break; // quarantined already, and still failing: not this CID's records
            }
            // The failed run may have cached state of this batch: start from the store.
            self.forget();
            let offset = message.records.first().map_or(0, |record| record.offset);
            if let Err(quarantine_error) = self.quarantine_cid(&cid, error, offset) {
                tracing::error!(partition = self.partition, cid = %cid, error = %quarantine_error, "could not quarantine a CID with a corrupt row");
                break;
            }
            result = self.apply_batch(message.records.clone());
        }
        timer.observe_duration();
        if result.is_err() {
            METRICS.store_errors.with_label_values(&[&partition]).inc();
            // The batch may be half-written (the store promises nothing across keys): forget
            // what is cached, so the retry rolls it back and starts from the committed state.
            self.forget();
        }
        result
    }
}

impl Handler<Replan> for ShardActor {
    type Result = Result<Vec<PlannedAction>, StoreError>;

    fn handle(&mut self, message: Replan, _: &mut Self::Context) -> Self::Result {
        METRICS
            .mailbox_depth
            .with_label_values(&[&self.partition.to_string()])
            .dec();
        let result = self.replan(message.cids);
        if result.is_err() {
            self.forget();
        }
        result
    }
}

impl Handler<WalkNode> for ShardActor {
    type Result = Result<NodeWalkStep, StoreError>;

    fn handle(&mut self, message: WalkNode, _: &mut Self::Context) -> Self::Result {
        METRICS
            .mailbox_depth
            .with_label_values(&[&self.partition.to_string()])
            .dec();
        let result = self.walk_node(message);
        if result.is_err() {
            self.forget();
        }
        result
    }
}

impl Handler<GetSnapshot> for ShardActor {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        self.snapshot.cached_states = self.cache.len();
        MessageResult(self.snapshot.clone())
    }
}
