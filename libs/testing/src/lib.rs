//! Test support: fresh databases on both engines, removed when the test is done.
//!
//! A [`TestDb`] is a temporary SQLite file or a new UUID-named PostgreSQL database. PostgreSQL
//! comes from `KIZUNA_TEST_DATABASE_URL` (an admin URL such as
//! `postgres://postgres@127.0.0.1:5432/postgres`) or the standard local server. When it cannot be
//! reached, [`TestDb::create`] answers `None` and the PostgreSQL variant of a test is skipped with
//! a message, unless `KIZUNA_TEST_POSTGRES=required` (CI sets it), in which case it fails.
//!
//! [`both_backends!`] runs an `async fn(Backend)` test once per engine.

use std::sync::mpsc;
use std::time::Duration;

use sqlx::Connection;

/// How long creating a PostgreSQL test database may wait for the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long dropping a PostgreSQL test database may take before it is left behind.
const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// Which database engine a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A temporary SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// Runs an async test body once per backend, on a two-worker multi-thread runtime:
/// `both_backends!(name, body)` defines the tests `name::sqlite` and `name::postgres` calling
/// `body(Backend::…)`, where `body: async fn(Backend)`; `both_backends!(body)` names the module
/// after the body.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body($crate::Backend::Postgres).await
            }
        }
    };
    ($body:ident) => {
        $crate::both_backends!($body, $body);
    };
}

/// The admin URL of the test PostgreSQL server.
pub fn postgres_admin_url() -> String {
    std::env::var("KIZUNA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Whether an unreachable PostgreSQL fails the test instead of skipping it.
pub fn postgres_required() -> bool {
    std::env::var("KIZUNA_TEST_POSTGRES").is_ok_and(|v| v == "required")
}

/// A fresh database; dropped (PostgreSQL) or deleted (SQLite) with the value.
#[derive(Debug)]
pub struct TestDb {
    /// URL the service connects with.
    pub url: String,
    /// PostgreSQL database name, if any.
    pub pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Creates a fresh database, or `None` when PostgreSQL is unavailable and not required.
    pub async fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/test.db", dir.path().display());
                Some(Self {
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let connect =
                    tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect(&admin))
                        .await;
                let mut conn = match connect {
                    Ok(Ok(conn)) => conn,
                    other => {
                        let why = match other {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".into(),
                        };
                        assert!(
                            !postgres_required(),
                            "PostgreSQL is required but unreachable at {admin}: {why}"
                        );
                        eprintln!("skipping the PostgreSQL variant: {admin} unreachable ({why})");
                        return None;
                    }
                };
                let name = format!("kizuna_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let _ = conn.close().await;
                let base = admin
                    .rsplit_once('/')
                    .map_or(admin.as_str(), |(base, _)| base);
                Some(Self {
                    url: format!("{base}/{name}"),
                    pg_name: Some(name),
                    _dir: None,
                })
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop cannot await, and the test's runtime may be shutting down or be the single thread
        // this runs on: drop the database from a thread with a runtime of its own. FORCE ends the
        // test's own connections, still open in the test's runtime. Neither the drop nor the wait
        // for it can hang the test: both give up after a timeout and leave the database behind.
        let admin = postgres_admin_url();
        let (done, finished) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("kizuna-test-db-drop".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                let dropped = runtime.block_on(async {
                    tokio::time::timeout(DROP_TIMEOUT, drop_database(&admin, &name)).await
                });
                if !matches!(dropped, Ok(Ok(()))) {
                    let why = match dropped {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".into(),
                    };
                    eprintln!("test database {name} left behind: {why}");
                }
                let _ = done.send(());
            });
        if spawned.is_ok() {
            // A little longer than the drop's own timeout, for connecting and runtime start-up.
            let _ = finished.recv_timeout(DROP_TIMEOUT + Duration::from_secs(5));
        }
    }
}

async fn drop_database(admin: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    let _ = conn.close().await;
    Ok(())
}

/// A migrated store over a fresh database, for a service's own DB-backed tests.
#[derive(Debug)]
pub struct TestStore {
    /// The store.
    pub store: kizuna_store::Store,
    // Dropped before the database: ends the store's background work.
    _stop: tokio::sync::watch::Sender<bool>,
    _db: TestDb,
}

impl std::ops::Deref for TestStore {
    type Target = kizuna_store::Store;
    fn deref(&self) -> &kizuna_store::Store {
        &self.store
    }
}

/// A fresh `backend` database migrated with `migrations`, and a store for `service` over it;
/// `None` when PostgreSQL is unavailable and not required (see [`TestDb::create`]).
pub async fn migrated_store(
    backend: Backend,
    service: &'static str,
    migrations: &[kizuna_db::Migration],
) -> Option<TestStore> {
    let test_db = TestDb::create(backend).await?;
    let mut settings = kizuna_settings::Settings::load(None)
        .expect("default settings")
        .database;
    settings.url = kizuna_settings::Secret::new(test_db.url.clone());
    settings.max_connections = 4;
    settings.acquire_timeout_secs = 10;
    let db = kizuna_db::Database::connect(&settings)
        .await
        .expect("connect")
        .requiring(migrations);
    db.migrate(migrations).await.expect("migrate");
    let (stop, stopping) = tokio::sync::watch::channel(false);
    Some(TestStore {
        store: kizuna_store::Store::new(db, service, stopping),
        _stop: stop,
        _db: test_db,
    })
}
