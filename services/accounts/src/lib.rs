//! The accounts service (CRM): customer accounts with their hierarchies, orders (purchase
//! history) and support cases.
//!
//! [`Application::build`] opens the database, migrates it and binds the port;
//! [`Application::run_until_stopped`] serves until the shutdown signal. The gRPC handlers in
//! [`grpc`] are a thin layer over the domain folders: [`accounts`] (accounts, hierarchy and
//! normalization), [`orders`] (line items, totals, idempotency by external order id) and
//! [`cases`] (SLA due times and resolution).

pub mod accounts;
pub mod cases;
pub mod error;
pub mod grpc;
pub mod migrations;
pub mod orders;
pub mod tables;

#[cfg(test)]
mod store_tests;

use kizuna_db::Migration;
use kizuna_proto::accounts::accounts_service_server::AccountsServiceServer;
use kizuna_server::{DomainService, StartError};
use kizuna_settings::Settings;
use kizuna_store::{Store, Workers};
use tonic::service::Routes;

/// The service name used in logs, telemetry and the outbox.
pub const SERVICE: &str = "accounts";
/// The fully qualified gRPC service name.
pub const GRPC_SERVICE: &str = "kizuna.accounts.v1.AccountsService";

/// The accounts service as the shared start-up ([`kizuna_server::Application`]) sees it.
#[derive(Debug)]
pub struct Accounts;

impl DomainService for Accounts {
    const NAME: &'static str = SERVICE;
    const GRPC_SERVICE: &'static str = GRPC_SERVICE;
    const MIGRATIONS: &'static [Migration] = migrations::MIGRATIONS;
    type Prepared = ();

    fn prepare(_settings: &Settings) -> Result<(), StartError> {
        Ok(())
    }

    fn routes(store: Store, _prepared: (), settings: &Settings, _workers: &Workers) -> Routes {
        kizuna_server::routes!(
            AccountsServiceServer::new(grpc::AccountsApi::new(store)),
            settings
        )
    }
}

/// A built, bound accounts service: [`Application::build`](kizuna_server::Application::build)
/// opens and migrates the database and binds the port,
/// [`Application::run_until_stopped`](kizuna_server::Application::run_until_stopped) serves.
pub type Application = kizuna_server::Application<Accounts>;
