//! Lifecycle stages of a lead and their history: LEAD → ENGAGED (first activity) → MQL (score
//! and grade pass the published model's thresholds) → SQL (handed off to a deal), plus RECYCLED
//! and DISQUALIFIED.
//!
//! Every change is a row of `lead_stage_changes` written in the same transaction as the lead row,
//! followed (as the transaction's last writes) by its event: `lead.engaged`, `lead.qualified`,
//! `lead.handed_off`, `lead.recycled`, `lead.disqualified`. Each change first reads the lead with
//! [`WriteTx::get`], which row-locks it on PostgreSQL (SQLite has one writer at a time), so
//! concurrent changes of one lead apply one after another and a crossing happens exactly once.
//!
//! Scores move leads too (ENGAGED, MQL): `crate::scoring::apply` decides and records those
//! moves here ([`record_changes`]). A `RecycleLead` with `reset_score` records a floor
//! ([`score_floor`]): activities that occurred at or before it no longer count.

use kizuna_errors::{ApiError, Validator};
use kizuna_proto::leads::{Lead, ListStageChangesResponse, StageChange};
use kizuna_proto::types::LifecycleStage;
use kizuna_store::page::{decode_token, encode_token, page_size, query_hash};
use kizuna_store::{
    Column, ListQuery, MAX_REQUEST_ID_CHARS, Sql, Store, Value, WriteTx, db_error, db_span,
};
use sqlx::Row;
use tracing::Instrument;

use crate::capture::LiveLead;
use crate::error::Result;
use crate::tables::{Leads, stage_name};

/// Longest accepted recycle or disqualification reason.
pub const MAX_REASON_CHARS: usize = 500;
/// FAILED_PRECONDITION reason: the lead's stage does not allow the change.
pub const STAGE_TRANSITION_NOT_ALLOWED: &str = "STAGE_TRANSITION_NOT_ALLOWED";

const TABLE: &str = "lead_stage_changes";

/// The stage of `lead` (UNSPECIFIED if unknown).
pub fn stage_of(lead: &Lead) -> LifecycleStage {
    LifecycleStage::try_from(lead.stage).unwrap_or(LifecycleStage::Unspecified)
}

fn parse_stage(short: &str) -> LifecycleStage {
    LifecycleStage::from_str_name(&format!("LIFECYCLE_STAGE_{short}"))
        .unwrap_or(LifecycleStage::Unspecified)
}

fn not_allowed(lead: &Lead, to: LifecycleStage, detail: &str) -> ApiError {
    ApiError::FailedPrecondition {
        reason: STAGE_TRANSITION_NOT_ALLOWED,
        message: format!(
            "`{}` cannot move from {} to {}{detail}",
            lead.name,
            stage_name(lead.stage),
            stage_name(to as i32)
        ),
    }
}

/// Whether an explicit stage change (an RPC) may move a lead from `from` to `to`: SQL from LEAD,
/// ENGAGED, MQL or RECYCLED; RECYCLED from LEAD, ENGAGED, MQL or SQL; DISQUALIFIED from any
/// stage but itself. (ENGAGED and MQL are reached by activities only.)
pub fn transition_allowed(from: LifecycleStage, to: LifecycleStage) -> bool {
    use LifecycleStage::*;
    match to {
        Sql => matches!(from, Lead | Engaged | Mql | Recycled),
        Recycled => matches!(from, Lead | Engaged | Mql | Sql),
        Disqualified => from != Disqualified,
        _ => false,
    }
}

/// One stage change about to be recorded.
#[derive(Clone, Debug)]
pub(crate) struct Transition {
    /// The stage left.
    pub(crate) from: LifecycleStage,
    /// The stage entered.
    pub(crate) to: LifecycleStage,
    /// What caused it (an RPC or job name).
    pub(crate) cause: String,
    /// Why (a deal name, a recycle reason, a merged lead).
    pub(crate) reason: String,
    /// Whether the score was reset with it.
    pub(crate) score_reset: bool,
}

/// Inserts the history rows of `changes` (lead name, change), in order, with multi-row
/// statements: the one writer of `lead_stage_changes`.
pub(crate) async fn record_changes(
    tx: &mut WriteTx<'_>,
    changes: &[(String, Transition)],
    now: i64,
) -> Result<(), ApiError> {
    let size = |(lead, change): &(String, Transition)| {
        lead.len() + change.cause.len() + change.reason.len() + 80
    };
    for range in kizuna_store::bulk::statements(tx.db().statement_bytes(), changes, 7, size) {
        let chunk = &changes[range];
        let mut sql = Sql::new(
            "INSERT INTO lead_stage_changes \
             (lead_name, from_stage, to_stage, cause, reason, score_reset, change_time) VALUES ",
        );
        for (i, (lead, change)) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(")
                .bind(lead.as_str())
                .push(", ")
                .bind(stage_name(change.from as i32))
                .push(", ")
                .bind(stage_name(change.to as i32))
                .push(", ")
                .bind(change.cause.as_str())
                .push(", ")
                .bind(change.reason.as_str())
                .push(", ")
                .bind(i64::from(change.score_reset))
                .push(", ")
                .bind(now)
                .push(")");
        }
        let db = tx.db().clone();
        sql.query()
            .execute(tx.conn())
            .instrument(db_span(&db, "INSERT", "lead_stage_changes"))
            .await
            .map_err(db_error)?;
    }
    Ok(())
}

/// The latest score reset of `lead` at or before `as_of` (microseconds), if any.
pub(crate) async fn score_floor(
    conn: &mut sqlx::AnyConnection,
    lead: &str,
    as_of: i64,
) -> Result<Option<i64>, ApiError> {
    let row = sqlx::query(
        "SELECT change_time FROM lead_stage_changes \
         WHERE lead_name = $1 AND score_reset = $2 AND change_time <= $3 \
         ORDER BY id DESC LIMIT 1",
    )
    .bind(lead)
    .bind(1_i64)
    .bind(as_of)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    row.map(|row| row.try_get::<i64, _>(0).map_err(db_error))
        .transpose()
}

pub(crate) fn validate_name(v: &mut Validator, field: &str, name: &str) {
    v.required(field, name);
    if !name.is_empty() && kizuna_store::parse_name::<Leads>(name).is_none() {
        v.violation(
            field,
            "must be a Lead name like `leads/{id}` (ids: a-z, 0-9, -)",
        );
    }
}

/// The newest history row of `lead`: (to stage, reason).
async fn last_change(
    conn: &mut sqlx::AnyConnection,
    lead: &str,
) -> Result<Option<(LifecycleStage, String)>, ApiError> {
    let row = sqlx::query(
        "SELECT to_stage, reason FROM lead_stage_changes WHERE lead_name = $1 \
         ORDER BY id DESC LIMIT 1",
    )
    .bind(lead)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    row.map(|row| {
        let to: String = row.try_get(0).map_err(db_error)?;
        let reason: String = row.try_get(1).map_err(db_error)?;
        Ok((parse_stage(&to), reason))
    })
    .transpose()
}

/// Inside `tx`: stores `lead` moved by `change`, records the change and emits `lead.<verb>`
/// (and `lead.score_changed` when `score_reset` zeroed a score).
async fn apply(
    tx: &mut WriteTx<'_>,
    mut lead: Lead,
    change: Transition,
    verb: &str,
) -> Result<Lead> {
    let now = kizuna_db::now_micros();
    lead.stage = change.to as i32;
    if change.score_reset {
        // The activities so far stop counting: drop the incremental state (the next activity
        // rebuilds it from the activities after this change) and store 0.
        lead.score = 0.0;
        let previous = crate::scoring::scores::load(tx, std::slice::from_ref(&lead.name))
            .await?
            .remove(&lead.name)
            .unwrap_or_default();
        crate::scoring::scores::store(
            tx,
            &[crate::scoring::scores::Write {
                lead: &lead.name,
                state: None,
                score: 0.0,
                grade: &lead.grade,
                notified_score: previous.notified_score,
                notified_grade: &previous.notified_grade,
            }],
        )
        .await?;
    }
    let lead = tx.replace::<Leads>(lead).await?;
    record_changes(tx, &[(lead.name.clone(), change)], now).await?;
    tx.emit::<Leads>(verb, &lead).await?;
    Ok(lead)
}

/// Moves the lead `name` to SQL for `deal` (see the `MarkHandedOff` RPC).
pub async fn mark_handed_off(
    store: &Store,
    name: &LiveLead,
    deal: &str,
    request_id: &str,
) -> Result<Lead> {
    let mut v = Validator::new();
    validate_name(&mut v, "name", name);
    v.required("deal", deal)
        .resource_name("deal", deal, "deals");
    v.max_chars("request_id", request_id, MAX_REQUEST_ID_CHARS);
    v.finish()?;
    const METHOD: &str = "MarkHandedOff";
    store
        .idempotent(METHOD, request_id, async |tx| {
            let lead = tx.get::<Leads>(name).await?;
            let from = stage_of(&lead);
            if from == LifecycleStage::Sql {
                return match last_change(tx.conn(), name).await? {
                    Some((LifecycleStage::Sql, previous)) if previous == deal => Ok(lead),
                    Some((LifecycleStage::Sql, previous)) => Err(not_allowed(
                        &lead,
                        LifecycleStage::Sql,
                        &format!(": it is already handed off to `{previous}`"),
                    )
                    .into()),
                    _ => Err(not_allowed(&lead, LifecycleStage::Sql, "").into()),
                };
            }
            if !transition_allowed(from, LifecycleStage::Sql) {
                return Err(not_allowed(&lead, LifecycleStage::Sql, "").into());
            }
            let change = Transition {
                from,
                to: LifecycleStage::Sql,
                cause: METHOD.into(),
                reason: deal.into(),
                score_reset: false,
            };
            apply(tx, lead, change, "handed_off").await
        })
        .await
}

fn validate_reason(v: &mut Validator, reason: &str) {
    v.check(!reason.trim().is_empty(), "reason", "is required")
        .max_chars("reason", reason, MAX_REASON_CHARS);
}

/// Sends the lead `name` back to nurturing (see the `RecycleLead` RPC).
pub async fn recycle(
    store: &Store,
    name: &LiveLead,
    reason: &str,
    reset_score: bool,
) -> Result<Lead> {
    let mut v = Validator::new();
    validate_name(&mut v, "name", name);
    validate_reason(&mut v, reason);
    v.finish()?;
    let mut tx = store.begin().await?;
    let lead = tx.get::<Leads>(name).await?;
    let from = stage_of(&lead);
    if !transition_allowed(from, LifecycleStage::Recycled) {
        return Err(not_allowed(&lead, LifecycleStage::Recycled, "").into());
    }
    let change = Transition {
        from,
        to: LifecycleStage::Recycled,
        cause: "RecycleLead".into(),
        reason: reason.into(),
        score_reset: reset_score,
    };
    let lead = apply(&mut tx, lead, change, "recycled").await?;
    tx.commit().await?;
    Ok(lead)
}

/// Disqualifies the lead `name` (see the `DisqualifyLead` RPC).
pub async fn disqualify(store: &Store, name: &LiveLead, reason: &str) -> Result<Lead> {
    let mut v = Validator::new();
    validate_name(&mut v, "name", name);
    validate_reason(&mut v, reason);
    v.finish()?;
    let mut tx = store.begin().await?;
    let lead = tx.get::<Leads>(name).await?;
    let from = stage_of(&lead);
    if !transition_allowed(from, LifecycleStage::Disqualified) {
        return Err(not_allowed(&lead, LifecycleStage::Disqualified, "").into());
    }
    let change = Transition {
        from,
        to: LifecycleStage::Disqualified,
        cause: "DisqualifyLead".into(),
        reason: reason.into(),
        score_reset: false,
    };
    let lead = apply(&mut tx, lead, change, "disqualified").await?;
    tx.commit().await?;
    Ok(lead)
}

/// A page of the stage changes of the lead `parent`, oldest first.
pub async fn list_changes(
    store: &Store,
    parent: &LiveLead,
    requested_page_size: i32,
    page_token: &str,
) -> Result<ListStageChangesResponse> {
    let parent = parent.as_str();
    let mut v = Validator::new();
    validate_name(&mut v, "parent", parent);
    v.finish()?;
    let limit = page_size(requested_page_size)?;
    let query = ListQuery {
        parent: parent.to_owned(),
        page_size: requested_page_size,
        page_token: String::new(),
        filter: String::new(),
        order_by: String::new(),
    };
    let hash = query_hash(TABLE, &query);
    let after = match decode_token(page_token, &hash, Column::int("id"))? {
        Some((Value::Int(id), _)) => id,
        Some(_) => return Err(ApiError::invalid("page_token", "is not a valid token").into()),
        None => 0,
    };
    // The lead must exist: a typo must not read as "no history".
    store.get::<Leads>(parent).await?;
    let db = store.db();
    let rows = sqlx::query(
        "SELECT id, from_stage, to_stage, cause, reason, change_time FROM lead_stage_changes \
         WHERE lead_name = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(parent)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(db.pool())
    .instrument(kizuna_store::db_span(db, "SELECT", "lead_stage_changes"))
    .await
    .map_err(db_error)?;
    let now = kizuna_db::now_micros();
    let times = rows
        .iter()
        .map(|row| row.try_get::<i64, _>(5).map_err(db_error))
        .collect::<Result<Vec<i64>, _>>()?;
    let mut stage_changes = Vec::with_capacity(rows.len());
    let mut next_page_token = String::new();
    for (i, row) in rows.iter().enumerate() {
        if i as i64 == limit {
            break;
        }
        let id: i64 = row.try_get(0).map_err(db_error)?;
        let from: String = row.try_get(1).map_err(db_error)?;
        let to: String = row.try_get(2).map_err(db_error)?;
        let change_time = times[i];
        // Until the next change (the extra row fetched for the page token tells it for the
        // last entry of a page), or until now for the current stage.
        let until = times.get(i + 1).copied().unwrap_or(now).max(change_time);
        let micros = until - change_time;
        stage_changes.push(StageChange {
            from_stage: parse_stage(&from) as i32,
            to_stage: parse_stage(&to) as i32,
            cause: row.try_get(3).map_err(db_error)?,
            reason: row.try_get(4).map_err(db_error)?,
            change_time: Some(kizuna_store::time::to_timestamp(change_time)),
            time_in_stage: Some(prost_types::Duration {
                seconds: micros / 1_000_000,
                nanos: i32::try_from((micros % 1_000_000) * 1_000).unwrap_or_default(),
            }),
        });
        if rows.len() as i64 > limit && i as i64 == limit - 1 {
            next_page_token = encode_token(&Value::Int(id), "", &hash);
        }
    }
    Ok(ListStageChangesResponse {
        stage_changes,
        next_page_token,
    })
}

/// Inside `tx`: forgets the stage history of `lead` (deleted), so a lead created later under
/// the same id starts with none.
pub(crate) async fn forget_history(tx: &mut WriteTx<'_>, lead: &str) -> Result<(), ApiError> {
    let db = tx.db().clone();
    sqlx::query("DELETE FROM lead_stage_changes WHERE lead_name = $1")
        .bind(lead)
        .execute(tx.conn())
        .instrument(db_span(&db, "DELETE", TABLE))
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Inside a merge of `from` into `to`: the history of `from` becomes part of `to`'s, and its
/// score resets stop applying (the merged activities count under the survivor's floor).
pub(crate) async fn move_history(
    tx: &mut WriteTx<'_>,
    from: &str,
    to: &str,
) -> Result<(), ApiError> {
    let db = tx.db().clone();
    sqlx::query(
        "UPDATE lead_stage_changes SET lead_name = $1, score_reset = $2 WHERE lead_name = $3",
    )
    .bind(to)
    .bind(0_i64)
    .bind(from)
    .execute(tx.conn())
    .instrument(db_span(&db, "UPDATE", TABLE))
    .await
    .map_err(db_error)?;
    Ok(())
}

/// The latest score reset of each lead of `leads` that has one: (lead, change time).
pub(crate) async fn score_floors(
    tx: &mut WriteTx<'_>,
    leads: &crate::tables::LeadSet<'_>,
) -> Result<Vec<(String, i64)>, ApiError> {
    let mut sql = Sql::new(
        "SELECT lead_name, MAX(change_time) FROM lead_stage_changes WHERE score_reset = 1 AND ",
    );
    leads.restrict(&mut sql, "lead_name");
    sql.push(" GROUP BY lead_name");
    let db = tx.db().clone();
    let rows = sql
        .query()
        .fetch_all(tx.conn())
        .instrument(db_span(&db, "SELECT", TABLE))
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(db_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_round_trip() {
        for stage in [
            LifecycleStage::Lead,
            LifecycleStage::Engaged,
            LifecycleStage::Mql,
            LifecycleStage::Sql,
            LifecycleStage::Recycled,
            LifecycleStage::Disqualified,
        ] {
            assert_eq!(parse_stage(&stage_name(stage as i32)), stage);
        }
        assert_eq!(parse_stage("NOPE"), LifecycleStage::Unspecified);
    }

    #[test]
    fn explicit_transitions() {
        use LifecycleStage::*;
        let open = [Lead, Engaged, Mql, Recycled];
        for from in open {
            assert!(transition_allowed(from, Sql), "{from:?} -> SQL");
            assert!(
                transition_allowed(from, Disqualified),
                "{from:?} -> DISQUALIFIED"
            );
        }
        for from in [Lead, Engaged, Mql, Sql] {
            assert!(transition_allowed(from, Recycled), "{from:?} -> RECYCLED");
        }
        assert!(!transition_allowed(Disqualified, Sql));
        assert!(!transition_allowed(Disqualified, Recycled));
        assert!(!transition_allowed(Disqualified, Disqualified));
        assert!(!transition_allowed(Recycled, Recycled));
        assert!(
            !transition_allowed(Sql, Sql),
            "a repeat hand-off is handled apart"
        );
        assert!(transition_allowed(Sql, Disqualified));
        for to in [Lead, Engaged, Mql, Unspecified, Customer] {
            assert!(!transition_allowed(Lead, to), "RPCs never move to {to:?}");
        }
    }
}
