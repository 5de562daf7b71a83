//! Database access shared by the Kizuna services: one `sqlx` pool per service, PostgreSQL or
//! SQLite chosen by the URL, embedded migrations (run at start-up or by `kizuna migrate`) and a
//! cheap liveness probe that drives the gRPC health status.
//!
//! Queries go through sqlx's `Any` driver so one SQL text serves both backends (both accept `$1`
//! placeholders). Only the types `Any` supports cross the boundary: integers, floats, text and
//! bytes; times are stored as integer microseconds since the Unix epoch (UTC).
//!
//! Faults: [`fault::classify`] is the one reading of driver errors (a lost or refused
//! connection is [`Fault::Unreachable`]); [`Outage`] tracks whether the database is reachable
//! for the calls and the health probe; [`Database::acquire`] waits for a connection no longer
//! than the call's deadline allows ([`deadline`]) and refuses at once during an outage.

pub mod deadline;
pub mod fault;
mod migrate;
mod outage;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use kizuna_settings::{DatabaseSettings, Secret};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Connection, Executor, SqlSafeStr, Transaction};

pub use fault::Fault;
pub use migrate::{Migration, MigrationError, RESOURCE_COLUMNS};
pub use outage::{FAIL_FAST_WINDOW, Outage};

/// Longest a health probe waits for the database (connecting and its query) before it counts
/// as a failure. With a probe every second, an outage is seen within 1.5 s.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Which database engine a pool talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL, the production database.
    Postgres,
    /// SQLite, the embedded default.
    Sqlite,
}

impl Backend {
    /// The OpenTelemetry `db.system.name` value.
    pub fn system_name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgresql",
            Backend::Sqlite => "sqlite",
        }
    }

    /// Reads the backend from a database URL.
    pub fn from_url(url: &str) -> Result<Self, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err(DbError::UnsupportedUrl)
        }
    }
}

/// Failures opening or migrating a database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names neither PostgreSQL nor SQLite.
    #[error("database.url must start with postgres://, postgresql:// or sqlite:")]
    UnsupportedUrl,
    /// The SQLite file's folder could not be created.
    #[error("cannot create the folder for the SQLite file: {0}")]
    Folder(#[from] std::io::Error),
    /// The driver failed.
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error(transparent)]
    Migration(#[from] MigrationError),
}

/// A service's database: the pool plus what we know about its engine.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    url: Secret,
    backend: Backend,
    namespace: String,
    statement_bytes: usize,
    options: AnyConnectOptions,
    max_connections: u32,
    acquire_timeout: Duration,
    outage: Outage,
    probe: Arc<tokio::sync::Mutex<Option<sqlx::AnyConnection>>>,
    required_schema: i64,
}

/// Whether a service's database can serve its calls now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// It answers and its schema is at least the binary's.
    Ready,
    /// It does not answer.
    Unreachable,
    /// The probe was not answered in time, but calls were served meanwhile: a slow database,
    /// not a down one; nothing is known about its schema.
    Busy,
    /// It answers, but `kizuna migrate` has not brought its schema up to this binary's.
    SchemaBehind {
        /// The newest migration applied (0: none).
        current: i64,
        /// The newest migration this binary has.
        required: i64,
    },
}

impl std::fmt::Display for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Readiness::Ready => f.write_str("ready"),
            Readiness::Unreachable => f.write_str("database unreachable"),
            Readiness::Busy => f.write_str("database slow to answer"),
            Readiness::SchemaBehind { current, required } => write!(
                f,
                "database schema is at migration {current}, this binary needs {required}: \
                 run `kizuna migrate`"
            ),
        }
    }
}

/// Bytes of bound values one multi-row statement carries at most over TCP: under Linux's
/// initial TCP send buffer (16 KiB), so a statement leaves in one write. sqlx 0.9.0 leaves
/// Nagle's algorithm on (upstream launchbadge/sqlx#4335, fixed after that release); a statement
/// sent in several writes then waits ~40 ms for the server's delayed ACK before its last part
/// goes out. Measured in `docs/BENCHMARKS.md`.
pub const TCP_STATEMENT_BYTES: usize = 12 * 1024;

/// Bytes of bound values one multi-row statement carries at most over a Unix socket or to
/// SQLite, where larger statements mean fewer round trips and no Nagle waits.
pub const LOCAL_STATEMENT_BYTES: usize = 48 * 1024;

impl Database {
    /// Opens a pool for `settings.url`, creating the SQLite file (and folder) when missing.
    ///
    /// The pool connects lazily, so a service can start (and report NOT_SERVING) while its
    /// database is still down.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let url = settings.url.expose();
        let backend = Backend::from_url(url)?;
        let mut url = url.to_owned();
        if backend == Backend::Sqlite {
            let path = sqlite_path(&url);
            if let Some(parent) = std::path::Path::new(path).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent)?;
            }
            if !url.contains("mode=") {
                url.push_str(if url.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
        }
        let namespace = namespace_of(&url, backend);
        let statement_bytes = if backend == Backend::Postgres && !unix_socket(&url) {
            TCP_STATEMENT_BYTES
        } else {
            LOCAL_STATEMENT_BYTES
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let acquire_timeout = Duration::from_secs(settings.acquire_timeout_secs);
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                             PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(options.clone());
        Ok(Self {
            pool,
            url: Secret::new(url),
            backend,
            outage: Outage::new(&namespace),
            namespace,
            statement_bytes,
            options,
            max_connections: settings.max_connections,
            acquire_timeout,
            probe: Arc::default(),
            required_schema: 0,
        })
    }

    /// This database with `migrations` as what the binary needs: [`Database::readiness`] reports
    /// [`Readiness::SchemaBehind`] until the newest of them is applied.
    pub fn requiring(mut self, migrations: &[Migration]) -> Self {
        self.required_schema = migrations.iter().map(|m| m.version).max().unwrap_or(0);
        self
    }

    /// The newest migration this binary has (0 when not set with [`Database::requiring`]): the
    /// schema revision rows written by this binary record.
    pub fn schema_revision(&self) -> i64 {
        self.required_schema
    }

    /// Whether the database answers and its schema is what the binary needs: the health
    /// probe ([`Database::ping`] reading the schema version).
    pub async fn readiness(&self) -> Readiness {
        match self.probe().await {
            Probe::Unreachable => Readiness::Unreachable,
            Probe::Busy => Readiness::Busy,
            Probe::Answered(current) if current >= self.required_schema => Readiness::Ready,
            Probe::Answered(current) => Readiness::SchemaBehind {
                current,
                required: self.required_schema,
            },
        }
    }

    /// Bytes of bound values one multi-row statement should carry at most:
    /// [`TCP_STATEMENT_BYTES`] to PostgreSQL over TCP, [`LOCAL_STATEMENT_BYTES`] otherwise.
    pub fn statement_bytes(&self) -> usize {
        self.statement_bytes
    }

    /// The pool, for queries. Prefer [`Database::acquire`], which bounds the wait by the
    /// call's deadline and refuses at once during an outage.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// What is known about the database being reachable.
    pub fn outage(&self) -> &Outage {
        &self.outage
    }

    /// A pooled connection, waiting at most the pool's acquire timeout or until the call being
    /// served must be answered ([`deadline::wait_bound`]), whichever comes first. During an
    /// outage it fails at once ([`Outage::admit`]). Errors are driver errors, classified
    /// [`Fault::Unreachable`] when no connection could be had.
    pub async fn acquire(&self) -> Result<PoolConnection<Any>, sqlx::Error> {
        if !self.outage.admit() {
            return Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the database is unreachable (outage under way)",
            )));
        }
        let wait = deadline::wait_bound(self.acquire_timeout);
        match tokio::time::timeout(wait, self.pool.acquire()).await {
            Ok(Ok(conn)) => {
                self.outage.record_success();
                Ok(conn)
            }
            Ok(Err(error)) => {
                if fault::is_unreachable(&error) && !self.pool_busy() {
                    self.outage.record_failure(&error);
                }
                Err(error)
            }
            Err(_) => {
                // Waiting while every connection is busy is load, not an outage; with room in
                // the pool, no connection within the wait means the database does not answer.
                if !self.pool_busy() {
                    self.outage.record_failure(&format_args!(
                        "no connection within {} ms (connections refused, dropped or hanging)",
                        wait.as_millis()
                    ));
                }
                Err(sqlx::Error::PoolTimedOut)
            }
        }
    }

    /// Whether every connection of the pool is in use (so a wait says nothing about the
    /// database being reachable).
    fn pool_busy(&self) -> bool {
        self.pool.size() >= self.max_connections && self.pool.num_idle() == 0
    }

    /// The connection URL (for a dedicated connection such as `LISTEN`).
    pub fn url(&self) -> &Secret {
        &self.url
    }

    /// The engine behind the pool.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The clause that row-locks what a `SELECT` reads for change: ` FOR UPDATE` on PostgreSQL,
    /// nothing on SQLite (whose write transactions already hold the database's write lock).
    pub fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// The database name (`db.namespace` in spans).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Starts a transaction that will write.
    ///
    /// On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`), so two writers queue on the
    /// busy timeout instead of one failing when it upgrades a read lock.
    ///
    /// The connection comes from [`Database::acquire`]; the `BEGIN` itself is not bounded (on
    /// SQLite it queues behind other writers for the busy timeout, which is load, not an
    /// outage).
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        let conn = self.acquire().await?;
        let statement = match self.backend {
            Backend::Sqlite => Some("BEGIN IMMEDIATE".into_sql_str()),
            Backend::Postgres => None,
        };
        // `Pool::begin` does the same over `Pool::acquire`; this one starts from our bounded
        // acquire.
        Transaction::begin(conn, statement).await
    }

    /// Whether the database answers within [`PROBE_TIMEOUT`]: the health probe.
    ///
    /// It runs on a connection of its own, outside the pool, so a pool busy with calls is not
    /// taken for an outage and the cause of a failure is the driver's own (refused, dropped,
    /// not answering). A probe connection that died (a terminated backend, a restart) is
    /// replaced within the same probe. The probe is never refused during an outage (it is how
    /// the end of one is seen) and records its outcome in [`Database::outage`].
    ///
    /// A probe that times out while calls got working connections meanwhile finds the database
    /// slow, not down: it records nothing (so a loaded database does not turn health
    /// NOT_SERVING and start refusing calls).
    pub async fn ping(&self) -> bool {
        matches!(self.probe().await, Probe::Answered(_))
    }

    /// The probe behind [`Database::ping`] and [`Database::readiness`].
    async fn probe(&self) -> Probe {
        let started = tokio::time::Instant::now().into_std();
        let mut slot = self.probe.lock().await;
        let required = self.required_schema;
        let probe = async {
            if let Some(conn) = slot.as_mut() {
                match schema_on(conn, required).await {
                    Ok(current) => return Ok(current),
                    // A dead probe connection: try a fresh one.
                    Err(error) if fault::is_unreachable(&error) => {}
                    Err(error) => return Err(error),
                }
            }
            *slot = None;
            let mut conn = sqlx::AnyConnection::connect_with(&self.options).await?;
            let current = schema_on(&mut conn, required).await?;
            *slot = Some(conn);
            Ok::<i64, sqlx::Error>(current)
        };
        let failure = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(current)) => {
                self.outage.record_success();
                return Probe::Answered(current);
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) if self.outage.answered_since(started) => {
                *slot = None;
                return Probe::Busy;
            }
            Err(_) => format!(
                "no answer to the health probe within {} ms",
                PROBE_TIMEOUT.as_millis()
            ),
        };
        *slot = None;
        self.outage.record_failure(&failure);
        Probe::Unreachable
    }

    /// Applies the migrations not yet applied, in version order.
    pub async fn migrate(&self, migrations: &[Migration]) -> Result<usize, DbError> {
        Ok(migrate::run(self, migrations).await?)
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        if let Some(conn) = self.probe.lock().await.take() {
            let _ = conn.close().await;
        }
        self.pool.close().await;
    }
}

/// What one health probe found.
enum Probe {
    /// The database answered; the newest migration applied (0 when none, or none required).
    Answered(i64),
    /// No answer in time, but calls got working connections meanwhile.
    Busy,
    /// No answer.
    Unreachable,
}

/// The newest migration applied, read on `conn` (0 when the bookkeeping table does not exist
/// yet); just `SELECT 1` when `required` is 0.
async fn schema_on(conn: &mut sqlx::AnyConnection, required: i64) -> Result<i64, sqlx::Error> {
    if required == 0 {
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        return Ok(0);
    }
    let current =
        sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(version) FROM kizuna_migrations")
            .fetch_one(&mut *conn)
            .await;
    match current {
        Ok(current) => Ok(current.unwrap_or(0)),
        // The database answered, but has no bookkeeping table yet: never migrated.
        Err(error @ sqlx::Error::Database(_)) if !fault::is_unreachable(&error) => Ok(0),
        Err(error) => Err(error),
    }
}

fn sqlite_path(url: &str) -> &str {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    rest.split('?').next().unwrap_or(rest)
}

/// Whether a PostgreSQL URL connects over a Unix socket: `?host=/dir` or a host spelled as an
/// encoded path (`postgres://user@%2Fvar%2Frun%2Fpostgresql/db`).
fn unix_socket(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let query = url.split_once('?').map_or("", |(_, q)| q);
    host.to_ascii_lowercase().starts_with("%2f")
        || query
            .split('&')
            .any(|pair| pair.starts_with("host=/") || pair.starts_with("host=%2F"))
}

fn namespace_of(url: &str, backend: Backend) -> String {
    match backend {
        Backend::Sqlite => sqlite_path(url).to_owned(),
        Backend::Postgres => url
            .rsplit('/')
            .next()
            .and_then(|tail| tail.split('?').next())
            .unwrap_or_default()
            .to_owned(),
    }
}

/// Microseconds since the Unix epoch, now (UTC). All stored times use this unit.
pub fn now_micros() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_and_namespace_come_from_the_url() {
        assert_eq!(
            Backend::from_url("postgres://u@h/leads").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("sqlite://data/leads.db").ok(),
            Some(Backend::Sqlite)
        );
        assert!(Backend::from_url("mysql://h/db").is_err());
        assert_eq!(
            namespace_of(
                "postgres://u@h:5432/leads?sslmode=disable",
                Backend::Postgres
            ),
            "leads"
        );
        assert_eq!(
            namespace_of("sqlite://data/leads.db?mode=rwc", Backend::Sqlite),
            "data/leads.db"
        );
    }

    #[test]
    fn unix_sockets_are_told_from_tcp() {
        for url in [
            "postgres://u@localhost/leads?host=/var/run/postgresql",
            "postgresql://u@%2Fvar%2Frun%2Fpostgresql/leads",
            "postgres://u@localhost/leads?sslmode=disable&host=%2Ftmp",
        ] {
            assert!(unix_socket(url), "{url}");
        }
        for url in [
            "postgres://u@127.0.0.1:5432/leads",
            "postgres://u:p@db.internal/leads?host_name=/x",
            "postgres://u@db/leads?application_name=a/b",
        ] {
            assert!(!unix_socket(url), "{url}");
        }
    }
}
