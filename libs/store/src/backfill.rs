//! Backfills of derived columns.
//!
//! A migration that adds an indexed column (say `leads.tags`) gives existing rows the column's
//! default, while the value really derives from each row's stored message. The migration also
//! registers a backfill, a row of the service's `column_backfills` table:
//!
//! ```sql
//! CREATE TABLE column_backfills (
//!     name TEXT NOT NULL PRIMARY KEY,   -- "<table>.<column>"
//!     after_parent TEXT NOT NULL,       -- the key of the last row done
//!     after_id TEXT NOT NULL,
//!     done BIGINT NOT NULL
//! );
//! INSERT INTO column_backfills (name, after_parent, after_id, done)
//!     VALUES ('leads.tags', '', '', 0);
//! ```
//!
//! and the service runs [`Store::backfill_column`] at start. It walks the table in key order,
//! a chunk per transaction, recomputes the column from each message with [`Table::values`],
//! writes only the rows whose stored value differs (not touching etags: the resource did not
//! change) and records how far it got, so a restart resumes and a finished backfill is a single
//! read. On PostgreSQL the registration row is locked per chunk, so replicas take turns.

use sqlx::Row;
use tracing::Instrument;

use kizuna_errors::ApiError;

use crate::table::{ColumnKind, Table, Value};
use crate::{Sql, Store, db_error, db_span};

/// What one call of [`Store::backfill_column`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backfilled {
    /// Rows read.
    pub read: u64,
    /// Rows whose column was rewritten.
    pub written: u64,
    /// Whether the backfill is finished (now or before).
    pub done: bool,
}

impl Store {
    /// Runs the backfill of `column` of `T` registered as `"<table>.<column>"`, `chunk` rows per
    /// transaction, until it is done or `stopping` turns true. Nothing registered, or already
    /// done, is a no-op. An unknown column is an internal error.
    pub async fn backfill_column<T: Table>(
        &self,
        column: &str,
        chunk: usize,
        stopping: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<Backfilled, ApiError> {
        let index = T::COLUMNS
            .iter()
            .position(|c| c.sql == column)
            .ok_or_else(|| {
                ApiError::Internal(format!("backfill of unknown column {}.{column}", T::TABLE))
            })?;
        let kind = T::COLUMNS[index].kind;
        let column = T::COLUMNS[index].sql;
        let name = format!("{}.{column}", T::TABLE);
        let chunk = chunk.max(1);
        let mut total = Backfilled::default();
        loop {
            if *stopping.borrow() {
                return Ok(total);
            }
            let span = kizuna_telemetry::work_span(self.service, "store.backfill_chunk");
            let step = self
                .backfill_chunk::<T>(&name, column, index, kind, chunk)
                .instrument(span)
                .await?;
            total.read += step.read;
            total.written += step.written;
            if step.done {
                total.done = true;
                if step.read > 0 || step.written > 0 {
                    tracing::info!(backfill = %name, read = total.read, written = total.written, "backfill finished");
                }
                return Ok(total);
            }
        }
    }

    async fn backfill_chunk<T: Table>(
        &self,
        name: &str,
        column: &'static str,
        index: usize,
        kind: ColumnKind,
        chunk: usize,
    ) -> Result<Backfilled, ApiError> {
        let db = self.db().clone();
        let lock = db.for_update();
        let mut tx = self.begin().await?;
        let mut sql =
            Sql::new("SELECT after_parent, after_id, done FROM column_backfills WHERE name = ");
        sql.bind(name).push(lock);
        let marker = sql
            .query()
            .fetch_optional(tx.conn())
            .instrument(db_span(&db, "SELECT", "column_backfills"))
            .await
            .map_err(db_error)?;
        let Some(marker) = marker else {
            return Ok(Backfilled {
                done: true,
                ..Backfilled::default()
            });
        };
        let after_parent: String = marker.try_get(0).map_err(db_error)?;
        let after_id: String = marker.try_get(1).map_err(db_error)?;
        let done: i64 = marker.try_get(2).map_err(db_error)?;
        if done != 0 {
            return Ok(Backfilled {
                done: true,
                ..Backfilled::default()
            });
        }

        let limit = i64::try_from(chunk).unwrap_or(i64::MAX);
        // `column` is one of T::COLUMNS (checked by the caller), never caller text.
        let mut sql = Sql::new(format!(
            "SELECT data, parent, id, {column} FROM {table} WHERE parent > ",
            table = T::TABLE
        ));
        sql.bind(after_parent.as_str())
            .push(" OR (parent = ")
            .bind(after_parent.as_str())
            .push(" AND id > ")
            .bind(after_id.as_str())
            .push(") ORDER BY parent, id LIMIT ")
            .bind(limit)
            .push(lock);
        let rows = sql
            .query()
            .fetch_all(tx.conn())
            .instrument(db_span(&db, "SELECT", T::TABLE))
            .await
            .map_err(db_error)?;

        let mut step = Backfilled {
            read: rows.len() as u64,
            ..Backfilled::default()
        };
        let mut last = (after_parent, after_id);
        for row in &rows {
            let message = crate::decode::<T>(row)?;
            let parent: String = row.try_get(1).map_err(db_error)?;
            let id: String = row.try_get(2).map_err(db_error)?;
            let stored = read_value(row, 3, kind)?;
            let derived = T::values(&message).swap_remove(index);
            if stored != derived {
                let mut sql = Sql::new(format!("UPDATE {} SET {column} = ", T::TABLE));
                sql.bind(derived)
                    .push(" WHERE parent = ")
                    .bind(parent.as_str())
                    .push(" AND id = ")
                    .bind(id.as_str());
                sql.query()
                    .execute(tx.conn())
                    .instrument(db_span(&db, "UPDATE", T::TABLE))
                    .await
                    .map_err(db_error)?;
                step.written += 1;
            }
            last = (parent, id);
        }
        step.done = rows.len() < chunk;
        let mut sql = Sql::new("UPDATE column_backfills SET after_parent = ");
        sql.bind(last.0.as_str())
            .push(", after_id = ")
            .bind(last.1.as_str())
            .push(", done = ")
            .bind(i64::from(step.done))
            .push(" WHERE name = ")
            .bind(name);
        sql.query()
            .execute(tx.conn())
            .instrument(db_span(&db, "UPDATE", "column_backfills"))
            .await
            .map_err(db_error)?;
        tx.commit().await?;
        Ok(step)
    }
}

/// A stored indexed column as a [`Value`] of its kind.
fn read_value(row: &sqlx::any::AnyRow, at: usize, kind: ColumnKind) -> Result<Value, ApiError> {
    Ok(match kind {
        ColumnKind::Text | ColumnKind::Enum => Value::Text(row.try_get(at).map_err(db_error)?),
        ColumnKind::Int | ColumnKind::Time => Value::Int(row.try_get(at).map_err(db_error)?),
        ColumnKind::Float => Value::Float(row.try_get(at).map_err(db_error)?),
    })
}
