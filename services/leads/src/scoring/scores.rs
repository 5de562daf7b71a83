//! Stored score state per lead (`lead_score_state`) and the batched `lead.score_changed` event.
//!
//! Each row holds the lead's incremental [`ScoreState`] under one model revision (so the next
//! in-order activity is scored without re-reading the lead's activities), the score and grade
//! last stored, and what the last `lead.score_changed` event announced. A write that moves the
//! score by at least [`SCORE_EPSILON`] (or changes the grade) sets `pending`; [`flush`] — run
//! every second by [`spawn_flusher`] while scores are being written (every 30 s when idle, for
//! flags another replica left) — emits ONE `lead.score_changed` event listing every pending
//! lead ([`LeadScoreChanges`], coalesced per lead) and clears the flags in the same transaction.
//! So a burst of page views gives one event per lead per flush, not one per view, and no change
//! is lost: the flag is written in the transaction that stored the score.

use std::collections::HashMap;
use std::time::Duration;

use kizuna_db::Backend;
use kizuna_errors::ApiError;
use kizuna_proto::leads::{LeadScoreChange, LeadScoreChanges};
use kizuna_store::outbox::NewEvent;
use kizuna_store::{Sql, Store, Value, Worker, WriteTx, db_error, db_span};
use prost::Message;
use sqlx::Row;
use tracing::Instrument;

use crate::scoring::state::ScoreState;

/// A score change smaller than this (with the same grade) is not announced.
pub const SCORE_EPSILON: f64 = 0.001;
/// Most leads listed in one `lead.score_changed` event.
pub const MAX_CHANGES_PER_EVENT: i64 = 5_000;
/// Advisory lock key that keeps one flusher at a time across replicas (PostgreSQL).
const FLUSH_LOCK: i64 = 0x6b69_7a75_6e61_0002;
/// How long after this process last stored score rows the flusher keeps polling at its interval
/// (the writing transaction may commit a while after [`store`]).
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(10);
/// An idle flusher polls once per this many intervals: rows flagged by another replica that
/// stopped before flushing them, or by this one before a restart.
pub const IDLE_EVERY: u32 = 30;

/// When this process last stored score rows (microseconds since the epoch; 0: never).
static LAST_STORE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Whether score rows were stored here within [`ACTIVE_WINDOW`].
fn recently_stored() -> bool {
    let last = LAST_STORE.load(std::sync::atomic::Ordering::Relaxed);
    let window = i64::try_from(ACTIVE_WINDOW.as_micros()).unwrap_or(i64::MAX);
    last > 0 && kizuna_db::now_micros().saturating_sub(last) < window
}

/// One lead's stored row.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    /// The incremental state, if one is kept (None after a score reset or before any scoring).
    pub state: Option<ScoreState>,
    /// What the last event announced.
    pub notified_score: f64,
    /// What the last event announced.
    pub notified_grade: String,
}

/// The stored rows of `leads` (by lead name); leads without one are absent.
pub async fn load(
    tx: &mut WriteTx<'_>,
    leads: &[String],
) -> Result<HashMap<String, Stored>, ApiError> {
    let mut found = HashMap::with_capacity(leads.len());
    for range in
        kizuna_store::bulk::statements(tx.db().statement_bytes(), leads, 1, |name| name.len() + 8)
    {
        let chunk = &leads[range];
        let mut sql = Sql::new(
            "SELECT lead_name, data, notified_score, notified_grade FROM lead_score_state \
             WHERE lead_name IN (",
        );
        for (i, name) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(name.as_str());
        }
        sql.push(")");
        let db = tx.db().clone();
        let rows = sql
            .query()
            .fetch_all(tx.conn())
            .instrument(db_span(&db, "SELECT", "lead_score_state"))
            .await
            .map_err(db_error)?;
        for row in rows {
            let name: String = row.try_get(0).map_err(db_error)?;
            let data: Vec<u8> = row.try_get(1).map_err(db_error)?;
            let state = if data.is_empty() {
                None
            } else {
                Some(ScoreState::decode(data.as_slice()).map_err(|e| {
                    ApiError::Internal(format!("stored score state of {name} is corrupt: {e}"))
                })?)
            };
            found.insert(
                name,
                Stored {
                    state,
                    notified_score: row.try_get(2).map_err(db_error)?,
                    notified_grade: row.try_get(3).map_err(db_error)?,
                },
            );
        }
    }
    Ok(found)
}

/// A lead's new stored score.
#[derive(Clone, Debug)]
pub struct Write<'a> {
    /// The lead.
    pub lead: &'a str,
    /// Its state (None: keep none, the next activity rebuilds).
    pub state: Option<&'a ScoreState>,
    /// The score now stored on the lead.
    pub score: f64,
    /// The grade now stored on the lead.
    pub grade: &'a str,
    /// What the last event announced (from [`load`]; zero and empty for a new row).
    pub notified_score: f64,
    /// What the last event announced.
    pub notified_grade: &'a str,
}

/// Stores the rows of `writes` (insert or replace), flagging the ones an event should announce.
pub async fn store(tx: &mut WriteTx<'_>, writes: &[Write<'_>]) -> Result<(), ApiError> {
    const BINDS: usize = 8;
    if !writes.is_empty() {
        LAST_STORE.store(
            kizuna_db::now_micros(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    let size = |w: &Write<'_>| {
        w.lead.len()
            + w.state.map_or(0, |s| s.model.len() + s.encoded_len())
            + w.grade.len()
            + w.notified_grade.len()
            + 80
    };
    for range in kizuna_store::bulk::statements(tx.db().statement_bytes(), writes, BINDS, size) {
        let chunk = &writes[range];
        let mut sql = Sql::new(
            "INSERT INTO lead_score_state (lead_name, model, revision, data, score, grade, \
             notified_score, notified_grade, pending) VALUES ",
        );
        for (i, w) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            let pending =
                (w.score - w.notified_score).abs() >= SCORE_EPSILON || w.grade != w.notified_grade;
            let (model, revision, data) = match w.state {
                Some(state) => (
                    state.model.as_str(),
                    i64::from(state.revision),
                    state.encode_to_vec(),
                ),
                None => ("", 0, Vec::new()),
            };
            sql.push("(")
                .bind(w.lead)
                .push(", ")
                .bind(model)
                .push(", ")
                .bind(revision)
                .push(", ")
                .bind(Value::Bytes(data))
                .push(", ")
                .bind(w.score)
                .push(", ")
                .bind(w.grade)
                .push(", ")
                .bind(w.notified_score)
                .push(", ")
                .bind(w.notified_grade)
                .push(if pending { ", 1)" } else { ", 0)" });
        }
        // Against what the last event announced as stored now (a flush may have committed
        // since this transaction read the row), not as read.
        sql.push(
            " ON CONFLICT (lead_name) DO UPDATE SET model = excluded.model, \
             revision = excluded.revision, data = excluded.data, score = excluded.score, \
             grade = excluded.grade, pending = CASE WHEN \
             abs(excluded.score - lead_score_state.notified_score) >= ",
        )
        .bind(SCORE_EPSILON)
        .push(" OR excluded.grade <> lead_score_state.notified_grade THEN 1 ELSE 0 END");
        let db = tx.db().clone();
        sql.query()
            .execute(tx.conn())
            .instrument(db_span(&db, "INSERT", "lead_score_state"))
            .await
            .map_err(db_error)?;
    }
    Ok(())
}

/// Forgets the state of `lead` (deleted or merged away).
pub async fn forget(tx: &mut WriteTx<'_>, lead: &str) -> Result<(), ApiError> {
    let db = tx.db().clone();
    sqlx::query("DELETE FROM lead_score_state WHERE lead_name = $1")
        .bind(lead)
        .execute(tx.conn())
        .instrument(db_span(&db, "DELETE", "lead_score_state"))
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Emits one `lead.score_changed` event for up to [`MAX_CHANGES_PER_EVENT`] pending leads and
/// clears their flags, in one transaction; the number of leads announced (0: nothing pending,
/// or another replica is flushing).
pub async fn flush(store: &Store) -> Result<usize, ApiError> {
    let mut tx = store.begin().await?;
    let postgres = tx.db().backend() == Backend::Postgres;
    if postgres {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(FLUSH_LOCK)
            .fetch_one(tx.conn())
            .await
            .map_err(db_error)?;
        if !locked {
            return Ok(0);
        }
    }
    // Rows an ingest transaction holds are skipped and announced by the next flush.
    let lock = if postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let db = tx.db().clone();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT lead_name, score, grade, notified_score, notified_grade, model, revision \
         FROM lead_score_state WHERE pending = 1 ORDER BY lead_name LIMIT $1{lock}"
    )))
    .bind(MAX_CHANGES_PER_EVENT)
    .fetch_all(tx.conn())
    .instrument(db_span(&db, "SELECT", "lead_score_state"))
    .await
    .map_err(db_error)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut changes = Vec::with_capacity(rows.len());
    for row in &rows {
        let revision: i64 = row.try_get(6).map_err(db_error)?;
        changes.push(LeadScoreChange {
            lead: row.try_get(0).map_err(db_error)?,
            score: row.try_get(1).map_err(db_error)?,
            grade: row.try_get(2).map_err(db_error)?,
            previous_score: row.try_get(3).map_err(db_error)?,
            previous_grade: row.try_get(4).map_err(db_error)?,
            scoring_model: row.try_get(5).map_err(db_error)?,
            scoring_model_revision: i32::try_from(revision).unwrap_or_default(),
        });
    }
    for range in
        kizuna_store::bulk::statements(tx.db().statement_bytes(), &changes, 1, |c| c.lead.len() + 8)
    {
        let chunk = &changes[range];
        let mut sql = Sql::new(
            "UPDATE lead_score_state SET pending = 0, notified_score = score, \
             notified_grade = grade WHERE lead_name IN (",
        );
        for (i, change) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(change.lead.as_str());
        }
        sql.push(")");
        sql.query()
            .execute(tx.conn())
            .instrument(db_span(&db, "UPDATE", "lead_score_state"))
            .await
            .map_err(db_error)?;
    }
    let announced = changes.len();
    tx.emit_event(NewEvent {
        event_type: "lead.score_changed".into(),
        subject: "leads".into(),
        type_url: "type.googleapis.com/kizuna.leads.v1.LeadScoreChanges".into(),
        data: LeadScoreChanges { changes }.encode_to_vec(),
    })
    .await?;
    tx.commit().await?;
    Ok(announced)
}

/// Whether some lead's score change waits to be announced. Read outside any span, so an idle
/// check leaves no trace.
async fn pending(store: &Store) -> bool {
    sqlx::query("SELECT 1 FROM lead_score_state WHERE pending = 1 LIMIT 1")
        .fetch_optional(store.db().pool())
        .await
        // On a failed read, try the flush: it reports the error.
        .map_or(true, |row| row.is_some())
}

/// [`flush`] as one unit of background work: a root span `leads.flush_score_changes` with the
/// database spans as children, only when changes are pending (an idle tick records nothing).
async fn flush_traced(store: &Store) -> Result<usize, ApiError> {
    if !pending(store).await {
        return Ok(0);
    }
    flush(store)
        .instrument(kizuna_telemetry::work_span(
            crate::SERVICE,
            "leads.flush_score_changes",
        ))
        .await
}

/// Runs [`flush`] every `interval` while this process stores scores (and again at once while a
/// flush was full), every [`IDLE_EVERY`] intervals when idle, and once more on `stopping`.
///
/// Every replica runs one; they need no lease: each flush holds a transaction-scoped advisory
/// lock for exactly the transaction that emits and clears, which is the fencing a lease would
/// give (a replica that does not hold it writes nothing).
pub fn flusher(store: Store, interval: Duration) -> Worker {
    let mut stopping = store.stopping();
    Worker::new("leads.score-flusher", async move {
        let mut idle_ticks = 0;
        loop {
            if recently_stored() || idle_ticks >= IDLE_EVERY {
                idle_ticks = 0;
                let announced = match flush_traced(&store).await {
                    Ok(n) => n,
                    Err(error) => {
                        tracing::warn!(%error, "lead.score_changed flush failed; retrying");
                        0
                    }
                };
                if announced as i64 >= MAX_CHANGES_PER_EVENT {
                    continue;
                }
            } else {
                idle_ticks += 1;
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stopping.changed() => {}
            }
            if *stopping.borrow() {
                // One last flush so a clean shutdown leaves nothing pending.
                let _ = flush_traced(&store).await;
                return;
            }
        }
    })
}
