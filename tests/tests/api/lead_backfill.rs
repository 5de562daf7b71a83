//! The `leads.tags` backfill: leads stored before the column existed get it from their stored
//! message, a chunk per transaction, without a new etag; a finished backfill does nothing.

use kizuna_db::Database;
use kizuna_leads::tables::Leads;
use kizuna_proto::leads::Lead;
use kizuna_store::Store;
use kizuna_tests::{Backend, TestDb, both_backends};
use sqlx::Row;

async fn tags_and_versions(db: &Database) -> Vec<(String, String, i64)> {
    sqlx::query("SELECT id, tags, version FROM leads ORDER BY id")
        .fetch_all(db.pool())
        .await
        .expect("read leads")
        .iter()
        .map(|row| {
            (
                row.try_get(0).expect("id"),
                row.try_get(1).expect("tags"),
                row.try_get(2).expect("version"),
            )
        })
        .collect()
}

async fn tags_backfilled(backend: Backend) {
    let Some(test_db) = TestDb::create(backend).await else {
        return;
    };
    let db = Database::connect(&kizuna_tests::settings_for(&test_db.url).database)
        .await
        .expect("connect");
    db.migrate(kizuna_leads::migrations::MIGRATIONS)
        .await
        .expect("migrate");
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    let store = Store::new(db.clone(), "leads", stopping.clone());

    let first = store
        .backfill_column::<Leads>("tags", 2, &stopping)
        .await
        .expect("backfill of an empty table");
    assert_eq!((first.read, first.written, first.done), (0, 0, true));

    let mut tx = store.begin().await.expect("begin");
    let rows = (0..5)
        .map(|i| {
            let lead = Lead {
                email: format!("old{i}@example.jp"),
                tags: if i % 2 == 0 {
                    vec!["vip".into(), format!("t{i}")]
                } else {
                    Vec::new()
                },
                ..Default::default()
            };
            (String::new(), format!("old-{i}"), lead)
        })
        .collect();
    tx.insert_many::<Leads>(rows).await.expect("insert");
    tx.commit().await.expect("commit");
    let current = tags_and_versions(&db).await;
    assert_eq!(current[0].1, " vip t0 ");

    // As a database upgraded from before migration 4 holds them: the column at its default.
    for sql in [
        "UPDATE leads SET tags = ''",
        "UPDATE column_backfills SET after_parent = '', after_id = '', done = 0",
    ] {
        sqlx::query(sql).execute(db.pool()).await.expect(sql);
    }
    // Two replicas starting at once take turns chunk by chunk: every row once in all.
    let (one, two) = tokio::join!(
        store.backfill_column::<Leads>("tags", 2, &stopping),
        store.backfill_column::<Leads>("tags", 2, &stopping),
    );
    let (one, two) = (one.expect("backfill"), two.expect("backfill"));
    assert!(one.done && two.done);
    assert_eq!((one.read + two.read, one.written + two.written), (5, 3));
    assert_eq!(
        tags_and_versions(&db).await,
        current,
        "tags back, etags kept"
    );

    let again = store
        .backfill_column::<Leads>("tags", 2, &stopping)
        .await
        .expect("finished backfill");
    assert_eq!((again.read, again.written, again.done), (0, 0, true));

    let unknown = store
        .backfill_column::<Leads>("no_such_column", 2, &stopping)
        .await
        .expect_err("unknown column");
    assert!(
        format!("{unknown:?}").contains("no_such_column"),
        "{unknown:?}"
    );
    db.close().await;
}
both_backends!(tags_backfill, tags_backfilled);
