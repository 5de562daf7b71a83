//! API benchmark: throughput and latency of `CreateLead` and `GetLead` on SQLite and PostgreSQL,
//! each as a ratio of a bare tonic server measured in the same run (a `grpc.health.v1/Check` on a
//! server with no middleware and no database), so the figures hold on a noisy machine.
//!
//! `cargo bench -p kizuna-tests --bench api` (set `KIZUNA_BENCH_CALLS` to change the call count).

use std::time::{Duration, Instant};

use futures::future::join_all;
use kizuna_proto::leads::leads_service_client::LeadsServiceClient;
use kizuna_proto::leads::{CreateLeadRequest, GetLeadRequest, Lead};
use kizuna_tests::{Backend, Bearer, TestDb, channel, settings_for, spawn_leads, token};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const CONCURRENCY: usize = 16;

struct Figures {
    label: String,
    calls: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Figures {
    fn throughput(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    }
}

/// Runs `calls` calls spread over `CONCURRENCY` tasks; `call(i)` performs call number `i`.
async fn measure<F, Fut>(label: &str, calls: usize, call: F) -> Figures
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let tasks = (0..CONCURRENCY).map(|worker| {
        let call = call.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = worker;
            while i < calls {
                let t = Instant::now();
                call(i).await;
                latencies.push(t.elapsed());
                i += CONCURRENCY;
            }
            latencies
        })
    });
    let latencies: Vec<Duration> = join_all(tasks)
        .await
        .into_iter()
        .flat_map(|r| r.expect("worker"))
        .collect();
    Figures {
        label: label.to_owned(),
        calls,
        elapsed: started.elapsed(),
        latencies,
    }
}

async fn bare_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (_, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    port
}

async fn leads_phase(backend: Backend, calls: usize, results: &mut Vec<Figures>) {
    let Some(db) = TestDb::create(backend).await else {
        println!("(skipping {backend:?}: database unavailable)");
        return;
    };
    let mut settings = settings_for(&db.url);
    settings.database.max_connections = 16;
    let running = spawn_leads(db, settings).await;
    let client = LeadsServiceClient::with_interceptor(
        channel(running.port).await,
        Bearer(Some(token(&["admin"]))),
    );
    let run = uuid::Uuid::new_v4().simple().to_string();
    let create = {
        let client = client.clone();
        let run = run.clone();
        move |i: usize| {
            let mut client = client.clone();
            let email = format!("bench-{run}-{i}@example.jp");
            async move {
                let lead = Lead {
                    email,
                    family_name: "山田".into(),
                    ..Default::default()
                };
                client
                    .create_lead(CreateLeadRequest {
                        lead: Some(lead),
                        ..Default::default()
                    })
                    .await
                    .expect("create");
            }
        }
    };
    results.push(measure(&format!("CreateLead ({backend:?})"), calls, create).await);
    let mut probe = client.clone();
    let names: Vec<String> = probe
        .list_leads(kizuna_proto::leads::ListLeadsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .leads
        .into_iter()
        .map(|l| l.name)
        .collect();
    let get = move |i: usize| {
        let mut client = client.clone();
        let name = names[i % names.len()].clone();
        async move {
            client.get_lead(GetLeadRequest { name }).await.expect("get");
        }
    };
    results.push(measure(&format!("GetLead ({backend:?})"), calls, get).await);
    running.stop().await;
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let calls: usize = std::env::var("KIZUNA_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let mut results = Vec::new();

    let port = bare_server().await;
    let health = HealthClient::new(channel(port).await);
    let bare = move |_: usize| {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .expect("check");
        }
    };
    results.push(measure("bare tonic (health Check)", calls, bare.clone()).await);
    leads_phase(Backend::Sqlite, calls, &mut results).await;
    leads_phase(Backend::Postgres, calls, &mut results).await;
    // The baseline again at the end, so drift during the run shows.
    results.push(measure("bare tonic (again)", calls, bare).await);

    let baseline = results[0].throughput();
    println!("\n{calls} calls per row, {CONCURRENCY} concurrent callers, loopback\n");
    println!("| what | calls/s | p50 | p99 | throughput vs bare tonic |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for figures in &results {
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.3} |",
            figures.label,
            figures.throughput(),
            figures.percentile(0.50).as_secs_f64() * 1000.0,
            figures.percentile(0.99).as_secs_f64() * 1000.0,
            figures.throughput() / baseline
        );
    }
}
