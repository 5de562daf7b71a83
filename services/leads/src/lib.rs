//! The leads service (MA): captures leads, records their activities and keeps scoring models.
//!
//! [`Application::build`] opens the database, migrates it and binds the port;
//! [`Application::run_until_stopped`] serves until the shutdown signal. The gRPC handlers in
//! [`grpc`] are a thin layer over the domain folders: [`capture`] (leads, normalization and
//! duplicate detection), [`activities`], [`scoring`], [`segments`] (saved lead filters evaluated live) and [`stages`] (lifecycle stages, their
//! history and scoring on ingest).

pub mod activities;
pub mod capture;
pub mod error;
pub mod grpc;
pub mod migrations;
pub mod scoring;
pub mod segments;
pub mod stages;
pub mod tables;

use std::future::Future;

use kizuna_db::Database;
use kizuna_proto::leads::leads_service_server::LeadsServiceServer;
use kizuna_server::{Server, Shutdown, StartError};
use kizuna_settings::Settings;
use kizuna_store::Store;

/// The service name used in logs, telemetry and the outbox.
pub const SERVICE: &str = "leads";
/// The fully qualified gRPC service name.
pub const GRPC_SERVICE: &str = "kizuna.leads.v1.LeadsService";

/// A built, bound leads service.
#[derive(Debug)]
pub struct Application {
    server: Server,
    database: Database,
    store: Store,
}

impl Application {
    /// Opens and migrates the database and binds the port.
    pub async fn build(settings: &Settings) -> Result<Self, StartError> {
        let (server, database) =
            kizuna_server::prepare(SERVICE, settings, migrations::MIGRATIONS).await?;
        let store = Store::new(database.clone(), SERVICE, server.shutdown().stopping());
        Ok(Self {
            server,
            database,
            store,
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
        let leads = self.server.settings().leads.clone();
        let stopping = self.server.shutdown().stopping();
        stages::scores::spawn_flusher(
            self.store.clone(),
            std::time::Duration::from_millis(leads.score_flush_interval_ms),
            stopping.clone(),
        );
        let jobs = scoring::jobs::Runner::new(self.store.clone(), leads);
        jobs.clone().spawn(stopping);
        let service = LeadsServiceServer::new(grpc::LeadsApi::new(self.store, jobs))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit.max(16 * 1024 * 1024));
        let routes = tonic::service::Routes::new(service);
        self.server
            .run(routes, &[GRPC_SERVICE], Some(self.database), signal)
            .await?;
        Ok(())
    }
}

/// Applies the leads migrations to the configured database.
pub async fn migrate(settings: &Settings) -> Result<usize, StartError> {
    kizuna_server::migrate(settings, migrations::MIGRATIONS).await
}
