//! The analytics actors and their handle.
//!
//! One [`PartitionActor`] per access-log partition this instance owns (all of them with the
//! embedded log; those the consumer group assigns with Kafka), on an arbiter of their own so
//! store reads and the optimizer never stall HTTP or the shards. A reader task per partition
//! feeds the actor batches of records in log order; every `epoch_secs` the actor closes an epoch:
//! decay, bounds read from the store, optimizer, `TargetChanged` appends to the pin log, then a
//! checkpoint (tracker state + access offset in one store value).
//!
//! Invariants: the shard stays the single writer of CID state (analytics only appends events);
//! a checkpoint never covers a record that was not counted; a restart re-reads the records after
//! the checkpoint and counts them once, decayed by their own timestamps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use parking_lot::Mutex;
use pinhive_domain::analytics::access::admit_access;
use pinhive_domain::analytics::{optimize, Candidate, Explanation, OptimizerParams};
use pinhive_domain::{CidState, ReplicaStatus};
use pinhive_events::access::{AccessEvent, MAX_ACCESS_BATCH};
use pinhive_events::codec::ContentType;
use pinhive_events::{Envelope, Event};
use pinhive_log::kafka_group::AssignmentChange;
use pinhive_log::{DeadLetterRecord, Log, LogError, Record, StoredRecord};
use pinhive_store::{AnalyticsCheckpoint, DeadLetter, Store};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::AnalyticsConfig;
use crate::metrics::{replica_label, METRICS, REPLICA_LABELS};
use crate::tracker::{TrackedDemand, Tracker};

/// Dead letters of access partition `p` are listed as partition `ACCESS_DEAD_LETTERS | p`
/// (the pin log's partitions count up from 0, the S3 topic's down from `u32::MAX`).
pub const ACCESS_DEAD_LETTERS: u32 = 1 << 31;

/// Region of a node id (the node registry), for the regions a CID's replicas sit in.
pub type NodeRegion = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Why `POST /access` refused a batch.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("event {index}: {reason}")]
    Invalid { index: usize, reason: String },
    #[error("a batch holds 1 to {MAX_ACCESS_BATCH} events, not {0}")]
    BatchSize(usize),
    #[error("analytics is disabled on this instance")]
    Disabled,
    #[error("the access log is overloaded, retry later")]
    Overloaded,
    #[error("access log: {0}")]
    Log(LogError),
}

/// What the admin API shows for one CID.
#[derive(Clone, Debug, Serialize)]
pub struct CidAnalytics {
    pub access_partition: u32,
    pub epoch: u64,
    pub demand: TrackedDemand,
    /// The last epoch's decision, if the CID was a candidate (its pins exist).
    pub decision: Option<Explanation>,
    pub target: Option<u8>,
    pub preferred_regions: Vec<String>,
}

/// Cluster-wide view of one partition's last epoch.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PartitionSummary {
    pub partition: u32,
    pub epoch: u64,
    pub tracked_cids: usize,
    pub memory_bytes: usize,
    pub budget_bytes: u64,
    pub budget_used_bytes: u64,
    pub water_level_views_per_day: Option<f64>,
    /// Candidates by replica target ("1".."9", "10+").
    pub targets: Vec<(String, u64)>,
    pub next_offset: u64,
    /// The last epoch's demand by region (bytes/s; "other": regions without nodes) and its
    /// [`TOP_CIDS`] most-read CIDs with their targets.
    pub demand_by_region: Vec<(String, f64)>,
    pub top_cids: Vec<pinhive_domain::analytics::TopCid>,
}

/// Most-read CIDs a partition's summary names.
pub const TOP_CIDS: usize = 10;

struct Shared {
    access_log: Arc<dyn Log>,
    pin_log: Arc<dyn Log>,
    store: Arc<dyn Store>,
    node_region: NodeRegion,
    config: AnalyticsConfig,
    regions: Vec<String>,
    params: OptimizerParams,
}

struct Running {
    actor: Addr<PartitionActor>,
    stop: Arc<AtomicBool>,
}

/// Handle of the analytics actors (shared with the API).
pub struct Analytics {
    shared: Arc<Shared>,
    arbiter: ArbiterHandle,
    running: Mutex<HashMap<u32, Running>>,
}

impl Analytics {
    /// Starts the actors of every partition (`changes` = None) or of those a consumer group
    /// assigns. Must run inside an actix System.
    pub fn start(
        access_log: Arc<dyn Log>,
        pin_log: Arc<dyn Log>,
        store: Arc<dyn Store>,
        node_region: NodeRegion,
        config: AnalyticsConfig,
        regions: Vec<String>,
        changes: Option<mpsc::UnboundedReceiver<AssignmentChange>>,
    ) -> Arc<Analytics> {
        let params = config.optimizer(&regions);
        let analytics = Arc::new(Analytics {
            shared: Arc::new(Shared {
                access_log,
                pin_log,
                store,
                node_region,
                config,
                regions,
                params,
            }),
            arbiter: Arbiter::new().handle(),
            running: Mutex::new(HashMap::new()),
        });
        match changes {
            None => {
                let all: Vec<u32> = (0..analytics.shared.access_log.partition_count()).collect();
                analytics.start_partitions(&all);
            }
            Some(mut changes) => {
                let handle = analytics.clone();
                actix::spawn(async move {
                    while let Some(change) = changes.recv().await {
                        match change {
                            AssignmentChange::Assigned(partitions) => {
                                handle.start_partitions(&partitions)
                            }
                            AssignmentChange::Revoked { partitions, done } => {
                                handle.stop_partitions(&partitions).await;
                                let _ = done.send(());
                            }
                        }
                    }
                });
            }
        }
        analytics
    }

    /// Regions the optimizer knows (index = region id).
    pub fn regions(&self) -> &[String] {
        &self.shared.regions
    }

    fn start_partitions(&self, partitions: &[u32]) {
        for &partition in partitions {
            let mut running = self.running.lock();
            if running.contains_key(&partition) {
                continue;
            }
            crate::metrics::touch(partition);
            METRICS
                .budget_bytes
                .with_label_values(&[&partition.to_string()])
                .set(self.shared.params.extra_budget_bytes as i64);
            let shared = self.shared.clone();
            let (tracker, pending_resets, next_offset) = restore(&shared, partition);
            let stop = Arc::new(AtomicBool::new(false));
            let actor = PartitionActor::start_in_arbiter(&self.arbiter, {
                let shared = shared.clone();
                move |_| PartitionActor {
                    partition,
                    tracker,
                    next_offset,
                    checkpointed_offset: next_offset,
                    epochs_since_checkpoint: 0,
                    pending_resets,
                    explanations: HashMap::new(),
                    last: PartitionSummary::default(),
                    shared,
                }
            });
            self.arbiter.spawn(read_partition(
                shared,
                partition,
                next_offset,
                actor.clone(),
                stop.clone(),
            ));
            tracing::info!(partition, next_offset, "analytics partition started");
            running.insert(partition, Running { actor, stop });
        }
    }

    async fn stop_partitions(&self, partitions: &[u32]) {
        let stopping: Vec<(u32, Running)> = {
            let mut running = self.running.lock();
            partitions
                .iter()
                .filter_map(|p| running.remove(p).map(|r| (*p, r)))
                .collect()
        };
        for (partition, running) in stopping {
            running.stop.store(true, Ordering::SeqCst);
            if running.actor.send(Stop).await.is_err() {
                tracing::warn!(
                    partition,
                    "analytics partition stopped without a checkpoint"
                );
            }
        }
    }

    /// Checkpoints and stops every partition (shutdown).
    pub async fn shutdown(&self) {
        let all: Vec<u32> = self.running.lock().keys().copied().collect();
        self.stop_partitions(&all).await;
    }

    /// Admits a batch (all or nothing) and appends it to the access log, keyed by CID.
    pub async fn ingest(&self, events: &[AccessEvent]) -> Result<usize, IngestError> {
        if !self.shared.config.enabled {
            return Err(IngestError::Disabled);
        }
        if events.is_empty() || events.len() > MAX_ACCESS_BATCH {
            return Err(IngestError::BatchSize(events.len()));
        }
        let now = pinhive_events::now_ns();
        let mut records = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let admitted = admit_access(event).map_err(|rejection| {
                METRICS.access_events.with_label_values(&["rejected"]).inc();
                IngestError::Invalid {
                    index,
                    reason: rejection.to_string(),
                }
            })?;
            records.push(Record {
                key: admitted.cid.as_bytes().to_vec(),
                value: serde_json::to_vec(&admitted).unwrap_or_default(),
                content_type: ContentType::Json as u8,
                timestamp_ns: now,
                traceparent: None,
            });
        }
        let count = records.len();
        self.shared
            .access_log
            .append(records)
            .await
            .map_err(|error| match error {
                LogError::Overloaded => IngestError::Overloaded,
                other => IngestError::Log(other),
            })?;
        METRICS
            .access_events
            .with_label_values(&["accepted"])
            .inc_by(count as u64);
        Ok(count)
    }

    /// The demand and last decision of `cid` (canonical), if a local partition tracks it.
    /// `Err(Busy)` when its partition does not answer within [`EXPLAIN_WAIT`] (e.g. while it
    /// rebuilds demand from the access topic after a handover): a caller is told to come back
    /// rather than held.
    pub async fn explain(&self, cid: &str) -> Result<Option<CidAnalytics>, Busy> {
        let partition = self.shared.access_log.partition_for(cid.as_bytes());
        let Some(actor) = self
            .running
            .lock()
            .get(&partition)
            .map(|running| running.actor.clone())
        else {
            return Ok(None);
        };
        match tokio::time::timeout(EXPLAIN_WAIT, actor.send(Explain(cid.to_string()))).await {
            Ok(answer) => Ok(answer.ok().flatten()),
            Err(_) => Err(Busy),
        }
    }

    /// The last epoch of every local partition.
    pub async fn summary(&self) -> Vec<PartitionSummary> {
        let actors: Vec<Addr<PartitionActor>> = self
            .running
            .lock()
            .values()
            .map(|r| r.actor.clone())
            .collect();
        let mut out = Vec::with_capacity(actors.len());
        for actor in actors {
            if let Ok(summary) = actor.send(Summarize).await {
                out.push(summary);
            }
        }
        out.sort_by_key(|s| s.partition);
        out
    }
}

/// How long `explain` waits for a partition's answer.
pub const EXPLAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// An access partition did not answer in time (it is busy, e.g. rebuilding its demand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// What a partition checkpoints besides its offset (versioned; `AnalyticsCheckpoint::state`).
#[derive(serde::Serialize, serde::Deserialize)]
struct PartitionState {
    version: u8,
    tracker: Vec<u8>,
    pending_resets: Vec<String>,
}

const PARTITION_STATE_VERSION: u8 = 1;

/// Loads a partition's checkpoint. A checkpoint that no longer decodes (the regions or sketch
/// shape changed) is dropped: demand is rebuilt from the retained access log instead.
fn restore(shared: &Shared, partition: u32) -> (Tracker, Vec<String>, u64) {
    let config = shared.config.tracker(&shared.regions);
    let start = shared.access_log.start_offset(partition);
    let fresh = || (Tracker::new(config.clone()), Vec::new(), start);
    let checkpoint = match shared.store.analytics_checkpoint(partition) {
        Ok(Some(checkpoint)) => checkpoint,
        Ok(None) => return fresh(),
        Err(error) => {
            tracing::error!(partition, error = %error, "reading the analytics checkpoint failed; rebuilding demand from the access log");
            return fresh();
        }
    };
    let decoded = bincode::serde::decode_from_slice::<PartitionState, _>(
        &checkpoint.state,
        bincode::config::standard(),
    )
    .map_err(|e| e.to_string())
    .and_then(|(state, _)| {
        if state.version != PARTITION_STATE_VERSION {
            return Err(format!("checkpoint version {} is unknown", state.version));
        }
        Tracker::decode(config.clone(), &state.tracker).map(|t| (t, state.pending_resets))
    });
    match decoded {
        Ok((tracker, resets)) => (tracker, resets, checkpoint.next_offset.max(start)),
        Err(reason) => {
            tracing::warn!(partition, reason = %reason, "analytics checkpoint not usable; rebuilding demand from the access log");
            fresh()
        }
    }
}

/// Reads the partition in order and hands batches to its actor until stopped.
async fn read_partition(
    shared: Arc<Shared>,
    partition: u32,
    mut from: u64,
    actor: Addr<PartitionActor>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let records = match shared.access_log.read(partition, from, 1 << 20).await {
            Ok(records) => records,
            Err(LogError::OffsetOutOfRange { start, .. }) => {
                tracing::warn!(
                    partition,
                    from,
                    start,
                    "access records expired before they were counted"
                );
                from = start;
                continue;
            }
            Err(error) => {
                tracing::warn!(partition, error = %error, "reading the access log failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let Some(last) = records.last() else {
            shared
                .access_log
                .wait_beyond(partition, from, Duration::from_millis(500))
                .await;
            continue;
        };
        from = last.next_offset;
        if actor.send(Ingest(records)).await.is_err() {
            return;
        }
    }
}

/// A batch of access records, in log order (sent by the partition's reader).
struct Ingest(Vec<StoredRecord>);
impl Message for Ingest {
    type Result = ();
}

/// Checkpoint and stop (revocation, shutdown).
struct Stop;
impl Message for Stop {
    type Result = ();
}

struct Explain(String);
impl Message for Explain {
    type Result = Option<CidAnalytics>;
}

struct Summarize;
impl Message for Summarize {
    type Result = PartitionSummary;
}

/// The analytics actor of one access partition: owns its tracker.
pub struct PartitionActor {
    partition: u32,
    tracker: Tracker,
    /// Offset after the last record counted (what a checkpoint covers).
    next_offset: u64,
    /// What the last checkpoint covers (access records before it may be released), and the
    /// epochs closed since it was written.
    checkpointed_offset: u64,
    epochs_since_checkpoint: u64,
    /// CIDs evicted from the tracker with a raised target, whose reset to `min` is not yet
    /// appended (bounded by the table size per epoch).
    pending_resets: Vec<String>,
    /// Explanations of the last epoch's candidates (bounded by the tracked set).
    explanations: HashMap<String, Explanation>,
    last: PartitionSummary,
    shared: Arc<Shared>,
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let epoch = Duration::from_secs_f64(self.shared.config.epoch_secs.max(0.05));
        ctx.run_interval(epoch, |actor, ctx| actor.close_epoch(ctx));
    }
}

fn now_secs() -> f64 {
    pinhive_events::now_ns() as f64 / 1e9
}

impl PartitionActor {
    fn label(&self) -> String {
        self.partition.to_string()
    }

    fn count(&mut self, stored: &StoredRecord, now: f64) -> Result<(), String> {
        let record = stored.record.as_ref().map_err(|e| e.clone())?;
        let event: AccessEvent = serde_json::from_slice(&record.value)
            .map_err(|e| format!("not an access event: {e}"))?;
        let event = admit_access(&event).map_err(|e| e.to_string())?;
        let at = event.ts.unwrap_or(record.timestamp_ns as f64 / 1e9);
        self.tracker.record(
            &event.cid,
            &event.region,
            event.bytes,
            event.size,
            (now - at).max(0.0),
        );
        Ok(())
    }

    fn dead_letter(&self, stored: &StoredRecord, reason: String, ctx: &mut Context<Self>) {
        METRICS
            .dead_letters
            .with_label_values(&[&self.label()])
            .inc();
        tracing::warn!(partition = self.partition, offset = stored.offset, reason = %reason, "dead-lettering access record");
        let (key, value, content_type) = match &stored.record {
            Ok(record) => (
                record.key.clone(),
                record.value.clone(),
                record.content_type,
            ),
            Err(_) => (Vec::new(), Vec::new(), 0),
        };
        let letter = DeadLetter {
            partition: ACCESS_DEAD_LETTERS | self.partition,
            offset: stored.offset,
            reason: format!("access record: {reason}"),
            key: String::from_utf8_lossy(&key).chars().take(256).collect(),
            value_prefix_hex: hex_prefix(&value),
            dead_lettered_ns: pinhive_events::now_ns(),
        };
        if let Err(error) = self.shared.store.put_dead_letter(&letter) {
            tracing::error!(error = %error, "storing an access dead letter failed");
        }
        let record = DeadLetterRecord {
            partition: self.partition,
            offset: stored.offset,
            key,
            value,
            content_type,
            reason,
        };
        let log = self.shared.access_log.clone();
        ctx.spawn(
            async move {
                if let Err(error) = log.dead_letter(&record).await {
                    tracing::warn!(error = %error, "publishing an access dead letter failed");
                }
            }
            .into_actor(self),
        );
    }

    /// Bounds and held regions of every tracked CID that has pins (one store read each).
    fn candidates(&mut self) -> Vec<Candidate> {
        let store = self.shared.store.clone();
        let mut states: HashMap<String, CidState> = HashMap::new();
        let mut candidates = self.tracker.candidates(&mut |cid: &str| {
            let state = match store.load_cid(cid) {
                Ok(Some(state)) => state,
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(cid, error = %error, "reading a CID's state for analytics failed");
                    return None;
                }
            };
            let bounds = state.replica_bounds();
            states.insert(cid.to_string(), state);
            bounds
        });
        for candidate in &mut candidates {
            let Some(state) = states.get(&candidate.cid) else {
                continue;
            };
            let mut held: Vec<u16> = state
                .replicas
                .iter()
                .filter(|(_, r)| {
                    matches!(r.status, ReplicaStatus::Pinned | ReplicaStatus::Allocated)
                })
                .filter_map(|(node, _)| (self.shared.node_region)(node))
                .filter_map(|region| self.shared.regions.iter().position(|r| *r == region))
                .filter_map(|index| u16::try_from(index).ok())
                .collect();
            held.sort_unstable();
            held.dedup();
            candidate.held_regions = held;
        }
        candidates
    }

    fn close_epoch(&mut self, ctx: &mut Context<Self>) {
        let started = Instant::now();
        let label = self.label();
        // Rates are read before the epoch's decay (the tracker's contract): a steady stream's
        // rate is exact then.
        let epoch = self.tracker.epoch();
        let candidates = self.candidates();
        let outcome = optimize(&candidates, &self.shared.params, epoch);
        let overview = pinhive_domain::analytics::demand_overview(
            &candidates,
            &outcome.decisions,
            &self.shared.regions,
            TOP_CIDS,
        );
        let resets = self.pending_resets.clone();
        let mut envelopes: Vec<Envelope> = resets
            .iter()
            .map(|cid| {
                Envelope::new(
                    cid.clone(),
                    Event::TargetChanged {
                        // 0: back to the pins' min.
                        replicas: 0,
                        preferred_regions: Vec::new(),
                        reason: "analytics: demand left the tracked set".into(),
                    },
                )
            })
            .collect();
        for decision in outcome.decisions.iter().filter(|d| d.changed) {
            envelopes.push(Envelope::new(
                decision.cid.clone(),
                Event::TargetChanged {
                    // 0 (memory cleared: at min, no geo region) clears the shard's target, so
                    // a later change of the pins' min is followed without analytics.
                    replicas: if decision.memory.target == 0 {
                        0
                    } else {
                        decision.target.min(pinhive_domain::command::MAX_REPLICAS)
                    },
                    preferred_regions: decision.preferred_regions.clone(),
                    reason: decision.explanation.reason.chars().take(1000).collect(),
                },
            ));
        }
        let changes = envelopes.len() as u64;
        let pin_log = self.shared.pin_log.clone();
        let append = async move {
            if envelopes.is_empty() {
                return Ok(());
            }
            let records: Vec<Record> = envelopes.iter().map(Record::from_envelope).collect();
            pin_log.append(records).await.map(|_| ())
        };
        // The actor waits for the append: nothing is counted into an epoch whose decisions are
        // not yet durable, and the checkpoint below covers exactly what was counted.
        ctx.wait(append.into_actor(self).map(move |result, actor, ctx| {
            match result {
                Ok(()) => {
                    actor.tracker.remember(&outcome.decisions);
                    actor.pending_resets.retain(|cid| !resets.contains(cid));
                    METRICS
                        .target_changes
                        .with_label_values(&[&label])
                        .inc_by(changes);
                }
                Err(error) => {
                    // Memory unchanged: the next epoch decides (and appends) again.
                    tracing::warn!(partition = actor.partition, error = %error, "appending target changes failed; retrying next epoch");
                }
            }
            // CIDs evicted with a raised target are reset by the next epoch's append (kept in
            // the checkpoint until then).
            let evicted = actor.tracker.end_epoch();
            actor.pending_resets.extend(evicted);
            actor.record_outcome(&outcome, epoch, overview);
            // Counted in epochs, not measured: an append faster than the last one must not
            // push a due checkpoint to the next epoch.
            actor.epochs_since_checkpoint += 1;
            if actor.epochs_since_checkpoint >= actor.shared.config.epochs_per_checkpoint() {
                actor.checkpoint();
            }
            // Records the last checkpoint covers are no longer needed once they are old enough
            // (kept a while to rebuild demand if a checkpoint ever becomes unusable).
            let (log, partition, covered) = (
                actor.shared.access_log.clone(),
                actor.partition,
                actor.checkpointed_offset,
            );
            let keep = Duration::from_secs(actor.shared.config.access_retention_secs);
            ctx.spawn(
                async move {
                    if let Err(error) = log.release_before(partition, covered, keep).await {
                        tracing::warn!(partition, error = %error, "access log retention failed");
                    }
                }
                .into_actor(actor),
            );
            METRICS
                .epoch_seconds
                .with_label_values(&[&label])
                .observe(started.elapsed().as_secs_f64());
            METRICS.epochs.with_label_values(&[&label]).inc();
        }));
    }

    fn record_outcome(
        &mut self,
        outcome: &pinhive_domain::analytics::EpochOutcome,
        epoch: u64,
        overview: pinhive_domain::analytics::DemandOverview,
    ) {
        let label = self.label();
        self.explanations = outcome
            .decisions
            .iter()
            .map(|d| (d.cid.clone(), d.explanation.clone()))
            .collect();
        let mut targets: HashMap<&'static str, u64> = HashMap::new();
        for decision in &outcome.decisions {
            *targets.entry(replica_label(decision.target)).or_default() += 1;
        }
        for replicas in REPLICA_LABELS {
            METRICS
                .targets
                .with_label_values(&[&label, replicas])
                .set(targets.get(replicas).copied().unwrap_or(0) as i64);
        }
        METRICS
            .denied_increments
            .with_label_values(&[&label])
            .inc_by(outcome.denied_increments);
        METRICS
            .deferred_changes
            .with_label_values(&[&label])
            .inc_by(outcome.deferred_changes);
        METRICS
            .budget_bytes
            .with_label_values(&[&label])
            .set(self.shared.params.extra_budget_bytes as i64);
        METRICS
            .budget_used_bytes
            .with_label_values(&[&label])
            .set(outcome.budget_used_bytes as i64);
        METRICS
            .water_level
            .with_label_values(&[&label])
            .set(outcome.water_level.unwrap_or(0.0));
        METRICS
            .tracked_cids
            .with_label_values(&[&label])
            .set(self.tracker.tracked() as i64);
        METRICS
            .memory_bytes
            .with_label_values(&[&label])
            .set(self.tracker.memory_bytes() as i64);
        self.last = PartitionSummary {
            partition: self.partition,
            epoch,
            tracked_cids: self.tracker.tracked(),
            memory_bytes: self.tracker.memory_bytes(),
            budget_bytes: self.shared.params.extra_budget_bytes,
            budget_used_bytes: outcome.budget_used_bytes,
            water_level_views_per_day: outcome.water_level,
            targets: REPLICA_LABELS
                .iter()
                .filter_map(|r| targets.get(r).map(|n| (r.to_string(), *n)))
                .collect(),
            next_offset: self.next_offset,
            demand_by_region: overview.by_region,
            top_cids: overview.top,
        };
    }

    fn checkpoint(&mut self) {
        let state = PartitionState {
            version: PARTITION_STATE_VERSION,
            tracker: self.tracker.encode(),
            pending_resets: self.pending_resets.clone(),
        };
        let checkpoint = AnalyticsCheckpoint {
            next_offset: self.next_offset,
            state: bincode::serde::encode_to_vec(&state, bincode::config::standard())
                .unwrap_or_default(),
        };
        if let Err(error) = self
            .shared
            .store
            .put_analytics_checkpoint(self.partition, &checkpoint)
        {
            // Tried again at the next epoch.
            tracing::error!(partition = self.partition, error = %error, "analytics checkpoint failed");
            return;
        }
        self.checkpointed_offset = checkpoint.next_offset;
        self.epochs_since_checkpoint = 0;
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(64).map(|b| format!("{b:02x}")).collect()
}

impl Handler<Ingest> for PartitionActor {
    type Result = ();

    fn handle(&mut self, Ingest(records): Ingest, ctx: &mut Self::Context) {
        let now = now_secs();
        let mut counted = 0u64;
        for stored in &records {
            match self.count(stored, now) {
                Ok(()) => counted += 1,
                Err(reason) => self.dead_letter(stored, reason, ctx),
            }
            self.next_offset = stored.next_offset;
        }
        METRICS
            .events_counted
            .with_label_values(&[&self.label()])
            .inc_by(counted);
    }
}

impl Handler<Stop> for PartitionActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        self.checkpoint();
        ctx.stop();
    }
}

impl Handler<Explain> for PartitionActor {
    type Result = Option<CidAnalytics>;

    fn handle(&mut self, Explain(cid): Explain, _: &mut Self::Context) -> Self::Result {
        let demand = self.tracker.demand(&cid)?;
        let regions = &self.shared.regions;
        Some(CidAnalytics {
            access_partition: self.partition,
            epoch: self.tracker.epoch(),
            decision: self.explanations.get(&cid).cloned(),
            target: (demand.memory.target != 0).then_some(demand.memory.target),
            preferred_regions: demand
                .memory
                .regions
                .iter()
                .filter_map(|r| regions.get(usize::from(*r)).cloned())
                .collect(),
            demand,
        })
    }
}

impl Handler<Summarize> for PartitionActor {
    type Result = MessageResult<Summarize>;

    fn handle(&mut self, _: Summarize, _: &mut Self::Context) -> Self::Result {
        let mut summary = self.last.clone();
        summary.partition = self.partition;
        summary.next_offset = self.next_offset;
        summary.tracked_cids = self.tracker.tracked();
        MessageResult(summary)
    }
}
