use std::time::{Duration, Instant};

use kizuna_proto::gateway::{ListTransitionsRequest, Transition};
use kizuna_settings::{GatewaySettings, Secret};
use kizuna_testing::{Backend, TestDb};
use tonic::metadata::MetadataMap;

use super::*;
use crate::migrations::MIGRATIONS;

// ---------------------------------------------------------------- validation

fn valid() -> Subject {
    Subject {
        display_name: "山田 太郎".into(),
        email: "taro@example.jp".into(),
        stage: LifecycleStage::Lead as i32,
        ..Subject::default()
    }
}

fn violations(subject: &Subject) -> Vec<String> {
    match validate(subject, "subject") {
        Ok(()) => Vec::new(),
        Err(ApiError::InvalidArgument(violations)) => {
            violations.into_iter().map(|v| v.field).collect()
        }
        Err(other) => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_plain_subject_is_valid() {
    assert!(violations(&valid()).is_empty());
    let linked = Subject {
        lead: "leads/0192f0c4-7b1e-7c3a-9d2e-1a2b3c4d5e6f".into(),
        deals: vec!["deals/1".into(), "deals/2".into()],
        account: "accounts/acme".into(),
        email: String::new(),
        ..valid()
    };
    assert!(violations(&linked).is_empty());
}

#[test]
fn some_identity_is_required() {
    let anonymous = Subject {
        display_name: "nobody".into(),
        stage: LifecycleStage::Lead as i32,
        ..Subject::default()
    };
    assert_eq!(violations(&anonymous), ["subject"]);
    let blank = Subject {
        email: "   ".into(),
        ..anonymous.clone()
    };
    assert!(violations(&blank).contains(&"subject".to_owned()));
    for one in [
        Subject {
            lead: "leads/1".into(),
            ..anonymous.clone()
        },
        Subject {
            account: "accounts/1".into(),
            ..anonymous.clone()
        },
        Subject {
            phone: "090-1234-5678".into(),
            ..anonymous.clone()
        },
    ] {
        assert!(violations(&one).is_empty(), "{one:?}");
    }
}

#[test]
fn links_must_name_the_right_collection() {
    let subject = Subject {
        lead: "deals/1".into(),
        account: "accounts/".into(),
        deals: vec![
            "deals/ok".into(),
            "leads/1".into(),
            "deals/UPPER".into(),
            "deals/1/extra".into(),
            String::new(),
        ],
        ..valid()
    };
    assert_eq!(
        violations(&subject),
        [
            "subject.lead",
            "subject.account",
            "subject.deals[1]",
            "subject.deals[2]",
            "subject.deals[3]",
            "subject.deals[4]",
        ]
    );
}

#[test]
fn deals_are_unique_and_bounded() {
    let twice = Subject {
        deals: vec!["deals/1".into(), "deals/2".into(), "deals/1".into()],
        ..valid()
    };
    assert_eq!(violations(&twice), ["subject.deals[2]"]);
    let at_limit = Subject {
        deals: (0..MAX_DEALS).map(|i| format!("deals/{i}")).collect(),
        ..valid()
    };
    assert!(violations(&at_limit).is_empty());
    let over = Subject {
        deals: (0..=MAX_DEALS).map(|i| format!("deals/{i}")).collect(),
        ..valid()
    };
    assert_eq!(violations(&over), ["subject.deals"]);
}

#[test]
fn contact_fields_and_lengths() {
    let subject = Subject {
        display_name: "あ".repeat(201),
        email: "not-an-email".into(),
        phone: "call me".into(),
        ..valid()
    };
    assert_eq!(
        violations(&subject),
        ["subject.display_name", "subject.email", "subject.phone"]
    );
    let long_phone = Subject {
        phone: format!("090-1234-5678{}", " ".repeat(20)),
        ..valid()
    };
    assert_eq!(violations(&long_phone), ["subject.phone"]);
    let exactly_200 = Subject {
        display_name: "あ".repeat(200),
        ..valid()
    };
    assert!(violations(&exactly_200).is_empty());
}

#[test]
fn stage_must_be_known_and_defaults_to_lead_on_create() {
    let unknown = Subject {
        stage: 99,
        ..valid()
    };
    assert_eq!(violations(&unknown), ["subject.stage"]);
    let unspecified = Subject {
        stage: 0,
        ..valid()
    };
    assert_eq!(violations(&unspecified), ["subject.stage"]);
    let new = prepare_new(unspecified);
    assert_eq!(new.stage, LifecycleStage::Lead as i32);
    assert!(violations(&new).is_empty());
    let customer = prepare_new(Subject {
        stage: LifecycleStage::Customer as i32,
        ..valid()
    });
    assert_eq!(customer.stage, LifecycleStage::Customer as i32);
}

#[test]
fn output_only_fields_are_dropped_on_create() {
    let new = prepare_new(Subject {
        name: "subjects/mine".into(),
        etag: "7".into(),
        missing_parts: vec!["leads".into()],
        lead_record: Some(Default::default()),
        deal_records: vec![Default::default()],
        account_record: Some(Default::default()),
        create_time: Some(Default::default()),
        ..valid()
    });
    assert!(new.name.is_empty() && new.etag.is_empty() && new.create_time.is_none());
    assert!(new.lead_record.is_none() && new.deal_records.is_empty());
    assert!(new.account_record.is_none() && new.missing_parts.is_empty());
}

// ---------------------------------------------------------------- store

/// A migrated store on a fresh SQLite database (always available, unlike PostgreSQL).
async fn fixture() -> kizuna_testing::TestStore {
    kizuna_testing::migrated_store(Backend::Sqlite, crate::SERVICE, MIGRATIONS)
        .await
        .expect("sqlite")
}

fn already_exists(error: Error) -> String {
    let status = tonic::Status::from(error);
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
    status.message().to_owned()
}

#[tokio::test]
async fn create_is_idempotent_by_request_id() {
    let f = fixture().await;
    let first = create(&f.store, valid(), "", "req-1")
        .await
        .expect("create");
    assert!(first.name.starts_with("subjects/"));
    assert_eq!(first.stage, LifecycleStage::Lead as i32);
    let again = create(
        &f.store,
        Subject {
            display_name: "changed".into(),
            ..valid()
        },
        "",
        "req-1",
    )
    .await
    .expect("retry");
    assert_eq!(again, first);
    let other = create(&f.store, valid(), "", "req-2")
        .await
        .expect("create");
    assert_ne!(other.name, first.name);
    let too_long = create(&f.store, valid(), "", &"r".repeat(101)).await;
    assert!(matches!(
        too_long,
        Err(Error::Api(ApiError::InvalidArgument(_)))
    ));
}

#[tokio::test]
async fn one_subject_per_lead_and_per_account() {
    let f = fixture().await;
    let first = create(
        &f.store,
        Subject {
            lead: "leads/l1".into(),
            account: "accounts/a1".into(),
            ..valid()
        },
        "first",
        "",
    )
    .await
    .expect("create");
    assert_eq!(first.name, "subjects/first");
    for clash in [
        Subject {
            lead: "leads/l1".into(),
            ..valid()
        },
        Subject {
            account: "accounts/a1".into(),
            ..valid()
        },
    ] {
        let error = create(&f.store, clash, "", "")
            .await
            .expect_err("duplicate");
        assert!(matches!(
            &error,
            Error::DuplicateSubject { existing, .. } if existing == "subjects/first"
        ));
        assert!(already_exists(error).contains("subjects/first"));
    }
    // A taken id is also ALREADY_EXISTS, naming the id.
    let error = create(&f.store, valid(), "first", "")
        .await
        .expect_err("taken id");
    assert!(already_exists(error).contains("subjects/first"));
    // Other links are fine.
    create(
        &f.store,
        Subject {
            lead: "leads/l2".into(),
            account: "accounts/a2".into(),
            ..valid()
        },
        "",
        "",
    )
    .await
    .expect("distinct links");
}

#[tokio::test]
async fn a_lost_insert_race_is_explained() {
    // What a create that lost a unique index to a concurrent one answers (PostgreSQL only
    // races; SQLite serializes writers).
    let f = fixture().await;
    let winner = create(
        &f.store,
        Subject {
            lead: "leads/l1".into(),
            ..valid()
        },
        "winner",
        "req-w",
    )
    .await
    .expect("create");
    let index_error = || ApiError::AlreadyExists {
        kind: "Subject",
        name: "subjects/loser".into(),
    };
    // A concurrent retry of the same request: its answer.
    let same = resolve_conflict(&f.store, &valid(), "req-w", index_error())
        .await
        .expect("first answer");
    assert_eq!(same, winner);
    // Another subject took the lead: name it.
    let clash = Subject {
        lead: "leads/l1".into(),
        ..valid()
    };
    let error = resolve_conflict(&f.store, &clash, "req-other", index_error())
        .await
        .expect_err("duplicate");
    assert!(already_exists(error).contains("subjects/winner"));
    // Otherwise the id was taken.
    let error = resolve_conflict(&f.store, &valid(), "", index_error())
        .await
        .expect_err("taken id");
    assert!(already_exists(error).contains("subjects/loser"));
}

fn mask(paths: &[&str]) -> FieldMask {
    FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    }
}

#[tokio::test]
async fn update_follows_the_mask_and_guards() {
    let f = fixture().await;
    let subject = create(&f.store, valid(), "s1", "").await.expect("create");
    create(
        &f.store,
        Subject {
            lead: "leads/taken".into(),
            ..valid()
        },
        "s2",
        "",
    )
    .await
    .expect("create");

    let patch = Subject {
        name: subject.name.clone(),
        etag: subject.etag.clone(),
        stage: LifecycleStage::Mql as i32,
        deals: vec!["deals/9".into()],
        display_name: "ignored: not in the mask".into(),
        ..Subject::default()
    };
    let updated = update(&f.store, patch, Some(&mask(&["stage", "deals"])))
        .await
        .expect("update");
    assert_eq!(updated.stage, LifecycleStage::Mql as i32);
    assert_eq!(updated.deals, ["deals/9"]);
    assert_eq!(updated.display_name, subject.display_name);
    assert_ne!(updated.etag, subject.etag);

    // A stale etag is ABORTED.
    let stale = Subject {
        name: subject.name.clone(),
        etag: subject.etag.clone(),
        display_name: "x".into(),
        ..Subject::default()
    };
    let status = tonic::Status::from(
        update(&f.store, stale, Some(&mask(&["display_name"])))
            .await
            .expect_err("stale"),
    );
    assert_eq!(status.code(), tonic::Code::Aborted);

    // Output-only paths are refused; clearing the stage is refused; nothing changes.
    for (paths, stage) in [(&["missing_parts"][..], 0), (&["stage"][..], 0)] {
        let patch = Subject {
            name: subject.name.clone(),
            stage,
            ..Subject::default()
        };
        let status = tonic::Status::from(
            update(&f.store, patch, Some(&mask(paths)))
                .await
                .expect_err("invalid"),
        );
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{paths:?}");
    }

    // The name must be a subject's.
    let patch = Subject {
        name: "leads/s1".into(),
        ..Subject::default()
    };
    let refused = update(&f.store, patch, None).await;
    assert!(matches!(
        refused,
        Err(Error::Api(ApiError::InvalidArgument(_)))
    ));

    // Taking another subject's lead is ALREADY_EXISTS naming it; keeping one's own is fine.
    let patch = Subject {
        name: subject.name.clone(),
        lead: "leads/taken".into(),
        ..Subject::default()
    };
    let error = update(&f.store, patch, Some(&mask(&["lead"])))
        .await
        .expect_err("taken");
    assert!(already_exists(error).contains("subjects/s2"));
    let patch = Subject {
        name: "subjects/s2".into(),
        display_name: "renamed".into(),
        ..Subject::default()
    };
    let renamed = update(&f.store, patch, None).await.expect("implied mask");
    assert_eq!(renamed.lead, "leads/taken");
    assert_eq!(renamed.display_name, "renamed");

    let current = f.store.get::<Subjects>(&subject.name).await.expect("get");
    assert_eq!(current, updated);
}

async fn record_transition(
    store: &Store,
    subject: &str,
    to: LifecycleStage,
    at: i64,
) -> Transition {
    let mut tx = store.begin().await.expect("begin");
    let transition = tx
        .insert::<Transitions>(
            subject,
            "",
            Transition {
                from_stage: LifecycleStage::Lead as i32,
                to_stage: to as i32,
                cause_service: "leads".into(),
                cause_event_type: "lead.updated".into(),
                cause_event_sequence: at,
                transition_time: Some(kizuna_store::time::to_timestamp(at * 1_000_000)),
                ..Transition::default()
            },
        )
        .await
        .expect("insert");
    tx.commit().await.expect("commit");
    transition
}

#[tokio::test]
async fn lists_filter_by_links_and_full_stage_names() {
    let f = fixture().await;
    let a = create(
        &f.store,
        Subject {
            deals: vec!["deals/42".into(), "deals/7".into()],
            stage: LifecycleStage::Customer as i32,
            ..valid()
        },
        "a",
        "",
    )
    .await
    .expect("a");
    let b = create(
        &f.store,
        Subject {
            email: "Hanako@Example.JP".into(),
            ..valid()
        },
        "b",
        "",
    )
    .await
    .expect("b");
    let names = |page: Page<Subject>| page.items.into_iter().map(|s| s.name).collect::<Vec<_>>();
    let list_with = |filter: &str| ListSubjectsRequest {
        filter: filter.to_owned(),
        ..ListSubjectsRequest::default()
    };
    let all = list(&f.store, list_with("")).await.expect("list");
    assert_eq!(names(all), [b.name.clone(), a.name.clone()], "newest first");
    for (filter, expected) in [
        ("stage = LIFECYCLE_STAGE_CUSTOMER", vec![a.name.clone()]),
        ("stage = CUSTOMER", vec![a.name.clone()]),
        ("deals:\"deals/42\"", vec![a.name.clone()]),
        ("email_key = \"hanako@example.jp\"", vec![b.name.clone()]),
    ] {
        let page = list(&f.store, list_with(filter)).await.expect(filter);
        assert_eq!(names(page), expected, "{filter}");
    }
    for bad in [
        "secret = 1".to_owned(),
        format!("email = \"{}\"", "x".repeat(2000)),
    ] {
        let refused = list(&f.store, list_with(&bad)).await;
        assert!(matches!(
            refused,
            Err(Error::Api(ApiError::InvalidArgument(_)))
        ));
    }

    // Transitions: newest first by default, filtered by full stage names, per subject or all.
    let t1 = record_transition(&f.store, &a.name, LifecycleStage::Mql, 1_700_000_000).await;
    let t2 = record_transition(&f.store, &a.name, LifecycleStage::Customer, 1_700_000_100).await;
    let t3 = record_transition(&f.store, &b.name, LifecycleStage::Mql, 1_700_000_050).await;
    let list_t = |parent: &str, filter: &str| ListTransitionsRequest {
        parent: parent.to_owned(),
        filter: filter.to_owned(),
        ..ListTransitionsRequest::default()
    };
    let tnames =
        |page: Page<Transition>| page.items.into_iter().map(|t| t.name).collect::<Vec<_>>();
    let of_a = crate::transitions::list(&f.store, list_t(&a.name, ""))
        .await
        .expect("list");
    assert_eq!(tnames(of_a), [t2.name.clone(), t1.name.clone()]);
    let mqls = crate::transitions::list(
        &f.store,
        list_t("subjects/-", "to_stage = LIFECYCLE_STAGE_MQL"),
    )
    .await
    .expect("list");
    assert_eq!(tnames(mqls), [t3.name.clone(), t1.name.clone()]);
    let got = crate::transitions::get(&f.store, &t1.name)
        .await
        .expect("get");
    assert_eq!(got, t1);

    // Deleting a subject takes its transitions with it.
    delete(&f.store, &a.name, "").await.expect("delete");
    let gone = crate::transitions::get(&f.store, &t1.name).await;
    assert!(matches!(gone, Err(Error::Api(ApiError::NotFound { .. }))));
    let left = crate::transitions::list(&f.store, list_t("subjects/-", ""))
        .await
        .expect("list");
    assert_eq!(tnames(left), [t3.name]);
    let stale = delete(&f.store, &b.name, "999").await;
    assert!(matches!(
        stale,
        Err(Error::Api(ApiError::EtagMismatch { .. }))
    ));
}

// ---------------------------------------------------------------- Customer 360

fn upstreams(leads: &str, deals: &str, accounts: &str, timeout_ms: u64) -> Upstreams {
    Upstreams::connect_lazy(&GatewaySettings {
        leads_url: leads.to_owned(),
        deals_url: deals.to_owned(),
        accounts_url: accounts.to_owned(),
        upstream_timeout_ms: timeout_ms,
    })
    .expect("urls")
}

/// A closed port: connections are refused at once.
const DOWN: &str = "http://127.0.0.1:1";

fn linked() -> Subject {
    Subject {
        lead: "leads/l1".into(),
        deals: vec!["deals/1".into(), "deals/2".into()],
        account: "accounts/a1".into(),
        ..valid()
    }
}

#[tokio::test]
async fn basic_view_makes_no_calls_and_unknown_views_are_refused() {
    let f = fixture().await;
    let created = create(&f.store, linked(), "s", "").await.expect("create");
    let up = upstreams(DOWN, DOWN, DOWN, 1000);
    let call = CallContext::default();
    for view in [SubjectView::Unspecified, SubjectView::Basic] {
        let got = get(&f.store, &up, &call, &created.name, view as i32)
            .await
            .expect("get");
        assert_eq!(got, created);
    }
    let bad = get(&f.store, &up, &call, &created.name, 9).await;
    assert!(matches!(bad, Err(Error::Api(ApiError::InvalidArgument(_)))));
    let missing = get(&f.store, &up, &call, "subjects/nope", 2).await;
    assert!(matches!(
        missing,
        Err(Error::Api(ApiError::NotFound { .. }))
    ));
}

#[tokio::test]
async fn full_view_names_every_unreachable_part() {
    let f = fixture().await;
    let created = create(&f.store, linked(), "s", "").await.expect("create");
    let up = upstreams(DOWN, DOWN, DOWN, 2000);
    let got = get(
        &f.store,
        &up,
        &CallContext::default(),
        &created.name,
        SubjectView::Full as i32,
    )
    .await
    .expect("a partial answer, not an error");
    assert_eq!(
        got.missing_parts,
        ["leads", "deals/1", "deals/2", "accounts"]
    );
    assert!(got.lead_record.is_none() && got.account_record.is_none());
    assert!(got.deal_records.is_empty());
    assert_eq!(got.name, created.name);
    // Nothing linked: nothing missing.
    let lone = create(&f.store, valid(), "lone", "").await.expect("create");
    let got = get(&f.store, &up, &CallContext::default(), &lone.name, 2)
        .await
        .expect("get");
    assert!(got.missing_parts.is_empty());
}

#[tokio::test]
async fn full_view_answers_within_the_callers_deadline() {
    let f = fixture().await;
    let created = create(&f.store, linked(), "s", "").await.expect("create");
    // A listener that never accepts: connections open but no service ever answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung_url = format!("http://{}", hung.local_addr().expect("addr"));
    let up = upstreams(&hung_url, &hung_url, &hung_url, 10_000);
    let mut metadata = MetadataMap::new();
    metadata.insert("grpc-timeout", "400m".parse().expect("ascii"));
    let arrived = Instant::now();
    let call = CallContext::from_metadata_at(&metadata, arrived);
    let got = get(&f.store, &up, &call, &created.name, 2)
        .await
        .expect("get");
    let took = arrived.elapsed();
    assert!(took < Duration::from_millis(400), "took {took:?}");
    assert_eq!(
        got.missing_parts,
        ["leads", "deals/1", "deals/2", "accounts"]
    );
    // Without a caller deadline the setting bounds the wait.
    let up = upstreams(&hung_url, &hung_url, &hung_url, 200);
    let started = Instant::now();
    let got = get(&f.store, &up, &CallContext::default(), &created.name, 2)
        .await
        .expect("get");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(got.missing_parts.len(), 4);
}

mod with_leads {
    //! Customer 360 against a real leads service: the caller's token is what gets the lead.

    use kizuna_auth::Authenticator;
    use kizuna_proto::leads::leads_service_client::LeadsServiceClient;
    use kizuna_proto::leads::{CreateLeadRequest, Lead};
    use kizuna_settings::Settings;

    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    struct Leads {
        _db: TestDb,
        url: String,
        shutdown: kizuna_server::Shutdown,
    }

    impl Drop for Leads {
        fn drop(&mut self) {
            self.shutdown.trigger();
        }
    }

    async fn start_leads() -> Leads {
        let db = TestDb::create(Backend::Sqlite).await.expect("sqlite");
        let mut settings = Settings::load(None).expect("defaults");
        settings.database.url = Secret::new(db.url.clone());
        settings.auth.signing_key = Secret::new(KEY);
        settings.server.host = "127.0.0.1".into();
        settings.server.port = 0;
        let app = kizuna_leads::Application::build(&settings)
            .await
            .expect("leads");
        let url = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown();
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        Leads {
            _db: db,
            url,
            shutdown,
        }
    }

    fn bearer(scopes: &[&str]) -> String {
        let token = Authenticator::new(KEY.as_bytes(), "kizuna", "kizuna")
            .issue("tester", scopes, Duration::from_secs(300))
            .expect("token");
        format!("Bearer {token}")
    }

    fn call_as(authorization: &str) -> CallContext {
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", authorization.parse().expect("ascii"));
        CallContext::from_metadata(&metadata)
    }

    #[tokio::test]
    async fn the_lead_is_read_with_the_callers_identity() {
        let leads = start_leads().await;
        let mut client = LeadsServiceClient::connect(leads.url.clone())
            .await
            .expect("connect");
        let mut request = tonic::Request::new(CreateLeadRequest {
            lead: Some(Lead {
                email: "taro@example.jp".into(),
                ..Lead::default()
            }),
            lead_id: "l1".into(),
            request_id: String::new(),
        });
        request
            .metadata_mut()
            .insert("authorization", bearer(&["admin"]).parse().expect("ascii"));
        let lead = client
            .create_lead(request)
            .await
            .expect("lead")
            .into_inner();

        let f = fixture().await;
        let created = create(&f.store, linked(), "s", "").await.expect("create");
        let up = upstreams(&leads.url, DOWN, DOWN, 3000);

        let reader = call_as(&bearer(&["gateway:read", "leads:read"]));
        let got = get(&f.store, &up, &reader, &created.name, 2)
            .await
            .expect("get");
        assert_eq!(
            got.lead_record.as_ref().map(|l| l.name.as_str()),
            Some("leads/l1")
        );
        assert_eq!(got.lead_record, Some(lead));
        assert_eq!(got.missing_parts, ["deals/1", "deals/2", "accounts"]);

        // A caller who may not read leads does not get the lead through the gateway.
        let outsider = call_as(&bearer(&["gateway:read"]));
        let got = get(&f.store, &up, &outsider, &created.name, 2)
            .await
            .expect("get");
        assert!(got.lead_record.is_none());
        assert_eq!(got.missing_parts[0], "leads");
        // Nor does an anonymous one.
        let got = get(&f.store, &up, &CallContext::default(), &created.name, 2)
            .await
            .expect("get");
        assert_eq!(got.missing_parts[0], "leads");
    }
}
