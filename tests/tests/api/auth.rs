//! Bearer tokens: missing, expired, wrong key or scope are refused; health and reflection open.

use std::time::Duration;

use kizuna_proto::leads::leads_service_client::LeadsServiceClient;
use kizuna_proto::leads::{CreateLeadRequest, Lead, ListLeadsRequest};
use kizuna_tests::{Backend, Bearer, Suite, both_backends, channel, token};
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

async fn refused_without_the_right_token(backend: Backend) {
    let Some(suite) = Suite::leads_only(backend).await else {
        return;
    };
    let port = suite.leads.port;
    let client = |token: Option<String>| async move {
        LeadsServiceClient::with_interceptor(channel(port).await, Bearer(token))
    };
    let list = ListLeadsRequest::default();

    let missing = client(None)
        .await
        .list_leads(list.clone())
        .await
        .expect_err("no token");
    assert_eq!(missing.code(), Code::Unauthenticated);

    let garbage = client(Some("not.a.jwt".into()))
        .await
        .list_leads(list.clone())
        .await
        .expect_err("garbage");
    assert_eq!(garbage.code(), Code::Unauthenticated);

    let foreign =
        kizuna_auth::Authenticator::new(b"some-other-key-some-other-key-123", "kizuna", "kizuna")
            .issue("x", &["admin"], Duration::from_secs(60))
            .expect("token");
    let wrong_key = client(Some(foreign))
        .await
        .list_leads(list.clone())
        .await
        .expect_err("wrong key");
    assert_eq!(wrong_key.code(), Code::Unauthenticated);

    let expired = expired_token();
    let expired = client(Some(expired))
        .await
        .list_leads(list.clone())
        .await
        .expect_err("expired");
    assert_eq!(expired.code(), Code::Unauthenticated);
    assert!(
        expired.message().contains("expired"),
        "{}",
        expired.message()
    );

    let other_team = client(Some(token(&["deals:write"])))
        .await
        .list_leads(list.clone())
        .await
        .expect_err("scope");
    assert_eq!(other_team.code(), Code::PermissionDenied);

    let reader = token(&["leads:read"]);
    client(Some(reader.clone()))
        .await
        .list_leads(list.clone())
        .await
        .expect("a reader can list");
    let write = client(Some(reader))
        .await
        .create_lead(CreateLeadRequest {
            lead: Some(Lead {
                email: "r@example.jp".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("a reader cannot write");
    assert_eq!(write.code(), Code::PermissionDenied);
    client(Some(token(&["leads:write"])))
        .await
        .list_leads(list)
        .await
        .expect("write implies read");

    // Health and reflection need no token.
    let mut health = HealthClient::new(channel(port).await);
    let status = health
        .check(HealthCheckRequest {
            service: "kizuna.leads.v1.LeadsService".into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    suite.stop().await;
}
both_backends!(tokens, refused_without_the_right_token);

fn expired_token() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    // Expired an hour ago, well beyond the verifier's leeway.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = kizuna_auth::Claims {
        sub: "x".into(),
        iss: "kizuna".into(),
        aud: "kizuna".into(),
        exp: now - 3600,
        iat: now - 7200,
        jti: "1".into(),
        scope: "admin".into(),
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(kizuna_tests::SIGNING_KEY.as_bytes()),
    )
    .expect("encode")
}
