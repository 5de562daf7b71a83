//! Leases: one holder per deployment for work that must not run twice at once (the score
//! flusher, rescoring runners, backfills, the lifecycle reactor).
//!
//! A lease is a row of `worker_leases` in the service's own database: a name, its holder (one
//! id per process), a fencing token and an expiry. A process takes a lease that is free or
//! expired, which bumps the token; it renews it every [`LeaseSettings::renew_every`]; a clean
//! stop releases it so a stand-by takes over at once, and a dead holder's lease is taken over
//! after [`LeaseSettings::ttl`] (at most `ttl + retry_every` after the death).
//!
//! Fencing: every write transaction of leased work calls [`Fence::check`], which fails unless
//! the lease still names this holder with this token, and on PostgreSQL share-locks the lease
//! row so a takeover waits until that transaction has ended. A holder that lost its lease (it
//! stalled past the expiry and another took over) therefore writes nothing more, even before
//! it notices. Expiry uses each process's clock: keep replicas' clocks within a second or two
//! (NTP), far below the default 6 s time to live.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kizuna_db::{Backend, Database};
use kizuna_errors::ApiError;
use tokio::sync::watch;
use tracing::Instrument;

use crate::worker::Worker;
use crate::{Store, WriteTx, db_error, db_span};

/// How long leases live and how often they are renewed and retried.
#[derive(Clone, Copy, Debug)]
pub struct LeaseSettings {
    /// How long a lease lasts without renewal.
    pub ttl: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
    /// How often a stand-by tries to take the lease.
    pub retry_every: Duration,
}

impl Default for LeaseSettings {
    /// 6 s to live, renewed every 2 s, retried every 2 s: a stand-by takes over within 8 s of
    /// the holder's death, at once after a clean stop.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(6),
            renew_every: Duration::from_secs(2),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// One named lease, seen from one process.
#[derive(Clone, Debug)]
pub struct Lease {
    db: Database,
    name: Arc<str>,
    holder: Arc<str>,
    settings: LeaseSettings,
}

/// Proof of holding a lease, for the writes of the work it guards.
#[derive(Clone, Debug)]
pub struct Fence {
    name: Arc<str>,
    holder: Arc<str>,
    token: i64,
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

impl Lease {
    /// The lease `name` in `db`, held (when it is) as `holder`, which must be unique per
    /// process (e.g. a UUID made at start).
    pub fn new(db: Database, name: &str, holder: &str, settings: LeaseSettings) -> Self {
        Self {
            db,
            name: name.into(),
            holder: holder.into(),
            settings,
        }
    }

    /// Takes the lease if it is free or expired; the fence of the new holding if taken.
    pub async fn try_acquire(&self) -> Result<Option<Fence>, ApiError> {
        let now = kizuna_db::now_micros();
        let expire = now.saturating_add(micros(self.settings.ttl));
        let token: Option<i64> = sqlx::query_scalar(
            "INSERT INTO worker_leases (name, holder, token, expire_time) VALUES ($1, $2, 1, $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                 token = worker_leases.token + 1, expire_time = excluded.expire_time
             WHERE worker_leases.expire_time < $4
             RETURNING token",
        )
        .bind(self.name.as_ref())
        .bind(self.holder.as_ref())
        .bind(expire)
        .bind(now)
        .fetch_optional(self.db.pool())
        .instrument(db_span(&self.db, "UPSERT", "worker_leases"))
        .await
        .map_err(db_error)?;
        Ok(token.map(|token| Fence {
            name: self.name.clone(),
            holder: self.holder.clone(),
            token,
        }))
    }

    /// Extends the holding `fence` proves; `false` when the lease is no longer ours.
    pub async fn renew(&self, fence: &Fence) -> Result<bool, ApiError> {
        let expire = kizuna_db::now_micros().saturating_add(micros(self.settings.ttl));
        self.expire_at(fence, expire).await
    }

    /// Gives the holding `fence` proves up (a stand-by may take the lease at once).
    pub async fn release(&self, fence: &Fence) -> Result<(), ApiError> {
        self.expire_at(fence, 0).await.map(|_| ())
    }

    /// Sets the expiry of the holding `fence` proves; `false` when the lease is no longer ours.
    async fn expire_at(&self, fence: &Fence, expire: i64) -> Result<bool, ApiError> {
        let result = sqlx::query(
            "UPDATE worker_leases SET expire_time = $1 WHERE name = $2 AND holder = $3 AND token = $4",
        )
        .bind(expire)
        .bind(self.name.as_ref())
        .bind(self.holder.as_ref())
        .bind(fence.token)
        .execute(self.db.pool())
        .instrument(db_span(&self.db, "UPDATE", "worker_leases"))
        .await
        .map_err(db_error)?;
        Ok(result.rows_affected() == 1)
    }

    /// Runs `body` whenever this process holds the lease, until `stopping`: waits as a
    /// stand-by, takes the lease, renews it while `body` runs, and drops `body` (cancelling it:
    /// an open transaction rolls back) the moment the lease is lost. `body` gets the
    /// [`Fence`] its writes must check; it is started again after each takeover.
    pub async fn hold<F, Fut>(self, mut stopping: watch::Receiver<bool>, mut body: F)
    where
        F: FnMut(Fence) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            if *stopping.borrow() {
                return;
            }
            let taken = self.try_acquire().await.unwrap_or_else(|error| {
                tracing::debug!(lease = %self.name, %error, "cannot take the lease now");
                None
            });
            let Some(fence) = taken else {
                tokio::select! {
                    _ = tokio::time::sleep(self.settings.retry_every) => {}
                    _ = async { let _ = stopping.wait_for(|stop| *stop).await; } => {}
                }
                continue;
            };
            let token = fence.token;
            tracing::info!(lease = %self.name, token, "lease taken");
            let mut renewed = tokio::time::Instant::now();
            let work = body(fence.clone());
            tokio::pin!(work);
            let mut tick = tokio::time::interval_at(
                renewed + self.settings.renew_every,
                self.settings.renew_every,
            );
            let lost = loop {
                tokio::select! {
                    () = &mut work => break false,
                    _ = tick.tick() => match self.renew(&fence).await {
                        Ok(true) => renewed = tokio::time::Instant::now(),
                        Ok(false) => break true,
                        Err(error) => {
                            if renewed.elapsed() >= self.settings.ttl {
                                tracing::warn!(lease = %self.name, %error, "cannot renew the lease");
                                break true;
                            }
                        }
                    },
                }
            };
            if lost {
                tracing::warn!(lease = %self.name, token, "lease lost; the work stops here");
                continue;
            }
            if let Err(error) = self.release(&fence).await {
                tracing::debug!(lease = %self.name, %error, "could not release the lease");
            }
            tracing::info!(lease = %self.name, token, "lease released");
        }
    }
}

impl Fence {
    /// The fencing token (grows with every takeover).
    pub fn token(&self) -> i64 {
        self.token
    }

    /// Inside `tx`: UNAVAILABLE unless the lease still names this holder and token. On
    /// PostgreSQL the lease row stays share-locked until `tx` ends, so no takeover commits in
    /// between; SQLite's write transactions already exclude every other writer.
    pub async fn check(&self, tx: &mut WriteTx<'_>) -> Result<(), ApiError> {
        let lock = match tx.db().backend() {
            Backend::Postgres => " FOR SHARE",
            Backend::Sqlite => "",
        };
        let db = tx.db().clone();
        let held = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM worker_leases WHERE name = $1 AND holder = $2 AND token = $3{lock}"
        )))
        .bind(self.name.as_ref())
        .bind(self.holder.as_ref())
        .bind(self.token)
        .fetch_optional(tx.conn())
        .instrument(db_span(&db, "SELECT", "worker_leases"))
        .await
        .map_err(db_error)?;
        if held.is_none() {
            return Err(ApiError::unavailable(format!(
                "lease {} (token {}) was taken over",
                self.name, self.token
            )));
        }
        Ok(())
    }
}

impl Worker {
    /// A worker that runs `body` only while this process holds the lease `name` in `store`'s
    /// database (see [`Lease::hold`]); it stops with the store's `stopping` signal.
    pub fn leased<F, Fut>(
        store: &Store,
        name: &'static str,
        settings: LeaseSettings,
        body: F,
    ) -> Worker
    where
        F: FnMut(Fence) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let lease = Lease::new(store.db().clone(), name, store.holder(), settings);
        Worker::new(name, lease.hold(store.stopping(), body))
    }
}
