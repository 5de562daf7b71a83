//! API benchmark: `GetLead` and `CreateLead` against the bare operations underneath them,
//! measured in the same run on the same machine.
//!
//! - **echo**: a bare tonic server (no middleware, no database) answering
//!   `grpc.health.v1.Health/Check`, in its own process. It shows what the load client and gRPC
//!   over loopback can do; the run prints a WARNING when it stays under 30 000 calls/s at 16
//!   callers, because then the client, not the server, limits every row.
//! - **bare key read**: `SELECT data FROM leads WHERE parent = '' AND id = $1` over the seeded
//!   leads, by `pgbench` (custom script, prepared statements) and through sqlx (the service's
//!   driver, in this process), each at 16 concurrent connections.
//! - **bare write**: one single-row `INSERT` into a scratch copy of `leads` (same columns and
//!   indexes, a 200-byte `data`) and `COMMIT`, by `pgbench`, at 16 and 64 connections.
//! - **`GetLead`** (16 callers) and **`CreateLead`** (16 and 64 callers, each a new person) on
//!   the leads service, run as a child process (this binary re-run with `--serve-leads`) with
//!   its default settings, production telemetry at `info` and a fresh PostgreSQL database;
//!   the same on SQLite as secondary rows.
//!
//! The load client sends pre-encoded request bytes (a pass-through codec: no protobuf encoding
//! or decoding in the client except for the new person of each `CreateLead`) from tokio tasks
//! over four HTTP/2 connections, callers assigned round-robin. Each row runs for a fixed time
//! after a short warm-up; latencies are per call. Rows against a child process also report the
//! CPU time that process spent per call (from `/proc`), which shows where a slow row's time goes
//! when the two cores are shared.
//!
//! ```text
//! cargo bench -p kizuna-tests --bench api
//! ```
//!
//! Environment: `KIZUNA_BENCH_SECS` (10) seconds per row, `KIZUNA_BENCH_LEADS` (10 000) leads
//! seeded for the reads, `KIZUNA_BENCH_SQLITE` (`1`; `0` skips the SQLite rows),
//! `KIZUNA_TEST_DATABASE_URL` for PostgreSQL (default `127.0.0.1:5432`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kizuna_db::Database;
use kizuna_leads::tables::Leads;
use kizuna_proto::leads::{CreateLeadRequest, GetLeadRequest, Lead};
use kizuna_store::Store;
use kizuna_tests::{Backend, TestDb, token};
use prost::Message;
use prost::bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;

/// HTTP/2 connections of the load client.
const CONNECTIONS: usize = 4;
/// The echo rate below which the client is suspected of limiting the figures.
const ECHO_FLOOR: f64 = 30_000.0;
/// Size of `data` in the bare INSERT (a created lead's stored message is about this size).
const BARE_DATA_BYTES: usize = 200;
const ECHO_PATH: &str = "/grpc.health.v1.Health/Check";
const GET_PATH: &str = "/kizuna.leads.v1.LeadsService/GetLead";
const CREATE_PATH: &str = "/kizuna.leads.v1.LeadsService/CreateLead";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Passes already-encoded messages through: the client spends nothing on protobuf.
#[derive(Clone, Copy, Debug, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// What each call sends.
#[derive(Clone)]
enum Body {
    /// The same message every time.
    Fixed(Bytes),
    /// One of these, picked uniformly at random per call.
    AnyOf(std::sync::Arc<Vec<Bytes>>),
    /// A `CreateLead` of a new person (an e-mail unique to the run, caller and call).
    NewPerson(String),
}

impl Body {
    fn next(&self, caller: usize, seq: u64, rng: &mut u64) -> Bytes {
        match self {
            Body::Fixed(bytes) => bytes.clone(),
            Body::AnyOf(all) => all[(xorshift(rng) % all.len() as u64) as usize].clone(),
            Body::NewPerson(run) => CreateLeadRequest {
                lead: Some(Lead {
                    email: format!("{run}-{caller}-{seq}@example.jp"),
                    family_name: "山田".into(),
                    given_name: "花子".into(),
                    company: "Example KK".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .encode_to_vec()
            .into(),
        }
    }
}

/// Says on stderr which row starts (a long run shows where it is; a profiler knows when).
fn progress(what: &str, callers: usize) {
    eprintln!(
        "[{:?}] {what}, {callers} callers",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    );
}

/// User and system CPU seconds `pid` has used (Linux `/proc`, 100 clock ticks a second).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / 100.0)
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// One row of the result table.
struct Row {
    what: String,
    callers: usize,
    rate: f64,
    /// Sorted, in microseconds.
    latencies: Vec<u64>,
    note: String,
    /// CPU time the server process spent per completed call in the window, in µs.
    server_cpu_us: Option<f64>,
}

impl Row {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index] as f64 / 1000.0
    }
}

/// How long each row runs, after how much warm-up.
#[derive(Clone, Copy)]
struct Window {
    warm_up: Duration,
    measure: Duration,
}

/// A load client: [`CONNECTIONS`] HTTP/2 connections to one server.
struct Client {
    channels: Vec<Channel>,
    authorization: Option<AsciiMetadataValue>,
    /// The server's process, whose CPU time each row reports.
    server_pid: u32,
}

impl Client {
    async fn connect(server: &Child, authorization: Option<String>) -> Self {
        let port = server.port;
        let mut channels = Vec::new();
        for _ in 0..CONNECTIONS {
            channels.push(kizuna_tests::channel(port).await);
        }
        let authorization = authorization
            .map(|token| MetadataValue::try_from(format!("Bearer {token}")).expect("ascii token"));
        Self {
            channels,
            authorization,
            server_pid: server.process.id().unwrap_or_default(),
        }
    }

    /// One call, checked, outside any measurement: the decoded response.
    async fn once<M: Message + Default>(&self, path: &'static str, body: Bytes) -> M {
        let mut grpc = tonic::client::Grpc::new(self.channels[0].clone());
        let mut request = tonic::Request::new(body);
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        grpc.ready().await.expect("ready");
        let response = grpc
            .unary(request, PathAndQuery::from_static(path), Raw)
            .await
            .unwrap_or_else(|status| panic!("{path}: {status:?}"));
        M::decode(response.into_inner()).expect("decodable response")
    }

    /// `callers` tasks calling `path` back to back for the window; the calls that complete
    /// inside the measured part count.
    async fn drive(
        &self,
        what: &str,
        callers: usize,
        window: Window,
        path: &'static str,
        body: Body,
    ) -> Row {
        progress(what, callers);
        let start = Instant::now() + window.warm_up;
        let end = start + window.measure;
        let pid = self.server_pid;
        let cpu = tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let before = cpu_seconds(pid);
            tokio::time::sleep_until(end.into()).await;
            Some(cpu_seconds(pid)? - before?)
        });
        let tasks: Vec<_> = (0..callers)
            .map(|caller| {
                let mut grpc =
                    tonic::client::Grpc::new(self.channels[caller % CONNECTIONS].clone());
                let authorization = self.authorization.clone();
                let body = body.clone();
                let path = PathAndQuery::from_static(path);
                tokio::spawn(async move {
                    let mut rng = 0x9E37_79B9_7F4A_7C15_u64 ^ ((caller as u64 + 1) << 32);
                    let mut latencies = Vec::with_capacity(1 << 16);
                    let mut errors = 0_u64;
                    let mut first_error = None;
                    let mut seq = 0_u64;
                    loop {
                        let message = body.next(caller, seq, &mut rng);
                        seq += 1;
                        let mut request = tonic::Request::new(message);
                        if let Some(value) = &authorization {
                            request
                                .metadata_mut()
                                .insert("authorization", value.clone());
                        }
                        let began = Instant::now();
                        if began >= end {
                            break;
                        }
                        let result = match grpc.ready().await {
                            Ok(()) => grpc.unary(request, path.clone(), Raw).await.map(drop),
                            Err(error) => Err(tonic::Status::unavailable(error.to_string())),
                        };
                        let done = Instant::now();
                        if began < start || done > end {
                            continue;
                        }
                        match result {
                            Ok(()) => latencies.push((done - began).as_micros() as u64),
                            Err(status) => {
                                errors += 1;
                                first_error.get_or_insert(status);
                            }
                        }
                    }
                    (latencies, errors, first_error)
                })
            })
            .collect();
        let mut latencies = Vec::new();
        let mut errors = 0;
        let mut first_error = None;
        for task in tasks {
            let (mine, failed, first) = task.await.expect("caller");
            latencies.extend(mine);
            errors += failed;
            if first_error.is_none() {
                first_error = first;
            }
        }
        latencies.sort_unstable();
        let cpu = cpu.await.ok().flatten();
        let note = match first_error {
            Some(status) => format!(
                "{errors} calls failed (not counted), first: {:?} {}",
                status.code(),
                status.message()
            ),
            None => String::new(),
        };
        Row {
            what: what.to_owned(),
            callers,
            rate: latencies.len() as f64 / window.measure.as_secs_f64(),
            server_cpu_us: cpu.map(|seconds| seconds * 1e6 / latencies.len().max(1) as f64),
            latencies,
            note,
        }
    }
}

/// The bare key read through sqlx without the pool's ping before each acquire.
const SQLX_NO_PING: &str = "bare key read, sqlx, pool without test_before_acquire";
/// The bare key read through sqlx with the service's pool settings.
const SQLX_READ: &str = "bare key read, sqlx (same SELECT, driver and pool settings)";

/// The same primary-key read as `GetLead`'s, through sqlx (the Any driver the service uses),
/// from `callers` tasks sharing a pool of as many connections: the service's pool settings
/// (`Database::connect`), or the same without `test_before_acquire` (sqlx then skips the ping
/// round trip it makes before handing out a pooled connection; it still pings on release).
async fn sqlx_key_read(
    url: &str,
    callers: usize,
    ids: &[String],
    window: Window,
    ping_before_acquire: bool,
) -> Row {
    let mut settings = kizuna_tests::settings_for(url).database;
    settings.max_connections = callers as u32;
    let database = Database::connect(&settings).await.expect("connect");
    let pool = if ping_before_acquire {
        database.pool().clone()
    } else {
        sqlx::any::AnyPoolOptions::new()
            .max_connections(callers as u32)
            .test_before_acquire(false)
            .connect_lazy(url)
            .expect("pool")
    };
    let what = if ping_before_acquire {
        SQLX_READ
    } else {
        SQLX_NO_PING
    };
    let ids = std::sync::Arc::new(ids.to_vec());
    progress(what, callers);
    let start = Instant::now() + window.warm_up;
    let end = start + window.measure;
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let pool = pool.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                let mut rng = 0x2545_F491_4F6C_DD1D_u64 ^ ((caller as u64 + 1) << 32);
                let mut latencies = Vec::with_capacity(1 << 16);
                loop {
                    let id = &ids[(xorshift(&mut rng) % ids.len() as u64) as usize];
                    let began = Instant::now();
                    if began >= end {
                        break;
                    }
                    let row = sqlx::query("SELECT data FROM leads WHERE id = $1 AND parent = $2")
                        .bind(id.as_str())
                        .bind("")
                        .fetch_optional(&pool)
                        .await
                        .expect("bare read");
                    assert!(row.is_some(), "seeded lead {id} is there");
                    let done = Instant::now();
                    if began >= start && done <= end {
                        latencies.push((done - began).as_micros() as u64);
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("reader"));
    }
    latencies.sort_unstable();
    pool.close().await;
    database.close().await;
    Row {
        what: what.into(),
        callers,
        rate: latencies.len() as f64 / window.measure.as_secs_f64(),
        latencies,
        note: String::new(),
        server_cpu_us: None,
    }
}

/// Runs `pgbench -n -M prepared -c CLIENTS -j 2 -T SECS -f script` against `url` and reads its
/// throughput and its per-transaction latency log.
async fn pgbench(what: &str, url: &str, clients: usize, secs: u64, script: &str) -> Row {
    progress(what, clients);
    let dir = scratch_dir("pgbench");
    let file = dir.join("script.sql");
    std::fs::write(&file, script).expect("write script");
    let output = tokio::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-j", "2", "-l"])
        .arg(format!("-c{clients}"))
        .arg(format!("-T{secs}"))
        .arg(format!("--log-prefix={}", dir.join("log").display()))
        .arg("-f")
        .arg(&file)
        .arg(url)
        .output()
        .await
        .expect("pgbench runs (is /usr/bin/pgbench installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tps = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .expect("pgbench prints tps");
    let failed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("0")
        .to_owned();
    // Log lines: client transaction latency_us script epoch_s epoch_us.
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("log dir").flatten() {
        if !entry.file_name().to_string_lossy().starts_with("log.") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        latencies.extend(
            text.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()),
        );
    }
    latencies.sort_unstable();
    let _ = std::fs::remove_dir_all(&dir);
    Row {
        what: what.to_owned(),
        callers: clients,
        rate: tps,
        latencies,
        server_cpu_us: None,
        note: if failed == "0" {
            String::new()
        } else {
            format!("{failed} transactions failed")
        },
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "kizuna-bench-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A `pgbench` script inserting one row shaped like a lead (every column without a default,
/// `data` of [`BARE_DATA_BYTES`], unique id and e-mail key) into `table` in a transaction.
async fn insert_script(database: &Database, table: &str) -> String {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_name = 'leads' AND table_schema = current_schema() \
         AND column_default IS NULL ORDER BY ordinal_position",
    )
    .fetch_all(database.pool())
    .await
    .expect("leads columns");
    let data = format!("'\\x{}'::bytea", "5a".repeat(BARE_DATA_BYTES));
    let (names, values): (Vec<_>, Vec<_>) = columns
        .iter()
        .map(|(name, kind)| {
            let value = match (name.as_str(), kind.as_str()) {
                ("id" | "email_key", _) => "gen_random_uuid()::text".to_owned(),
                ("email", _) => "gen_random_uuid()::text || '@example.jp'".to_owned(),
                (_, "bytea") => data.clone(),
                (_, "text") => "''".to_owned(),
                (_, "boolean") => "false".to_owned(),
                _ => "1".to_owned(),
            };
            (name.clone(), value)
        })
        .unzip();
    format!(
        "BEGIN;\nINSERT INTO {table} ({}) VALUES ({});\nCOMMIT;\n",
        names.join(", "),
        values.join(", ")
    )
}

/// Seeds `n` leads with ids `0`..`n` through the store (as the service writes them) and
/// refreshes the planner's statistics, as autovacuum would after a bulk load.
async fn seed(url: &str, n: usize) -> Vec<String> {
    let database = Database::connect(&kizuna_tests::settings_for(url).database)
        .await
        .expect("connect");
    let store = Store::new(
        database.clone(),
        "bench",
        tokio::sync::watch::channel(false).1,
    );
    let ids: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    for chunk in ids.chunks(2_000) {
        let mut tx = store.begin().await.expect("begin");
        let rows = chunk
            .iter()
            .map(|id| {
                let lead = Lead {
                    email: format!("seed-{id}@example.jp"),
                    family_name: "佐藤".into(),
                    given_name: "一郎".into(),
                    company: "Example KK".into(),
                    industry: "software".into(),
                    ..Default::default()
                };
                (String::new(), id.clone(), lead)
            })
            .collect();
        tx.insert_many::<Leads>(rows).await.expect("seed");
        tx.commit().await.expect("commit");
    }
    if database.backend() == kizuna_db::Backend::Postgres {
        sqlx::query("ANALYZE")
            .execute(database.pool())
            .await
            .expect("analyze");
    }
    database.close().await;
    ids
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A server in a child process (this binary in a serving mode), killed on drop.
struct Child {
    process: tokio::process::Child,
    port: u16,
    log: PathBuf,
}

impl Child {
    /// Starts `mode` (`--serve-echo` or `--serve-leads`) and waits until its health is SERVING.
    async fn start(mode: &str, database_url: Option<&str>) -> Self {
        let port = free_port();
        let log = scratch_dir("log").join("server.log");
        let mut command = tokio::process::Command::new(std::env::current_exe().expect("own path"));
        command
            .arg(mode)
            .env("KIZUNA__SERVER__HOST", "127.0.0.1")
            .env("KIZUNA__SERVER__PORT", port.to_string())
            .env("KIZUNA__AUTH__SIGNING_KEY", kizuna_tests::SIGNING_KEY)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true);
        if let Some(url) = database_url {
            command.env("KIZUNA__DATABASE__URL", url);
        }
        let process = command.spawn().expect("start the server");
        let child = Self { process, port, log };
        let serving = async {
            loop {
                if let Ok(channel) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
                    .expect("uri")
                    .connect()
                    .await
                {
                    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                    let status = health
                        .check(tonic_health::pb::HealthCheckRequest::default())
                        .await
                        .map(|r| r.into_inner().status)
                        .ok();
                    if status
                        == Some(
                            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
                        )
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(60), serving)
            .await
            .is_err()
        {
            panic!(
                "{mode} did not become SERVING within 60 s; its log: {}",
                child.log.display()
            );
        }
        child
    }

    async fn stop(mut self) {
        let _ = self.process.kill().await;
        if let Some(dir) = self.log.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    fn log_bytes(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }
}

/// Child mode: a bare tonic server with the health service only.
async fn serve_echo() {
    let port: u16 = env_or("KIZUNA__SERVER__PORT", 0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let (_, health) = tonic_health::server::health_reporter();
    tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await
        .expect("echo serves");
}

/// Child mode: the leads service as `kizuna serve leads` runs it (settings from the defaults
/// and `KIZUNA__*`, telemetry as configured), until killed.
async fn serve_leads() {
    let settings = kizuna_settings::Settings::load(None).expect("settings");
    settings.validate().expect("valid settings");
    let guard = kizuna_telemetry::init("kizuna-leads", &settings.telemetry).expect("telemetry");
    kizuna_leads::Application::build(&settings)
        .await
        .expect("leads builds")
        .run_until_stopped(kizuna_server::wait_for_signal())
        .await
        .expect("leads runs");
    guard.shutdown();
}

fn encoded(message: &impl Message) -> Bytes {
    message.encode_to_vec().into()
}

/// `GetLead` and `CreateLead` rows for the leads service on `db`, against the bare operations
/// when it is PostgreSQL.
async fn leads_rows(db: &TestDb, leads: usize, window: Window, rows: &mut Vec<Row>) {
    let postgres = db.pg_name.is_some();
    let label = if postgres { "PostgreSQL" } else { "SQLite" };
    let child = Child::start("--serve-leads", Some(&db.url)).await;
    let ids = seed(&db.url, leads).await;
    let client = Client::connect(&child, Some(token(&["admin"]))).await;
    let gets: Vec<Bytes> = ids
        .iter()
        .map(|id| {
            encoded(&GetLeadRequest {
                name: format!("leads/{id}"),
            })
        })
        .collect();
    let first: Lead = client.once(GET_PATH, gets[0].clone()).await;
    assert_eq!(first.name, "leads/0", "GetLead answers the seeded lead");
    let secs = window.measure.as_secs();

    if postgres {
        let script = format!(
            "\\set id random(0, {})\nSELECT data FROM leads WHERE parent = '' AND id = :id::text;\n",
            leads - 1
        );
        rows.push(
            pgbench(
                "bare key read, pgbench (custom -S)",
                &db.url,
                16,
                secs,
                &script,
            )
            .await,
        );
        rows.push(sqlx_key_read(&db.url, 16, &ids, window, true).await);
        rows.push(sqlx_key_read(&db.url, 16, &ids, window, false).await);
    }
    rows.push(
        client
            .drive(
                &format!("GetLead ({label})"),
                16,
                window,
                GET_PATH,
                Body::AnyOf(gets.into()),
            )
            .await,
    );

    let run = format!("b{}", uuid::Uuid::new_v4().simple());
    let created: Lead = client
        .once(
            CREATE_PATH,
            Body::NewPerson(run.clone()).next(0, u64::MAX, &mut 1),
        )
        .await;
    let stored_bytes = created.encoded_len();
    let insert = if postgres {
        let database = Database::connect(&kizuna_tests::settings_for(&db.url).database)
            .await
            .expect("connect");
        sqlx::query("CREATE TABLE leads_bare (LIKE leads INCLUDING ALL)")
            .execute(database.pool())
            .await
            .expect("scratch table");
        let script = insert_script(&database, "leads_bare").await;
        database.close().await;
        Some(script)
    } else {
        None
    };
    for callers in [16, 64] {
        if let Some(script) = &insert {
            rows.push(
                pgbench(
                    "bare INSERT + COMMIT, pgbench",
                    &db.url,
                    callers,
                    secs,
                    script,
                )
                .await,
            );
        }
        if postgres || callers == 16 {
            rows.push(
                client
                    .drive(
                        &format!("CreateLead ({label})"),
                        callers,
                        window,
                        CREATE_PATH,
                        Body::NewPerson(format!("{run}-{callers}")),
                    )
                    .await,
            );
        }
    }
    println!(
        "({label}: a created lead's stored message is {stored_bytes} bytes; service log {} bytes)",
        child.log_bytes()
    );
    child.stop().await;
}

fn ratio(rows: &[Row], numerator: &str, denominator: &str, callers: usize) -> Option<f64> {
    let find = |what: &str| {
        rows.iter()
            .find(|r| r.what == what && r.callers == callers)
            .map(|r| r.rate)
    };
    Some(find(numerator)? / find(denominator)?)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--serve-echo") {
        return serve_echo().await;
    }
    if std::env::args().any(|a| a == "--serve-leads") {
        return serve_leads().await;
    }
    let window = Window {
        warm_up: Duration::from_secs(1),
        measure: Duration::from_secs(env_or("KIZUNA_BENCH_SECS", 10)),
    };
    let leads: usize = env_or("KIZUNA_BENCH_LEADS", 10_000);
    let sqlite = env_or("KIZUNA_BENCH_SQLITE", 1) != 0;
    let mut rows = Vec::new();

    let echo = Child::start("--serve-echo", None).await;
    let echo_client = Client::connect(&echo, None).await;
    let check = Body::Fixed(encoded(&tonic_health::pb::HealthCheckRequest::default()));
    const ECHO: &str = "echo: bare tonic, health Check";
    for callers in [16, 64] {
        rows.push(
            echo_client
                .drive(ECHO, callers, window, ECHO_PATH, check.clone())
                .await,
        );
    }

    match TestDb::create(Backend::Postgres).await {
        Some(db) => leads_rows(&db, leads, window, &mut rows).await,
        None => println!("(PostgreSQL unreachable: no PostgreSQL rows)"),
    }
    if sqlite && let Some(db) = TestDb::create(Backend::Sqlite).await {
        leads_rows(&db, leads, window, &mut rows).await;
    }
    // The echo again at the end: the difference shows how much the machine drifted.
    rows.push(
        echo_client
            .drive(&format!("{ECHO} (again)"), 16, window, ECHO_PATH, check)
            .await,
    );
    echo.stop().await;

    let echo_rate = |callers: usize| {
        rows.iter()
            .find(|r| r.what == ECHO && r.callers == callers)
            .map_or(f64::NAN, |r| r.rate)
    };
    let bare_of = |what: &str| -> Option<&'static str> {
        if what.starts_with("GetLead (PostgreSQL)") {
            Some("bare key read, pgbench (custom -S)")
        } else if what.starts_with("CreateLead (PostgreSQL)") {
            Some("bare INSERT + COMMIT, pgbench")
        } else {
            None
        }
    };
    println!(
        "\n{} s per row after 1 s warm-up; load client: {CONNECTIONS} HTTP/2 connections, \
         pre-encoded requests, {} runtime threads\n",
        window.measure.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| what | callers | calls/s | p50 | p99 | vs bare DB op | vs echo | server CPU per call |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in &rows {
        let vs_bare = bare_of(&row.what)
            .and_then(|bare| ratio(&rows, &row.what, bare, row.callers))
            .map_or(String::new(), |r| format!("{r:.2}×"));
        let vs_echo = if row.what.starts_with("echo") {
            String::new()
        } else {
            format!("{:.2}×", row.rate / echo_rate(row.callers))
        };
        let cpu = row
            .server_cpu_us
            .map_or(String::new(), |us| format!("{us:.0} µs"));
        println!(
            "| {} | {} | {:.0} | {:.2} ms | {:.2} ms | {vs_bare} | {vs_echo} | {cpu} |",
            row.what,
            row.callers,
            row.rate,
            row.percentile_ms(0.50),
            row.percentile_ms(0.99),
        );
    }
    for row in rows.iter().filter(|r| !r.note.is_empty()) {
        println!("\n{} at {} callers: {}", row.what, row.callers, row.note);
    }
    println!();
    let get_vs_sqlx = ratio(&rows, "GetLead (PostgreSQL)", SQLX_READ, 16);
    let get_vs_no_ping = ratio(&rows, "GetLead (PostgreSQL)", SQLX_NO_PING, 16);
    if let Some(r) = ratio(
        &rows,
        "GetLead (PostgreSQL)",
        "bare key read, pgbench (custom -S)",
        16,
    ) {
        println!(
            "GetLead / bare key read at 16: {r:.2}× pgbench, {:.2}× sqlx with the service's \
             pool settings, {:.2}× sqlx without the ping before acquire (target ≥ 0.5×)",
            get_vs_sqlx.unwrap_or(f64::NAN),
            get_vs_no_ping.unwrap_or(f64::NAN)
        );
    }
    for callers in [16, 64] {
        if let Some(r) = ratio(
            &rows,
            "CreateLead (PostgreSQL)",
            "bare INSERT + COMMIT, pgbench",
            callers,
        ) {
            println!("CreateLead / bare INSERT + COMMIT at {callers}: {r:.2}×");
        }
    }
    let echo16 = echo_rate(16);
    if echo16 < ECHO_FLOOR {
        println!(
            "WARNING: the bare echo reached {echo16:.0} calls/s at 16 callers, under \
             {ECHO_FLOOR:.0}: the load client or the machine limits the figures; do not trust \
             the ratios to the echo"
        );
    } else {
        println!(
            "echo at 16 callers: {echo16:.0} calls/s (≥ {ECHO_FLOOR:.0}: the client is not the limit)"
        );
    }
}
