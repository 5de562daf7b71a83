//! The platform's seams: the schema gate (a database behind the binary's migrations is
//! NOT_SERVING until `kizuna migrate` has run, then SERVING without a restart) and worker
//! leases (one holder at a time, fencing that stops a holder whose lease was taken over, and a
//! stand-by taking over a dead holder within 10 s).

use std::time::Duration;

use kizuna_db::Database;
use kizuna_proto::leads::{CreateLeadRequest, Lead};
use kizuna_store::{Lease, LeaseSettings, Store, Worker, Workers};
use kizuna_tests::{Backend, Bearer, TestDb, both_backends, channel, settings_for, spawn_leads};
use tokio::sync::watch;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn status(port: u16) -> i32 {
    HealthClient::new(channel(port).await)
        .check(HealthCheckRequest {
            service: "kizuna.leads.v1.LeadsService".into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status
}

async fn schema_gate(backend: Backend) {
    kizuna_telemetry::init_for_tests();
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let mut settings = settings_for(&db.url);
    settings.database.migrate_on_start = false;
    let running = spawn_leads(db, settings.clone()).await;
    let port = running.port;
    // Unmigrated: the service runs but does not take traffic.
    for _ in 0..3 {
        assert_eq!(status(port).await, ServingStatus::NotServing as i32);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let applied = kizuna_leads::Application::migrate(&settings)
        .await
        .expect("kizuna migrate");
    assert!(applied > 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status(port).await != ServingStatus::Serving as i32 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "SERVING after the migration, without a restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut leads = kizuna_proto::leads::leads_service_client::LeadsServiceClient::with_interceptor(
        channel(port).await,
        Bearer(Some(kizuna_tests::token(&["admin"]))),
    );
    leads
        .create_lead(CreateLeadRequest {
            lead: Some(Lead {
                email: "gate@example.jp".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("calls work once migrated");
    running.stop().await;
}
both_backends!(unmigrated_database_serves_after_migrate, schema_gate);

async fn migrated(backend: Backend) -> Option<(TestDb, Database)> {
    kizuna_telemetry::init_for_tests();
    let test_db = TestDb::create(backend).await?;
    let settings = settings_for(&test_db.url);
    let db = Database::connect(&settings.database)
        .await
        .expect("connect");
    db.migrate(kizuna_leads::migrations::MIGRATIONS)
        .await
        .expect("migrate");
    sqlx::query("CREATE TABLE lease_test (holder TEXT NOT NULL, token BIGINT NOT NULL)")
        .execute(db.pool())
        .await
        .expect("test table");
    Some((test_db, db))
}

async fn writes(db: &Database, holder: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM lease_test WHERE holder = $1")
        .bind(holder)
        .fetch_one(db.pool())
        .await
        .expect("count")
}

/// A fenced write of `store`'s holder: the lease check, then a row naming the holder.
async fn fenced_write(
    store: &Store,
    fence: &kizuna_store::Fence,
) -> Result<(), kizuna_store::ApiError> {
    let mut tx = store.begin().await?;
    fence.check(&mut tx).await?;
    sqlx::query("INSERT INTO lease_test (holder, token) VALUES ($1, $2)")
        .bind(store.holder())
        .bind(fence.token())
        .execute(tx.conn())
        .await
        .map_err(kizuna_store::db_error)?;
    tx.commit().await
}

async fn takeover_fences_the_old_holder(backend: Backend) {
    let Some((_test_db, db)) = migrated(backend).await else {
        return;
    };
    let (_stop, stopping) = watch::channel(false);
    let a = Store::new(db.clone(), "leads", stopping.clone());
    let b = Store::new(db.clone(), "leads", stopping.clone());
    let quick = LeaseSettings {
        ttl: Duration::from_millis(800),
        renew_every: Duration::from_millis(200),
        retry_every: Duration::from_millis(100),
    };
    let lease_a = Lease::new(db.clone(), "test", a.holder(), quick);
    let lease_b = Lease::new(db.clone(), "test", b.holder(), quick);
    let fence_a = lease_a
        .try_acquire()
        .await
        .expect("acquire")
        .expect("free lease taken");
    assert!(
        lease_b.try_acquire().await.expect("acquire").is_none(),
        "held: no second holder"
    );
    fenced_write(&a, &fence_a).await.expect("the holder writes");

    // A is inside a fenced transaction when its lease expires: the takeover waits for it.
    let mut tx = a.begin().await.expect("begin");
    fence_a.check(&mut tx).await.expect("still held");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let takeover = tokio::spawn(async move { lease_b.try_acquire().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !takeover.is_finished(),
        "no takeover commits inside the holder's transaction"
    );
    sqlx::query("INSERT INTO lease_test (holder, token) VALUES ($1, $2)")
        .bind(a.holder())
        .bind(fence_a.token())
        .execute(tx.conn())
        .await
        .expect("write");
    tx.commit().await.expect("commit");
    let fence_b = takeover
        .await
        .expect("join")
        .expect("acquire")
        .expect("expired lease taken over");
    assert!(
        fence_b.token() > fence_a.token(),
        "a takeover bumps the token"
    );

    // A stalled and lost it: its next write is refused and leaves nothing.
    let error = fenced_write(&a, &fence_a).await.expect_err("fenced");
    assert!(
        matches!(error, kizuna_store::ApiError::Unavailable { .. }),
        "{error:?}"
    );
    assert!(
        !lease_a.renew(&fence_a).await.expect("renew"),
        "renewal tells A it lost"
    );
    assert_eq!(writes(&db, a.holder()).await, 2);
    fenced_write(&b, &fence_b)
        .await
        .expect("the new holder writes");
    assert_eq!(writes(&db, b.holder()).await, 1);
}
both_backends!(
    lease_takeover_fences_the_old_holder,
    takeover_fences_the_old_holder
);

/// A leased worker that writes a fenced row every 50 ms while it holds the lease.
fn writer(store: &Store) -> Worker {
    let leased = store.clone();
    Worker::leased(store, "test", LeaseSettings::default(), move |fence| {
        let store = leased.clone();
        async move {
            let mut stopping = store.stopping();
            while !*stopping.borrow() {
                let _ = fenced_write(&store, &fence).await;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stopping.changed() => {}
                }
            }
        }
    })
}

async fn standby_takes_over(backend: Backend) {
    let Some((_test_db, db)) = migrated(backend).await else {
        return;
    };
    let (stop_a, stopping_a) = watch::channel(false);
    let (stop_b, stopping_b) = watch::channel(false);
    let a = Store::new(db.clone(), "leads", stopping_a);
    let b = Store::new(db.clone(), "leads", stopping_b);
    let workers_a = Workers::default();
    workers_a.spawn(writer(&a));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while writes(&db, a.holder()).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first holder starts"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let workers_b = Workers::default();
    workers_b.spawn(writer(&b));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(writes(&db, b.holder()).await, 0, "the stand-by waits");

    // A dies: its task is gone without releasing the lease.
    workers_a.join(Duration::ZERO).await;
    let died = tokio::time::Instant::now();
    while writes(&db, b.holder()).await == 0 {
        assert!(
            died.elapsed() < Duration::from_secs(10),
            "the stand-by takes over within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // (A COMMIT already sent when A died may still land: count from the takeover on.)
    let written_by_a = writes(&db, a.holder()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        writes(&db, a.holder()).await,
        written_by_a,
        "nothing more from the dead holder"
    );

    // A clean stop releases the lease: a new stand-by takes over at once, not after the TTL.
    let (_stop_c, stopping_c) = watch::channel(false);
    let c = Store::new(db.clone(), "leads", stopping_c);
    let workers_c = Workers::default();
    workers_c.spawn(writer(&c));
    let _ = stop_b.send(true);
    workers_b.join(Duration::from_secs(5)).await;
    let stopped = tokio::time::Instant::now();
    while writes(&db, c.holder()).await == 0 {
        assert!(
            stopped.elapsed() < Duration::from_secs(4),
            "a released lease is taken at the next retry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_a.send(true);
    workers_c.join(Duration::ZERO).await;
}
both_backends!(lease_standby_takes_over_a_dead_holder, standby_takes_over);

/// Version 1 of a stored message, as an older release knows it.
#[derive(Clone, PartialEq, prost::Message)]
struct NoteV1 {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    etag: String,
    #[prost(message, optional, tag = "3")]
    create_time: Option<prost_types::Timestamp>,
    #[prost(message, optional, tag = "4")]
    update_time: Option<prost_types::Timestamp>,
    #[prost(string, tag = "5")]
    text: String,
}

/// Version 2: a newer release added `color`.
#[derive(Clone, PartialEq, prost::Message)]
struct NoteV2 {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    etag: String,
    #[prost(message, optional, tag = "3")]
    create_time: Option<prost_types::Timestamp>,
    #[prost(message, optional, tag = "4")]
    update_time: Option<prost_types::Timestamp>,
    #[prost(string, tag = "5")]
    text: String,
    #[prost(string, tag = "6")]
    color: String,
}

macro_rules! notes_table {
    ($table:ident, $message:ty) => {
        #[derive(Debug)]
        struct $table;
        impl kizuna_store::Table for $table {
            type Message = $message;
            const KIND: &'static str = "Note";
            const TABLE: &'static str = "notes";
            const COLLECTION: &'static str = "notes";
            const PARENT: Option<&'static str> = None;
            const EVENT_PREFIX: &'static str = "note";
            const PROTO_NAME: &'static str = "test.Note";
            const COLUMNS: &'static [kizuna_store::Column] = &[];
            fn values(_: &$message) -> Vec<kizuna_store::Value> {
                Vec::new()
            }
            kizuna_store::standard_meta!();
        }
    };
}
notes_table!(NotesV1, NoteV1);
notes_table!(NotesV2, NoteV2);

/// One migration list per release: the newer one has one more.
const OLD_RELEASE: &[kizuna_db::Migration] = &[kizuna_db::Migration {
    version: 1,
    description: "notes",
    sql: "",
}];
const NEW_RELEASE: &[kizuna_db::Migration] = &[
    OLD_RELEASE[0],
    kizuna_db::Migration {
        version: 2,
        description: "notes get a colour",
        sql: "",
    },
];

async fn older_release_keeps_newer_fields(backend: Backend) {
    let Some((_test_db, db)) = migrated(backend).await else {
        return;
    };
    let blob = if backend == Backend::Sqlite {
        "BLOB"
    } else {
        "BYTEA"
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE notes (id TEXT NOT NULL, parent TEXT NOT NULL, data {blob} NOT NULL, \
         version BIGINT NOT NULL, create_time BIGINT NOT NULL, update_time BIGINT NOT NULL, \
         writer_revision BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (parent, id))"
    )))
    .execute(db.pool())
    .await
    .expect("notes table");
    let (_stop, stopping) = watch::channel(false);
    let old = Store::new(db.clone().requiring(OLD_RELEASE), "leads", stopping.clone());
    let new = Store::new(db.clone().requiring(NEW_RELEASE), "leads", stopping);

    // The newer release writes a note with the new field.
    let written = new
        .create::<NotesV2>(
            "",
            "n1",
            NoteV2 {
                text: "first".into(),
                color: "red".into(),
                ..Default::default()
            },
            "",
        )
        .await
        .expect("create");
    // The older release reads it (without the field it does not know) ...
    let seen = old.get::<NotesV1>(&written.name).await.expect("old reads");
    assert_eq!(seen.text, "first");
    // ... but refuses to rewrite it, with an error a client retries.
    let refused = old
        .update::<NotesV1, _>(&written.name, "", |note| {
            note.text = "changed by the old release".into();
            Ok(())
        })
        .await
        .expect_err("an older release does not rewrite a newer row");
    assert!(
        matches!(refused, kizuna_store::ApiError::Unavailable { .. }),
        "{refused:?}"
    );
    let kept = new.get::<NotesV2>(&written.name).await.expect("read");
    assert_eq!((kept.text.as_str(), kept.color.as_str()), ("first", "red"));

    // Rows the older release writes stay writable by both; the newer one keeps its fields.
    let old_note = old
        .create::<NotesV1>(
            "",
            "n2",
            NoteV1 {
                text: "old".into(),
                ..Default::default()
            },
            "",
        )
        .await
        .expect("old creates");
    old.update::<NotesV1, _>(&old_note.name, "", |note| {
        note.text = "old again".into();
        Ok(())
    })
    .await
    .expect("old rewrites its own row");
    let upgraded = new
        .update::<NotesV2, _>(&old_note.name, "", |note| {
            note.color = "blue".into();
            Ok(())
        })
        .await
        .expect("new rewrites an old row");
    assert_eq!(
        (upgraded.text.as_str(), upgraded.color.as_str()),
        ("old again", "blue")
    );
    let refused = old
        .update::<NotesV1, _>(&old_note.name, "", |_| Ok(()))
        .await
        .expect_err("once the newer release wrote it, the older one leaves it alone");
    assert!(matches!(
        refused,
        kizuna_store::ApiError::Unavailable { .. }
    ));
    let kept = new.get::<NotesV2>(&old_note.name).await.expect("read");
    assert_eq!(kept.color, "blue");
}
both_backends!(
    older_release_never_erases_newer_fields,
    older_release_keeps_newer_fields
);

async fn raced_duplicates_name_the_existing(backend: Backend) {
    let Some(suite) = kizuna_tests::Suite::leads_only(backend).await else {
        return;
    };
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let port = suite.leads.port;
            let token = suite.token.clone();
            tokio::spawn(async move {
                let mut client =
                    kizuna_proto::leads::leads_service_client::LeadsServiceClient::with_interceptor(
                        channel(port).await,
                        Bearer(Some(token)),
                    );
                client
                    .create_lead(CreateLeadRequest {
                        lead: Some(Lead {
                            email: "race@example.jp".into(),
                            given_name: format!("attempt {i}"),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await
            })
        })
        .collect();
    let mut created = Vec::new();
    let mut refused = Vec::new();
    for attempt in attempts {
        match attempt.await.expect("join") {
            Ok(lead) => created.push(lead.into_inner().name),
            Err(status) => refused.push(status),
        }
    }
    assert_eq!(created.len(), 1, "one person, one lead: {refused:?}");
    for status in &refused {
        assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
        assert!(
            status.message().contains(&created[0]),
            "the refusal names the lead that holds the e-mail, whichever check caught it: {status:?}"
        );
    }
    suite.stop().await;
}
both_backends!(
    raced_duplicates_name_the_existing_lead,
    raced_duplicates_name_the_existing
);
