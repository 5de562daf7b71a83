//! The server every Kizuna service runs on.
//!
//! [`Server::bind`] takes the listener first (so port 0 works and the real port is known), then
//! [`Server::run`] serves the service's routes behind one tower layer that traces and
//! authorizes every call ([`layer`]) and one that bounds its database waits by its deadline
//! ([`deadline`]), next to `grpc.health.v1` (driven by a database probe, see
//! [`health`]) and server reflection (v1 and v1alpha). A shutdown signal stops new calls, ends
//! event streams, drains calls in flight within the grace period, and returns.
//!
//! [`Application`] is the start-up each service shares on top of that: prepare, open and
//! migrate the database, bind, serve the routes its [`DomainService`] gives.

pub mod app;
mod call_span;
pub mod deadline;
pub mod health;
pub mod layer;
mod limits;
pub mod shutdown;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kizuna_auth::Authenticator;
use kizuna_db::Database;
use kizuna_settings::Settings;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

pub use app::{Application, DomainService, message_limits};
pub use health::LIVENESS_SERVICE;
pub use shutdown::{Shutdown, wait_for_signal};

/// Failures starting or running a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reflection could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(String),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// A service could not start: the message says which part and why.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Database(#[from] kizuna_db::DbError),
    /// The server could not be set up.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// Opens and (when `database.migrate_on_start`) migrates the service's database, then binds its
/// port: the start-up every domain service shares.
pub async fn prepare(
    service: &'static str,
    settings: &Settings,
    migrations: &[kizuna_db::Migration],
) -> Result<(Server, Database), StartError> {
    let database = Database::connect(&settings.database)
        .await?
        .requiring(migrations);
    if settings.database.migrate_on_start {
        let applied = database.migrate(migrations).await?;
        tracing::info!(name: "kizuna.db.migrated", service, applied, "migrations checked");
    }
    let server = Server::bind(service, settings).await?;
    Ok((server, database))
}

/// Runs `migrations` against the service's database and returns how many were applied.
pub async fn migrate(
    settings: &Settings,
    migrations: &[kizuna_db::Migration],
) -> Result<usize, StartError> {
    let database = Database::connect(&settings.database).await?;
    let applied = database.migrate(migrations).await?;
    database.close().await;
    Ok(applied)
}

/// The services a port serves besides its own: health and reflection (both versions).
pub const INFRASTRUCTURE_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Reflection that lists and describes exactly what the port serves: `service_names` (their
/// files and imports only) and [`INFRASTRUCTURE_SERVICES`]. Without it every port would list
/// all four services and answer UNIMPLEMENTED for three.
fn reflection(service_names: &[&'static str]) -> tonic_reflection::server::Builder<'static> {
    let builder = tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_file_descriptor_set(kizuna_proto::file_descriptor_set_for(service_names))
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    service_names
        .iter()
        .chain(&INFRASTRUCTURE_SERVICES)
        .fold(builder, |builder, name| builder.with_service_name(*name))
}

/// A bound, not yet serving, gRPC server for one service.
pub struct Server {
    service: &'static str,
    listener: TcpListener,
    port: u16,
    settings: Settings,
    authenticator: Arc<Authenticator>,
    shutdown: Shutdown,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("service", &self.service)
            .field("port", &self.port)
            .finish()
    }
}

impl Server {
    /// Binds `settings.server.host:port` for `service` (e.g. `leads`).
    pub async fn bind(service: &'static str, settings: &Settings) -> Result<Self, ServerError> {
        let addr = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let port = listener
            .local_addr()
            .map(|a: SocketAddr| a.port())
            .unwrap_or_default();
        kizuna_telemetry::register_service(service);
        let authenticator = Arc::new(Authenticator::new(
            settings.auth.signing_key.expose().as_bytes(),
            &settings.auth.issuer,
            &settings.auth.audience,
        ));
        Ok(Self {
            service,
            listener,
            port,
            settings: settings.clone(),
            authenticator,
            shutdown: Shutdown::new(),
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The settings the server was bound with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The shutdown handle; streams should end when [`Shutdown::stopping`] turns true.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Serves `routes` until `signal` completes, then drains within the grace period.
    ///
    /// `service_names` are the fully qualified gRPC service names reported by health checks;
    /// `database`, when given, drives their SERVING / NOT_SERVING status.
    pub async fn run(
        self,
        routes: Routes,
        service_names: &[&'static str],
        database: Option<Database>,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let outage = database.as_ref().map(|db| db.outage().clone());
        health::spawn_probe(
            reporter,
            service_names.to_vec(),
            database,
            Duration::from_secs(self.settings.database.health_interval_secs),
            self.shutdown.stopping(),
        )
        .await;
        let reflection_v1 = reflection(service_names)
            .build_v1()
            .map_err(|e| ServerError::Reflection(e.to_string()))?;
        let reflection_v1alpha = reflection(service_names)
            .build_v1alpha()
            .map_err(|e| ServerError::Reflection(e.to_string()))?;
        let routes = routes
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        let grace = Duration::from_secs(self.settings.server.grace_period_secs);
        let shutdown = self.shutdown.clone();
        let (fired_tx, fired_rx) = tokio::sync::oneshot::channel::<()>();
        let service = self.service;
        let on_signal = async move {
            tokio::select! {
                () = signal => {}
                () = shutdown.wait() => {}
            }
            tracing::info!(
                name: "kizuna.server.draining",
                service,
                "shutdown requested: refusing new calls, draining calls in flight"
            );
            shutdown.trigger();
            let _ = fired_tx.send(());
        };
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let server_settings = &self.settings.server;
        let mut builder = tonic::transport::Server::builder()
            .concurrency_limit_per_connection(server_settings.concurrency_limit_per_connection)
            .http2_keepalive_interval(Some(Duration::from_secs(
                server_settings.keepalive_interval_secs,
            )))
            .http2_keepalive_timeout(Some(Duration::from_secs(
                server_settings.keepalive_timeout_secs,
            )));
        if server_settings.max_connection_age_secs > 0 {
            // Calls in flight when the age is reached may take the drain grace to finish.
            builder = builder
                .max_connection_age(Duration::from_secs(server_settings.max_connection_age_secs))
                .max_connection_age_grace(grace);
        }
        let server = builder
            .layer(layer::RpcLayer::new(
                self.service,
                self.authenticator.clone(),
            ))
            .layer(deadline::DeadlineLayer::new(self.service, outage))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, on_signal);
        tokio::pin!(server);
        tracing::info!(name: "kizuna.server.serving", service, port = self.port, "serving gRPC");
        let result = tokio::select! {
            result = &mut server => result,
            _ = fired_rx => match tokio::time::timeout(grace, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(name: "kizuna.server.grace_elapsed", service, grace_secs = grace.as_secs(), "grace period elapsed; cutting remaining calls");
                    Ok(())
                }
            },
        };
        tracing::info!(name: "kizuna.server.stopped", service, "stopped");
        Ok(result?)
    }
}
