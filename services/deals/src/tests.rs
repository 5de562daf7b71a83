//! The domain flows against a real database (SQLite and PostgreSQL): transactions, events,
//! constraints.

use kizuna_errors::ApiError;
use kizuna_proto::deals::{Contact, Deal, Pipeline, deal};
use kizuna_proto::types::Date;
use kizuna_store::ListQuery;
use prost_types::FieldMask;

use crate::error::Error;
use crate::tables::{Deals, Pipelines};
use crate::testing::{
    Backend, both_backends, events_after, last_sequence, sales_pipeline, store, yen,
};
use crate::{contacts, deals, pipelines};

fn deal(name: &str) -> Deal {
    Deal {
        display_name: name.into(),
        amount: Some(yen(500_000)),
        ..Deal::default()
    }
}

fn mask(paths: &[&str]) -> FieldMask {
    FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    }
}

fn events(list: &[(String, String)]) -> Vec<&str> {
    list.iter().map(|(t, _)| t.as_str()).collect()
}

fn invalid_fields(error: Error) -> Vec<String> {
    match error {
        Error::Api(ApiError::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect(),
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

async fn a_deal_goes_from_first_stage_to_won_with_its_events(backend: Backend) {
    let Some(t) = store(backend).await else {
        return;
    };
    let s = &t.store;
    pipelines::create(s, sales_pipeline(true), "sales", "")
        .await
        .expect("pipeline");
    let before = last_sequence(s).await;
    let mut new = deal("Clinic chain");
    new.amount = None;
    new.line_items = vec![deal::LineItem {
        product: "seat".into(),
        quantity: 40,
        unit_price: Some(yen(25_000)),
        description: String::new(),
    }];
    new.expected_close_date = Some(Date {
        year: 2026,
        month: 3,
        day: 31,
    });
    new.lead = "leads/l1".into();
    let created = deals::create(s, new, "d1", "req-1").await.expect("created");
    assert_eq!(created.name, "deals/d1");
    assert_eq!(created.pipeline, "pipelines/sales");
    assert_eq!(created.stage, "qualification");
    assert_eq!(created.state, deal::State::Open as i32);
    assert_eq!(created.amount, Some(yen(1_000_000)));
    assert_eq!(created.probability, 0.1);
    assert_eq!(
        events_after(s, before).await,
        [("deal.created".to_owned(), "deals/d1".to_owned())]
    );

    // The same request again answers with the first result and writes nothing.
    let again = deals::create(s, deal("other"), "", "req-1")
        .await
        .expect("recalled");
    assert_eq!(again, created);
    assert_eq!(events_after(s, before).await.len(), 1);

    let before = last_sequence(s).await;
    let patch = Deal {
        name: "deals/d1".into(),
        etag: created.etag.clone(),
        stage: "closed_won".into(),
        ..Deal::default()
    };
    let won = deals::update(s, patch, Some(&mask(&["stage"])))
        .await
        .expect("won");
    assert_eq!(won.state, deal::State::Won as i32);
    assert_eq!(won.probability, 1.0);
    assert!(won.close_time.is_some());
    assert_eq!(won.lead, "leads/l1");
    assert_eq!(
        events(&events_after(s, before).await),
        ["deal.updated", "deal.stage_changed", "deal.won"]
    );
    assert_eq!(
        deals::stage_moves(s, "d1").await,
        [
            ("".into(), "qualification".into(), "OPEN".into()),
            ("qualification".into(), "closed_won".into(), "WON".into()),
        ]
    );

    // A stale etag is refused and changes nothing.
    let stale = Deal {
        name: "deals/d1".into(),
        etag: created.etag.clone(),
        owner: "users/x".into(),
        ..Deal::default()
    };
    let err = deals::update(s, stale, None).await.expect_err("stale");
    assert!(matches!(err, Error::Api(ApiError::EtagMismatch { .. })));

    let page = s
        .list::<Deals>(&ListQuery {
            filter: "state = STATE_WON AND amount.amount_minor >= 1000000 AND expected_close_date < \"2026-04-01\"".into(),
            order_by: "expected_close_date desc".into(),
            ..ListQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(page.items.len(), 1);
}

async fn losing_needs_a_reason_and_a_refusal_changes_nothing(backend: Backend) {
    let Some(t) = store(backend).await else {
        return;
    };
    let s = &t.store;
    pipelines::create(s, sales_pipeline(true), "sales", "")
        .await
        .expect("pipeline");
    let created = deals::create(s, deal("d"), "d1", "").await.expect("deal");
    let before = last_sequence(s).await;
    let patch = Deal {
        name: created.name.clone(),
        state: deal::State::Lost as i32,
        ..Deal::default()
    };
    let err = deals::update(s, patch.clone(), None)
        .await
        .expect_err("no reason");
    assert_eq!(invalid_fields(err), ["deal.close_reason"]);
    assert!(events_after(s, before).await.is_empty());
    assert_eq!(s.get::<Deals>("deals/d1").await.expect("get"), created);

    let lost = deals::update(
        s,
        Deal {
            close_reason: "chose a competitor".into(),
            ..patch
        },
        None,
    )
    .await
    .expect("lost");
    assert_eq!(lost.state, deal::State::Lost as i32);
    assert_eq!(lost.stage, "closed_lost");
    assert_eq!(
        events(&events_after(s, before).await),
        ["deal.updated", "deal.stage_changed", "deal.lost"]
    );

    // Back to an open stage: reopened, reason and close time cleared.
    let before = last_sequence(s).await;
    let reopened = deals::update(
        s,
        Deal {
            name: lost.name.clone(),
            stage: "proposal".into(),
            ..Deal::default()
        },
        None,
    )
    .await
    .expect("reopened");
    assert_eq!(reopened.state, deal::State::Open as i32);
    assert!(reopened.close_time.is_none() && reopened.close_reason.is_empty());
    assert_eq!(
        events(&events_after(s, before).await),
        ["deal.updated", "deal.stage_changed", "deal.reopened"]
    );
}

async fn deals_need_an_existing_pipeline_and_one_of_its_stages(backend: Backend) {
    let Some(t) = store(backend).await else {
        return;
    };
    let s = &t.store;
    let err = deals::create(s, deal("d"), "", "").await.expect_err("none");
    assert!(matches!(err, Error::NoDefaultPipeline), "{err:?}");
    let mut named = deal("d");
    named.pipeline = "pipelines/ghost".into();
    let err = deals::create(s, named, "", "").await.expect_err("ghost");
    assert_eq!(invalid_fields(err), ["deal.pipeline"]);

    pipelines::create(s, sales_pipeline(false), "sales", "")
        .await
        .expect("pipeline");
    let mut bad_stage = deal("d");
    bad_stage.pipeline = "pipelines/sales".into();
    bad_stage.stage = "signed".into();
    let err = deals::create(s, bad_stage, "", "")
        .await
        .expect_err("stage");
    assert_eq!(invalid_fields(err), ["deal.stage"]);

    let mut ok = deal("d");
    ok.pipeline = "pipelines/sales".into();
    ok.stage = "proposal".into();
    let created = deals::create(s, ok, "d1", "").await.expect("created");
    let err = deals::update(
        s,
        Deal {
            name: created.name.clone(),
            pipeline: "pipelines/ghost".into(),
            ..Deal::default()
        },
        None,
    )
    .await
    .expect_err("moved to a missing pipeline");
    assert_eq!(invalid_fields(err), ["deal.pipeline"]);
    let err = deals::update(
        s,
        Deal {
            name: created.name.clone(),
            probability: 0.9,
            ..Deal::default()
        },
        Some(&mask(&["probability"])),
    )
    .await
    .expect_err("output only");
    assert_eq!(invalid_fields(err), ["update_mask"]);
    let err = deals::update(
        s,
        Deal {
            name: created.name.clone(),
            lead: "leads/x".into(),
            ..Deal::default()
        },
        Some(&mask(&["lead"])),
    )
    .await
    .expect_err("immutable");
    assert_eq!(invalid_fields(err), ["update_mask"]);
}

async fn one_default_pipeline_at_a_time(backend: Backend) {
    let Some(t) = store(backend).await else {
        return;
    };
    let s = &t.store;
    pipelines::create(s, sales_pipeline(true), "first", "")
        .await
        .expect("first");
    let before = last_sequence(s).await;
    pipelines::create(s, sales_pipeline(true), "second", "")
        .await
        .expect("second");
    assert_eq!(
        events_after(s, before).await,
        [
            ("pipeline.created".to_owned(), "pipelines/second".to_owned()),
            ("pipeline.updated".to_owned(), "pipelines/first".to_owned()),
        ]
    );
    let first = s.get::<Pipelines>("pipelines/first").await.expect("first");
    assert!(!first.is_default);
    let marked = pipelines::update(
        s,
        Pipeline {
            name: "pipelines/first".into(),
            is_default: true,
            ..Pipeline::default()
        },
        None,
    )
    .await
    .expect("marked");
    assert!(marked.is_default);
    let defaults = s
        .list::<Pipelines>(&ListQuery {
            filter: "is_default = true".into(),
            ..ListQuery::default()
        })
        .await
        .expect("list");
    let names: Vec<_> = defaults.items.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["pipelines/first"]);
    let created = deals::create(s, deal("d"), "", "").await.expect("deal");
    assert_eq!(created.pipeline, "pipelines/first");
}

async fn pipelines_protect_their_open_deals(backend: Backend) {
    let Some(t) = store(backend).await else {
        return;
    };
    let s = &t.store;
    let p = pipelines::create(s, sales_pipeline(true), "sales", "")
        .await
        .expect("pipeline");
    let d = deals::create(s, deal("d"), "d1", "").await.expect("deal");

    let err = pipelines::delete(s, &p.name, "").await.expect_err("in use");
    assert!(matches!(err, Error::PipelineInUse { .. }), "{err:?}");

    let mut fewer = sales_pipeline(true);
    fewer.stages.remove(0);
    let err = pipelines::update(
        s,
        Pipeline {
            name: p.name.clone(),
            ..fewer
        },
        Some(&mask(&["stages"])),
    )
    .await
    .expect_err("stage in use");
    assert!(matches!(err, Error::StageInUse { ref stage, .. } if stage == "qualification"));

    // A new probability reaches the open deals of the stage.
    let mut repriced = sales_pipeline(true);
    repriced.stages[0].probability = 0.2;
    let before = last_sequence(s).await;
    pipelines::update(
        s,
        Pipeline {
            name: p.name.clone(),
            ..repriced
        },
        Some(&mask(&["stages"])),
    )
    .await
    .expect("repriced");
    assert_eq!(
        events(&events_after(s, before).await),
        ["pipeline.updated", "deal.updated"]
    );
    assert_eq!(
        s.get::<Deals>(&d.name).await.expect("deal").probability,
        0.2
    );

    deals::update(
        s,
        Deal {
            name: d.name.clone(),
            state: deal::State::Won as i32,
            ..Deal::default()
        },
        None,
    )
    .await
    .expect("won");
    pipelines::delete(s, &p.name, "").await.expect("deleted");
    // A closed deal whose pipeline is gone can still be edited.
    let edited = deals::update(
        s,
        Deal {
            name: d.name.clone(),
            owner: "users/hanako".into(),
            ..Deal::default()
        },
        None,
    )
    .await
    .expect("edited");
    assert_eq!(edited.state, deal::State::Won as i32);
    assert_eq!(edited.probability, 1.0);
    deals::delete(s, &d.name, &edited.etag)
        .await
        .expect("deleted");
    assert!(deals::stage_moves(s, "d1").await.is_empty());
}

async fn line_item_changes_recompute_the_amount_unless_it_is_given(backend: Backend) {
    let Some(t) = store(backend).await else {
        return;
    };
    let s = &t.store;
    pipelines::create(s, sales_pipeline(true), "sales", "")
        .await
        .expect("pipeline");
    let created = deals::create(s, deal("d"), "d1", "").await.expect("deal");
    let item = |quantity| deal::LineItem {
        product: "seat".into(),
        quantity,
        unit_price: Some(yen(1000)),
        description: String::new(),
    };
    let updated = deals::update(
        s,
        Deal {
            name: created.name.clone(),
            line_items: vec![item(3)],
            ..Deal::default()
        },
        None,
    )
    .await
    .expect("lines");
    assert_eq!(updated.amount, Some(yen(3000)));
    let updated = deals::update(
        s,
        Deal {
            name: created.name.clone(),
            line_items: vec![item(5)],
            amount: Some(yen(4500)),
            ..Deal::default()
        },
        Some(&mask(&["line_items", "amount"])),
    )
    .await
    .expect("discount");
    assert_eq!(updated.amount, Some(yen(4500)));
    let err = deals::update(
        s,
        Deal {
            name: created.name.clone(),
            line_items: vec![item(i64::MAX)],
            ..Deal::default()
        },
        Some(&mask(&["line_items"])),
    )
    .await
    .expect_err("overflow");
    assert_eq!(invalid_fields(err), ["deal.line_items[0]"]);
}

async fn contacts_are_never_doubled(backend: Backend) {
    let Some(t) = store(backend).await else {
        return;
    };
    let s = &t.store;
    let taro = contacts::create(
        s,
        Contact {
            family_name: "山田".into(),
            email: "Taro.Yamada@Example.co.jp".into(),
            phone: "090-1234-5678".into(),
            ..Contact::default()
        },
        "taro",
        "",
    )
    .await
    .expect("taro");
    let err = contacts::create(
        s,
        Contact {
            email: "ｔａｒｏ．ｙａｍａｄａ＠ｅｘａｍｐｌｅ．ｃｏ．ｊｐ".into(),
            ..Contact::default()
        },
        "",
        "",
    )
    .await
    .expect_err("same e-mail");
    assert!(
        matches!(err, Error::DuplicateContact { key: "email", ref existing } if *existing == taro.name),
        "{err:?}"
    );
    let err = contacts::create(
        s,
        Contact {
            phone: "+81 90 1234 5678".into(),
            ..Contact::default()
        },
        "",
        "",
    )
    .await
    .expect_err("same phone");
    assert!(matches!(err, Error::DuplicateContact { key: "phone", .. }));

    let hanako = contacts::create(
        s,
        Contact {
            given_name: "花子".into(),
            email: "hanako@example.jp".into(),
            ..Contact::default()
        },
        "",
        "",
    )
    .await
    .expect("hanako");
    let err = contacts::update(
        s,
        Contact {
            name: hanako.name.clone(),
            email: "TARO.yamada@example.co.jp".into(),
            ..Contact::default()
        },
        None,
    )
    .await
    .expect_err("update into a duplicate");
    assert!(matches!(err, Error::DuplicateContact { .. }));
    // Updating a contact with its own e-mail is not a duplicate.
    contacts::update(
        s,
        Contact {
            name: taro.name.clone(),
            email: "taro.yamada@example.co.jp".into(),
            ..Contact::default()
        },
        None,
    )
    .await
    .expect("own e-mail");
}
both_backends!(a_deal_goes_from_first_stage_to_won_with_its_events);
both_backends!(losing_needs_a_reason_and_a_refusal_changes_nothing);
both_backends!(deals_need_an_existing_pipeline_and_one_of_its_stages);
both_backends!(one_default_pipeline_at_a_time);
both_backends!(pipelines_protect_their_open_deals);
both_backends!(line_item_changes_recompute_the_amount_unless_it_is_given);
both_backends!(contacts_are_never_doubled);
