//! Test harness: starts the real services on port 0 against fresh databases (a temporary SQLite
//! file, or a new UUID-named PostgreSQL database) and hands out authenticated clients.
//!
//! PostgreSQL comes from `KIZUNA_TEST_DATABASE_URL` (an admin URL such as
//! `postgres://postgres@127.0.0.1:5432/postgres`) or the standard local server. When it cannot
//! be reached the PostgreSQL variant of a test is skipped with a message, unless
//! `KIZUNA_TEST_POSTGRES=required` (CI sets it), in which case it fails.

use std::time::Duration;

use kizuna_auth::Authenticator;
use kizuna_proto::accounts::accounts_service_client::AccountsServiceClient;
use kizuna_proto::deals::deals_service_client::DealsServiceClient;
use kizuna_proto::gateway::gateway_service_client::GatewayServiceClient;
use kizuna_proto::leads::leads_service_client::LeadsServiceClient;
use kizuna_server::{Shutdown, StartError};
use kizuna_settings::{Secret, Settings};
use sqlx::Connection;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The key every test server signs and verifies tokens with.
pub const SIGNING_KEY: &str = "test-signing-key-test-signing-key-0123456789";

/// Which database engine a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A temporary SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// Runs an async test body once per backend: `both_backends!(name, body_fn)` where
/// `body_fn: async fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body($crate::Backend::Postgres).await
            }
        }
    };
}

/// The admin URL of the test PostgreSQL server.
pub fn postgres_admin_url() -> String {
    std::env::var("KIZUNA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn postgres_required() -> bool {
    std::env::var("KIZUNA_TEST_POSTGRES").is_ok_and(|v| v == "required")
}

/// A fresh database; dropped (PostgreSQL) or deleted (SQLite) with the value.
#[derive(Debug)]
pub struct TestDb {
    /// URL the service connects with.
    pub url: String,
    /// PostgreSQL database name, if any.
    pub pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Creates a fresh database, or `None` when PostgreSQL is unavailable and not required.
    pub async fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/test.db", dir.path().display());
                Some(Self {
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let connect = tokio::time::timeout(
                    Duration::from_secs(5),
                    sqlx::PgConnection::connect(&admin),
                )
                .await;
                let mut conn = match connect {
                    Ok(Ok(conn)) => conn,
                    other => {
                        let why = match other {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".into(),
                        };
                        assert!(
                            !postgres_required(),
                            "PostgreSQL is required but unreachable at {admin}: {why}"
                        );
                        eprintln!("skipping the PostgreSQL variant: {admin} unreachable ({why})");
                        return None;
                    }
                };
                let name = format!("kizuna_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let base = admin
                    .rsplit_once('/')
                    .map_or(admin.as_str(), |(base, _)| base);
                Some(Self {
                    url: format!("{base}/{name}"),
                    pg_name: Some(name),
                    _dir: None,
                })
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop the database from a thread of its own: Drop cannot await, and the test's runtime
        // may be shutting down.
        let admin = postgres_admin_url();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// Settings for a test server: port 0, the test key, quick health probes.
pub fn settings_for(url: &str) -> Settings {
    let mut settings = Settings::load(None).expect("default settings");
    settings.server.host = "127.0.0.1".into();
    settings.server.port = 0;
    settings.server.grace_period_secs = 5;
    settings.database.url = Secret::new(url);
    settings.database.max_connections = 5;
    settings.database.health_interval_secs = 1;
    settings.auth.signing_key = Secret::new(SIGNING_KEY);
    settings.validate().expect("valid test settings");
    settings
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone, Debug)]
pub struct Bearer(pub Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| tonic::Status::internal("bad token"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// An authenticated channel.
pub type Authed = InterceptedService<Channel, Bearer>;

/// The test signing authority.
pub fn authority() -> Authenticator {
    Authenticator::new(SIGNING_KEY.as_bytes(), "kizuna", "kizuna")
}

/// A token with `scopes`, valid for an hour.
pub fn token(scopes: &[&str]) -> String {
    authority()
        .issue("test", scopes, Duration::from_secs(3600))
        .expect("token")
}

/// A plaintext channel to `port` on loopback.
pub async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// One running service.
#[derive(Debug)]
pub struct Running {
    /// Its port.
    pub port: u16,
    /// Stops it.
    pub shutdown: Shutdown,
    /// Completes when it has stopped.
    pub handle: JoinHandle<Result<(), StartError>>,
    /// Its database (kept alive while the service runs).
    pub db: TestDb,
}

impl Running {
    /// Stops the service and waits until it has drained.
    pub async fn stop(self) -> TestDb {
        self.shutdown.trigger();
        let result = tokio::time::timeout(Duration::from_secs(20), self.handle).await;
        result
            .expect("service stops in time")
            .expect("join")
            .expect("service ran cleanly");
        self.db
    }
}

macro_rules! spawn_fn {
    ($fn_name:ident, $app:path) => {
        /// Starts the service on port 0 against `db`.
        pub async fn $fn_name(db: TestDb, settings: Settings) -> Running {
            let app = <$app>::build(&settings).await.expect("service builds");
            let port = app.port();
            let shutdown = app.shutdown();
            let handle = tokio::spawn(app.run_until_stopped(std::future::pending()));
            Running {
                port,
                shutdown,
                handle,
                db,
            }
        }
    };
}

spawn_fn!(spawn_leads, kizuna_leads::Application);
spawn_fn!(spawn_deals, kizuna_deals::Application);
spawn_fn!(spawn_accounts, kizuna_accounts::Application);
spawn_fn!(spawn_gateway, kizuna_gateway::Application);

/// All four services, each with its own fresh database, and admin clients.
#[derive(Debug)]
pub struct Suite {
    /// The leads service.
    pub leads: Running,
    /// The deals service.
    pub deals: Running,
    /// The accounts service.
    pub accounts: Running,
    /// The gateway.
    pub gateway: Running,
    /// Admin token.
    pub token: String,
}

impl Suite {
    /// Starts the suite on `backend`, or `None` when that backend is unavailable (see module doc).
    pub async fn start(backend: Backend) -> Option<Self> {
        kizuna_telemetry::init_for_tests();
        let leads_db = TestDb::create(backend).await?;
        let deals_db = TestDb::create(backend).await?;
        let accounts_db = TestDb::create(backend).await?;
        let gateway_db = TestDb::create(backend).await?;
        let leads = spawn_leads(leads_db.clone_url(), settings_for(&leads_db.url))
            .await
            .with_db(leads_db);
        let deals = spawn_deals(deals_db.clone_url(), settings_for(&deals_db.url))
            .await
            .with_db(deals_db);
        let accounts = spawn_accounts(accounts_db.clone_url(), settings_for(&accounts_db.url))
            .await
            .with_db(accounts_db);
        let mut gateway_settings = settings_for(&gateway_db.url);
        gateway_settings.gateway.leads_url = format!("http://127.0.0.1:{}", leads.port);
        gateway_settings.gateway.deals_url = format!("http://127.0.0.1:{}", deals.port);
        gateway_settings.gateway.accounts_url = format!("http://127.0.0.1:{}", accounts.port);
        let gateway = spawn_gateway(gateway_db.clone_url(), gateway_settings)
            .await
            .with_db(gateway_db);
        Some(Self {
            leads,
            deals,
            accounts,
            gateway,
            token: token(&["admin"]),
        })
    }

    /// An admin leads client.
    pub async fn leads(&self) -> LeadsServiceClient<Authed> {
        LeadsServiceClient::with_interceptor(
            channel(self.leads.port).await,
            Bearer(Some(self.token.clone())),
        )
    }
    /// An admin deals client.
    pub async fn deals(&self) -> DealsServiceClient<Authed> {
        DealsServiceClient::with_interceptor(
            channel(self.deals.port).await,
            Bearer(Some(self.token.clone())),
        )
    }
    /// An admin accounts client.
    pub async fn accounts(&self) -> AccountsServiceClient<Authed> {
        AccountsServiceClient::with_interceptor(
            channel(self.accounts.port).await,
            Bearer(Some(self.token.clone())),
        )
    }
    /// An admin gateway client.
    pub async fn gateway(&self) -> GatewayServiceClient<Authed> {
        GatewayServiceClient::with_interceptor(
            channel(self.gateway.port).await,
            Bearer(Some(self.token.clone())),
        )
    }

    /// Stops every service.
    pub async fn stop(self) {
        for running in [self.gateway, self.leads, self.deals, self.accounts] {
            let _ = running.stop().await;
        }
    }
}

impl TestDb {
    /// A placeholder handle carrying only the URL; the real handle is attached with
    /// [`Running::with_db`] so the database outlives the service.
    fn clone_url(&self) -> TestDb {
        TestDb {
            url: self.url.clone(),
            pg_name: None,
            _dir: None,
        }
    }
}

impl Running {
    fn with_db(mut self, db: TestDb) -> Self {
        self.db = db;
        self
    }
}

/// The field names in a status's `BadRequest` details.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// The `ErrorInfo` reason of a status.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}
