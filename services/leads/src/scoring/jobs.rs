//! Rescoring jobs: publishing a scoring model (or changing a published one) rescores every lead
//! under it, as a long-running, resumable job (`rescoringJobs/{job}`).
//!
//! [`start`] runs inside the transaction that publishes the model: it supersedes any running
//! job and inserts a RUNNING one with the number of leads as its progress denominator. The
//! runner ([`Runner::spawn`], one per replica) claims a RUNNING job with a lease, then walks the
//! leads in id order, [`Settings::leads`]`.rescoring_chunk_size` at a time. Each chunk is one
//! transaction: the job row is read for change (so a superseding publication or another
//! replica waits), the chunk's leads are locked and rescored by [`apply::apply`] (state rebuilt
//! from their counted activities, MQL crossings recorded with cause `rescoring` and
//! `lead.qualified` emitted), and the job's cursor and counters move forward — all committed
//! together. A job interrupted anywhere (shutdown, crash, lost lease) therefore resumes after
//! its last committed chunk and scores every lead exactly once: `leads_scored` counts the leads
//! whose rescoring committed. A clean shutdown releases the lease so another process resumes at
//! once; after a crash the lease expires after [`LEASE`].
//!
//! [`Settings::leads`]: kizuna_settings::Settings

use std::time::Duration;

use kizuna_errors::ApiError;
use kizuna_proto::leads::{Lead, RescoringJob, ScoringModel, rescoring_job};
use kizuna_settings::LeadsSettings;
use kizuna_store::{Store, Worker, WriteTx, db_error, db_span};
use prost::Message;
use sqlx::Row;
use tokio::sync::{Notify, watch};
use tracing::Instrument;

use crate::scoring::{self, apply};
use crate::tables::{Leads, RescoringJobs, ScoringModels};

/// How long a claimed job stays claimed without progress.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often an idle runner looks for work (it is also woken by publications in-process).
const IDLE_POLL: Duration = Duration::from_secs(2);
/// Cause recorded for stage changes made by a rescoring job.
pub const RESCORING_CAUSE: &str = "rescoring";

fn now() -> i64 {
    kizuna_db::now_micros()
}

/// Inside the transaction publishing `model` (already stored at its new revision): supersedes
/// running jobs and starts one for `model`. Returns the new job.
pub async fn start(tx: &mut WriteTx<'_>, model: &ScoringModel) -> Result<RescoringJob, ApiError> {
    let db = tx.db().clone();
    let running: Vec<String> =
        sqlx::query("SELECT id FROM rescoring_jobs WHERE parent = $1 AND state = $2 ORDER BY id")
            .bind("")
            .bind("RUNNING")
            .fetch_all(tx.conn())
            .instrument(db_span(&db, "SELECT", "rescoring_jobs"))
            .await
            .map_err(db_error)?
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map_err(db_error)?;
    for id in running {
        let mut job = tx
            .get::<RescoringJobs>(&format!("rescoringJobs/{id}"))
            .await?;
        job.state = rescoring_job::State::Superseded as i32;
        job.end_time = Some(kizuna_store::time::to_timestamp(now()));
        let job = tx.replace::<RescoringJobs>(job).await?;
        tx.emit::<RescoringJobs>("superseded", &job).await?;
    }
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM leads")
        .fetch_one(tx.conn())
        .instrument(db_span(&db, "SELECT", "leads"))
        .await
        .map_err(db_error)?;
    let job = RescoringJob {
        scoring_model: model.name.clone(),
        scoring_model_revision: model.revision,
        state: rescoring_job::State::Running as i32,
        leads_total: total,
        progress_percent: if total == 0 { 100.0 } else { 0.0 },
        ..Default::default()
    };
    let job = tx.insert::<RescoringJobs>("", "", job).await?;
    tx.emit::<RescoringJobs>("created", &job).await?;
    Ok(job)
}

/// Whether storing `model` over `before` (None: a new model) publishes a revision that needs
/// rescoring: it is published now and was not, or its scoring changed while published.
pub fn needs_rescoring(before: Option<&ScoringModel>, model: &ScoringModel) -> bool {
    let published = scoring_published(model);
    match before {
        None => published,
        Some(before) => {
            published
                && (!scoring_published(before)
                    || before.engagement_rules != model.engagement_rules
                    || before.fit_rules != model.fit_rules
                    || before.half_life_days != model.half_life_days
                    || before.mql_score_threshold != model.mql_score_threshold
                    || before.mql_min_grade != model.mql_min_grade)
        }
    }
}

fn scoring_published(model: &ScoringModel) -> bool {
    model.state == kizuna_proto::leads::scoring_model::State::Published as i32
}

/// The background runner of this replica, woken by `wake` (publications) or every few seconds.
#[derive(Clone, Debug)]
pub struct Runner {
    store: Store,
    settings: LeadsSettings,
    owner: String,
    wake: std::sync::Arc<Notify>,
}

impl Runner {
    /// A runner over `store`.
    pub fn new(store: Store, settings: LeadsSettings) -> Self {
        Self {
            store,
            settings,
            owner: uuid::Uuid::now_v7().to_string(),
            wake: std::sync::Arc::new(Notify::new()),
        }
    }

    /// Wakes the runner (a job was started).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The worker that runs jobs until the store's `stopping` turns true; it releases a
    /// claimed job on the way out. Jobs carry their own leases (one runner per job at a time,
    /// each chunk checks the lease in its transaction), so every replica runs one.
    pub fn worker(self) -> Worker {
        let mut stopping = self.store.stopping();
        Worker::new("leads.rescoring-runner", async move {
            loop {
                if *stopping.borrow() {
                    return;
                }
                match self.claim().await {
                    Ok(Some(job)) => {
                        if let Err(error) = self.run(&job, &mut stopping).await {
                            tracing::warn!(%error, job = %job, "rescoring chunk failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        let _ = self.release(&job).await;
                        continue;
                    }
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "looking for rescoring jobs failed"),
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stopping.changed() => {}
                }
            }
        })
    }

    /// Claims the oldest RUNNING job whose lease is free or expired; its id.
    async fn claim(&self) -> Result<Option<String>, ApiError> {
        let db = self.store.db();
        let now = now();
        let candidates = sqlx::query(
            "SELECT id FROM rescoring_jobs WHERE parent = $1 AND state = $2 \
             AND (lease_owner = $3 OR lease_owner = $4 OR lease_expire < $5) \
             ORDER BY create_time LIMIT 1",
        )
        .bind("")
        .bind("RUNNING")
        .bind("")
        .bind(self.owner.as_str())
        .bind(now)
        .fetch_optional(db.pool())
        .instrument(db_span(db, "SELECT", "rescoring_jobs"))
        .await
        .map_err(db_error)?;
        let Some(row) = candidates else {
            return Ok(None);
        };
        let id: String = row.try_get(0).map_err(db_error)?;
        let claimed = sqlx::query(
            "UPDATE rescoring_jobs SET lease_owner = $1, lease_expire = $2 \
             WHERE parent = $3 AND id = $4 AND state = $5 \
             AND (lease_owner = $6 OR lease_owner = $1 OR lease_expire < $7)",
        )
        .bind(self.owner.as_str())
        .bind(now + lease_micros())
        .bind("")
        .bind(id.as_str())
        .bind("RUNNING")
        .bind("")
        .bind(now)
        .execute(db.pool())
        .instrument(db_span(db, "UPDATE", "rescoring_jobs"))
        .await
        .map_err(db_error)?;
        Ok((claimed.rows_affected() == 1).then_some(id))
    }

    /// Gives a claimed job back (so another process can resume it at once).
    async fn release(&self, id: &str) -> Result<(), ApiError> {
        let db = self.store.db();
        sqlx::query(
            "UPDATE rescoring_jobs SET lease_owner = $1, lease_expire = 0 \
             WHERE parent = $2 AND id = $3 AND lease_owner = $4",
        )
        .bind("")
        .bind("")
        .bind(id)
        .bind(self.owner.as_str())
        .execute(db.pool())
        .instrument(db_span(db, "UPDATE", "rescoring_jobs"))
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Runs chunks of the claimed job `id` until it ends, the lease is lost or `stopping`.
    async fn run(&self, id: &str, stopping: &mut watch::Receiver<bool>) -> Result<(), ApiError> {
        let pause = Duration::from_millis(self.settings.rescoring_pause_ms);
        loop {
            if *stopping.borrow() {
                return Ok(());
            }
            // Each chunk is one unit of background work (a root span); claiming and releasing
            // the lease are bookkeeping outside it, so an idle poll leaves no trace.
            let chunk = kizuna_telemetry::work_span(crate::SERVICE, "leads.rescoring_chunk");
            if !self.chunk(id).instrument(chunk).await? {
                return Ok(());
            }
            if !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stopping.changed() => {}
                }
            }
        }
    }

    /// Rescores the next chunk of job `id`; whether the job goes on.
    #[tracing::instrument(skip(self), fields(job = %id))]
    async fn chunk(&self, id: &str) -> Result<bool, ApiError> {
        let mut tx = self.store.begin().await?;
        let name = format!("rescoringJobs/{id}");
        let mut job = tx.get::<RescoringJobs>(&name).await?;
        let db = tx.db().clone();
        let row = sqlx::query(
            "SELECT cursor, lease_owner FROM rescoring_jobs WHERE parent = $1 AND id = $2",
        )
        .bind("")
        .bind(id)
        .fetch_one(tx.conn())
        .instrument(db_span(&db, "SELECT", "rescoring_jobs"))
        .await
        .map_err(db_error)?;
        let cursor: String = row.try_get(0).map_err(db_error)?;
        let owner: String = row.try_get(1).map_err(db_error)?;
        if job.state != rescoring_job::State::Running as i32 || owner != self.owner {
            return Ok(false);
        }
        // Read without a lock: a publication locks the model and then this job's row, so
        // locking them the other way round here could deadlock; it waits for this chunk and
        // then supersedes the job.
        let model = match read_model(&mut tx, &job.scoring_model).await {
            Ok(Some(model)) if model.revision == job.scoring_model_revision => model,
            // The model changed or went away without a new publication: nothing to score with.
            _ => {
                job.state = rescoring_job::State::Superseded as i32;
                job.end_time = Some(kizuna_store::time::to_timestamp(now()));
                let job = tx.replace::<RescoringJobs>(job).await?;
                tx.emit::<RescoringJobs>("superseded", &job).await?;
                tx.commit().await?;
                return Ok(false);
            }
        };
        let lock = db.for_update();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT data FROM leads WHERE parent = $1 AND id > $2 ORDER BY id LIMIT $3{lock}"
        )))
        .bind("")
        .bind(cursor.as_str())
        .bind(i64::from(self.settings.rescoring_chunk_size))
        .fetch_all(tx.conn())
        .instrument(db_span(&db, "SELECT", "leads"))
        .await
        .map_err(db_error)?;
        let leads: Vec<Lead> = rows
            .iter()
            .map(|row| {
                let data: Vec<u8> = row.try_get(0).map_err(db_error)?;
                Lead::decode(data.as_slice())
                    .map_err(|e| ApiError::Internal(format!("stored Lead is corrupt: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let now = now();
        let Some(last) = leads.last() else {
            job.state = rescoring_job::State::Succeeded as i32;
            job.progress_percent = 100.0;
            job.end_time = Some(kizuna_store::time::to_timestamp(now));
            let job = tx.replace::<RescoringJobs>(job).await?;
            tx.emit::<RescoringJobs>("succeeded", &job).await?;
            tx.commit().await?;
            tracing::info!(job = %job.name, scored = job.leads_scored, qualified = job.leads_qualified, "rescoring job succeeded");
            return Ok(false);
        };
        let next_cursor = kizuna_store::parse_name::<Leads>(&last.name)
            .map(|p| p.id.to_owned())
            .unwrap_or_default();
        let before: Vec<(f64, String)> = leads.iter().map(|l| (l.score, l.grade.clone())).collect();
        let count = leads.len() as i64;
        let cause = apply::Cause {
            cause: RESCORING_CAUSE,
            engage: false,
        };
        let outcomes = apply::apply(
            &mut tx,
            leads,
            &Default::default(),
            Some(&model),
            apply::Rescore::RebuildRange,
            cause,
        )
        .await?;
        let changed = outcomes
            .iter()
            .zip(&before)
            .filter(|(o, (score, grade))| {
                (o.lead.score - score).abs() >= scoring::SCORE_EPSILON || o.lead.grade != *grade
            })
            .count() as i64;
        let qualified = outcomes
            .iter()
            .filter(|o| o.events.contains(&"qualified"))
            .count() as i64;
        job.leads_scored += count;
        job.leads_changed += changed;
        job.leads_qualified += qualified;
        job.progress_percent = if job.leads_total > 0 {
            (job.leads_scored as f64 * 100.0 / job.leads_total as f64).min(99.9)
        } else {
            99.9
        };
        let job = tx.replace::<RescoringJobs>(job).await?;
        sqlx::query(
            "UPDATE rescoring_jobs SET cursor = $1, lease_expire = $2 WHERE parent = $3 AND id = $4",
        )
        .bind(next_cursor)
        .bind(now + lease_micros())
        .bind("")
        .bind(id)
        .execute(tx.conn())
        .instrument(db_span(&db, "UPDATE", "rescoring_jobs"))
        .await
        .map_err(db_error)?;
        scoring::emit_all(&mut tx, &outcomes).await?;
        tx.commit().await?;
        tracing::debug!(job = %job.name, scored = job.leads_scored, "rescoring chunk committed");
        Ok(true)
    }
}

/// The stored model `name`, read without locking it.
async fn read_model(tx: &mut WriteTx<'_>, name: &str) -> Result<Option<ScoringModel>, ApiError> {
    let Some(parsed) = kizuna_store::parse_name::<ScoringModels>(name) else {
        return Ok(None);
    };
    let db = tx.db().clone();
    let row = sqlx::query("SELECT data FROM scoring_models WHERE parent = $1 AND id = $2")
        .bind(parsed.parent)
        .bind(parsed.id)
        .fetch_optional(tx.conn())
        .instrument(db_span(&db, "SELECT", "scoring_models"))
        .await
        .map_err(db_error)?;
    row.map(|row| {
        let data: Vec<u8> = row.try_get(0).map_err(db_error)?;
        ScoringModel::decode(data.as_slice())
            .map_err(|e| ApiError::Internal(format!("stored ScoringModel is corrupt: {e}")))
    })
    .transpose()
}

fn lease_micros() -> i64 {
    i64::try_from(LEASE.as_micros()).unwrap_or(i64::MAX)
}
