//! Leads: create/read/list/update/delete, validation that changes nothing, idempotency, etags,
//! duplicate detection and paging.

use kizuna_proto::leads::leads_service_client::LeadsServiceClient;
use kizuna_proto::leads::*;
use kizuna_proto::types::{Channel, Consent, ConsentState};
use kizuna_tests::{Backend, Suite, both_backends, reason, violated_fields};
use prost_types::FieldMask;
use tonic::Code;

fn lead(email: &str) -> Lead {
    Lead {
        email: email.into(),
        given_name: "太郎".into(),
        family_name: "山田".into(),
        ..Default::default()
    }
}

async fn count(client: &mut LeadsServiceClient<kizuna_tests::Authed>) -> usize {
    let mut total = 0;
    let mut token = String::new();
    loop {
        let page = client
            .list_leads(ListLeadsRequest {
                page_size: 100,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        total += page.leads.len();
        if page.next_page_token.is_empty() {
            return total;
        }
        token = page.next_page_token;
    }
}

async fn crud_round_trip(backend: Backend) {
    let Some(suite) = Suite::leads_only(backend).await else {
        return;
    };
    let mut client = suite.leads().await;
    let created = client
        .create_lead(CreateLeadRequest {
            lead: Some(lead("taro@example.jp")),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    assert!(created.name.starts_with("leads/"), "{}", created.name);
    assert_eq!(
        created.stage,
        kizuna_proto::types::LifecycleStage::Lead as i32
    );
    assert!(!created.etag.is_empty());
    let fetched = client
        .get_lead(GetLeadRequest {
            name: created.name.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(fetched, created);

    let mut patch = Lead {
        name: created.name.clone(),
        etag: created.etag.clone(),
        ..Default::default()
    };
    patch.company = "絆商事".into();
    let updated = client
        .update_lead(UpdateLeadRequest {
            lead: Some(patch.clone()),
            update_mask: Some(FieldMask {
                paths: vec!["company".into()],
            }),
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.company, "絆商事");
    assert_eq!(
        updated.email, "taro@example.jp",
        "fields outside the mask are kept"
    );
    assert_ne!(updated.etag, created.etag);

    // The old etag is stale now: ABORTED, and nothing changes.
    patch.company = "Other".into();
    let stale = client
        .update_lead(UpdateLeadRequest {
            lead: Some(patch),
            update_mask: Some(FieldMask {
                paths: vec!["company".into()],
            }),
        })
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(reason(&stale), "ETAG_MISMATCH");
    let stale_delete = client
        .delete_lead(DeleteLeadRequest {
            name: created.name.clone(),
            etag: created.etag.clone(),
        })
        .await
        .expect_err("stale etag on delete");
    assert_eq!(stale_delete.code(), Code::Aborted);
    let after = client
        .get_lead(GetLeadRequest {
            name: created.name.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(after.company, "絆商事");

    client
        .delete_lead(DeleteLeadRequest {
            name: created.name.clone(),
            etag: updated.etag,
        })
        .await
        .expect("delete");
    let gone = client
        .get_lead(GetLeadRequest { name: created.name })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    suite.stop().await;
}
both_backends!(crud, crud_round_trip);

async fn bad_input_changes_nothing(backend: Backend) {
    let Some(suite) = Suite::leads_only(backend).await else {
        return;
    };
    let mut client = suite.leads().await;
    let existing = client
        .create_lead(CreateLeadRequest {
            lead: Some(lead("hanako@example.jp")),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();

    let long = "x".repeat(101);
    let cases: Vec<(&str, Option<Lead>, &str, &str)> = vec![
        ("missing lead", None, "", "lead"),
        (
            "no email or phone",
            Some(Lead {
                given_name: "a".into(),
                ..Default::default()
            }),
            "",
            "lead.email",
        ),
        ("bad email", Some(lead("not-an-email")), "", "lead.email"),
        (
            "bad phone",
            Some(Lead {
                phone: "call me maybe".into(),
                ..Default::default()
            }),
            "",
            "lead.phone",
        ),
        (
            "oversize name",
            Some(Lead {
                given_name: long.clone(),
                ..lead("a@example.jp")
            }),
            "",
            "lead.given_name",
        ),
        (
            "unknown consent channel",
            Some(Lead {
                consents: vec![Consent {
                    channel: 99,
                    state: ConsentState::Granted as i32,
                    ..Default::default()
                }],
                ..lead("b@example.jp")
            }),
            "",
            "lead.consents[0].channel",
        ),
        (
            "unspecified consent state",
            Some(Lead {
                consents: vec![Consent {
                    channel: Channel::Email as i32,
                    state: 0,
                    ..Default::default()
                }],
                ..lead("c@example.jp")
            }),
            "",
            "lead.consents[0].state",
        ),
        (
            "bad country",
            Some(Lead {
                country_code: "jpn".into(),
                ..lead("d@example.jp")
            }),
            "",
            "lead.country_code",
        ),
        (
            "bad id",
            Some(lead("e@example.jp")),
            "Not_Valid!",
            "lead_id",
        ),
    ];
    for (what, lead, lead_id, field) in cases {
        let error = client
            .create_lead(CreateLeadRequest {
                lead,
                lead_id: lead_id.into(),
                ..Default::default()
            })
            .await
            .expect_err(what);
        assert_eq!(error.code(), Code::InvalidArgument, "{what}: {error:?}");
        assert!(
            violated_fields(&error).iter().any(|f| f == field),
            "{what}: {:?}",
            violated_fields(&error)
        );
        assert_eq!(reason(&error), "INVALID_ARGUMENT");
    }

    let update_cases: Vec<(&str, Lead, Vec<&str>, &str)> = vec![
        (
            "unknown mask path",
            Lead {
                name: existing.name.clone(),
                ..Default::default()
            },
            vec!["etag"],
            "update_mask",
        ),
        (
            "output-only path",
            Lead {
                name: existing.name.clone(),
                ..Default::default()
            },
            vec!["score"],
            "update_mask",
        ),
        (
            "bad email",
            Lead {
                name: existing.name.clone(),
                email: "nope".into(),
                ..Default::default()
            },
            vec!["email"],
            "lead.email",
        ),
        (
            "clearing both keys",
            Lead {
                name: existing.name.clone(),
                ..Default::default()
            },
            vec!["email", "phone"],
            "lead.email",
        ),
        (
            "bad name",
            Lead {
                name: "deals/1".into(),
                ..Default::default()
            },
            vec!["company"],
            "lead.name",
        ),
    ];
    for (what, patch, paths, field) in update_cases {
        let error = client
            .update_lead(UpdateLeadRequest {
                lead: Some(patch),
                update_mask: Some(FieldMask {
                    paths: paths.into_iter().map(String::from).collect(),
                }),
            })
            .await
            .expect_err(what);
        assert_eq!(error.code(), Code::InvalidArgument, "{what}: {error:?}");
        assert!(
            violated_fields(&error).iter().any(|f| f == field),
            "{what}: {:?}",
            violated_fields(&error)
        );
    }

    let list_errors: Vec<(&str, ListLeadsRequest, &str)> = vec![
        (
            "negative size",
            ListLeadsRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
        (
            "garbage token",
            ListLeadsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            "bad filter",
            ListLeadsRequest {
                filter: "score >".into(),
                ..Default::default()
            },
            "filter",
        ),
        (
            "unknown order",
            ListLeadsRequest {
                order_by: "data".into(),
                ..Default::default()
            },
            "order_by",
        ),
    ];
    for (what, request, field) in list_errors {
        let error = client.list_leads(request).await.expect_err(what);
        assert_eq!(error.code(), Code::InvalidArgument, "{what}");
        assert_eq!(violated_fields(&error), [field], "{what}");
    }

    let unchanged = client
        .get_lead(GetLeadRequest {
            name: existing.name.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        unchanged, existing,
        "failed updates left the lead as it was"
    );
    assert_eq!(count(&mut client).await, 1, "failed creates added nothing");
    suite.stop().await;
}
both_backends!(bad_input, bad_input_changes_nothing);

async fn idempotent_creates_and_duplicates(backend: Backend) {
    let Some(suite) = Suite::leads_only(backend).await else {
        return;
    };
    let mut client = suite.leads().await;
    let request = CreateLeadRequest {
        lead: Some(Lead {
            phone: "090-1234-5678".into(),
            ..lead("ｔａｒｏ＠ＥＸＡＭＰＬＥ．ｊｐ")
        }),
        request_id: "form-submission-42".into(),
        ..Default::default()
    };
    let first = client
        .create_lead(request.clone())
        .await
        .expect("first")
        .into_inner();
    let retried = client
        .create_lead(request)
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(first, retried, "a retried create returns the first result");

    // Same person typed differently: refused, naming the existing lead.
    for (email, phone) in [
        ("taro@example.jp", ""),
        ("", "+81 90 1234 5678"),
        ("", "０９０１２３４５６７８"),
    ] {
        let error = client
            .create_lead(CreateLeadRequest {
                lead: Some(Lead {
                    email: email.into(),
                    phone: phone.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect_err("duplicate");
        assert_eq!(error.code(), Code::AlreadyExists, "{email} {phone}");
        assert!(error.message().contains(&first.name), "{}", error.message());
    }
    assert_eq!(count(&mut client).await, 1);

    // An update cannot make a second lead collide with the first either, and changes nothing.
    let other = client
        .create_lead(CreateLeadRequest {
            lead: Some(lead("hanako@example.jp")),
            ..Default::default()
        })
        .await
        .expect("second lead")
        .into_inner();
    let collision = client
        .update_lead(UpdateLeadRequest {
            lead: Some(Lead {
                name: other.name.clone(),
                phone: "090 1234 5678".into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["phone".into()],
            }),
        })
        .await
        .expect_err("phone taken by the first lead");
    assert_eq!(collision.code(), Code::AlreadyExists);
    assert!(
        collision.message().contains(&first.name),
        "{}",
        collision.message()
    );
    let unchanged = client
        .get_lead(GetLeadRequest {
            name: other.name.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(unchanged, other);
    // Saving a lead with its own keys is not a collision with itself.
    client
        .update_lead(UpdateLeadRequest {
            lead: Some(Lead {
                name: first.name.clone(),
                company: "Kizuna".into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["company".into()],
            }),
        })
        .await
        .expect("a lead keeping its own e-mail and phone");
    suite.stop().await;
}
both_backends!(idempotency, idempotent_creates_and_duplicates);

async fn pages_are_stable_and_tokens_bound(backend: Backend) {
    let Some(suite) = Suite::leads_only(backend).await else {
        return;
    };
    let mut client = suite.leads().await;
    let mut names = Vec::new();
    for i in 0..7 {
        let created = client
            .create_lead(CreateLeadRequest {
                lead: Some(lead(&format!("p{i}@example.jp"))),
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner();
        names.push(created.name);
    }
    let first = client
        .list_leads(ListLeadsRequest {
            page_size: 3,
            order_by: "create_time".into(),
            ..Default::default()
        })
        .await
        .expect("page 1")
        .into_inner();
    assert_eq!(
        first
            .leads
            .iter()
            .map(|l| l.name.clone())
            .collect::<Vec<_>>(),
        names[..3]
    );
    // Inserts between pages neither repeat nor skip earlier rows.
    client
        .create_lead(CreateLeadRequest {
            lead: Some(lead("late@example.jp")),
            ..Default::default()
        })
        .await
        .expect("create");
    let second = client
        .list_leads(ListLeadsRequest {
            page_size: 3,
            page_token: first.next_page_token.clone(),
            order_by: "create_time".into(),
            ..Default::default()
        })
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(
        second
            .leads
            .iter()
            .map(|l| l.name.clone())
            .collect::<Vec<_>>(),
        names[3..6]
    );

    let foreign = client
        .list_leads(ListLeadsRequest {
            page_size: 3,
            page_token: first.next_page_token,
            filter: "email : \"p\"".into(),
            order_by: "create_time".into(),
        })
        .await
        .expect_err("token from another query");
    assert_eq!(foreign.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&foreign), ["page_token"]);

    let filtered = client
        .list_leads(ListLeadsRequest {
            filter: "email = \"p3@example.jp\" OR email = \"late@example.jp\"".into(),
            ..Default::default()
        })
        .await
        .expect("filter")
        .into_inner();
    assert_eq!(filtered.leads.len(), 2);
    let injected = client
        .list_leads(ListLeadsRequest {
            filter: "email = \"x'; DROP TABLE leads; --\"".into(),
            ..Default::default()
        })
        .await
        .expect("metacharacters are a value")
        .into_inner();
    assert!(injected.leads.is_empty());
    let newest_first = client
        .list_leads(ListLeadsRequest {
            order_by: "create_time desc".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("desc")
        .into_inner();
    assert_eq!(newest_first.leads[0].email, "late@example.jp");
    suite.stop().await;
}
both_backends!(paging, pages_are_stable_and_tokens_bound);

async fn activities_belong_to_existing_leads(backend: Backend) {
    let Some(suite) = Suite::leads_only(backend).await else {
        return;
    };
    let mut client = suite.leads().await;
    let lead = client
        .create_lead(CreateLeadRequest {
            lead: Some(lead("act@example.jp")),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    let view = Activity {
        kind: ActivityKind::PageView as i32,
        url: "https://example.jp/pricing".into(),
        ..Default::default()
    };
    let created = client
        .create_activity(CreateActivityRequest {
            parent: lead.name.clone(),
            activity: Some(view.clone()),
            ..Default::default()
        })
        .await
        .expect("activity")
        .into_inner();
    assert!(
        created
            .name
            .starts_with(&format!("{}/activities/", lead.name))
    );
    let orphan = client
        .create_activity(CreateActivityRequest {
            parent: "leads/missing".into(),
            activity: Some(view),
            ..Default::default()
        })
        .await
        .expect_err("no such lead");
    assert_eq!(orphan.code(), Code::NotFound);
    let unknown_kind = client
        .create_activity(CreateActivityRequest {
            parent: lead.name.clone(),
            activity: Some(Activity {
                kind: 77,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("unknown kind");
    assert_eq!(violated_fields(&unknown_kind), ["activity.kind"]);
    let listed = client
        .list_activities(ListActivitiesRequest {
            parent: lead.name.clone(),
            filter: "kind = ACTIVITY_KIND_PAGE_VIEW".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.activities, vec![created]);
    suite.stop().await;
}
both_backends!(activities, activities_belong_to_existing_leads);

async fn scoring_models_are_validated(backend: Backend) {
    let Some(suite) = Suite::leads_only(backend).await else {
        return;
    };
    let mut client = suite.leads().await;
    use kizuna_proto::leads::scoring_model::{EngagementRule, FitRule, fit_rule};
    let model = ScoringModel {
        display_name: "Default B2B".into(),
        half_life_days: 30.0,
        mql_score_threshold: 50.0,
        mql_min_grade: "B".into(),
        engagement_rules: vec![EngagementRule {
            rule_id: "pricing".into(),
            activity_kind: ActivityKind::PageView as i32,
            url_contains: "/pricing".into(),
            points: 10.0,
            ..Default::default()
        }],
        fit_rules: vec![FitRule {
            rule_id: "size".into(),
            field: "company_size".into(),
            operator: fit_rule::Operator::GreaterThan as i32,
            value: "100".into(),
            points: 20.0,
        }],
        ..Default::default()
    };
    let rule = |f: fn(&mut EngagementRule)| {
        let mut m = model.clone();
        f(&mut m.engagement_rules[0]);
        m
    };
    let cases: Vec<(&str, ScoringModel, &str)> = vec![
        (
            "no name",
            ScoringModel {
                display_name: String::new(),
                ..model.clone()
            },
            "scoring_model.display_name",
        ),
        (
            "negative half-life",
            ScoringModel {
                half_life_days: -1.0,
                ..model.clone()
            },
            "scoring_model.half_life_days",
        ),
        (
            "grade E",
            ScoringModel {
                mql_min_grade: "E".into(),
                ..model.clone()
            },
            "scoring_model.mql_min_grade",
        ),
        (
            "unknown activity kind",
            rule(|r| r.activity_kind = 99),
            "scoring_model.engagement_rules[0].activity_kind",
        ),
        (
            "infinite points",
            rule(|r| r.points = f64::INFINITY),
            "scoring_model.engagement_rules[0].points",
        ),
        (
            "unknown state",
            ScoringModel {
                state: 9,
                ..model.clone()
            },
            "scoring_model.state",
        ),
    ];
    for (what, bad, field) in cases {
        let error = client
            .create_scoring_model(CreateScoringModelRequest {
                scoring_model: Some(bad),
                ..Default::default()
            })
            .await
            .expect_err(what);
        assert_eq!(error.code(), Code::InvalidArgument, "{what}");
        assert!(
            violated_fields(&error).iter().any(|f| f == field),
            "{what}: {:?}",
            violated_fields(&error)
        );
    }
    let listed = client
        .list_scoring_models(ListScoringModelsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(
        listed.scoring_models.is_empty(),
        "refused models left nothing behind"
    );

    let created = client
        .create_scoring_model(CreateScoringModelRequest {
            scoring_model: Some(model),
            ..Default::default()
        })
        .await
        .expect("model")
        .into_inner();
    assert_eq!(created.revision, 1);
    assert_eq!(created.state, scoring_model::State::Draft as i32);
    let bad_update = client
        .update_scoring_model(UpdateScoringModelRequest {
            scoring_model: Some(ScoringModel {
                name: created.name.clone(),
                half_life_days: f64::NAN,
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["half_life_days".into()],
            }),
        })
        .await
        .expect_err("NaN half-life");
    assert_eq!(
        violated_fields(&bad_update),
        ["scoring_model.half_life_days"]
    );
    let published = client
        .update_scoring_model(UpdateScoringModelRequest {
            scoring_model: Some(ScoringModel {
                name: created.name.clone(),
                etag: created.etag.clone(),
                state: scoring_model::State::Published as i32,
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["state".into()],
            }),
        })
        .await
        .expect("publish")
        .into_inner();
    assert_eq!(
        published.revision, 2,
        "every accepted change is a new revision"
    );
    let drafts = client
        .list_scoring_models(ListScoringModelsRequest {
            filter: "state = STATE_PUBLISHED".into(),
            ..Default::default()
        })
        .await
        .expect("filter")
        .into_inner();
    assert_eq!(drafts.scoring_models, vec![published]);
    suite.stop().await;
}
both_backends!(scoring_models, scoring_models_are_validated);
