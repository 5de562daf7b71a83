//! Leads at scale, on PostgreSQL: streamed ingest with scoring against a bare batched INSERT of
//! the same rows, unary `TrackActivity` latency, a rescoring job over many leads, a segment count
//! over them against a bare `COUNT(*)`, and the service's peak memory under the ingest load.
//!
//! The leads service runs as a child process (this binary, re-run with `--serve-leads`), so its
//! peak resident memory (`VmHWM`) is its own. Every rate is printed with its same-run baseline.
//!
//! ```text
//! cargo bench -p kizuna-tests --bench leads_scale
//! ```
//!
//! Sizes (environment): `KIZUNA_BENCH_INGEST_LEADS` (10 000), `KIZUNA_BENCH_ACTIVITIES`
//! (500 000), `KIZUNA_BENCH_IMPORT_ROWS` (5 000), `KIZUNA_BENCH_UNARY_CALLS` (4 000),
//! `KIZUNA_BENCH_SCALE_LEADS` (1 000 000).

use std::process::Stdio;
use std::time::{Duration, Instant};

use kizuna_db::Database;
use kizuna_leads::tables::{Activities, Leads};
use kizuna_proto::leads::leads_service_client::LeadsServiceClient;
use kizuna_proto::leads::scoring_model::{EngagementRule, FitRule, fit_rule};
use kizuna_proto::leads::*;
use kizuna_store::{Sql, Store, Table, Value};
use kizuna_tests::{Authed, Backend, Bearer, TestDb, channel, token};
use prost::Message;
use prost_types::Timestamp;

const ROWS_PER_MESSAGE: usize = 1_000;
const BASELINE_BATCH: usize = 2_000;
const SEED_BATCH: usize = 2_000;

fn size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn model() -> ScoringModel {
    ScoringModel {
        display_name: "Benchmark".into(),
        engagement_rules: vec![
            EngagementRule {
                rule_id: "pricing".into(),
                activity_kind: ActivityKind::PageView as i32,
                url_contains: "/pricing".into(),
                points: 10.0,
                max_points_per_day: 40.0,
                ..Default::default()
            },
            EngagementRule {
                rule_id: "views".into(),
                activity_kind: ActivityKind::PageView as i32,
                points: 1.0,
                max_points: 30.0,
                ..Default::default()
            },
            EngagementRule {
                rule_id: "download".into(),
                activity_kind: ActivityKind::DocumentDownload as i32,
                points: 15.0,
                ..Default::default()
            },
        ],
        fit_rules: vec![FitRule {
            rule_id: "it".into(),
            field: "industry".into(),
            operator: fit_rule::Operator::Equals as i32,
            value: "software".into(),
            points: 10.0,
        }],
        half_life_days: 14.0,
        mql_score_threshold: 60.0,
        mql_min_grade: "B".into(),
        state: scoring_model::State::Published as i32,
        ..Default::default()
    }
}

/// Page views come in visits: this many in a row belong to one lead.
const VISIT: usize = 10;

/// The `i`-th activity of the ingest workload: visits of [`VISIT`] activities, the leads in turn,
/// times increasing.
fn activity(i: usize, leads: usize, base: i64) -> (usize, Activity) {
    let lead = (i / VISIT) % leads;
    let (kind, url) = match i % 10 {
        0 => (
            ActivityKind::DocumentDownload,
            "https://example.jp/docs/guide.pdf",
        ),
        1 | 2 => (ActivityKind::PageView, "https://example.jp/pricing"),
        _ => (ActivityKind::PageView, "https://example.jp/blog/post"),
    };
    let activity = Activity {
        kind: kind as i32,
        url: url.into(),
        occur_time: Some(Timestamp {
            seconds: base + (i / (leads * VISIT)) as i64 * 3_600 + (i % VISIT) as i64 * 30,
            nanos: 0,
        }),
        ..Default::default()
    };
    (lead, activity)
}

/// Sends `rows` leads through one `ImportLeads` stream; every tenth row repeats an earlier
/// row's e-mail in full-width capitals (a duplicate to merge).
async fn import(
    client: &mut LeadsServiceClient<Authed>,
    rows: usize,
) -> (Duration, ImportLeadsResponse) {
    let requests: Vec<ImportLeadsRequest> = (0..rows)
        .map(|i| {
            let email = if i % 10 == 9 {
                let ascii = format!("IMPORT{}@EXAMPLE.JP", i - 5);
                ascii
                    .chars()
                    .map(|c| char::from_u32(c as u32 + 0xFEE0).unwrap_or(c))
                    .collect()
            } else {
                format!("import{i}@example.jp")
            };
            ImportLeadsRequest {
                lead: Some(Lead {
                    email,
                    family_name: "山田".into(),
                    company: format!("Company {}", i % 97),
                    ..Default::default()
                }),
                request_id: format!("import-{i}"),
            }
        })
        .collect();
    let started = Instant::now();
    let response = client
        .import_leads(futures::stream::iter(requests))
        .await
        .expect("import")
        .into_inner();
    (started.elapsed(), response)
}

/// Creates a segment with `filter` and counts its members three times: the median time and
/// the count.
async fn segment_count(client: &mut LeadsServiceClient<Authed>, filter: &str) -> (Duration, i64) {
    let segment = client
        .create_segment(CreateSegmentRequest {
            segment: Some(Segment {
                display_name: "Benchmark segment".into(),
                filter: filter.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("segment")
        .into_inner();
    let mut times = Vec::new();
    let mut members = 0;
    for _ in 0..3 {
        let t = Instant::now();
        members = client
            .count_segment_members(CountSegmentMembersRequest {
                name: segment.name.clone(),
            })
            .await
            .expect("count")
            .into_inner()
            .count;
        times.push(t.elapsed());
    }
    times.sort();
    (times[1], members)
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(50_999)
}

/// Child mode: serve leads from the `KIZUNA__*` environment until killed.
async fn serve() {
    let settings = kizuna_settings::Settings::load(None).expect("settings");
    kizuna_telemetry::init_for_tests();
    let app = kizuna_leads::Application::build(&settings)
        .await
        .expect("leads builds");
    app.run_until_stopped(kizuna_server::wait_for_signal())
        .await
        .expect("leads runs");
}

/// Refreshes the planner's statistics after a bulk seed, as autovacuum would within a minute
/// (without them PostgreSQL plans a lookup of a few leads by id as a scan of all of them).
async fn analyze(db: &Database) {
    sqlx::query("ANALYZE")
        .execute(db.pool())
        .await
        .expect("analyze");
}

async fn seed_leads(store: &Store, n: usize, prefix: &str) {
    let mut i = 0;
    while i < n {
        let end = (i + SEED_BATCH).min(n);
        let mut tx = store.begin().await.expect("begin");
        let rows = (i..end)
            .map(|j| {
                let lead = Lead {
                    email: format!("{prefix}{j}@example.jp"),
                    industry: if j % 3 == 0 { "software" } else { "retail" }.into(),
                    stage: kizuna_proto::types::LifecycleStage::Engaged as i32,
                    ..Default::default()
                };
                (String::new(), format!("{prefix}{j:07}"), lead)
            })
            .collect();
        tx.insert_many::<Leads>(rows).await.expect("seed leads");
        tx.commit().await.expect("commit");
        i = end;
    }
}

async fn seed_activities(store: &Store, leads: usize, prefix: &str, per_lead: usize) {
    let base = now_secs() - 86_400;
    let total = leads * per_lead;
    let mut i = 0;
    while i < total {
        let end = (i + SEED_BATCH).min(total);
        let mut tx = store.begin().await.expect("begin");
        let rows = (i..end)
            .map(|j| {
                // One activity per lead per round (the `VISIT` stride picks lead `j % leads`).
                let (lead, activity) = activity(j * VISIT, leads, base);
                (format!("leads/{prefix}{lead:07}"), String::new(), activity)
            })
            .collect();
        tx.insert_many::<Activities>(rows)
            .await
            .expect("seed activities");
        tx.commit().await.expect("commit");
        i = end;
    }
}

/// The bare baseline: the same activity rows, encoded the same way, inserted with multi-row
/// INSERTs cut exactly as the service cuts them (`kizuna_store::bulk::statements`) into a table
/// of the same shape — no transaction around them, no scoring, no idempotency, no gRPC.
async fn bare_insert(db: &Database, leads: &[String], rows: usize, base: i64) -> Duration {
    sqlx::query("CREATE TABLE activities_baseline (LIKE activities INCLUDING ALL)")
        .execute(db.pool())
        .await
        .expect("baseline table");
    let started = Instant::now();
    let mut i = 0;
    while i < rows {
        let end = (i + BASELINE_BATCH).min(rows);
        let now = kizuna_db::now_micros();
        let batch: Vec<(String, String, Vec<u8>, Vec<Value>)> = (i..end)
            .map(|j| {
                let (lead, mut activity) = activity(j, leads.len(), base);
                let id = uuid::Uuid::now_v7().to_string();
                activity.name = format!("{}/activities/{id}", leads[lead]);
                let values = Activities::values(&activity);
                (id, leads[lead].clone(), activity.encode_to_vec(), values)
            })
            .collect();
        let size = |(id, parent, data, values): &(String, String, Vec<u8>, Vec<Value>)| {
            id.len()
                + parent.len()
                + data.len()
                + values
                    .iter()
                    .map(kizuna_store::bulk::value_bytes)
                    .sum::<usize>()
                + 64
        };
        for range in kizuna_store::bulk::statements(db.statement_bytes(), &batch, 9, size) {
            let mut sql = Sql::new(
                "INSERT INTO activities_baseline (id, parent, data, version, create_time, \
                 update_time, kind, url, occur_time) VALUES ",
            );
            for (k, (id, parent, data, values)) in batch[range].iter().enumerate() {
                if k > 0 {
                    sql.push(", ");
                }
                sql.push("(")
                    .bind(id.as_str())
                    .push(", ")
                    .bind(parent.as_str())
                    .push(", ")
                    .bind(Value::Bytes(data.clone()))
                    .push(", 1, ")
                    .bind(now)
                    .push(", ")
                    .bind(now);
                for value in values {
                    sql.push(", ").bind(value.clone());
                }
                sql.push(")");
            }
            sql.query().execute(db.pool()).await.expect("bare insert");
        }
        i = end;
    }
    started.elapsed()
}

async fn streamed_ingest(
    client: &mut LeadsServiceClient<Authed>,
    leads: &[String],
    rows: usize,
    base: i64,
) -> (Duration, TrackActivitiesResponse) {
    let messages: Vec<TrackActivitiesRequest> = (0..rows)
        .collect::<Vec<_>>()
        .chunks(ROWS_PER_MESSAGE)
        .map(|chunk| TrackActivitiesRequest {
            activities: chunk
                .iter()
                .map(|&j| {
                    let (lead, activity) = activity(j, leads.len(), base);
                    TrackActivityRequest {
                        parent: leads[lead].clone(),
                        activity: Some(activity),
                        request_id: String::new(),
                    }
                })
                .collect(),
        })
        .collect();
    let started = Instant::now();
    let response = client
        .track_activities(futures::stream::iter(messages))
        .await
        .expect("ingest")
        .into_inner();
    (started.elapsed(), response)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

async fn unary(
    client: &LeadsServiceClient<Authed>,
    leads: &[String],
    calls: usize,
) -> Vec<Duration> {
    const CONCURRENCY: usize = 8;
    let base = now_secs() - 600;
    let tasks = (0..CONCURRENCY).map(|worker| {
        let mut client = client.clone();
        let leads = leads.to_vec();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = worker;
            while i < calls {
                let (lead, activity) = activity(i, leads.len(), base);
                let started = Instant::now();
                client
                    .track_activity(TrackActivityRequest {
                        parent: leads[lead].clone(),
                        activity: Some(activity),
                        request_id: String::new(),
                    })
                    .await
                    .expect("track activity");
                latencies.push(started.elapsed());
                i += CONCURRENCY;
            }
            latencies
        })
    });
    let mut all: Vec<Duration> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(|r| r.expect("worker"))
        .collect();
    all.sort();
    all
}

async fn wait_for_job(client: &mut LeadsServiceClient<Authed>, name: &str) -> RescoringJob {
    loop {
        let job = client
            .get_rescoring_job(GetRescoringJobRequest { name: name.into() })
            .await
            .expect("job")
            .into_inner();
        if job.state != rescoring_job::State::Running as i32 {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--serve-leads") {
        serve().await;
        return;
    }
    let ingest_leads = size("KIZUNA_BENCH_INGEST_LEADS", 10_000);
    let rows = size("KIZUNA_BENCH_ACTIVITIES", 500_000);
    let unary_calls = size("KIZUNA_BENCH_UNARY_CALLS", 4_000);
    let scale_leads = size("KIZUNA_BENCH_SCALE_LEADS", 1_000_000);

    let Some(db) = TestDb::create(Backend::Postgres).await else {
        eprintln!("PostgreSQL is not reachable; this benchmark needs it");
        return;
    };
    // `KIZUNA_BENCH_PG_SOCKET=/var/run/postgresql` connects both the service and the baseline
    // over the Unix socket (no TCP, so none of sqlx 0.9.0's Nagle waits).
    let url = match std::env::var("KIZUNA_BENCH_PG_SOCKET") {
        Ok(dir) if !dir.is_empty() => {
            let name = db.url.rsplit('/').next().unwrap_or_default();
            format!("postgres://postgres@localhost/{name}?host={dir}")
        }
        _ => db.url.clone(),
    };
    let transport = if url == db.url { "TCP" } else { "Unix socket" };
    let port = free_port();
    let exe = std::env::current_exe().expect("own path");
    let mut child = tokio::process::Command::new(exe)
        .arg("--serve-leads")
        .env("KIZUNA__DATABASE__URL", &url)
        .env("KIZUNA__DATABASE__MAX_CONNECTIONS", "8")
        .env("KIZUNA__SERVER__HOST", "127.0.0.1")
        .env("KIZUNA__SERVER__PORT", port.to_string())
        .env("KIZUNA__AUTH__SIGNING_KEY", kizuna_tests::SIGNING_KEY)
        .env("KIZUNA__TELEMETRY__LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start leads");
    let pid = child.id().unwrap_or_default();
    let connected = async {
        loop {
            if let Ok(ch) =
                tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
                    .expect("uri")
                    .connect()
                    .await
            {
                return ch;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), connected)
        .await
        .expect("leads starts");
    let mut client =
        LeadsServiceClient::with_interceptor(channel(port).await, Bearer(Some(token(&["admin"]))))
            .max_decoding_message_size(64 * 1024 * 1024);
    let mut db_settings = kizuna_tests::settings_for(&url).database;
    db_settings.max_connections = 4;
    db_settings.acquire_timeout_secs = 60;
    let database = Database::connect(&db_settings)
        .await
        .expect("bench connects");
    let store = Store::new(
        database.clone(),
        "bench",
        tokio::sync::watch::channel(false).1,
    );

    println!("# leads at scale (PostgreSQL over {transport}, service pid {pid})");
    let published = client
        .create_scoring_model(CreateScoringModelRequest {
            scoring_model: Some(model()),
            ..Default::default()
        })
        .await
        .expect("publish")
        .into_inner();

    // 1. Streamed ingest vs bare batched INSERT.
    seed_leads(&store, ingest_leads, "i").await;
    analyze(&database).await;
    let names: Vec<String> = (0..ingest_leads)
        .map(|j| format!("leads/i{j:07}"))
        .collect();
    let base = now_secs() - 86_400 * 2;
    let bare = bare_insert(&database, &names, rows, base).await;
    let rss_before = peak_rss_mib(pid);
    let (ingest, response) = streamed_ingest(&mut client, &names, rows, base).await;
    let rss_ingest = peak_rss_mib(pid);
    assert_eq!(
        response.accepted_count as usize,
        rows,
        "{:?}",
        response.failures.first()
    );
    let bare_rate = rows as f64 / bare.as_secs_f64();
    let ingest_rate = rows as f64 / ingest.as_secs_f64();
    println!(
        "bare batched INSERT (batches of {BASELINE_BATCH}, cut like the service): {rows} rows in {:.2}s = {bare_rate:.0} rows/s",
        bare.as_secs_f64()
    );
    println!(
        "TrackActivities with scoring ({ingest_leads} leads, {ROWS_PER_MESSAGE}/message): {rows} in {:.2}s = {ingest_rate:.0} activities/s, {} qualified",
        ingest.as_secs_f64(),
        response.qualified_count
    );
    println!("ratio ingest/bare = {:.2}", ingest_rate / bare_rate);
    println!("service peak RSS: {rss_before:.1} MiB before ingest, {rss_ingest:.1} MiB after");

    // 1b. ImportLeads: one stream of rows, every tenth a full-width spelling of an earlier
    // row's e-mail (merged), captured row by row.
    let import_rows = size("KIZUNA_BENCH_IMPORT_ROWS", 5_000);
    if import_rows > 0 {
        let (took, imported) = import(&mut client, import_rows).await;
        println!(
            "ImportLeads: {import_rows} rows in {:.2}s = {:.0} rows/s ({} created, {} merged, {} failed)",
            took.as_secs_f64(),
            import_rows as f64 / took.as_secs_f64(),
            imported.created_count,
            imported.merged_count,
            imported.failed_count
        );
    }

    // 2. Unary TrackActivity latency.
    let latencies = unary(&client, &names, unary_calls).await;
    println!(
        "TrackActivity unary, concurrency 8: {} calls, p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );

    // 3. Rescoring job over many leads (one activity each, plus the ingest leads).
    let seeded = Instant::now();
    seed_leads(&store, scale_leads, "s").await;
    seed_activities(&store, scale_leads, "s", 1).await;
    analyze(&database).await;
    println!(
        "seeded {scale_leads} leads + {scale_leads} activities in {:.1}s (bulk insert, not measured)",
        seeded.elapsed().as_secs_f64()
    );
    let mut changed = published.clone();
    changed.mql_score_threshold = 12.0;
    changed.mql_min_grade = String::new();
    let started = Instant::now();
    let updated = client
        .update_scoring_model(UpdateScoringModelRequest {
            scoring_model: Some(changed),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["mql_score_threshold".into(), "mql_min_grade".into()],
            }),
        })
        .await
        .expect("republish")
        .into_inner();
    let job = wait_for_job(&mut client, &updated.rescoring_job).await;
    let took = started.elapsed();
    println!(
        "rescoring job: {} leads in {:.1}s = {:.0} leads/s ({} changed, {} crossed into MQL, state {:?})",
        job.leads_scored,
        took.as_secs_f64(),
        job.leads_scored as f64 / took.as_secs_f64(),
        job.leads_changed,
        job.leads_qualified,
        rescoring_job::State::try_from(job.state).unwrap_or_default()
    );
    println!(
        "service peak RSS after rescoring: {:.1} MiB",
        peak_rss_mib(pid)
    );

    // 4. Segment counts over all leads vs a bare COUNT(*): a profile segment and the issue's
    // example with an activity condition (a correlated count per lead).
    let mut bare_counts = Vec::new();
    let mut total: i64 = 0;
    for _ in 0..3 {
        let t = Instant::now();
        total = sqlx::query_scalar("SELECT COUNT(*) FROM leads")
            .fetch_one(database.pool())
            .await
            .expect("bare count");
        bare_counts.push(t.elapsed());
    }
    bare_counts.sort();
    let bare = bare_counts[1];
    for filter in [
        "grade >= \"B\" AND score > 10 AND stage = \"MQL\"",
        "grade >= \"B\" AND score > 10 AND activity(kind = \"PAGE_VIEW\", url ~ \"/pricing\", within = \"7d\") >= 2",
    ] {
        let (median, members) = segment_count(&mut client, filter).await;
        println!(
            "CountSegmentMembers `{filter}` over {total} leads: {members} members, median {:.0} ms; bare SELECT COUNT(*) median {:.0} ms; ratio {:.2}",
            median.as_secs_f64() * 1e3,
            bare.as_secs_f64() * 1e3,
            median.as_secs_f64() / bare.as_secs_f64()
        );
    }
    let _ = child.kill().await;
}
