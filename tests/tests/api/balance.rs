//! Gateway balancing: the gateway spreads its calls over every replica of a domain service and
//! stops calling a replica soon after it goes away.
//!
//! Three leads processes each get their own database holding a lead with the same id
//! (`leads/balanced`) but a different email, so the lead record in a FULL subject view names the
//! replica that answered, with no test hook in production code. The gateway's
//! `gateway.leads_url` lists the three.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kizuna_proto::gateway::gateway_service_client::GatewayServiceClient;
use kizuna_proto::gateway::{CreateSubjectRequest, GetSubjectRequest, Subject, SubjectView};
use kizuna_proto::leads::leads_service_client::LeadsServiceClient;
use kizuna_proto::leads::{CreateLeadRequest, Lead};
use kizuna_tests::{
    Backend, Bearer, Running, TestDb, both_backends, channel, settings_for, spawn_gateway,
    spawn_leads, token,
};

const REPLICAS: usize = 3;
const CALLS: usize = 60;

fn email(replica: usize) -> String {
    format!("replica-{replica}@example.jp")
}

/// Which replica answered each of `calls` FULL views of `subject` (`None`: the lead part was
/// missing).
async fn who_answers(
    gateway: &mut GatewayServiceClient<kizuna_tests::Authed>,
    subject: &str,
    calls: usize,
) -> Vec<Option<usize>> {
    let mut answers = Vec::with_capacity(calls);
    for _ in 0..calls {
        let view = gateway
            .get_subject(GetSubjectRequest {
                name: subject.to_owned(),
                view: SubjectView::Full as i32,
            })
            .await
            .expect("the FULL view answers")
            .into_inner();
        answers.push(
            view.lead_record
                .and_then(|lead| (0..REPLICAS).find(|replica| lead.email == email(*replica))),
        );
    }
    answers
}

fn counts(answers: &[Option<usize>]) -> HashMap<Option<usize>, usize> {
    let mut counts = HashMap::new();
    for answer in answers {
        *counts.entry(*answer).or_insert(0) += 1;
    }
    counts
}

async fn calls_spread_and_a_stopped_replica_is_dropped(backend: Backend) {
    kizuna_telemetry::init_for_tests();
    let admin = token(&["admin"]);
    let mut replicas: Vec<Option<Running>> = Vec::new();
    for replica in 0..REPLICAS {
        let Some(db) = TestDb::create(backend).await else {
            return;
        };
        let settings = settings_for(&db.url);
        let running = spawn_leads(db, settings).await;
        LeadsServiceClient::with_interceptor(
            channel(running.port).await,
            Bearer(Some(admin.clone())),
        )
        .create_lead(CreateLeadRequest {
            lead: Some(Lead {
                email: email(replica),
                ..Default::default()
            }),
            lead_id: "balanced".into(),
            ..Default::default()
        })
        .await
        .expect("lead");
        replicas.push(Some(running));
    }
    let Some(gateway_db) = TestDb::create(backend).await else {
        return;
    };
    let mut gateway_settings = settings_for(&gateway_db.url);
    gateway_settings.gateway.leads_url = replicas
        .iter()
        .flatten()
        .map(|running| format!("http://127.0.0.1:{}", running.port))
        .collect::<Vec<_>>()
        .join(", ");
    let gateway_service = spawn_gateway(gateway_db, gateway_settings).await;
    let mut gateway = GatewayServiceClient::with_interceptor(
        channel(gateway_service.port).await,
        Bearer(Some(admin.clone())),
    );
    let subject = gateway
        .create_subject(CreateSubjectRequest {
            subject: Some(Subject {
                lead: "leads/balanced".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("subject")
        .into_inner();

    // Every replica serves a share of the calls, and every call is served.
    let spread = counts(&who_answers(&mut gateway, &subject.name, CALLS).await);
    assert_eq!(spread.get(&None), None, "{spread:?}");
    for replica in 0..REPLICAS {
        assert!(
            spread.get(&Some(replica)).copied().unwrap_or(0) >= CALLS / 10,
            "replica {replica} got too few of {CALLS} calls: {spread:?}"
        );
    }

    // Stop replica 0: within a few seconds the gateway no longer calls it, and the two others
    // serve every call.
    let stopped = replicas[0].take().expect("replica 0").stop().await;
    let started = Instant::now();
    let dropped_within = Duration::from_secs(6);
    // Ten good answers in a row can come before the balancer's next refresh (the balancer
    // skips an endpoint whose connection just broke until it reconnects): count only those
    // after one full refresh, which is what drops the stopped replica.
    let refreshed =
        kizuna_gateway::upstream::REFRESH_INTERVAL + kizuna_gateway::upstream::PROBE_TIMEOUT;
    loop {
        let answers = who_answers(&mut gateway, &subject.name, 10).await;
        if started.elapsed() >= refreshed
            && answers.iter().all(|answer| matches!(answer, Some(1 | 2)))
        {
            break;
        }
        assert!(
            started.elapsed() < dropped_within,
            "replica 0 was still called (or calls failed) {dropped_within:?} after it stopped: {:?}",
            counts(&answers)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = counts(&who_answers(&mut gateway, &subject.name, CALLS).await);
    assert_eq!(
        after.get(&Some(1)).copied().unwrap_or(0) + after.get(&Some(2)).copied().unwrap_or(0),
        CALLS,
        "{after:?}"
    );
    for replica in 1..REPLICAS {
        assert!(
            after.get(&Some(replica)).copied().unwrap_or(0) >= CALLS / 10,
            "replica {replica} got too few of {CALLS} calls: {after:?}"
        );
    }

    drop(stopped);
    let _ = gateway_service.stop().await;
    for running in replicas.into_iter().flatten() {
        let _ = running.stop().await;
    }
}
both_backends!(
    gateway_balancing,
    calls_spread_and_a_stopped_replica_is_dropped
);
