//! The deal stage history (`deal_stage_history`): one row per stage move, for forecasting and
//! win-rate reports. This is the only module that writes SQL for that table; the rest of the
//! service records and forgets moves through it.

use kizuna_proto::deals::Deal;
use kizuna_store::WriteTx;

use crate::error::Result;
use crate::tables::state_name;

fn deal_id(name: &str) -> &str {
    name.strip_prefix("deals/").unwrap_or(name)
}

/// Appends a stage move (or the first placement, `from` = `None`) to the stage history.
pub(super) async fn record_move(
    tx: &mut WriteTx<'_>,
    from: Option<&Deal>,
    to: &Deal,
) -> Result<()> {
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

/// Deletes the stage history of the deal `name` (when the deal is deleted).
pub(super) async fn forget(tx: &mut WriteTx<'_>, name: &str) -> Result<()> {
    let mut sql = kizuna_store::Sql::new("DELETE FROM deal_stage_history WHERE deal_id = ");
    sql.bind(deal_id(name));
    sql.query()
        .execute(tx.conn())
        .await
        .map_err(kizuna_store::db_error)?;
    Ok(())
}

/// `(from_stage, to_stage, to_state)` of every recorded move of the deal `deal_id`, oldest first.
#[cfg(test)]
pub(crate) async fn stage_moves(
    store: &kizuna_store::Store,
    deal_id: &str,
) -> Vec<(String, String, String)> {
    use sqlx::Row;
    sqlx::query(
        "SELECT from_stage, to_stage, to_state FROM deal_stage_history WHERE deal_id = $1 ORDER BY sequence",
    )
    .bind(deal_id)
    .fetch_all(store.db().pool())
    .await
    .expect("history")
    .iter()
    .map(|r| {
        (
            r.try_get(0).expect("from"),
            r.try_get(1).expect("to"),
            r.try_get(2).expect("state"),
        )
    })
    .collect()
}
