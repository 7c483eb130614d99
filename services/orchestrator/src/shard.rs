//! The shard actor: owns the CIDs of one log partition.
//!
//! Runs on its own thread (`SyncArbiter`), because applying a batch does blocking store I/O.
//! It keeps a bounded LRU of CID states (a trillion live actors cannot exist; a bounded cache
//! of states in one actor per partition can), folds each event into its CID's state, derives
//! the pin rows, counters, journal and pending set, writes them as one [`ShardBatch`], then the
//! checkpoint, and only then hands the planned actions back to the consumer.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;

use actix::prelude::*;
use lru::LruCache;
use pinhive_domain::state::PinChange;
use pinhive_domain::{
    admit, legacy, needs_work, plan, Action, CidState, Legacy, PinRecord, PinStatus, PlanContext,
    Provenance, ReplicaStatus,
};
use pinhive_events::codec::{self, ContentType};
use pinhive_ipfs::NodeRegistry;
use pinhive_log::{Log, Record, StoredRecord};
use pinhive_store::{
    CidWrite, CounterRow, DeadLetter, JournalEntry, PinWrite, ShardBatch, Store, StoreError,
    SCOPE_ALL_PINS, SCOPE_REPLICAS_DESIRED, SCOPE_REPLICAS_PINNED,
};

use crate::metrics::METRICS;
use crate::SHARD_CONSUMER;

/// An action planned for one CID, for the consumer to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedAction {
    pub cid: String,
    pub action: Action,
    pub traceparent: Option<String>,
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
}

/// Sent by the repair loop: plan these CIDs again from their persisted state.
#[derive(Message)]
#[rtype(result = "Result<Vec<PlannedAction>, StoreError>")]
pub struct Replan {
    pub cids: Vec<String>,
}

/// Sent when this instance stops owning the partition: cached states may go stale, since
/// another instance writes them from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClearCache;

impl Handler<ClearCache> for ShardActor {
    type Result = ();

    fn handle(&mut self, _: ClearCache, _: &mut Self::Context) {
        self.cache.clear();
        self.counters.clear();
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
    pub cached_states: usize,
    pub events_applied: u64,
    pub events_skipped: u64,
    pub dead_lettered: u64,
    pub batches: u64,
}

pub struct ShardActor {
    partition: u32,
    partitions: u32,
    store: Arc<dyn Store>,
    /// For forwarding legacy-keyed records only; the shard appends nothing else.
    log: Arc<dyn Log>,
    registry: NodeRegistry,
    min_free_bytes: u64,
    dial_private_origins: bool,
    cache: LruCache<String, CidState>,
    counters: LruCache<(String, PinStatus), i64>,
    snapshot: ShardSnapshot,
}

/// What a shard is given besides its partition.
#[derive(Clone)]
pub struct ShardParts {
    pub partitions: u32,
    pub store: Arc<dyn Store>,
    /// For forwarding legacy-keyed records only.
    pub log: Arc<dyn Log>,
    pub registry: NodeRegistry,
    pub cache_capacity: usize,
    pub min_free_bytes: u64,
    pub dial_private_origins: bool,
}

impl ShardActor {
    pub fn new(partition: u32, parts: ShardParts) -> Self {
        let capacity = NonZeroUsize::new(parts.cache_capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        ShardActor {
            partition,
            partitions: parts.partitions,
            store: parts.store,
            log: parts.log,
            registry: parts.registry,
            min_free_bytes: parts.min_free_bytes,
            dial_private_origins: parts.dial_private_origins,
            cache: LruCache::new(capacity),
            counters: LruCache::new(capacity),
            snapshot: ShardSnapshot {
                partition,
                ..ShardSnapshot::default()
            },
        }
    }

    fn context(&self) -> PlanContext {
        PlanContext {
            nodes: self.registry.views(),
            min_free_bytes: self.min_free_bytes,
            dial_private_origins: self.dial_private_origins,
        }
    }

    fn load(&mut self, cid: &str) -> Result<CidState, StoreError> {
        if let Some(state) = self.cache.get(cid) {
            METRICS.cache.with_label_values(&["hit"]).inc();
            return Ok(state.clone());
        }
        METRICS.cache.with_label_values(&["miss"]).inc();
        Ok(self
            .store
            .load_cid(cid)?
            .unwrap_or_else(|| CidState::new(cid)))
    }

    fn counter(&mut self, owner: &str, status: PinStatus) -> Result<i64, StoreError> {
        let key = (owner.to_string(), status);
        if let Some(value) = self.counters.get(&key) {
            return Ok(*value);
        }
        let value = self
            .store
            .counter(owner, status, self.partition)?
            .map(|row| row.value)
            .unwrap_or(0);
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

    /// Whether the legacy-keyed record at `offset` still has to be forwarded: not if the
    /// migration found it already applied to the state it folded in (`migrate::applied_row`),
    /// nor if this partition forwarded it already (a batch retried after its forwards were
    /// appended: the forward mark).
    fn forward_needed(&mut self, legacy_key: &str, offset: u64) -> Result<bool, StoreError> {
        let migrated = self
            .store
            .checkpoint(&crate::migrate::applied_row(legacy_key), self.partition)?;
        if migrated.is_some_and(|applied_below| offset < applied_below) {
            return Ok(false);
        }
        let forwarded = self
            .store
            .checkpoint(crate::migrate::FORWARD_MARK, self.partition)?;
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
            .set_checkpoint(crate::migrate::FORWARD_MARK, self.partition, last + 1)?;
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

    fn apply_batch(&mut self, records: Vec<StoredRecord>) -> Result<BatchOutcome, StoreError> {
        let Some(next_offset) = records.last().map(|r| r.next_offset) else {
            return Ok(BatchOutcome::default());
        };
        // Original state of every CID touched, and its state after the batch.
        let mut touched: BTreeMap<String, (CidState, CidState)> = BTreeMap::new();
        let mut created: BTreeMap<String, Vec<PinRecord>> = BTreeMap::new();
        let mut removed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // Spans of traced events (those carrying a traceparent): the last one per CID parents
        // the planning of that CID; all of them parent the store write.
        let mut spans: HashMap<String, tracing::Span> = HashMap::new();
        let mut apply_spans: Vec<tracing::Span> = Vec::new();
        let mut journal = Vec::new();
        let mut forwards: Vec<(u64, Record)> = Vec::new();
        let mut new_external_ids: std::collections::HashSet<String> = Default::default();
        let mut outcome = BatchOutcome {
            next_offset,
            ..BatchOutcome::default()
        };
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
                        if self.forward_needed(&envelope.key, record.offset)? {
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
            ) {
                // Node events belong to the registry, not to a CID; nothing to fold here.
                continue;
            }
            let cid = envelope.key.clone();
            if !touched.contains_key(&cid) {
                let state = self.load(&cid)?;
                touched.insert(cid.clone(), (state.clone(), state));
            }
            let Some((_, state)) = touched.get_mut(&cid) else {
                continue;
            };
            if state.already_applied(record.offset) {
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
            if let Err(rejection) = state.check(&envelope.event) {
                self.reject(record, format!("rejected: {rejection}"), &mut outcome)?;
                continue;
            }
            // Pin rows are keyed by request id across every CID and owner: an external producer
            // must not take over (overwrite) another pin's row by reusing its id.
            if let (Provenance::External, pinhive_events::Event::PinRequested(request)) =
                (provenance, &envelope.event)
            {
                let requestid = &request.requestid;
                if !state.pins.contains_key(requestid)
                    && (!new_external_ids.insert(requestid.clone())
                        || self.store.get_pin(requestid)?.is_some())
                {
                    let reason = format!("rejected: requestid {requestid} is already in use");
                    self.reject(record, reason, &mut outcome)?;
                    continue;
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
            for change in state.apply(record.offset, &envelope.event) {
                match change {
                    PinChange::Created(pin) => created.entry(cid.clone()).or_default().push(pin),
                    PinChange::Removed { requestid } => {
                        let list = created.entry(cid.clone()).or_default();
                        if let Some(i) = list.iter().position(|p| p.requestid == requestid) {
                            list.remove(i); // created and removed within one batch
                        } else {
                            removed.entry(cid.clone()).or_default().push(requestid);
                        }
                    }
                }
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

        let context = self.context();
        let addresses = self.registry.addresses();
        let node_addresses = |node: &str| addresses.get(node).cloned().unwrap_or_default();
        let mut batch = ShardBatch {
            partition: self.partition,
            journal,
            ..ShardBatch::default()
        };
        let mut counter_deltas: BTreeMap<(String, PinStatus), i64> = BTreeMap::new();
        let mut planned: Vec<PlannedAction> = Vec::new();
        for (cid, (original, state)) in &touched {
            if original == state {
                continue;
            }
            let status = state.pin_status();
            let info = state.pin_info();
            let delegates = state.delegates(&node_addresses);
            let new_pins = created.remove(cid).unwrap_or_default();
            let settled = matches!(status, PinStatus::Pinned | PinStatus::Failed);
            let mut releases: Vec<Action> = Vec::new();
            for requestid in removed.remove(cid).unwrap_or_default() {
                // A replacing pin deleted before it settled releases its hold too.
                if let Some(replaces) = original
                    .pins
                    .get(&requestid)
                    .and_then(|p| p.replaces.clone())
                {
                    releases.push(release_hold(replaces));
                }
                if let Some(old) = self.store.get_pin(&requestid)? {
                    *counter_deltas
                        .entry((old.owner.clone(), old.status))
                        .or_default() -= 1;
                    batch.pins.push(PinWrite::Delete { old });
                }
            }
            // Whether this CID's pins showed a settled status before the batch.
            let was_settled =
                matches!(original.pin_status(), PinStatus::Pinned | PinStatus::Failed);
            for (requestid, pin_ref) in &state.pins {
                let settles_now =
                    settled && !(was_settled && original.pins.contains_key(requestid));
                if let (Some(replaces), true) = (&pin_ref.replaces, settles_now) {
                    releases.push(release_hold(replaces.clone()));
                }
                if let Some(mut pin) = new_pins.iter().find(|p| &p.requestid == requestid).cloned()
                {
                    pin.status = status;
                    pin.info = info.clone();
                    pin.delegates = delegates.clone();
                    *counter_deltas
                        .entry((pin.owner.clone(), status))
                        .or_default() += 1;
                    batch.pins.push(PinWrite::Put {
                        old: None,
                        new: pin,
                    });
                    continue;
                }
                let Some(old) = self.store.get_pin(requestid)? else {
                    continue;
                };
                if old.status == status && old.info == info && old.delegates == delegates {
                    continue;
                }
                let mut new = old.clone();
                new.status = status;
                new.info = info.clone();
                new.delegates = delegates.clone();
                if old.status != status {
                    *counter_deltas
                        .entry((old.owner.clone(), old.status))
                        .or_default() -= 1;
                    *counter_deltas
                        .entry((old.owner.clone(), status))
                        .or_default() += 1;
                }
                batch.pins.push(PinWrite::Put {
                    old: Some(old),
                    new,
                });
            }
            let parent = spans.get(cid);
            let plan_span = match parent {
                Some(parent) => {
                    parent.record("pin.status", status.as_str());
                    tracing::info_span!(parent: parent, "allocator.plan", actions = tracing::field::Empty)
                }
                None => tracing::Span::none(),
            };
            let mut actions = plan_span.in_scope(|| plan(state, &context));
            actions.extend(releases);
            plan_span.record("actions", actions.len());
            let action_traceparent =
                parent.and_then(|_| pinhive_telemetry::traceparent_of(&plan_span));
            let replicas_desired =
                state.desired_replicas() as i64 - original.desired_replicas() as i64;
            let replicas_pinned = state.count(ReplicaStatus::Pinned) as i64
                - original.count(ReplicaStatus::Pinned) as i64;
            *counter_deltas
                .entry((SCOPE_REPLICAS_DESIRED.to_string(), PinStatus::Pinned))
                .or_default() += replicas_desired;
            *counter_deltas
                .entry((SCOPE_REPLICAS_PINNED.to_string(), PinStatus::Pinned))
                .or_default() += replicas_pinned;
            batch
                .pending
                .push((cid.clone(), needs_work(state, &context, &actions)));
            if state.is_garbage() {
                batch.cids.push(CidWrite::Delete { cid: cid.clone() });
            } else {
                batch.cids.push(CidWrite::Put(state.clone()));
            }
            planned.extend(actions.into_iter().map(|action| PlannedAction {
                cid: cid.clone(),
                action,
                traceparent: action_traceparent.clone(),
            }));
        }
        // Owner counters also roll up into the all-owners scope.
        let per_owner: Vec<((String, PinStatus), i64)> = counter_deltas
            .iter()
            .filter(|((owner, _), _)| !owner.starts_with('#'))
            .map(|(key, delta)| (key.clone(), *delta))
            .collect();
        for ((_, status), delta) in per_owner {
            *counter_deltas
                .entry((SCOPE_ALL_PINS.to_string(), status))
                .or_default() += delta;
        }
        let last_offset = records.last().map(|r| r.offset).unwrap_or(0);
        let mut new_counters = Vec::new();
        for ((owner, status), delta) in counter_deltas {
            if delta == 0 {
                continue;
            }
            let value = self.counter(&owner, status)? + delta;
            new_counters.push(((owner.clone(), status), value));
            batch.counters.push(CounterRow {
                owner,
                status,
                partition: self.partition,
                value,
                offset: last_offset,
            });
        }

        let write_spans: Vec<tracing::Span> = apply_spans
            .iter()
            .map(|parent| tracing::info_span!(parent: parent, "store.write", pins = batch.pins.len()))
            .collect();
        self.forward_legacy(forwards)?;
        self.store.write_shard_batch(&batch)?;
        self.store
            .set_checkpoint(SHARD_CONSUMER, self.partition, next_offset)?;
        drop(write_spans);

        // Only now, with state persisted, update the caches and release the actions.
        for (cid, (_, state)) in touched {
            if state.is_garbage() {
                self.cache.pop(&cid);
            } else {
                self.cache.put(cid, state);
            }
        }
        for (key, value) in new_counters {
            self.publish_gauge(&key.0, key.1, value);
            self.counters.put(key, value);
        }
        let partition = self.partition.to_string();
        METRICS
            .events_applied
            .with_label_values(&[&partition])
            .inc_by(outcome.applied as u64);
        METRICS
            .batch_events
            .with_label_values::<&str>(&[])
            .observe(records.len() as f64);
        for planned in &planned {
            let kind = match planned.action {
                Action::Allocate { .. } => "allocate",
                Action::Pin { .. } => "pin",
                Action::Unpin { .. } => "unpin",
                Action::ReleaseHold { .. } => "release",
            };
            METRICS.actions.with_label_values(&[kind]).inc();
        }
        self.snapshot.next_offset = next_offset;
        self.snapshot.events_applied += outcome.applied as u64;
        self.snapshot.batches += 1;
        self.snapshot.cached_states = self.cache.len();
        outcome.actions = planned;
        Ok(outcome)
    }

    fn replan(&mut self, cids: Vec<String>) -> Result<Vec<PlannedAction>, StoreError> {
        let context = self.context();
        let mut actions = Vec::new();
        let mut settled = Vec::new();
        for cid in cids {
            let state = self.load(&cid)?;
            let planned = plan(&state, &context);
            if !needs_work(&state, &context, &planned) {
                settled.push((cid.clone(), false));
            }
            actions.extend(planned.into_iter().map(|action| PlannedAction {
                cid: cid.clone(),
                action,
                traceparent: None,
            }));
        }
        if !settled.is_empty() {
            self.store.write_shard_batch(&ShardBatch {
                partition: self.partition,
                pending: settled,
                ..ShardBatch::default()
            })?;
        }
        Ok(actions)
    }
}

/// Releases the hold of a replaced pin, on its CID's canonical key (a pin an earlier release
/// recorded may name the replaced pin's CID as the client spelled it).
fn release_hold(replaces: pinhive_events::Replaces) -> Action {
    let cid = pinhive_domain::canonical_cid(&replaces.cid).unwrap_or(replaces.cid);
    Action::ReleaseHold {
        requestid: replaces.requestid,
        cid,
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
        ] {
            counter.with_label_values(&[&partition]);
        }
        METRICS.mailbox_depth.with_label_values(&[&partition]);
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
        let result = self.apply_batch(message.records);
        timer.observe_duration();
        if result.is_err() {
            METRICS.store_errors.with_label_values(&[&partition]).inc();
            // The batch may be half-written (the store promises nothing across keys): drop
            // cached states so the retry reloads what was persisted.
            self.cache.clear();
            self.counters.clear();
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
        self.replan(message.cids)
    }
}

impl Handler<GetSnapshot> for ShardActor {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        self.snapshot.cached_states = self.cache.len();
        MessageResult(self.snapshot.clone())
    }
}
