//! Lead stages: scoring on ingest, the MQL crossing exactly once under concurrent out-of-order
//! activities, the explained score, stage history, hand-off, recycling and disqualification.

use std::time::Duration;

use futures::StreamExt;
use kizuna_proto::leads::leads_service_client::LeadsServiceClient;
use kizuna_proto::leads::*;
use kizuna_proto::types::LifecycleStage;
use kizuna_tests::{Authed, Backend, Suite, both_backends, pricing_model, reason, violated_fields};
use prost_types::Timestamp;
use tonic::Code;

const HOUR_SECS: i64 = 3600;

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

async fn new_lead(client: &mut LeadsServiceClient<Authed>, email: &str) -> Lead {
    client
        .create_lead(CreateLeadRequest {
            lead: Some(Lead {
                email: email.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("create lead")
        .into_inner()
}

async fn track(
    client: &mut LeadsServiceClient<Authed>,
    lead: &str,
    kind: ActivityKind,
    url: &str,
    occur_secs: Option<i64>,
) -> Activity {
    client
        .create_activity(CreateActivityRequest {
            parent: lead.into(),
            activity: Some(Activity {
                kind: kind as i32,
                url: url.into(),
                occur_time: occur_secs.map(|seconds| Timestamp { seconds, nanos: 0 }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("create activity")
        .into_inner()
}

async fn get(client: &mut LeadsServiceClient<Authed>, name: &str) -> Lead {
    client
        .get_lead(GetLeadRequest { name: name.into() })
        .await
        .expect("get lead")
        .into_inner()
}

async fn history(client: &mut LeadsServiceClient<Authed>, lead: &str) -> Vec<StageChange> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_stage_changes(ListStageChangesRequest {
                parent: lead.into(),
                page_size: 1,
                page_token: token,
            })
            .await
            .expect("list stage changes")
            .into_inner();
        assert!(page.stage_changes.len() <= 1, "page_size is honoured");
        all.extend(page.stage_changes);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

fn steps(changes: &[StageChange]) -> Vec<(LifecycleStage, LifecycleStage, &str)> {
    changes
        .iter()
        .map(|c| {
            (
                LifecycleStage::try_from(c.from_stage).expect("from"),
                LifecycleStage::try_from(c.to_stage).expect("to"),
                c.cause.as_str(),
            )
        })
        .collect()
}

/// Subjects of the events of `event_type` currently in the outbox (waits briefly for more).
async fn events(client: &mut LeadsServiceClient<Authed>, event_type: &str) -> Vec<String> {
    let mut stream = client
        .watch_events(WatchEventsRequest {
            after_sequence: 0,
            types: vec![event_type.into()],
        })
        .await
        .expect("watch")
        .into_inner();
    let mut subjects = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(700), stream.next()).await
    {
        let event = item.expect("event").event.expect("event body");
        assert_eq!(event.r#type, event_type);
        subjects.push(event.subject);
    }
    subjects
}

fn engagement_sum(score: &LeadScore) -> f64 {
    score
        .contributions
        .iter()
        .filter(|c| c.kind == lead_score::RuleKind::Engagement as i32)
        .fold(0.0, |sum, c| sum + c.points)
}

async fn stages_from_capture_to_disqualification(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let mut client = suite.leads().await;
    let model = client
        .create_scoring_model(CreateScoringModelRequest {
            scoring_model: Some(pricing_model()),
            ..Default::default()
        })
        .await
        .expect("publish model")
        .into_inner();
    assert_eq!(model.state, scoring_model::State::Published as i32);
    let lead = new_lead(&mut client, "hanako@example.jp").await;
    let name = lead.name.clone();

    // Two concurrent streams of activities for one lead, occurrence times out of order. Each
    // /pricing view is worth 30 points, the threshold is 50: the lead crosses on the second.
    let now = now_secs();
    let offsets = [vec![-1, -5, -3, -2], vec![-4, -6, -7, -1]];
    let mut tasks = Vec::new();
    for (i, batch) in offsets.into_iter().enumerate() {
        let mut client = suite.leads().await;
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            for (j, hours) in batch.into_iter().enumerate() {
                let (kind, url) = if j == 3 {
                    (ActivityKind::EmailOpen, "")
                } else {
                    (
                        ActivityKind::PageView,
                        "https://example.jp/pricing?plan=pro",
                    )
                };
                let occur = now + hours * HOUR_SECS - i as i64;
                track(&mut client, &name, kind, url, Some(occur)).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("activity task");
    }

    let qualified = get(&mut client, &name).await;
    assert_eq!(qualified.stage, LifecycleStage::Mql as i32);
    assert_eq!(qualified.score, 180.0, "six /pricing views, no decay");
    assert_eq!(
        events(&mut client, "lead.qualified").await,
        std::slice::from_ref(&name)
    );
    assert_eq!(
        events(&mut client, "lead.engaged").await,
        std::slice::from_ref(&name)
    );
    assert!(!events(&mut client, "lead.score_changed").await.is_empty());

    // The explained score sums exactly to the score, live and at a past moment.
    let score = client
        .get_lead_score(GetLeadScoreRequest {
            name: name.clone(),
            as_of: None,
        })
        .await
        .expect("score")
        .into_inner();
    assert_eq!(score.lead, name);
    assert_eq!(score.scoring_model, model.name);
    assert_eq!(score.scoring_model_revision, 1);
    assert_eq!(score.score, 180.0);
    assert_eq!(engagement_sum(&score), score.score);
    assert!(score.qualifies);
    assert_eq!(score.contributions.len(), 1);
    assert_eq!(score.contributions[0].rule_id, "pricing");
    assert_eq!(score.contributions[0].activities, 6);
    let earlier = client
        .get_lead_score(GetLeadScoreRequest {
            name: name.clone(),
            as_of: Some(Timestamp {
                seconds: now - 9 * HOUR_SECS / 2,
                nanos: 0,
            }),
        })
        .await
        .expect("score as of")
        .into_inner();
    assert_eq!(earlier.score, 90.0, "only the views 5, 6 and 7 hours ago");
    assert_eq!(engagement_sum(&earlier), earlier.score);
    assert!(earlier.qualifies);

    let changes = history(&mut client, &name).await;
    assert_eq!(
        steps(&changes),
        [
            (
                LifecycleStage::Lead,
                LifecycleStage::Engaged,
                "activity.created"
            ),
            (
                LifecycleStage::Engaged,
                LifecycleStage::Mql,
                "activity.created"
            ),
        ]
    );
    let micros = |c: &StageChange| {
        let t = c.change_time.expect("change_time");
        t.seconds * 1_000_000 + i64::from(t.nanos / 1000)
    };
    assert!(micros(&changes[0]) <= micros(&changes[1]));
    // Time in each stage: until the next change (across page boundaries), or until now.
    let spent = |c: &StageChange| {
        let d = c.time_in_stage.expect("time_in_stage");
        d.seconds * 1_000_000 + i64::from(d.nanos / 1000)
    };
    assert_eq!(
        spent(&changes[0]),
        micros(&changes[1]) - micros(&changes[0])
    );
    assert!((0..60_000_000).contains(&spent(&changes[1])));

    // Hand-off: validated, then SQL once; a repeat with the same deal changes nothing.
    let error = client
        .mark_handed_off(MarkHandedOffRequest {
            name: name.clone(),
            ..Default::default()
        })
        .await
        .expect_err("deal is required");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&error), ["deal"]);
    let handed = client
        .mark_handed_off(MarkHandedOffRequest {
            name: name.clone(),
            deal: "deals/d1".into(),
            request_id: "handoff-1".into(),
        })
        .await
        .expect("hand off")
        .into_inner();
    assert_eq!(handed.stage, LifecycleStage::Sql as i32);
    let again = client
        .mark_handed_off(MarkHandedOffRequest {
            name: name.clone(),
            deal: "deals/d1".into(),
            request_id: String::new(),
        })
        .await
        .expect("repeat hand off")
        .into_inner();
    assert_eq!(again, handed, "a repeat returns the lead unchanged");
    let other = client
        .mark_handed_off(MarkHandedOffRequest {
            name: name.clone(),
            deal: "deals/d2".into(),
            request_id: String::new(),
        })
        .await
        .expect_err("another deal");
    assert_eq!(other.code(), Code::FailedPrecondition);
    assert_eq!(reason(&other), "STAGE_TRANSITION_NOT_ALLOWED");
    assert_eq!(
        events(&mut client, "lead.handed_off").await,
        std::slice::from_ref(&name)
    );

    // Recycle: the reason is required and a refused call changes nothing.
    let error = client
        .recycle_lead(RecycleLeadRequest {
            name: name.clone(),
            reason: "  ".into(),
            reset_score: true,
        })
        .await
        .expect_err("reason is required");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&error), ["reason"]);
    let error = client
        .recycle_lead(RecycleLeadRequest {
            name: name.clone(),
            reason: "x".repeat(501),
            reset_score: false,
        })
        .await
        .expect_err("reason too long");
    assert_eq!(violated_fields(&error), ["reason"]);
    assert_eq!(get(&mut client, &name).await, handed);
    assert_eq!(history(&mut client, &name).await.len(), 3);
    let recycled = client
        .recycle_lead(RecycleLeadRequest {
            name: name.clone(),
            reason: "deal lost: budget".into(),
            reset_score: true,
        })
        .await
        .expect("recycle")
        .into_inner();
    assert_eq!(recycled.stage, LifecycleStage::Recycled as i32);
    assert_eq!(recycled.score, 0.0);
    assert_eq!(
        events(&mut client, "lead.recycled").await,
        std::slice::from_ref(&name)
    );
    let reset = client
        .get_lead_score(GetLeadScoreRequest {
            name: name.clone(),
            as_of: None,
        })
        .await
        .expect("score after reset")
        .into_inner();
    assert_eq!(
        reset.score, 0.0,
        "activities before the reset no longer count"
    );
    assert!(reset.contributions.is_empty());

    // A recycled lead qualifies again, once. TrackActivity answers with the lead as updated,
    // and a retry with the same request id records nothing new.
    let mut answers = Vec::new();
    for request_id in ["again-1", "again-2", "again-2"] {
        let answer = client
            .track_activity(TrackActivityRequest {
                parent: name.clone(),
                activity: Some(Activity {
                    kind: ActivityKind::PageView as i32,
                    url: "https://example.jp/ｐｒｉｃｉｎｇ".into(),
                    ..Default::default()
                }),
                request_id: request_id.into(),
            })
            .await
            .expect("track activity")
            .into_inner();
        answers.push(answer);
    }
    let stage_of = |a: &TrackActivityResponse| a.lead.as_ref().expect("lead").stage;
    assert_eq!(stage_of(&answers[0]), LifecycleStage::Recycled as i32);
    assert_eq!(answers[0].lead.as_ref().expect("lead").score, 30.0);
    assert_eq!(stage_of(&answers[1]), LifecycleStage::Mql as i32);
    assert_eq!(
        answers[2].activity, answers[1].activity,
        "a retry answers the first"
    );
    assert_eq!(answers[2].lead, answers[1].lead);
    let error = client
        .track_activity(TrackActivityRequest {
            parent: name.clone(),
            activity: None,
            request_id: String::new(),
        })
        .await
        .expect_err("activity is required");
    assert_eq!(violated_fields(&error), ["activity"]);
    let requalified = get(&mut client, &name).await;
    assert_eq!(requalified.stage, LifecycleStage::Mql as i32);
    assert_eq!(requalified.score, 60.0);
    assert_eq!(
        events(&mut client, "lead.qualified").await,
        [name.clone(), name.clone()]
    );

    // Disqualified: no hand-off, no recycling, no second disqualification.
    let disqualified = client
        .disqualify_lead(DisqualifyLeadRequest {
            name: name.clone(),
            reason: "competitor".into(),
        })
        .await
        .expect("disqualify")
        .into_inner();
    assert_eq!(disqualified.stage, LifecycleStage::Disqualified as i32);
    assert_eq!(
        events(&mut client, "lead.disqualified").await,
        std::slice::from_ref(&name)
    );
    let error = client
        .mark_handed_off(MarkHandedOffRequest {
            name: name.clone(),
            deal: "deals/d3".into(),
            request_id: String::new(),
        })
        .await
        .expect_err("disqualified leads are not handed off");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(reason(&error), "STAGE_TRANSITION_NOT_ALLOWED");
    let error = client
        .recycle_lead(RecycleLeadRequest {
            name: name.clone(),
            reason: "retry".into(),
            reset_score: false,
        })
        .await
        .expect_err("disqualified leads are not recycled");
    assert_eq!(error.code(), Code::FailedPrecondition);
    let error = client
        .disqualify_lead(DisqualifyLeadRequest {
            name: name.clone(),
            reason: "again".into(),
        })
        .await
        .expect_err("already disqualified");
    assert_eq!(error.code(), Code::FailedPrecondition);
    // Activities on a disqualified lead are recorded and scored, but it never qualifies again.
    track(&mut client, &name, ActivityKind::PageView, "/pricing", None).await;
    let after = get(&mut client, &name).await;
    assert_eq!(after.stage, LifecycleStage::Disqualified as i32);
    assert_eq!(after.score, 90.0);
    assert_eq!(events(&mut client, "lead.qualified").await.len(), 2);

    let changes = history(&mut client, &name).await;
    let causes: Vec<_> = steps(&changes);
    assert_eq!(
        causes,
        [
            (
                LifecycleStage::Lead,
                LifecycleStage::Engaged,
                "activity.created"
            ),
            (
                LifecycleStage::Engaged,
                LifecycleStage::Mql,
                "activity.created"
            ),
            (LifecycleStage::Mql, LifecycleStage::Sql, "MarkHandedOff"),
            (LifecycleStage::Sql, LifecycleStage::Recycled, "RecycleLead"),
            (
                LifecycleStage::Recycled,
                LifecycleStage::Mql,
                "activity.created"
            ),
            (
                LifecycleStage::Mql,
                LifecycleStage::Disqualified,
                "DisqualifyLead"
            ),
        ]
    );
    assert_eq!(changes[2].reason, "deals/d1");
    assert_eq!(changes[3].reason, "deal lost: budget");
    assert_eq!(changes[5].reason, "competitor");
    suite.stop().await;
}
both_backends!(lifecycle, stages_from_capture_to_disqualification);

async fn stages_without_a_published_model(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let mut client = suite.leads().await;
    let lead = new_lead(&mut client, "jiro@example.jp").await;
    let name = lead.name.clone();

    let error = client
        .get_lead_score(GetLeadScoreRequest {
            name: name.clone(),
            as_of: None,
        })
        .await
        .expect_err("no model");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(reason(&error), "NO_PUBLISHED_MODEL");

    // A draft model does not score.
    let mut draft = pricing_model();
    draft.state = scoring_model::State::Draft as i32;
    client
        .create_scoring_model(CreateScoringModelRequest {
            scoring_model: Some(draft),
            ..Default::default()
        })
        .await
        .expect("draft");
    for _ in 0..3 {
        track(&mut client, &name, ActivityKind::PageView, "/pricing", None).await;
    }
    let engaged = get(&mut client, &name).await;
    assert_eq!(engaged.stage, LifecycleStage::Engaged as i32);
    assert_eq!(engaged.score, 0.0);
    assert_eq!(
        events(&mut client, "lead.engaged").await,
        std::slice::from_ref(&name)
    );
    assert!(events(&mut client, "lead.qualified").await.is_empty());
    assert_eq!(
        steps(&history(&mut client, &name).await),
        [(
            LifecycleStage::Lead,
            LifecycleStage::Engaged,
            "activity.created"
        )]
    );

    // Bad input names the field; unknown leads are NOT_FOUND; nothing changes.
    for (call, field) in [
        (
            client
                .get_lead_score(GetLeadScoreRequest {
                    name: "deals/x".into(),
                    as_of: None,
                })
                .await
                .map(|_| ()),
            "name",
        ),
        (
            client
                .list_stage_changes(ListStageChangesRequest {
                    parent: "leads/Not_An_Id".into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            "parent",
        ),
        (
            client
                .track_activity(TrackActivityRequest {
                    parent: "leads/Not_An_Id".into(),
                    activity: Some(Activity {
                        kind: ActivityKind::PageView as i32,
                        ..Default::default()
                    }),
                    request_id: String::new(),
                })
                .await
                .map(|_| ()),
            "parent",
        ),
        (
            client
                .list_stage_changes(ListStageChangesRequest {
                    parent: String::new(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            "parent",
        ),
        (
            client
                .list_stage_changes(ListStageChangesRequest {
                    parent: name.clone(),
                    page_token: "garbage".into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            "page_token",
        ),
        (
            client
                .mark_handed_off(MarkHandedOffRequest {
                    name: name.clone(),
                    deal: "leads/x".into(),
                    request_id: String::new(),
                })
                .await
                .map(|_| ()),
            "deal",
        ),
        (
            client
                .disqualify_lead(DisqualifyLeadRequest {
                    name: name.clone(),
                    reason: String::new(),
                })
                .await
                .map(|_| ()),
            "reason",
        ),
    ] {
        let error = call.expect_err(field);
        assert_eq!(error.code(), Code::InvalidArgument, "{field}");
        assert_eq!(violated_fields(&error), [field]);
    }
    let missing = client
        .recycle_lead(RecycleLeadRequest {
            name: "leads/nope".into(),
            reason: "no response".into(),
            reset_score: false,
        })
        .await
        .expect_err("unknown lead");
    assert_eq!(missing.code(), Code::NotFound);
    let missing = client
        .list_stage_changes(ListStageChangesRequest {
            parent: "leads/nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown lead");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(get(&mut client, &name).await, engaged);
    assert_eq!(history(&mut client, &name).await.len(), 1);

    // Deleting a lead deletes its history: a new lead under the same id starts with none.
    client
        .delete_lead(DeleteLeadRequest {
            name: name.clone(),
            etag: engaged.etag.clone(),
        })
        .await
        .expect("delete");
    let reborn = client
        .create_lead(CreateLeadRequest {
            lead: Some(Lead {
                email: "jiro@example.jp".into(),
                ..Default::default()
            }),
            lead_id: name.trim_start_matches("leads/").into(),
            ..Default::default()
        })
        .await
        .expect("recreate")
        .into_inner();
    assert_eq!(reborn.name, name);
    assert!(history(&mut client, &name).await.is_empty());
    suite.stop().await;
}
both_backends!(no_model, stages_without_a_published_model);
