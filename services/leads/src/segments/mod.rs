//! Segments: saved lead filters ([`filter`]) whose members are evaluated live, counted and
//! listed with keyset pages on (`create_time`, id).

pub mod filter;

use kizuna_errors::{ApiError, Validator};
use kizuna_proto::leads::{CountSegmentMembersResponse, Lead, ListSegmentMembersResponse, Segment};
use kizuna_store::page::{ListQuery, decode_token, encode_token, page_size, query_hash};
use kizuna_store::table::STANDARD_COLUMNS;
use kizuna_store::{Sql, Store, Value, apply_mask, db_error};
use prost::Message;
use prost_types::FieldMask;
use sqlx::Row;

use crate::error::Result;
use crate::tables::Segments;

/// Longest accepted segment filter.
pub const MAX_FILTER_CHARS: usize = 2000;

/// Checks a segment's caller-settable fields; the filter must compile.
pub fn validate(store: &Store, segment: &Segment) -> Result<(), ApiError> {
    let mut v = Validator::new();
    v.required_max("segment.display_name", &segment.display_name, 200)
        .max_chars("segment.description", &segment.description, 2000)
        .required_max("segment.filter", &segment.filter, MAX_FILTER_CHARS);
    if !segment.filter.trim().is_empty()
        && segment.filter.chars().count() <= MAX_FILTER_CHARS
        && let Err(e) = filter::compile(&segment.filter, store.db().backend(), 0)
    {
        v.violation("segment.filter", e.to_string());
    }
    v.finish()
}

/// Creates a segment, idempotently for `request_id`.
pub async fn create(
    store: &Store,
    segment: Segment,
    id: &str,
    request_id: &str,
) -> Result<Segment> {
    validate(store, &segment)?;
    Ok(store
        .create::<Segments>("", id, segment, request_id)
        .await?)
}

/// Updates a segment's display name, description or filter; the etag changes.
pub async fn update(store: &Store, patch: Segment, mask: Option<&FieldMask>) -> Result<Segment> {
    kizuna_store::require_name::<Segments>(&patch.name, "segment.name")?;
    let etag = patch.etag.clone();
    let name = patch.name.clone();
    Ok(store
        .update::<Segments, _>(&name, &etag, |segment| {
            apply_mask!(segment, patch, mask, [
                "display_name" => display_name, "description" => description,
                "filter" => filter,
            ])?;
            validate(store, segment)?;
            Ok(())
        })
        .await?)
}

/// The segment's filter compiled at `now`, as a condition on `leads`.
fn members_condition(store: &Store, segment: &Segment, now: i64) -> Result<Sql, ApiError> {
    filter::compile(&segment.filter, store.db().backend(), now).map_err(|e| {
        ApiError::Internal(format!(
            "stored filter of {} does not compile: {e}",
            segment.name
        ))
    })
}

/// How many leads match the segment now.
pub async fn count(store: &Store, name: &str) -> Result<CountSegmentMembersResponse> {
    let segment = store.get::<Segments>(name).await?;
    let now = kizuna_db::now_micros();
    let mut sql = Sql::new("SELECT COUNT(*) FROM leads WHERE parent = '' AND ");
    sql.append(members_condition(store, &segment, now)?);
    let row = sql
        .query()
        .fetch_one(store.db().pool())
        .await
        .map_err(db_error)?;
    let count: i64 = row.try_get(0).map_err(db_error)?;
    Ok(CountSegmentMembersResponse {
        count,
        as_of: Some(kizuna_store::time::to_timestamp(now)),
    })
}

/// One page of the leads matching the segment now, oldest first. The page token is bound to
/// the segment's name and etag.
pub async fn list_members(
    store: &Store,
    name: &str,
    requested_size: i32,
    page_token: &str,
) -> Result<ListSegmentMembersResponse> {
    let limit = page_size(requested_size)?;
    let segment = store.get::<Segments>(name).await?;
    let hash = query_hash(
        "segment_members",
        &ListQuery {
            parent: segment.name.clone(),
            filter: segment.etag.clone(),
            ..Default::default()
        },
    );
    let after = decode_token(page_token, &hash, STANDARD_COLUMNS[0]).map_err(|_| {
        ApiError::invalid(
            "page_token",
            "is not a token of this segment's members (same segment, same version)",
        )
    })?;
    let now = kizuna_db::now_micros();
    let mut sql = Sql::new("SELECT data, id, create_time FROM leads WHERE parent = '' AND ");
    sql.append(members_condition(store, &segment, now)?);
    if let Some((value, id)) = after {
        sql.push(" AND (create_time > ")
            .bind(value.clone())
            .push(" OR (create_time = ")
            .bind(value)
            .push(" AND id > ")
            .bind(id)
            .push("))");
    }
    sql.push(" ORDER BY create_time ASC, id ASC LIMIT ")
        .bind(limit + 1);
    let rows = sql
        .query()
        .fetch_all(store.db().pool())
        .await
        .map_err(db_error)?;
    let more = rows.len() as i64 > limit;
    let mut leads = Vec::with_capacity(rows.len());
    let mut next_page_token = String::new();
    for (i, row) in rows.iter().enumerate() {
        if i as i64 == limit {
            break;
        }
        let data: Vec<u8> = row.try_get(0).map_err(db_error)?;
        leads.push(
            Lead::decode(data.as_slice())
                .map_err(|e| ApiError::Internal(format!("stored Lead is corrupt: {e}")))?,
        );
        if more && i as i64 == limit - 1 {
            let id: String = row.try_get(1).map_err(db_error)?;
            let create_time: i64 = row.try_get(2).map_err(db_error)?;
            next_page_token = encode_token(&Value::Int(create_time), &id, &hash);
        }
    }
    Ok(ListSegmentMembersResponse {
        leads,
        next_page_token,
    })
}
