//! Validation and money: a deal's caller-settable fields, its line items and their total.
//!
//! Totals are summed in 64-bit minor units and refused (INVALID_ARGUMENT) rather than wrapped.

use kizuna_errors::{ApiError, Validator};
use kizuna_proto::deals::{Deal, deal};
use kizuna_proto::types::{Date, Money};
use kizuna_store::parse_parent;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deals::fixtures::{deal, fields, yen};

    fn line(product: &str, quantity: i64, unit_price: Money) -> deal::LineItem {
        deal::LineItem {
            product: product.into(),
            quantity,
            unit_price: Some(unit_price),
            description: String::new(),
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
}
