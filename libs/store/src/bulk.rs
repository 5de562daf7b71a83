//! Set-at-a-time writes for bulk paths (streamed ingest, rescoring): read many rows for change,
//! insert many, replace many, and the idempotency ledger for many request ids, each as a few
//! multi-row statements instead of one round trip per row.
//!
//! Statements are cut into chunks so no statement binds more than [`MAX_BINDS`] values (SQLite's
//! default limit is 32 766, PostgreSQL's 65 535).

use std::collections::HashMap;

use kizuna_db::Backend;
use kizuna_errors::ApiError;
use prost::Message;
use sqlx::Row;
use tracing::Instrument;

use crate::table::{Table, Value, format_name, parse_name, valid_id};
use crate::{Sql, WriteTx, bad_name, db_error, db_span, time};

/// Most values bound in one statement.
pub const MAX_BINDS: usize = 30_000;

/// How many rows of `binds_per_row` values fit one statement.
fn rows_per_statement(binds_per_row: usize) -> usize {
    (MAX_BINDS / binds_per_row.max(1)).max(1)
}

impl WriteTx<'_> {
    /// Reads the named resources for change, row-locked on PostgreSQL in (parent, id) order so
    /// two bulk writers cannot deadlock. Names that do not exist are missing from the map;
    /// malformed names are INVALID_ARGUMENT.
    pub async fn get_many<T: Table>(
        &mut self,
        names: &[String],
    ) -> Result<HashMap<String, T::Message>, ApiError> {
        let mut keys = Vec::with_capacity(names.len());
        for name in names {
            let parsed = parse_name::<T>(name).ok_or_else(|| bad_name::<T>("name"))?;
            keys.push((parsed.parent.to_owned(), parsed.id.to_owned()));
        }
        keys.sort();
        keys.dedup();
        let lock = if self.store.db.backend() == Backend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let mut found = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(rows_per_statement(2)) {
            let mut sql = Sql::new(format!(
                "SELECT data FROM {} WHERE (parent, id) IN (",
                T::TABLE
            ));
            for (i, (parent, id)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("(")
                    .bind(parent.as_str())
                    .push(", ")
                    .bind(id.as_str())
                    .push(")");
            }
            sql.push(") ORDER BY parent, id").push(lock);
            let rows = sql
                .query()
                .fetch_all(&mut *self.tx)
                .instrument(db_span(&self.store.db, "SELECT", T::TABLE))
                .await
                .map_err(db_error)?;
            for row in rows {
                let message = crate::decode::<T>(&row)?;
                found.insert(T::name(&message).to_owned(), message);
            }
        }
        Ok(found)
    }

    /// Inserts new resources `(parent, id, message)`; an empty id means a generated UUIDv7.
    /// Sets names, etags and times like [`WriteTx::insert`]; ALREADY_EXISTS when an id is taken
    /// (the whole statement fails, so the caller rolls back).
    pub async fn insert_many<T: Table>(
        &mut self,
        rows: Vec<(String, String, T::Message)>,
    ) -> Result<Vec<T::Message>, ApiError> {
        let now = time::to_timestamp(kizuna_db::now_micros());
        let now_micros = time::from_timestamp(&now);
        let mut prepared = Vec::with_capacity(rows.len());
        for (parent, id, mut message) in rows {
            let id = if id.is_empty() {
                uuid::Uuid::now_v7().to_string()
            } else {
                id
            };
            if !valid_id(&id) {
                return Err(ApiError::invalid(
                    format!("{}_id", T::KIND.to_lowercase()),
                    "must be 1-63 characters of a-z, 0-9 and -, not starting or ending with -",
                ));
            }
            T::set_name(&mut message, format_name::<T>(&parent, &id));
            T::set_meta(&mut message, "1".into(), now, now);
            prepared.push((parent, id, message));
        }
        let binds_per_row = 5 + T::COLUMNS.len();
        for chunk in prepared.chunks(rows_per_statement(binds_per_row)) {
            let mut sql = Sql::new(format!(
                "INSERT INTO {} (id, parent, data, version, create_time, update_time",
                T::TABLE
            ));
            for column in T::COLUMNS {
                sql.push(", ").push(column.sql);
            }
            sql.push(") VALUES ");
            for (i, (parent, id, message)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("(")
                    .bind(id.as_str())
                    .push(", ")
                    .bind(parent.as_str())
                    .push(", ")
                    .bind(Value::Bytes(message.encode_to_vec()))
                    .push(", 1, ")
                    .bind(now_micros)
                    .push(", ")
                    .bind(now_micros);
                for value in T::values(message) {
                    sql.push(", ").bind(value);
                }
                sql.push(")");
            }
            sql.query()
                .execute(&mut *self.tx)
                .instrument(db_span(&self.store.db, "INSERT", T::TABLE))
                .await
                .map_err(db_error)?;
        }
        Ok(prepared
            .into_iter()
            .map(|(_, _, message)| message)
            .collect())
    }

    /// Stores changed resources read with [`WriteTx::get_many`] (or [`WriteTx::get`]), bumping
    /// each etag and update time; ABORTED when one changed since it was read.
    pub async fn replace_many<T: Table>(
        &mut self,
        messages: Vec<T::Message>,
    ) -> Result<Vec<T::Message>, ApiError> {
        let now = kizuna_db::now_micros();
        let mut prepared = Vec::with_capacity(messages.len());
        for mut message in messages {
            let name = T::name(&message).to_owned();
            let parsed = parse_name::<T>(&name).ok_or_else(|| bad_name::<T>("name"))?;
            let (parent, id) = (parsed.parent.to_owned(), parsed.id.to_owned());
            let version: i64 = T::etag(&message).parse().unwrap_or(0);
            let create_time = T::create_time(&message).unwrap_or_else(|| time::to_timestamp(now));
            T::set_meta(
                &mut message,
                (version + 1).to_string(),
                create_time,
                time::to_timestamp(now),
            );
            prepared.push((parent, id, version + 1, message));
        }
        let binds_per_row = 6 + T::COLUMNS.len();
        for chunk in prepared.chunks(rows_per_statement(binds_per_row)) {
            // An upsert used as a multi-row update: every row exists and is locked, and the
            // conflict branch only applies over the version that was read.
            let mut sql = Sql::new(format!(
                "INSERT INTO {} (id, parent, data, version, create_time, update_time",
                T::TABLE
            ));
            for column in T::COLUMNS {
                sql.push(", ").push(column.sql);
            }
            sql.push(") VALUES ");
            for (i, (parent, id, version, message)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                let created = T::create_time(message)
                    .map(|t| time::from_timestamp(&t))
                    .unwrap_or(now);
                sql.push("(")
                    .bind(id.as_str())
                    .push(", ")
                    .bind(parent.as_str())
                    .push(", ")
                    .bind(Value::Bytes(message.encode_to_vec()))
                    .push(", ")
                    .bind(*version)
                    .push(", ")
                    .bind(created)
                    .push(", ")
                    .bind(now);
                for value in T::values(message) {
                    sql.push(", ").bind(value);
                }
                sql.push(")");
            }
            sql.push(
                " ON CONFLICT (parent, id) DO UPDATE SET data = excluded.data, \
                 version = excluded.version, update_time = excluded.update_time",
            );
            for column in T::COLUMNS {
                sql.push(", ")
                    .push(column.sql)
                    .push(" = excluded.")
                    .push(column.sql);
            }
            sql.push(&format!(
                " WHERE {}.version = excluded.version - 1",
                T::TABLE
            ));
            let result = sql
                .query()
                .execute(&mut *self.tx)
                .instrument(db_span(&self.store.db, "UPDATE", T::TABLE))
                .await
                .map_err(db_error)?;
            if result.rows_affected() != chunk.len() as u64 {
                return Err(ApiError::EtagMismatch {
                    name: format!("{} {}", chunk.len(), T::COLLECTION),
                    current: "unknown (changed concurrently)".into(),
                });
            }
        }
        Ok(prepared
            .into_iter()
            .map(|(_, _, _, message)| message)
            .collect())
    }

    /// The responses recorded for `method` under any of `request_ids` (empty ids skipped).
    pub async fn recall_many<M: Message + Default>(
        &mut self,
        method: &str,
        request_ids: &[&str],
    ) -> Result<HashMap<String, M>, ApiError> {
        let mut ids: Vec<&str> = request_ids
            .iter()
            .copied()
            .filter(|id| !id.is_empty())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut found = HashMap::new();
        for chunk in ids.chunks(rows_per_statement(1) - 1) {
            let mut sql = Sql::new("SELECT request_id, response FROM idempotency WHERE method = ");
            sql.bind(method).push(" AND request_id IN (");
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(*id);
            }
            sql.push(")");
            let rows = sql
                .query()
                .fetch_all(&mut *self.tx)
                .instrument(db_span(&self.store.db, "SELECT", "idempotency"))
                .await
                .map_err(db_error)?;
            for row in rows {
                let id: String = row.try_get(0).map_err(db_error)?;
                let data: Vec<u8> = row.try_get(1).map_err(db_error)?;
                let response = M::decode(data.as_slice())
                    .map_err(|e| ApiError::Internal(format!("stored response is corrupt: {e}")))?;
                found.insert(id, response);
            }
        }
        Ok(found)
    }

    /// Records each `(request_id, response)` for `method`; the number recorded. Fewer than
    /// given means a concurrent call recorded some of the ids first: roll back and retry.
    pub async fn remember_many<M: Message>(
        &mut self,
        method: &str,
        entries: &[(&str, &M)],
    ) -> Result<usize, ApiError> {
        let now = kizuna_db::now_micros();
        let mut recorded = 0;
        for chunk in entries.chunks(rows_per_statement(4)) {
            let mut sql = Sql::new(
                "INSERT INTO idempotency (request_id, method, response, create_time) VALUES ",
            );
            for (i, (id, response)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("(")
                    .bind(*id)
                    .push(", ")
                    .bind(method)
                    .push(", ")
                    .bind(Value::Bytes(response.encode_to_vec()))
                    .push(", ")
                    .bind(now)
                    .push(")");
            }
            sql.push(" ON CONFLICT (request_id, method) DO NOTHING");
            let result = sql
                .query()
                .execute(&mut *self.tx)
                .instrument(db_span(&self.store.db, "INSERT", "idempotency"))
                .await
                .map_err(db_error)?;
            recorded += usize::try_from(result.rows_affected()).unwrap_or(usize::MAX);
        }
        Ok(recorded)
    }
}
