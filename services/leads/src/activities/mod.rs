//! Activities: what a lead did (page views, e-mail opens and clicks, form submits, downloads,
//! seminars, inquiries), recorded under the lead and immutable once written.

use kizuna_errors::{ApiError, Validator};
use kizuna_proto::leads::{Activity, ActivityKind, Lead};
use kizuna_store::{Store, db_error};

use prost::Message;
use sqlx::Row;

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
