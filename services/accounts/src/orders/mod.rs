//! Orders: an account's purchase history, with line items and a server-computed total.
//!
//! Money is integer minor units in the order's ISO 4217 currency; the total is the checked sum of
//! quantity × unit price (an overflow is INVALID_ARGUMENT, never a wrapped amount). Orders are
//! idempotent by `external_order_id` within their account: the same external id again answers
//! with the existing order, unchanged, so a shop or POS can resend its feed safely.

use kizuna_errors::{ApiError, Validator};
use kizuna_proto::accounts::Order;
use kizuna_proto::accounts::order::{OrderLine, Status};
use kizuna_proto::types::Money;
use kizuna_store::{Sql, Store, apply_mask, db_error, db_span, parse_parent};
use prost_types::FieldMask;
use sqlx::Row;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::tables::{Accounts, Orders, valid_timestamp};

/// Most line items an order may have.
pub const MAX_LINE_ITEMS: usize = 500;
/// How far ahead of the server's clock an order time may be (clocks of shops and POS systems
/// drift a little); anything later is "in the future" and refused.
pub const MAX_CLOCK_SKEW_MICROS: i64 = 5 * 60 * 1_000_000;

/// Sum of quantity × unit price over `lines`, in minor units; `None` when it overflows `i64`.
pub fn total_minor(lines: &[OrderLine]) -> Option<i64> {
    lines.iter().try_fold(0_i64, |sum, line| {
        line.quantity
            .checked_mul(line.unit_price_minor)
            .and_then(|amount| sum.checked_add(amount))
    })
}

/// Checks an order's caller-settable fields as of `now` (microseconds).
pub fn validate(order: &Order, now: i64) -> Result<(), ApiError> {
    let mut v = Validator::new();
    check(&mut v, order, now);
    v.finish()
}

fn check(v: &mut Validator, order: &Order, now: i64) {
    let f = |name: &str| format!("order.{name}");
    v.max_chars(&f("external_order_id"), &order.external_order_id, 128);
    match &order.order_time {
        None => {
            v.violation(f("order_time"), "is required");
        }
        Some(time) if !valid_timestamp(time) => {
            v.violation(f("order_time"), "is not a valid time");
        }
        Some(time) => {
            let at = kizuna_store::time::from_timestamp(time);
            v.check(
                at <= now.saturating_add(MAX_CLOCK_SKEW_MICROS),
                &f("order_time"),
                "must not be in the future",
            );
        }
    }
    v.currency(&f("currency_code"), &order.currency_code);
    let count = order.line_items.len();
    v.check(
        (1..=MAX_LINE_ITEMS).contains(&count),
        &f("line_items"),
        "must have between 1 and 500 line items",
    );
    for (i, line) in order.line_items.iter().enumerate() {
        let f = |name: &str| format!("order.line_items[{i}].{name}");
        v.required_max(&f("product"), &line.product, 200)
            .check(line.quantity > 0, &f("quantity"), "must be at least 1")
            .check(
                line.unit_price_minor >= 0,
                &f("unit_price_minor"),
                "must not be negative",
            )
            .max_chars(&f("category"), &line.category, 100);
    }
    v.check(
        total_minor(&order.line_items).is_some(),
        &f("line_items"),
        "the order total (quantity × unit price, summed) exceeds the largest amount (2^63-1 minor units)",
    );
    let status_known = Status::try_from(order.status).is_ok();
    v.enum_value(&f("status"), status_known, order.status, true);
    v.check(
        order.deal.is_empty() || parse_parent(&order.deal, "deals").is_some(),
        &f("deal"),
        "must be a deal name like `deals/{id}`",
    );
}

/// Sets the output-only `total` from the line items, in the order's currency.
fn set_total(order: &mut Order) -> Result<(), ApiError> {
    let amount_minor = total_minor(&order.line_items)
        .ok_or_else(|| ApiError::invalid("order.line_items", "the order total overflows"))?;
    order.total = Some(Money {
        currency_code: order.currency_code.clone(),
        amount_minor,
    });
    Ok(())
}

/// Clears the output-only fields a caller may have sent and fills the defaults: placed, now.
fn prepare_new(mut order: Order, now: i64) -> Order {
    order.name.clear();
    order.etag.clear();
    order.create_time = None;
    order.update_time = None;
    order.total = None;
    if order.status == Status::Unspecified as i32 {
        order.status = Status::Placed as i32;
    }
    if order.order_time.is_none() {
        order.order_time = Some(kizuna_store::time::to_timestamp(now));
    }
    order
}

/// Records an order for the account `parent`; the account must exist. A second order with the
/// same `external_order_id` under the same account returns the first, unchanged.
pub async fn create(
    store: &Store,
    parent: &str,
    order: Order,
    order_id: &str,
    request_id: &str,
) -> Result<Order> {
    let now = kizuna_db::now_micros();
    let mut order = prepare_new(order, now);
    let mut v = Validator::new();
    v.required("parent", parent);
    v.check(
        parent.is_empty() || parse_parent(parent, "accounts").is_some(),
        "parent",
        "must be an account name like `accounts/{id}`",
    );
    check(&mut v, &order, now);
    v.finish()?;
    set_total(&mut order)?;
    let external = order.external_order_id.clone();
    let created = store
        .create_with::<Orders, Early, _>(parent, order_id, order, request_id, async |tx, order| {
            // The account must exist (and, on PostgreSQL, stays locked against a concurrent
            // delete).
            tx.get::<Accounts>(parent).await?;
            match find_external(tx.conn(), store, parent, &order.external_order_id).await? {
                Some(name) => Err(Early::Existing(tx.get::<Orders>(&name).await?)),
                None => Ok(()),
            }
        })
        .await;
    match created {
        Ok(order) | Err(Early::Existing(order)) => Ok(order),
        Err(Early::Failed(Error::Api(error @ ApiError::AlreadyExists { .. })))
            if !external.is_empty() =>
        {
            // The insert hit a unique index: either the id is taken or a concurrent create with
            // the same external id won the race. Answer with that order if there is one.
            let mut conn = store.db().acquire().await.map_err(db_error)?;
            match find_external(&mut conn, store, parent, &external).await? {
                Some(name) => Ok(store.get::<Orders>(&name).await?),
                None => Err(error.into()),
            }
        }
        Err(Early::Failed(error)) => Err(error),
    }
}

/// How an order create ends before its insert: with the order already recorded under the same
/// external id (returned unchanged, nothing written), or with an error.
enum Early {
    Existing(Order),
    Failed(Error),
}

impl From<ApiError> for Early {
    fn from(error: ApiError) -> Self {
        Early::Failed(error.into())
    }
}

/// Applies `patch` under `mask` to the order it names, guarded by its etag, and recomputes the
/// total. `external_order_id`, `currency_code` and `deal` are immutable.
pub async fn update(store: &Store, patch: Order, mask: Option<&FieldMask>) -> Result<Order> {
    if patch.name.is_empty() {
        return Err(ApiError::invalid("order.name", "is required").into());
    }
    let mut tx = store.begin().await?;
    let mut order = tx.get::<Orders>(&patch.name).await?;
    kizuna_store::check_etag::<Orders>(&order, &patch.etag)?;
    apply_mask!(order, patch, mask, [
        "order_time" => order_time, "line_items" => line_items, "status" => status,
    ])?;
    validate(&order, kizuna_db::now_micros())?;
    set_total(&mut order)?;
    let updated = tx.replace::<Orders>(order).await?;
    tx.emit::<Orders>("updated", &updated).await?;
    tx.commit().await?;
    Ok(updated)
}

/// The name of the order of account `parent` with `external` as its external id, if any.
async fn find_external(
    conn: &mut sqlx::AnyConnection,
    store: &Store,
    parent: &str,
    external: &str,
) -> Result<Option<String>, ApiError> {
    if external.is_empty() {
        return Ok(None);
    }
    let mut sql = Sql::new("SELECT id FROM orders WHERE parent = ");
    sql.bind(parent)
        .push(" AND external_order_id = ")
        .bind(external);
    let row = sql
        .query()
        .fetch_optional(conn)
        .instrument(db_span(store.db(), "SELECT", "orders"))
        .await
        .map_err(db_error)?;
    row.map(|row| {
        row.try_get::<String, _>(0)
            .map(|id| format!("{parent}/orders/{id}"))
    })
    .transpose()
    .map_err(db_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000_000_000;

    fn line(quantity: i64, unit_price_minor: i64) -> OrderLine {
        OrderLine {
            product: "SKU-1".into(),
            quantity,
            unit_price_minor,
            category: String::new(),
        }
    }

    fn valid(lines: Vec<OrderLine>) -> Order {
        prepare_new(
            Order {
                currency_code: "JPY".into(),
                line_items: lines,
                ..Order::default()
            },
            NOW,
        )
    }

    fn fields(result: Result<(), ApiError>) -> Vec<String> {
        match result {
            Ok(()) => Vec::new(),
            Err(ApiError::InvalidArgument(violations)) => {
                violations.into_iter().map(|v| v.field).collect()
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn total_sums_quantity_times_price_in_the_order_currency() {
        let mut order = valid(vec![line(3, 1_500), line(1, 980), line(2, 0)]);
        assert_eq!(fields(validate(&order, NOW)), Vec::<String>::new());
        set_total(&mut order).expect("total");
        assert_eq!(
            order.total,
            Some(Money {
                currency_code: "JPY".into(),
                amount_minor: 3 * 1_500 + 980,
            })
        );
    }

    #[test]
    fn overflowing_totals_are_refused() {
        // One line overflowing its product.
        assert_eq!(total_minor(&[line(i64::MAX, 2)]), None);
        // Lines fine on their own, overflowing the sum.
        let lines = vec![line(1, i64::MAX), line(1, 1)];
        assert_eq!(total_minor(&lines), None);
        let mut order = valid(lines);
        assert_eq!(fields(validate(&order, NOW)), ["order.line_items"]);
        assert!(set_total(&mut order).is_err());
        // The largest amount itself is fine.
        assert_eq!(total_minor(&[line(1, i64::MAX)]), Some(i64::MAX));
    }

    #[test]
    fn defaults_are_placed_and_now() {
        let order = valid(vec![line(1, 100)]);
        assert_eq!(order.status, Status::Placed as i32);
        assert_eq!(
            order.order_time,
            Some(kizuna_store::time::to_timestamp(NOW))
        );
    }

    #[test]
    fn line_items_are_checked() {
        let order = valid(Vec::new());
        assert_eq!(fields(validate(&order, NOW)), ["order.line_items"]);
        let too_many = valid(vec![line(1, 1); MAX_LINE_ITEMS + 1]);
        assert_eq!(fields(validate(&too_many, NOW)), ["order.line_items"]);
        let mut bad = valid(vec![line(0, -1)]);
        bad.line_items[0].product.clear();
        assert_eq!(
            fields(validate(&bad, NOW)),
            [
                "order.line_items[0].product",
                "order.line_items[0].quantity",
                "order.line_items[0].unit_price_minor",
            ]
        );
    }

    #[test]
    fn currency_time_status_and_deal_are_checked() {
        let mut order = valid(vec![line(1, 100)]);
        order.currency_code = "yen".into();
        order.order_time = Some(kizuna_store::time::to_timestamp(
            NOW + MAX_CLOCK_SKEW_MICROS + 1,
        ));
        order.status = 99;
        order.deal = "leads/1".into();
        order.external_order_id = "x".repeat(129);
        assert_eq!(
            fields(validate(&order, NOW)),
            [
                "order.external_order_id",
                "order.order_time",
                "order.currency_code",
                "order.status",
                "order.deal",
            ]
        );
        order.order_time = None;
        order.status = Status::Unspecified as i32;
        assert!(fields(validate(&order, NOW)).contains(&"order.order_time".to_owned()));
        assert!(fields(validate(&order, NOW)).contains(&"order.status".to_owned()));
    }
}
