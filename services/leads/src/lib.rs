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

use kizuna_db::Migration;
use kizuna_proto::leads::leads_service_server::LeadsServiceServer;
use kizuna_server::{DomainService, StartError};
use kizuna_settings::Settings;
use kizuna_store::{Store, Workers};
use tonic::service::Routes;

/// The service name used in logs, telemetry and the outbox.
pub const SERVICE: &str = "leads";
/// The fully qualified gRPC service name.
pub const GRPC_SERVICE: &str = "kizuna.leads.v1.LeadsService";

/// The leads service as the shared start-up ([`kizuna_server::Application`]) sees it.
#[derive(Debug)]
pub struct Leads;

impl DomainService for Leads {
    const NAME: &'static str = SERVICE;
    const GRPC_SERVICE: &'static str = GRPC_SERVICE;
    const MIGRATIONS: &'static [Migration] = migrations::MIGRATIONS;
    type Prepared = ();

    fn prepare(_settings: &Settings) -> Result<(), StartError> {
        Ok(())
    }

    fn routes(store: Store, _prepared: (), settings: &Settings, workers: &Workers) -> Routes {
        let leads = settings.leads.clone();
        let jobs = scoring::jobs::Runner::new(store.clone(), leads.clone());
        workers.spawn_all([
            scoring::scores::flusher(
                store.clone(),
                std::time::Duration::from_millis(leads.score_flush_interval_ms),
            ),
            capture::backfills(&store),
            jobs.clone().worker(),
        ]);
        kizuna_server::routes!(
            LeadsServiceServer::new(grpc::LeadsApi::new(store, jobs)),
            settings
        )
    }
}

/// A built, bound leads service: [`Application::build`](kizuna_server::Application::build)
/// opens and migrates the database and binds the port,
/// [`Application::run_until_stopped`](kizuna_server::Application::run_until_stopped) serves.
pub type Application = kizuna_server::Application<Leads>;
