//! Resource persistence shared by the domain services.
//!
//! A service describes each resource with a [`Table`] and gets, on both PostgreSQL and SQLite:
//! creates that are idempotent by `request_id` (AIP-155), reads, keyset-paged lists with AIP-160
//! filters, updates and deletes guarded by etags (AIP-154), and a domain event in the outbox in the
//! same transaction as every change. [`WriteTx`] exposes the same steps for services that need
//! their own logic inside the transaction.

pub mod api;
pub mod backfill;
pub mod bulk;
pub mod filter;
pub mod lease;
pub mod mask;
pub mod outbox;
pub mod page;
pub mod sql;
pub mod table;
pub mod time;
pub mod worker;

use futures::Stream;
use kizuna_db::{Database, Fault, Migration};
use kizuna_proto::kizuna::events::v1::Event;
use prost::Message;
use sqlx::{Any, Row, Transaction};
use tokio::sync::watch;
use tracing::Instrument;

pub use kizuna_errors::{ApiError, Validator};
pub use lease::{Fence, Lease, LeaseSettings};
pub use outbox::{NewEvent, Notifier};
pub use page::{ListQuery, Page};
pub use prost_types;
pub use sql::Sql;
pub use table::{
    Column, ColumnKind, ParsedName, Table, Value, format_name, parse_name, parse_parent, valid_id,
};
pub use worker::{Worker, Workers};

/// Tables every domain service has: the outbox and the idempotency ledger. Services list this
/// first among their migrations.
pub const BASE_MIGRATION: Migration = Migration {
    version: 1,
    description: "outbox and idempotency",
    sql: "
CREATE TABLE outbox (
    sequence {{SERIAL_PK}},
    event_type TEXT NOT NULL,
    subject TEXT NOT NULL,
    type_url TEXT NOT NULL,
    data {{BLOB}} NOT NULL,
    traceparent TEXT NOT NULL,
    tracestate TEXT NOT NULL,
    create_time BIGINT NOT NULL
);
CREATE INDEX outbox_event_type ON outbox (event_type, sequence);
CREATE TABLE idempotency (
    request_id TEXT NOT NULL,
    method TEXT NOT NULL,
    response {{BLOB}} NOT NULL,
    create_time BIGINT NOT NULL,
    PRIMARY KEY (request_id, method)
);
",
};

/// The platform's second migration, for every domain service (list it with the service's next
/// version): delivery positions for the outbox (existing events keep their sequence as their
/// position, so consumers' cursors stay valid) and the table of worker leases.
pub const fn platform_migration(version: i64) -> Migration {
    Migration {
        version,
        description: "outbox positions and worker leases",
        sql: "
ALTER TABLE outbox ADD COLUMN position BIGINT;
UPDATE outbox SET position = sequence;
CREATE UNIQUE INDEX outbox_position ON outbox (position);
CREATE INDEX outbox_unpositioned ON outbox (sequence) WHERE position IS NULL;
CREATE INDEX outbox_event_type_position ON outbox (event_type, position);
CREATE TABLE worker_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    expire_time BIGINT NOT NULL
);
",
    }
}

/// Longest accepted `request_id` (AIP-155 suggests a UUID).
pub const MAX_REQUEST_ID_CHARS: usize = 100;

/// `ErrorInfo` reason of a call refused because the database cannot be reached (down,
/// refusing or dropping connections, shutting down, out of connection slots).
pub const DATABASE_UNAVAILABLE: &str = "DATABASE_UNAVAILABLE";
/// `ErrorInfo` reason of a call whose transaction was rolled back by a conflict with a
/// concurrent one (deadlock, serialization failure, SQLite busy).
pub const TRANSACTION_CONFLICT: &str = "TRANSACTION_CONFLICT";
/// `RetryInfo` delay of [`DATABASE_UNAVAILABLE`]: the fail-fast window, after which a call
/// tries the database again.
pub const DATABASE_RETRY_DELAY: std::time::Duration = kizuna_db::FAIL_FAST_WINDOW;
/// `RetryInfo` delay of [`TRANSACTION_CONFLICT`].
pub const CONFLICT_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// UNAVAILABLE (reason [`DATABASE_UNAVAILABLE`], retry after [`DATABASE_RETRY_DELAY`]).
pub fn database_unavailable() -> ApiError {
    ApiError::Unavailable {
        dependency: "database".into(),
        reason: DATABASE_UNAVAILABLE,
        retry_delay: DATABASE_RETRY_DELAY,
    }
}

/// Maps a driver error to what a caller can act on: the one mapping of database errors, over
/// [`kizuna_db::fault::classify`]. A lost or refused connection is UNAVAILABLE
/// ([`DATABASE_UNAVAILABLE`]); a deadlock or serialization failure UNAVAILABLE
/// ([`TRANSACTION_CONFLICT`]); a unique violation ALREADY_EXISTS; anything else INTERNAL.
/// Outages are logged by [`kizuna_db::Outage`], not here per call.
pub fn db_error(error: sqlx::Error) -> ApiError {
    match kizuna_db::fault::classify(&error) {
        Fault::Unreachable => {
            tracing::debug!(error.message = %error, "database unreachable");
            database_unavailable()
        }
        Fault::Conflict => ApiError::Unavailable {
            dependency: "database (concurrent transactions conflicted)".into(),
            reason: TRANSACTION_CONFLICT,
            retry_delay: CONFLICT_RETRY_DELAY,
        },
        Fault::UniqueViolation(constraint) => ApiError::AlreadyExists {
            kind: "resource",
            name: constraint,
        },
        Fault::Other => ApiError::Internal(format!("database: {error}")),
    }
}

/// Whether `error` is a transaction conflict that rolled everything back, so the same
/// transaction can be run again at once.
pub fn is_conflict(error: &ApiError) -> bool {
    matches!(
        error,
        ApiError::Unavailable {
            reason: TRANSACTION_CONFLICT,
            ..
        }
    )
}

/// A span for one database operation, named and attributed per the OpenTelemetry database
/// conventions (`db.system.name`, `db.namespace`, `db.collection.name`, `db.operation.name`),
/// of kind CLIENT.
///
/// Database work outside any span (a background poll that has not found work yet) is not
/// traced: a database span is always the child of an RPC span or of a background work root
/// ([`kizuna_telemetry::work_span`]), never an orphan.
pub fn db_span(db: &Database, operation: &'static str, collection: &'static str) -> tracing::Span {
    if tracing::Span::current().is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "db",
        otel.name = format!("{operation} {collection}"),
        otel.kind = "client",
        db.system.name = db.backend().system_name(),
        db.namespace = span_namespace(db),
        db.collection.name = collection,
        db.operation.name = operation,
    )
}

/// A span for a transaction statement (`BEGIN`, `COMMIT`): [`db_span`] without a collection.
fn db_tx_span(db: &Database, operation: &'static str) -> tracing::Span {
    if tracing::Span::current().is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        "db",
        otel.name = operation,
        otel.kind = "client",
        db.system.name = db.backend().system_name(),
        db.namespace = span_namespace(db),
        db.operation.name = operation,
    )
}

/// `db.namespace`: the database's name; for SQLite the file's stem (`leads` for
/// `data/leads.db`), `main` for an in-memory database.
fn span_namespace(db: &Database) -> &str {
    let namespace = db.namespace();
    if db.backend() != kizuna_db::Backend::Sqlite {
        return namespace;
    }
    std::path::Path::new(namespace)
        .file_stem()
        .and_then(|stem| stem.to_str())
        .filter(|stem| !stem.is_empty() && !stem.starts_with(':'))
        .unwrap_or("main")
}

fn not_found<T: Table>(name: &str) -> ApiError {
    ApiError::NotFound {
        kind: T::KIND,
        name: name.to_owned(),
    }
}

fn bad_name<T: Table>(field: &str) -> ApiError {
    let pattern = match T::PARENT {
        Some(parent) => format!("{parent}/{{id}}/{}/{{id}}", T::COLLECTION),
        None => format!("{}/{{id}}", T::COLLECTION),
    };
    ApiError::invalid(
        field,
        format!(
            "must be a {} name like `{pattern}` (ids: a-z, 0-9, -)",
            T::KIND
        ),
    )
}

/// The name of the oldest `T` other than `except_name` whose indexed `column` equals `value`:
/// the duplicate check behind "one lead per e-mail", "one subject per lead" and the like.
///
/// `column` must be one of `T::COLUMNS` (it is spliced into the SQL, so it never comes from a
/// caller); an empty `value` matches nothing.
pub async fn find_other<T: Table>(
    conn: &mut sqlx::AnyConnection,
    db: &Database,
    column: &'static str,
    value: &str,
    except_name: &str,
) -> Result<Option<String>, ApiError> {
    if value.is_empty() {
        return Ok(None);
    }
    if !T::COLUMNS.iter().any(|c| c.sql == column) {
        return Err(ApiError::Internal(format!(
            "{column} is not an indexed column of {}",
            T::TABLE
        )));
    }
    let mut sql = Sql::new(format!(
        "SELECT id, parent FROM {} WHERE {column} = ",
        T::TABLE
    ));
    sql.bind(value).push(" ORDER BY create_time, id LIMIT 2");
    let rows = sql
        .query()
        .fetch_all(conn)
        .instrument(db_span(db, "SELECT", T::TABLE))
        .await
        .map_err(db_error)?;
    for row in rows {
        let id: String = row.try_get(0).map_err(db_error)?;
        let parent: String = row.try_get(1).map_err(db_error)?;
        let name = format_name::<T>(&parent, &id);
        if name != except_name {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// INVALID_ARGUMENT on `field` unless `name` is a well-formed name of a `T` resource.
pub fn require_name<T: Table>(name: &str, field: &str) -> Result<(), ApiError> {
    parse_name::<T>(name)
        .map(|_| ())
        .ok_or_else(|| bad_name::<T>(field))
}

/// A service's store: its database, outbox notifier and the stop signal for streams.
#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
    service: &'static str,
    notifier: Notifier,
    stopping: watch::Receiver<bool>,
    background: std::sync::Arc<Workers>,
    holder: std::sync::Arc<str>,
}

impl Store {
    /// A store for `service` (e.g. `leads`) over `db`. Streams end when `stopping` turns true.
    ///
    /// Starts the store's own background work (on PostgreSQL the outbox sequencer and
    /// listener); [`Store::join_background`] waits for it after `stopping`.
    pub fn new(db: Database, service: &'static str, stopping: watch::Receiver<bool>) -> Self {
        let notifier = Notifier::new(db.backend());
        let background = Workers::default();
        for (name, task) in notifier.tasks(&db, service, stopping.clone()) {
            background.spawn(Worker::new(name, task));
        }
        Self {
            db,
            service,
            notifier,
            stopping,
            background: std::sync::Arc::new(background),
            holder: uuid::Uuid::new_v4().to_string().into(),
        }
    }

    /// The database.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The service name this store writes events for.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// This store's identity as a lease holder (unique per store instance).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The stop signal: turns true when the service begins to shut down.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.clone()
    }

    /// Waits (up to `grace`) for the store's own background work to end after `stopping`.
    pub async fn join_background(&self, grace: std::time::Duration) {
        self.background.join(grace).await;
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<WriteTx<'_>, ApiError> {
        let tx = self
            .db
            .begin_write()
            .instrument(db_tx_span(&self.db, "BEGIN"))
            .await
            .map_err(db_error)?;
        Ok(WriteTx {
            store: self,
            tx,
            emitted: false,
        })
    }

    /// Reads one resource by name.
    pub async fn get<T: Table>(&self, name: &str) -> Result<T::Message, ApiError> {
        let parsed = parse_name::<T>(name).ok_or_else(|| bad_name::<T>("name"))?;
        let mut conn = self.db.acquire().await.map_err(db_error)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT data FROM {} WHERE id = $1 AND parent = $2",
            T::TABLE
        )))
        .bind(parsed.id)
        .bind(parsed.parent)
        .fetch_optional(&mut *conn)
        .instrument(db_span(&self.db, "SELECT", T::TABLE))
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found::<T>(name))?;
        decode::<T>(&row)
    }

    /// Lists resources under `query.parent` with filter, order and keyset pages.
    pub async fn list<T: Table>(&self, query: &ListQuery) -> Result<Page<T::Message>, ApiError> {
        let limit = page::page_size(query.page_size)?;
        let mut lengths = Validator::new();
        lengths
            .max_chars("filter", &query.filter, page::MAX_FILTER_CHARS)
            .max_chars("order_by", &query.order_by, page::MAX_ORDER_BY_CHARS);
        lengths.finish()?;
        let order_by = if query.order_by.trim().is_empty() {
            T::DEFAULT_ORDER
        } else {
            query.order_by.as_str()
        };
        let order = page::parse_order(order_by, T::COLUMNS)?;
        let hash = page::query_hash(T::TABLE, query);
        let after = page::decode_token(&query.page_token, &hash, order.column)?;
        let mut sql = Sql::new(format!(
            "SELECT data, id, {} FROM {} WHERE 1 = 1",
            order.column.sql,
            T::TABLE
        ));
        match T::PARENT {
            Some(collection) => {
                let wildcard = format!("{collection}/-");
                if query.parent != wildcard {
                    parse_parent(&query.parent, collection).ok_or_else(|| {
                        ApiError::invalid(
                            "parent",
                            format!("must be a name like `{collection}/{{id}}` or `{wildcard}`"),
                        )
                    })?;
                    sql.push(" AND parent = ").bind(query.parent.as_str());
                }
            }
            None => {
                sql.push(" AND parent = ").bind("");
            }
        }
        let columns: Vec<Column> = table::STANDARD_COLUMNS
            .iter()
            .chain(T::COLUMNS)
            .copied()
            .collect();
        if let Some(condition) = filter::compile(&query.filter, &columns, self.db.backend())
            .map_err(|e| ApiError::invalid("filter", e.to_string()))?
        {
            sql.push(" AND ").append(condition);
        }
        let (cmp, dir) = if order.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some((value, id)) = after {
            let col = order.column.sql;
            sql.push(&format!(" AND ({col} {cmp} "))
                .bind(value.clone())
                .push(&format!(" OR ({col} = "))
                .bind(value)
                .push(&format!(" AND id {cmp} "))
                .bind(id)
                .push("))");
        }
        sql.push(&format!(
            " ORDER BY {} {dir}, id {dir} LIMIT ",
            order.column.sql
        ))
        .bind(limit + 1);
        let mut conn = self.db.acquire().await.map_err(db_error)?;
        let rows = sql
            .query()
            .fetch_all(&mut *conn)
            .instrument(db_span(&self.db, "SELECT", T::TABLE))
            .await
            .map_err(db_error)?;
        let more = rows.len() as i64 > limit;
        let mut items = Vec::with_capacity(rows.len());
        let mut next_page_token = String::new();
        for (i, row) in rows.iter().enumerate() {
            if i as i64 == limit {
                break;
            }
            items.push(decode::<T>(row)?);
            if more && i as i64 == limit - 1 {
                let id: String = row.try_get(1).map_err(db_error)?;
                let value = match order.column.kind {
                    ColumnKind::Text | ColumnKind::Enum => {
                        Value::Text(row.try_get(2).map_err(db_error)?)
                    }
                    ColumnKind::Int | ColumnKind::Time => {
                        Value::Int(row.try_get(2).map_err(db_error)?)
                    }
                    ColumnKind::Float => Value::Float(row.try_get(2).map_err(db_error)?),
                };
                next_page_token = page::encode_token(&value, &id, &hash);
            }
        }
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// Creates `message` under `parent` with `id` (or a generated one), idempotently for
    /// `request_id`, and emits `<prefix>.created`.
    pub async fn create<T: Table>(
        &self,
        parent: &str,
        id: &str,
        message: T::Message,
        request_id: &str,
    ) -> Result<T::Message, ApiError> {
        self.create_with::<T, ApiError, _>(parent, id, message, request_id, async |_, _| Ok(()))
            .await
    }

    /// [`Store::create`] with a domain check run inside the write transaction, after the
    /// idempotency lookup and before the insert (duplicate detection, parent checks).
    ///
    /// A retry with the same `request_id` returns the first response without running the check;
    /// when two first attempts race, the loser answers with the winner's response.
    pub async fn create_with<T, E, F>(
        &self,
        parent: &str,
        id: &str,
        message: T::Message,
        request_id: &str,
        check: F,
    ) -> Result<T::Message, E>
    where
        T: Table,
        E: From<ApiError>,
        F: AsyncFnOnce(&mut WriteTx<'_>, &T::Message) -> Result<(), E>,
    {
        self.create_by::<T, E, _>(request_id, async |tx| {
            check(tx, &message).await?;
            let created = tx.insert::<T>(parent, id, message).await?;
            tx.emit::<T>("created", &created).await?;
            Ok(created)
        })
        .await
    }

    /// The idempotent frame of every create: [`Store::idempotent`] for `Create{KIND}`, whose
    /// response is the created resource. For creates that do more than
    /// [`Store::create_with`] (e.g. score a new lead in the same transaction).
    pub async fn create_by<T, E, F>(&self, request_id: &str, create: F) -> Result<T::Message, E>
    where
        T: Table,
        E: From<ApiError>,
        F: AsyncFnOnce(&mut WriteTx<'_>) -> Result<T::Message, E>,
    {
        self.idempotent(&format!("Create{}", T::KIND), request_id, create)
            .await
    }

    /// The one idempotent frame (AIP-155) for any call that changes something once per
    /// `request_id`: answers a retry of `request_id` for `method` with the first response;
    /// otherwise runs `body` in a write transaction and commits its changes together with its
    /// response in the ledger. When two first attempts race, the loser rolls back and answers
    /// with the winner's response. An empty `request_id` just runs `body` once.
    pub async fn idempotent<M, E, F>(&self, method: &str, request_id: &str, body: F) -> Result<M, E>
    where
        M: Message + Default,
        E: From<ApiError>,
        F: AsyncFnOnce(&mut WriteTx<'_>) -> Result<M, E>,
    {
        let mut tx = self.begin().await?;
        if let Some(previous) = tx.recall_as::<M>(method, request_id).await? {
            return Ok(previous);
        }
        let response = body(&mut tx).await?;
        Ok(tx.commit_remembered(method, request_id, response).await?)
    }

    /// The first response recorded for `request_id`, if any.
    pub async fn recall<T: Table>(
        &self,
        method: &str,
        request_id: &str,
    ) -> Result<Option<T::Message>, ApiError> {
        let mut conn = self.db.acquire().await.map_err(db_error)?;
        recall_on::<T::Message>(&mut conn, &self.db, method, request_id).await
    }

    /// Reads `name`, lets `apply` change it (after the etag check), stores it and emits
    /// `<prefix>.updated`.
    pub async fn update<T, F>(
        &self,
        name: &str,
        etag: &str,
        apply: F,
    ) -> Result<T::Message, ApiError>
    where
        T: Table,
        F: FnOnce(&mut T::Message) -> Result<(), ApiError> + Send,
    {
        let mut tx = self.begin().await?;
        let mut current = tx.get::<T>(name).await?;
        check_etag::<T>(&current, etag)?;
        apply(&mut current)?;
        let updated = tx.replace::<T>(current).await?;
        tx.emit::<T>("updated", &updated).await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Deletes `name` (after the etag check) and emits `<prefix>.deleted`.
    pub async fn delete<T: Table>(&self, name: &str, etag: &str) -> Result<T::Message, ApiError> {
        let mut tx = self.begin().await?;
        let current = tx.get::<T>(name).await?;
        check_etag::<T>(&current, etag)?;
        tx.remove::<T>(name).await?;
        tx.emit::<T>("deleted", &current).await?;
        tx.commit().await?;
        Ok(current)
    }

    /// Events after `after` in commit order, then new ones as they commit.
    pub fn watch(
        &self,
        after: i64,
        types: Vec<String>,
    ) -> impl Stream<Item = Result<Event, ApiError>> + Send + 'static {
        outbox::watch(
            self.db.clone(),
            self.notifier.clone(),
            self.service,
            self.stopping.clone(),
            after,
            types,
        )
    }
}

/// ABORTED when `etag` is given and differs from the resource's current etag.
pub fn check_etag<T: Table>(current: &T::Message, etag: &str) -> Result<(), ApiError> {
    if !etag.is_empty() && etag != T::etag(current) {
        return Err(ApiError::EtagMismatch {
            name: T::name(current).to_owned(),
            current: T::etag(current).to_owned(),
        });
    }
    Ok(())
}

/// Decodes a row read for change (`SELECT data, writer_revision …`), refusing one written by a
/// newer release: this binary does not know every field such a row may hold, and rewriting it
/// would erase them. UNAVAILABLE, so the caller retries (on a newer replica, during a rolling
/// upgrade).
fn decode_for_change<T: Table>(
    row: &sqlx::any::AnyRow,
    db: &Database,
) -> Result<T::Message, ApiError> {
    let written_by: i64 = row.try_get(1).map_err(db_error)?;
    let message = decode::<T>(row)?;
    if written_by > db.schema_revision() {
        return Err(ApiError::unavailable(format!(
            "{} was written by a newer release (schema {written_by}; this replica has {}); \
             retry, a newer replica will take it",
            T::name(&message),
            db.schema_revision()
        )));
    }
    Ok(message)
}

fn decode<T: Table>(row: &sqlx::any::AnyRow) -> Result<T::Message, ApiError> {
    let data: Vec<u8> = row.try_get(0).map_err(db_error)?;
    T::Message::decode(data.as_slice())
        .map_err(|e| ApiError::Internal(format!("stored {} is corrupt: {e}", T::KIND)))
}

async fn recall_on<M: Message + Default>(
    conn: &mut sqlx::AnyConnection,
    db: &Database,
    method: &str,
    request_id: &str,
) -> Result<Option<M>, ApiError> {
    if request_id.is_empty() {
        return Ok(None);
    }
    if request_id.chars().count() > MAX_REQUEST_ID_CHARS {
        return Err(ApiError::invalid(
            "request_id",
            format!("must be at most {MAX_REQUEST_ID_CHARS} characters"),
        ));
    }
    let row = sqlx::query("SELECT response FROM idempotency WHERE request_id = $1 AND method = $2")
        .bind(request_id)
        .bind(method)
        .fetch_optional(&mut *conn)
        .instrument(db_span(db, "SELECT", "idempotency"))
        .await
        .map_err(db_error)?;
    row.map(|row| {
        let data: Vec<u8> = row.try_get(0).map_err(db_error)?;
        M::decode(data.as_slice())
            .map_err(|e| ApiError::Internal(format!("stored response is corrupt: {e}")))
    })
    .transpose()
}

/// What a refused write of `message` tells its caller: for a unique-index violation, the
/// resource that holds the value ([`Table::UNIQUE`]), read on a fresh connection (the
/// transaction may be aborted; the holder has committed, or the index would still be waiting),
/// else the resource's own name (its id is taken); any other error as it is.
pub(crate) async fn conflict<T: Table>(
    db: &Database,
    error: ApiError,
    message: &T::Message,
) -> ApiError {
    if !matches!(error, ApiError::AlreadyExists { .. }) {
        return error;
    }
    let name = T::name(message).to_owned();
    let values = T::values(message);
    for unique in T::UNIQUE {
        let Some(position) = T::COLUMNS.iter().position(|c| c.sql == *unique) else {
            continue;
        };
        let Some(Value::Text(value)) = values.get(position) else {
            continue;
        };
        let Ok(mut conn) = db.acquire().await else {
            break;
        };
        let column = T::COLUMNS[position].sql;
        if let Ok(Some(existing)) = find_other::<T>(&mut conn, db, column, value, &name).await {
            return ApiError::AlreadyExists {
                kind: T::KIND,
                name: existing,
            };
        }
    }
    ApiError::AlreadyExists {
        kind: T::KIND,
        name,
    }
}

/// A write transaction: the steps of a change, committed together with its events.
pub struct WriteTx<'s> {
    store: &'s Store,
    tx: Transaction<'static, Any>,
    emitted: bool,
}

impl WriteTx<'_> {
    /// The connection, for service-specific SQL inside the transaction.
    pub fn conn(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }

    /// The store's database.
    pub fn db(&self) -> &Database {
        &self.store.db
    }

    /// [`find_other`] inside this transaction.
    pub async fn find_other<T: Table>(
        &mut self,
        column: &'static str,
        value: &str,
        except_name: &str,
    ) -> Result<Option<String>, ApiError> {
        find_other::<T>(&mut self.tx, &self.store.db, column, value, except_name).await
    }

    /// The first response recorded for `request_id` (empty: none).
    async fn recall_as<M: Message + Default>(
        &mut self,
        method: &str,
        request_id: &str,
    ) -> Result<Option<M>, ApiError> {
        recall_on::<M>(&mut self.tx, &self.store.db, method, request_id).await
    }

    /// Records `response` as the answer to `request_id`; `false` if another call recorded first.
    async fn remember_as<M: Message>(
        &mut self,
        method: &str,
        request_id: &str,
        response: &M,
    ) -> Result<bool, ApiError> {
        if request_id.is_empty() {
            return Ok(true);
        }
        let result = sqlx::query(
            "INSERT INTO idempotency (request_id, method, response, create_time) VALUES ($1, $2, $3, $4)
             ON CONFLICT (request_id, method) DO NOTHING",
        )
        .bind(request_id)
        .bind(method)
        .bind(response.encode_to_vec())
        .bind(kizuna_db::now_micros())
        .execute(&mut *self.tx)
        .instrument(db_span(&self.store.db, "INSERT", "idempotency"))
        .await
        .map_err(db_error)?;
        Ok(result.rows_affected() == 1)
    }

    /// Ends an idempotent call: records `response` as the answer to `request_id` (for
    /// `method`, e.g. `CreateLead`) and commits. When a concurrent retry with the same request
    /// id recorded first, rolls back and answers with that call's response instead (AIP-155).
    /// Prefer [`Store::idempotent`], which also does the lookup.
    pub async fn commit_remembered<M: Message + Default>(
        mut self,
        method: &str,
        request_id: &str,
        response: M,
    ) -> Result<M, ApiError> {
        if !self.remember_as(method, request_id, &response).await? {
            // A concurrent retry with the same request id won the race: answer with its result.
            let store = self.store;
            drop(self);
            let mut conn = store.db.acquire().await.map_err(db_error)?;
            let previous = recall_on::<M>(&mut conn, &store.db, method, request_id).await?;
            return previous
                .ok_or_else(|| ApiError::Internal("idempotency record vanished".into()));
        }
        self.commit().await?;
        Ok(response)
    }

    /// Reads one resource for change (row-locked on PostgreSQL).
    pub async fn get<T: Table>(&mut self, name: &str) -> Result<T::Message, ApiError> {
        let parsed = parse_name::<T>(name).ok_or_else(|| bad_name::<T>("name"))?;
        let lock = self.store.db.for_update();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT data, writer_revision FROM {} WHERE id = $1 AND parent = $2{lock}",
            T::TABLE
        )))
        .bind(parsed.id)
        .bind(parsed.parent)
        .fetch_optional(&mut *self.tx)
        .instrument(db_span(&self.store.db, "SELECT", T::TABLE))
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found::<T>(name))?;
        decode_for_change::<T>(&row, &self.store.db)
    }

    /// Inserts a new resource; `id` empty means a generated UUIDv7. Sets name, etag and times.
    pub async fn insert<T: Table>(
        &mut self,
        parent: &str,
        id: &str,
        mut message: T::Message,
    ) -> Result<T::Message, ApiError> {
        let id = if id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            id.to_owned()
        };
        if !valid_id(&id) {
            return Err(ApiError::invalid(
                format!("{}_id", T::KIND.to_lowercase()),
                "must be 1-63 characters of a-z, 0-9 and -, not starting or ending with -",
            ));
        }
        let name = format_name::<T>(parent, &id);
        let now = kizuna_db::now_micros();
        T::set_name(&mut message, name.clone());
        T::set_meta(
            &mut message,
            "1".into(),
            time::to_timestamp(now),
            time::to_timestamp(now),
        );
        let values = T::values(&message);
        let mut sql = Sql::new(format!(
            "INSERT INTO {} (id, parent, data, version, create_time, update_time, writer_revision",
            T::TABLE
        ));
        for column in T::COLUMNS {
            sql.push(", ").push(column.sql);
        }
        sql.push(") VALUES (")
            .bind(id.as_str())
            .push(", ")
            .bind(parent)
            .push(", ");
        sql.bind(Value::Bytes(message.encode_to_vec()))
            .push(", 1, ")
            .bind(now)
            .push(", ")
            .bind(now)
            .push(", ")
            .bind(self.store.db.schema_revision());
        for value in values {
            sql.push(", ").bind(value);
        }
        sql.push(")");
        let inserted = sql
            .query()
            .execute(&mut *self.tx)
            .instrument(db_span(&self.store.db, "INSERT", T::TABLE))
            .await;
        if let Err(error) = inserted {
            return Err(conflict::<T>(&self.store.db, db_error(error), &message).await);
        }
        Ok(message)
    }

    /// Stores a changed resource, bumping its etag and update time.
    pub async fn replace<T: Table>(
        &mut self,
        mut message: T::Message,
    ) -> Result<T::Message, ApiError> {
        let name = T::name(&message).to_owned();
        let parsed = parse_name::<T>(&name).ok_or_else(|| bad_name::<T>("name"))?;
        let version: i64 = T::etag(&message).parse().unwrap_or(0);
        let now = kizuna_db::now_micros();
        let create_time = T::create_time(&message).unwrap_or_else(|| time::to_timestamp(now));
        T::set_meta(
            &mut message,
            (version + 1).to_string(),
            create_time,
            time::to_timestamp(now),
        );
        let mut sql = Sql::new(format!("UPDATE {} SET data = ", T::TABLE));
        sql.bind(Value::Bytes(message.encode_to_vec()))
            .push(", version = version + 1, update_time = ")
            .bind(now)
            .push(", writer_revision = ")
            .bind(self.store.db.schema_revision());
        for (column, value) in T::COLUMNS.iter().zip(T::values(&message)) {
            sql.push(", ").push(column.sql).push(" = ").bind(value);
        }
        sql.push(" WHERE id = ")
            .bind(parsed.id)
            .push(" AND parent = ")
            .bind(parsed.parent)
            .push(" AND version = ")
            .bind(version);
        let result = match sql
            .query()
            .execute(&mut *self.tx)
            .instrument(db_span(&self.store.db, "UPDATE", T::TABLE))
            .await
        {
            Ok(result) => result,
            Err(error) => {
                return Err(conflict::<T>(&self.store.db, db_error(error), &message).await);
            }
        };
        if result.rows_affected() != 1 {
            return Err(ApiError::EtagMismatch {
                name,
                current: "unknown (changed concurrently)".into(),
            });
        }
        Ok(message)
    }

    /// Deletes a resource row.
    pub async fn remove<T: Table>(&mut self, name: &str) -> Result<(), ApiError> {
        let parsed = parse_name::<T>(name).ok_or_else(|| bad_name::<T>("name"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {} WHERE id = $1 AND parent = $2",
            T::TABLE
        )))
        .bind(parsed.id)
        .bind(parsed.parent)
        .execute(&mut *self.tx)
        .instrument(db_span(&self.store.db, "DELETE", T::TABLE))
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Emits `<prefix>.<verb>` about `message`.
    pub async fn emit<T: Table>(
        &mut self,
        verb: &str,
        message: &T::Message,
    ) -> Result<(), ApiError> {
        self.emit_event(NewEvent {
            event_type: format!("{}.{verb}", T::EVENT_PREFIX),
            subject: T::name(message).to_owned(),
            type_url: format!("type.googleapis.com/{}", T::PROTO_NAME),
            data: message.encode_to_vec(),
        })
        .await
    }

    /// Emits an arbitrary event.
    pub async fn emit_event(&mut self, event: NewEvent) -> Result<(), ApiError> {
        self.emit_many(vec![event]).await
    }

    /// Emits `events` in order with multi-row inserts.
    pub async fn emit_many(&mut self, events: Vec<NewEvent>) -> Result<(), ApiError> {
        if events.is_empty() {
            return Ok(());
        }
        outbox::append(&mut self.tx, &self.store.db, &events).await?;
        self.emitted = true;
        Ok(())
    }

    /// Commits, then wakes event watchers.
    pub async fn commit(self) -> Result<(), ApiError> {
        let db = &self.store.db;
        self.tx
            .commit()
            .instrument(db_tx_span(db, "COMMIT"))
            .await
            .map_err(db_error)?;
        if self.emitted {
            self.store.notifier.notify();
        }
        Ok(())
    }
}
