//! `grpc.health.v1` status driven by a database probe.
//!
//! The overall status (`""`) and each registered service are SERVING while the database
//! answers and its schema is at least the binary's, and NOT_SERVING otherwise, with the reason
//! in the log (readiness); [`LIVENESS_SERVICE`] is SERVING as
//! long as the process runs (liveness). Shutdown turns everything NOT_SERVING.
//!
//! Reachability follows the database's [`Outage`](kizuna_db::Outage) tracker: the probe
//! ([`Database::readiness`], at most [`kizuna_db::PROBE_TIMEOUT`], every
//! `database.health_interval_secs`) feeds it, and so do calls that cannot get a connection, so
//! health turns NOT_SERVING as soon as either sees the outage and SERVING at the first probe
//! that succeeds. The tracker logs the outage's start and end; this module logs a schema that
//! is behind.

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
    let mut reachable = database.outage().subscribe();
    // The last schema state read; an unreachable database leaves it as it was.
    let mut behind = None;
    note_schema(&database, &mut behind, database.readiness().await);
    let mut serving = *reachable.borrow_and_update() && behind.is_none();
    set_all(&reporter, &names, serving_status(serving)).await;
    tokio::spawn(async move {
        let mut probe = tokio::time::interval(interval);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        probe.tick().await;
        loop {
            tokio::select! {
                _ = probe.tick() => {
                    note_schema(&database, &mut behind, database.readiness().await);
                }
                changed = reachable.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = stopping.changed() => {}
            }
            if *stopping.borrow() {
                set_all(&reporter, &names, ServingStatus::NotServing).await;
                return;
            }
            let now = *reachable.borrow_and_update() && behind.is_none();
            if now != serving {
                serving = now;
                set_all(&reporter, &names, serving_status(serving)).await;
            }
        }
    });
}

/// Keeps the schema state of `readiness` in `behind` (`Some` while the schema is behind the
/// binary's), logging when it changes.
fn note_schema(database: &Database, behind: &mut Option<Readiness>, readiness: Readiness) {
    let now = match readiness {
        Readiness::Unreachable | Readiness::Busy => return,
        Readiness::Ready => None,
        schema @ Readiness::SchemaBehind { .. } => Some(schema),
    };
    if now == *behind {
        return;
    }
    match &now {
        Some(schema) => tracing::warn!(
            db.namespace = database.namespace(),
            reason = %schema,
            "health is NOT_SERVING"
        ),
        None => tracing::info!(
            db.namespace = database.namespace(),
            "database ready again: health is SERVING"
        ),
    }
    *behind = now;
}

fn serving_status(serving: bool) -> ServingStatus {
    if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}
