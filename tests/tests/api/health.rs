//! Health follows the database: NOT_SERVING while it is unreachable, SERVING again when it
//! returns, without a restart. The outage is real: PostgreSQL refuses and drops the service's
//! connections to its database.

use std::time::Duration;

use kizuna_tests::{Backend, TestDb, channel, postgres_admin_url, settings_for, spawn_leads};
use sqlx::Connection;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn status(port: u16, service: &str) -> i32 {
    let mut health = HealthClient::new(channel(port).await);
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status
}

async fn wait_for(port: u16, service: &str, wanted: ServingStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if status(port, service).await == wanted as i32 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{service} never became {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_database() {
    kizuna_telemetry::init_for_tests();
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let name = db.pg_name.clone().expect("postgres database");
    let settings = settings_for(&db.url);
    let running = spawn_leads(db, settings).await;
    let port = running.port;
    wait_for(port, "", ServingStatus::Serving).await;

    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .expect("admin");
    let outage = |allow: bool| format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {allow}");
    sqlx::query(sqlx::AssertSqlSafe(outage(false)))
        .execute(&mut admin)
        .await
        .expect("refuse connections");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    )))
    .execute(&mut admin)
    .await
    .expect("drop connections");
    wait_for(port, "", ServingStatus::NotServing).await;
    wait_for(
        port,
        "kizuna.leads.v1.LeadsService",
        ServingStatus::NotServing,
    )
    .await;
    assert_eq!(
        status(port, "liveness").await,
        ServingStatus::Serving as i32,
        "liveness stays up"
    );

    sqlx::query(sqlx::AssertSqlSafe(outage(true)))
        .execute(&mut admin)
        .await
        .expect("allow connections");
    wait_for(port, "", ServingStatus::Serving).await;
    wait_for(port, "kizuna.leads.v1.LeadsService", ServingStatus::Serving).await;
    running.stop().await;
}
