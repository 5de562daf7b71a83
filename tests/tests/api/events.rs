//! The outbox stream: every committed event, in commit order, with no gap and no repeat for a
//! consumer that disconnects and resumes from its last cursor while writers run concurrently.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use kizuna_proto::leads::*;
use kizuna_tests::{Backend, Suite, both_backends};

async fn resumable_in_commit_order(backend: Backend) {
    resumable(backend, 4, 15).await;
}
both_backends!(watch, resumable_in_commit_order);

/// Writers no longer queue on one lock: 32 of them commit at once on PostgreSQL while the
/// consumer disconnects and resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_writers_on_postgres() {
    resumable(Backend::Postgres, 32, 8).await;
}

async fn resumable(backend: Backend, writers: usize, per_writer: usize) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let writers: Vec<_> = (0..writers)
        .map(|w| {
            let suite_port = suite.leads.port;
            let token = suite.token.clone();
            tokio::spawn(async move {
                let mut client =
                    kizuna_proto::leads::leads_service_client::LeadsServiceClient::with_interceptor(
                        kizuna_tests::channel(suite_port).await,
                        kizuna_tests::Bearer(Some(token)),
                    );
                let mut names = Vec::new();
                for i in 0..per_writer {
                    let lead = Lead {
                        email: format!("w{w}-{i}@example.jp"),
                        ..Default::default()
                    };
                    let created = client
                        .create_lead(CreateLeadRequest {
                            lead: Some(lead),
                            ..Default::default()
                        })
                        .await
                        .expect("create")
                        .into_inner();
                    names.push(created.name);
                }
                names
            })
        })
        .collect();

    // A consumer that reads a few events, disconnects, and resumes from its cursor, repeatedly,
    // while the writers are still going.
    let mut client = suite.leads().await;
    let mut seen: Vec<(i64, String)> = Vec::new();
    let mut cursor = 0;
    let total = writers.len() * per_writer;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {total} events arrived",
            seen.len()
        );
        let mut stream = client
            .watch_events(WatchEventsRequest {
                after_sequence: cursor,
                types: vec!["lead.created".into()],
            })
            .await
            .expect("watch")
            .into_inner();
        for _ in 0..7 {
            match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
                Ok(Some(item)) => {
                    let event = item.expect("event").event.expect("event body");
                    assert!(
                        event.sequence > cursor,
                        "sequence {} after cursor {cursor}",
                        event.sequence
                    );
                    assert!(
                        !event.traceparent.is_empty(),
                        "events carry the trace context of their request"
                    );
                    assert_eq!(event.service, "leads");
                    cursor = event.sequence;
                    seen.push((event.sequence, event.subject));
                }
                _ => break,
            }
            if seen.len() == total {
                break;
            }
        }
        drop(stream);
    }
    let mut created = HashSet::new();
    for writer in writers {
        created.extend(writer.await.expect("writer"));
    }
    let subjects: HashSet<_> = seen.iter().map(|(_, s)| s.clone()).collect();
    assert_eq!(subjects.len(), seen.len(), "no event was delivered twice");
    assert_eq!(
        subjects, created,
        "every created lead's event was delivered"
    );
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "delivered in sequence order"
    );

    // Replaying from an earlier cursor gives the same events again, in the same order.
    let mut replay = client
        .watch_events(WatchEventsRequest {
            after_sequence: 0,
            types: vec!["lead.created".into()],
        })
        .await
        .expect("watch")
        .into_inner();
    for (sequence, subject) in seen.iter().take(5) {
        let event = replay
            .next()
            .await
            .expect("item")
            .expect("ok")
            .event
            .expect("event");
        assert_eq!((&event.sequence, &event.subject), (sequence, subject));
    }
    drop(replay);

    // A new event reaches a waiting watcher promptly (pushed, not polled on a slow timer).
    let mut live = client
        .watch_events(WatchEventsRequest {
            after_sequence: cursor,
            types: vec![],
        })
        .await
        .expect("watch")
        .into_inner();
    let created = client
        .create_lead(CreateLeadRequest {
            lead: Some(Lead {
                email: "live@example.jp".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    let event = tokio::time::timeout(Duration::from_secs(2), live.next())
        .await
        .expect("pushed within 2 s (the fallback poll is 5 s)")
        .expect("item")
        .expect("ok")
        .event
        .expect("event");
    assert_eq!(event.subject, created.name);
    let data = event.data.expect("data");
    assert_eq!(data.type_url, "type.googleapis.com/kizuna.leads.v1.Lead");
    let decoded = <Lead as prost::Message>::decode(data.value.as_slice()).expect("decodes");
    assert_eq!(decoded, created);
    drop(live);
    suite.stop().await;
}
