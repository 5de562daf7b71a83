//! Activities: what a lead did (page views, e-mail opens and clicks, form submits, downloads,
//! seminars, inquiries), recorded under the lead and immutable once written.

use kizuna_errors::{ApiError, Validator};
use kizuna_proto::leads::{Activity, ActivityKind};
use kizuna_store::Store;

use crate::error::Result;
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

/// Records an activity for the lead `parent`; the lead must exist.
pub async fn create(
    store: &Store,
    parent: &str,
    activity: Activity,
    activity_id: &str,
    request_id: &str,
) -> Result<Activity> {
    validate(parent, &activity)?;
    // The parent must exist: a typo in a lead name must not create orphan activities.
    store.get::<Leads>(parent).await?;
    let mut activity = activity;
    activity.name.clear();
    if activity.occur_time.is_none() {
        activity.occur_time = Some(kizuna_store::time::to_timestamp(kizuna_db::now_micros()));
    }
    Ok(store
        .create::<Activities>(parent, activity_id, activity, request_id)
        .await?)
}
