//! Test support: a migrated store on a fresh SQLite file or PostgreSQL database (from
//! `kizuna-testing`), and the events it recorded.

use kizuna_db::Database;
use kizuna_settings::{DatabaseSettings, Secret};
use kizuna_store::Store;
use kizuna_testing::TestDb;
use sqlx::Row;

pub(crate) use kizuna_testing::{Backend, both_backends};

/// A store over a fresh, migrated database; keep the whole value alive for the test.
pub(crate) struct TestStore {
    pub store: Store,
    // Dropped before the database: ends the store's event listener.
    _stop: tokio::sync::watch::Sender<bool>,
    _db: TestDb,
}

/// A fresh store, or `None` when PostgreSQL was asked for and cannot be reached (and is not
/// required).
pub(crate) async fn store(backend: Backend) -> Option<TestStore> {
    let test_db = TestDb::create(backend).await?;
    let settings = DatabaseSettings {
        url: Secret::new(test_db.url.clone()),
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
        _stop: stop,
        _db: test_db,
    })
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
