//! Bad input on every unary and server-streaming leads RPC: INVALID_ARGUMENT naming the field,
//! and nothing changes (the lead, the segment and the outbox are as they were). The
//! client-streaming RPCs answer bad rows one by one; their row errors are tested in
//! `lead_capture` (ImportLeads) and `lead_ingest` (TrackActivities).

use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use kizuna_proto::leads::leads_service_client::LeadsServiceClient;
use kizuna_proto::leads::*;
use kizuna_tests::{Authed, Backend, Suite, both_backends, violated_fields};
use prost_types::FieldMask;
use tonic::{Code, Status};

type Client = LeadsServiceClient<Authed>;
type Call = BoxFuture<'static, Result<(), Status>>;

/// `(rpc, expected field, call)`: the call runs on its own clone of the client.
macro_rules! case {
    ($client:expr, $rpc:ident, $field:expr, $request:expr) => {{
        let mut client = $client.clone();
        let request = $request;
        let call: Call = Box::pin(async move { client.$rpc(request).await.map(|_| ()) });
        (stringify!($rpc), $field, call)
    }};
}

/// The sequence of the newest event in the outbox (0 when empty).
async fn last_sequence(client: &mut Client) -> i64 {
    let mut stream = client
        .watch_events(WatchEventsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let mut last = 0;
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(500), stream.next()).await
    {
        last = item.expect("event").event.expect("event body").sequence;
    }
    last
}

async fn every_rpc_rejects_bad_input(backend: Backend) {
    let Some(suite) = Suite::leads_only(backend).await else {
        return;
    };
    let mut client = suite.leads().await;
    let lead = client
        .create_lead(CreateLeadRequest {
            lead: Some(Lead {
                email: "sweep@example.jp".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("lead")
        .into_inner();
    let segment = client
        .create_segment(CreateSegmentRequest {
            segment: Some(Segment {
                display_name: "Hot".into(),
                filter: "score > 10".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("segment")
        .into_inner();
    let before = last_sequence(&mut client).await;
    assert!(before > 0, "the lead and the segment were announced");

    let bad_name = "deals/not-a-lead".to_owned();
    let negative = -1;
    let cases: Vec<(&str, &str, Call)> = vec![
        case!(
            client,
            get_lead,
            "name",
            GetLeadRequest {
                name: bad_name.clone()
            }
        ),
        case!(
            client,
            list_leads,
            "page_size",
            ListLeadsRequest {
                page_size: negative,
                ..Default::default()
            }
        ),
        case!(client, create_lead, "lead", CreateLeadRequest::default()),
        case!(client, capture_lead, "lead", CaptureLeadRequest::default()),
        case!(
            client,
            merge_leads,
            "merged_lead",
            MergeLeadsRequest {
                lead: lead.name.clone(),
                merged_lead: lead.name.clone(),
                ..Default::default()
            }
        ),
        case!(
            client,
            update_lead,
            "update_mask",
            UpdateLeadRequest {
                lead: Some(Lead {
                    company: "Changed".into(),
                    ..lead.clone()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["no_such_field".into()],
                }),
            }
        ),
        case!(
            client,
            delete_lead,
            "name",
            DeleteLeadRequest {
                name: bad_name.clone(),
                etag: String::new(),
            }
        ),
        case!(
            client,
            get_activity,
            "name",
            GetActivityRequest {
                name: format!("{}/visits/1", lead.name),
            }
        ),
        case!(
            client,
            list_activities,
            "page_token",
            ListActivitiesRequest {
                parent: lead.name.clone(),
                page_token: "garbage".into(),
                ..Default::default()
            }
        ),
        case!(
            client,
            create_activity,
            "activity",
            CreateActivityRequest {
                parent: lead.name.clone(),
                ..Default::default()
            }
        ),
        case!(
            client,
            track_activity,
            "activity.kind",
            TrackActivityRequest {
                parent: lead.name.clone(),
                activity: Some(Activity {
                    kind: 99,
                    ..Default::default()
                }),
                ..Default::default()
            }
        ),
        case!(
            client,
            get_lead_score,
            "name",
            GetLeadScoreRequest {
                name: bad_name.clone(),
                as_of: None,
            }
        ),
        case!(
            client,
            mark_handed_off,
            "deal",
            MarkHandedOffRequest {
                name: lead.name.clone(),
                deal: "leads/not-a-deal".into(),
                ..Default::default()
            }
        ),
        case!(
            client,
            recycle_lead,
            "reason",
            RecycleLeadRequest {
                name: lead.name.clone(),
                reason: String::new(),
                reset_score: true,
            }
        ),
        case!(
            client,
            disqualify_lead,
            "reason",
            DisqualifyLeadRequest {
                name: lead.name.clone(),
                reason: String::new(),
            }
        ),
        case!(
            client,
            list_stage_changes,
            "parent",
            ListStageChangesRequest {
                parent: bad_name.clone(),
                ..Default::default()
            }
        ),
        case!(
            client,
            get_scoring_model,
            "name",
            GetScoringModelRequest {
                name: bad_name.clone(),
            }
        ),
        case!(
            client,
            list_scoring_models,
            "page_size",
            ListScoringModelsRequest {
                page_size: negative,
                ..Default::default()
            }
        ),
        case!(
            client,
            create_scoring_model,
            "scoring_model",
            CreateScoringModelRequest::default()
        ),
        case!(
            client,
            update_scoring_model,
            "scoring_model",
            UpdateScoringModelRequest::default()
        ),
        case!(
            client,
            delete_scoring_model,
            "name",
            DeleteScoringModelRequest {
                name: bad_name.clone(),
                etag: String::new(),
            }
        ),
        case!(
            client,
            get_rescoring_job,
            "name",
            GetRescoringJobRequest {
                name: bad_name.clone(),
            }
        ),
        case!(
            client,
            list_rescoring_jobs,
            "page_token",
            ListRescoringJobsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            }
        ),
        case!(
            client,
            get_segment,
            "name",
            GetSegmentRequest {
                name: bad_name.clone(),
            }
        ),
        case!(
            client,
            list_segments,
            "page_size",
            ListSegmentsRequest {
                page_size: negative,
                ..Default::default()
            }
        ),
        case!(
            client,
            create_segment,
            "segment.filter",
            CreateSegmentRequest {
                segment: Some(Segment {
                    display_name: "Broken".into(),
                    filter: "score >".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
        ),
        case!(
            client,
            update_segment,
            "segment.filter",
            UpdateSegmentRequest {
                segment: Some(Segment {
                    filter: "grade >= ".into(),
                    ..segment.clone()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["filter".into()],
                }),
            }
        ),
        case!(
            client,
            delete_segment,
            "name",
            DeleteSegmentRequest {
                name: bad_name.clone(),
                etag: String::new(),
            }
        ),
        case!(
            client,
            count_segment_members,
            "name",
            CountSegmentMembersRequest {
                name: bad_name.clone(),
            }
        ),
        case!(
            client,
            list_segment_members,
            "page_size",
            ListSegmentMembersRequest {
                name: segment.name.clone(),
                page_size: negative,
                ..Default::default()
            }
        ),
        case!(
            client,
            watch_events,
            "after_sequence",
            WatchEventsRequest {
                after_sequence: -1,
                types: Vec::new(),
            }
        ),
    ];
    let mut wrong = Vec::new();
    for (rpc, field, call) in cases {
        match call.await {
            Ok(()) => wrong.push(format!("{rpc}: accepted")),
            Err(status) if status.code() != Code::InvalidArgument => {
                wrong.push(format!("{rpc}: {:?} {}", status.code(), status.message()));
            }
            Err(status) => {
                let fields = violated_fields(&status);
                if !fields.iter().any(|f| f == field) {
                    wrong.push(format!("{rpc}: fields {fields:?}, expected {field}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    let after = client
        .get_lead(GetLeadRequest {
            name: lead.name.clone(),
        })
        .await
        .expect("lead")
        .into_inner();
    assert_eq!(after, lead, "the lead is unchanged");
    let kept = client
        .get_segment(GetSegmentRequest {
            name: segment.name.clone(),
        })
        .await
        .expect("segment")
        .into_inner();
    assert_eq!(kept, segment, "the segment is unchanged");
    assert_eq!(last_sequence(&mut client).await, before, "no event emitted");
    suite.stop().await;
}
both_backends!(bad_input_sweep, every_rpc_rejects_bad_input);
