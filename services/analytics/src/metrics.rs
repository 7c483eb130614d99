//! Metrics of the analytics actors. Label `partition` is bounded by the access partition count,
//! `replicas` by [`REPLICA_LABELS`], `result` by the closed set below.

use std::sync::LazyLock;

use prometheus::{GaugeVec, HistogramVec, IntCounterVec, IntGaugeVec};

/// Buckets of the replica-target distribution: "1".."9" and "10+".
pub const REPLICA_LABELS: [&str; 10] = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10+"];

pub struct AnalyticsMetrics {
    /// Access events offered on an entry path, by `result` (accepted | rejected).
    pub access_events: IntCounterVec,
    /// Access records counted by the trackers, and dead-lettered ones.
    pub events_counted: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub tracked_cids: IntGaugeVec,
    pub memory_bytes: IntGaugeVec,
    pub budget_bytes: IntGaugeVec,
    pub budget_used_bytes: IntGaugeVec,
    pub water_level: GaugeVec,
    pub targets: IntGaugeVec,
    pub target_changes: IntCounterVec,
    pub denied_increments: IntCounterVec,
    pub deferred_changes: IntCounterVec,
    pub epoch_seconds: HistogramVec,
    pub epochs: IntCounterVec,
}

pub static METRICS: LazyLock<AnalyticsMetrics> = LazyLock::new(|| {
    AnalyticsMetrics {
    access_events: pinhive_telemetry::counter_vec(
        "pinhive_analytics_access_events_total",
        "Access events offered through POST /access, by result (the access topic's records: events_counted_total and dead_letters_total)",
        &["result"],
    ),
    events_counted: pinhive_telemetry::counter_vec(
        "pinhive_analytics_events_counted_total",
        "Access records folded into a partition's demand tracker",
        &["partition"],
    ),
    dead_letters: pinhive_telemetry::counter_vec(
        "pinhive_analytics_dead_letters_total",
        "Access records that could not be decoded or admitted, dead-lettered",
        &["partition"],
    ),
    tracked_cids: pinhive_telemetry::gauge_vec(
        "pinhive_analytics_tracked_cids",
        "CIDs with exact demand state (heavy hitters), per access partition",
        &["partition"],
    ),
    memory_bytes: pinhive_telemetry::gauge_vec(
        "pinhive_analytics_memory_bytes",
        "Approximate heap bytes of a partition's demand tracker (sketch + table)",
        &["partition"],
    ),
    budget_bytes: pinhive_telemetry::gauge_vec(
        "pinhive_analytics_budget_bytes",
        "Extra-storage budget of an access partition (its share of extra_budget_bytes)",
        &["partition"],
    ),
    budget_used_bytes: pinhive_telemetry::gauge_vec(
        "pinhive_analytics_budget_used_bytes",
        "Bytes granted to replicas above the pins' min, per access partition",
        &["partition"],
    ),
    water_level: pinhive_telemetry::float_gauge_vec(
        "pinhive_analytics_water_level_views_per_day",
        "Views per day the last granted extra replica carries (0: none granted)",
        &["partition"],
    ),
    targets: pinhive_telemetry::gauge_vec(
        "pinhive_analytics_replica_targets",
        "Tracked CIDs by replica target after the last epoch",
        &["partition", "replicas"],
    ),
    target_changes: pinhive_telemetry::counter_vec(
        "pinhive_analytics_target_changes_total",
        "TargetChanged events appended (including resets of evicted CIDs)",
        &["partition"],
    ),
    denied_increments: pinhive_telemetry::counter_vec(
        "pinhive_analytics_denied_increments_total",
        "Extra replicas wanted by demand but denied by the budget",
        &["partition"],
    ),
    deferred_changes: pinhive_telemetry::counter_vec(
        "pinhive_analytics_deferred_changes_total",
        "Target changes deferred by max_changes_per_epoch",
        &["partition"],
    ),
    epoch_seconds: pinhive_telemetry::histogram_vec(
        "pinhive_analytics_epoch_seconds",
        "Time to close an epoch: decay, bounds reads, optimizer, appends, checkpoint",
        &["partition"],
        pinhive_telemetry::latency_buckets(),
    ),
    epochs: pinhive_telemetry::counter_vec(
        "pinhive_analytics_epochs_total",
        "Epochs closed",
        &["partition"],
    ),
}
});

/// Label of a replica target in the distribution.
pub fn replica_label(target: u8) -> &'static str {
    REPLICA_LABELS[usize::from(target.clamp(1, 10)) - 1]
}

/// Gives every series of `partition` (and the entry-path counters) a value, so that
/// dashboards and alerts see them from the start rather than "no data".
pub fn touch(partition: u32) {
    let label = partition.to_string();
    let m = &*METRICS;
    for result in ["accepted", "rejected"] {
        m.access_events.with_label_values(&[result]);
    }
    for counter in [
        &m.events_counted,
        &m.dead_letters,
        &m.target_changes,
        &m.denied_increments,
        &m.deferred_changes,
        &m.epochs,
    ] {
        counter.with_label_values(&[&label]);
    }
    for gauge in [
        &m.tracked_cids,
        &m.memory_bytes,
        &m.budget_bytes,
        &m.budget_used_bytes,
    ] {
        gauge.with_label_values(&[&label]);
    }
    m.water_level.with_label_values(&[&label]);
    m.epoch_seconds.with_label_values(&[&label]);
    for replicas in REPLICA_LABELS {
        m.targets.with_label_values(&[&label, replicas]);
    }
}
