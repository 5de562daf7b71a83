//! How accounts resources map onto their tables: indexed columns for filters and ordering.
//!
//! Enums are stored by their short name (`COMPANY` for `TYPE_COMPANY`) and filters take either
//! form (`type = COMPANY`, `type = TYPE_COMPANY`); times are microseconds (0 while unset), like
//! the other services. Lists default to the newest first: orders by `order_time`, the rest by
//! `create_time`.

use kizuna_proto::accounts::{Account, Case, Order, account, case, order};
use kizuna_store::table::enum_short_name;
use kizuna_store::{Column, Table, Value, standard_meta};
use prost_types::Timestamp;

use kizuna_normalize::{email_key, phone_key};

/// `accounts/{account}`.
#[derive(Debug)]
pub struct Accounts;

impl Table for Accounts {
    type Message = Account;
    const KIND: &'static str = "Account";
    const TABLE: &'static str = "accounts";
    const COLLECTION: &'static str = "accounts";
    const PARENT: Option<&'static str> = None;
    const EVENT_PREFIX: &'static str = "account";
    const PROTO_NAME: &'static str = "kizuna.accounts.v1.Account";
    const UNIQUE: &'static [&'static str] = &["deal"];
    const COLUMNS: &'static [Column] = &[
        Column::text("display_name"),
        Column::enumeration("type").prefixed("TYPE_"),
        Column::text("parent_account"),
        Column::text("email"),
        Column::text("email_key"),
        Column::text("phone_key"),
        Column::text("owner"),
        Column::text("lead"),
        Column::text("deal"),
        Column::text("industry"),
        Column::text("country_code"),
        Column::text("region"),
    ];

    fn values(account: &Account) -> Vec<Value> {
        let kind = account::Type::try_from(account.r#type)
            .map(|t| enum_short_name(t.as_str_name(), "TYPE_"))
            .unwrap_or_default();
        vec![
            account.display_name.as_str().into(),
            kind.into(),
            account.parent_account.as_str().into(),
            account.email.as_str().into(),
            email_key(&account.email).into(),
            phone_key(&account.phone).into(),
            account.owner.as_str().into(),
            account.lead.as_str().into(),
            account.deal.as_str().into(),
            account.industry.as_str().into(),
            account.country_code.as_str().into(),
            account.region.as_str().into(),
        ]
    }

    standard_meta!();
}

/// `accounts/{account}/orders/{order}`.
#[derive(Debug)]
pub struct Orders;

impl Table for Orders {
    type Message = Order;
    const KIND: &'static str = "Order";
    const TABLE: &'static str = "orders";
    const COLLECTION: &'static str = "orders";
    const PARENT: Option<&'static str> = Some("accounts");
    const EVENT_PREFIX: &'static str = "order";
    const PROTO_NAME: &'static str = "kizuna.accounts.v1.Order";
    const DEFAULT_ORDER: &'static str = "order_time desc";
    const COLUMNS: &'static [Column] = &[
        Column::text("external_order_id"),
        Column::time("order_time"),
        Column::enumeration("status").prefixed("STATUS_"),
        Column::text("currency_code"),
        Column::int("total_minor"),
        Column::text("deal"),
    ];

    fn values(order: &Order) -> Vec<Value> {
        let status = order::Status::try_from(order.status)
            .map(|s| enum_short_name(s.as_str_name(), "STATUS_"))
            .unwrap_or_default();
        let total = order.total.as_ref().map_or(0, |m| m.amount_minor);
        vec![
            order.external_order_id.as_str().into(),
            micros(order.order_time.as_ref()).into(),
            status.into(),
            order.currency_code.as_str().into(),
            total.into(),
            order.deal.as_str().into(),
        ]
    }

    standard_meta!();
}

/// `accounts/{account}/cases/{case}`.
#[derive(Debug)]
pub struct Cases;

impl Table for Cases {
    type Message = Case;
    const KIND: &'static str = "Case";
    const TABLE: &'static str = "cases";
    const COLLECTION: &'static str = "cases";
    const PARENT: Option<&'static str> = Some("accounts");
    const EVENT_PREFIX: &'static str = "case";
    const PROTO_NAME: &'static str = "kizuna.accounts.v1.Case";
    const COLUMNS: &'static [Column] = &[
        Column::enumeration("kind").prefixed("KIND_"),
        Column::enumeration("priority").prefixed("PRIORITY_"),
        Column::enumeration("state").prefixed("STATE_"),
        Column::text("owner"),
        Column::time("sla_due_time"),
        Column::time("resolve_time"),
    ];

    fn values(case: &Case) -> Vec<Value> {
        let kind = case::Kind::try_from(case.kind)
            .map(|k| enum_short_name(k.as_str_name(), "KIND_"))
            .unwrap_or_default();
        let priority = case::Priority::try_from(case.priority)
            .map(|p| enum_short_name(p.as_str_name(), "PRIORITY_"))
            .unwrap_or_default();
        let state = case::State::try_from(case.state)
            .map(|s| enum_short_name(s.as_str_name(), "STATE_"))
            .unwrap_or_default();
        vec![
            kind.into(),
            priority.into(),
            state.into(),
            case.owner.as_str().into(),
            micros(case.sla_due_time.as_ref()).into(),
            micros(case.resolve_time.as_ref()).into(),
        ]
    }

    standard_meta!();
}

/// Stored microseconds of an optional timestamp (0 when unset).
fn micros(time: Option<&Timestamp>) -> i64 {
    time.map(kizuna_store::time::from_timestamp)
        .unwrap_or_default()
}

/// Whether `time` is a valid `google.protobuf.Timestamp`: nanos in `0..1e9` and seconds within
/// 0001-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z.
pub fn valid_timestamp(time: &Timestamp) -> bool {
    const MIN_SECONDS: i64 = -62_135_596_800;
    const MAX_SECONDS: i64 = 253_402_300_799;
    (0..1_000_000_000).contains(&time.nanos) && (MIN_SECONDS..=MAX_SECONDS).contains(&time.seconds)
}
