//! The API as a client meets it (issue 10): a phone with the trunk `0` after the country code is
//! the same number, hostile input gets a small error a default client can read, an oversized
//! request is RESOURCE_EXHAUSTED, documented limits are enforced and named, reflection lists
//! only what a port serves, and token refusals say what is wrong in words.

use std::collections::HashMap;

use kizuna_proto::leads::leads_service_client::LeadsServiceClient;
use kizuna_proto::leads::scoring_model::FitRule;
use kizuna_proto::leads::scoring_model::fit_rule::Operator;
use kizuna_proto::leads::*;
use kizuna_tests::{
    Authed, Backend, Bearer, Running, TestDb, both_backends, channel, reason, settings_for,
    spawn_leads, token, violated_fields,
};
use tonic::Code;

use crate::lead_capture::{capture, capture_email};

type Client = LeadsServiceClient<Authed>;

/// The leads service alone on `backend`, with `max_request_bytes` when given, and an admin
/// client with tonic's default limits.
async fn start(backend: Backend, max_request_bytes: Option<usize>) -> Option<(Running, Client)> {
    kizuna_telemetry::init_for_tests();
    let db = TestDb::create(backend).await?;
    let mut settings = settings_for(&db.url);
    if let Some(limit) = max_request_bytes {
        settings.server.max_request_bytes = limit;
    }
    let leads = spawn_leads(db, settings).await;
    let client = LeadsServiceClient::with_interceptor(
        channel(leads.port).await,
        Bearer(Some(token(&["admin"]))),
    );
    Some((leads, client))
}

/// A request for a scoring model with one fit rule on `field`.
fn fit_model(field: String) -> CreateScoringModelRequest {
    CreateScoringModelRequest {
        scoring_model: Some(ScoringModel {
            display_name: "fit".into(),
            fit_rules: vec![FitRule {
                rule_id: "r".into(),
                field,
                operator: Operator::Equals as i32,
                value: "x".into(),
                points: 1.0,
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn phone(phone: &str) -> Lead {
    Lead {
        phone: phone.into(),
        ..Default::default()
    }
}

async fn trunk_prefix_after_country_code_is_one_number(backend: Backend) {
    let Some((leads, mut client)) = start(backend, None).await else {
        return;
    };
    let first = capture(
        &mut client,
        Lead {
            phone: "090-1234-5678".into(),
            email: "taro@example.jp".into(),
            ..Default::default()
        },
        "",
    )
    .await;
    assert_eq!(first.outcome, CaptureOutcome::Created as i32);
    let a = first.lead.expect("lead A");

    let duplicate = client
        .create_lead(CreateLeadRequest {
            lead: Some(phone("+81-(0)90-1234-5678")),
            ..Default::default()
        })
        .await
        .expect_err("the same number with the trunk 0 kept");
    assert_eq!(duplicate.code(), Code::AlreadyExists, "{duplicate:?}");
    assert!(
        duplicate.message().contains(&a.name),
        "{}",
        duplicate.message()
    );

    for spelling in [
        "+81-(0)90-1234-5678",
        "＋８１（０）９０－１２３４－５６７８",
        "0081 90 1234 5678",
        "010-81-90-1234-5678",
        "090–1234–5678 内線 12",
    ] {
        let merged = capture(&mut client, phone(spelling), "").await;
        assert_eq!(merged.outcome, CaptureOutcome::Merged as i32, "{spelling}");
        assert_eq!(merged.matched_on, "phone", "{spelling}");
        assert_eq!(merged.lead.expect("lead").name, a.name, "{spelling}");
    }
    let listed = client
        .list_leads(ListLeadsRequest {
            page_size: 10,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.leads.len(), 1, "every spelling merged into lead A");
    leads.stop().await;
}
both_backends!(
    phone_trunk_prefix,
    trunk_prefix_after_country_code_is_one_number
);

/// Bytes the status took as trailers, as sent: `grpc-message` percent-encoded (at most three
/// bytes per byte), `grpc-status-details-bin` in base64, and any other metadata.
fn trailer_bytes(status: &tonic::Status) -> usize {
    let metadata: usize = status
        .metadata()
        .clone()
        .into_headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    status.message().len() * 3 + status.details().len().div_ceil(3) * 4 + metadata
}

#[track_caller]
fn assert_small_invalid_argument(status: &tonic::Status, what: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    let bytes = trailer_bytes(status);
    assert!(bytes < 8 * 1024, "{what}: {bytes} bytes of trailers");
    assert_eq!(reason(status), "INVALID_ARGUMENT", "{what}");
    for field in violated_fields(status) {
        assert!(
            field.len() <= kizuna_errors::MAX_FIELD_BYTES,
            "{what}: {field}"
        );
    }
}

async fn hostile_input_gets_a_small_error(backend: Backend) {
    let Some((leads, mut client)) = start(backend, None).await else {
        return;
    };
    for length in [20_000, 100_000] {
        let key = "k".repeat(length);
        let lead = Lead {
            email: "hostile@example.jp".into(),
            custom_fields: HashMap::from([
                (key.clone(), "v".repeat(2_000)),
                (format!("{key}日本語"), "値".into()),
            ]),
            ..Default::default()
        };
        let refused = client
            .create_lead(CreateLeadRequest {
                lead: Some(lead),
                ..Default::default()
            })
            .await
            .expect_err("bad custom field keys");
        assert_small_invalid_argument(&refused, "custom_fields key");
        assert!(
            violated_fields(&refused)
                .iter()
                .any(|f| f.starts_with("lead.custom_fields")),
            "{:?}",
            violated_fields(&refused)
        );

        let lead = capture_email(&mut client, &format!("p{length}@example.jp")).await;
        let refused = client
            .create_activity(CreateActivityRequest {
                parent: lead.name.clone(),
                activity: Some(Activity {
                    kind: ActivityKind::PageView as i32,
                    properties: HashMap::from([(key.clone(), "v".repeat(2_000))]),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect_err("bad property key");
        assert_small_invalid_argument(&refused, "activity.properties key");

        let refused = client
            .create_scoring_model(fit_model(key.clone()))
            .await
            .expect_err("bad fit rule field");
        assert_small_invalid_argument(&refused, "fit_rules[].field");
        assert!(
            refused.message().contains("at most 100 characters"),
            "{}",
            refused.message()
        );

        let refused = client
            .get_lead(GetLeadRequest {
                name: format!("leads/{key}"),
            })
            .await
            .expect_err("no such lead");
        assert!(
            matches!(refused.code(), Code::NotFound | Code::InvalidArgument),
            "{refused:?}"
        );
        assert!(trailer_bytes(&refused) < 8 * 1024);
    }
    leads.stop().await;
}
both_backends!(hostile_input, hostile_input_gets_a_small_error);

async fn oversized_request_is_resource_exhausted(backend: Backend) {
    let limit = 64 * 1024;
    let Some((leads, mut client)) = start(backend, Some(limit)).await else {
        return;
    };
    let refused = client
        .create_lead(CreateLeadRequest {
            lead: Some(Lead {
                email: "big@example.jp".into(),
                company: "x".repeat(limit + 1),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains(&format!("{limit} bytes")),
        "{}",
        refused.message()
    );
    assert!(refused.message().contains("server.max_request_bytes"));
    assert_eq!(reason(&refused), "REQUEST_TOO_LARGE");

    // A stream's oversized message too.
    let big = TrackActivitiesRequest {
        activities: vec![
            TrackActivityRequest {
                parent: "leads/x".repeat(1_000),
                ..Default::default()
            };
            20
        ],
    };
    let refused = client
        .track_activities(tokio_stream::iter(vec![big]))
        .await
        .expect_err("over the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    leads.stop().await;
}
both_backends!(oversized_request, oversized_request_is_resource_exhausted);

async fn documented_limits_are_enforced_and_named(backend: Backend) {
    let Some((leads, mut client)) = start(backend, None).await else {
        return;
    };
    let lead = capture_email(&mut client, "limits@example.jp").await;
    let row = TrackActivityRequest {
        parent: lead.name.clone(),
        activity: Some(Activity {
            kind: ActivityKind::PageView as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let refused = client
        .track_activities(tokio_stream::iter(vec![TrackActivitiesRequest {
            activities: vec![row.clone(); 10_001],
        }]))
        .await
        .expect_err("10,001 rows in one message");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(violated_fields(&refused), ["activities"]);
    assert!(
        refused.message().contains("at most 10000 rows"),
        "{}",
        refused.message()
    );
    let accepted = client
        .track_activities(tokio_stream::iter(vec![TrackActivitiesRequest {
            activities: vec![row; 3],
        }]))
        .await
        .expect("a small message")
        .into_inner();
    assert_eq!(accepted.accepted_count, 3);

    // The fit-rule field limit is the proto's: 100 characters, room for a 64-character key.
    let longest_key = format!("custom_fields.{}", "k".repeat(64));
    client
        .create_scoring_model(fit_model(longest_key))
        .await
        .expect("a 64-character custom field key");
    let refused = client
        .create_scoring_model(fit_model(format!("custom_fields.{}", "k".repeat(87))))
        .await
        .expect_err("101 characters");
    assert_eq!(
        violated_fields(&refused),
        ["scoring_model.fit_rules[0].field"]
    );
    assert!(
        refused.message().contains("at most 100 characters"),
        "{}",
        refused.message()
    );

    // Segment filters: exponents accepted, out-of-range numbers and both limits named.
    let segment = |filter: &str| CreateSegmentRequest {
        segment: Some(Segment {
            display_name: "s".into(),
            filter: filter.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    for filter in [
        "score >= -1e308",
        "score > 1e3",
        "score < 1E-2 OR score = -0.5",
    ] {
        let created = client
            .create_segment(segment(filter))
            .await
            .unwrap_or_else(|e| panic!("{filter}: {e:?}"))
            .into_inner();
        let count = client
            .count_segment_members(CountSegmentMembersRequest { name: created.name })
            .await
            .unwrap_or_else(|e| panic!("{filter}: {e:?}"))
            .into_inner();
        let expected = i64::from(filter == "score >= -1e308" || filter.contains("1E-2"));
        assert_eq!(count.count, expected, "{filter}");
    }
    for (filter, words) in [
        ("score >= 1e309", "out of range"),
        (
            &format!("{}score > 1{}", "(".repeat(40), ")".repeat(40)),
            "32 levels",
        ),
        // 559 tokens in 1,955 characters (under the 2,000-character limit).
        (&vec!["score > 1"; 140].join(" AND "), "512 tokens"),
    ] {
        let refused = client
            .create_segment(segment(filter))
            .await
            .expect_err(filter);
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains(words), "{}", refused.message());
    }
    leads.stop().await;
}
both_backends!(documented_limits, documented_limits_are_enforced_and_named);

/// The services a reflection endpoint lists, asked through v1 and v1alpha.
async fn listed_services(port: u16) -> [Vec<String>; 2] {
    use tonic_reflection::pb::{v1, v1alpha};
    let mut v1_client =
        v1::server_reflection_client::ServerReflectionClient::new(channel(port).await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = v1_client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("v1 reflection")
        .into_inner();
    let response = responses.message().await.expect("v1").expect("a response");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("not a list: {response:?}")
    };
    let mut v1_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    v1_names.sort();

    let mut alpha_client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(port).await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = alpha_client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("v1alpha reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("v1alpha")
        .expect("a response");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("not a list: {response:?}")
    };
    let mut alpha_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    alpha_names.sort();
    [v1_names, alpha_names]
}

/// Whether v1 reflection on `port` describes `symbol` (answers with its file).
async fn describes(port: u16, symbol: &str) -> bool {
    use tonic_reflection::pb::v1;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel(port).await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(symbol.into()),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("v1 reflection")
        .into_inner();
    match responses.message().await {
        Ok(Some(response)) => matches!(
            response.message_response,
            Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
        ),
        Err(status) if status.code() == Code::NotFound => false,
        other => panic!("{symbol}: {other:?}"),
    }
}

async fn reflection_lists_what_the_port_serves(backend: Backend) {
    let Some(suite) = kizuna_tests::Suite::start(backend).await else {
        return;
    };
    for (port, own) in [
        (suite.leads.port, "kizuna.leads.v1.LeadsService"),
        (suite.deals.port, "kizuna.deals.v1.DealsService"),
        (suite.accounts.port, "kizuna.accounts.v1.AccountsService"),
        (suite.gateway.port, "kizuna.gateway.v1.GatewayService"),
    ] {
        let mut expected = vec![
            "grpc.health.v1.Health".to_owned(),
            "grpc.reflection.v1.ServerReflection".to_owned(),
            "grpc.reflection.v1alpha.ServerReflection".to_owned(),
            own.to_owned(),
        ];
        expected.sort();
        for listed in listed_services(port).await {
            assert_eq!(listed, expected, "port of {own}");
        }
        assert!(describes(port, own).await, "{own}");
        assert!(describes(port, "grpc.health.v1.Health").await, "{own}");
    }
    for other in [
        "kizuna.deals.v1.DealsService",
        "kizuna.accounts.v1.AccountsService",
        "kizuna.deals.v1.Deal",
    ] {
        assert!(
            !describes(suite.leads.port, other).await,
            "leads port describes {other}"
        );
    }
    suite.stop().await;
}
both_backends!(reflection_per_port, reflection_lists_what_the_port_serves);

async fn token_refusals_are_in_words(backend: Backend) {
    let Some((leads, _)) = start(backend, None).await else {
        return;
    };
    let channel = channel(leads.port).await;
    let call = |bearer: &str| {
        let mut client =
            LeadsServiceClient::with_interceptor(channel.clone(), Bearer(Some(bearer.to_owned())));
        async move {
            client
                .get_lead(GetLeadRequest {
                    name: "leads/x".into(),
                })
                .await
                .expect_err("refused")
        }
    };
    // alg none: header {"alg":"none"}, claims {"sub":"x"}, no signature.
    let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.";
    let other_key =
        kizuna_auth::Authenticator::new(b"another-key-another-key-another-key", "kizuna", "kizuna")
            .issue("x", &["admin"], std::time::Duration::from_secs(60))
            .expect("token");
    let other_audience = kizuna_auth::Authenticator::new(
        kizuna_tests::SIGNING_KEY.as_bytes(),
        "kizuna",
        "elsewhere",
    )
    .issue("x", &["admin"], std::time::Duration::from_secs(60))
    .expect("token");
    for (bearer, words) in [
        (none.to_owned(), "unsupported token algorithm `none`"),
        ("eyJhbGciOi$.x.y".to_owned(), "malformed token"),
        (other_key, "bad token signature"),
        (other_audience, "wrong token audience"),
    ] {
        let refused = call(&bearer).await;
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        assert!(refused.message().contains(words), "{}", refused.message());
        for internal in ["Json(", "Base64(", "InvalidByte", "Error("] {
            assert!(
                !refused.message().contains(internal),
                "{}",
                refused.message()
            );
        }
    }
    leads.stop().await;
}
both_backends!(token_refusals, token_refusals_are_in_words);
