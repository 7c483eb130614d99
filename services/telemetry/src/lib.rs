//! Telemetry shared by every crate: metric constructors that register in one process-wide
//! Prometheus registry and the text exposition `/metrics` serves; logging/tracing setup
//! ([`tracing_setup`]) and W3C trace-context propagation through events ([`propagation`]).
//!
//! Naming contract: `pinhive_<subsystem>_<thing>_{total|seconds|bytes}`; label values are
//! bounded (route patterns, node ids, partitions, statuses) — never a CID or a request id.
//! Each crate declares its metrics in one `metrics.rs`.

pub mod propagation;
pub mod recent;
pub mod tracing_setup;

pub use propagation::{
    continue_trace, current_trace_id, current_traceparent, is_sampled, record_trace_id,
    traceparent_of,
};
pub use tracing_setup::{init, TelemetryConfig, TelemetryGuard};

use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The registry every pinhive metric lives in.
pub fn registry() -> &'static Registry {
    prometheus::default_registry()
}

fn register<C: Collector + Clone + 'static>(collector: C) -> C {
    if let Err(error) = registry().register(Box::new(collector.clone())) {
        // Only possible for a duplicate name: the metric still works, it is just not exported.
        tracing::warn!(error = %error, "metric not registered");
    }
    collector
}

pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("invalid metric definition {name}: {e}"));
    register(counter)
}

pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let gauge = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("invalid metric definition {name}: {e}"));
    register(gauge)
}

/// A gauge of real numbers (ratios, rates).
pub fn float_gauge_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
    let gauge = prometheus::GaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("invalid metric definition {name}: {e}"));
    register(gauge)
}

pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let histogram = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|e| panic!("invalid metric definition {name}: {e}"));
    register(histogram)
}

/// Latency buckets from 100 µs to ~100 s.
pub fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0001, 2.5, 16).unwrap_or_default()
}

/// Size buckets 1 .. ~1M (records per batch, bytes in KiB, …).
pub fn size_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(1.0, 4.0, 11).unwrap_or_default()
}

/// Prometheus text exposition of every registered metric.
pub fn encode() -> String {
    TextEncoder::new()
        .encode_to_string(&registry().gather())
        .unwrap_or_default()
}
