//! RED metrics for RPCs: one histogram, `rpc.server.call.duration` in seconds, with the
//! OpenTelemetry RPC attributes (`rpc.system.name`, `rpc.method`, `rpc.response.status_code`).
//! Its count gives the rate, the status attribute the errors, its buckets the duration (of the
//! whole stream for streaming calls). Each service records into its own meter provider, so the
//! points carry that service's resource; nothing is exported unless OTLP is configured.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};

/// The call-duration histogram of `meter`.
pub(crate) fn call_duration(meter: &Meter) -> Histogram<f64> {
    meter
        .f64_histogram("rpc.server.call.duration")
        .with_unit("s")
        .with_description("Duration of RPCs served, by method and status")
        .with_boundaries(vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0, 300.0,
        ])
        .build()
}

/// Records one call served by `service` (e.g. `leads`).
pub fn record_server_call(
    service: &'static str,
    method: &str,
    status_code: &'static str,
    duration: Duration,
) {
    let Some(registry) = crate::registry() else {
        return;
    };
    registry.entry(Some(service)).call_duration.record(
        duration.as_secs_f64(),
        &[
            KeyValue::new("rpc.system.name", "grpc"),
            KeyValue::new("rpc.method", method.to_owned()),
            KeyValue::new("rpc.response.status_code", status_code),
        ],
    );
}
