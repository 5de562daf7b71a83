//! The transactional outbox: domain events written in the same transaction as the state change,
//! read back in one stable order from a cursor, and pushed to watchers as soon as they commit.
//!
//! Writers never wait for each other. On PostgreSQL an event is inserted without a delivery
//! position; a *sequencer* assigns positions afterwards, to committed events only, in one
//! short transaction serialized by an advisory lock (sequencers queue, writers do not). A
//! position is therefore only ever given to an event that is already visible, and every later
//! sequencer run starts above the highest position so far: readers following `position >
//! cursor` see every committed event exactly once, in one order that never changes, however
//! many transactions commit at once. Each process runs one sequencer task, woken by its own
//! commits and by `LISTEN/NOTIFY` from other replicas (the sequencer notifies after it assigned
//! positions; writers do not notify, so commits never queue on the notification lock).
//! SQLite has one writer at a time, so its row id already is the commit order and the position.

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

/// Advisory lock key that serializes sequencers (never writers) on PostgreSQL.
const SEQUENCER_LOCK: i64 = 0x6f7574626f78; // "outbox"
/// Channel used with LISTEN/NOTIFY.
pub const NOTIFY_CHANNEL: &str = "kizuna_outbox";
/// Events read per query while catching up.
const BATCH: i64 = 500;
/// Events given positions per sequencer transaction.
const SEQUENCE_BATCH: i64 = 5_000;
/// Safety net: watchers re-read and the sequencer re-checks at least this often without a
/// wake-up (e.g. events committed by a replica that died before sequencing them).
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

/// Appends `events` inside the caller's transaction, in the order given, with multi-row
/// inserts. Takes no lock: delivery positions are assigned after commit (see the module notes).
pub(crate) async fn append(
    conn: &mut sqlx::AnyConnection,
    db: &Database,
    events: &[NewEvent],
) -> Result<(), ApiError> {
    if events.is_empty() {
        return Ok(());
    }
    let (traceparent, tracestate) = kizuna_telemetry::propagation::current_trace_context();
    let now = kizuna_db::now_micros();
    async move {
        let size = |e: &NewEvent| {
            e.event_type.len() + e.subject.len() + e.type_url.len() + e.data.len() + 120
        };
        for range in crate::bulk::statements(db.statement_bytes(), events, 7, size) {
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
        Ok(())
    }
    .instrument(db_span(db, "INSERT", "outbox"))
    .await
}

/// The column events are delivered and resumed by: the sequencer's `position` on PostgreSQL,
/// the row id on SQLite (one writer at a time: ids are commit order).
fn cursor_column(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "position",
        Backend::Sqlite => "sequence",
    }
}

/// Reads up to `limit` events after `after`, optionally only of `types`.
pub(crate) async fn read(
    db: &Database,
    after: i64,
    types: &[String],
    limit: i64,
) -> Result<Vec<Event>, ApiError> {
    let cursor = cursor_column(db.backend());
    let mut sql = Sql::new(format!(
        "SELECT {cursor}, event_type, subject, type_url, data, traceparent, tracestate, \
         create_time FROM outbox WHERE {cursor} > "
    ));
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
    sql.push(&format!(" ORDER BY {cursor} LIMIT ")).bind(limit);
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

/// Whether committed events wait for a position (PostgreSQL); one cheap indexed read, so an
/// idle sequencer costs no transaction.
async fn unpositioned(db: &Database) -> Result<bool, ApiError> {
    Ok(
        sqlx::query("SELECT 1 FROM outbox WHERE position IS NULL LIMIT 1")
            .fetch_optional(db.pool())
            .await
            .map_err(db_error)?
            .is_some(),
    )
}

/// Gives the committed events that have none the next positions, in row-id order, in one
/// transaction serialized with every other sequencer; how many it positioned (at most
/// [`SEQUENCE_BATCH`]). Other replicas are notified when any were.
pub(crate) async fn assign_positions(db: &Database) -> Result<u64, ApiError> {
    async {
        let mut tx = db.pool().begin().await.map_err(db_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SEQUENCER_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        // A new statement after the lock: its snapshot sees the positions the previous
        // holder committed, so positions continue above them.
        let assigned = sqlx::query(
            "WITH top AS (SELECT COALESCE(MAX(position), 0) AS position FROM outbox),
                  todo AS (SELECT sequence, row_number() OVER (ORDER BY sequence) AS n
                           FROM outbox WHERE position IS NULL ORDER BY sequence LIMIT $1)
             UPDATE outbox SET position = top.position + todo.n
             FROM top, todo WHERE outbox.sequence = todo.sequence",
        )
        .bind(SEQUENCE_BATCH)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        if assigned > 0 {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(NOTIFY_CHANNEL)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(assigned)
    }
    .instrument(db_span(db, "UPDATE", "outbox"))
    .await
}

/// Wakes watchers when events become readable.
///
/// Writers call [`Notifier::notify`] after each commit that emitted events. On SQLite that
/// wakes the watchers at once; on PostgreSQL it wakes this process's sequencer, which wakes
/// the watchers once the events have positions.
#[derive(Clone, Debug)]
pub struct Notifier {
    backend: Backend,
    /// Events committed (here, or on another replica as told by NOTIFY).
    committed: watch::Sender<u64>,
    /// Events readable by watchers.
    readable: watch::Sender<u64>,
}

fn bump(sender: &watch::Sender<u64>) {
    sender.send_modify(|n| *n = n.wrapping_add(1));
}

impl Notifier {
    /// A notifier for a database of `backend`.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            committed: watch::channel(0).0,
            readable: watch::channel(0).0,
        }
    }

    /// Signals that events were committed.
    pub fn notify(&self) {
        match self.backend {
            Backend::Postgres => bump(&self.committed),
            Backend::Sqlite => bump(&self.readable),
        }
    }

    /// A receiver that sees every later "events readable" signal.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.readable.subscribe()
    }

    /// On PostgreSQL, the store's background tasks: the sequencer, and the listener that relays
    /// `NOTIFY kizuna_outbox` from other replicas; none on SQLite. They end when `stopping`
    /// turns true.
    pub fn tasks(
        &self,
        db: &Database,
        service: &'static str,
        stopping: watch::Receiver<bool>,
    ) -> Vec<(&'static str, futures::future::BoxFuture<'static, ()>)> {
        if self.backend != Backend::Postgres {
            return Vec::new();
        }
        vec![
            (
                "outbox-listener",
                Box::pin(self.clone().listen(db.clone(), stopping.clone())),
            ),
            (
                "outbox-sequencer",
                Box::pin(self.clone().sequence(db.clone(), service, stopping)),
            ),
        ]
    }

    async fn listen(self, db: Database, mut stopping: watch::Receiver<bool>) {
        let url = db.url().expose().to_owned();
        // An outage is logged once, when the connection is first lost (the database's own
        // outage tracker logs its start and end).
        let reported = std::sync::atomic::AtomicBool::new(false);
        loop {
            let listener = async {
                let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
                listener.listen(NOTIFY_CHANNEL).await?;
                reported.store(false, std::sync::atomic::Ordering::Relaxed);
                loop {
                    listener.recv().await?;
                    bump(&self.committed);
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                result = listener => {
                    if let Err(error) = result {
                        if reported.swap(true, std::sync::atomic::Ordering::Relaxed) {
                            tracing::debug!(%error, "outbox listener still reconnecting");
                        } else {
                            tracing::warn!(%error, "outbox listener lost its connection; retrying");
                        }
                    }
                    // Something may have committed while we were away.
                    bump(&self.committed);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                _ = async { let _ = stopping.wait_for(|stop| *stop).await; } => return,
            }
        }
    }

    async fn sequence(
        self,
        db: Database,
        service: &'static str,
        mut stopping: watch::Receiver<bool>,
    ) {
        let mut committed = self.committed.subscribe();
        loop {
            if *stopping.borrow() {
                return;
            }
            committed.borrow_and_update();
            match unpositioned(&db).await {
                Ok(true) => loop {
                    // One root span per run that found work; an idle check records nothing.
                    let run = kizuna_telemetry::work_span(service, "store.sequence_events");
                    match assign_positions(&db).instrument(run).await {
                        Ok(assigned) if assigned as i64 == SEQUENCE_BATCH => continue,
                        Ok(_) => break,
                        Err(error) => {
                            tracing::warn!(%error, "outbox sequencer failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            break;
                        }
                    }
                },
                Ok(false) => {}
                Err(error) => {
                    tracing::debug!(%error, "outbox sequencer cannot read the outbox");
                }
            }
            // Watchers read after every run: another replica's sequencer may have positioned
            // events this one found none of.
            bump(&self.readable);
            tokio::select! {
                _ = committed.changed() => {}
                _ = stopping.changed() => {}
                _ = tokio::time::sleep(FALLBACK_WAKE) => {}
            }
        }
    }
}

/// Streams events after `after` in delivery order, then waits for new ones; ends when
/// `stopping` turns true or the caller goes away.
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
