//! Redirects left by merges: the name of a lead merged away keeps resolving to the lead it was
//! merged into. A merge re-points the redirects that targeted the merged lead, so one hop always
//! reaches a live lead.

use kizuna_errors::ApiError;
use kizuna_store::db_error;
use sqlx::Row;

/// A lead name with merge redirects resolved: the live lead it stands for, or the name as given
/// when it stands for none (reading it then fails with NOT_FOUND, or its validation names the
/// field). Only `crate::capture::live_lead_name` makes one, and the domain operations that take
/// an existing lead by name (`GetLeadScore`, `MarkHandedOff`, `RecycleLead`, `DisqualifyLead`,
/// `ListStageChanges`, `ListActivities`, …) take a `LiveLead`: a new RPC cannot forget to follow
/// a merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveLead(String);

impl LiveLead {
    /// `name` as given: it is not a lead name, so it stands for no lead.
    pub(crate) fn unresolved(name: &str) -> Self {
        Self(name.to_owned())
    }

    /// The resolved name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for LiveLead {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<LiveLead> for String {
    fn from(lead: LiveLead) -> String {
        lead.0
    }
}

/// Resolves `name` (see [`resolve_name`]).
pub(crate) async fn live(conn: &mut sqlx::AnyConnection, name: &str) -> Result<LiveLead, ApiError> {
    resolve_name(conn, name).await.map(LiveLead)
}

/// The lead `name` was merged into, if it was.
pub async fn resolve(
    conn: &mut sqlx::AnyConnection,
    name: &str,
) -> Result<Option<String>, ApiError> {
    let row = sqlx::query("SELECT target FROM lead_redirects WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    row.map(|row| row.try_get::<String, _>(0).map_err(db_error))
        .transpose()
}

/// The live lead `name` stands for: `name` itself when that lead exists, else the lead it was
/// merged into (one hop always reaches a live lead), else `name` unchanged (reading it then
/// fails with NOT_FOUND as usual). A malformed name is returned unchanged too.
pub async fn resolve_name(conn: &mut sqlx::AnyConnection, name: &str) -> Result<String, ApiError> {
    let Some(parsed) = kizuna_store::parse_name::<crate::tables::Leads>(name) else {
        return Ok(name.to_owned());
    };
    let live = sqlx::query("SELECT 1 FROM leads WHERE id = $1 AND parent = $2")
        .bind(parsed.id)
        .bind(parsed.parent)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    if live.is_some() {
        return Ok(name.to_owned());
    }
    Ok(resolve(conn, name)
        .await?
        .unwrap_or_else(|| name.to_owned()))
}

/// Inside a merge of `merged` into `survivor`: leaves `merged` redirecting to `survivor` and
/// re-points the redirects that targeted `merged`, so one hop still reaches a live lead. A
/// redirect named like the survivor (a stale one, the survivor being live) is dropped so
/// redirects never form a loop.
pub async fn redirect(
    conn: &mut sqlx::AnyConnection,
    merged: &str,
    survivor: &str,
    now: i64,
) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM lead_redirects WHERE name = $1")
        .bind(survivor)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    sqlx::query("UPDATE lead_redirects SET target = $1 WHERE target = $2")
        .bind(survivor)
        .bind(merged)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    sqlx::query(
        "INSERT INTO lead_redirects (name, target, merge_time) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET target = excluded.target, merge_time = excluded.merge_time",
    )
    .bind(merged)
    .bind(survivor)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}
