//! W3C trace context across gRPC hops and through the outbox.
//!
//! Servers extract `traceparent`/`tracestate` from request metadata and make it the parent of
//! the RPC span; clients inject the current span's context; outbox rows keep the context of the
//! request that wrote them so consumers can continue the same trace.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The OpenTelemetry context carried by incoming HTTP/2 headers (empty when none).
pub fn extract_from_headers(headers: &http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes the current span's trace context into outgoing gRPC metadata.
pub fn inject_current(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut MetadataInjector(metadata));
}

/// The current span's `(traceparent, tracestate)`, empty strings when there is no valid trace.
pub fn current_trace_context() -> (String, String) {
    let context = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    (
        carrier.remove("traceparent").unwrap_or_default(),
        carrier.remove("tracestate").unwrap_or_default(),
    )
}

/// A context continuing the trace described by stored `traceparent`/`tracestate` values.
pub fn context_from(traceparent: &str, tracestate: &str) -> opentelemetry::Context {
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    if !tracestate.is_empty() {
        carrier.insert("tracestate".to_owned(), tracestate.to_owned());
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// The trace id of the current span as 32 hex digits, or empty when there is none.
pub fn current_trace_id() -> String {
    trace_id_of(&tracing::Span::current())
}

/// The trace id of `span` as 32 hex digits, or empty when there is none.
pub fn trace_id_of(span: &tracing::Span) -> String {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span_context.trace_id().to_string()
    } else {
        String::new()
    }
}

/// A tonic client interceptor that injects the current trace context into every call.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceContextInterceptor;

impl tonic::service::Interceptor for TraceContextInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_current(request.metadata_mut());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_context_round_trips() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = context_from(traceparent, "");
        let span = context.span();
        assert_eq!(
            span.span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
        assert_eq!(
            carrier.get("traceparent").map(String::as_str),
            Some(traceparent)
        );
    }
}
