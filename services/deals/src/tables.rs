//! How deals resources map onto their tables: indexed columns for filters and ordering.
//!
//! Filter and order names follow the proto field paths (`amount.amount_minor`,
//! `expected_close_date`); enums are stored by their short names and filters take either form
//! (`state = WON`, `state = STATE_WON`).

use kizuna_proto::deals::{Contact, Deal, Pipeline, deal};
use kizuna_proto::types::Date;
use kizuna_store::table::enum_short_name;
use kizuna_store::{Column, Table, Value, standard_meta};

use kizuna_normalize::{email_key, phone_key};

/// `pipelines/{pipeline}`.
#[derive(Debug)]
pub struct Pipelines;

impl Table for Pipelines {
    type Message = Pipeline;
    const KIND: &'static str = "Pipeline";
    const TABLE: &'static str = "pipelines";
    const COLLECTION: &'static str = "pipelines";
    const PARENT: Option<&'static str> = None;
    const EVENT_PREFIX: &'static str = "pipeline";
    const PROTO_NAME: &'static str = "kizuna.deals.v1.Pipeline";
    const COLUMNS: &'static [Column] = &[Column::text("display_name"), Column::int("is_default")];

    fn values(pipeline: &Pipeline) -> Vec<Value> {
        vec![
            pipeline.display_name.as_str().into(),
            pipeline.is_default.into(),
        ]
    }

    standard_meta!();
}

/// `deals/{deal}`.
#[derive(Debug)]
pub struct Deals;

impl Table for Deals {
    type Message = Deal;
    const KIND: &'static str = "Deal";
    const TABLE: &'static str = "deals";
    const COLLECTION: &'static str = "deals";
    const PARENT: Option<&'static str> = None;
    const EVENT_PREFIX: &'static str = "deal";
    const PROTO_NAME: &'static str = "kizuna.deals.v1.Deal";
    const COLUMNS: &'static [Column] = &[
        Column::text("display_name"),
        Column::text("pipeline"),
        Column::text("stage"),
        Column::enumeration("state").prefixed("STATE_"),
        Column::text("owner"),
        Column::text("lead"),
        Column::text("account"),
        Column {
            field: "amount.amount_minor",
            ..Column::int("amount_minor")
        },
        Column {
            field: "amount.currency_code",
            ..Column::text("currency_code")
        },
        Column {
            field: "expected_close_date",
            ..Column::time("expected_close")
        },
        Column::float("probability"),
        Column::time("close_time"),
    ];

    fn values(deal: &Deal) -> Vec<Value> {
        let amount = deal.amount.clone().unwrap_or_default();
        let close = deal
            .close_time
            .as_ref()
            .map(kizuna_store::time::from_timestamp)
            .unwrap_or_default();
        vec![
            deal.display_name.as_str().into(),
            deal.pipeline.as_str().into(),
            deal.stage.as_str().into(),
            state_name(deal.state).into(),
            deal.owner.as_str().into(),
            deal.lead.as_str().into(),
            deal.account.as_str().into(),
            amount.amount_minor.into(),
            amount.currency_code.into(),
            deal.expected_close_date
                .as_ref()
                .map(date_micros)
                .unwrap_or_default()
                .into(),
            deal.probability.into(),
            close.into(),
        ]
    }

    standard_meta!();
}

/// The short stored name of a deal state, e.g. `WON` (empty for an unknown number).
pub fn state_name(state: i32) -> String {
    deal::State::try_from(state)
        .map(|s| enum_short_name(s.as_str_name(), "STATE_"))
        .unwrap_or_default()
}

/// Midnight UTC of `date`, in microseconds since the epoch (the stored form of a date).
pub fn date_micros(date: &Date) -> i64 {
    let month = u32::try_from(date.month).unwrap_or(1);
    let day = u32::try_from(date.day).unwrap_or(1);
    kizuna_store::time::days_from_civil(i64::from(date.year), month, day)
        .saturating_mul(86_400_000_000)
}

/// `contacts/{contact}`.
#[derive(Debug)]
pub struct Contacts;

impl Table for Contacts {
    type Message = Contact;
    const KIND: &'static str = "Contact";
    const TABLE: &'static str = "contacts";
    const COLLECTION: &'static str = "contacts";
    const PARENT: Option<&'static str> = None;
    const EVENT_PREFIX: &'static str = "contact";
    const PROTO_NAME: &'static str = "kizuna.deals.v1.Contact";
    const UNIQUE: &'static [&'static str] = &["email_key", "phone_key"];
    const COLUMNS: &'static [Column] = &[
        Column::text("email"),
        Column::text("email_key"),
        Column::text("phone_key"),
        Column::text("given_name"),
        Column::text("family_name"),
        Column::text("company"),
        Column::text("owner"),
        Column::text("lead"),
    ];

    fn values(contact: &Contact) -> Vec<Value> {
        vec![
            contact.email.as_str().into(),
            email_key(&contact.email).into(),
            phone_key(&contact.phone).into(),
            contact.given_name.as_str().into(),
            contact.family_name.as_str().into(),
            contact.company.as_str().into(),
            contact.owner.as_str().into(),
            contact.lead.as_str().into(),
        ]
    }

    standard_meta!();
}
