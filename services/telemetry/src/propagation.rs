//! W3C trace context across the log: the span that appends an event writes its `traceparent`
//! into the envelope (and, with Kafka, into the record headers); whoever handles the event
//! continues the trace from it.

use std::collections::HashMap;

use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// `traceparent` of the current span, if it belongs to a valid (exported) trace.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// `traceparent` of `span`, if it belongs to a valid trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut carrier)
    });
    carrier.remove("traceparent")
}

/// True if `traceparent` (W3C `00-<trace>-<span>-<flags>`) has the sampled flag set. Handlers
/// of events create no spans at all for unsampled traces: span data is the main cost of tracing.
pub fn is_sampled(traceparent: &str) -> bool {
    traceparent
        .rsplit('-')
        .next()
        .and_then(|flags| u8::from_str_radix(flags, 16).ok())
        .is_some_and(|flags| flags & 1 == 1)
}

/// Makes `span` a child of the trace `traceparent` names (no-op for `None` or garbage).
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert("traceparent".into(), traceparent.to_string());
    let context =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// Records the span's trace id in its `trace_id` field (declared `Empty`), so JSON log lines
/// emitted inside it join the trace.
pub fn record_trace_id(span: &tracing::Span) {
    if let Some(trace_id) = span.in_scope(current_trace_id) {
        span.record("trace_id", trace_id);
    }
}

/// Hex trace id of the current span (for log lines), if any.
pub fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::is_sampled;

    #[test]
    fn sampled_flag() {
        assert!(is_sampled(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_sampled(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        ));
        assert!(!is_sampled("garbage"));
    }
}
