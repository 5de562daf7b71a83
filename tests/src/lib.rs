//! Test harness: starts the real services on port 0 against fresh databases (a temporary SQLite
//! file, or a new UUID-named PostgreSQL database) and hands out authenticated clients.
//!
//! The databases, [`Backend`] and [`both_backends!`] come from `kizuna-testing` (re-exported
//! here): PostgreSQL is `KIZUNA_TEST_DATABASE_URL` (an admin URL such as
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
pub use kizuna_testing::{Backend, TestDb, both_backends, postgres_admin_url};
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The key every test server signs and verifies tokens with.
pub const SIGNING_KEY: &str = "test-signing-key-test-signing-key-0123456789";

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
    settings.leads.score_flush_interval_ms = 200;
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
        let leads_settings = settings_for(&leads_db.url);
        let leads = spawn_leads(leads_db, leads_settings).await;
        let deals_settings = settings_for(&deals_db.url);
        let deals = spawn_deals(deals_db, deals_settings).await;
        let accounts_settings = settings_for(&accounts_db.url);
        let accounts = spawn_accounts(accounts_db, accounts_settings).await;
        let mut gateway_settings = settings_for(&gateway_db.url);
        gateway_settings.gateway.leads_url = format!("http://127.0.0.1:{}", leads.port);
        gateway_settings.gateway.deals_url = format!("http://127.0.0.1:{}", deals.port);
        gateway_settings.gateway.accounts_url = format!("http://127.0.0.1:{}", accounts.port);
        let gateway = spawn_gateway(gateway_db, gateway_settings).await;
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

/// A published scoring model worth 30 points per `/pricing` page view, MQL at 50, no decay.
pub fn pricing_model() -> kizuna_proto::leads::ScoringModel {
    use kizuna_proto::leads::{ActivityKind, ScoringModel, scoring_model};
    ScoringModel {
        display_name: "Pricing interest".into(),
        engagement_rules: vec![scoring_model::EngagementRule {
            rule_id: "pricing".into(),
            activity_kind: ActivityKind::PageView as i32,
            url_contains: "/pricing".into(),
            points: 30.0,
            ..Default::default()
        }],
        half_life_days: 0.0,
        mql_score_threshold: 50.0,
        state: scoring_model::State::Published as i32,
        ..Default::default()
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
