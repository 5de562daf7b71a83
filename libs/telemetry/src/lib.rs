//! Telemetry for Kizuna services: one call sets up `tracing` (JSON or pretty logs that carry the
//! trace id), an OpenTelemetry tracer that always creates real trace ids, OTLP export of spans,
//! log records and metrics when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and the W3C trace-context
//! propagator. The returned guard flushes everything on shutdown.
//!
//! Each service of the process reports under its own resource (`service.name = kizuna-leads`,
//! ...), also when several run in one process (`kizuna up`): see [`route`].

pub mod metrics;
pub mod propagation;
mod registry;
pub mod route;

use std::sync::OnceLock;

use kizuna_settings::{LogFormat, TelemetrySettings};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use route::{ServiceTag, in_service, work_span};

static REGISTRY: OnceLock<registry::Registry> = OnceLock::new();

/// The process's telemetry, once [`init`] ran.
pub(crate) fn registry() -> Option<&'static registry::Registry> {
    REGISTRY.get()
}

/// Prepares the providers of `service` (e.g. `leads`) so its first span does not wait for
/// exporters to be built. Does nothing before [`init`].
pub fn register_service(service: &'static str) {
    if let Some(registry) = registry() {
        registry.entry(Some(service));
    }
}

/// Exports every span, log record and metric buffered so far (tests use it to read what was
/// sent at a point in time).
pub fn flush() {
    if let Some(registry) = registry() {
        registry.flush();
    }
}

/// Targets whose INFO spans make the traces (RPC and database spans, outbox trace context).
const SPAN_TARGETS: [&str; 4] = [
    "kizuna_server::layer",
    "kizuna_store",
    "kizuna_telemetry::work",
    "kizuna_gateway::upstream",
];

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
    /// Only the guard of the call that set telemetry up shuts it down.
    owner: bool,
}

impl TelemetryGuard {
    /// Flushes and stops the exporters of every service.
    pub fn shutdown(&self) {
        if self.owner
            && let Some(registry) = registry()
        {
            registry.shutdown();
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

/// Sets up logs, traces, metrics and propagation for a process whose own resource is
/// `service_name` (`kizuna-leads` for `kizuna serve leads`, `kizuna` for the all-in-one);
/// `OTEL_SERVICE_NAME` overrides it. Spans, log records and metrics of each service the process
/// runs carry that service's resource (`kizuna-<service>`).
///
/// When telemetry is already set up (tests starting several servers in one process), the
/// existing set-up is kept and the guard returned does nothing.
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
    if registry().is_some() {
        return Ok(TelemetryGuard { owner: false });
    }
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let directive = std::env::var("RUST_LOG").unwrap_or_else(|_| settings.log_level.clone());
    let filter = EnvFilter::try_new(with_span_targets(&directive))
        .map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let export = registry::Export {
        enabled: endpoint.is_some() || otlp_configured(),
        endpoint: endpoint.map(str::to_owned),
    };
    let built = registry::Registry::new(service_name, export.clone())?;
    if REGISTRY.set(built).is_err() {
        return Ok(TelemetryGuard { owner: false });
    }
    let registry = registry().ok_or_else(|| TelemetryError::Exporter("not set up".into()))?;
    let default = registry.default_entry();
    opentelemetry::global::set_tracer_provider(default.tracer_provider.clone());
    if let Some(meter_provider) = &default.meter_provider {
        opentelemetry::global::set_meter_provider(meter_provider.clone());
    }

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
    // Spans carry the semantic-convention attributes the code gives them, nothing about the
    // Rust side (thread, source file, target, busy and idle time). Events are not copied into
    // span events: they travel as log records correlated by trace and span id, as upstream
    // now recommends.
    let trace_layer = tracing_opentelemetry::layer()
        .with_tracer(route::RoutingTracer { registry })
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_level(false)
        .with_tracked_inactivity(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| meta.is_span()));
    let bridge = export.enabled.then_some(route::LogBridge { registry });
    // One global filter: per-layer filters dropped events in some combinations (a target
    // directive plus the OTLP log bridge).
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(trace_layer)
        .with(bridge)
        .try_init();
    Ok(TelemetryGuard { owner: true })
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
    // The providers live in the process-wide registry; the guard is only needed to flush.
    let _ = init("kizuna-test", &settings);
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
