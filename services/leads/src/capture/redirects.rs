//! Redirects left by merges: the name of a lead merged away keeps resolving to the lead it was
//! merged into. A merge re-points the redirects that targeted the merged lead, so one hop always
//! reaches a live lead.

use kizuna_errors::ApiError;
use kizuna_store::db_error;
use sqlx::Row;

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
