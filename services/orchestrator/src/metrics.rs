//! Metrics of the shards and their consumers. Label `partition` is bounded by the partition
//! count; `status` by the four pin statuses.

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};

pub struct ShardMetrics {
    pub events_applied: IntCounterVec,
    pub events_skipped: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub batch_seconds: HistogramVec,
    pub batch_events: HistogramVec,
    pub outcome_group: HistogramVec,
    pub cache_bytes: IntGaugeVec,
    pub consumer_lag_bytes: IntGaugeVec,
    pub applied_offset: IntGaugeVec,
    pub mailbox_depth: IntGaugeVec,
    pub cache: IntCounterVec,
    pub pins: IntGaugeVec,
    pub replicas: IntGaugeVec,
    pub actions: IntCounterVec,
    pub store_errors: IntCounterVec,
    pub quarantined: IntCounterVec,
    pub batch_failures: IntGaugeVec,
    pub held: IntGaugeVec,
    pub nodes: IntGaugeVec,
    pub node_transitions: IntCounterVec,
    pub rereplicated: IntCounterVec,
    pub node_walk_cids: IntCounterVec,
    pub node_walks_active: IntGaugeVec,
    pub anti_entropy_passes: IntCounterVec,
    pub anti_entropy_seconds: HistogramVec,
    pub anti_entropy_filter_bytes: IntGaugeVec,
    pub anti_entropy_drift: IntCounterVec,
    pub anti_entropy_integrity: IntCounterVec,
    pub expired: IntCounterVec,
    pub replica_retries: IntCounterVec,
    pub retry_queue: IntGaugeVec,
}

pub static METRICS: LazyLock<ShardMetrics> = LazyLock::new(|| {
    ShardMetrics {
    events_applied: pinhive_telemetry::counter_vec(
        "pinhive_shard_events_applied_total",
        "Events folded into state",
        &["partition"],
    ),
    events_skipped: pinhive_telemetry::counter_vec(
        "pinhive_shard_events_skipped_total",
        "Events at or below a state row's applied offset (replays), skipped",
        &["partition"],
    ),
    dead_letters: pinhive_telemetry::counter_vec(
        "pinhive_dead_letters_total",
        "Log records that could not be decoded and were dead-lettered",
        &["partition"],
    ),
    batch_seconds: pinhive_telemetry::histogram_vec(
        "pinhive_shard_batch_seconds",
        "Time to apply and persist one batch (state, then checkpoint)",
        &["partition"],
        pinhive_telemetry::latency_buckets(),
    ),
    batch_events: pinhive_telemetry::histogram_vec(
        "pinhive_shard_batch_events",
        "Records per applied batch",
        &[],
        pinhive_telemetry::size_buckets(),
    ),
    outcome_group: pinhive_telemetry::histogram_vec(
        "pinhive_outcome_append_records",
        "Replica outcomes per grouped log append",
        &[],
        pinhive_telemetry::size_buckets(),
    ),
    cache_bytes: pinhive_telemetry::gauge_vec(
        "pinhive_state_cache_bytes",
        "Estimated bytes of CID states in the shared cache",
        &[],
    ),
    consumer_lag_bytes: pinhive_telemetry::gauge_vec(
        "pinhive_consumer_lag_bytes",
        "Durable log end minus the applied offset, per partition",
        &["partition"],
    ),
    applied_offset: pinhive_telemetry::gauge_vec(
        "pinhive_consumer_applied_offset_bytes",
        "Offset up to which the partition is applied and persisted",
        &["partition"],
    ),
    mailbox_depth: pinhive_telemetry::gauge_vec(
        "pinhive_shard_mailbox_depth",
        "Messages sent to a shard actor and not yet handled",
        &["partition"],
    ),
    cache: pinhive_telemetry::counter_vec(
        "pinhive_shard_cache_requests_total",
        "CID state lookups by result (hit, miss)",
        &["result"],
    ),
    pins: pinhive_telemetry::gauge_vec(
        "pinhive_pins",
        "Pins by status, per partition (sum over partitions for the total)",
        &["status", "partition"],
    ),
    replicas: pinhive_telemetry::gauge_vec(
        "pinhive_replicas",
        "Replicas desired and pinned, per partition",
        &["kind", "partition"],
    ),
    actions: pinhive_telemetry::counter_vec(
        "pinhive_shard_actions_total",
        "Actions planned by shards (allocate, pin, unpin, release)",
        &["action"],
    ),
    store_errors: pinhive_telemetry::counter_vec(
        "pinhive_shard_store_errors_total",
        "Batches that could not be persisted (retried)",
        &["partition"],
    ),
    quarantined: pinhive_telemetry::counter_vec(
        "pinhive_shard_quarantined_total",
        "CIDs quarantined because a stored row their records need cannot be decoded",
        &["partition"],
    ),
    batch_failures: pinhive_telemetry::gauge_vec(
        "pinhive_consumer_batch_failures",
        "Times in a row the partition's current batch has failed (0: progressing)",
        &["partition"],
    ),
    held: pinhive_telemetry::gauge_vec(
        "pinhive_consumer_held",
        "1 while the partition waits at a record or row a later pinhive release wrote (upgrade \
         this instance); 0 otherwise",
        &["partition"],
    ),
    nodes: pinhive_telemetry::gauge_vec(
        "pinhive_nodes",
        "IPFS nodes by agreed state (up, degraded, down, draining)",
        &["state"],
    ),
    node_transitions: pinhive_telemetry::counter_vec(
        "pinhive_node_transitions_total",
        "Node state changes folded from the control log, by the state entered",
        &["state"],
    ),
    rereplicated: pinhive_telemetry::counter_vec(
        "pinhive_rereplication_replicas_total",
        "Replicas allocated by node walks (re-replication and drains), by urgency of the CID; `rebalance`: moved to a node that joined",
        &["urgency"],
    ),
    node_walk_cids: pinhive_telemetry::counter_vec(
        "pinhive_node_walk_cids_total",
        "CIDs visited by node walks, by what was found (planned, met, stray)",
        &["result"],
    ),
    node_walks_active: pinhive_telemetry::gauge_vec(
        "pinhive_node_walks_active",
        "Partitions of this instance walking a down, draining or returned node's replicas",
        &[],
    ),
    anti_entropy_passes: pinhive_telemetry::counter_vec(
        "pinhive_anti_entropy_passes_total",
        "Anti-entropy passes over a node, by result (complete, error)",
        &["result"],
    ),
    anti_entropy_seconds: pinhive_telemetry::histogram_vec(
        "pinhive_anti_entropy_pass_seconds",
        "Time of one anti-entropy pass over a node",
        &[],
        vec![0.1, 1.0, 10.0, 60.0, 600.0, 3600.0, 21600.0],
    ),
    anti_entropy_filter_bytes: pinhive_telemetry::gauge_vec(
        "pinhive_anti_entropy_filter_bytes",
        "Bytes of the Bloom filters of the last anti-entropy pass",
        &[],
    ),
    anti_entropy_drift: pinhive_telemetry::counter_vec(
        "pinhive_anti_entropy_checks_total",
        "Point checks of anti-entropy, by verdict (consistent, missing, unknown)",
        &["verdict"],
    ),
    anti_entropy_integrity: pinhive_telemetry::counter_vec(
        "pinhive_anti_entropy_integrity_total",
        "Sampled pinned roots read with block/stat by anti-entropy, by result (ok, unreadable)",
        &["result"],
    ),
    expired: pinhive_telemetry::counter_vec(
        "pinhive_expiry_events_total",
        "PinExpired events the expiry task appended (a pin whose expiry moved later since, or \
         that is gone, makes one too: the shard finds it moot)",
        &["partition"],
    ),
    replica_retries: pinhive_telemetry::counter_vec(
        "pinhive_shard_replica_retries_total",
        "Failed replicas allocated again on their node (a retry after the backoff, or pins \
         recover), as planned",
        &["partition"],
    ),
    retry_queue: pinhive_telemetry::gauge_vec(
        "pinhive_shard_retry_queue",
        "CIDs queued in memory for their failed replica's retry (the repair task wakes them)",
        &["partition"],
    ),
}
});
