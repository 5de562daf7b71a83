//! Keyset pagination: page sizes, `order_by` parsing and opaque page tokens bound to the query.
//!
//! A token records the last row's sort value and id plus a hash of the query (parent, filter,
//! order), so pages stay stable while rows are inserted and a token cannot be replayed against
//! another query.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kizuna_errors::ApiError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::table::{Column, ColumnKind, STANDARD_COLUMNS, Value};

/// Page size when the caller asks for 0.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page served; larger requests are clamped (AIP-158).
pub const MAX_PAGE_SIZE: i64 = 1000;
/// Longest accepted `filter`.
pub const MAX_FILTER_CHARS: usize = 2000;
/// Longest accepted `order_by`.
pub const MAX_ORDER_BY_CHARS: usize = 200;

/// What a `List` call asks for.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    /// Parent resource name (empty for top-level collections; `-` ids mean "any parent").
    pub parent: String,
    /// Requested page size (0 means the default).
    pub page_size: i32,
    /// Token from the previous page.
    pub page_token: String,
    /// AIP-160 filter.
    pub filter: String,
    /// `field [asc|desc]`.
    pub order_by: String,
}

/// One page of results.
#[derive(Clone, Debug)]
pub struct Page<M> {
    /// The items.
    pub items: Vec<M>,
    /// Token for the next page, empty on the last.
    pub next_page_token: String,
}

/// The order a list is served in.
#[derive(Clone, Copy, Debug)]
pub struct Order {
    /// Column sorted on (ties broken by id).
    pub column: Column,
    /// Descending?
    pub descending: bool,
}

/// Parses `order_by` against the table's columns.
pub fn parse_order(order_by: &str, columns: &[Column]) -> Result<Order, ApiError> {
    let words: Vec<&str> = order_by.split_whitespace().collect();
    let (field, descending) = match words.as_slice() {
        [] => {
            return Ok(Order {
                column: STANDARD_COLUMNS[0],
                descending: false,
            });
        }
        [field] => (*field, false),
        [field, dir] if dir.eq_ignore_ascii_case("asc") => (*field, false),
        [field, dir] if dir.eq_ignore_ascii_case("desc") => (*field, true),
        _ => {
            return Err(ApiError::invalid(
                "order_by",
                "must be `field`, `field asc` or `field desc` (one field)",
            ));
        }
    };
    let column = STANDARD_COLUMNS
        .iter()
        .chain(columns)
        .find(|c| c.field == field)
        .copied()
        .ok_or_else(|| ApiError::invalid("order_by", format!("cannot order by `{field}`")))?;
    Ok(Order { column, descending })
}

/// The page size to fetch.
pub fn page_size(requested: i32) -> Result<i64, ApiError> {
    match i64::from(requested) {
        n if n < 0 => Err(ApiError::invalid("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

#[derive(Serialize, Deserialize)]
struct Token {
    /// Sort value of the last row.
    k: serde_json::Value,
    /// Id of the last row.
    i: String,
    /// Hash of the query.
    q: String,
}

/// Hash of the query a token belongs to.
pub fn query_hash(table: &str, query: &ListQuery) -> String {
    let mut hasher = Sha256::new();
    for part in [table, &query.parent, &query.filter, query.order_by.trim()] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Encodes the position after (`value`, `id`).
pub fn encode_token(value: &Value, id: &str, hash: &str) -> String {
    let k = match value {
        Value::Text(s) => serde_json::Value::from(s.as_str()),
        Value::Int(n) => serde_json::Value::from(*n),
        Value::Float(f) => serde_json::Value::from(*f),
        Value::Bytes(_) => serde_json::Value::Null,
    };
    let token = Token {
        k,
        i: id.to_owned(),
        q: hash.to_owned(),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// Decodes a token for this query; a token from another query is INVALID_ARGUMENT.
pub fn decode_token(
    token: &str,
    hash: &str,
    column: Column,
) -> Result<Option<(Value, String)>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        ApiError::invalid(
            "page_token",
            "is not a token from this query (same parent, filter and order_by)",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let token: Token = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if token.q != hash {
        return Err(invalid());
    }
    let value = match column.kind {
        ColumnKind::Text | ColumnKind::Enum => {
            Value::Text(token.k.as_str().ok_or_else(invalid)?.to_owned())
        }
        ColumnKind::Int | ColumnKind::Time => Value::Int(token.k.as_i64().ok_or_else(invalid)?),
        ColumnKind::Float => Value::Float(token.k.as_f64().ok_or_else(invalid)?),
    };
    Ok(Some((value, token.i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_is_bound_to_its_query() {
        let query = ListQuery {
            filter: "stage = MQL".into(),
            ..Default::default()
        };
        let hash = query_hash("leads", &query);
        let token = encode_token(&Value::Int(42), "abc", &hash);
        let column = STANDARD_COLUMNS[0];
        assert_eq!(
            decode_token(&token, &hash, column).expect("ok"),
            Some((Value::Int(42), "abc".into()))
        );
        let other = query_hash(
            "leads",
            &ListQuery {
                filter: "stage = SQL".into(),
                ..Default::default()
            },
        );
        assert!(decode_token(&token, &other, column).is_err());
        assert!(decode_token("garbage!", &hash, column).is_err());
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0).expect("default"), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(5000).expect("clamped"), MAX_PAGE_SIZE);
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn order_by_is_checked() {
        assert!(parse_order("update_time desc", &[]).expect("ok").descending);
        assert!(parse_order("secret_column", &[]).is_err());
        assert!(parse_order("create_time sideways", &[]).is_err());
    }
}
