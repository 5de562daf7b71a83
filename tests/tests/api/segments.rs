//! Segments: saved lead filters evaluated live (fields, tags, grades, the activity predicate,
//! AND/OR/NOT), counted and listed with keyset pages bound to the segment and its version,
//! literal matching of SQL metacharacters, and filter errors that point at the position.

use std::collections::BTreeSet;

use kizuna_proto::leads::leads_service_client::LeadsServiceClient;
use kizuna_proto::leads::scoring_model::{EngagementRule, FitRule, fit_rule};
use kizuna_proto::leads::*;
use kizuna_tests::{Authed, Backend, Suite, both_backends, violated_fields};
use prost_types::Timestamp;
use tonic::Code;

const DAY_SECS: i64 = 86_400;

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn model() -> ScoringModel {
    ScoringModel {
        display_name: "Segments".into(),
        engagement_rules: vec![EngagementRule {
            rule_id: "pricing".into(),
            activity_kind: ActivityKind::PageView as i32,
            url_contains: "/pricing".into(),
            points: 30.0,
            ..Default::default()
        }],
        fit_rules: vec![
            FitRule {
                rule_id: "software".into(),
                field: "industry".into(),
                operator: fit_rule::Operator::Equals as i32,
                value: "software".into(),
                points: 30.0,
            },
            FitRule {
                rule_id: "japan".into(),
                field: "country_code".into(),
                operator: fit_rule::Operator::Equals as i32,
                value: "JP".into(),
                points: 10.0,
            },
        ],
        half_life_days: 0.0,
        mql_score_threshold: 50.0,
        state: scoring_model::State::Published as i32,
        ..Default::default()
    }
}

async fn lead(
    client: &mut LeadsServiceClient<Authed>,
    email: &str,
    industry: &str,
    country_code: &str,
    tags: &[&str],
    views: &[(&str, i64)],
) -> String {
    let lead = client
        .create_lead(CreateLeadRequest {
            lead: Some(Lead {
                email: email.into(),
                industry: industry.into(),
                country_code: country_code.into(),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("create lead")
        .into_inner();
    for (url, occur_secs) in views {
        client
            .create_activity(CreateActivityRequest {
                parent: lead.name.clone(),
                activity: Some(Activity {
                    kind: ActivityKind::PageView as i32,
                    url: (*url).into(),
                    occur_time: Some(Timestamp {
                        seconds: *occur_secs,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("create activity");
    }
    lead.name
}

async fn segment(client: &mut LeadsServiceClient<Authed>, filter: &str) -> Segment {
    client
        .create_segment(CreateSegmentRequest {
            segment: Some(Segment {
                display_name: format!("segment {filter}"),
                filter: filter.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create segment `{filter}`: {e:?}"))
        .into_inner()
}

/// Every member, page by page, checking no lead is visited twice.
async fn members(
    client: &mut LeadsServiceClient<Authed>,
    name: &str,
    page_size: i32,
) -> (Vec<String>, usize) {
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut page_token = String::new();
    loop {
        let page = client
            .list_segment_members(ListSegmentMembersRequest {
                name: name.into(),
                page_size,
                page_token,
            })
            .await
            .expect("list members")
            .into_inner();
        pages += 1;
        assert!(page.leads.len() <= page_size as usize);
        for lead in page.leads {
            assert!(!seen.contains(&lead.name), "{} visited twice", lead.name);
            seen.push(lead.name);
        }
        if page.next_page_token.is_empty() {
            return (seen, pages);
        }
        page_token = page.next_page_token;
    }
}

async fn count(client: &mut LeadsServiceClient<Authed>, name: &str) -> i64 {
    let response = client
        .count_segment_members(CountSegmentMembersRequest { name: name.into() })
        .await
        .expect("count")
        .into_inner();
    assert!(response.as_of.is_some());
    response.count
}

async fn segments_select_their_members(backend: Backend) {
    let Some(suite) = Suite::leads_only(backend).await else {
        return;
    };
    let mut client = suite.leads().await;
    client
        .create_scoring_model(CreateScoringModelRequest {
            scoring_model: Some(model()),
            ..Default::default()
        })
        .await
        .expect("create model");
    let now = now_secs();
    let old = now - 10 * DAY_SECS;
    // a: MQL (60), grade A, tags vip+new, two recent pricing views.
    let a = lead(
        &mut client,
        "a@seg.example",
        "software",
        "JP",
        &["vip", "new"],
        &[("/pricing", now - 60), ("/pricing/plans", now - 30)],
    )
    .await;
    // b: ENGAGED (30), grade A, tag vip.
    let b = lead(
        &mut client,
        "b@seg.example",
        "software",
        "",
        &["vip"],
        &[("/pricing", now - 60)],
    )
    .await;
    // c: ENGAGED (0), grade C, tag vipx (not vip), a literal `50%_off` URL.
    let c = lead(
        &mut client,
        "c@seg.example",
        "retail",
        "JP",
        &["vipx"],
        &[("/promo/50%_off", now - 60)],
    )
    .await;
    // d: ENGAGED (0), grade D, a URL `500ff` that `%`/`_` wildcards would match.
    let d = lead(
        &mut client,
        "d@seg.example",
        "",
        "US",
        &[],
        &[("/promo/500ff", now - 60)],
    )
    .await;
    // f: MQL (60) from two pricing views ten days ago, grade D.
    let f = lead(
        &mut client,
        "f@seg.example",
        "",
        "",
        &["new"],
        &[("/pricing", old), ("/pricing", old + 60)],
    )
    .await;

    let set = |names: &[&String]| names.iter().map(|n| (*n).clone()).collect::<BTreeSet<_>>();
    let cases: Vec<(&str, BTreeSet<String>)> = vec![
        ("stage = MQL", set(&[&a, &f])),
        ("stage = LIFECYCLE_STAGE_ENGAGED", set(&[&b, &c, &d])),
        ("score >= 30 AND score < 60", set(&[&b])),
        ("grade >= B", set(&[&a, &b])),
        ("grade <= C", set(&[&c, &d, &f])),
        ("grade = C", set(&[&c])),
        (r#"tags : "vip""#, set(&[&a, &b])),
        (r#"tags : "new" AND NOT stage = MQL"#, set(&[])),
        (
            r#"activity(kind = "PAGE_VIEW", url ~ "/pricing", within = "7d") >= 2"#,
            set(&[&a]),
        ),
        (
            r#"activity(kind = ACTIVITY_KIND_PAGE_VIEW, url ~ "/pricing") >= 2"#,
            set(&[&a, &f]),
        ),
        (r#"activity(within = "24h") = 0"#, set(&[&f])),
        ("activity() >= 1", set(&[&a, &b, &c, &d, &f])),
        (r#"activity(kind = "FORM_SUBMIT") > 0"#, set(&[])),
        (r#"activity(url ~ "50%_off") >= 1"#, set(&[&c])),
        // Pricing views: a 2, b 1, c 0, d 0, f 2 (counts are cut at n + 1; every comparison
        // still holds).
        (r#"activity(url ~ "/pricing") < 2"#, set(&[&b, &c, &d])),
        (r#"activity(url ~ "/pricing") != 1"#, set(&[&a, &c, &d, &f])),
        (r#"activity(url ~ "/pricing") = 2"#, set(&[&a, &f])),
        (
            r#"activity(url ~ "/pricing") <= 1 AND activity(url ~ "/pricing") > 0"#,
            set(&[&b]),
        ),
        (
            r#"activity(url ~ "/pricing") > -1"#,
            set(&[&a, &b, &c, &d, &f]),
        ),
        (
            r#"NOT (tags : "vip") AND (industry = "software" OR country_code = "JP")"#,
            set(&[&c]),
        ),
        (
            r#"email : "@seg.example" AND (country_code = "US" OR grade = A)"#,
            set(&[&a, &b, &d]),
        ),
        (
            r#"create_time > "2000-01-01T00:00:00Z""#,
            set(&[&a, &b, &c, &d, &f]),
        ),
        (r#"email = "x'; DROP TABLE leads; --""#, set(&[])),
    ];
    for (filter, expected) in &cases {
        let created = segment(&mut client, filter).await;
        let (got, _) = members(&mut client, &created.name, 1000).await;
        let got: BTreeSet<String> = got.into_iter().collect();
        assert_eq!(&got, expected, "members of `{filter}`");
        assert_eq!(
            count(&mut client, &created.name).await,
            expected.len() as i64,
            "count of `{filter}`"
        );
    }

    // The injection attempt stayed a value: the leads table is still there.
    let leads = client
        .list_leads(ListLeadsRequest::default())
        .await
        .expect("leads table still exists")
        .into_inner();
    assert_eq!(leads.leads.len(), 5);

    // Paging with page size 2 visits every member once, oldest first.
    let all = segment(&mut client, "activity() >= 1").await;
    let (visited, pages) = members(&mut client, &all.name, 2).await;
    assert_eq!(
        visited,
        vec![a.clone(), b.clone(), c.clone(), d.clone(), f.clone()]
    );
    assert_eq!(pages, 3);

    // A token belongs to its segment and its version.
    let first = client
        .list_segment_members(ListSegmentMembersRequest {
            name: all.name.clone(),
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .expect("first page")
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let other = segment(&mut client, "activity() >= 0").await;
    let error = client
        .list_segment_members(ListSegmentMembersRequest {
            name: other.name.clone(),
            page_size: 2,
            page_token: first.next_page_token.clone(),
        })
        .await
        .expect_err("token of another segment");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&error), vec!["page_token".to_owned()]);
    let updated = client
        .update_segment(UpdateSegmentRequest {
            segment: Some(Segment {
                name: all.name.clone(),
                filter: "activity() >= 2".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["filter".into()],
            }),
        })
        .await
        .expect("update filter")
        .into_inner();
    assert_ne!(updated.etag, all.etag);
    assert_eq!(updated.display_name, all.display_name);
    let error = client
        .list_segment_members(ListSegmentMembersRequest {
            name: all.name.clone(),
            page_size: 2,
            page_token: first.next_page_token,
        })
        .await
        .expect_err("token of an older version");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&error), vec!["page_token".to_owned()]);
    assert_eq!(count(&mut client, &all.name).await, 2);
    let error = client
        .list_segment_members(ListSegmentMembersRequest {
            name: all.name.clone(),
            page_size: -1,
            page_token: String::new(),
        })
        .await
        .expect_err("negative page size");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&error), vec!["page_size".to_owned()]);

    suite.stop().await;
}
both_backends!(members, segments_select_their_members);

async fn segments_crud_and_bad_filters(backend: Backend) {
    let Some(suite) = Suite::leads_only(backend).await else {
        return;
    };
    let mut client = suite.leads().await;
    let listed = |client: &mut LeadsServiceClient<Authed>| {
        let mut client = client.clone();
        async move {
            client
                .list_segments(ListSegmentsRequest::default())
                .await
                .expect("list segments")
                .into_inner()
                .segments
                .len()
        }
    };

    let bad = [
        ("score >= 5 AND nope = 1", "position 15"),
        (r#"activity(kind = "NOPE") > 1"#, "position 16"),
        (r#"activity(url ~ "/x") >= many"#, "position 24"),
        ("(stage = MQL", "position 12"),
        (r#"email = "open"#, "position 8"),
    ];
    for (filter, position) in bad {
        let error = client
            .create_segment(CreateSegmentRequest {
                segment: Some(Segment {
                    display_name: "bad".into(),
                    filter: filter.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect_err(filter);
        assert_eq!(error.code(), Code::InvalidArgument, "{filter}");
        assert_eq!(
            violated_fields(&error),
            vec!["segment.filter".to_owned()],
            "{filter}"
        );
        let described = {
            use tonic_types::StatusExt;
            error
                .get_error_details()
                .bad_request()
                .map(|b| b.field_violations[0].description.clone())
                .unwrap_or_default()
        };
        assert!(
            described.contains(position),
            "`{filter}`: `{described}` should name {position}"
        );
    }
    assert_eq!(listed(&mut client).await, 0, "bad filters create nothing");

    let error = client
        .create_segment(CreateSegmentRequest {
            segment: Some(Segment::default()),
            ..Default::default()
        })
        .await
        .expect_err("empty segment");
    let mut fields = violated_fields(&error);
    fields.sort();
    assert_eq!(fields, vec!["segment.display_name", "segment.filter"]);

    let request = CreateSegmentRequest {
        segment: Some(Segment {
            display_name: "VIPs".into(),
            description: "tagged vip".into(),
            filter: r#"tags : "vip""#.into(),
            ..Default::default()
        }),
        segment_id: "vips".into(),
        request_id: "seg-1".into(),
    };
    let created = client
        .create_segment(request.clone())
        .await
        .expect("create")
        .into_inner();
    assert_eq!(created.name, "segments/vips");
    let retried = client
        .create_segment(request)
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retried, created);
    let got = client
        .get_segment(GetSegmentRequest {
            name: created.name.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got, created);

    let error = client
        .update_segment(UpdateSegmentRequest {
            segment: Some(Segment {
                name: created.name.clone(),
                filter: "score >>".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["filter".into()],
            }),
        })
        .await
        .expect_err("bad filter on update");
    assert_eq!(violated_fields(&error), vec!["segment.filter".to_owned()]);
    let updated = client
        .update_segment(UpdateSegmentRequest {
            segment: Some(Segment {
                name: created.name.clone(),
                display_name: "Very important".into(),
                etag: created.etag.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .expect("update name")
        .into_inner();
    assert_eq!(updated.display_name, "Very important");
    assert_eq!(updated.filter, created.filter);

    let error = client
        .delete_segment(DeleteSegmentRequest {
            name: created.name.clone(),
            etag: created.etag.clone(),
        })
        .await
        .expect_err("stale etag");
    assert_eq!(error.code(), Code::Aborted);
    client
        .delete_segment(DeleteSegmentRequest {
            name: created.name.clone(),
            etag: updated.etag,
        })
        .await
        .expect("delete");
    let error = client
        .count_segment_members(CountSegmentMembersRequest {
            name: created.name.clone(),
        })
        .await
        .expect_err("deleted");
    assert_eq!(error.code(), Code::NotFound);
    assert_eq!(listed(&mut client).await, 0);

    suite.stop().await;
}
both_backends!(crud, segments_crud_and_bad_filters);
