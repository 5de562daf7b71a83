//! The providers of each service in the process, created on first use, each with its own
//! resource: `service.name` (`kizuna-<service>`), `service.namespace` (`kizuna`),
//! `service.version` and `service.instance.id`.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use opentelemetry::KeyValue;
use opentelemetry::logs::LoggerProvider as _;
use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::TelemetryError;

thread_local! {
    /// Whether this thread is building a service's providers.
    static BUILDING: Cell<bool> = const { Cell::new(false) };
}

/// The instrumentation scope of Kizuna's spans, logs and metrics.
pub(crate) const SCOPE: &str = "kizuna";

/// One service's providers.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) tracer_provider: SdkTracerProvider,
    pub(crate) tracer: SdkTracer,
    pub(crate) logger_provider: Option<SdkLoggerProvider>,
    pub(crate) logger: Option<SdkLogger>,
    pub(crate) meter_provider: Option<SdkMeterProvider>,
    pub(crate) call_duration: Histogram<f64>,
}

/// Where telemetry goes.
#[derive(Clone, Debug)]
pub(crate) struct Export {
    /// Whether OTLP export is on.
    pub(crate) enabled: bool,
    /// The endpoint, when not taken from the `OTEL_EXPORTER_OTLP_*` variables.
    pub(crate) endpoint: Option<String>,
}

/// The process's providers and those of each service it runs.
#[derive(Debug)]
pub(crate) struct Registry {
    /// The process's resource name (`kizuna` for `kizuna up`, `kizuna-leads` for `serve leads`),
    /// or `OTEL_SERVICE_NAME`.
    default_name: String,
    /// The name the process asked for, before `OTEL_SERVICE_NAME`: a service whose resource
    /// name it is uses the process's providers.
    own_name: String,
    export: Export,
    default: Arc<Entry>,
    services: RwLock<HashMap<String, Arc<Entry>>>,
}

/// The resource name of `service`.
pub(crate) fn resource_name(service: &str) -> String {
    format!("kizuna-{service}")
}

fn resource(name: &str) -> Resource {
    // `OTEL_RESOURCE_ATTRIBUTES` (read by the default detectors) may name the instance, e.g.
    // the pod; otherwise each service of each process gets its own.
    let named_instance = std::env::var("OTEL_RESOURCE_ATTRIBUTES")
        .is_ok_and(|attributes| attributes.contains("service.instance.id="));
    let mut builder = Resource::builder()
        .with_service_name(name.to_owned())
        .with_attribute(KeyValue::new("service.namespace", "kizuna"))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if !named_instance {
        builder = builder.with_attribute(KeyValue::new(
            "service.instance.id",
            uuid::Uuid::new_v4().to_string(),
        ));
    }
    builder.build()
}

impl Entry {
    fn build(name: &str, export: &Export) -> Result<Self, TelemetryError> {
        let resource = resource(name);
        let exporter_error =
            |e: opentelemetry_otlp::ExporterBuildError| TelemetryError::Exporter(e.to_string());
        let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
        let mut logger_provider = None;
        let mut meter_provider = None;
        if export.enabled {
            let mut spans = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            let mut logs = opentelemetry_otlp::LogExporter::builder().with_tonic();
            let mut metrics = opentelemetry_otlp::MetricExporter::builder().with_tonic();
            if let Some(endpoint) = &export.endpoint {
                spans = spans.with_endpoint(endpoint);
                logs = logs.with_endpoint(endpoint);
                metrics = metrics.with_endpoint(endpoint);
            }
            tracer_builder =
                tracer_builder.with_batch_exporter(spans.build().map_err(exporter_error)?);
            logger_provider = Some(
                SdkLoggerProvider::builder()
                    .with_resource(resource.clone())
                    .with_batch_exporter(logs.build().map_err(exporter_error)?)
                    .build(),
            );
            meter_provider = Some(
                SdkMeterProvider::builder()
                    .with_resource(resource)
                    .with_periodic_exporter(metrics.build().map_err(exporter_error)?)
                    .build(),
            );
        }
        let tracer_provider = tracer_builder.build();
        let meter = match &meter_provider {
            Some(provider) => provider.meter(SCOPE),
            None => opentelemetry::global::meter(SCOPE),
        };
        Ok(Self {
            tracer: tracer_provider.tracer(SCOPE),
            tracer_provider,
            logger: logger_provider.as_ref().map(|p| p.logger(SCOPE)),
            logger_provider,
            meter_provider,
            call_duration: crate::metrics::call_duration(&meter),
        })
    }

    /// Flushes and stops this entry's exporters.
    fn shutdown(&self, name: &str) {
        if let Err(error) = self.tracer_provider.shutdown() {
            eprintln!("telemetry: flushing spans of {name} failed: {error}");
        }
        if let Some(meter) = &self.meter_provider
            && let Err(error) = meter.shutdown()
        {
            eprintln!("telemetry: flushing metrics of {name} failed: {error}");
        }
        if let Some(logger) = &self.logger_provider
            && let Err(error) = logger.shutdown()
        {
            eprintln!("telemetry: flushing logs of {name} failed: {error}");
        }
    }

    /// Exports what is buffered now.
    fn flush(&self) {
        let _ = self.tracer_provider.force_flush();
        if let Some(meter) = &self.meter_provider {
            let _ = meter.force_flush();
        }
        if let Some(logger) = &self.logger_provider {
            let _ = logger.force_flush();
        }
    }
}

impl Registry {
    /// The registry of a process whose own resource is `default_name`.
    pub(crate) fn new(own_name: &str, export: Export) -> Result<Self, TelemetryError> {
        let default_name =
            std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| own_name.to_owned());
        let default = Arc::new(Entry::build(&default_name, &export)?);
        Ok(Self {
            default_name,
            own_name: own_name.to_owned(),
            export,
            default,
            services: RwLock::new(HashMap::new()),
        })
    }

    /// The process's own providers.
    pub(crate) fn default_entry(&self) -> &Arc<Entry> {
        &self.default
    }

    /// The providers of `service` (e.g. `leads`), created on first use; the process's own for
    /// `None`, when nothing is exported (resources are then invisible), when `service`'s
    /// resource name is the process's (`kizuna serve leads`), or when its exporters cannot be
    /// built.
    pub(crate) fn entry(&self, service: Option<&str>) -> Arc<Entry> {
        let Some(service) = service else {
            return self.default.clone();
        };
        if !self.export.enabled {
            return self.default.clone();
        }
        if let Some(entry) = self
            .services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
        {
            return entry.clone();
        }
        let name = resource_name(service);
        // What building logs (exporter set-up) reports as the process, not recursively.
        if name == self.own_name || BUILDING.with(Cell::get) {
            return self.default.clone();
        }
        // Built without holding the lock, which the events logged while building may need.
        BUILDING.with(|building| building.set(true));
        let built = Entry::build(&name, &self.export);
        BUILDING.with(|building| building.set(false));
        match built {
            Ok(entry) => {
                let mut services = self.services.write().unwrap_or_else(|e| e.into_inner());
                // Another thread may have built one meanwhile: keep the first.
                services
                    .entry(service.to_owned())
                    .or_insert_with(|| Arc::new(entry))
                    .clone()
            }
            Err(error) => {
                eprintln!(
                    "telemetry: {name} reports as {}: {error}",
                    self.default_name
                );
                self.default.clone()
            }
        }
    }

    /// The services' entries, by service, taken out of the lock (flushing logs events, which
    /// look entries up).
    fn services(&self) -> Vec<(String, Arc<Entry>)> {
        self.services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(service, entry)| (service.clone(), entry.clone()))
            .collect()
    }

    /// Flushes everything buffered, in every service.
    pub(crate) fn flush(&self) {
        self.default.flush();
        for (_, entry) in self.services() {
            entry.flush();
        }
    }

    /// Flushes and stops every service's exporters, then the process's.
    pub(crate) fn shutdown(&self) {
        for (service, entry) in self.services() {
            entry.shutdown(&resource_name(&service));
        }
        self.default.shutdown(&self.default_name);
    }
}
