//! What the gateway's `List` calls add to the shared store's paging: the documented limits on
//! `filter` and `order_by`, their default orders, and full enum value names in filters.

use kizuna_errors::{ApiError, Validator};
use kizuna_store::ListQuery;

use crate::tables::STAGE_PREFIX;

/// Longest accepted `filter`.
pub const MAX_FILTER_CHARS: usize = 2000;
/// Longest accepted `order_by`.
pub const MAX_ORDER_BY_CHARS: usize = 200;

/// A store query from a `List` request; an empty `order_by` means `default_order`.
pub fn query(
    parent: String,
    page_size: i32,
    page_token: String,
    filter: String,
    order_by: String,
    default_order: &str,
) -> Result<ListQuery, ApiError> {
    let mut v = Validator::new();
    v.max_chars("filter", &filter, MAX_FILTER_CHARS).max_chars(
        "order_by",
        &order_by,
        MAX_ORDER_BY_CHARS,
    );
    v.finish()?;
    let order_by = if order_by.trim().is_empty() {
        default_order.to_owned()
    } else {
        order_by
    };
    Ok(ListQuery {
        parent,
        page_size,
        page_token,
        filter: short_enum_names(&filter),
        order_by,
    })
}

/// Rewrites bare lifecycle stage values to the short names the tables store, so the contract's
/// `stage = LIFECYCLE_STAGE_CUSTOMER` means `stage = CUSTOMER`. Quoted strings are left alone.
pub fn short_enum_names(filter: &str) -> String {
    let mut out = String::with_capacity(filter.len());
    let mut chars = filter.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' {
                if let Some(escaped) = chars.next() {
                    out.push(escaped);
                }
            } else if c == q {
                quote = None;
            }
        } else if c == '"' || c == '\'' {
            quote = Some(c);
            out.push(c);
        } else if c.is_alphanumeric() || c == '_' {
            // A word, as the filter tokenizer reads it: letters, digits, `_` and `.`.
            let mut word = String::from(c);
            while let Some(&next) = chars.peek() {
                if next.is_alphanumeric() || next == '_' || next == '.' {
                    word.push(next);
                    chars.next();
                } else {
                    break;
                }
            }
            match word.strip_prefix(STAGE_PREFIX) {
                Some(short) if !short.is_empty() => out.push_str(short),
                _ => out.push_str(&word),
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_stage_names_are_shortened() {
        assert_eq!(
            short_enum_names("stage = LIFECYCLE_STAGE_CUSTOMER"),
            "stage = CUSTOMER"
        );
        assert_eq!(
            short_enum_names(
                "to_stage=LIFECYCLE_STAGE_MQL AND transition_time >= \"2026-04-01T00:00:00Z\""
            ),
            "to_stage=MQL AND transition_time >= \"2026-04-01T00:00:00Z\""
        );
        assert_eq!(short_enum_names("stage = MQL"), "stage = MQL");
        assert_eq!(
            short_enum_names("(stage:LIFECYCLE_STAGE_SQL)"),
            "(stage:SQL)"
        );
    }

    #[test]
    fn quoted_text_and_other_words_are_untouched() {
        for filter in [
            r#"display_name = "LIFECYCLE_STAGE_MQL""#,
            r#"display_name = 'say \' LIFECYCLE_STAGE_MQL'"#,
            "stage = LIFECYCLE_STAGE_",
            "stage = XLIFECYCLE_STAGE_MQL",
            r#"email = "taro@example.jp""#,
            "deals:\"deals/42\"",
        ] {
            assert_eq!(short_enum_names(filter), filter);
        }
    }

    #[test]
    fn defaults_and_limits() {
        let q = query(
            String::new(),
            0,
            String::new(),
            String::new(),
            " ".into(),
            "create_time desc",
        )
        .expect("valid");
        assert_eq!(q.order_by, "create_time desc");
        let q = query(
            String::new(),
            0,
            String::new(),
            String::new(),
            "display_name".into(),
            "create_time desc",
        )
        .expect("valid");
        assert_eq!(q.order_by, "display_name");
        assert!(
            query(
                String::new(),
                0,
                String::new(),
                "x".repeat(2001),
                String::new(),
                "create_time desc"
            )
            .is_err()
        );
        assert!(
            query(
                String::new(),
                0,
                String::new(),
                String::new(),
                "x".repeat(201),
                "create_time desc"
            )
            .is_err()
        );
    }
}
