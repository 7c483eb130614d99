//! Starts the shards and drives them: one consumer task per partition reads the log in order
//! and feeds its shard; one repair task per partition re-plans CIDs with outstanding work; one
//! retention task releases log segments every consumer has passed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use async_trait::async_trait;
use parking_lot::Mutex;
use pinhive_domain::Action;
use pinhive_events::{Envelope, Event};
use pinhive_ipfs::{NodeCommand, NodeOp, NodeRegistry, OutcomeSink};
use pinhive_log::kafka_group::AssignmentChange;
use pinhive_log::{Log, LogError, Position, Record};
use pinhive_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::cache::StateCache;
use crate::metrics::METRICS;
use crate::retry::RetryTimers;
use crate::shard::{
    ApplyBatch, Claimed, ClearCache, GetSnapshot, PlannedAction, Replan, ShardActor, ShardParts,
    ShardSnapshot,
};

/// How often a held partition reads its batch again ([`Orchestrator::hold`]).
const HOLD_RETRY: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct OrchestratorConfig {
    /// Bytes of CID states cached, shared by every shard of the process.
    pub cache_bytes: u64,
    /// Bytes read from the log per batch.
    pub read_bytes: usize,
    /// Nodes with less free space get no new replicas.
    pub min_free_bytes: u64,
    /// Let nodes dial loopback/private origins of pin requests (see `PlanContext`).
    pub dial_private_origins: bool,
    pub repair_interval: Duration,
    /// CIDs re-planned per repair step.
    pub repair_page: usize,
    /// Time one repair pass may take at most (it goes on where it stopped next time).
    pub repair_budget: Duration,
    /// Log segments wholly below every checkpoint are dropped once older than this.
    pub retention: Duration,
    pub retention_interval: Duration,
    /// Journal entries (pin history) and dead letters are kept this long.
    pub journal_retention: Duration,
    pub dead_letter_retention: Duration,
    /// Other instances write the same store (ScyllaDB): a write to a partition another
    /// instance owns can be waited for through the partition's commit row.
    pub shared_store: bool,
    /// Replicas per second node walks (re-replication, drains) may allocate on this instance,
    /// and per destination node; 0 lifts the cap.
    pub rereplication_rate: u32,
    pub rereplication_rate_per_node: u32,
    /// Pause between two expiry ticks of a partition (`crate::expiry`); zero turns expiry off.
    pub expiry_interval: Duration,
    /// Pause between two anti-entropy rounds over the nodes; zero turns anti-entropy off.
    pub anti_entropy_interval: Duration,
    /// Point checks per second anti-entropy may make (0: unpaced).
    pub anti_entropy_checks_per_sec: u32,
    /// Unpin, on a node, pins pinhive holds no replica of there (otherwise only reported).
    pub anti_entropy_remove_unknown: bool,
    /// Pinned roots per node and pass read back with `block/stat` (0: no sampling).
    pub anti_entropy_integrity_samples: usize,
    /// When failed replicas are retried (backoff per failure round, a limit).
    pub retry: pinhive_domain::RetryPolicy,
    /// Per-owner quotas every entry path enforces ([`crate::quota`]).
    pub quota: pinhive_domain::quota::Quota,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        OrchestratorConfig {
            cache_bytes: 128 << 20,
            read_bytes: 1024 * 1024,
            min_free_bytes: 0,
            dial_private_origins: false,
            repair_interval: Duration::from_secs(10),
            repair_page: 256,
            repair_budget: Duration::from_secs(2),
            retention: Duration::from_secs(24 * 3600),
            retention_interval: Duration::from_secs(60),
            journal_retention: Duration::from_secs(7 * 24 * 3600),
            dead_letter_retention: Duration::from_secs(7 * 24 * 3600),
            shared_store: false,
            rereplication_rate: 100,
            rereplication_rate_per_node: 20,
            expiry_interval: crate::expiry::DEFAULT_INTERVAL,
            anti_entropy_interval: crate::antientropy::DEFAULT_INTERVAL,
            anti_entropy_checks_per_sec: 100,
            anti_entropy_remove_unknown: false,
            anti_entropy_integrity_samples: 8,
            retry: pinhive_domain::RetryPolicy::default(),
            quota: pinhive_domain::quota::Quota::default(),
        }
    }
}

/// Node drivers publish outcomes into the log through this. Outcomes that arrive while an
/// append is in flight go out together in the next one: one durable append (one fsync, one
/// produce request) for many outcomes under load, no added wait when idle.
pub struct LogSink {
    queue: mpsc::Sender<(Envelope, oneshot::Sender<Result<(), String>>)>,
}

/// Most outcomes one grouped append carries.
const OUTCOMES_PER_APPEND: usize = 1024;

/// Appends a group of outcomes. Failpoint `log::outcome_append` (tests only): the group is
/// not appended and every driver that sent one of its outcomes is told so.
async fn outcome_append(log: &dyn Log, records: Vec<Record>) -> Result<(), String> {
    fail::fail_point!("log::outcome_append", |_| Err(
        "injected fault at log::outcome_append".into()
    ));
    log.append(records)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl LogSink {
    /// Starts the appending task (inside a Tokio runtime).
    pub fn new(log: Arc<dyn Log>) -> Self {
        let (queue, mut pending) =
            mpsc::channel::<(Envelope, oneshot::Sender<Result<(), String>>)>(OUTCOMES_PER_APPEND);
        tokio::spawn(async move {
            while let Some(first) = pending.recv().await {
                let mut group = vec![first];
                while group.len() < OUTCOMES_PER_APPEND {
                    match pending.try_recv() {
                        Ok(next) => group.push(next),
                        Err(_) => break,
                    }
                }
                let records = group
                    .iter()
                    .map(|(envelope, _)| Record::from_envelope(envelope))
                    .collect();
                let result = outcome_append(log.as_ref(), records).await;
                METRICS
                    .outcome_group
                    .with_label_values::<&str>(&[])
                    .observe(group.len() as f64);
                for (_, done) in group {
                    done.send(result.clone()).ok();
                }
            }
        });
        LogSink { queue }
    }
}

#[async_trait]
impl OutcomeSink for LogSink {
    async fn publish(&self, envelope: Envelope) -> Result<(), String> {
        let (done, appended) = oneshot::channel();
        self.queue
            .send((envelope, done))
            .await
            .map_err(|_| "the outcome appender stopped".to_string())?;
        appended
            .await
            .map_err(|_| "the outcome appender stopped".to_string())?
    }
}

/// Which partitions this instance runs.
pub enum Membership {
    /// Every partition, for the life of the process (embedded log, single Kafka instance).
    All,
    /// Partitions come and go with the Kafka consumer group's rebalances.
    Dynamic(mpsc::UnboundedReceiver<AssignmentChange>),
}

/// Called with (partition, next offset) after the state up to that offset is persisted (the
/// Kafka adapter commits it to the consumer group).
pub type OffsetCommitter = Arc<dyn Fn(u32, u64) + Send + Sync>;

/// The running tasks of one owned partition.
struct Runner {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

pub struct Orchestrator {
    pub(crate) log: Arc<dyn Log>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: NodeRegistry,
    pub(crate) shards: Vec<Addr<ShardActor>>,
    applied: Vec<watch::Sender<u64>>,
    pub(crate) shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    runners: Mutex<HashMap<u32, Runner>>,
    committer: Option<OffsetCommitter>,
    pub(crate) config: OrchestratorConfig,
    /// The re-replication limiters node walks share.
    pub(crate) rates: crate::rereplicate::Rates,
    /// Per partition: batches whose actions are still being carried out.
    executing: Vec<Arc<Semaphore>>,
    /// Per partition: repair passes completed.
    repair_passes: Vec<AtomicU64>,
    /// Paces anti-entropy's point checks; the last pass's report per node.
    pub(crate) check_rate: crate::antientropy::CheckRate,
    pub(crate) anti_entropy_reports: crate::antientropy::Reports,
    /// CIDs waiting for a failed replica's retry, by due time (the repair task wakes them).
    timers: Arc<RetryTimers>,
    /// Per-owner quotas, shared by every entry path of this instance.
    quota: Arc<crate::quota::QuotaGate>,
    /// Partitions waiting at a record or row a later release wrote, and why.
    held: Mutex<BTreeMap<u32, String>>,
    /// Pin status changes as the shards commit them (the operator console's live feed).
    feed: crate::feed::PinFeed,
}

/// Batches of one partition whose actions may be carried out while the consumer goes on
/// reading and applying the next ones.
const EXECUTING_BATCHES: usize = 2;

impl Orchestrator {
    /// Starts every shard and runs every partition. Must run inside an actix `System`.
    pub fn start(
        log: Arc<dyn Log>,
        store: Arc<dyn Store>,
        registry: NodeRegistry,
        config: OrchestratorConfig,
    ) -> Result<Arc<Self>, pinhive_store::StoreError> {
        Self::start_with(log, store, registry, config, Membership::All, None)
    }

    /// Starts every shard; runs the partitions `membership` gives this instance.
    pub fn start_with(
        log: Arc<dyn Log>,
        store: Arc<dyn Store>,
        registry: NodeRegistry,
        config: OrchestratorConfig,
        membership: Membership,
        committer: Option<OffsetCommitter>,
    ) -> Result<Arc<Self>, pinhive_store::StoreError> {
        let partitions = log.partition_count();
        let mut shards = Vec::with_capacity(partitions as usize);
        let mut applied = Vec::with_capacity(partitions as usize);
        let cache = StateCache::new(config.cache_bytes);
        let timers = Arc::new(RetryTimers::new(partitions));
        let feed = crate::feed::PinFeed::default();
        let quota = Arc::new(crate::quota::QuotaGate::new(
            config.quota,
            store.clone(),
            partitions,
        ));
        for partition in 0..partitions {
            let start = store
                .committed(partition)?
                .next_offset
                .unwrap_or(0)
                .max(log.start_offset(partition));
            applied.push(watch::channel(start).0);
            let parts = ShardParts {
                partitions,
                store: store.clone(),
                log: log.clone(),
                registry: registry.clone(),
                cache: cache.clone(),
                min_free_bytes: config.min_free_bytes,
                dial_private_origins: config.dial_private_origins,
                retry: config.retry,
                timers: timers.clone(),
                quota: quota.clone(),
                feed: feed.clone(),
            };
            shards.push(SyncArbiter::start(1, move || {
                ShardActor::new(partition, parts.clone())
            }));
        }
        let check_rate = crate::antientropy::CheckRate::new(config.anti_entropy_checks_per_sec);
        let orchestrator = Arc::new(Orchestrator {
            log,
            store,
            registry,
            shards,
            applied,
            shutdown: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
            runners: Mutex::new(HashMap::new()),
            committer,
            rates: crate::rereplicate::Rates::new(
                config.rereplication_rate,
                config.rereplication_rate_per_node,
            ),
            config,
            executing: (0..partitions)
                .map(|_| Arc::new(Semaphore::new(EXECUTING_BATCHES)))
                .collect(),
            repair_passes: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            held: Mutex::new(BTreeMap::new()),
            check_rate,
            anti_entropy_reports: Default::default(),
            timers,
            quota,
            feed,
        });
        let mut tasks = Vec::new();
        match membership {
            Membership::All => {
                for partition in 0..partitions {
                    orchestrator.run_partition(partition);
                }
            }
            Membership::Dynamic(changes) => {
                tasks.push(actix::spawn(orchestrator.clone().manage(changes)));
            }
        }
        tasks.push(actix::spawn(orchestrator.clone().retain()));
        tasks.push(actix::spawn(orchestrator.clone().anti_entropy()));
        *orchestrator.tasks.lock() = tasks;
        Ok(orchestrator)
    }

    /// The live feed of committed pin status changes ([`crate::feed`]).
    pub fn feed(&self) -> &crate::feed::PinFeed {
        &self.feed
    }

    pub fn registry(&self) -> &NodeRegistry {
        &self.registry
    }

    /// The per-owner quota gate every entry path of this instance asks.
    pub fn quota(&self) -> &Arc<crate::quota::QuotaGate> {
        &self.quota
    }

    /// Whether other instances write the same store (see [`OrchestratorConfig::shared_store`]).
    pub fn shared_store(&self) -> bool {
        self.config.shared_store
    }

    /// True if this instance currently runs `partition`'s shard.
    pub fn owns(&self, partition: u32) -> bool {
        self.runners.lock().contains_key(&partition)
    }

    /// Partitions this instance runs, sorted.
    pub fn owned_partitions(&self) -> Vec<u32> {
        let mut owned: Vec<u32> = self.runners.lock().keys().copied().collect();
        owned.sort_unstable();
        owned
    }

    fn run_partition(self: &Arc<Self>, partition: u32) {
        let mut runners = self.runners.lock();
        if runners.contains_key(&partition) || partition >= self.log.partition_count() {
            return;
        }
        let stop = watch::channel(false).0;
        let tasks = vec![actix::spawn(self.clone().own(partition, stop.subscribe()))];
        runners.insert(partition, Runner { stop, tasks });
    }

    /// Runs an owned partition: claims it in the store (a new owner epoch, which fences the
    /// previous owner's commits), hands the epoch to the shard, then runs the consumer and the
    /// repair loop until the partition is stopped.
    async fn own(self: Arc<Self>, partition: u32, stop: watch::Receiver<bool>) {
        let Some(epoch) = self.claim(partition, &stop).await else {
            return;
        };
        tracing::info!(partition, owner_epoch = epoch, "claimed log partition");
        if let Err(error) = self.shards[partition as usize]
            .send(Claimed { epoch })
            .await
        {
            tracing::error!(partition, error = %error, "shard actor unavailable");
        }
        futures::join!(
            self.clone().consume(partition, stop.clone()),
            self.clone().repair(partition, stop.clone()),
            self.clone().expire(partition, stop.clone()),
            self.clone().walk_nodes(partition, stop),
        );
    }

    /// A new owner epoch for `partition` (`Store::claim_partition`), retried with backoff
    /// while the store fails; `None` if the partition or the process stops first.
    async fn claim(&self, partition: u32, stop: &watch::Receiver<bool>) -> Option<u64> {
        let mut failures: u32 = 0;
        let mut shutdown = self.shutdown.subscribe();
        let mut stopped = stop.clone();
        loop {
            if self.stopping() || *stop.borrow() {
                return None;
            }
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.claim_partition(partition)).await {
                Ok(Ok(epoch)) => return Some(epoch),
                Ok(Err(error)) => {
                    tracing::error!(partition, error = %error, "could not claim the log partition; retrying")
                }
                Err(error) => {
                    tracing::error!(partition, error = %error, "claim task failed; retrying")
                }
            }
            tokio::select! {
                _ = backoff(&mut failures, &mut shutdown) => {}
                _ = stopped.changed() => {}
            }
        }
    }

    /// Another instance claimed `partition` (a commit came back `Fenced`): stops this
    /// instance's tasks of it — the runner whose stop signal is `stop`, unless a newer one
    /// replaced it — and drops what the shard cached. The rest of the process goes on.
    pub(crate) fn give_up_fenced(
        &self,
        partition: u32,
        stop: &watch::Receiver<bool>,
        error: &StoreError,
    ) {
        tracing::error!(
            partition,
            error = %error,
            "another instance owns this log partition now; stopping it here"
        );
        let mut runners = self.runners.lock();
        let ours = runners
            .get(&partition)
            .is_some_and(|runner| runner.stop.subscribe().same_channel(stop));
        if ours {
            if let Some(runner) = runners.remove(&partition) {
                // The runner's own task is the caller: it ends by returning, not by a join.
                runner.stop.send_replace(true);
            }
        }
        drop(runners);
        self.shards[partition as usize].do_send(ClearCache);
    }

    async fn stop_partition(&self, partition: u32) {
        let runner = self.runners.lock().remove(&partition);
        let Some(runner) = runner else {
            return;
        };
        runner.stop.send_replace(true);
        let _ = tokio::time::timeout(
            Duration::from_secs(15),
            futures::future::join_all(runner.tasks),
        )
        .await;
        // Another instance may write this partition's state from now on.
        let _ = self.shards[partition as usize].send(ClearCache).await;
    }

    /// Follows the consumer group: starts assigned partitions, stops revoked ones (and only
    /// then lets the rebalance proceed).
    async fn manage(self: Arc<Self>, mut changes: mpsc::UnboundedReceiver<AssignmentChange>) {
        let mut shutdown = self.shutdown.subscribe();
        loop {
            let change = tokio::select! {
                change = changes.recv() => change,
                _ = shutdown.changed() => None,
            };
            match change {
                Some(AssignmentChange::Assigned(partitions)) => {
                    for partition in partitions {
                        self.run_partition(partition);
                    }
                }
                Some(AssignmentChange::Revoked { partitions, done }) => {
                    for partition in partitions {
                        self.stop_partition(partition).await;
                    }
                    let _ = done.send(());
                }
                None => return,
            }
        }
    }

    /// The offset up to which `partition` has been applied and persisted.
    /// Repair passes `partition` has completed (each re-plans what its pending set holds,
    /// within `repair_budget`).
    pub fn repair_passes(&self, partition: u32) -> u64 {
        self.repair_passes
            .get(partition as usize)
            .map_or(0, |passes| passes.load(Ordering::Relaxed))
    }

    pub fn applied_offset(&self, partition: u32) -> u64 {
        self.applied
            .get(partition as usize)
            .map(|s| *s.borrow())
            .unwrap_or(0)
    }

    /// Waits (at most `timeout`) until the shard has applied the record at `position`; the API
    /// uses it so a client that got 202 can read its write at once.
    pub async fn wait_applied(&self, position: Position, timeout: Duration) -> bool {
        let Some(sender) = self.applied.get(position.partition as usize) else {
            return false;
        };
        let mut receiver = sender.subscribe();
        tokio::time::timeout(timeout, receiver.wait_for(|next| *next > position.offset))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Read-your-writes for any partition: waits (at most `timeout`) until the record at
    /// `position` is applied — by this instance's shard when it owns the partition; with a
    /// shared store, by whichever instance owns it, as the partition's commit row shows.
    /// Returns false at the bound (or when nobody here can tell: another owner, own store).
    pub async fn wait_applied_anywhere(&self, position: Position, timeout: Duration) -> bool {
        if self.owns(position.partition) {
            return self.wait_applied(position, timeout).await;
        }
        if !self.config.shared_store {
            return false;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            let store = self.store.clone();
            let committed =
                tokio::task::spawn_blocking(move || store.committed(position.partition)).await;
            if let Ok(Ok(state)) = committed {
                if state.next_offset.is_some_and(|next| next > position.offset) {
                    return true;
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    pub async fn snapshots(&self) -> Vec<ShardSnapshot> {
        let mut out = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            if let Ok(snapshot) = shard.send(GetSnapshot).await {
                out.push(snapshot);
            }
        }
        out
    }

    /// Stops consuming after the batches in flight, then flushes the store.
    pub async fn shutdown(&self, timeout: Duration) {
        self.shutdown.send_replace(true);
        let mut tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock());
        let runners: Vec<Runner> = self.runners.lock().drain().map(|(_, r)| r).collect();
        for runner in runners {
            runner.stop.send_replace(true);
            tasks.extend(runner.tasks);
        }
        let _ = tokio::time::timeout(timeout, futures::future::join_all(tasks)).await;
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.flush()).await {
            Ok(Ok(())) => tracing::info!("store flushed"),
            Ok(Err(error)) => tracing::error!(error = %error, "store flush failed at shutdown"),
            Err(error) => tracing::error!(error = %error, "store flush task failed"),
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    async fn consume(self: Arc<Self>, partition: u32, mut stop: watch::Receiver<bool>) {
        let shard = self.shards[partition as usize].clone();
        // Resume from the persisted checkpoint (which another instance may have advanced while
        // it owned the partition, when the store is shared).
        let store = self.store.clone();
        let checkpoint = tokio::task::spawn_blocking(move || store.committed(partition))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|commit| commit.next_offset);
        let mut next = checkpoint
            .unwrap_or(0)
            .max(self.log.start_offset(partition));
        self.applied[partition as usize].send_replace(next);
        let mut failures: u32 = 0;
        // Consecutive failed reads: a log outage is reported when it starts, every 64th retry
        // (about every 8 minutes at the longest backoff) and when it ends, not at every retry.
        let mut read_failures: u32 = 0;
        let mut shutdown = self.shutdown.subscribe();
        while !self.stopping() && !*stop.borrow() {
            let records = match self.log.read(partition, next, self.config.read_bytes).await {
                Ok(records) => {
                    if read_failures > 0 {
                        tracing::info!(
                            partition,
                            failed_reads = read_failures,
                            "log reads work again"
                        );
                        read_failures = 0;
                    }
                    records
                }
                Err(LogError::OffsetOutOfRange { start, .. }) => {
                    tracing::error!(
                        partition,
                        offset = next,
                        start,
                        "checkpoint below the retained log; resuming at the log start"
                    );
                    next = start;
                    continue;
                }
                Err(error) => {
                    if read_failures.is_multiple_of(64) {
                        tracing::warn!(
                            partition,
                            error = %error,
                            failed_reads = read_failures + 1,
                            "log read failed; retrying with backoff"
                        );
                    }
                    read_failures = read_failures.saturating_add(1);
                    backoff(&mut failures, &mut shutdown).await;
                    continue;
                }
            };
            if records.is_empty() {
                METRICS
                    .consumer_lag_bytes
                    .with_label_values(&[&partition.to_string()])
                    .set(self.log.end_offset(partition).saturating_sub(next) as i64);
                tokio::select! {
                    _ = self.log.wait_beyond(partition, next, Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let label = partition.to_string();
            METRICS.mailbox_depth.with_label_values(&[&label]).inc();
            match shard.send(ApplyBatch { records }).await {
                Ok(Ok(outcome)) => {
                    failures = 0;
                    METRICS.batch_failures.with_label_values(&[&label]).set(0);
                    next = outcome.next_offset;
                    self.applied[partition as usize].send_replace(next);
                    if let Some(commit) = &self.committer {
                        commit(partition, next);
                    }
                    for letter in &outcome.dead_letters {
                        if let Err(error) = self.log.dead_letter(letter).await {
                            tracing::warn!(partition, offset = letter.offset, error = %error, "could not publish a dead letter (kept in the store)");
                        }
                    }
                    METRICS
                        .applied_offset
                        .with_label_values(&[&label])
                        .set(i64::try_from(next).unwrap_or(i64::MAX));
                    METRICS
                        .consumer_lag_bytes
                        .with_label_values(&[&label])
                        .set(self.log.end_offset(partition).saturating_sub(next) as i64);
                    // The actions (allocation appends, node commands) run while the next batch
                    // is read and applied; at most `EXECUTING_BATCHES` at a time per partition.
                    let semaphore = self.executing[partition as usize].clone();
                    if let Ok(permit) = semaphore.acquire_owned().await {
                        let this = self.clone();
                        let actions = outcome.actions;
                        actix::spawn(async move {
                            this.execute(actions).await;
                            drop(permit);
                        });
                    }
                    match outcome.held {
                        Some(reason) => {
                            self.hold(partition, reason, &mut shutdown, &mut stop).await
                        }
                        None => self.release(partition),
                    }
                }
                Ok(Err(error @ StoreError::Fenced { .. })) => {
                    self.give_up_fenced(partition, &stop, &error);
                    self.release(partition);
                    return;
                }
                Ok(Err(error @ StoreError::NewerRelease { .. })) => {
                    // A stored row a later release wrote: that release applies this batch.
                    self.hold(partition, error.to_string(), &mut shutdown, &mut stop)
                        .await;
                }
                Ok(Err(error)) => {
                    // Transient (a corrupt row's CID was quarantined by the shard, and its
                    // batch applied without it): retried with backoff, and an operator is told
                    // once the batch keeps failing.
                    let failed = failures.saturating_add(1);
                    METRICS
                        .batch_failures
                        .with_label_values(&[&label])
                        .set(i64::from(failed));
                    if failed == STALLED_AFTER_FAILURES {
                        tracing::error!(partition, offset = next, failures = failed, error = %error, "batch keeps failing; the partition is stalled until it applies");
                    } else {
                        tracing::warn!(partition, offset = next, failures = failed, error = %error, "shard could not persist a batch; retrying");
                    }
                    backoff(&mut failures, &mut shutdown).await;
                }
                Err(error) => {
                    tracing::error!(partition, error = %error, "shard actor unavailable");
                    backoff(&mut failures, &mut shutdown).await;
                }
            }
        }
        self.release(partition);
    }

    /// The partition waits at a record or row a later pinhive release wrote: nothing at or
    /// after it is applied, dead-lettered or quarantined here. Said once per reason (warn), in
    /// `pinhive_consumer_held` and on `/ready`; the batch is read again every [`HOLD_RETRY`]
    /// until this instance stops or the partition moves to an upgraded one.
    async fn hold(
        &self,
        partition: u32,
        reason: String,
        shutdown: &mut watch::Receiver<bool>,
        stop: &mut watch::Receiver<bool>,
    ) {
        let previous = self.held.lock().insert(partition, reason.clone());
        if previous.as_deref() != Some(reason.as_str()) {
            tracing::warn!(partition, reason = %reason, "partition held: it waits for an upgraded pinhive instance (rolling upgrade, docs/deploy.md)");
        }
        METRICS
            .held
            .with_label_values(&[&partition.to_string()])
            .set(1);
        tokio::select! {
            _ = tokio::time::sleep(HOLD_RETRY) => {}
            _ = shutdown.changed() => {}
            _ = stop.changed() => {}
        }
    }

    fn release(&self, partition: u32) {
        if self.held.lock().remove(&partition).is_some() {
            METRICS
                .held
                .with_label_values(&[&partition.to_string()])
                .set(0);
            tracing::info!(partition, "partition no longer held");
        }
    }

    /// Partitions of this instance waiting for an upgraded instance, and why.
    pub fn held_partitions(&self) -> Vec<(u32, String)> {
        self.held
            .lock()
            .iter()
            .map(|(partition, reason)| (*partition, reason.clone()))
            .collect()
    }

    /// Walks the partition's pending set and re-plans each CID, in passes of at most
    /// `repair_budget`, then sleeps `repair_interval` (a change of the node registry wakes it
    /// early). The cursor survives between passes and wakes: every pending CID is reached within
    /// a bounded number of passes however often node health flaps, and a pass restarts from the
    /// start of the set only when it reached its end. In between, CIDs whose failed replicas
    /// are due for a retry are re-planned when due (`crate::retry`).
    async fn repair(self: Arc<Self>, partition: u32, mut stop: watch::Receiver<bool>) {
        let shard = self.shards[partition as usize].clone();
        let mut changes = self.registry.changes();
        let mut shutdown = self.shutdown.subscribe();
        let mut cursor: Option<String> = None;
        let mut next_pass = tokio::time::Instant::now();
        loop {
            // Retries that are due, at most a page per round, until none is left.
            loop {
                let due = self.timers.take_due(
                    partition,
                    pinhive_events::now_ns(),
                    self.config.repair_page,
                );
                if due.is_empty() {
                    break;
                }
                if !self.replan(partition, &shard, due, &stop).await {
                    return;
                }
            }
            if tokio::time::Instant::now() >= next_pass {
                let deadline = tokio::time::Instant::now() + self.config.repair_budget;
                while tokio::time::Instant::now() < deadline {
                    let store = self.store.clone();
                    let (after, page) = (cursor.clone(), self.config.repair_page);
                    let cids = tokio::task::spawn_blocking(move || {
                        store.pending_cids(partition, after.as_deref(), page)
                    })
                    .await;
                    let cids = match cids {
                        Ok(Ok(cids)) => cids,
                        Ok(Err(error)) => {
                            tracing::warn!(partition, error = %error, "repair could not read the pending set");
                            break;
                        }
                        Err(_) => break,
                    };
                    let Some(last) = cids.last().cloned() else {
                        cursor = None; // reached the end: the next pass starts over
                        break;
                    };
                    cursor = Some(last);
                    if !self.replan(partition, &shard, cids, &stop).await {
                        return;
                    }
                }
                if let Some(passes) = self.repair_passes.get(partition as usize) {
                    passes.fetch_add(1, Ordering::Relaxed);
                }
                next_pass = tokio::time::Instant::now() + self.config.repair_interval;
            }
            let mut wake = next_pass;
            if let Some(due) = self.timers.next_due(partition) {
                let wait = u64::try_from(due.saturating_sub(pinhive_events::now_ns())).unwrap_or(0);
                wake = wake.min(tokio::time::Instant::now() + Duration::from_nanos(wait));
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.timers.earlier(partition) => {}
                changed = changes.changed() => {
                    if changed.is_err() { return; }
                    // A node that joined or came back may take a waiting replica at once:
                    // the pass re-plans every pending CID (and queues the waiting ones again).
                    self.timers.clear(partition);
                    next_pass = tokio::time::Instant::now();
                }
                _ = shutdown.changed() => return,
                _ = stop.changed() => return,
            }
            if self.stopping() || *stop.borrow() {
                return;
            }
        }
    }

    /// Asks the shard to re-plan `cids` and carries out the actions; false if the partition
    /// was fenced (its tasks stop).
    async fn replan(
        &self,
        partition: u32,
        shard: &Addr<ShardActor>,
        cids: Vec<String>,
        stop: &watch::Receiver<bool>,
    ) -> bool {
        METRICS
            .mailbox_depth
            .with_label_values(&[&partition.to_string()])
            .inc();
        match shard.send(Replan { cids }).await {
            Ok(Ok(actions)) => {
                self.execute(actions).await;
            }
            Ok(Err(error @ StoreError::Fenced { .. })) => {
                self.give_up_fenced(partition, stop, &error);
                return false;
            }
            _ => {}
        }
        true
    }

    /// How long journal entries (pin history) are kept.
    pub fn journal_retention(&self) -> Duration {
        self.config.journal_retention
    }

    async fn retain(self: Arc<Self>) {
        let mut shutdown = self.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.retention_interval) => {}
                _ = shutdown.changed() => return,
            }
            for partition in 0..self.log.partition_count() {
                let checkpoint = self.applied_offset(partition);
                match self
                    .log
                    .release_before(partition, checkpoint, self.config.retention)
                    .await
                {
                    Ok(0) => {}
                    Ok(freed) => {
                        tracing::info!(partition, freed_bytes = freed, "released log segments")
                    }
                    Err(error) => tracing::warn!(partition, error = %error, "log retention failed"),
                }
            }
            self.prune().await;
        }
    }

    /// Deletes journal entries and dead letters past their retention, a bounded number per
    /// partition per pass (a backlog is worked off over the following passes).
    async fn prune(&self) {
        const PER_PASS: usize = 10_000;
        let cutoff = |keep: Duration| {
            pinhive_events::now_ns()
                .saturating_sub(i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX))
        };
        let journal_before = cutoff(self.config.journal_retention);
        let letters_before = cutoff(self.config.dead_letter_retention);
        let store = self.store.clone();
        let partitions = self.log.partition_count();
        let pruned = tokio::task::spawn_blocking(move || {
            let mut journal = 0;
            for partition in 0..partitions {
                journal += store.prune_journal(partition, journal_before, PER_PASS)?;
            }
            let letters = store.prune_dead_letters(letters_before, PER_PASS)?;
            Ok::<_, pinhive_store::StoreError>((journal, letters))
        })
        .await;
        match pruned {
            Ok(Ok((0, 0))) => {}
            Ok(Ok((journal, letters))) => {
                tracing::info!(journal, dead_letters = letters, "pruned expired history")
            }
            Ok(Err(error)) => tracing::warn!(error = %error, "history retention failed"),
            Err(_) => {}
        }
    }

    /// Carries out planned actions: allocation decisions become events; pin/unpin become node
    /// commands (dropped if the node's mailbox is full: the repair loop plans them again).
    /// False if an append failed.
    pub(crate) async fn execute(&self, actions: Vec<PlannedAction>) -> bool {
        let mut records = Vec::new();
        // Acknowledgements of released holds, to the replacing pins' CIDs: appended only once
        // the releases themselves are durable (a log append to several partitions is not
        // atomic), so a replacing CID never stops planning a release that was lost.
        let mut acknowledgements = Vec::new();
        for planned in actions {
            match planned.action {
                Action::Allocate { nodes, target } => {
                    let mut envelope =
                        Envelope::new(planned.cid, Event::ReplicasAllocated { nodes, target });
                    envelope.traceparent = planned.traceparent;
                    records.push(Record::from_envelope(&envelope));
                }
                Action::Pin { node, origins } => self.command(
                    &node,
                    planned.cid,
                    NodeOp::Pin { origins },
                    planned.traceparent,
                    planned.owner,
                ),
                Action::Unpin { node } => {
                    self.command(&node, planned.cid, NodeOp::Unpin, planned.traceparent, None)
                }
                Action::ReleaseHold { requestid, cid } => {
                    let settled = |key: String| {
                        let event = Event::ReplaceSettled {
                            requestid: requestid.clone(),
                        };
                        let mut envelope = Envelope::new(key, event);
                        envelope.traceparent = planned.traceparent.clone();
                        Record::from_envelope(&envelope)
                    };
                    if cid != planned.cid {
                        acknowledgements.push(settled(planned.cid.clone()));
                    }
                    // To the held pin's CID: releases the hold (and, on the same CID, the
                    // release owed).
                    records.push(settled(cid));
                }
            }
        }
        if records.is_empty() {
            return true;
        }
        if let Err(error) = self.log.append(records).await {
            tracing::warn!(error = %error, "could not append allocation decisions; repair will redo them");
            return false;
        }
        if !acknowledgements.is_empty() {
            if let Err(error) = self.log.append(acknowledgements).await {
                tracing::warn!(error = %error, "could not acknowledge released holds; repair will redo them");
                return false;
            }
        }
        true
    }

    fn command(
        &self,
        node: &str,
        cid: String,
        op: NodeOp,
        traceparent: Option<String>,
        owner: Option<String>,
    ) {
        let Some(entry) = self.registry.get(node) else {
            return;
        };
        if let Err(error) = entry.driver.try_send(NodeCommand {
            cid,
            op,
            traceparent,
            owner,
        }) {
            tracing::debug!(node, error = %error, "node driver busy; repair will resend");
        }
    }
}

/// Failures in a row of one batch after which its partition is reported stalled (ERROR): with
/// the backoff below, about 40 s of retrying.
pub const STALLED_AFTER_FAILURES: u32 = 8;

async fn backoff(failures: &mut u32, shutdown: &mut watch::Receiver<bool>) {
    *failures = failures.saturating_add(1);
    let delay = Duration::from_millis(100u64 << (*failures).min(7));
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shutdown.changed() => {}
    }
}
