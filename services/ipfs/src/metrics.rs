//! Metrics of the node drivers. Label `node` is the configured node id (bounded by the fleet),
//! `call` the Kubo RPC path.

use std::sync::LazyLock;

use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};
use tracing::Instrument;

use crate::IpfsError;

pub struct IpfsMetrics {
    pub rpc_seconds: HistogramVec,
    pub rpc_errors: IntCounterVec,
    pub retries: IntCounterVec,
    pub outcomes: IntCounterVec,
    pub breaker_state: IntGaugeVec,
    pub node_up: IntGaugeVec,
    pub free_bytes: IntGaugeVec,
    pub in_flight: IntGaugeVec,
    pub running: IntGaugeVec,
    pub queue_owners: IntGaugeVec,
    pub dropped_commands: IntCounterVec,
}

pub static METRICS: LazyLock<IpfsMetrics> = LazyLock::new(|| IpfsMetrics {
    rpc_seconds: pinhive_telemetry::histogram_vec(
        "pinhive_ipfs_rpc_seconds",
        "Kubo RPC call latency",
        &["node", "call"],
        pinhive_telemetry::latency_buckets(),
    ),
    rpc_errors: pinhive_telemetry::counter_vec(
        "pinhive_ipfs_rpc_errors_total",
        "Kubo RPC calls that failed, by error kind",
        &["node", "call", "kind"],
    ),
    retries: pinhive_telemetry::counter_vec(
        "pinhive_ipfs_retries_total",
        "Retries of pin/unpin commands after retryable errors",
        &["node"],
    ),
    outcomes: pinhive_telemetry::counter_vec(
        "pinhive_ipfs_outcomes_total",
        "Final outcomes of node commands",
        &["node", "outcome"],
    ),
    breaker_state: pinhive_telemetry::gauge_vec(
        "pinhive_ipfs_breaker_state",
        "Circuit breaker state per node: 0 closed, 1 half-open, 2 open",
        &["node"],
    ),
    node_up: pinhive_telemetry::gauge_vec(
        "pinhive_ipfs_node_up",
        "1 if the node answered its last health check",
        &["node"],
    ),
    free_bytes: pinhive_telemetry::gauge_vec(
        "pinhive_ipfs_node_free_bytes",
        "Free repository space reported by repo/stat (absent when unlimited)",
        &["node"],
    ),
    in_flight: pinhive_telemetry::gauge_vec(
        "pinhive_ipfs_commands_in_flight",
        "Commands accepted by a node driver and not finished",
        &["node"],
    ),
    running: pinhive_telemetry::gauge_vec(
        "pinhive_ipfs_commands_running",
        "Commands holding one of a node driver's slots (RPCs under way)",
        &["node"],
    ),
    queue_owners: pinhive_telemetry::gauge_vec(
        "pinhive_ipfs_queue_owners",
        "Owners with commands queued or running on a node driver (its fair-share divisor)",
        &["node"],
    ),
    dropped_commands: pinhive_telemetry::counter_vec(
        "pinhive_ipfs_dropped_commands_total",
        "Commands a driver refused (duplicate, queue full, owner_queue_full, breaker open); \
         repair re-plans them",
        &["node", "reason"],
    ),
});

pub fn error_kind(error: &IpfsError) -> &'static str {
    match error {
        IpfsError::Unreachable(_) => "unreachable",
        IpfsError::TimedOut(_) => "timed_out",
        IpfsError::Rejected(_) => "rejected",
        IpfsError::BadResponse(_) => "bad_response",
    }
}

/// Times one RPC and counts its error, if any.
pub async fn observe<T>(
    node: &str,
    call: &str,
    future: impl std::future::Future<Output = Result<T, IpfsError>>,
) -> Result<T, IpfsError> {
    let timer = METRICS
        .rpc_seconds
        .with_label_values(&[node, call])
        .start_timer();
    // Only inside a traced operation (a sampled node command or a health check): an RPC span
    // without a parent would start a trace of its own.
    let span = if tracing::Span::current().is_none() {
        tracing::Span::none()
    } else {
        tracing::info_span!(
            "kubo.rpc",
            otel.name = %format!("kubo {call}"),
            otel.kind = "client",
            rpc.method = call,
            node = node,
            error = tracing::field::Empty,
        )
    };
    let result = future.instrument(span.clone()).await;
    if let Err(error) = &result {
        span.record("error", tracing::field::display(error));
    }
    timer.observe_duration();
    if let Err(error) = &result {
        METRICS
            .rpc_errors
            .with_label_values(&[node, call, error_kind(error)])
            .inc();
    }
    result
}
