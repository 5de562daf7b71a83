//! Telemetry for Kizuna services: one call sets up `tracing` (JSON or pretty logs that carry the
//! trace id), an OpenTelemetry tracer that always creates real trace ids, OTLP export of spans
//! and log records when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and the W3C trace-context
//! propagator. The returned guard flushes everything on shutdown.

pub mod metrics;
pub mod propagation;

use kizuna_settings::{LogFormat, TelemetrySettings};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Targets whose INFO spans make the traces (RPC and database spans, outbox trace context).
const SPAN_TARGETS: [&str; 2] = ["kizuna_server::layer", "kizuna_store"];

/// The log directive, plus INFO for the span targets it does not mention, so traces do not
/// depend on how chatty the logs are; the OTLP exporter's own transport stays quiet.
fn with_span_targets(directive: &str) -> String {
    let mut full = directive.to_owned();
    for target in SPAN_TARGETS {
        if !directive.contains(target) {
            full.push_str(&format!(",{target}=info"));
        }
    }
    for quiet in ["h2", "hyper", "tonic", "tower", "opentelemetry"] {
        if !directive.contains(quiet) {
            full.push_str(&format!(",{quiet}=warn"));
        }
    }
    full
}

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    /// The log filter does not parse.
    #[error("setting `telemetry.log_level` is invalid: {0}")]
    Filter(String),
}

/// Keeps the providers alive; call [`TelemetryGuard::shutdown`] before exit to flush.
#[derive(Debug)]
pub struct TelemetryGuard {
    tracer_provider: SdkTracerProvider,
    logger_provider: Option<SdkLoggerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl TelemetryGuard {
    /// Flushes and stops the exporters.
    pub fn shutdown(&self) {
        if let Err(error) = self.tracer_provider.shutdown() {
            eprintln!("telemetry: flushing spans failed: {error}");
        }
        if let Some(meter) = &self.meter_provider
            && let Err(error) = meter.shutdown()
        {
            eprintln!("telemetry: flushing metrics failed: {error}");
        }
        if let Some(logger) = &self.logger_provider
            && let Err(error) = logger.shutdown()
        {
            eprintln!("telemetry: flushing logs failed: {error}");
        }
    }
}

/// Whether OTLP export is configured through the standard environment variables.
pub fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()))
}

/// Sets up logs, traces and propagation for `service_name` (e.g. `kizuna-leads`).
///
/// When a global subscriber is already installed (tests starting several servers in one
/// process), the existing one is kept.
pub fn init(
    service_name: &str,
    settings: &TelemetrySettings,
) -> Result<TelemetryGuard, TelemetryError> {
    init_with_endpoint(service_name, settings, None)
}

/// [`init`], exporting over OTLP/gRPC to `endpoint` when given (otherwise to the endpoint the
/// standard `OTEL_EXPORTER_OTLP_*` variables name, if any).
pub fn init_with_endpoint(
    service_name: &str,
    settings: &TelemetrySettings,
    endpoint: Option<&str>,
) -> Result<TelemetryGuard, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let service_name =
        std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service_name.to_owned());
    let resource = Resource::builder().with_service_name(service_name).build();
    let export = endpoint.is_some() || otlp_configured();

    let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
    if export {
        let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let exporter = builder
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        tracer_builder = tracer_builder.with_batch_exporter(exporter);
    }
    let tracer_provider = tracer_builder.build();
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());
    let tracer = tracer_provider.tracer("kizuna");

    // RED metrics (rpc.server.call.duration, see `metrics`) go out over OTLP when configured.
    let meter_provider = if export {
        let mut builder = opentelemetry_otlp::MetricExporter::builder().with_tonic();
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let exporter = builder
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let provider = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_periodic_exporter(exporter)
            .build();
        opentelemetry::global::set_meter_provider(provider.clone());
        Some(provider)
    } else {
        None
    };

    let logger_provider = if export {
        let mut builder = opentelemetry_otlp::LogExporter::builder().with_tonic();
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let exporter = builder
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        Some(
            SdkLoggerProvider::builder()
                .with_resource(resource)
                .with_batch_exporter(exporter)
                .build(),
        )
    } else {
        None
    };

    let directive = std::env::var("RUST_LOG").unwrap_or_else(|_| settings.log_level.clone());
    let filter = EnvFilter::try_new(with_span_targets(&directive))
        .map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let fmt_layer = match settings.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_ansi(colour_logs(
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
                std::env::var_os("NO_COLOR"),
            ))
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let trace_layer = tracing_opentelemetry::layer().with_tracer(tracer);
    let bridge = logger_provider
        .as_ref()
        .map(OpenTelemetryTracingBridge::new);
    // One global filter: per-layer filters dropped events in some combinations (a target
    // directive plus the OTLP log bridge).
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(trace_layer)
        .with(bridge)
        .try_init();
    Ok(TelemetryGuard {
        tracer_provider,
        logger_provider,
        meter_provider,
    })
}

/// Whether pretty logs carry ANSI colours: only on a terminal, and never when `NO_COLOR` is set
/// to a non-empty value (no-color.org), so a log file or a pipe gets plain text.
fn colour_logs(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// Installs a quiet subscriber for tests: logs only when `TEST_LOG` is set. Trace ids are still
/// generated so propagation can be tested.
pub fn init_for_tests() {
    let settings = TelemetrySettings {
        log_format: LogFormat::Pretty,
        log_level: if std::env::var_os("TEST_LOG").is_some() {
            "info".into()
        } else {
            "off".into()
        },
    };
    // Keep the guard alive for the whole test process.
    if let Ok(guard) = init("kizuna-test", &settings) {
        std::mem::forget(guard);
    }
}

#[cfg(test)]
mod colour_tests {
    use super::colour_logs;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour_logs(true, None));
        assert!(colour_logs(true, Some("".into())));
        assert!(!colour_logs(true, Some("1".into())));
        assert!(
            !colour_logs(false, None),
            "a file or a pipe gets no escape codes"
        );
        assert!(!colour_logs(false, Some("1".into())));
    }
}
