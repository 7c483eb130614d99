//! Logging and tracing setup: `tracing` for structured logs (text or JSON) and, when an OTLP
//! endpoint is configured, an OpenTelemetry layer exporting spans over OTLP (gRPC by default,
//! `http/protobuf` when `OTEL_EXPORTER_OTLP_PROTOCOL` says so).
//!
//! The SDK's batch processor exports from its own OS thread, which has no Tokio reactor; the
//! gRPC (tonic) exporter needs one. [`RuntimeExporter`] owns a one-thread runtime and drives
//! every export on it.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What to set up.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// `text` or `json`.
    pub log_format: String,
    /// OTLP endpoint; `None` = `OTEL_EXPORTER_OTLP_ENDPOINT` if set, else tracing export off.
    pub otlp_endpoint: Option<String>,
    /// Parent-based trace-id ratio sampling of root spans (1.0 = every trace).
    pub sample_ratio: f64,
    pub service_name: String,
    /// Extra resource attributes (e.g. the instance id).
    pub instance: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
    #[error("cannot start the exporter runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Keeps the tracer provider alive; flushes and shuts it down when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    pub fn tracing_enabled(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        }
    }
}

#[derive(Debug)]
struct RuntimeExporter {
    inner: opentelemetry_otlp::SpanExporter,
    runtime: tokio::runtime::Runtime,
}

impl SpanExporter for RuntimeExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        // Called on the batch processor's own thread (never inside a runtime).
        let result = self.runtime.block_on(self.inner.export(batch));
        std::future::ready(result)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _guard = self.runtime.enter();
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        let _guard = self.runtime.enter();
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

fn endpoint(config: &TelemetryConfig) -> Option<String> {
    config
        .otlp_endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").ok())
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.trim().is_empty())
}

fn build_provider(
    config: &TelemetryConfig,
    endpoint: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let error = |reason: String| TelemetryError::Exporter {
        endpoint: endpoint.to_string(),
        reason,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("pinhive-otlp")
        .enable_all()
        .build()?;
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_else(|_| "grpc".into());
    let inner = {
        let _guard = runtime.enter();
        if protocol.starts_with("http") {
            let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url)
                .with_timeout(Duration::from_secs(10))
                .with_headers(Default::default())
                .build()
        } else {
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(Duration::from_secs(10))
                .build()
        }
        .map_err(|e| error(e.to_string()))?
    };
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new(
            "service.instance.id",
            config.instance.clone(),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(RuntimeExporter { inner, runtime })
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio.clamp(0.0, 1.0),
        ))))
        .with_resource(resource)
        .build())
}

/// Installs the global subscriber: env filter (`PINHIVE_LOG`, default info), log formatting,
/// and the OpenTelemetry layer when an endpoint is configured. Also installs the W3C trace
/// context propagator. Call once, early.
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let filter = || {
        EnvFilter::try_from_env("PINHIVE_LOG")
            .unwrap_or_else(|_| EnvFilter::new("info,fjall=warn,lsm_tree=warn,h2=warn,tower=warn,hyper=warn,opentelemetry_sdk=warn"))
    };
    let fmt = if config.log_format == "json" {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    };
    let (provider, otel) = match endpoint(config) {
        Some(endpoint) => {
            let provider = build_provider(config, &endpoint)?;
            let tracer = provider.tracer("pinhive");
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(EnvFilter::new(
                    "info,h2=off,tower=off,hyper=off,tonic=off,reqwest=off",
                ))
                .boxed();
            (Some(provider), Some(layer))
        }
        None => (None, None),
    };
    // The operator console's recent warnings and errors (bounded; crate::recent).
    let recent = crate::recent::RecentLayer
        .with_filter(tracing_subscriber::filter::LevelFilter::WARN)
        .boxed();
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .with(recent)
        .try_init();
    Ok(TelemetryGuard { provider })
}
