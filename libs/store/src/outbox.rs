//! The transactional outbox: domain events written in the same transaction as the state change,
//! read back in commit order from a cursor, and pushed to watchers as soon as they commit.
//!
//! Commit order equals sequence order: on PostgreSQL every writer takes a transaction-scoped
//! advisory lock just before it inserts its event and holds it until commit, so a later sequence
//! can never become visible before an earlier one; SQLite has one writer at a time anyway.
//! Watchers are woken by an in-process signal after each commit and, on PostgreSQL, by
//! `LISTEN/NOTIFY` for commits made by other replicas.

use std::time::Duration;

use futures::Stream;
use kizuna_db::{Backend, Database};
use kizuna_errors::ApiError;
use kizuna_proto::kizuna::events::v1::Event;
use sqlx::Row;
use tokio::sync::watch;
use tracing::Instrument;

use crate::sql::Sql;
use crate::time::to_timestamp;
use crate::{db_error, db_span};

/// Advisory lock key that orders outbox writers on PostgreSQL.
const OUTBOX_LOCK: i64 = 0x6f7574626f78; // "outbox"
/// Channel used with LISTEN/NOTIFY.
pub const NOTIFY_CHANNEL: &str = "kizuna_outbox";
/// Events read per query while catching up.
const BATCH: i64 = 500;
/// Safety net: a watcher re-reads at least this often even without a wake-up.
const FALLBACK_WAKE: Duration = Duration::from_secs(5);

/// One event about to be written.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// Event type, e.g. `lead.created`.
    pub event_type: String,
    /// Resource name the event is about.
    pub subject: String,
    /// Full type URL of `data`.
    pub type_url: String,
    /// Encoded message.
    pub data: Vec<u8>,
}

/// Appends `event` inside `tx`. Call it as the last write of the transaction.
pub(crate) async fn append(
    conn: &mut sqlx::AnyConnection,
    db: &Database,
    event: NewEvent,
) -> Result<i64, ApiError> {
    let (traceparent, tracestate) = kizuna_telemetry::propagation::current_trace_context();
    async move {
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(OUTBOX_LOCK)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
    }
    let sequence: i64 = sqlx::query_scalar(
        "INSERT INTO outbox (event_type, subject, type_url, data, traceparent, tracestate, create_time)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING sequence",
    )
    .bind(event.event_type)
    .bind(event.subject)
    .bind(event.type_url)
    .bind(event.data)
    .bind(traceparent)
    .bind(tracestate)
    .bind(kizuna_db::now_micros())
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_notify($1, '')").bind(NOTIFY_CHANNEL).execute(&mut *conn).await.map_err(db_error)?;
    }
    Ok(sequence)
    }
    .instrument(db_span(db, "INSERT", "outbox"))
    .await
}

/// Appends `events` inside `tx` with one lock, multi-row inserts and one notification; call it
/// as the last write of the transaction. Their sequences follow the order given.
pub(crate) async fn append_many(
    conn: &mut sqlx::AnyConnection,
    db: &Database,
    events: Vec<NewEvent>,
) -> Result<(), ApiError> {
    if events.is_empty() {
        return Ok(());
    }
    let (traceparent, tracestate) = kizuna_telemetry::propagation::current_trace_context();
    let now = kizuna_db::now_micros();
    async move {
        if db.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(OUTBOX_LOCK)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
        }
        let size = |e: &NewEvent| {
            e.event_type.len() + e.subject.len() + e.type_url.len() + e.data.len() + 120
        };
        for range in crate::bulk::statements(db.statement_bytes(), &events, 7, size) {
            let chunk = &events[range];
            let mut sql = Sql::new(
                "INSERT INTO outbox (event_type, subject, type_url, data, traceparent, tracestate, \
                 create_time) VALUES ",
            );
            for (i, event) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("(")
                    .bind(event.event_type.as_str())
                    .push(", ")
                    .bind(event.subject.as_str())
                    .push(", ")
                    .bind(event.type_url.as_str())
                    .push(", ")
                    .bind(crate::Value::Bytes(event.data.clone()))
                    .push(", ")
                    .bind(traceparent.as_str())
                    .push(", ")
                    .bind(tracestate.as_str())
                    .push(", ")
                    .bind(now)
                    .push(")");
            }
            sql.query().execute(&mut *conn).await.map_err(db_error)?;
        }
        if db.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(NOTIFY_CHANNEL)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }
    .instrument(db_span(db, "INSERT", "outbox"))
    .await
}

/// Reads up to `limit` events after `after`, optionally only of `types`.
pub(crate) async fn read(
    db: &Database,
    after: i64,
    types: &[String],
    limit: i64,
) -> Result<Vec<Event>, ApiError> {
    let mut sql = Sql::new(
        "SELECT sequence, event_type, subject, type_url, data, traceparent, tracestate, create_time \
         FROM outbox WHERE sequence > ",
    );
    sql.bind(after);
    if !types.is_empty() {
        sql.push(" AND event_type IN (");
        for (i, t) in types.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(t.as_str());
        }
        sql.push(")");
    }
    sql.push(" ORDER BY sequence LIMIT ").bind(limit);
    let rows = sql
        .query()
        .fetch_all(db.pool())
        .instrument(db_span(db, "SELECT", "outbox"))
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|row| {
            Ok(Event {
                sequence: row.try_get(0)?,
                r#type: row.try_get(1)?,
                subject: row.try_get(2)?,
                data: Some(prost_types::Any {
                    type_url: row.try_get(3)?,
                    value: row.try_get(4)?,
                }),
                traceparent: row.try_get(5)?,
                tracestate: row.try_get(6)?,
                create_time: Some(to_timestamp(row.try_get(7)?)),
                service: String::new(),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(db_error)
}

/// Wakes watchers when events commit.
#[derive(Clone, Debug)]
pub struct Notifier {
    sender: watch::Sender<u64>,
}

impl Default for Notifier {
    fn default() -> Self {
        Self {
            sender: watch::channel(0).0,
        }
    }
}

impl Notifier {
    /// Signals that new events may be readable.
    pub fn notify(&self) {
        self.sender.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every later signal.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }

    /// On PostgreSQL, relays `NOTIFY kizuna_outbox` from other replicas; returns at once on SQLite.
    pub fn spawn_listener(&self, db: &Database, mut stopping: watch::Receiver<bool>) {
        if db.backend() != Backend::Postgres {
            return;
        }
        let url = db.url().expose().to_owned();
        let notifier = self.clone();
        tokio::spawn(async move {
            loop {
                let listener = async {
                    let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
                    listener.listen(NOTIFY_CHANNEL).await?;
                    loop {
                        listener.recv().await?;
                        notifier.notify();
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), sqlx::Error>(())
                };
                tokio::select! {
                    result = listener => {
                        if let Err(error) = result {
                            tracing::warn!(%error, "outbox listener lost its connection; retrying");
                        }
                        // Wake watchers: something may have committed while we were away.
                        notifier.notify();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    _ = async { let _ = stopping.wait_for(|stop| *stop).await; } => return,
                }
            }
        });
    }
}

/// Streams events after `after` in commit order, then waits for new ones; ends when `stopping`
/// turns true or the caller goes away.
pub(crate) fn watch(
    db: Database,
    notifier: Notifier,
    service: &'static str,
    mut stopping: watch::Receiver<bool>,
    after: i64,
    types: Vec<String>,
) -> impl Stream<Item = Result<Event, ApiError>> + Send + 'static {
    async_stream::try_stream! {
        let mut cursor = after;
        let mut wake = notifier.subscribe();
        loop {
            if *stopping.borrow() {
                break;
            }
            wake.borrow_and_update();
            let batch = read(&db, cursor, &types, BATCH).await?;
            let full = batch.len() as i64 == BATCH;
            for mut event in batch {
                cursor = event.sequence;
                event.service = service.to_owned();
                yield event;
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = wake.changed() => {}
                _ = stopping.changed() => {}
                _ = tokio::time::sleep(FALLBACK_WAKE) => {}
            }
        }
    }
}
