//! Telemetry end to end, in a process of its own (telemetry is global): the four services run in
//! one process as under `kizuna up`, and spans, log records and metrics are exported over OTLP
//! to a test collector, which checks what an analytics consumer relies on (docs/OPERATIONS.md,
//! "Telemetry contract"):
//!
//! - each service's spans, logs and metrics carry its own resource (`kizuna-leads`, ...);
//! - a client's `traceparent` is honoured; gateway -> leads is one trace; outbox events carry
//!   the trace of the request that wrote them; database spans are children, never orphans;
//! - a streaming call's span covers the whole stream and ends with its real status, and the
//!   duration metric measures the whole stream;
//! - background work is a root span with its database spans as children; idling records nothing;
//! - each kind of span carries exactly the documented attributes (no Rust-side noise);
//! - log records carry trace and span ids, and only named events have an `event_name`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kizuna_proto::deals::ListDealsRequest;
use kizuna_proto::gateway::{CreateSubjectRequest, GetSubjectRequest, Subject, SubjectView};
use kizuna_proto::leads::leads_service_client::LeadsServiceClient;
use kizuna_proto::leads::{
    Activity, ActivityKind, CreateActivityRequest, CreateLeadRequest, CreateScoringModelRequest,
    GetLeadRequest, Lead, WatchEventsRequest,
};
use kizuna_settings::{LogFormat, TelemetrySettings};
use kizuna_tests::{Backend, Suite, pricing_model};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
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
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// What one resource exported: its attributes and one item.
#[derive(Clone, Debug)]
struct Exported<T> {
    resource: Vec<KeyValue>,
    item: T,
}

impl<T> Exported<T> {
    fn service(&self) -> String {
        attribute_of(&self.resource, "service.name").unwrap_or_default()
    }
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Exported<Span>>>>,
    metrics: Arc<Mutex<Vec<Exported<Metric>>>>,
    logs: Arc<Mutex<Vec<Exported<LogRecord>>>>,
}

/// Keeps each resource's items, tagged with the resource's attributes.
fn keep<T>(
    into: &Mutex<Vec<Exported<T>>>,
    batches: impl Iterator<Item = (Option<Resource>, Vec<T>)>,
) {
    let mut kept = into.lock().expect("lock");
    for (resource, items) in batches {
        let resource = resource.map(|r| r.attributes).unwrap_or_default();
        kept.extend(items.into_iter().map(|item| Exported {
            resource: resource.clone(),
            item,
        }));
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        keep(
            &self.metrics,
            request.into_inner().resource_metrics.into_iter().map(|r| {
                let items = r.scope_metrics.into_iter().flat_map(|s| s.metrics);
                (r.resource, items.collect())
            }),
        );
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(
            &self.spans,
            request.into_inner().resource_spans.into_iter().map(|r| {
                let items = r.scope_spans.into_iter().flat_map(|s| s.spans);
                (r.resource, items.collect())
            }),
        );
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        keep(
            &self.logs,
            request.into_inner().resource_logs.into_iter().map(|r| {
                let items = r.scope_logs.into_iter().flat_map(|s| s.log_records);
                (r.resource, items.collect())
            }),
        );
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
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

fn keys(span: &Span) -> BTreeSet<&str> {
    span.attributes.iter().map(|kv| kv.key.as_str()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn duration(span: &Span) -> Duration {
    Duration::from_nanos(
        span.end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano),
    )
}

/// Checks that `span` has all of `required` and nothing outside `required` and `optional`.
fn assert_attributes(span: &Span, required: &[&str], optional: &[&str]) {
    let present = keys(span);
    for key in required {
        assert!(
            present.contains(key),
            "span {} lacks {key}: {present:?}",
            span.name
        );
    }
    let unexpected: Vec<_> = present
        .iter()
        .filter(|key| !required.contains(key) && !optional.contains(key))
        .collect();
    assert!(
        unexpected.is_empty(),
        "span {} carries {unexpected:?} beyond its documented attributes",
        span.name
    );
}

const SERVER_ATTRIBUTES: [&str; 3] = ["rpc.system.name", "rpc.method", "rpc.response.status_code"];
const SERVER_OPTIONAL: [&str; 2] = ["error.type", "enduser.id"];
const CLIENT_ATTRIBUTES: [&str; 5] = [
    "rpc.system.name",
    "rpc.method",
    "rpc.response.status_code",
    "server.address",
    "server.port",
];
const DB_ATTRIBUTES: [&str; 3] = ["db.system.name", "db.namespace", "db.operation.name"];

/// A remote caller's trace context, as a client would send it.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_reaches_the_collector_per_service_on_both_backends() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector.clone()))
            .add_service(LogsServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let settings = TelemetrySettings {
        log_format: LogFormat::Pretty,
        // The servers' lifecycle lines and refused calls, as log records.
        log_level: "warn,kizuna_server=info,kizuna_server::layer=debug".into(),
    };
    // The process as `kizuna up` sets it up: one process resource, four services in it.
    let guard = kizuna_telemetry::init_with_endpoint(
        "kizuna",
        &settings,
        Some(&format!("http://127.0.0.1:{port}")),
    )
    .expect("telemetry");

    scenario(Backend::Sqlite, &collector).await;
    scenario(Backend::Postgres, &collector).await;
    guard.shutdown();
}

/// The latest cumulative state of the call-duration histogram for `method`, per service:
/// `(service, status, count, sum)` for each status seen.
fn call_durations(collector: &Collector, method: &str) -> Vec<(String, String, u64, f64)> {
    let metrics = collector.metrics.lock().expect("lock").clone();
    let mut latest: Vec<(String, String, u64, f64)> = Vec::new();
    for metric in metrics
        .iter()
        .filter(|m| m.item.name == "rpc.server.call.duration")
    {
        assert_eq!(metric.item.unit, "s");
        let Some(Data::Histogram(histogram)) = &metric.item.data else {
            panic!("a histogram")
        };
        for point in histogram
            .data_points
            .iter()
            .filter(|p| attribute_of(&p.attributes, "rpc.method").as_deref() == Some(method))
        {
            let service = metric.service();
            let status =
                attribute_of(&point.attributes, "rpc.response.status_code").unwrap_or_default();
            let sum = point.sum.unwrap_or_default();
            // Points are cumulative and exported several times: the largest is the latest.
            match latest
                .iter_mut()
                .find(|(s, c, _, _)| *s == service && *c == status)
            {
                Some(entry) => {
                    entry.2 = entry.2.max(point.count);
                    entry.3 = entry.3.max(sum);
                }
                None => latest.push((service, status, point.count, sum)),
            }
        }
    }
    latest
}

/// Calls of `method` answered with `status` so far, and the seconds they took.
fn calls(collector: &Collector, method: &str, status: Option<&str>) -> (u64, f64) {
    call_durations(collector, method)
        .iter()
        .filter(|(_, code, _, _)| status.is_none_or(|s| s == code))
        .fold((0, 0.0), |(count, sum), (_, _, c, s)| (count + c, sum + s))
}

/// The whole scenario on `backend`, with telemetry going to `collector`; skipped when the
/// backend is unavailable (see `kizuna_tests`).
async fn scenario(backend: Backend, collector: &Collector) {
    kizuna_telemetry::flush();
    let spans_from = collector.spans.lock().expect("lock").len();
    let logs_from = collector.logs.lock().expect("lock").len();
    const CREATE_LEAD: &str = "kizuna.leads.v1.LeadsService/CreateLead";
    const WATCH_EVENTS: &str = "kizuna.leads.v1.LeadsService/WatchEvents";
    let (created_before, _) = calls(collector, CREATE_LEAD, Some("OK"));
    let (_, streamed_before) = calls(collector, WATCH_EVENTS, None);
    let Some(suite) = Suite::start(backend).await else {
        return;
    };

    // A call without a token: refused, with a named log record in the call's trace.
    let mut anonymous =
        LeadsServiceClient::connect(format!("http://127.0.0.1:{}", suite.leads.port))
            .await
            .expect("connect");
    let refused = anonymous
        .get_lead(GetLeadRequest {
            name: "leads/nobody".into(),
        })
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let mut leads = suite.leads().await;
    leads
        .create_scoring_model(CreateScoringModelRequest {
            scoring_model: Some(pricing_model()),
            ..Default::default()
        })
        .await
        .expect("publish model");
    let mut create = tonic::Request::new(CreateLeadRequest {
        lead: Some(Lead {
            email: "trace@example.jp".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    create.metadata_mut().insert(
        "traceparent",
        format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
            .parse()
            .expect("metadata"),
    );
    let lead = leads.create_lead(create).await.expect("lead").into_inner();
    // A scored activity: its score change is announced by the background flusher.
    leads
        .create_activity(CreateActivityRequest {
            parent: lead.name.clone(),
            activity: Some(Activity {
                kind: ActivityKind::PageView as i32,
                url: "https://example.jp/pricing".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("activity");

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
    suite
        .deals()
        .await
        .list_deals(ListDealsRequest::default())
        .await
        .expect("deals");
    let event = leads
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

    // A stream that waits for events that never come, with a deadline of 1.5 s.
    let deadline = Duration::from_millis(1500);
    let mut watch = tonic::Request::new(WatchEventsRequest {
        after_sequence: 0,
        types: vec!["no.such.event".into()],
    });
    watch.set_timeout(deadline);
    let started = Instant::now();
    let mut stream = leads.watch_events(watch).await.expect("watch").into_inner();
    let outcome = tokio::time::timeout(deadline, stream.next()).await;
    drop(stream);
    assert!(
        !matches!(outcome, Ok(Some(Ok(_)))),
        "no event of that type exists"
    );
    let stream_ran = started.elapsed();

    // Idle: nothing runs but the background pollers; they must record nothing.
    tokio::time::sleep(Duration::from_millis(700)).await;
    kizuna_telemetry::flush();
    let before_idle = collector.spans.lock().expect("lock").len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    kizuna_telemetry::flush();
    let idle_spans: Vec<String> = collector.spans.lock().expect("lock")[before_idle..]
        .iter()
        .map(|s| format!("{} ({})", s.item.name, s.service()))
        .collect();
    assert!(
        idle_spans.is_empty(),
        "2.5 s of idling recorded spans: {idle_spans:?}"
    );

    let leads_port = suite.leads.port;
    suite.stop().await;
    kizuna_telemetry::flush();

    let spans = collector.spans.lock().expect("lock")[spans_from..].to_vec();
    let names = || {
        spans
            .iter()
            .map(|s| s.item.name.clone())
            .collect::<Vec<_>>()
    };
    let server_span = |method: &str| {
        spans
            .iter()
            .find(|s| s.item.name == method && s.item.kind == SpanKind::Server as i32)
            .unwrap_or_else(|| panic!("no server span {method} among {:?}", names()))
            .clone()
    };
    let children = |parent: &Span| {
        spans
            .iter()
            .filter(|s| {
                s.item.trace_id == parent.trace_id && s.item.parent_span_id == parent.span_id
            })
            .cloned()
            .collect::<Vec<_>>()
    };

    // 1. A resource per service, in one process.
    let create = server_span("kizuna.leads.v1.LeadsService/CreateLead");
    assert_eq!(create.service(), "kizuna-leads");
    let list_deals = server_span("kizuna.deals.v1.DealsService/ListDeals");
    assert_eq!(list_deals.service(), "kizuna-deals");
    let full = server_span("kizuna.gateway.v1.GatewayService/GetSubject");
    assert_eq!(full.service(), "kizuna-gateway");
    for span in [&create, &list_deals, &full] {
        assert_eq!(
            attribute_of(&span.resource, "service.namespace").as_deref(),
            Some("kizuna")
        );
        assert!(attribute_of(&span.resource, "service.version").is_some());
        assert!(attribute_of(&span.resource, "service.instance.id").is_some());
    }
    let deals_select = children(&list_deals.item)
        .into_iter()
        .find(|s| s.item.name == "SELECT deals")
        .expect("the deals read, a child of ListDeals");
    assert_eq!(deals_select.service(), "kizuna-deals");

    // The client's trace context is honoured.
    assert_eq!(hex(&create.item.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&create.item.parent_span_id), CLIENT_SPAN);
    assert_attributes(&create.item, &SERVER_ATTRIBUTES, &SERVER_OPTIONAL);
    assert_eq!(
        attribute(&create.item, "rpc.system.name").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        attribute(&create.item, "rpc.method").as_deref(),
        Some("kizuna.leads.v1.LeadsService/CreateLead")
    );
    assert_eq!(
        attribute(&create.item, "rpc.response.status_code").as_deref(),
        Some("OK")
    );
    assert!(
        event.traceparent.contains(CLIENT_TRACE),
        "the outbox event {} carries the trace of CreateLead",
        event.traceparent
    );

    // Database spans: children of the call, with the database attributes only.
    let create_children = children(&create.item);
    let insert = create_children
        .iter()
        .find(|s| s.item.name == "INSERT leads")
        .expect("a database span for the insert, a child of CreateLead");
    assert_eq!(insert.service(), "kizuna-leads");
    assert_eq!(insert.item.kind, SpanKind::Client as i32);
    assert_attributes(&insert.item, &DB_ATTRIBUTES, &["db.collection.name"]);
    let system = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgresql",
    };
    assert_eq!(
        attribute(&insert.item, "db.system.name").as_deref(),
        Some(system)
    );
    assert_eq!(
        attribute(&insert.item, "db.collection.name").as_deref(),
        Some("leads")
    );
    assert_eq!(
        attribute(&insert.item, "db.operation.name").as_deref(),
        Some("INSERT")
    );
    let namespace = attribute(&insert.item, "db.namespace").unwrap_or_default();
    assert!(
        !namespace.is_empty() && !namespace.contains('/') && !namespace.ends_with(".db"),
        "db.namespace is the database's name, not a path: {namespace}"
    );
    for statement in ["BEGIN", "COMMIT"] {
        let span = create_children
            .iter()
            .find(|s| s.item.name == statement)
            .unwrap_or_else(|| panic!("a {statement} span in CreateLead"));
        assert_attributes(&span.item, &DB_ATTRIBUTES, &[]);
    }
    for span in spans
        .iter()
        .filter(|s| keys(&s.item).contains("db.system.name"))
    {
        assert!(
            !span.item.parent_span_id.is_empty(),
            "database span {} has no parent",
            span.item.name
        );
        assert_eq!(span.item.kind, SpanKind::Client as i32);
        assert_attributes(&span.item, &DB_ATTRIBUTES, &["db.collection.name"]);
    }

    // Gateway -> leads: one trace, through a client span naming the server.
    let client = children(&full.item)
        .into_iter()
        .find(|s| s.item.name == "kizuna.leads.v1.LeadsService/GetLead")
        .expect("the gateway's client span for GetLead");
    assert_eq!(client.item.kind, SpanKind::Client as i32);
    assert_eq!(client.service(), "kizuna-gateway");
    assert_attributes(&client.item, &CLIENT_ATTRIBUTES, &["error.type"]);
    assert_eq!(
        attribute(&client.item, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attribute(&client.item, "server.port"),
        Some(leads_port.to_string())
    );
    let downstream = children(&client.item)
        .into_iter()
        .find(|s| {
            s.item.name == "kizuna.leads.v1.LeadsService/GetLead"
                && s.item.kind == SpanKind::Server as i32
        })
        .expect("the leads service's span, a child of the gateway's client span");
    assert_eq!(downstream.service(), "kizuna-leads");
    assert!(
        spans
            .iter()
            .all(|s| !s.item.name.starts_with("grpc.health")),
        "health checks stay out of traces"
    );

    // No Rust-side noise on any span; server spans carry the RPC attributes only.
    for span in &spans {
        for key in keys(&span.item) {
            assert!(
                !(key.starts_with("thread.")
                    || key.starts_with("code.")
                    || [
                        "busy_ns",
                        "idle_ns",
                        "target",
                        "trace_id",
                        "kizuna.service",
                        "level"
                    ]
                    .contains(&key)),
                "span {} carries {key}",
                span.item.name
            );
        }
        if span.item.kind == SpanKind::Server as i32 {
            assert_attributes(&span.item, &SERVER_ATTRIBUTES, &SERVER_OPTIONAL);
        }
        assert!(
            span.item.events.is_empty(),
            "span {} has span events; logs are log records",
            span.item.name
        );
    }

    // 2. The stream's span covers the stream and ends with its real status.
    let watch = spans
        .iter()
        .find(|s| {
            s.item.name == "kizuna.leads.v1.LeadsService/WatchEvents"
                && duration(&s.item) > Duration::from_millis(1000)
        })
        .unwrap_or_else(|| {
            panic!(
                "no WatchEvents span lasting the stream ({stream_ran:?}); durations {:?}",
                spans
                    .iter()
                    .filter(|s| s.item.name.ends_with("/WatchEvents"))
                    .map(|s| duration(&s.item))
                    .collect::<Vec<_>>()
            )
        });
    let lasted = duration(&watch.item);
    assert!(
        lasted >= Duration::from_millis(1300) && lasted <= stream_ran + Duration::from_millis(500),
        "the stream ran {stream_ran:?}, its span lasted {lasted:?}"
    );
    let status = attribute(&watch.item, "rpc.response.status_code").unwrap_or_default();
    assert!(
        status == "DEADLINE_EXCEEDED" || status == "CANCELLED",
        "a stream cut at its deadline ends DEADLINE_EXCEEDED or CANCELLED, not {status}"
    );
    assert!(
        children(&watch.item)
            .iter()
            .any(|s| s.item.name == "SELECT outbox"),
        "the stream's outbox read is inside its span"
    );

    // 3. Background work: the score flush is a root with its database spans as children.
    let flush = spans
        .iter()
        .find(|s| s.item.name == "leads.flush_score_changes")
        .unwrap_or_else(|| panic!("no score flush span among {:?}", names()));
    assert_eq!(flush.service(), "kizuna-leads");
    assert_eq!(flush.item.kind, SpanKind::Internal as i32);
    assert!(flush.item.parent_span_id.is_empty(), "a root span");
    assert_attributes(&flush.item, &[], &[]);
    let flushed: Vec<String> = children(&flush.item)
        .iter()
        .map(|s| s.item.name.clone())
        .collect();
    for expected in [
        "SELECT lead_score_state",
        "UPDATE lead_score_state",
        "INSERT outbox",
    ] {
        assert!(
            flushed.iter().any(|name| name == expected),
            "the flush's {expected} is its child: {flushed:?}"
        );
    }

    // 4. Metrics: per service, streams measured whole.
    let (created, _) = calls(collector, CREATE_LEAD, Some("OK"));
    assert_eq!(
        created - created_before,
        1,
        "one CreateLead call, counted once"
    );
    assert!(
        call_durations(collector, CREATE_LEAD)
            .iter()
            .all(|(service, ..)| service == "kizuna-leads")
    );
    let deals_points = call_durations(collector, "kizuna.deals.v1.DealsService/ListDeals");
    assert!(!deals_points.is_empty());
    assert!(
        deals_points
            .iter()
            .all(|(service, ..)| service == "kizuna-deals")
    );
    let (_, streamed) = calls(collector, WATCH_EVENTS, None);
    assert!(
        streamed - streamed_before >= 1.3,
        "the duration metric measures whole streams: {} s",
        streamed - streamed_before
    );

    // 5. Logs: per service, named events only, in the trace of their call.
    let logs = collector.logs.lock().expect("lock")[logs_from..].to_vec();
    for service in ["leads", "deals"] {
        assert!(
            logs.iter()
                .any(|l| l.item.event_name == "kizuna.server.serving"
                    && attribute_of(&l.item.attributes, "service").as_deref() == Some(service)
                    && l.service() == format!("kizuna-{service}")),
            "the {service} server's start, a log record of kizuna-{service}"
        );
    }
    for log in &logs {
        assert!(
            log.item.event_name.is_empty() || log.item.event_name.starts_with("kizuna."),
            "log record named {:?}: only named events have a name",
            log.item.event_name
        );
    }
    let refused_span = spans
        .iter()
        .find(|s| {
            s.item.name == "kizuna.leads.v1.LeadsService/GetLead"
                && attribute(&s.item, "rpc.response.status_code").as_deref()
                    == Some("UNAUTHENTICATED")
        })
        .expect("the refused call's span");
    let refused_log = logs
        .iter()
        .find(|l| l.item.event_name == "kizuna.rpc.refused")
        .expect("a log record for the refused call");
    assert_eq!(refused_log.service(), "kizuna-leads");
    assert_eq!(refused_log.item.trace_id, refused_span.item.trace_id);
    assert_eq!(refused_log.item.span_id, refused_span.item.span_id);
}
