//! Test support: a migrated store on a fresh SQLite file or PostgreSQL database (from
//! `kizuna-testing`), the events it recorded, and the pipeline and money the tests build on.

use kizuna_proto::deals::pipeline::Stage;
use kizuna_proto::deals::{ForecastCategory, Pipeline};
use kizuna_proto::types::Money;
use kizuna_store::Store;
use sqlx::Row;

pub(crate) use kizuna_testing::{Backend, both_backends};

pub(crate) use kizuna_testing::TestStore;

/// A store over a fresh, migrated database (keep the whole value alive for the test), or
/// `None` when PostgreSQL was asked for and cannot be reached (and is not required).
pub(crate) async fn store(backend: Backend) -> Option<TestStore> {
    kizuna_testing::migrated_store(backend, crate::SERVICE, crate::migrations::MIGRATIONS).await
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

/// A stage named `id`.
pub(crate) fn stage(id: &str, probability: f64, category: ForecastCategory) -> Stage {
    Stage {
        stage_id: id.into(),
        display_name: id.into(),
        probability,
        forecast_category: category as i32,
    }
}

/// "New business": qualification (0.1), proposal (0.5), closed_won and closed_lost.
pub(crate) fn sales_pipeline(is_default: bool) -> Pipeline {
    Pipeline {
        display_name: "New business".into(),
        stages: vec![
            stage("qualification", 0.1, ForecastCategory::Pipeline),
            stage("proposal", 0.5, ForecastCategory::BestCase),
            stage("closed_won", 1.0, ForecastCategory::ClosedWon),
            stage("closed_lost", 0.0, ForecastCategory::ClosedLost),
        ],
        is_default,
        ..Pipeline::default()
    }
}

/// `amount_minor` yen.
pub(crate) fn yen(amount_minor: i64) -> Money {
    Money {
        currency_code: "JPY".into(),
        amount_minor,
    }
}
