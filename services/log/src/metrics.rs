//! Metrics of the embedded log (declared here, registered once per process).

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec};

pub struct LogMetrics {
    /// Time from `append` to its durable acknowledgement.
    pub append_seconds: HistogramVec,
    /// Records and bytes per group commit.
    pub group_records: HistogramVec,
    pub group_bytes: HistogramVec,
    pub fsync_seconds: HistogramVec,
    pub appended_records: IntCounterVec,
    /// Failed appends by `LogError::kind`.
    pub append_errors: IntCounterVec,
}

pub static METRICS: LazyLock<LogMetrics> = LazyLock::new(|| LogMetrics {
    append_seconds: pinhive_telemetry::histogram_vec(
        "pinhive_log_append_seconds",
        "Time from append to durable acknowledgement",
        &[],
        pinhive_telemetry::latency_buckets(),
    ),
    group_records: pinhive_telemetry::histogram_vec(
        "pinhive_log_group_commit_records",
        "Records written per group commit",
        &[],
        pinhive_telemetry::size_buckets(),
    ),
    group_bytes: pinhive_telemetry::histogram_vec(
        "pinhive_log_group_commit_bytes",
        "Bytes written per group commit",
        &[],
        prometheus::exponential_buckets(256.0, 4.0, 10).unwrap_or_default(),
    ),
    fsync_seconds: pinhive_telemetry::histogram_vec(
        "pinhive_log_fsync_seconds",
        "Duration of the fsyncs of one group commit",
        &[],
        pinhive_telemetry::latency_buckets(),
    ),
    appended_records: pinhive_telemetry::counter_vec(
        "pinhive_log_appended_records_total",
        "Records durably appended",
        &[],
    ),
    append_errors: pinhive_telemetry::counter_vec(
        "pinhive_log_append_errors_total",
        "Appends that failed, by kind (unavailable, overloaded, io, ...)",
        &["kind"],
    ),
});
