//! Telemetry end to end, in a process of its own (telemetry is global): spans are exported over
//! OTLP to a test collector, RPC and database spans carry the semantic-convention attributes, one
//! trace runs from a gateway call into the leads service, and outbox events carry the trace of
//! the request that wrote them.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kizuna_proto::gateway::{CreateSubjectRequest, GetSubjectRequest, Subject, SubjectView};
use kizuna_proto::leads::{CreateLeadRequest, Lead, WatchEventsRequest};
use kizuna_settings::{LogFormat, TelemetrySettings};
use kizuna_tests::{Backend, Suite};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    metrics: Arc<Mutex<Vec<Metric>>>,
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut metrics = self.metrics.lock().expect("lock");
        for resource in request.into_inner().resource_metrics {
            for scope in resource.scope_metrics {
                metrics.extend(scope.metrics);
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("lock");
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    attribute_of(&span.attributes, key)
}

fn attribute_of(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_in_one_trace() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let settings = TelemetrySettings {
        log_format: LogFormat::Pretty,
        log_level: "off".into(),
    };
    let guard = kizuna_telemetry::init_with_endpoint(
        "kizuna-test",
        &settings,
        Some(&format!("http://127.0.0.1:{port}")),
    )
    .expect("telemetry");

    let suite = Suite::start(Backend::Sqlite).await.expect("suite");
    let lead = suite
        .leads()
        .await
        .create_lead(CreateLeadRequest {
            lead: Some(Lead {
                email: "trace@example.jp".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("lead")
        .into_inner();
    let mut gateway = suite.gateway().await;
    let subject = gateway
        .create_subject(CreateSubjectRequest {
            subject: Some(Subject {
                lead: lead.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("subject")
        .into_inner();
    gateway
        .get_subject(GetSubjectRequest {
            name: subject.name.clone(),
            view: SubjectView::Full as i32,
        })
        .await
        .expect("full view");
    let event = suite
        .leads()
        .await
        .watch_events(WatchEventsRequest {
            after_sequence: 0,
            types: vec!["lead.created".into()],
        })
        .await
        .expect("watch")
        .into_inner()
        .next()
        .await
        .expect("item")
        .expect("ok")
        .event
        .expect("event");
    suite.stop().await;
    guard.shutdown();

    let spans = collector.spans.lock().expect("lock").clone();
    let server_span = |method: &str| {
        spans
            .iter()
            .find(|s| s.name == method && s.kind == SpanKind::Server as i32)
            .unwrap_or_else(|| {
                panic!(
                    "no server span {method} among {:?}",
                    spans.iter().map(|s| &s.name).collect::<Vec<_>>()
                )
            })
            .clone()
    };

    let create = server_span("kizuna.leads.v1.LeadsService/CreateLead");
    assert_eq!(
        attribute(&create, "rpc.system.name").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        attribute(&create, "rpc.method").as_deref(),
        Some("kizuna.leads.v1.LeadsService/CreateLead")
    );
    assert_eq!(
        attribute(&create, "rpc.response.status_code").as_deref(),
        Some("OK")
    );
    assert!(
        event.traceparent.contains(&hex(&create.trace_id)),
        "the outbox event {} carries the trace of CreateLead {}",
        event.traceparent,
        hex(&create.trace_id)
    );
    let insert = spans
        .iter()
        .find(|s| s.trace_id == create.trace_id && s.name == "INSERT leads")
        .expect("a database span for the insert, in the same trace");
    assert_eq!(insert.kind, SpanKind::Client as i32);
    assert_eq!(
        attribute(insert, "db.system.name").as_deref(),
        Some("sqlite")
    );
    assert_eq!(
        attribute(insert, "db.collection.name").as_deref(),
        Some("leads")
    );
    assert_eq!(
        attribute(insert, "db.operation.name").as_deref(),
        Some("INSERT")
    );

    let full = server_span("kizuna.gateway.v1.GatewayService/GetSubject");
    let downstream = spans
        .iter()
        .find(|s| {
            s.name == "kizuna.leads.v1.LeadsService/GetLead" && s.kind == SpanKind::Server as i32
        })
        .expect("the leads service's span for the gateway's call");
    assert_eq!(
        hex(&downstream.trace_id),
        hex(&full.trace_id),
        "one trace from the gateway into leads"
    );
    assert!(
        !downstream.parent_span_id.is_empty(),
        "the leads span has the gateway's call as parent"
    );
    assert!(
        spans.iter().all(|s| !s.name.starts_with("grpc.health")),
        "health checks stay out of traces"
    );

    // RED metrics: the duration histogram counts calls by method and status.
    let metrics = collector.metrics.lock().expect("lock").clone();
    let duration = metrics
        .iter()
        .find(|m| m.name == "rpc.server.call.duration")
        .unwrap_or_else(|| {
            panic!(
                "no RPC duration metric among {:?}",
                metrics.iter().map(|m| &m.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(duration.unit, "s");
    let Some(Data::Histogram(histogram)) = &duration.data else {
        panic!("a histogram")
    };
    let creates: u64 = histogram
        .data_points
        .iter()
        .filter(|p| {
            attribute_of(&p.attributes, "rpc.method").as_deref()
                == Some("kizuna.leads.v1.LeadsService/CreateLead")
                && attribute_of(&p.attributes, "rpc.response.status_code").as_deref() == Some("OK")
        })
        .map(|p| p.count)
        .sum();
    assert_eq!(creates, 1, "one CreateLead call, counted once");
}
