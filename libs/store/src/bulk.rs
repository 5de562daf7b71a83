//! Set-at-a-time writes for bulk paths (streamed ingest, rescoring): read many rows for change,
//! insert many, replace many, and the idempotency ledger for many request ids, each as a few
//! multi-row statements instead of one round trip per row.
//!
//! Statements are cut by [`statements`]: no statement binds more than [`MAX_BINDS`] values
//! (SQLite's default limit is 32 766, PostgreSQL's 65 535) or carries much more than the
//! database's [`statement_bytes`](kizuna_db::Database::statement_bytes) of values, and row
//! counts are powers of two, so each table needs a handful of statement shapes that stay
//! prepared (parsing and planning a large VALUES list anew costs more than the extra round
//! trips). Over TCP statements stay under 12 KiB so each leaves in one write: sqlx 0.9.0 leaves
//! Nagle's algorithm on (upstream issue launchbadge/sqlx#4335), and a statement sent in several
//! writes waits ~40 ms for the server's delayed ACK. Measured in `docs/BENCHMARKS.md`.

use std::collections::{HashMap, HashSet};

use kizuna_db::Database;
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

/// Cuts `rows` into consecutive statements (ranges of row indexes) of a power-of-two number of
/// rows each, within [`MAX_BINDS`] values and, unless one row alone is larger, `max_bytes`
/// ([`kizuna_db::Database::statement_bytes`]); `bytes` estimates a row's bound bytes.
pub fn statements<R>(
    max_bytes: usize,
    rows: &[R],
    binds_per_row: usize,
    bytes: impl Fn(&R) -> usize,
) -> Vec<std::ops::Range<usize>> {
    let max_rows = rows_per_statement(binds_per_row);
    let mut ranges = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let mut n = 1;
        let mut size = bytes(&rows[start]);
        // Double while the next power of two still fits.
        loop {
            let next = n * 2;
            if next > max_rows || start + next > rows.len() {
                break;
            }
            let more: usize = rows[start + n..start + next].iter().map(&bytes).sum();
            if size + more > max_bytes {
                break;
            }
            size += more;
            n = next;
        }
        ranges.push(start..start + n);
        start += n;
    }
    ranges
}

/// Approximate bound size of a value.
pub fn value_bytes(value: &Value) -> usize {
    match value {
        Value::Text(v) => v.len() + 8,
        Value::Int(_) | Value::Float(_) => 12,
        Value::Bytes(v) => v.len() + 8,
    }
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
        let lock = self.store.db.for_update();
        let mut found = HashMap::with_capacity(keys.len());
        // One parent per statement (`parent = ? AND id IN (...)`): a list of (parent, id) pairs
        // plans as one index probe per pair, ~10x slower for a few hundred keys on PostgreSQL.
        // Keys are sorted, so each parent's ids are one run, and the statements run in lock
        // order.
        for group in keys.chunk_by(|a, b| a.0 == b.0) {
            let parent = group[0].0.as_str();
            for range in statements(self.store.db.statement_bytes(), group, 1, |(_, id)| {
                id.len() + 8
            }) {
                let mut sql = Sql::new(format!(
                    "SELECT data, writer_revision FROM {} WHERE parent = ",
                    T::TABLE
                ));
                sql.bind(parent).push(" AND id IN (");
                for (i, (_, id)) in group[range].iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.bind(id.as_str());
                }
                sql.push(") ORDER BY id").push(lock);
                let rows = sql
                    .query()
                    .fetch_all(&mut *self.tx)
                    .instrument(db_span(&self.store.db, "SELECT", T::TABLE))
                    .await
                    .map_err(db_error)?;
                for row in rows {
                    let message = crate::decode_for_change::<T>(&row, &self.store.db)?;
                    found.insert(T::name(&message).to_owned(), message);
                }
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
        let revision = self.store.db.schema_revision();
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
        let encoded: Vec<Encoded> = prepared
            .iter()
            .map(|(parent, id, message)| Encoded::new::<T>(parent, id, message))
            .collect();
        for range in statements(
            self.store.db.statement_bytes(),
            &encoded,
            5 + T::COLUMNS.len(),
            Encoded::bytes,
        ) {
            let mut sql = Sql::new(format!(
                "INSERT INTO {} (id, parent, data, version, create_time, update_time, \
                 writer_revision",
                T::TABLE
            ));
            for column in T::COLUMNS {
                sql.push(", ").push(column.sql);
            }
            sql.push(") VALUES ");
            for (i, row) in encoded[range].iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("(")
                    .bind(row.id.as_str())
                    .push(", ")
                    .bind(row.parent.as_str())
                    .push(", ")
                    .bind(Value::Bytes(row.data.clone()))
                    .push(", 1, ")
                    .bind(now_micros)
                    .push(", ")
                    .bind(now_micros)
                    .push(", ")
                    .bind(revision);
                for value in &row.values {
                    sql.push(", ").bind(value.clone());
                }
                sql.push(")");
            }
            if let Err(error) = sql
                .query()
                .execute(&mut *self.tx)
                .instrument(db_span(&self.store.db, "INSERT", T::TABLE))
                .await
            {
                let db = self.store.db.clone();
                let messages: Vec<T::Message> =
                    prepared.iter().map(|(_, _, m)| m.clone()).collect();
                return Err(conflict_among::<T>(&db, db_error(error), &messages).await);
            }
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
        let revision = self.store.db.schema_revision();
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
        let encoded: Vec<Encoded> = prepared
            .iter()
            .map(|(parent, id, _, message)| Encoded::new::<T>(parent, id, message))
            .collect();
        for range in statements(
            self.store.db.statement_bytes(),
            &encoded,
            6 + T::COLUMNS.len(),
            Encoded::bytes,
        ) {
            let chunk = &prepared[range.clone()];
            let rows = &encoded[range];
            // An upsert used as a multi-row update: every row exists and is locked, and the
            // conflict branch only applies over the version that was read.
            let mut sql = Sql::new(format!(
                "INSERT INTO {} (id, parent, data, version, create_time, update_time, \
                 writer_revision",
                T::TABLE
            ));
            for column in T::COLUMNS {
                sql.push(", ").push(column.sql);
            }
            sql.push(") VALUES ");
            for (i, ((_, _, version, message), row)) in chunk.iter().zip(rows).enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                let created = T::create_time(message)
                    .map(|t| time::from_timestamp(&t))
                    .unwrap_or(now);
                sql.push("(")
                    .bind(row.id.as_str())
                    .push(", ")
                    .bind(row.parent.as_str())
                    .push(", ")
                    .bind(Value::Bytes(row.data.clone()))
                    .push(", ")
                    .bind(*version)
                    .push(", ")
                    .bind(created)
                    .push(", ")
                    .bind(now)
                    .push(", ")
                    .bind(revision);
                for value in &row.values {
                    sql.push(", ").bind(value.clone());
                }
                sql.push(")");
            }
            sql.push(
                " ON CONFLICT (parent, id) DO UPDATE SET data = excluded.data, \
                 version = excluded.version, update_time = excluded.update_time, \
                 writer_revision = excluded.writer_revision",
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
            let result = match sql
                .query()
                .execute(&mut *self.tx)
                .instrument(db_span(&self.store.db, "UPDATE", T::TABLE))
                .await
            {
                Ok(result) => result,
                Err(error) => {
                    let db = self.store.db.clone();
                    let messages: Vec<_> = chunk.iter().map(|(_, _, _, m)| m.clone()).collect();
                    return Err(conflict_among::<T>(&db, db_error(error), &messages).await);
                }
            };
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
        for range in statements(self.store.db.statement_bytes(), &ids, 1, |id| id.len() + 8) {
            let chunk = &ids[range];
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

    /// Claims `request_ids` for `method` in the idempotency ledger: the ids returned are this
    /// transaction's to record (with [`WriteTx::answer_claims`] before commit); the others were
    /// recorded by a call that committed first, so their rows are replays.
    ///
    /// Each id is inserted with an empty response, in sorted order, `ON CONFLICT DO NOTHING`.
    /// On PostgreSQL an id claimed by a concurrent transaction not yet committed waits on the
    /// ledger's unique index: if that transaction commits, the id is not returned (a replay);
    /// if it rolls back, the claim succeeds here. Sorted claims cannot deadlock with each
    /// other. On SQLite writers are serialized, so only committed ids are found. The empty
    /// responses are never seen by another transaction.
    pub async fn claim_many(
        &mut self,
        method: &str,
        request_ids: &[&str],
    ) -> Result<HashSet<String>, ApiError> {
        let mut ids: Vec<&str> = request_ids
            .iter()
            .copied()
            .filter(|id| !id.is_empty())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let now = kizuna_db::now_micros();
        let mut claimed = HashSet::with_capacity(ids.len());
        let size = |id: &&str| id.len() + method.len() + 40;
        for range in statements(self.store.db.statement_bytes(), &ids, 4, size) {
            let claims = ids[range].iter().map(|id| (*id, Vec::new()));
            let mut sql = ledger_insert(method, now, claims);
            sql.push(" ON CONFLICT (request_id, method) DO NOTHING RETURNING request_id");
            let rows = sql
                .query()
                .fetch_all(&mut *self.tx)
                .instrument(db_span(&self.store.db, "INSERT", "idempotency"))
                .await
                .map_err(db_error)?;
            for row in rows {
                claimed.insert(row.try_get::<String, _>(0).map_err(db_error)?);
            }
        }
        Ok(claimed)
    }

    /// Records the responses of request ids this transaction claimed with
    /// [`WriteTx::claim_many`]; every id given must be one of them.
    pub async fn answer_claims<M: Message>(
        &mut self,
        method: &str,
        entries: &[(&str, &M)],
    ) -> Result<(), ApiError> {
        let now = kizuna_db::now_micros();
        let sizes: Vec<usize> = entries
            .iter()
            .map(|(id, response)| id.len() + method.len() + response.encoded_len() + 40)
            .collect();
        for range in statements(self.store.db.statement_bytes(), &sizes, 4, |size| *size) {
            let chunk = &entries[range];
            // An upsert used as a multi-row update of the claims this transaction inserted (and
            // so holds); the condition leaves any response already recorded alone.
            let answers = chunk.iter().map(|(id, r)| (*id, r.encode_to_vec()));
            let mut sql = ledger_insert(method, now, answers);
            sql.push(
                " ON CONFLICT (request_id, method) DO UPDATE SET response = excluded.response \
                 WHERE length(idempotency.response) = 0",
            );
            let result = sql
                .query()
                .execute(&mut *self.tx)
                .instrument(db_span(&self.store.db, "UPDATE", "idempotency"))
                .await
                .map_err(db_error)?;
            if result.rows_affected() != chunk.len() as u64 {
                return Err(ApiError::Internal(format!(
                    "recorded {} of {} claimed request ids",
                    result.rows_affected(),
                    chunk.len()
                )));
            }
        }
        Ok(())
    }
}

/// `INSERT INTO idempotency ... VALUES` with one row per `(request_id, response)`, recorded
/// for `method` at `now`; the caller adds the conflict clause.
fn ledger_insert<'a>(
    method: &str,
    now: i64,
    rows: impl Iterator<Item = (&'a str, Vec<u8>)>,
) -> Sql {
    let mut sql =
        Sql::new("INSERT INTO idempotency (request_id, method, response, create_time) VALUES ");
    for (i, (id, response)) in rows.enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push("(")
            .bind(id)
            .push(", ")
            .bind(method)
            .push(", ")
            .bind(Value::Bytes(response))
            .push(", ")
            .bind(now)
            .push(")");
    }
    sql
}

/// One row's stored form, encoded once for both sizing and binding.
struct Encoded {
    parent: String,
    id: String,
    data: Vec<u8>,
    values: Vec<Value>,
}

impl Encoded {
    fn new<T: Table>(parent: &str, id: &str, message: &T::Message) -> Self {
        Self {
            parent: parent.to_owned(),
            id: id.to_owned(),
            data: message.encode_to_vec(),
            values: T::values(message),
        }
    }

    fn bytes(&self) -> usize {
        self.parent.len()
            + self.id.len()
            + self.data.len()
            + self.values.iter().map(value_bytes).sum::<usize>()
            + 64
    }
}

/// [`crate::conflict`] for a multi-row write of `messages`: the first resource found holding a
/// unique value of one of them.
async fn conflict_among<T: Table>(
    db: &Database,
    error: ApiError,
    messages: &[T::Message],
) -> ApiError {
    if !matches!(error, ApiError::AlreadyExists { .. }) || T::UNIQUE.is_empty() {
        return error;
    }
    for message in messages {
        let placeholder = ApiError::AlreadyExists {
            kind: T::KIND,
            name: T::name(message).to_owned(),
        };
        let found = crate::conflict::<T>(db, placeholder, message).await;
        if matches!(&found, ApiError::AlreadyExists { name, .. } if name != T::name(message)) {
            return found;
        }
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_powers_of_two_within_the_bounds() {
        const MAX_BYTES: usize = kizuna_db::TCP_STATEMENT_BYTES;
        let rows = vec![100_usize; 3_000];
        let ranges = statements(MAX_BYTES, &rows, 10, |r| *r);
        assert_eq!(ranges.iter().map(|r| r.len()).sum::<usize>(), 3_000);
        let mut next = 0;
        for range in &ranges {
            assert_eq!(range.start, next, "consecutive");
            next = range.end;
            assert!(range.len().is_power_of_two());
            assert!(range.len() * 100 <= MAX_BYTES);
            assert!(range.len() * 10 <= MAX_BINDS);
        }
        // Big rows go one per statement; many binds per row bound the count.
        assert!(
            statements(MAX_BYTES, &[MAX_BYTES * 2; 3], 1, |r| *r)
                .iter()
                .all(|r| r.len() == 1)
        );
        assert!(
            statements(MAX_BYTES, &[1_usize; 100], MAX_BINDS / 4, |r| *r)
                .iter()
                .all(|r| r.len() <= 4)
        );
        assert!(statements(MAX_BYTES, &Vec::<usize>::new(), 1, |r| *r).is_empty());
    }
}
