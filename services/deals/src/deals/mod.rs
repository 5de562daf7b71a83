//! Deals: creating, updating and deleting them, the SQL other modules need on the `deals` table
//! (the open deals of a pipeline), and the public surface of the folder.
//!
//! [`validate`](validate()) checks a deal and sums its line items (`validate.rs`), [`start`] and
//! [`settle`] move it through its pipeline's stages (`stages.rs`), and every move is appended to
//! the stage history (`history.rs`) and announced with `deal.stage_changed`, plus `deal.won`,
//! `deal.lost` or `deal.reopened` when the state changes, in the same transaction as the change.

mod history;
mod stages;
mod validate;

#[cfg(test)]
mod fixtures;

use kizuna_errors::ApiError;
use kizuna_proto::deals::{Deal, Pipeline, deal};
use kizuna_proto::prost_types::FieldMask;
use kizuna_store::{Store, WriteTx, apply_mask};
use sqlx::Row;

use crate::error::{Error, Result};
use crate::tables::{Deals, Pipelines, state_name};

#[cfg(test)]
pub(crate) use history::stage_moves;
pub use stages::{Movement, settle, start};
pub use validate::{MAX_CONTACTS, MAX_LINE_ITEMS, fill_amount, line_total, valid_date, validate};

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
            history::record_move(tx, None, &created).await?;
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
        history::record_move(&mut tx, Some(&old), &updated).await?;
    }
    tx.emit::<Deals>("updated", &updated).await?;
    stages::announce(&mut tx, movement, &updated).await?;
    tx.commit().await?;
    Ok(updated)
}

/// Deletes a deal and its stage history.
pub async fn delete(store: &Store, name: &str, etag: &str) -> Result<Deal> {
    let mut tx = store.begin().await?;
    let current = tx.get::<Deals>(name).await?;
    kizuna_store::check_etag::<Deals>(&current, etag)?;
    tx.remove::<Deals>(name).await?;
    history::forget(&mut tx, name).await?;
    tx.emit::<Deals>("deleted", &current).await?;
    tx.commit().await?;
    Ok(current)
}

/// `SELECT {columns} FROM deals` for the open deals of `pipeline` (to narrow and order further).
fn open_deals_of(columns: &str, pipeline: &str) -> kizuna_store::Sql {
    let mut sql = kizuna_store::Sql::new(format!("SELECT {columns} FROM deals WHERE pipeline = "));
    sql.bind(pipeline)
        .push(" AND state = ")
        .bind(state_name(deal::State::Open as i32));
    sql
}

/// The first (by id) open deal of `pipeline`, if it has one.
pub(crate) async fn first_open_deal(
    tx: &mut WriteTx<'_>,
    pipeline: &str,
) -> Result<Option<String>> {
    let mut sql = open_deals_of("id", pipeline);
    sql.push(" ORDER BY id LIMIT 1");
    let row = sql
        .query()
        .fetch_optional(tx.conn())
        .await
        .map_err(kizuna_store::db_error)?;
    match row {
        Some(row) => {
            let id: String = row.try_get(0).map_err(kizuna_store::db_error)?;
            Ok(Some(format!("deals/{id}")))
        }
        None => Ok(None),
    }
}

/// For every stage of `pipeline` holding open deals, `(stage, one of those deals)`.
pub(crate) async fn open_deals_by_stage(
    tx: &mut WriteTx<'_>,
    pipeline: &str,
) -> Result<Vec<(String, String)>> {
    let mut sql = open_deals_of("stage, MIN(id)", pipeline);
    sql.push(" GROUP BY stage ORDER BY stage");
    let rows = sql
        .query()
        .fetch_all(tx.conn())
        .await
        .map_err(kizuna_store::db_error)?;
    let mut stages = Vec::with_capacity(rows.len());
    for row in rows {
        let stage: String = row.try_get(0).map_err(kizuna_store::db_error)?;
        let id: String = row.try_get(1).map_err(kizuna_store::db_error)?;
        stages.push((stage, format!("deals/{id}")));
    }
    Ok(stages)
}

/// The names of the open deals in `stage` of `pipeline`, by id.
pub(crate) async fn open_deals_in_stage(
    tx: &mut WriteTx<'_>,
    pipeline: &str,
    stage: &str,
) -> Result<Vec<String>> {
    let mut sql = open_deals_of("id", pipeline);
    sql.push(" AND stage = ").bind(stage).push(" ORDER BY id");
    let rows = sql
        .query()
        .fetch_all(tx.conn())
        .await
        .map_err(kizuna_store::db_error)?;
    let mut names = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get(0).map_err(kizuna_store::db_error)?;
        names.push(format!("deals/{id}"));
    }
    Ok(names)
}
