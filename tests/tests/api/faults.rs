//! Faults on the database, as an operator meets them: concurrent streams sharing request ids,
//! a database that refuses or stops answering connections (a TCP proxy the test controls sits
//! between the service and PostgreSQL), and a backend terminated in the middle of a call.
//!
//! What must hold: shared request ids replay row by row and never fail a stream; during an
//! outage every call answers UNAVAILABLE (reason DATABASE_UNAVAILABLE, with RetryInfo) within
//! its 2 s deadline; health turns NOT_SERVING within 2 s of the cut and SERVING within 2 s of the
//! repair; nothing acknowledged is lost; a call whose backend was terminated answers UNAVAILABLE
//! and its retry (same request id) records it once.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kizuna_proto::leads::leads_service_client::LeadsServiceClient;
use kizuna_proto::leads::*;
use kizuna_tests::{
    Authed, Backend, Bearer, Running, TestDb, both_backends, channel, reason, settings_for,
    spawn_leads, token,
};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

/// The deadline of every unary call during an outage.
const DEADLINE: Duration = Duration::from_secs(2);
/// How soon health must follow the database.
const HEALTH_WITHIN: Duration = Duration::from_secs(2);

/// Held by each test of this module: they measure answers against a 2 s deadline, so they do not
/// run beside each other's thousands of rows on a small machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// A TCP proxy between the service and PostgreSQL.

/// What the proxy does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Forwards bytes both ways.
    Pass,
    /// Closes every connection and stops listening (new connections are refused).
    Refuse,
    /// Accepts new connections but forwards nothing, on new and existing connections alike
    /// (a network partition); forwarding resumes on `Pass`.
    Hang,
}

struct Proxy {
    port: u16,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (mode, watching) = watch::channel(Mode::Pass);
        let task = tokio::spawn(serve(listener, port, upstream, watching));
        Self { port, mode, task }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Relays end when the mode sender goes away.
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    port: u16,
    upstream: String,
    mut mode: watch::Receiver<Mode>,
) {
    let mut listener = Some(listener);
    loop {
        let current = *mode.borrow_and_update();
        if current == Mode::Refuse {
            listener = None;
        } else if listener.is_none() {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(bound) => listener = Some(bound),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        match &listener {
            Some(bound) => tokio::select! {
                accepted = bound.accept() => {
                    if let Ok((socket, _)) = accepted {
                        tokio::spawn(relay(socket, upstream.clone(), mode.clone()));
                    }
                }
                changed = mode.changed() => if changed.is_err() { return },
            },
            None => {
                if mode.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Waits while the proxy hangs; whether it passes (false: refuse, or the proxy is gone).
async fn passing(mode: &mut watch::Receiver<Mode>) -> bool {
    match mode.wait_for(|m| *m != Mode::Hang).await {
        Ok(m) => *m == Mode::Pass,
        Err(_) => false,
    }
}

async fn relay(client: TcpStream, upstream: String, mut mode: watch::Receiver<Mode>) {
    if !passing(&mut mode).await {
        return;
    }
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // When either direction ends, both sockets close.
    tokio::select! {
        () = pump(client_read, server_write, mode.clone()) => {}
        () = pump(server_read, client_write, mode) => {}
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = mode.wait_for(|m| *m == Mode::Refuse) => return,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !passing(&mut mode).await || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// `url` with its host and port replaced by the proxy's; and the original `host:port`.
fn through_proxy(url: &str, port: u16) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (user, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (format!("{user}@"), host),
        None => (String::new(), authority),
    };
    let upstream = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    (format!("{scheme}://{user}127.0.0.1:{port}{path}"), upstream)
}

// ---------------------------------------------------------------------------------------------
// Helpers.

async fn connect(port: u16) -> LeadsServiceClient<Authed> {
    LeadsServiceClient::with_interceptor(channel(port).await, Bearer(Some(token(&["admin"]))))
}

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(DEADLINE);
    request
}

fn new_lead(id: &str) -> CreateLeadRequest {
    CreateLeadRequest {
        lead: Some(Lead {
            email: format!("{id}@example.jp"),
            ..Default::default()
        }),
        lead_id: id.into(),
        request_id: format!("create-{id}"),
    }
}

fn page_view(parent: &str, request_id: &str) -> TrackActivityRequest {
    TrackActivityRequest {
        parent: parent.into(),
        activity: Some(Activity {
            kind: ActivityKind::PageView as i32,
            url: "https://example.jp/pricing".into(),
            ..Default::default()
        }),
        request_id: request_id.into(),
    }
}

async fn health_status(health: &mut HealthClient<tonic::transport::Channel>) -> i32 {
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

/// Polls health until it is `wanted`; how long that took (panics after `limit`).
async fn health_turns(
    health: &mut HealthClient<tonic::transport::Channel>,
    wanted: ServingStatus,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        if health_status(health).await == wanted as i32 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "health never became {wanted:?} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Asserts that a call made during an outage answered UNAVAILABLE within its deadline, with
/// the reason and retry information a client acts on.
fn assert_unavailable<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, tonic::Status>,
    took: Duration,
) {
    let status = match result {
        Ok(answer) => panic!("{what} succeeded during an outage: {answer:?}"),
        Err(status) => status,
    };
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "{what} during an outage: {status:?}"
    );
    assert!(took < DEADLINE, "{what} answered after {took:?}");
    assert_eq!(
        reason(&status),
        "DATABASE_UNAVAILABLE",
        "{what}: {status:?}"
    );
    let retry = status.get_error_details();
    let delay = retry
        .retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or_else(|| panic!("{what}: no RetryInfo in {status:?}"));
    assert!(delay > Duration::ZERO, "{what}: retry delay {delay:?}");
}

/// What some rounds of calls did: the lead ids tried (to retry later), the next round number,
/// the slowest answer of each call, and how many of the calls answered at once.
#[derive(Debug, Default)]
struct Rounds {
    tried: Vec<String>,
    next: usize,
    slowest: BTreeMap<&'static str, Duration>,
    calls: usize,
    at_once: usize,
}

/// An answer this quick did not wait for the database.
const AT_ONCE: Duration = Duration::from_millis(500);

/// One call of each kind, all with a 2 s deadline, at once; each must answer UNAVAILABLE in
/// time. `round` makes ids unique; the lead id tried and how long each call took are returned.
async fn outage_round(
    client: &LeadsServiceClient<Authed>,
    known_lead: &str,
    round: usize,
) -> (String, Vec<(&'static str, Duration)>) {
    let tried = format!("outage-{round}");
    let mut calls = Vec::new();
    macro_rules! call {
        ($what:expr, $client:ident, $body:expr) => {{
            let mut $client = client.clone();
            calls.push(tokio::spawn(async move {
                let started = Instant::now();
                let result = $body.await.map(|_| ());
                let took = started.elapsed();
                assert_unavailable($what, result, took);
                ($what, took)
            }));
        }};
    }
    let lead = known_lead.to_owned();
    let id = tried.clone();
    call!("CreateLead", c, c.create_lead(timed(new_lead(&id))));
    let name = lead.clone();
    call!("GetLead", c, c.get_lead(timed(GetLeadRequest { name })));
    call!(
        "ListLeads",
        c,
        c.list_leads(timed(ListLeadsRequest::default()))
    );
    let name = lead.clone();
    call!(
        "UpdateLead",
        c,
        c.update_lead(timed(UpdateLeadRequest {
            lead: Some(Lead {
                name,
                company: "Outage KK".into(),
                ..Default::default()
            }),
            update_mask: None,
        }))
    );
    let (parent, request_id) = (lead.clone(), format!("outage-activity-{round}"));
    call!(
        "TrackActivity",
        c,
        c.track_activity(timed(page_view(&parent, &request_id)))
    );
    let name = lead.clone();
    call!(
        "GetLeadScore",
        c,
        c.get_lead_score(timed(GetLeadScoreRequest { name, as_of: None }))
    );
    let parent = lead.clone();
    call!(
        "ListStageChanges",
        c,
        c.list_stage_changes(timed(ListStageChangesRequest {
            parent,
            ..Default::default()
        }))
    );
    let email = format!("capture-{round}@example.jp");
    call!(
        "CaptureLead",
        c,
        c.capture_lead(timed(CaptureLeadRequest {
            lead: Some(Lead {
                email,
                ..Default::default()
            }),
            request_id: format!("capture-{round}"),
        }))
    );
    let mut took = Vec::new();
    for call in calls {
        took.push(call.await.expect("call task"));
    }
    (tried, took)
}

/// Runs whole call rounds from round `first` until `until` has finished (and re-raises its
/// panic).
async fn rounds_until(
    client: &LeadsServiceClient<Authed>,
    known_lead: &str,
    first: usize,
    until: tokio::task::JoinHandle<()>,
) -> Rounds {
    let mut rounds = Rounds {
        next: first,
        ..Rounds::default()
    };
    loop {
        let (tried, took) = outage_round(client, known_lead, rounds.next).await;
        rounds.tried.push(tried);
        rounds.next += 1;
        for (what, duration) in took {
            let slowest = rounds.slowest.entry(what).or_default();
            *slowest = (*slowest).max(duration);
            rounds.calls += 1;
            rounds.at_once += usize::from(duration < AT_ONCE);
        }
        if until.is_finished() {
            until.await.expect("the condition held");
            return rounds;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Outages.

/// How the test cuts the service off its database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// Connections refused and existing ones dropped (the proxy).
    Refuse,
    /// Connections accepted but nothing answered (the proxy).
    Hang,
    /// PostgreSQL refuses the database (`ALLOW_CONNECTIONS false`) and ends its backends.
    NotAccepting,
}

impl Cut {
    async fn apply(self, proxy: &Proxy, admin: &mut sqlx::PgConnection, database: &str) {
        match self {
            Cut::Refuse => proxy.set(Mode::Refuse),
            Cut::Hang => proxy.set(Mode::Hang),
            Cut::NotAccepting => {
                allow_connections(admin, database, false).await;
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                )
                .bind(database)
                .execute(&mut *admin)
                .await
                .expect("terminate the service's backends");
            }
        }
    }

    async fn repair(self, proxy: &Proxy, admin: &mut sqlx::PgConnection, database: &str) {
        match self {
            Cut::Refuse | Cut::Hang => proxy.set(Mode::Pass),
            Cut::NotAccepting => allow_connections(admin, database, true).await,
        }
    }
}

async fn allow_connections(admin: &mut sqlx::PgConnection, database: &str, allow: bool) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {database} WITH ALLOW_CONNECTIONS {allow}"
    )))
    .execute(admin)
    .await
    .expect("ALTER DATABASE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_answer_unavailable_within_the_deadline() {
    kizuna_telemetry::init_for_tests();
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let name = db.pg_name.clone().expect("postgres database");
    let (_, upstream) = through_proxy(&db.url, 0);
    let proxy = Proxy::start(upstream).await;
    let (url, _) = through_proxy(&db.url, proxy.port);
    let running = spawn_leads(db, settings_for(&url)).await;
    let mut health = HealthClient::new(channel(running.port).await);
    health_turns(&mut health, ServingStatus::Serving, Duration::from_secs(10)).await;
    let mut client = connect(running.port).await;

    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let id = format!("before-{i}");
        client.create_lead(new_lead(&id)).await.expect("create");
        acknowledged.push(id);
    }
    let known = "leads/before-0".to_owned();
    let mut watch = client
        .watch_events(WatchEventsRequest {
            after_sequence: 0,
            types: Vec::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut seen = 0;
    while seen < acknowledged.len() {
        watch
            .next()
            .await
            .expect("event")
            .expect("event before the outage");
        seen += 1;
    }

    let mut tried = Vec::new();
    let mut round = 0;
    let mut admin = sqlx::PgConnection::connect(&kizuna_tests::postgres_admin_url())
        .await
        .expect("admin");
    for cut in [Cut::Refuse, Cut::Hang, Cut::NotAccepting] {
        cut.apply(&proxy, &mut admin, &name).await;
        let started = Instant::now();
        // Calls from the first instant of the outage, while health is polled.
        let mut probe = health.clone();
        let turned = tokio::spawn(async move {
            let took = health_turns(&mut probe, ServingStatus::NotServing, HEALTH_WITHIN).await;
            eprintln!("{cut:?}: NOT_SERVING {took:?} after the cut");
        });
        let early = rounds_until(&client, &known, round, turned).await;
        tried.extend(early.tried);
        eprintln!(
            "{cut:?}: slowest answers until NOT_SERVING: {:?}",
            early.slowest
        );
        // And on, now that the outage is known.
        let later = tokio::spawn(tokio::time::sleep(Duration::from_millis(2_500)));
        let known_down = rounds_until(&client, &known, early.next, later).await;
        tried.extend(known_down.tried);
        round = known_down.next;
        eprintln!(
            "{cut:?}: slowest answers after: {:?}; {} of {} at once",
            known_down.slowest, known_down.at_once, known_down.calls
        );
        // Once the outage is known calls fail fast; one call a second may try the database.
        assert!(
            known_down.at_once * 10 >= known_down.calls * 9,
            "{cut:?}: only {} of {} calls answered at once while the outage was known",
            known_down.at_once,
            known_down.calls
        );
        if cut == Cut::Refuse {
            // An event stream open across the outage ends with UNAVAILABLE.
            let ended = tokio::time::timeout(Duration::from_secs(15), watch.next())
                .await
                .expect("the event stream ends during the outage");
            match ended {
                Some(Err(status)) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    assert_eq!(reason(&status), "DATABASE_UNAVAILABLE");
                }
                other => panic!("event stream during an outage: {other:?}"),
            }
        }
        eprintln!(
            "{cut:?}: {round} rounds of calls so far, each UNAVAILABLE in time; outage {:?}",
            started.elapsed()
        );

        cut.repair(&proxy, &mut admin, &name).await;
        let took = health_turns(&mut health, ServingStatus::Serving, HEALTH_WITHIN).await;
        eprintln!("{cut:?}: SERVING {took:?} after the repair");
        let id = format!("after-{cut:?}").to_lowercase();
        client
            .create_lead(new_lead(&id))
            .await
            .expect("create after the outage");
        acknowledged.push(id);
    }

    // Nothing acknowledged is lost; a call refused during the outage, retried with its request
    // id, is recorded once.
    for id in &acknowledged {
        client
            .get_lead(GetLeadRequest {
                name: format!("leads/{id}"),
            })
            .await
            .unwrap_or_else(|e| panic!("acknowledged lead {id} lost: {e:?}"));
    }
    for id in &tried {
        let first = client.create_lead(new_lead(id)).await.expect("retry");
        let again = client.create_lead(new_lead(id)).await.expect("replay");
        assert_eq!(first.into_inner(), again.into_inner(), "{id} replays");
    }
    drop(proxy);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_backend_answers_unavailable_and_the_retry_records_once() {
    kizuna_telemetry::init_for_tests();
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let url = db.url.clone();
    let name = db.pg_name.clone().expect("postgres database");
    let running = spawn_leads(db, settings_for(&url)).await;
    let mut client = connect(running.port).await;
    let lead = client
        .create_lead(new_lead("held"))
        .await
        .expect("create")
        .into_inner();

    // Hold the lead's row so the call waits inside its transaction.
    let mut holder = sqlx::PgConnection::connect(&url).await.expect("holder");
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("SELECT id FROM leads WHERE id = 'held' FOR UPDATE")
        .execute(&mut holder)
        .await
        .expect("lock the lead");
    let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .expect("pid");

    let mut waiting = client.clone();
    let parent = lead.name.clone();
    let call = tokio::spawn(async move {
        waiting
            .track_activity(page_view(&parent, "terminated-1"))
            .await
    });
    let mut admin = sqlx::PgConnection::connect(&kizuna_tests::postgres_admin_url())
        .await
        .expect("admin");
    let started = Instant::now();
    loop {
        let blocked: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = $1 AND wait_event_type = 'Lock' AND pid <> $2",
        )
        .bind(&name)
        .bind(holder_pid)
        .fetch_one(&mut admin)
        .await
        .expect("pg_stat_activity");
        if blocked > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the call never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What a restart or a failover does to the service's connections.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> $2",
    )
    .bind(&name)
    .bind(holder_pid)
    .execute(&mut admin)
    .await
    .expect("terminate");
    let status = call
        .await
        .expect("call task")
        .expect_err("a call whose backend was terminated fails");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "DATABASE_UNAVAILABLE");
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release");

    let first = client
        .track_activity(page_view(&lead.name, "terminated-1"))
        .await
        .expect("the retry succeeds")
        .into_inner();
    let again = client
        .track_activity(page_view(&lead.name, "terminated-1"))
        .await
        .expect("a second retry replays")
        .into_inner();
    assert_eq!(first.activity, again.activity, "the first result replays");
    let listed = client
        .list_activities(ListActivitiesRequest {
            parent: lead.name.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.activities.len(), 1, "recorded once");
    running.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Concurrent streams sharing request ids.

const STREAMS: usize = 8;
const MESSAGES: usize = 16;
const ROWS_PER_MESSAGE: usize = 150;
const LEADS: usize = 24;

/// The request id of row `row` of stream `stream`: mostly its own; every 100th row shares an
/// id with all streams, and the 50th of each hundred with one other stream.
fn request_id(stream: usize, row: usize) -> String {
    match row % 100 {
        0 => format!("all-{row}"),
        50 => format!("pair-{}-{row}", stream / 2),
        _ => format!("s{stream}-{row}"),
    }
}

async fn count(url: &str, sql: &'static str) -> i64 {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("connect");
    let n: i64 = sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .expect("count");
    let _ = conn.close().await;
    n
}

async fn shared_request_ids_replay_row_by_row(backend: Backend) {
    kizuna_telemetry::init_for_tests();
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let url = db.url.clone();
    // A connection for each batch in flight (8 streams, 2 batches each): the test is about
    // shared request ids, not about batches queueing for the pool.
    let mut settings = settings_for(&url);
    settings.database.max_connections = (STREAMS * 2 + 4) as u32;
    let running: Running = spawn_leads(db, settings).await;
    let mut client = connect(running.port).await;
    let mut leads = Vec::new();
    for i in 0..LEADS {
        let lead = client
            .create_lead(new_lead(&format!("shared-{i}")))
            .await
            .expect("create lead")
            .into_inner();
        leads.push(lead.name);
    }

    let mut distinct = HashSet::new();
    let mut streams = Vec::new();
    for stream in 0..STREAMS {
        let messages: Vec<TrackActivitiesRequest> = (0..MESSAGES)
            .map(|m| TrackActivitiesRequest {
                activities: (0..ROWS_PER_MESSAGE)
                    .map(|r| {
                        let row = m * ROWS_PER_MESSAGE + r;
                        let id = request_id(stream, row);
                        distinct.insert(id.clone());
                        page_view(&leads[(stream * 7 + row) % LEADS], &id)
                    })
                    .collect(),
            })
            .collect();
        let mut client = client.clone();
        streams.push(tokio::spawn(async move {
            client
                .track_activities(futures::stream::iter(messages))
                .await
        }));
    }
    let (mut accepted, mut replayed) = (0, 0);
    for (i, stream) in streams.into_iter().enumerate() {
        let response = stream
            .await
            .expect("stream task")
            .unwrap_or_else(|e| panic!("stream {i} failed: {e:?}"))
            .into_inner();
        assert_eq!(response.failed_count, 0, "stream {i}: {response:?}");
        accepted += response.accepted_count;
        replayed += response.replayed_count;
    }
    let rows = (STREAMS * MESSAGES * ROWS_PER_MESSAGE) as i64;
    let distinct = distinct.len() as i64;
    assert_eq!(accepted + replayed, rows, "every row accepted or replayed");
    assert_eq!(accepted, distinct, "each request id recorded once");
    assert_eq!(
        count(&url, "SELECT COUNT(*) FROM activities").await,
        distinct
    );
    assert_eq!(
        count(
            &url,
            "SELECT COUNT(*) FROM idempotency WHERE method = 'CreateActivity' \
             AND length(response) > 0"
        )
        .await,
        distinct,
        "one recorded answer per request id, none left empty"
    );

    // A replay answers with the activity recorded first, whichever stream recorded it.
    for id in ["all-0", "pair-3-1550", "s5-7"] {
        let first = client
            .track_activity(page_view(&leads[0], id))
            .await
            .expect("replay")
            .into_inner()
            .activity
            .expect("activity");
        let recorded = client
            .get_activity(GetActivityRequest {
                name: first.name.clone(),
            })
            .await
            .expect("the replayed activity exists")
            .into_inner();
        assert_eq!(first, recorded, "{id}");
    }
    assert_eq!(
        count(&url, "SELECT COUNT(*) FROM activities").await,
        distinct,
        "replays record nothing"
    );
    running.stop().await;
}
both_backends!(shared_request_ids, shared_request_ids_replay_row_by_row);
