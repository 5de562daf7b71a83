//! Gateway: a subject links a lead, its deals and its account; the FULL view reads them from the
//! three services and says which part is missing when one is down.

use kizuna_proto::accounts::{Account, CreateAccountRequest, account};
use kizuna_proto::deals::pipeline::Stage;
use kizuna_proto::deals::{
    CreateDealRequest, CreatePipelineRequest, Deal, ForecastCategory, Pipeline,
};
use kizuna_proto::gateway::*;
use kizuna_proto::leads::{CreateLeadRequest, Lead};
use kizuna_proto::types::Money;
use kizuna_tests::{Backend, Suite, both_backends, violated_fields};
use tonic::Code;

async fn subject_full_view(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let lead = suite
        .leads()
        .await
        .create_lead(CreateLeadRequest {
            lead: Some(Lead {
                email: "subject@example.jp".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("lead")
        .into_inner();
    let mut deals = suite.deals().await;
    let pipeline = deals
        .create_pipeline(CreatePipelineRequest {
            pipeline: Some(Pipeline {
                display_name: "p".into(),
                stages: vec![Stage {
                    stage_id: "open".into(),
                    display_name: "Open".into(),
                    probability: 0.2,
                    forecast_category: ForecastCategory::Pipeline as i32,
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("pipeline")
        .into_inner();
    let deal = deals
        .create_deal(CreateDealRequest {
            deal: Some(Deal {
                display_name: "d".into(),
                pipeline: pipeline.name,
                amount: Some(Money {
                    currency_code: "JPY".into(),
                    amount_minor: 100_000,
                }),
                lead: lead.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("deal")
        .into_inner();
    let account = suite
        .accounts()
        .await
        .create_account(CreateAccountRequest {
            account: Some(Account {
                display_name: "Subject Inc.".into(),
                r#type: account::Type::Company as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("account")
        .into_inner();

    let mut gateway = suite.gateway().await;
    let invalid = gateway
        .create_subject(CreateSubjectRequest {
            subject: Some(Subject {
                lead: "deals/1".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("lead must be a lead name");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        violated_fields(&invalid)
            .iter()
            .any(|f| f == "subject.lead"),
        "{:?}",
        violated_fields(&invalid)
    );

    let subject = gateway
        .create_subject(CreateSubjectRequest {
            subject: Some(Subject {
                lead: lead.name.clone(),
                deals: vec![deal.name.clone()],
                account: account.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("subject")
        .into_inner();
    let again = gateway
        .create_subject(CreateSubjectRequest {
            subject: Some(Subject {
                lead: lead.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("one subject per lead");
    assert_eq!(again.code(), Code::AlreadyExists);

    let full = gateway
        .get_subject(GetSubjectRequest {
            name: subject.name.clone(),
            view: SubjectView::Full as i32,
        })
        .await
        .expect("full view")
        .into_inner();
    assert_eq!(
        full.lead_record.as_ref().map(|l| l.name.clone()),
        Some(lead.name.clone())
    );
    assert_eq!(
        full.deal_records
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        [deal.name.as_str()]
    );
    assert_eq!(
        full.account_record.as_ref().map(|a| a.name.clone()),
        Some(account.name.clone())
    );
    assert!(full.missing_parts.is_empty(), "{:?}", full.missing_parts);

    // With the accounts service down, the gateway returns what it has and names what is missing.
    let Suite {
        leads,
        deals: deals_service,
        accounts,
        gateway: gateway_service,
        token,
    } = suite;
    let _accounts_db = accounts.expect("accounts started").stop().await;
    let partial = gateway
        .get_subject(GetSubjectRequest {
            name: subject.name.clone(),
            view: SubjectView::Full as i32,
        })
        .await
        .expect("partial view")
        .into_inner();
    assert!(partial.lead_record.is_some());
    assert_eq!(partial.deal_records.len(), 1);
    assert!(partial.account_record.is_none());
    assert_eq!(partial.missing_parts, ["accounts"]);
    drop(token);
    for running in [gateway_service, Some(leads), deals_service]
        .into_iter()
        .flatten()
    {
        let _ = running.stop().await;
    }
}
both_backends!(customer_360, subject_full_view);
