//! Bulk ingest of activities (`TrackActivities`).
//!
//! Rows are validated one by one as they arrive (a bad row fails alone, reported by its index in
//! the stream) and written in batches of up to [`BATCH_ROWS`], one transaction each: the
//! request ids already recorded are replayed, the leads are read for change in name order (so
//! concurrent streams cannot deadlock on them) with names left by merges followed, the
//! remaining request ids are claimed in the idempotency ledger, the activities are inserted with
//! multi-row statements, and [`scoring::apply::apply`] scores the leads incrementally and moves
//! them through ENGAGED and MQL. While one batch is written the next one is read from the
//! stream; up to [`IN_FLIGHT`] batches are written at once.
//!
//! The idempotency ledger is shared with `CreateActivity` and `TrackActivity`. A request id
//! that another stream (or call) is recording at the same moment is a per-row replay, never a
//! failed batch: the claim ([`WriteTx::claim_many`]) waits for that transaction and finds the
//! id recorded when it commits, or claims it when it rolls back. Claims come after the lead
//! locks, in sorted order, as in `TrackActivity` (lead, then ledger), so no two writers wait on
//! each other in a cycle.

use std::collections::{HashMap, HashSet, VecDeque};

use futures::{Stream, StreamExt};
use kizuna_errors::ApiError;
use kizuna_proto::leads::{
    Activity, Lead, TrackActivitiesRequest, TrackActivitiesResponse, TrackActivityRequest,
};
use kizuna_store::{MAX_REQUEST_ID_CHARS, Store, WriteTx, db_error, is_conflict};
use sqlx::Row;
use tracing::Instrument;

use crate::error::{Error, Result, row_error};
use crate::scoring::{self, apply};
use crate::tables::{Activities, Leads};

/// Most rows one `TrackActivitiesRequest` message may carry; a larger message ends the call
/// with INVALID_ARGUMENT (rows of earlier messages stay recorded).
pub const MAX_ROWS_PER_MESSAGE: usize = 10_000;
/// Rows per write transaction.
pub const BATCH_ROWS: usize = 2_000;
/// Batches of one stream written at once.
pub const IN_FLIGHT: usize = 2;
/// The idempotency ledger shared with `CreateActivity` and `TrackActivity`.
const METHOD: &str = "CreateActivity";
/// Attempts of one batch when concurrent writers conflict (a deadlock or serialization failure
/// rolled it back).
const ATTEMPTS: usize = 3;

/// One valid row waiting for its batch.
#[derive(Clone, Debug)]
struct PendingRow {
    index: i64,
    parent: String,
    activity: Activity,
    request_id: String,
}

/// Most row failures one response lists (in index order); `failed_count` counts them all.
pub const MAX_REPORTED_FAILURES: usize = 1_000;

/// What one stream did so far.
#[derive(Debug, Default)]
struct Tally {
    response: TrackActivitiesResponse,
}

impl Tally {
    /// Records a refused row, keeping the memory of a stream of bad rows bounded.
    fn fail(&mut self, failure: kizuna_proto::leads::RowError) {
        self.response.failed_count += 1;
        self.list(failure);
    }

    /// Lists a failure already counted.
    fn list(&mut self, failure: kizuna_proto::leads::RowError) {
        self.response.failures.push(failure);
        if self.response.failures.len() >= 2 * MAX_REPORTED_FAILURES {
            self.keep_first_failures();
        }
    }

    /// Keeps the failures of the lowest row indexes, at most [`MAX_REPORTED_FAILURES`].
    fn keep_first_failures(&mut self) {
        self.response.failures.sort_by_key(|f| f.index);
        self.response.failures.truncate(MAX_REPORTED_FAILURES);
    }
}

/// Checks one row and fills its defaults.
fn prepare(index: i64, request: TrackActivityRequest) -> Result<PendingRow, ApiError> {
    let activity = kizuna_errors::required(request.activity, "activity")?;
    super::validate(&request.parent, &activity)?;
    kizuna_store::require_name::<Leads>(&request.parent, "parent")?;
    if request.request_id.chars().count() > MAX_REQUEST_ID_CHARS {
        return Err(ApiError::invalid(
            "request_id",
            format!("must be at most {MAX_REQUEST_ID_CHARS} characters"),
        ));
    }
    let mut activity = activity;
    activity.name.clear();
    activity.etag.clear();
    activity.create_time = None;
    activity.update_time = None;
    if activity.occur_time.is_none() {
        activity.occur_time = Some(kizuna_store::time::to_timestamp(kizuna_db::now_micros()));
    }
    Ok(PendingRow {
        index,
        parent: request.parent,
        activity,
        request_id: request.request_id,
    })
}

/// Records every activity of the stream; see `TrackActivities`. When the call fails (a broken
/// stream, a batch that failed), the batches still in flight finish before it answers, so no
/// write of this call outlives it.
pub async fn track_many(
    store: &Store,
    batches: impl Stream<Item = Result<TrackActivitiesRequest, tonic::Status>> + Send + Unpin,
) -> Result<TrackActivitiesResponse> {
    let mut writing = VecDeque::new();
    let result = read_and_write(store, batches, &mut writing).await;
    if result.is_err() {
        while let Some(batch) = writing.pop_front() {
            let _ = batch.await;
        }
    }
    result
}

type Writing = VecDeque<tokio::task::JoinHandle<Result<Tally, ApiError>>>;

async fn read_and_write(
    store: &Store,
    mut batches: impl Stream<Item = Result<TrackActivitiesRequest, tonic::Status>> + Send + Unpin,
    writing: &mut Writing,
) -> Result<TrackActivitiesResponse> {
    let mut tally = Tally::default();
    let mut pending: Vec<PendingRow> = Vec::with_capacity(BATCH_ROWS);
    let mut index = 0_i64;
    loop {
        let message = batches.next().await;
        let done = message.is_none();
        if let Some(message) = message {
            let message = message.map_err(Error::Stream)?;
            if message.activities.len() > MAX_ROWS_PER_MESSAGE {
                return Err(ApiError::invalid(
                    "activities",
                    format!(
                        "at most {MAX_ROWS_PER_MESSAGE} rows per message; this message has {} \
                         (split it: the stream takes any number of messages)",
                        message.activities.len()
                    ),
                )
                .into());
            }
            for request in message.activities {
                match prepare(index, request) {
                    Ok(row) => pending.push(row),
                    Err(error) => tally.fail(row_error(index, error)),
                }
                index += 1;
            }
        }
        if pending.len() >= BATCH_ROWS || (done && !pending.is_empty()) {
            // Up to IN_FLIGHT batches are written at once while the stream goes on being read:
            // one batch's statements overlap another's encoding and scoring. Batches touching
            // the same lead queue on its row lock, as concurrent streams do.
            if writing.len() >= IN_FLIGHT
                && let Some(oldest) = writing.pop_front()
            {
                merge(&mut tally, join(oldest).await?);
            }
            let rows = std::mem::take(&mut pending);
            let store = store.clone();
            // The batch's database waits end by the call's deadline, as the call's own do.
            let answer_by = kizuna_db::deadline::answer_by();
            writing.push_back(tokio::spawn(
                kizuna_db::deadline::with_answer_by(answer_by, async move {
                    write_batch(&store, rows).await
                })
                .in_current_span(),
            ));
        }
        if done {
            break;
        }
    }
    while let Some(batch) = writing.pop_front() {
        merge(&mut tally, join(batch).await?);
    }
    tally.keep_first_failures();
    Ok(tally.response)
}

async fn join(handle: tokio::task::JoinHandle<Result<Tally, ApiError>>) -> Result<Tally, ApiError> {
    handle
        .await
        .map_err(|e| ApiError::Internal(format!("ingest batch task failed: {e}")))?
}

fn merge(into: &mut Tally, batch: Tally) {
    into.response.accepted_count += batch.response.accepted_count;
    into.response.replayed_count += batch.response.replayed_count;
    into.response.qualified_count += batch.response.qualified_count;
    into.response.failed_count += batch.response.failed_count;
    for failure in batch.response.failures {
        into.list(failure);
    }
}

/// Writes one batch, retrying when a concurrent writer conflicted with it (the transaction was
/// rolled back). A lost connection is not retried here: whether its commit landed is unknown,
/// and rows without a request id would be recorded twice; the caller retries the call, and
/// rows with request ids replay.
async fn write_batch(store: &Store, rows: Vec<PendingRow>) -> Result<Tally, ApiError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_batch(store, rows.clone()).await {
            Err(error)
                if attempt < ATTEMPTS
                    && (is_conflict(&error) || matches!(error, ApiError::EtagMismatch { .. })) =>
            {
                tracing::debug!(attempt, "ingest batch conflicted; retrying");
            }
            other => return other,
        }
    }
}

async fn try_batch(store: &Store, mut rows: Vec<PendingRow>) -> Result<Tally, ApiError> {
    let mut tally = Tally::default();
    let mut tx = store.begin().await?;

    // Replays: request ids recorded before, or repeated within this batch.
    let ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    let seen = tx.recall_many::<Activity>(METHOD, &ids).await?;
    let mut in_batch = HashSet::new();
    rows.retain(|row| {
        let replay = !row.request_id.is_empty()
            && (seen.contains_key(&row.request_id) || !in_batch.insert(row.request_id.clone()));
        if replay {
            tally.response.replayed_count += 1;
        }
        !replay
    });

    // The leads, locked in name order; names of merged-away leads lead to the survivor.
    let mut parents: Vec<String> = rows.iter().map(|r| r.parent.clone()).collect();
    parents.sort_unstable();
    parents.dedup();
    let mut leads = tx.get_many::<Leads>(&parents).await?;
    let missing: Vec<String> = parents
        .iter()
        .filter(|p| !leads.contains_key(*p))
        .cloned()
        .collect();
    let redirects = redirect_targets(&mut tx, &missing).await?;
    if !redirects.is_empty() {
        let targets: Vec<String> = redirects.values().cloned().collect();
        leads.extend(tx.get_many::<Leads>(&targets).await?);
    }
    let mut found = Vec::with_capacity(rows.len());
    for row in rows {
        let parent = redirects.get(&row.parent).unwrap_or(&row.parent);
        if leads.contains_key(parent) {
            found.push((parent.clone(), row));
        } else {
            let error = ApiError::NotFound {
                kind: "Lead",
                name: row.parent.clone(),
            };
            tally.fail(row_error(row.index, error));
        }
    }

    // Claim the request ids; those a concurrent call recorded meanwhile are replays.
    let ids: Vec<&str> = found.iter().map(|(_, r)| r.request_id.as_str()).collect();
    let claimed = tx.claim_many(METHOD, &ids).await?;
    let mut inserts = Vec::with_capacity(found.len());
    let mut recorded_rows = Vec::with_capacity(found.len());
    for (parent, row) in found {
        if !row.request_id.is_empty() && !claimed.contains(&row.request_id) {
            tally.response.replayed_count += 1;
            continue;
        }
        inserts.push((parent, String::new(), row.activity));
        recorded_rows.push(row.request_id);
    }
    let created = tx.insert_many::<Activities>(inserts).await?;
    let mut by_lead: HashMap<String, Vec<Activity>> = HashMap::new();
    for activity in &created {
        let parent = kizuna_store::parse_name::<Activities>(&activity.name)
            .map(|p| p.parent.to_owned())
            .unwrap_or_default();
        by_lead.entry(parent).or_default().push(activity.clone());
    }
    let touched: Vec<Lead> = {
        let mut names: Vec<&String> = by_lead.keys().collect();
        names.sort();
        names
            .into_iter()
            .filter_map(|name| leads.get(name).cloned())
            .collect()
    };
    let model = scoring::published_model(tx.conn()).await?;
    let cause = apply::Cause {
        cause: scoring::ACTIVITY_CAUSE,
        engage: true,
    };
    let outcomes = apply::apply(
        &mut tx,
        touched,
        &by_lead,
        model.as_ref(),
        apply::Rescore::Incremental,
        cause,
    )
    .await?;

    let answers: Vec<(&str, &Activity)> = recorded_rows
        .iter()
        .zip(&created)
        .filter(|(id, _)| !id.is_empty())
        .map(|(id, activity)| (id.as_str(), activity))
        .collect();
    tx.answer_claims(METHOD, &answers).await?;
    tally.response.qualified_count += outcomes
        .iter()
        .filter(|outcome| outcome.events.contains(&"qualified"))
        .count() as i64;
    scoring::emit_all(&mut tx, &outcomes).await?;
    tx.commit().await?;
    tally.response.accepted_count += created.len() as i64;
    Ok(tally)
}

/// Where the names of merged-away leads among `names` lead now.
async fn redirect_targets(
    tx: &mut WriteTx<'_>,
    names: &[String],
) -> Result<HashMap<String, String>, ApiError> {
    let mut targets = HashMap::new();
    if names.is_empty() {
        return Ok(targets);
    }
    let db = tx.db().clone();
    for range in
        kizuna_store::bulk::statements(tx.db().statement_bytes(), names, 1, |name| name.len() + 8)
    {
        let mut sql =
            kizuna_store::Sql::new("SELECT name, target FROM lead_redirects WHERE name IN (");
        for (i, name) in names[range].iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(name.as_str());
        }
        sql.push(")");
        let rows = sql
            .query()
            .fetch_all(tx.conn())
            .instrument(kizuna_store::db_span(&db, "SELECT", "lead_redirects"))
            .await
            .map_err(db_error)?;
        for row in rows {
            let name: String = row.try_get(0).map_err(db_error)?;
            let target: String = row.try_get(1).map_err(db_error)?;
            targets.insert(name, target);
        }
    }
    Ok(targets)
}
