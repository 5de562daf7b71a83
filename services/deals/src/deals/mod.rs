//! Deals: amounts and line items, the pipeline stage a deal is in, and closing it as won or lost.
//!
//! A deal's state follows its stage: moving it to the pipeline's CLOSED_WON stage wins it, to the
//! CLOSED_LOST stage loses it (a reason is required), to an open stage (re)opens it. Setting the
//! state instead moves the deal to the matching closed stage when the pipeline has one. The win
//! probability is the stage's default (1 when won, 0 when lost). Every move is appended to the
//! stage history and announced with `deal.stage_changed`, plus `deal.won`, `deal.lost` or
//! `deal.reopened` when the state changes, in the same transaction as the change.

use kizuna_errors::{ApiError, Validator};
use kizuna_proto::deals::{Deal, Pipeline, deal};
use kizuna_proto::prost_types::{FieldMask, Timestamp};
use kizuna_proto::types::{Date, Money};
use kizuna_store::{Store, WriteTx, apply_mask, parse_parent};

use crate::error::{Error, Result};
use crate::pipelines::{closing_stage, find_stage, stage_ids, stage_state};
use crate::tables::{Deals, Pipelines, state_name};

/// Most line items a deal may have.
pub const MAX_LINE_ITEMS: usize = 200;
/// Most contacts a deal may name.
pub const MAX_CONTACTS: usize = 100;

/// Whether `date` is a real calendar date between the years 1 and 9999.
pub fn valid_date(date: &Date) -> bool {
    let leap = date.year % 4 == 0 && (date.year % 100 != 0 || date.year % 400 == 0);
    let days = match date.month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 0,
    };
    (1..=9999).contains(&date.year) && (1..=days).contains(&date.day)
}

fn looks_like_currency(code: &str) -> bool {
    code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase())
}

/// The sum of quantity × unit price over `items`, or `None` when the lines cannot be summed
/// (a missing price, a bad quantity, mixed or malformed currencies: [`validate`] says which).
/// A total beyond 64-bit minor units is INVALID_ARGUMENT, never a wrapped number.
pub fn line_total(items: &[deal::LineItem]) -> Result<Option<Money>, ApiError> {
    let Some(currency) = items
        .first()
        .and_then(|item| item.unit_price.as_ref())
        .map(|price| price.currency_code.clone())
    else {
        return Ok(None);
    };
    if !looks_like_currency(&currency) {
        return Ok(None);
    }
    let mut total: i64 = 0;
    for (i, item) in items.iter().enumerate() {
        let Some(price) = &item.unit_price else {
            return Ok(None);
        };
        if price.currency_code != currency || item.quantity < 1 {
            return Ok(None);
        }
        total = item
            .quantity
            .checked_mul(price.amount_minor)
            .and_then(|line| total.checked_add(line))
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("deal.line_items[{i}]"),
                    "quantity × unit price takes the deal total beyond what an amount can hold",
                )
            })?;
    }
    Ok(Some(Money {
        currency_code: currency,
        amount_minor: total,
    }))
}

/// Sets `amount` to the line items' total when it is missing, or when `recompute` (the lines
/// changed and the caller did not set the amount).
pub fn fill_amount(deal: &mut Deal, recompute: bool) -> Result<(), ApiError> {
    if deal.line_items.is_empty() || !(recompute || deal.amount.is_none()) {
        return Ok(());
    }
    if let Some(total) = line_total(&deal.line_items)? {
        deal.amount = Some(total);
    }
    Ok(())
}

fn check_name(v: &mut Validator, field: &str, value: &str, collection: &str) {
    if !value.is_empty() && parse_parent(value, collection).is_none() {
        v.violation(
            field,
            format!("must be a resource name like `{collection}/{{id}}` (ids: a-z, 0-9, -)"),
        );
    }
}

/// Checks a deal's caller-settable fields (the pipeline and stage are checked against the
/// stored pipeline separately).
pub fn validate(deal: &Deal) -> Result<(), ApiError> {
    let mut v = Validator::new();
    v.required_max("deal.display_name", &deal.display_name, 200)
        .max_chars("deal.owner", &deal.owner, 256)
        .max_chars("deal.close_reason", &deal.close_reason, 1000);
    check_name(&mut v, "deal.pipeline", &deal.pipeline, "pipelines");
    check_name(&mut v, "deal.lead", &deal.lead, "leads");
    check_name(&mut v, "deal.account", &deal.account, "accounts");
    v.max_chars("deal.stage", &deal.stage, 63);
    let currency = match &deal.amount {
        Some(amount) => {
            v.currency("deal.amount.currency_code", &amount.currency_code);
            v.check(
                amount.amount_minor >= 0,
                "deal.amount.amount_minor",
                "must not be negative",
            );
            Some(amount.currency_code.as_str())
        }
        None => {
            v.check(
                !deal.line_items.is_empty(),
                "deal.amount",
                "is required when there are no line items",
            );
            deal.line_items
                .first()
                .and_then(|item| item.unit_price.as_ref())
                .map(|price| price.currency_code.as_str())
        }
    };
    v.check(
        deal.line_items.len() <= MAX_LINE_ITEMS,
        "deal.line_items",
        "at most 200 line items",
    );
    for (i, item) in deal.line_items.iter().enumerate() {
        let f = |name: &str| format!("deal.line_items[{i}].{name}");
        v.required_max(&f("product"), &item.product, 200).max_chars(
            &f("description"),
            &item.description,
            1000,
        );
        v.check(item.quantity >= 1, &f("quantity"), "must be at least 1");
        match &item.unit_price {
            None => {
                v.violation(f("unit_price"), "is required");
            }
            Some(price) => {
                v.currency(&f("unit_price.currency_code"), &price.currency_code);
                if let Some(currency) = currency
                    && price.currency_code != currency
                {
                    v.violation(
                        f("unit_price.currency_code"),
                        format!("must be the deal's currency {currency}"),
                    );
                }
            }
        }
    }
    if let Some(date) = &deal.expected_close_date {
        v.check(
            valid_date(date),
            "deal.expected_close_date",
            "must be a calendar date with year 1-9999",
        );
    }
    v.check(
        deal.contacts.len() <= MAX_CONTACTS,
        "deal.contacts",
        "at most 100 contacts",
    );
    for (i, contact) in deal.contacts.iter().enumerate() {
        let field = format!("deal.contacts[{i}]");
        if parse_parent(contact, "contacts").is_none() {
            v.violation(
                field,
                "must be a resource name like `contacts/{id}` (ids: a-z, 0-9, -)",
            );
        } else if deal.contacts[..i].contains(contact) {
            v.violation(field, "appears twice");
        }
    }
    let known = deal::State::try_from(deal.state).is_ok();
    v.enum_value("deal.state", known, deal.state, false);
    if deal.state == deal::State::Lost as i32 {
        v.required("deal.close_reason", &deal.close_reason);
    }
    if let Some(close) = &deal.close_time {
        v.check(
            (0..1_000_000_000).contains(&close.nanos),
            "deal.close_time",
            "nanos out of range",
        );
    }
    v.finish()
}

fn not_a_stage(pipeline: &Pipeline, stage: &str) -> ApiError {
    ApiError::invalid(
        "deal.stage",
        format!(
            "`{stage}` is not a stage of {} (stages: {})",
            pipeline.name,
            stage_ids(pipeline)
        ),
    )
}

/// Places a new deal in `pipeline`: its first stage unless one is named, which must be open;
/// the deal is open with the stage's probability.
pub fn start(deal: &mut Deal, pipeline: &Pipeline) -> Result<(), ApiError> {
    let requested = deal.state;
    if requested != deal::State::Unspecified as i32 && requested != deal::State::Open as i32 {
        return Err(ApiError::invalid(
            "deal.state",
            "new deals are STATE_OPEN; close a deal by updating its stage or state",
        ));
    }
    deal.pipeline = pipeline.name.clone();
    if deal.stage.is_empty()
        && let Some(first) = pipeline.stages.first()
    {
        deal.stage = first.stage_id.clone();
    }
    let stage =
        find_stage(pipeline, &deal.stage).ok_or_else(|| not_a_stage(pipeline, &deal.stage))?;
    if stage_state(stage) != deal::State::Open {
        return Err(ApiError::invalid(
            "deal.stage",
            format!(
                "new deals start in an open stage; `{}` is a closed stage (close the deal by updating it)",
                stage.stage_id
            ),
        ));
    }
    deal.state = deal::State::Open as i32;
    deal.probability = stage.probability;
    deal.close_time = None;
    Ok(())
}

/// What an update did to a deal's place in its pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Movement {
    /// The pipeline or stage changed.
    pub stage_changed: bool,
    /// The deal became won.
    pub won: bool,
    /// The deal became lost.
    pub lost: bool,
    /// A closed deal became open again.
    pub reopened: bool,
}

impl Movement {
    /// Whether anything moved.
    pub fn any(&self) -> bool {
        self.stage_changed || self.won || self.lost || self.reopened
    }
}

fn state_of(value: i32) -> deal::State {
    deal::State::try_from(value).unwrap_or(deal::State::Unspecified)
}

/// Reconciles stage and state after an update of `old` into `deal`, in `pipeline` (`None` when
/// the deal's pipeline no longer exists, which is fine as long as nothing moves), and sets the
/// probability and close time. `now` is the close time when the caller gives none.
pub fn settle(
    old: &Deal,
    deal: &mut Deal,
    pipeline: Option<&Pipeline>,
    now: Timestamp,
) -> Result<Movement, ApiError> {
    let old_state = match state_of(old.state) {
        deal::State::Unspecified => deal::State::Open,
        state => state,
    };
    let requested = state_of(deal.state);
    let moved = deal.pipeline != old.pipeline || deal.stage != old.stage;
    let touched = requested != deal::State::Unspecified && requested != old_state;
    if !moved && !touched {
        deal.state = old_state as i32;
        keep_close_fields(old, deal, old_state);
        if old_state == deal::State::Open
            && let Some(stage) = pipeline.and_then(|p| find_stage(p, &deal.stage))
        {
            deal.probability = stage.probability;
        }
        return Ok(Movement::default());
    }
    let Some(pipeline) = pipeline else {
        return Err(ApiError::invalid(
            "deal.pipeline",
            format!("`{}` does not exist", deal.pipeline),
        ));
    };
    let stage =
        find_stage(pipeline, &deal.stage).ok_or_else(|| not_a_stage(pipeline, &deal.stage))?;
    let new_state = if moved {
        let stage_state = stage_state(stage);
        if touched && requested != stage_state {
            return Err(ApiError::invalid(
                "deal.state",
                format!(
                    "{} contradicts stage `{}`, where deals are {}; set the stage or the state, not both",
                    requested.as_str_name(),
                    stage.stage_id,
                    stage_state.as_str_name()
                ),
            ));
        }
        stage_state
    } else if touched {
        match requested {
            deal::State::Won | deal::State::Lost => {
                if let Some(closing) = closing_stage(pipeline, requested) {
                    deal.stage = closing.stage_id.clone();
                }
                requested
            }
            _ => {
                if stage_state(stage) != deal::State::Open {
                    return Err(ApiError::invalid(
                        "deal.stage",
                        format!(
                            "reopening a deal needs an open stage; `{}` is closed (open stages: {})",
                            stage.stage_id,
                            open_stage_ids(pipeline)
                        ),
                    ));
                }
                deal::State::Open
            }
        }
    } else {
        old_state
    };
    deal.state = new_state as i32;
    match new_state {
        deal::State::Won | deal::State::Lost => {
            if new_state != old_state {
                if deal.close_time.is_none() || deal.close_time == old.close_time {
                    deal.close_time = Some(now);
                }
            } else if deal.close_time.is_none() {
                deal.close_time = old.close_time;
            }
            deal.probability = if new_state == deal::State::Won {
                1.0
            } else {
                0.0
            };
            if new_state == deal::State::Lost && deal.close_reason.trim().is_empty() {
                return Err(ApiError::invalid(
                    "deal.close_reason",
                    "is required when the deal is lost",
                ));
            }
        }
        _ => {
            deal.close_time = None;
            if old_state != deal::State::Open {
                deal.close_reason.clear();
            }
            let stage = find_stage(pipeline, &deal.stage)
                .ok_or_else(|| not_a_stage(pipeline, &deal.stage))?;
            deal.probability = stage.probability;
        }
    }
    Ok(Movement {
        stage_changed: deal.pipeline != old.pipeline || deal.stage != old.stage,
        won: new_state == deal::State::Won && old_state != deal::State::Won,
        lost: new_state == deal::State::Lost && old_state != deal::State::Lost,
        reopened: new_state == deal::State::Open && old_state != deal::State::Open,
    })
}

fn keep_close_fields(old: &Deal, deal: &mut Deal, state: deal::State) {
    if state == deal::State::Open {
        deal.close_time = None;
    } else if deal.close_time.is_none() {
        deal.close_time = old.close_time;
    }
    deal.probability = old.probability;
}

fn open_stage_ids(pipeline: &Pipeline) -> String {
    pipeline
        .stages
        .iter()
        .filter(|s| stage_state(s) == deal::State::Open)
        .map(|s| s.stage_id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Clears the output-only fields a caller may have sent.
fn prepare_new(mut deal: Deal) -> Deal {
    deal.name.clear();
    deal.etag.clear();
    deal.create_time = None;
    deal.update_time = None;
    deal.probability = 0.0;
    deal.close_time = None;
    deal
}

/// Reads the pipeline `name` inside `tx`; a missing one is a bad `deal.pipeline`.
async fn pipeline_in(tx: &mut WriteTx<'_>, name: &str) -> Result<Option<Pipeline>> {
    match tx.get::<Pipelines>(name).await {
        Ok(pipeline) => Ok(Some(pipeline)),
        Err(ApiError::NotFound { .. }) => Ok(None),
        Err(other) => Err(other.into()),
    }
}

fn missing_pipeline(name: &str) -> Error {
    ApiError::invalid("deal.pipeline", format!("`{name}` does not exist")).into()
}

/// Creates an open deal, in the default pipeline unless one is named.
pub async fn create(store: &Store, deal: Deal, deal_id: &str, request_id: &str) -> Result<Deal> {
    let mut deal = prepare_new(deal);
    fill_amount(&mut deal, false)?;
    validate(&deal)?;
    // Not `Store::create_with`: the deal takes its first stage from the pipeline read inside the
    // transaction, and its first stage move is recorded after the insert.
    let method = "CreateDeal";
    store
        .idempotent(method, request_id, async |tx| {
            let pipeline = if deal.pipeline.is_empty() {
                crate::pipelines::default_pipeline(tx)
                    .await?
                    .ok_or(Error::NoDefaultPipeline)?
            } else {
                pipeline_in(tx, &deal.pipeline)
                    .await?
                    .ok_or_else(|| missing_pipeline(&deal.pipeline))?
            };
            start(&mut deal, &pipeline)?;
            let created = tx.insert::<Deals>("", deal_id, deal).await?;
            record_move(tx, None, &created).await?;
            tx.emit::<Deals>("created", &created).await?;
            Ok(created)
        })
        .await
}

/// Whether the update sets `path`: named in the mask (or `*`), or, with no mask, set in the
/// patch.
fn sets(mask: Option<&FieldMask>, path: &str, set_in_patch: bool) -> bool {
    match mask.map(|m| m.paths.as_slice()).unwrap_or_default() {
        [] => set_in_patch,
        paths => paths.iter().any(|p| p == path || p == "*"),
    }
}

/// Applies `patch` under `mask` to the deal it names, guarded by its etag, moving and closing it
/// as the new stage or state says.
pub async fn update(store: &Store, patch: Deal, mask: Option<&FieldMask>) -> Result<Deal> {
    kizuna_store::require_name::<Deals>(&patch.name, "deal.name")?;
    let amount_set = sets(mask, "amount", patch.amount.is_some());
    let mut tx = store.begin().await?;
    let old = tx.get::<Deals>(&patch.name).await?;
    kizuna_store::check_etag::<Deals>(&old, &patch.etag)?;
    let mut deal = old.clone();
    apply_mask!(deal, patch, mask, [
        "display_name" => display_name, "pipeline" => pipeline, "stage" => stage,
        "amount" => amount, "line_items" => line_items,
        "expected_close_date" => expected_close_date, "owner" => owner, "contacts" => contacts,
        "account" => account, "state" => state, "close_reason" => close_reason,
        "close_time" => close_time,
    ])?;
    let lines_changed = deal.line_items != old.line_items;
    fill_amount(&mut deal, lines_changed && !amount_set)?;
    for (field, value) in [
        ("deal.pipeline", &deal.pipeline),
        ("deal.stage", &deal.stage),
    ] {
        if value.is_empty() {
            return Err(ApiError::invalid(field, "is required").into());
        }
    }
    if deal.state == deal::State::Unspecified as i32 {
        deal.state = old.state;
    }
    validate(&deal)?;
    let pipeline = pipeline_in(&mut tx, &deal.pipeline).await?;
    if pipeline.is_none() && deal.pipeline != old.pipeline {
        return Err(missing_pipeline(&deal.pipeline));
    }
    let now = kizuna_store::time::to_timestamp(kizuna_db::now_micros());
    let movement = settle(&old, &mut deal, pipeline.as_ref(), now)?;
    let updated = tx.replace::<Deals>(deal).await?;
    if movement.any() {
        record_move(&mut tx, Some(&old), &updated).await?;
    }
    tx.emit::<Deals>("updated", &updated).await?;
    if movement.stage_changed {
        tx.emit::<Deals>("stage_changed", &updated).await?;
    }
    if movement.won {
        tx.emit::<Deals>("won", &updated).await?;
    }
    if movement.lost {
        tx.emit::<Deals>("lost", &updated).await?;
    }
    if movement.reopened {
        tx.emit::<Deals>("reopened", &updated).await?;
    }
    tx.commit().await?;
    Ok(updated)
}

/// Deletes a deal and its stage history.
pub async fn delete(store: &Store, name: &str, etag: &str) -> Result<Deal> {
    let mut tx = store.begin().await?;
    let current = tx.get::<Deals>(name).await?;
    kizuna_store::check_etag::<Deals>(&current, etag)?;
    tx.remove::<Deals>(name).await?;
    let mut sql = kizuna_store::Sql::new("DELETE FROM deal_stage_history WHERE deal_id = ");
    sql.bind(deal_id(name));
    sql.query()
        .execute(tx.conn())
        .await
        .map_err(kizuna_store::db_error)?;
    tx.emit::<Deals>("deleted", &current).await?;
    tx.commit().await?;
    Ok(current)
}

fn deal_id(name: &str) -> &str {
    name.strip_prefix("deals/").unwrap_or(name)
}

/// Appends a stage move (or the first placement, `from` = `None`) to the stage history.
async fn record_move(tx: &mut WriteTx<'_>, from: Option<&Deal>, to: &Deal) -> Result<()> {
    let amount = to.amount.clone().unwrap_or_default();
    let mut sql = kizuna_store::Sql::new(
        "INSERT INTO deal_stage_history (deal_id, from_pipeline, pipeline, from_stage, to_stage, \
         from_state, to_state, amount_minor, currency_code, change_time) VALUES (",
    );
    sql.bind(deal_id(&to.name))
        .push(", ")
        .bind(from.map(|d| d.pipeline.as_str()).unwrap_or_default())
        .push(", ")
        .bind(to.pipeline.as_str())
        .push(", ")
        .bind(from.map(|d| d.stage.as_str()).unwrap_or_default())
        .push(", ")
        .bind(to.stage.as_str())
        .push(", ")
        .bind(from.map(|d| state_name(d.state)).unwrap_or_default())
        .push(", ")
        .bind(state_name(to.state))
        .push(", ")
        .bind(amount.amount_minor)
        .push(", ")
        .bind(amount.currency_code)
        .push(", ")
        .bind(
            to.update_time
                .as_ref()
                .map_or_else(kizuna_db::now_micros, kizuna_store::time::from_timestamp),
        )
        .push(")");
    sql.query()
        .execute(tx.conn())
        .await
        .map_err(kizuna_store::db_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use kizuna_proto::deals::ForecastCategory;
    use kizuna_proto::deals::pipeline::Stage;

    use super::*;

    fn yen(amount_minor: i64) -> Money {
        Money {
            currency_code: "JPY".into(),
            amount_minor,
        }
    }

    fn line(product: &str, quantity: i64, unit_price: Money) -> deal::LineItem {
        deal::LineItem {
            product: product.into(),
            quantity,
            unit_price: Some(unit_price),
            description: String::new(),
        }
    }

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
            name: "pipelines/new-business".into(),
            display_name: "New business".into(),
            stages: vec![
                stage("qualification", 0.1, ForecastCategory::Pipeline),
                stage("proposal", 0.5, ForecastCategory::BestCase),
                stage("closed_won", 1.0, ForecastCategory::ClosedWon),
                stage("closed_lost", 0.0, ForecastCategory::ClosedLost),
            ],
            ..Pipeline::default()
        }
    }

    fn deal() -> Deal {
        Deal {
            display_name: "Clinic chain, 40 seats".into(),
            amount: Some(yen(1_200_000)),
            ..Deal::default()
        }
    }

    fn open_deal() -> Deal {
        let mut d = deal();
        start(&mut d, &pipeline()).expect("starts");
        d.name = "deals/d1".into();
        d
    }

    fn fields(result: Result<(), ApiError>) -> Vec<String> {
        match result {
            Err(ApiError::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect(),
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    fn now() -> Timestamp {
        Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        }
    }

    #[test]
    fn line_items_sum_to_the_amount() {
        let items = [
            line("seat licence", 40, yen(25_000)),
            line("onboarding", 1, yen(200_000)),
        ];
        assert_eq!(line_total(&items).expect("sums"), Some(yen(1_200_000)));
        let mut d = Deal {
            display_name: "x".into(),
            line_items: items.to_vec(),
            ..Deal::default()
        };
        fill_amount(&mut d, false).expect("fills");
        assert_eq!(d.amount, Some(yen(1_200_000)));
        validate(&d).expect("valid");
    }

    #[test]
    fn a_given_amount_is_kept_unless_recomputed() {
        let mut d = deal();
        d.line_items = vec![line("seat licence", 2, yen(1000))];
        fill_amount(&mut d, false).expect("keeps");
        assert_eq!(d.amount, Some(yen(1_200_000)), "a negotiated amount stays");
        fill_amount(&mut d, true).expect("recomputes");
        assert_eq!(d.amount, Some(yen(2000)));
    }

    #[test]
    fn overflowing_totals_are_refused() {
        let product = [line("a", i64::MAX, yen(2))];
        let Err(ApiError::InvalidArgument(v)) = line_total(&product) else {
            panic!("quantity × price overflow must be refused")
        };
        assert_eq!(v[0].field, "deal.line_items[0]");
        let sum = [line("a", 1, yen(i64::MAX)), line("b", 1, yen(1))];
        let Err(ApiError::InvalidArgument(v)) = line_total(&sum) else {
            panic!("sum overflow must be refused")
        };
        assert_eq!(v[0].field, "deal.line_items[1]");
        let mut d = Deal {
            display_name: "x".into(),
            line_items: sum.to_vec(),
            ..Deal::default()
        };
        assert!(fill_amount(&mut d, false).is_err());
        assert_eq!(d.amount, None);
    }

    #[test]
    fn lines_that_cannot_be_summed_are_reported_by_validate() {
        let mut d = Deal {
            display_name: "x".into(),
            line_items: vec![line("a", 1, yen(100)), line("b", 0, yen(100))],
            ..Deal::default()
        };
        d.line_items.push(line(
            "c",
            1,
            Money {
                currency_code: "USD".into(),
                amount_minor: 5,
            },
        ));
        d.line_items.push(deal::LineItem {
            product: String::new(),
            quantity: 1,
            unit_price: None,
            description: String::new(),
        });
        fill_amount(&mut d, false).expect("no total, no error");
        assert_eq!(d.amount, None);
        assert_eq!(
            fields(validate(&d)),
            [
                "deal.line_items[1].quantity",
                "deal.line_items[2].unit_price.currency_code",
                "deal.line_items[3].product",
                "deal.line_items[3].unit_price",
            ]
        );
    }

    #[test]
    fn amount_is_required_without_line_items_and_never_negative() {
        let mut d = deal();
        d.amount = None;
        assert_eq!(fields(validate(&d)), ["deal.amount"]);
        d.amount = Some(yen(-1));
        assert_eq!(fields(validate(&d)), ["deal.amount.amount_minor"]);
        d.amount = Some(Money {
            currency_code: "yen".into(),
            amount_minor: 1,
        });
        assert_eq!(fields(validate(&d)), ["deal.amount.currency_code"]);
        d.amount = Some(yen(0));
        validate(&d).expect("zero is an amount");
    }

    #[test]
    fn line_items_use_the_deal_currency() {
        let mut d = deal();
        d.line_items = vec![line(
            "a",
            1,
            Money {
                currency_code: "USD".into(),
                amount_minor: 100,
            },
        )];
        assert_eq!(
            fields(validate(&d)),
            ["deal.line_items[0].unit_price.currency_code"]
        );
    }

    #[test]
    fn expected_close_dates_are_calendar_dates() {
        let date = |year, month, day| Date { year, month, day };
        for ok in [
            date(2024, 2, 29),
            date(2026, 12, 31),
            date(1, 1, 1),
            date(9999, 12, 31),
        ] {
            assert!(valid_date(&ok), "{ok:?}");
        }
        for bad in [
            date(2023, 2, 29),
            date(1900, 2, 29),
            date(2026, 4, 31),
            date(2026, 13, 1),
            date(2026, 0, 1),
            date(2026, 1, 0),
            date(0, 1, 1),
            date(10_000, 1, 1),
        ] {
            assert!(!valid_date(&bad), "{bad:?}");
        }
        assert!(valid_date(&date(2000, 2, 29)));
        let mut d = deal();
        d.expected_close_date = Some(date(2026, 2, 30));
        assert_eq!(fields(validate(&d)), ["deal.expected_close_date"]);
    }

    #[test]
    fn references_are_resource_names() {
        let mut d = deal();
        d.contacts = vec![
            "contacts/c1".into(),
            "c2".into(),
            "contacts/c1".into(),
            "contacts/".into(),
        ];
        d.lead = "lead/1".into();
        d.account = "accounts/A!".into();
        d.pipeline = "pipelines/x/y".into();
        assert_eq!(
            fields(validate(&d)),
            [
                "deal.pipeline",
                "deal.lead",
                "deal.account",
                "deal.contacts[1]",
                "deal.contacts[2]",
                "deal.contacts[3]",
            ]
        );
        d.contacts = vec!["contacts/c1".into(), "contacts/c2".into()];
        d.lead = "leads/0193".into();
        d.account = "accounts/a-1".into();
        d.pipeline = "pipelines/new-business".into();
        validate(&d).expect("valid names");
    }

    #[test]
    fn display_name_is_required_and_bounded() {
        let mut d = deal();
        d.display_name = "  ".into();
        assert_eq!(fields(validate(&d)), ["deal.display_name"]);
        d.display_name = "x".repeat(201);
        assert_eq!(fields(validate(&d)), ["deal.display_name"]);
    }

    #[test]
    fn lost_without_a_reason_is_refused() {
        let mut d = deal();
        d.state = deal::State::Lost as i32;
        assert_eq!(fields(validate(&d)), ["deal.close_reason"]);
        d.close_reason = "went with a competitor".into();
        validate(&d).expect("reason given");
    }

    #[test]
    fn new_deals_start_open_in_the_first_stage() {
        let mut d = deal();
        d.probability = 0.99;
        start(&mut d, &pipeline()).expect("starts");
        assert_eq!(d.pipeline, "pipelines/new-business");
        assert_eq!(d.stage, "qualification");
        assert_eq!(d.state, deal::State::Open as i32);
        assert_eq!(d.probability, 0.1);

        let mut d = deal();
        d.stage = "proposal".into();
        start(&mut d, &pipeline()).expect("starts");
        assert_eq!(d.probability, 0.5);

        let mut d = deal();
        d.stage = "closed_won".into();
        assert_eq!(fields(start(&mut d, &pipeline())), ["deal.stage"]);
        let mut d = deal();
        d.stage = "nope".into();
        assert_eq!(fields(start(&mut d, &pipeline())), ["deal.stage"]);
        let mut d = deal();
        d.state = deal::State::Won as i32;
        assert_eq!(fields(start(&mut d, &pipeline())), ["deal.state"]);
    }

    #[test]
    fn moving_to_the_closed_won_stage_wins() {
        let old = open_deal();
        let mut d = old.clone();
        d.stage = "closed_won".into();
        let m = settle(&old, &mut d, Some(&pipeline()), now()).expect("wins");
        assert_eq!(
            m,
            Movement {
                stage_changed: true,
                won: true,
                ..Movement::default()
            }
        );
        assert_eq!(d.state, deal::State::Won as i32);
        assert_eq!(d.probability, 1.0);
        assert_eq!(d.close_time, Some(now()));
    }

    #[test]
    fn moving_to_the_closed_lost_stage_needs_a_reason() {
        let old = open_deal();
        let mut d = old.clone();
        d.stage = "closed_lost".into();
        assert_eq!(
            fields(settle(&old, &mut d, Some(&pipeline()), now()).map(|_| ())),
            ["deal.close_reason"]
        );
        let mut d = old.clone();
        d.stage = "closed_lost".into();
        d.close_reason = "budget cut".into();
        let m = settle(&old, &mut d, Some(&pipeline()), now()).expect("loses");
        assert!(m.lost && m.stage_changed && !m.won);
        assert_eq!(d.state, deal::State::Lost as i32);
        assert_eq!(d.probability, 0.0);
    }

    #[test]
    fn setting_the_state_moves_to_the_closing_stage() {
        let old = open_deal();
        let mut d = old.clone();
        d.state = deal::State::Won as i32;
        let given = Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        d.close_time = Some(given);
        let m = settle(&old, &mut d, Some(&pipeline()), now()).expect("wins");
        assert!(m.won && m.stage_changed);
        assert_eq!(d.stage, "closed_won");
        assert_eq!(d.close_time, Some(given), "a given close time is kept");

        let mut without_closing_stages = pipeline();
        without_closing_stages.stages.truncate(2);
        let mut d = old.clone();
        d.state = deal::State::Won as i32;
        let m = settle(&old, &mut d, Some(&without_closing_stages), now()).expect("wins");
        assert!(m.won && !m.stage_changed);
        assert_eq!(d.stage, "qualification");
        assert_eq!(d.probability, 1.0);
    }

    #[test]
    fn a_state_contradicting_the_new_stage_is_refused() {
        let old = open_deal();
        let mut d = old.clone();
        d.stage = "proposal".into();
        d.state = deal::State::Won as i32;
        assert_eq!(
            fields(settle(&old, &mut d, Some(&pipeline()), now()).map(|_| ())),
            ["deal.state"]
        );
    }

    #[test]
    fn moving_a_closed_deal_to_an_open_stage_reopens_it() {
        let open = open_deal();
        let mut lost = open.clone();
        lost.stage = "closed_lost".into();
        lost.close_reason = "no budget".into();
        settle(&open, &mut lost, Some(&pipeline()), now()).expect("loses");

        let mut d = lost.clone();
        d.state = deal::State::Open as i32;
        assert_eq!(
            fields(settle(&lost, &mut d, Some(&pipeline()), now()).map(|_| ())),
            ["deal.stage"],
            "reopening in place would leave the deal in a closed stage"
        );

        let mut d = lost.clone();
        d.stage = "proposal".into();
        let m = settle(&lost, &mut d, Some(&pipeline()), now()).expect("reopens");
        assert!(m.reopened && m.stage_changed);
        assert_eq!(d.state, deal::State::Open as i32);
        assert_eq!(d.close_time, None);
        assert!(d.close_reason.is_empty());
        assert_eq!(d.probability, 0.5);
    }

    #[test]
    fn unrelated_changes_do_not_move_the_deal() {
        let old = open_deal();
        let mut d = old.clone();
        d.owner = "users/hanako".into();
        d.close_time = Some(now());
        let m = settle(&old, &mut d, None, now()).expect("no pipeline needed");
        assert!(!m.any());
        assert_eq!(d.close_time, None, "open deals have no close time");
        let mut d = old.clone();
        d.stage = "proposal".into();
        assert_eq!(
            fields(settle(&old, &mut d, None, now()).map(|_| ())),
            ["deal.pipeline"]
        );
    }

    #[test]
    fn stage_moves_are_checked_against_the_pipeline() {
        let old = open_deal();
        let mut d = old.clone();
        d.stage = "signed".into();
        assert_eq!(
            fields(settle(&old, &mut d, Some(&pipeline()), now()).map(|_| ())),
            ["deal.stage"]
        );
    }
}
