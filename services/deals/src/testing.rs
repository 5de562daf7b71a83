//! Test support: a migrated store on a fresh SQLite file or PostgreSQL database, and the events
//! it recorded. PostgreSQL is `KIZUNA_TEST_DATABASE_URL` or the standard local server; its
//! variants are skipped (with a note) when it cannot be reached.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kizuna_db::Database;
use kizuna_settings::{DatabaseSettings, Secret};
use kizuna_store::Store;
use sqlx::{Connection, Row};

/// Which engine a test runs on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an `async fn(Backend)` test once per backend.
macro_rules! both_backends {
    ($test:ident) => {
        mod $test {
            #[tokio::test]
            async fn sqlite() {
                super::$test($crate::testing::Backend::Sqlite).await;
            }
            #[tokio::test]
            async fn postgres() {
                super::$test($crate::testing::Backend::Postgres).await;
            }
        }
    };
}
pub(crate) use both_backends;

/// A store over a fresh, migrated database; keep the whole value alive for the test.
pub(crate) struct TestStore {
    pub store: Store,
    stop: tokio::sync::watch::Sender<bool>,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

fn admin_url() -> String {
    std::env::var("KIZUNA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh store, or `None` when PostgreSQL was asked for and cannot be reached.
pub(crate) async fn store(backend: Backend) -> Option<TestStore> {
    let (url, dir, pg_name) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("deals.db").display());
            (url, Some(dir), None)
        }
        Backend::Postgres => {
            let admin = admin_url();
            let connect =
                tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&admin))
                    .await;
            let Ok(Ok(mut conn)) = connect else {
                eprintln!("skipping the PostgreSQL variant: {admin} unreachable");
                return None;
            };
            let name = format!(
                "kizuna_deals_test_{}_{}_{}",
                std::process::id(),
                kizuna_db::now_micros(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create test database");
            let base = admin
                .rsplit_once('/')
                .map_or(admin.as_str(), |(base, _)| base);
            (format!("{base}/{name}"), None, Some(name))
        }
    };
    let settings = DatabaseSettings {
        url: Secret::new(url),
        max_connections: 4,
        acquire_timeout_secs: 10,
        migrate_on_start: true,
        health_interval_secs: 5,
    };
    let db = Database::connect(&settings).await.expect("connect");
    db.migrate(crate::migrations::MIGRATIONS)
        .await
        .expect("migrate");
    let (stop, stopping) = tokio::sync::watch::channel(false);
    Some(TestStore {
        store: Store::new(db, crate::SERVICE, stopping),
        stop,
        _dir: dir,
        pg_name,
    })
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let _ = self.stop.send(true);
        let admin = admin_url();
        // Drop cannot await and the test's runtime may be ending: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                // FORCE ends the test's own connections, still open in the test's runtime.
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// `(type, subject)` of every event after `after`, in order.
pub(crate) async fn events_after(store: &Store, after: i64) -> Vec<(String, String)> {
    sqlx::query("SELECT event_type, subject FROM outbox WHERE sequence > $1 ORDER BY sequence")
        .bind(after)
        .fetch_all(store.db().pool())
        .await
        .expect("outbox")
        .iter()
        .map(|row| {
            (
                row.try_get::<String, _>(0).expect("type"),
                row.try_get::<String, _>(1).expect("subject"),
            )
        })
        .collect()
}

/// The latest event sequence.
pub(crate) async fn last_sequence(store: &Store) -> i64 {
    sqlx::query("SELECT CAST(COALESCE(MAX(sequence), 0) AS BIGINT) FROM outbox")
        .fetch_one(store.db().pool())
        .await
        .expect("outbox")
        .try_get::<i64, _>(0)
        .expect("sequence")
}
