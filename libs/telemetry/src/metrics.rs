//! RED metrics for RPCs: one histogram, `rpc.server.call.duration` in seconds, with the
//! OpenTelemetry RPC attributes (`rpc.system.name`, `rpc.method`, `rpc.response.status_code`).
//! Its count gives the rate, the status attribute the errors, its buckets the duration.
//! Recorded through the global meter provider, which exports over OTLP when configured and is a
//! no-op otherwise.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;

fn histogram() -> &'static Histogram<f64> {
    static HISTOGRAM: OnceLock<Histogram<f64>> = OnceLock::new();
    HISTOGRAM.get_or_init(|| {
        opentelemetry::global::meter("kizuna")
            .f64_histogram("rpc.server.call.duration")
            .with_unit("s")
            .with_description("Duration of RPCs served, by method and status")
            .with_boundaries(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .build()
    })
}

/// Records one served call.
pub fn record_server_call(method: &str, status_code: &'static str, duration: Duration) {
    histogram().record(
        duration.as_secs_f64(),
        &[
            KeyValue::new("rpc.system.name", "grpc"),
            KeyValue::new("rpc.method", method.to_owned()),
            KeyValue::new("rpc.response.status_code", status_code),
        ],
    );
}
