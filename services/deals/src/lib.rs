//! The deals service (SFA): pipelines with ordered stages, deals moving through them, and the
//! contacts sales works with.
//!
//! [`Application::build`] opens the database, migrates it and binds the port;
//! [`Application::run_until_stopped`] serves until the shutdown signal. The gRPC handlers in
//! [`grpc`] are a thin layer over the domain folders: [`pipelines`] (stages, forecast
//! categories, the default pipeline), [`deals`] (amounts and line items, stage moves, won and
//! lost) and [`contacts`] (normalization and duplicate detection).

pub mod contacts;
pub mod deals;
pub mod error;
pub mod grpc;
pub mod migrations;
pub mod pipelines;
pub mod tables;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use kizuna_db::Migration;
use kizuna_proto::deals::deals_service_server::DealsServiceServer;
use kizuna_server::{DomainService, StartError};
use kizuna_settings::Settings;
use kizuna_store::{Store, Workers};
use tonic::service::Routes;

/// The service name used in logs, telemetry and the outbox.
pub const SERVICE: &str = "deals";
/// The fully qualified gRPC service name.
pub const GRPC_SERVICE: &str = "kizuna.deals.v1.DealsService";

/// The deals service as the shared start-up ([`kizuna_server::Application`]) sees it.
#[derive(Debug)]
pub struct Deals;

impl DomainService for Deals {
    const NAME: &'static str = SERVICE;
    const GRPC_SERVICE: &'static str = GRPC_SERVICE;
    const MIGRATIONS: &'static [Migration] = migrations::MIGRATIONS;
    type Prepared = ();

    fn prepare(_settings: &Settings) -> Result<(), StartError> {
        Ok(())
    }

    fn routes(store: Store, _prepared: (), settings: &Settings, _workers: &Workers) -> Routes {
        kizuna_server::routes!(
            DealsServiceServer::new(grpc::DealsApi::new(store)),
            settings
        )
    }
}

/// A built, bound deals service: [`Application::build`](kizuna_server::Application::build)
/// opens and migrates the database and binds the port,
/// [`Application::run_until_stopped`](kizuna_server::Application::run_until_stopped) serves.
pub type Application = kizuna_server::Application<Deals>;
