//! Activities: what a lead did (page views, e-mail opens and clicks, form submits, downloads,
//! seminars, inquiries), recorded under the lead and immutable once written.

use kizuna_errors::{ApiError, Validator};
use kizuna_proto::leads::{Activity, ActivityKind, Lead};
use kizuna_store::{Store, WriteTx, db_error};

use prost::Message;
use sqlx::Row;
use tracing::Instrument;

use crate::error::{Error, Result};

pub mod ingest;
use crate::scoring;
use crate::tables::{Activities, Leads};

/// Checks an activity before it is recorded.
pub fn validate(parent: &str, activity: &Activity) -> Result<(), ApiError> {
    let mut v = Validator::new();
    v.resource_name("parent", parent, "leads")
        .required("parent", parent);
    let known = ActivityKind::try_from(activity.kind).is_ok();
    v.enum_value("activity.kind", known, activity.kind, true);
    if activity.kind == ActivityKind::Custom as i32 {
        v.required("activity.custom_kind", &activity.custom_kind);
    }
    v.max_chars("activity.custom_kind", &activity.custom_kind, 64)
        .max_chars("activity.url", &activity.url, 2048);
    v.check(
        activity.properties.len() <= 50,
        "activity.properties",
        "at most 50 entries",
    );
    for (key, value) in &activity.properties {
        v.check(
            !key.is_empty() && key.len() <= 64,
            "activity.properties",
            "keys must be 1-64 characters",
        );
        v.max_chars(&format!("activity.properties[{key}]"), value, 1024);
    }
    if let Some(occur) = &activity.occur_time {
        v.check(
            (0..1_000_000_000).contains(&occur.nanos),
            "activity.occur_time",
            "nanos out of range",
        );
    }
    v.finish()
}

/// Records an activity for the lead `parent` (which must exist) and, in the same transaction,
/// applies it to the lead: stage LEAD → ENGAGED, rescoring under the newest published model,
/// and the crossing to MQL ([`scoring::score_after_activity`]). The lead row is locked first, so
/// concurrent activities of one lead apply one after another. Idempotent by `request_id`.
pub async fn create(
    store: &Store,
    parent: &str,
    activity: Activity,
    activity_id: &str,
    request_id: &str,
) -> Result<Activity> {
    Ok(record(store, parent, activity, activity_id, request_id)
        .await?
        .0)
}

/// [`create`], answering with the lead as it stands after the activity too (`TrackActivity`).
/// A retry of an earlier request (same `request_id`) answers with the first activity and the
/// lead as it stands now.
pub async fn track(
    store: &Store,
    parent: &str,
    activity: Activity,
    request_id: &str,
) -> Result<(Activity, Lead)> {
    match record(store, parent, activity, "", request_id).await? {
        (activity, Some(lead)) => Ok((activity, lead)),
        (activity, None) => {
            let lead = crate::capture::get(store, parent).await?;
            Ok((activity, lead))
        }
    }
}

/// The activity recorded (or recalled for `request_id`) and, unless recalled, the lead after it.
async fn record(
    store: &Store,
    parent: &str,
    activity: Activity,
    activity_id: &str,
    request_id: &str,
) -> Result<(Activity, Option<Lead>)> {
    validate(parent, &activity)?;
    kizuna_store::require_name::<Leads>(parent, "parent")?;
    let mut activity = activity;
    activity.name.clear();
    if activity.occur_time.is_none() {
        activity.occur_time = Some(kizuna_store::time::to_timestamp(kizuna_db::now_micros()));
    }
    // One idempotency ledger for CreateActivity and TrackActivity: a request id records one
    // activity whichever RPC carries it.
    const METHOD: &str = "CreateActivity";
    // Set by this call's own transaction; a replay (or a lost race) answers with the first
    // call's activity and no lead.
    let mut ours: Option<(Activity, Lead)> = None;
    let answered = store
        .idempotent(METHOD, request_id, async |tx| {
            // The parent must exist (a typo in a lead name must not create orphan activities),
            // and reading it for change locks it until commit. A lead merged away leads to the
            // lead it was merged into.
            let lead = match tx.get::<Leads>(parent).await {
                Err(ApiError::NotFound { kind, name }) => {
                    match crate::capture::redirects::resolve(tx.conn(), parent).await? {
                        Some(target) => tx.get::<Leads>(&target).await?,
                        None => return Err(ApiError::NotFound { kind, name }.into()),
                    }
                }
                other => other?,
            };
            let created = tx
                .insert::<Activities>(&lead.name, activity_id, activity)
                .await?;
            let outcome = scoring::score_after_activity(tx, lead, &created).await?;
            scoring::emit(tx, &outcome).await?;
            ours = Some((created.clone(), outcome.lead));
            Ok::<_, Error>(created)
        })
        .await?;
    match ours {
        Some((created, lead)) if created == answered => Ok((answered, Some(lead))),
        _ => Ok((answered, None)),
    }
}

/// The activities of `lead` that count for its score as of `as_of`: those after its latest
/// score reset ([`crate::stages::score_floor`]), in time order.
pub(crate) async fn counted(
    conn: &mut sqlx::AnyConnection,
    lead: &str,
    as_of: i64,
) -> Result<Vec<Activity>, ApiError> {
    let floor = crate::stages::score_floor(conn, lead, as_of)
        .await?
        .unwrap_or(i64::MIN);
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

/// Moves every activity of `from` under `to`: parent and the name inside the stored message
/// are rewritten; the id is kept unless `to` already has an activity with it.
pub(crate) async fn move_all(tx: &mut WriteTx<'_>, from: &str, to: &str) -> Result<(), ApiError> {
    let revision = tx.db().schema_revision();
    let rows = sqlx::query(
        "SELECT id, data, writer_revision FROM activities WHERE parent = $1 ORDER BY id",
    )
    .bind(from)
    .fetch_all(tx.conn())
    .await
    .map_err(db_error)?;
    for row in rows {
        let id: String = row.try_get(0).map_err(db_error)?;
        let data: Vec<u8> = row.try_get(1).map_err(db_error)?;
        let written_by: i64 = row.try_get(2).map_err(db_error)?;
        if written_by > revision {
            // Rewriting it would erase fields this release does not know (see ARCHITECTURE).
            return Err(ApiError::unavailable(format!(
                "{from}/activities/{id} was written by a newer release; retry"
            )));
        }
        let mut activity =
            <kizuna_proto::leads::Activity as prost::Message>::decode(data.as_slice())
                .map_err(|e| ApiError::Internal(format!("stored Activity is corrupt: {e}")))?;
        let taken = sqlx::query("SELECT 1 FROM activities WHERE parent = $1 AND id = $2")
            .bind(to)
            .bind(id.as_str())
            .fetch_optional(tx.conn())
            .await
            .map_err(db_error)?
            .is_some();
        let new_id = if taken {
            uuid::Uuid::now_v7().to_string()
        } else {
            id.clone()
        };
        activity.name = format!("{to}/activities/{new_id}");
        sqlx::query(
            "UPDATE activities SET parent = $1, id = $2, data = $3, writer_revision = $4 \
             WHERE parent = $5 AND id = $6",
        )
        .bind(to)
        .bind(new_id.as_str())
        .bind(prost::Message::encode_to_vec(&activity))
        .bind(revision)
        .bind(from)
        .bind(id.as_str())
        .execute(tx.conn())
        .await
        .map_err(db_error)?;
    }
    Ok(())
}

/// Inside `tx`: every activity of the leads of `leads`, as (lead, activity), in lead, occur
/// time and id order.
pub(crate) async fn of_leads(
    tx: &mut WriteTx<'_>,
    leads: &crate::tables::LeadSet<'_>,
) -> Result<Vec<(String, Activity)>, ApiError> {
    let mut sql = kizuna_store::Sql::new("SELECT parent, data FROM activities WHERE ");
    leads.restrict(&mut sql, "parent");
    sql.push(" ORDER BY parent, occur_time, id");
    let db = tx.db().clone();
    let rows = sql
        .query()
        .fetch_all(tx.conn())
        .instrument(kizuna_store::db_span(&db, "SELECT", "activities"))
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|row| {
            let parent: String = row.try_get(0).map_err(db_error)?;
            let data: Vec<u8> = row.try_get(1).map_err(db_error)?;
            let activity = Activity::decode(data.as_slice())
                .map_err(|e| ApiError::Internal(format!("stored Activity is corrupt: {e}")))?;
            Ok((parent, activity))
        })
        .collect()
}
