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

use kizuna_db::Migration;
use kizuna_proto::gateway::gateway_service_server::GatewayServiceServer;
use kizuna_server::{DomainService, ServerError, StartError};
use kizuna_settings::Settings;
use kizuna_store::{Store, Workers};
use tonic::service::Routes;

use crate::upstream::Upstreams;

/// The service name used in logs, telemetry and the outbox.
pub const SERVICE: &str = "gateway";
/// The fully qualified gRPC service name.
pub const GRPC_SERVICE: &str = "kizuna.gateway.v1.GatewayService";

/// The gateway as the shared start-up ([`kizuna_server::Application`]) sees it.
#[derive(Debug)]
pub struct Gateway;

impl DomainService for Gateway {
    const NAME: &'static str = SERVICE;
    const GRPC_SERVICE: &'static str = GRPC_SERVICE;
    const MIGRATIONS: &'static [Migration] = migrations::MIGRATIONS;
    /// Clients of the domain services, connecting on first use.
    type Prepared = Upstreams;

    /// A malformed service URL fails the start here.
    fn prepare(settings: &Settings) -> Result<Upstreams, StartError> {
        Ok(Upstreams::connect_lazy(&settings.gateway).map_err(ServerError::from)?)
    }

    fn routes(
        store: Store,
        upstreams: Upstreams,
        settings: &Settings,
        workers: &Workers,
    ) -> Routes {
        workers.spawn(upstreams.balancer(store.stopping()));
        kizuna_server::routes!(
            GatewayServiceServer::new(grpc::GatewayApi::new(store, upstreams)),
            settings
        )
    }
}

/// A built, bound gateway: [`Application::build`](kizuna_server::Application::build) prepares
/// the clients of the domain services, opens and migrates the database and binds the port,
/// [`Application::run_until_stopped`](kizuna_server::Application::run_until_stopped) serves.
pub type Application = kizuna_server::Application<Gateway>;
