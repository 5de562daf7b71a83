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
//! Scoring on ingest ([`score_after_activity`]) and [`lead_score()`] evaluate the newest published
//! scoring model (by update time) with [`engine::evaluate`]. A `RecycleLead` with `reset_score`
//! records a floor: activities that occurred at or before it no longer count.

use std::collections::HashMap;

use kizuna_errors::{ApiError, Validator};
use kizuna_proto::leads::{
    Activity, Lead, LeadScore, ListStageChangesResponse, ScoringModel, StageChange, lead_score,
};
use kizuna_proto::types::LifecycleStage;
use kizuna_store::outbox::NewEvent;
use kizuna_store::page::{decode_token, encode_token, page_size, query_hash};
use kizuna_store::{
    Column, ListQuery, MAX_REQUEST_ID_CHARS, Sql, Store, Value, WriteTx, db_error, db_span,
};
use prost::Message;
use prost_types::Timestamp;
use sqlx::Row;
use tracing::Instrument;

use crate::error::Result;
use crate::scoring::engine::{self, RuleKind};
use crate::tables::{Leads, stage_name};

pub mod apply;
pub mod scores;

pub use scores::SCORE_EPSILON;

use apply::activity_time;
/// Longest accepted recycle or disqualification reason.
pub const MAX_REASON_CHARS: usize = 500;
/// FAILED_PRECONDITION reason: the lead's stage does not allow the change.
pub const STAGE_TRANSITION_NOT_ALLOWED: &str = "STAGE_TRANSITION_NOT_ALLOWED";
/// FAILED_PRECONDITION reason: no scoring model is published.
pub const NO_PUBLISHED_MODEL: &str = "NO_PUBLISHED_MODEL";
/// Cause recorded for changes made while recording an activity.
pub const ACTIVITY_CAUSE: &str = "activity.created";

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

/// The newest published scoring model (by update time), if any.
pub async fn published_model(
    conn: &mut sqlx::AnyConnection,
) -> Result<Option<ScoringModel>, ApiError> {
    let row = sqlx::query(
        "SELECT data FROM scoring_models WHERE parent = $1 AND state = $2 \
         ORDER BY update_time DESC, id DESC LIMIT 1",
    )
    .bind("")
    .bind("PUBLISHED")
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    row.map(|row| {
        let data: Vec<u8> = row.try_get(0).map_err(db_error)?;
        ScoringModel::decode(data.as_slice())
            .map_err(|e| ApiError::Internal(format!("stored ScoringModel is corrupt: {e}")))
    })
    .transpose()
}

/// The latest score reset of `lead` at or before `as_of` (microseconds), if any.
async fn score_floor(
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

/// The activities of `lead` that count for its score: those after its score floor.
async fn scored_activities(
    conn: &mut sqlx::AnyConnection,
    lead: &str,
    as_of: i64,
) -> Result<Vec<Activity>, ApiError> {
    let floor = score_floor(conn, lead, as_of).await?.unwrap_or(i64::MIN);
    let rows = sqlx::query(
        "SELECT data FROM activities WHERE parent = $1 AND occur_time > $2 ORDER BY occur_time, id",
    )
    .bind(lead)
    .bind(floor)
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    rows.iter()
        .map(|row| {
            let data: Vec<u8> = row.try_get(0).map_err(db_error)?;
            Activity::decode(data.as_slice())
                .map_err(|e| ApiError::Internal(format!("stored Activity is corrupt: {e}")))
        })
        .collect()
}

/// What recording an activity did to its lead: the stored lead and the `lead.*` event verbs
/// to emit, in order.
#[derive(Debug)]
pub struct Outcome {
    /// The lead as stored.
    pub lead: Lead,
    /// Verbs of the `lead.*` events to emit (`engaged`, `qualified`); score changes are
    /// announced in batches by [`scores::flush`].
    pub events: Vec<&'static str>,
}

/// Inside the activity's write transaction, after the activity is inserted and with `lead`
/// read (and locked) by [`WriteTx::get`]: moves a LEAD to ENGAGED, rescores it (incrementally
/// when it can) and moves it to MQL when it passes the thresholds ([`apply::apply`]). The
/// caller emits [`Outcome::events`] with [`emit`] as the last writes.
pub async fn score_after_activity(
    tx: &mut WriteTx<'_>,
    lead: Lead,
    activity: &Activity,
) -> Result<Outcome, ApiError> {
    let model = published_model(tx.conn()).await?;
    let new = HashMap::from([(lead.name.clone(), vec![activity.clone()])]);
    let cause = apply::Cause {
        cause: ACTIVITY_CAUSE,
        engage: true,
    };
    let mut outcomes = apply::apply(
        tx,
        vec![lead],
        &new,
        model.as_ref(),
        apply::Rescore::Incremental,
        cause,
    )
    .await?;
    outcomes
        .pop()
        .ok_or_else(|| ApiError::Internal("no outcome for the lead".into()))
}

/// Inside a write transaction, with `lead` read (and locked) by [`WriteTx::get`]: rescores it
/// from all its counted activities under the newest published model and moves a lead in
/// ENGAGED or RECYCLED whose score and grade pass the thresholds to MQL, recording `cause`
/// (e.g. `lead.merged`). The caller emits [`Outcome::events`] with [`emit`] as the last writes.
pub async fn rescore(tx: &mut WriteTx<'_>, lead: Lead, cause: &str) -> Result<Outcome, ApiError> {
    let model = published_model(tx.conn()).await?;
    let cause = apply::Cause {
        cause,
        engage: false,
    };
    let mut outcomes = apply::apply(
        tx,
        vec![lead],
        &HashMap::new(),
        model.as_ref(),
        apply::Rescore::Rebuild,
        cause,
    )
    .await?;
    outcomes
        .pop()
        .ok_or_else(|| ApiError::Internal("no outcome for the lead".into()))
}

/// Emits the `lead.*` events of `outcome`; call as the transaction's last writes.
pub async fn emit(tx: &mut WriteTx<'_>, outcome: &Outcome) -> Result<(), ApiError> {
    emit_all(tx, std::slice::from_ref(outcome)).await
}

/// Emits the `lead.*` events of every outcome, in order, with multi-row inserts; call as the
/// transaction's last writes.
pub async fn emit_all(tx: &mut WriteTx<'_>, outcomes: &[Outcome]) -> Result<(), ApiError> {
    let events = outcomes
        .iter()
        .flat_map(|outcome| {
            outcome.events.iter().map(|verb| NewEvent {
                event_type: format!("lead.{verb}"),
                subject: outcome.lead.name.clone(),
                type_url: format!(
                    "type.googleapis.com/{}",
                    <Leads as kizuna_store::Table>::PROTO_NAME
                ),
                data: outcome.lead.encode_to_vec(),
            })
        })
        .collect();
    tx.emit_many(events).await
}

fn validate_name(v: &mut Validator, field: &str, name: &str) {
    v.required(field, name);
    if !name.is_empty() && kizuna_store::parse_name::<Leads>(name).is_none() {
        v.violation(
            field,
            "must be a Lead name like `leads/{id}` (ids: a-z, 0-9, -)",
        );
    }
}

/// The live score of the lead `name` as of `as_of` (default now) under the newest published
/// model, counting the activities that occurred by then.
pub async fn lead_score(store: &Store, name: &str, as_of: Option<Timestamp>) -> Result<LeadScore> {
    let mut v = Validator::new();
    validate_name(&mut v, "name", name);
    if let Some(ts) = &as_of {
        v.check(
            (0..1_000_000_000).contains(&ts.nanos),
            "as_of",
            "nanos out of range",
        );
    }
    v.finish()?;
    let as_of = as_of
        .as_ref()
        .map(kizuna_store::time::from_timestamp)
        .unwrap_or_else(kizuna_db::now_micros);
    let lead = store.get::<Leads>(name).await?;
    let mut conn = store.db().acquire().await.map_err(db_error)?;
    let model = published_model(&mut conn)
        .await?
        .ok_or_else(|| ApiError::FailedPrecondition {
            reason: NO_PUBLISHED_MODEL,
            message: "no scoring model is published; publish one to score leads".into(),
        })?;
    let activities: Vec<Activity> = scored_activities(&mut conn, name, as_of)
        .await?
        .into_iter()
        .filter(|a| activity_time(a).is_some_and(|t| t <= as_of))
        .collect();
    let score = engine::evaluate(&model, &lead, &activities, as_of);
    let contributions = score
        .breakdown
        .iter()
        .map(|c| lead_score::RuleContribution {
            rule_id: c.rule_id.clone(),
            kind: match c.kind {
                RuleKind::Engagement => lead_score::RuleKind::Engagement,
                RuleKind::Fit => lead_score::RuleKind::Fit,
            } as i32,
            points: c.points,
            activities: i32::try_from(c.activities).unwrap_or(i32::MAX),
        })
        .collect();
    Ok(LeadScore {
        lead: lead.name,
        scoring_model: model.name,
        scoring_model_revision: model.revision,
        score: score.score,
        grade: score.grade,
        qualifies: score.qualifies,
        contributions,
        as_of: Some(kizuna_store::time::to_timestamp(as_of)),
    })
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
        let previous = scores::load(tx, std::slice::from_ref(&lead.name))
            .await?
            .remove(&lead.name)
            .unwrap_or_default();
        scores::store(
            tx,
            &[scores::Write {
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
    name: &str,
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
pub async fn recycle(store: &Store, name: &str, reason: &str, reset_score: bool) -> Result<Lead> {
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
pub async fn disqualify(store: &Store, name: &str, reason: &str) -> Result<Lead> {
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
    parent: &str,
    requested_page_size: i32,
    page_token: &str,
) -> Result<ListStageChangesResponse> {
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

/// Deletes the lead `name` (after the etag check) with its stage history, so a lead created
/// later under the same id starts with none; emits `lead.deleted`.
pub async fn delete_lead(store: &Store, name: &str, etag: &str) -> Result<Lead> {
    let mut tx = store.begin().await?;
    let current = tx.get::<Leads>(name).await?;
    kizuna_store::check_etag::<Leads>(&current, etag)?;
    tx.remove::<Leads>(name).await?;
    scores::forget(&mut tx, name).await?;
    sqlx::query("DELETE FROM lead_stage_changes WHERE lead_name = $1")
        .bind(name)
        .execute(tx.conn())
        .await
        .map_err(db_error)?;
    tx.emit::<Leads>("deleted", &current).await?;
    tx.commit().await?;
    Ok(current)
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

    #[test]
    fn activity_time_falls_back_to_create_time() {
        let mut activity = Activity {
            create_time: Some(kizuna_store::time::to_timestamp(5)),
            ..Default::default()
        };
        assert_eq!(activity_time(&activity), Some(5));
        activity.occur_time = Some(kizuna_store::time::to_timestamp(3));
        assert_eq!(activity_time(&activity), Some(3));
        assert_eq!(activity_time(&Activity::default()), None);
    }
}
