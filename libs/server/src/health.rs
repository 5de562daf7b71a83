//! `grpc.health.v1` status driven by a database probe.
//!
//! The overall status (`""`) and each registered service are SERVING while the database
//! answers and its schema is at least the binary's, and NOT_SERVING otherwise, with the reason
//! in the log (readiness); [`LIVENESS_SERVICE`] is SERVING as
//! long as the process runs (liveness). Shutdown turns everything NOT_SERVING.

use std::time::Duration;

use kizuna_db::{Database, Readiness};
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Health service name that is SERVING while the process is alive, for liveness probes.
pub const LIVENESS_SERVICE: &str = "liveness";

async fn set_all(reporter: &HealthReporter, names: &[&'static str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in names {
        reporter.set_service_status(*name, status).await;
    }
}

/// Sets the initial status and spawns the probe loop.
pub(crate) async fn spawn_probe(
    reporter: HealthReporter,
    names: Vec<&'static str>,
    database: Option<Database>,
    interval: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    reporter
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    let Some(database) = database else {
        set_all(&reporter, &names, ServingStatus::Serving).await;
        tokio::spawn(async move {
            let _ = stopping.wait_for(|stop| *stop).await;
            set_all(&reporter, &names, ServingStatus::NotServing).await;
        });
        return;
    };
    let mut readiness = database.readiness().await;
    let mut up = readiness == Readiness::Ready;
    set_all(
        &reporter,
        &names,
        if up {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        },
    )
    .await;
    if !up {
        tracing::warn!(
            db.namespace = database.namespace(),
            reason = %readiness,
            "health is NOT_SERVING"
        );
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stopping.changed() => {}
            }
            if *stopping.borrow() {
                set_all(&reporter, &names, ServingStatus::NotServing).await;
                return;
            }
            let now = database.readiness().await;
            if now != readiness {
                readiness = now;
                if readiness == Readiness::Ready {
                    tracing::info!(
                        db.namespace = database.namespace(),
                        "database ready again: health is SERVING"
                    );
                } else {
                    tracing::warn!(
                        db.namespace = database.namespace(),
                        reason = %readiness,
                        "health is NOT_SERVING"
                    );
                }
            }
            let now_up = readiness == Readiness::Ready;
            if now_up != up {
                up = now_up;
                let status = if up {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                set_all(&reporter, &names, status).await;
            }
        }
    });
}
