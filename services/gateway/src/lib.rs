//! The gateway service of Kizuna: identity and Customer 360 over the domain services.
//!
//! A subject links one person's (or company's) lead in MA, deals in SFA and account in CRM
//! ([`subjects`]); `GetSubject` with `SUBJECT_VIEW_FULL` reads those records from their services
//! at once, within the caller's deadline, and names any part it could not read. Lifecycle
//! transitions ([`transitions`]) are read here and recorded by the lifecycle reactor.
//!
//! [`Application::build`] opens the gateway's own database, migrates it, prepares lazily
//! connected clients of the domain services ([`upstream`]) and binds the port;
//! [`Application::run_until_stopped`] serves until the shutdown signal. The gRPC handlers in
//! [`grpc`] are a thin layer over the domain folders.

pub mod error;
pub mod grpc;
pub mod migrations;
pub mod subjects;
pub mod tables;
pub mod transitions;
pub mod upstream;

use std::future::Future;

use kizuna_db::Database;
use kizuna_proto::gateway::gateway_service_server::GatewayServiceServer;
use kizuna_server::{Server, ServerError, Shutdown, StartError};
use kizuna_settings::Settings;
use kizuna_store::Store;

use crate::upstream::Upstreams;

/// The service name used in logs, telemetry and the outbox.
pub const SERVICE: &str = "gateway";
/// The fully qualified gRPC service name.
pub const GRPC_SERVICE: &str = "kizuna.gateway.v1.GatewayService";

/// A built, bound gateway.
#[derive(Debug)]
pub struct Application {
    server: Server,
    database: Database,
    store: Store,
    upstreams: Upstreams,
}

impl Application {
    /// Prepares the clients of the domain services (connecting on first use), opens and
    /// migrates the database and binds the port. A malformed service URL fails here.
    pub async fn build(settings: &Settings) -> Result<Self, StartError> {
        let upstreams = Upstreams::connect_lazy(&settings.gateway).map_err(ServerError::from)?;
        let (server, database) =
            kizuna_server::prepare(SERVICE, settings, migrations::MIGRATIONS).await?;
        let store = Store::new(database.clone(), SERVICE, server.shutdown().stopping());
        Ok(Self {
            server,
            database,
            store,
            upstreams,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// A handle that stops the service when triggered.
    pub fn shutdown(&self) -> Shutdown {
        self.server.shutdown().clone()
    }

    /// Serves until `signal` completes (or the shutdown handle is triggered), then drains.
    pub async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let limit = self.server.settings().server.max_request_bytes;
        let service = GatewayServiceServer::new(grpc::GatewayApi::new(self.store, self.upstreams))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit.max(16 * 1024 * 1024));
        let routes = tonic::service::Routes::new(service);
        self.server
            .run(routes, &[GRPC_SERVICE], Some(self.database), signal)
            .await?;
        Ok(())
    }
}

/// Applies the gateway migrations to the configured database.
pub async fn migrate(settings: &Settings) -> Result<usize, StartError> {
    kizuna_server::migrate(settings, migrations::MIGRATIONS).await
}
