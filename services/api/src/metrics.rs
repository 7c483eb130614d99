//! HTTP metrics (route pattern, method, status: bounded labels) and the `/metrics` endpoint.

use std::sync::LazyLock;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, Responder};
use prometheus::{HistogramVec, IntCounterVec};
use tracing::Instrument;

pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub seconds: HistogramVec,
}

pub static METRICS: LazyLock<HttpMetrics> = LazyLock::new(|| HttpMetrics {
    requests: pinhive_telemetry::counter_vec(
        "pinhive_http_requests_total",
        "HTTP requests by route pattern, method and status",
        &["route", "method", "status"],
    ),
    seconds: pinhive_telemetry::histogram_vec(
        "pinhive_http_request_seconds",
        "HTTP request latency by route pattern and method",
        &["route", "method"],
        pinhive_telemetry::latency_buckets(),
    ),
});

/// Middleware (`actix_web::middleware::from_fn(track)`) counting and timing every request.
pub async fn track(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    // The route pattern (`/pins/{requestid}`), never the raw path: labels stay bounded.
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    // One server span per request: the root of the pin's trace (or a child of the caller's
    // trace when the request carries a `traceparent` header).
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let incoming = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    pinhive_telemetry::continue_trace(&span, incoming);
    pinhive_telemetry::record_trace_id(&span);
    let response = next.call(request).instrument(span.clone()).await?;
    let status = response.status().as_u16().to_string();
    span.record("http.response.status_code", response.status().as_u16());
    METRICS
        .requests
        .with_label_values(&[&route, &method, &status])
        .inc();
    METRICS
        .seconds
        .with_label_values(&[&route, &method])
        .observe(started.elapsed().as_secs_f64());
    Ok(response)
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics() -> impl Responder {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(pinhive_telemetry::encode())
}
