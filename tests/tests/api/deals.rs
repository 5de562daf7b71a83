//! Deals: pipelines, deals and contacts over gRPC, with bad input refused and nothing changed.

use futures::StreamExt;
use kizuna_proto::deals::deal::LineItem;
use kizuna_proto::deals::deals_service_client::DealsServiceClient;
use kizuna_proto::deals::pipeline::Stage;
use kizuna_proto::deals::*;
use kizuna_proto::types::Money;
use kizuna_tests::{Authed, Backend, Suite, both_backends, reason, violated_fields};
use prost_types::FieldMask;
use tonic::Code;

fn stage(id: &str, probability: f64, category: ForecastCategory) -> Stage {
    Stage {
        stage_id: id.into(),
        display_name: id.into(),
        probability,
        forecast_category: category as i32,
    }
}

fn pipeline() -> Pipeline {
    Pipeline {
        display_name: "New business".into(),
        stages: vec![
            stage("qualify", 0.1, ForecastCategory::Pipeline),
            stage("propose", 0.5, ForecastCategory::BestCase),
            stage("won", 1.0, ForecastCategory::ClosedWon),
            stage("lost", 0.0, ForecastCategory::ClosedLost),
        ],
        is_default: true,
        ..Default::default()
    }
}

fn yen(amount_minor: i64) -> Option<Money> {
    Some(Money {
        currency_code: "JPY".into(),
        amount_minor,
    })
}

async fn deal_count(client: &mut DealsServiceClient<Authed>) -> usize {
    client
        .list_deals(ListDealsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .deals
        .len()
}

async fn pipeline_and_deal_lifecycle(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let mut client = suite.deals().await;

    let bad_pipelines: Vec<(&str, Pipeline, &str)> = vec![
        (
            "no stages",
            Pipeline {
                stages: vec![],
                ..pipeline()
            },
            "pipeline.stages",
        ),
        (
            "repeated stage id",
            Pipeline {
                stages: vec![
                    stage("a", 0.1, ForecastCategory::Pipeline),
                    stage("a", 0.2, ForecastCategory::Pipeline),
                ],
                ..pipeline()
            },
            "pipeline.stages[1].stage_id",
        ),
        (
            "probability above one",
            Pipeline {
                stages: vec![stage("a", 1.5, ForecastCategory::Pipeline)],
                ..pipeline()
            },
            "pipeline.stages[0].probability",
        ),
        (
            "no name",
            Pipeline {
                display_name: String::new(),
                ..pipeline()
            },
            "pipeline.display_name",
        ),
    ];
    for (what, bad, field) in bad_pipelines {
        let error = client
            .create_pipeline(CreatePipelineRequest {
                pipeline: Some(bad),
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
        .list_pipelines(ListPipelinesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(
        listed.pipelines.is_empty(),
        "refused pipelines left nothing behind"
    );

    let pipeline = client
        .create_pipeline(CreatePipelineRequest {
            pipeline: Some(pipeline()),
            ..Default::default()
        })
        .await
        .expect("pipeline")
        .into_inner();

    let good = Deal {
        display_name: "Kizuna Trading: 20 seats".into(),
        pipeline: pipeline.name.clone(),
        line_items: vec![
            LineItem {
                product: "seat".into(),
                quantity: 20,
                unit_price: yen(12_000),
                ..Default::default()
            },
            LineItem {
                product: "onboarding".into(),
                quantity: 1,
                unit_price: yen(150_000),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let bad_deals: Vec<(&str, Deal, &str)> = vec![
        (
            "lower-case currency",
            Deal {
                line_items: vec![],
                amount: Some(Money {
                    currency_code: "jpy".into(),
                    amount_minor: 1,
                }),
                ..good.clone()
            },
            "deal.amount.currency_code",
        ),
        (
            "zero quantity",
            Deal {
                line_items: vec![LineItem {
                    product: "seat".into(),
                    quantity: 0,
                    unit_price: yen(1),
                    ..Default::default()
                }],
                ..good.clone()
            },
            "deal.line_items[0].quantity",
        ),
        (
            "unknown pipeline",
            Deal {
                pipeline: "pipelines/nope".into(),
                ..good.clone()
            },
            "deal.pipeline",
        ),
        (
            "overflowing total",
            Deal {
                line_items: vec![LineItem {
                    product: "x".into(),
                    quantity: i64::MAX,
                    unit_price: yen(2),
                    ..Default::default()
                }],
                ..good.clone()
            },
            "deal.line_items[0]",
        ),
    ];
    for (what, bad, field) in bad_deals {
        let error = client
            .create_deal(CreateDealRequest {
                deal: Some(bad),
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
    }
    assert_eq!(deal_count(&mut client).await, 0);

    let deal = client
        .create_deal(CreateDealRequest {
            deal: Some(good),
            request_id: "handoff-1".into(),
            ..Default::default()
        })
        .await
        .expect("deal")
        .into_inner();
    assert_eq!(
        deal.amount,
        yen(20 * 12_000 + 150_000),
        "amount is the sum of the lines"
    );
    assert_eq!(
        deal.stage, "qualify",
        "a new deal starts in the first stage"
    );
    assert_eq!(deal.state, deal::State::Open as i32);
    assert!((deal.probability - 0.1).abs() < 1e-9);

    let mask = |paths: &[&str]| {
        Some(FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        })
    };
    let output_only = client
        .update_deal(UpdateDealRequest {
            deal: Some(Deal {
                name: deal.name.clone(),
                probability: 0.9,
                ..Default::default()
            }),
            update_mask: mask(&["probability"]),
        })
        .await
        .expect_err("probability is output only");
    assert_eq!(violated_fields(&output_only), ["update_mask"]);

    let won = client
        .update_deal(UpdateDealRequest {
            deal: Some(Deal {
                name: deal.name.clone(),
                etag: deal.etag.clone(),
                stage: "won".into(),
                ..Default::default()
            }),
            update_mask: mask(&["stage"]),
        })
        .await
        .expect("win")
        .into_inner();
    assert_eq!(won.state, deal::State::Won as i32);
    assert!(won.close_time.is_some());

    let stale = client
        .update_deal(UpdateDealRequest {
            deal: Some(Deal {
                name: deal.name.clone(),
                etag: deal.etag.clone(),
                display_name: "renamed".into(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"]),
        })
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(reason(&stale), "ETAG_MISMATCH");

    // The win is on the event stream for the gateway to react to.
    let mut events = client
        .watch_events(WatchEventsRequest {
            after_sequence: 0,
            types: vec!["deal.won".into()],
        })
        .await
        .expect("watch")
        .into_inner();
    let event = events
        .next()
        .await
        .expect("item")
        .expect("ok")
        .event
        .expect("event");
    assert_eq!(event.subject, deal.name);
    suite.stop().await;
}
both_backends!(lifecycle, pipeline_and_deal_lifecycle);

async fn contacts_refuse_duplicates(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let mut client = suite.deals().await;
    let contact = Contact {
        family_name: "佐藤".into(),
        email: "sato@example.jp".into(),
        ..Default::default()
    };
    let first = client
        .create_contact(CreateContactRequest {
            contact: Some(contact),
            ..Default::default()
        })
        .await
        .expect("contact")
        .into_inner();
    let twin = Contact {
        family_name: "Sato".into(),
        email: "SATO@EXAMPLE.JP".into(),
        ..Default::default()
    };
    let error = client
        .create_contact(CreateContactRequest {
            contact: Some(twin),
            ..Default::default()
        })
        .await
        .expect_err("duplicate");
    assert_eq!(error.code(), Code::AlreadyExists);
    assert!(error.message().contains(&first.name));
    let bad = client
        .create_contact(CreateContactRequest {
            contact: Some(Contact {
                email: "nope".into(),
                family_name: "x".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("bad email");
    assert_eq!(violated_fields(&bad), ["contact.email"]);
    suite.stop().await;
}
both_backends!(contacts, contacts_refuse_duplicates);
