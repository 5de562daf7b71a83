//! The start-up every domain service (one database, one gRPC service) shares:
//! [`Application::build`] opens and migrates the database and binds the port;
//! [`Application::run_until_stopped`] serves the routes the service gives through
//! [`DomainService::routes`] until the shutdown signal, then drains.

use std::future::Future;
use std::marker::PhantomData;

use kizuna_db::{Database, Migration};
use kizuna_settings::Settings;
use kizuna_store::{Store, Workers};
use tonic::service::Routes;

use crate::{Server, Shutdown, StartError};

/// Largest response a service encodes, whatever the request limit: list pages and event batches
/// may be larger than any request.
pub const MIN_ENCODING_LIMIT: usize = 16 * 1024 * 1024;

/// What a domain service tells the shared start-up.
pub trait DomainService: 'static {
    /// The service name used in logs, telemetry and the outbox.
    const NAME: &'static str;
    /// The fully qualified gRPC service name (health and reflection report it).
    const GRPC_SERVICE: &'static str;
    /// The service's migrations, oldest first.
    const MIGRATIONS: &'static [Migration];
    /// What the service prepares from its settings before the database opens (the gateway's
    /// clients of the domain services); `()` for most.
    type Prepared: Send + 'static;

    /// Prepares [`Self::Prepared`]; a bad setting fails the start here.
    fn prepare(settings: &Settings) -> Result<Self::Prepared, StartError>;

    /// The gRPC routes over `store`, started with `settings`. Background work the service runs
    /// beside its handlers goes into `workers` (see [`kizuna_store::Worker`]): each worker ends
    /// when [`Store::stopping`] turns true, and the start-up joins them all at shutdown within
    /// the grace period. Size the service's messages with [`message_limits`].
    fn routes(
        store: Store,
        prepared: Self::Prepared,
        settings: &Settings,
        workers: &Workers,
    ) -> Routes;
}

/// The routes of one generated tonic service server, sized by [`message_limits`]:
/// `kizuna_server::routes!(DealsServiceServer::new(api), settings)`.
#[macro_export]
macro_rules! routes {
    ($server:expr, $settings:expr) => {{
        let (decoding, encoding) = $crate::message_limits($settings);
        ::tonic::service::Routes::new(
            $server
                .max_decoding_message_size(decoding)
                .max_encoding_message_size(encoding),
        )
    }};
}

/// The decoding and encoding limits of a service's messages: the configured request limit, and
/// at least [`MIN_ENCODING_LIMIT`] for responses.
pub fn message_limits(settings: &Settings) -> (usize, usize) {
    let limit = settings.server.max_request_bytes;
    (limit, limit.max(MIN_ENCODING_LIMIT))
}

/// A built, bound domain service.
pub struct Application<S: DomainService> {
    server: Server,
    database: Database,
    store: Store,
    prepared: S::Prepared,
    service: PhantomData<fn() -> S>,
}

impl<S: DomainService> std::fmt::Debug for Application<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("server", &self.server)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl<S: DomainService> Application<S> {
    /// Prepares what the service needs from its settings, opens and migrates the database and
    /// binds the port.
    pub async fn build(settings: &Settings) -> Result<Self, StartError> {
        let prepared = S::prepare(settings)?;
        let (server, database) = crate::prepare(S::NAME, settings, S::MIGRATIONS).await?;
        let store = Store::new(database.clone(), S::NAME, server.shutdown().stopping());
        Ok(Self {
            server,
            database,
            store,
            prepared,
            service: PhantomData,
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
        let workers = Workers::default();
        let store = self.store.clone();
        let shutdown = self.server.shutdown().clone();
        let routes = S::routes(self.store, self.prepared, self.server.settings(), &workers);
        let grace = std::time::Duration::from_secs(self.server.settings().server.grace_period_secs);
        let served = self
            .server
            .run(routes, &[S::GRPC_SERVICE], Some(self.database), signal)
            .await;
        // The server has stopped; make sure the workers are told too (a transport failure ends
        // `run` without the signal), then give them the grace period.
        shutdown.trigger();
        workers.join(grace).await;
        store.join_background(grace).await;
        served?;
        Ok(())
    }

    /// Applies the service's migrations to the configured database; how many were applied.
    pub async fn migrate(settings: &Settings) -> Result<usize, StartError> {
        crate::migrate(settings, S::MIGRATIONS).await
    }
}
