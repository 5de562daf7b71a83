//! One process, several services: routing each span, log record and metric to the providers of
//! the service it belongs to, so that `kizuna up` (four services in one process) reports four
//! resources as four `kizuna serve` processes would.
//!
//! A span belongs to a service when its OpenTelemetry parent context carries a [`ServiceTag`]:
//! the RPC layer puts one on every server span ([`in_service`]), background work on its root
//! ([`work_span`]), and children inherit it through their parent's context. Spans without one go
//! to the process's own providers. Log records follow the active context the same way, else an
//! event's `service` field (lifecycle lines logged outside any span), else the process.

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
use opentelemetry::trace::{SpanContext, Status, Tracer};
use opentelemetry::{Context, KeyValue};
use tracing::field::{Field, Visit};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;

use crate::registry::Registry;

/// Span fields kept for the stderr logs only: the trace id (a span knows its own) and the
/// service (the resource says it).
const HIDDEN_ATTRIBUTES: [&str; 2] = ["trace_id", "kizuna.service"];

/// The service an OpenTelemetry context belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceTag(pub &'static str);

/// `context` marked as belonging to `service` (e.g. `leads`): spans started under it, and log
/// records emitted while it is active, carry that service's resource.
pub fn in_service(context: Context, service: &'static str) -> Context {
    context.with_value(ServiceTag(service))
}

/// A root span for one unit of background work of `service` (a flush, a rescoring chunk, a
/// backfill chunk), named `name` (e.g. `leads.flush_score_changes`), of kind INTERNAL. Create
/// it only once work was found, so idle polling leaves no trace; its database spans become its
/// children.
pub fn work_span(service: &'static str, name: &'static str) -> tracing::Span {
    let span = tracing::info_span!(
        target: "kizuna_telemetry::work",
        parent: None,
        "work",
        otel.name = name,
        otel.kind = "internal",
        kizuna.service = service,
    );
    let _ = span.set_parent(in_service(Context::new(), service));
    span
}

/// An OpenTelemetry tracer that starts each span with the tracer of its service.
#[derive(Clone, Debug)]
pub(crate) struct RoutingTracer {
    pub(crate) registry: &'static Registry,
}

impl Tracer for RoutingTracer {
    type Span = RoutedSpan;

    fn build_with_context(
        &self,
        mut builder: opentelemetry::trace::SpanBuilder,
        parent_cx: &Context,
    ) -> Self::Span {
        if let Some(attributes) = builder.attributes.as_mut() {
            attributes.retain(|kv| !HIDDEN_ATTRIBUTES.contains(&kv.key.as_str()));
        }
        let service = parent_cx.get::<ServiceTag>().map(|tag| tag.0);
        let entry = self.registry.entry(service);
        RoutedSpan(entry.tracer.build_with_context(builder, parent_cx))
    }
}

/// An SDK span that drops the stderr-only attributes recorded after it started.
#[derive(Debug)]
pub(crate) struct RoutedSpan(opentelemetry_sdk::trace::Span);

impl opentelemetry::trace::Span for RoutedSpan {
    fn add_event_with_timestamp<T>(
        &mut self,
        name: T,
        timestamp: SystemTime,
        attributes: Vec<KeyValue>,
    ) where
        T: Into<Cow<'static, str>>,
    {
        self.0.add_event_with_timestamp(name, timestamp, attributes);
    }

    fn span_context(&self) -> &SpanContext {
        self.0.span_context()
    }

    fn is_recording(&self) -> bool {
        self.0.is_recording()
    }

    fn set_attribute(&mut self, attribute: KeyValue) {
        if !HIDDEN_ATTRIBUTES.contains(&attribute.key.as_str()) {
            self.0.set_attribute(attribute);
        }
    }

    fn set_status(&mut self, status: Status) {
        self.0.set_status(status);
    }

    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        self.0.update_name(new_name);
    }

    fn add_link(&mut self, span_context: SpanContext, attributes: Vec<KeyValue>) {
        self.0.add_link(span_context, attributes);
    }

    fn end_with_timestamp(&mut self, timestamp: SystemTime) {
        self.0.end_with_timestamp(timestamp);
    }
}

/// `tracing` events as OpenTelemetry log records, in the service's logger.
///
/// Unlike `opentelemetry-appender-tracing` 0.33 (which sets every record's `event_name` to the
/// `tracing` name, `event file.rs:12` for a plain event), only named events
/// (`tracing::info!(name: "kizuna.server.serving", ...)`) get an `event_name`.
pub(crate) struct LogBridge {
    pub(crate) registry: &'static Registry,
}

/// Whether `name` is a name given on purpose, not `tracing`'s default `event <file>:<line>`.
pub(crate) fn is_named(name: &str) -> bool {
    !(name.starts_with("event ") && name.contains(':'))
}

fn severity_of(level: &tracing::Level) -> Severity {
    match *level {
        tracing::Level::TRACE => Severity::Trace,
        tracing::Level::DEBUG => Severity::Debug,
        tracing::Level::INFO => Severity::Info,
        tracing::Level::WARN => Severity::Warn,
        tracing::Level::ERROR => Severity::Error,
    }
}

#[derive(Default)]
struct Fields {
    body: Option<String>,
    service: Option<String>,
    attributes: Vec<(&'static str, AnyValue)>,
}

impl Fields {
    fn push(&mut self, field: &Field, value: AnyValue) {
        self.attributes.push((field.name(), value));
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.body = Some(value.to_owned()),
            name => {
                if name == "service" {
                    self.service = Some(value.to_owned());
                }
                self.push(field, AnyValue::from(value.to_owned()));
            }
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, AnyValue::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(
            field,
            AnyValue::from(i64::try_from(value).unwrap_or(i64::MAX)),
        );
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, AnyValue::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, AnyValue::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.body = Some(text),
            name => {
                if name == "service" {
                    self.service = Some(text.clone());
                }
                self.push(field, AnyValue::from(text));
            }
        }
    }
}

impl<S> Layer<S> for LogBridge
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: LayerContext<'_, S>) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let entry = match Context::map_current(|cx| cx.get::<ServiceTag>().map(|tag| tag.0)) {
            Some(service) => self.registry.entry(Some(service)),
            None => self.registry.entry(fields.service.as_deref()),
        };
        let Some(logger) = entry.logger.as_ref() else {
            return;
        };
        let mut record = logger.create_log_record();
        record.set_target(meta.target());
        if is_named(meta.name()) {
            record.set_event_name(meta.name());
        }
        record.set_severity_number(severity_of(meta.level()));
        record.set_severity_text(meta.level().as_str());
        if let Some(body) = fields.body {
            record.set_body(AnyValue::from(body));
        }
        record.add_attributes(fields.attributes);
        logger.emit(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_events_have_no_name() {
        assert!(!is_named("event libs/server/src/lib.rs:195"));
        assert!(is_named("kizuna.server.serving"));
        assert!(is_named("kizuna.lifecycle.transition"));
    }
}
