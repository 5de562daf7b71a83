//! What the service knows about its database being reachable, shared by the calls and the health
//! probe.
//!
//! A failure to get a working connection (from a call or from the probe) starts an outage; a
//! success ends it. Each outage is logged twice: a WARN with its cause when it starts and an INFO
//! with its length when it ends, never once per failed call. While the last failure is less than
//! [`FAIL_FAST_WINDOW`] old, calls are refused at once instead of each waiting for a connection
//! that will not come; one call per window (and every health probe) still tries the database,
//! so a recovery is seen within about a window.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How long after a failure calls are refused without trying the database.
pub const FAIL_FAST_WINDOW: Duration = Duration::from_secs(1);

/// The shared outage state of one database (cheap to clone).
#[derive(Clone, Debug)]
pub struct Outage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    namespace: String,
    down: AtomicBool,
    refused: AtomicU64,
    /// When a connection last worked, in microseconds after `created`.
    answered: AtomicU64,
    created: Instant,
    state: Mutex<State>,
    reachable: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct State {
    /// When the current outage started.
    since: Option<Instant>,
    /// The last failure, or the last call let through to try the database.
    last_attempt: Option<Instant>,
}

impl Outage {
    /// A tracker for the database `namespace` (named in its log lines), reachable so far.
    pub fn new(namespace: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                namespace: namespace.to_owned(),
                down: AtomicBool::new(false),
                refused: AtomicU64::new(0),
                answered: AtomicU64::new(0),
                created: Instant::now(),
                state: Mutex::new(State::default()),
                reachable: watch::channel(true).0,
            }),
        }
    }

    /// Whether an outage is under way.
    pub fn is_down(&self) -> bool {
        self.inner.down.load(Ordering::Acquire)
    }

    /// A receiver of `true` while the database is reachable, `false` during an outage.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.reachable.subscribe()
    }

    /// Whether a call may try the database now: always outside an outage; during one, only the
    /// first call after [`FAIL_FAST_WINDOW`] without a failure (the others are refused at once
    /// and counted).
    pub fn admit(&self) -> bool {
        if !self.is_down() {
            return true;
        }
        let mut state = self.state();
        if state.since.is_none() {
            return true;
        }
        let now = Instant::now();
        if state
            .last_attempt
            .is_none_or(|at| now.duration_since(at) >= FAIL_FAST_WINDOW)
        {
            // This call tries; the next ones are refused until its outcome (or the next window).
            state.last_attempt = Some(now);
            return true;
        }
        self.inner.refused.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Records that no working connection could be had; starts an outage (logged once, with
    /// `cause`) unless one is under way.
    pub fn record_failure(&self, cause: &dyn Display) {
        let mut state = self.state();
        let now = Instant::now();
        state.last_attempt = Some(now);
        if state.since.is_none() {
            state.since = Some(now);
            self.inner.refused.store(0, Ordering::Relaxed);
            self.inner.down.store(true, Ordering::Release);
            self.inner.reachable.send_replace(false);
            tracing::warn!(
                db.namespace = %self.inner.namespace,
                error.message = %cause,
                "database unreachable: health is NOT_SERVING"
            );
        }
    }

    /// Whether a connection worked at `since` or later: a probe that timed out meanwhile met a
    /// slow database, not an unreachable one.
    pub fn answered_since(&self, since: Instant) -> bool {
        let answered = Duration::from_micros(self.inner.answered.load(Ordering::Acquire));
        self.inner.created + answered >= since
    }

    /// Records a working connection; ends the outage under way (logged once).
    pub fn record_success(&self) {
        let micros = u64::try_from(self.inner.created.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.inner.answered.fetch_max(micros, Ordering::AcqRel);
        if !self.is_down() {
            return;
        }
        let mut state = self.state();
        let Some(since) = state.since.take() else {
            return;
        };
        state.last_attempt = None;
        self.inner.down.store(false, Ordering::Release);
        self.inner.reachable.send_replace(true);
        tracing::info!(
            db.namespace = %self.inner.namespace,
            outage_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
            refused_calls = self.inner.refused.load(Ordering::Relaxed),
            "database reachable again: health is SERVING"
        );
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_refuses_calls_but_lets_one_try_per_window() {
        let outage = Outage::new("test");
        let reachable = outage.subscribe();
        assert!(outage.admit() && outage.admit(), "up: every call tries");
        outage.record_failure(&"connection refused");
        assert!(outage.is_down());
        assert!(!*reachable.borrow());
        assert!(!outage.admit(), "just failed: refused at once");
        {
            let mut state = outage.state();
            state.last_attempt = Some(Instant::now() - FAIL_FAST_WINDOW);
        }
        assert!(outage.admit(), "a window later one call tries");
        assert!(!outage.admit(), "and the next ones wait for it");
        outage.record_success();
        assert!(!outage.is_down());
        assert!(*reachable.borrow());
        assert!(outage.admit());
        let later = Instant::now() + Duration::from_secs(1);
        assert!(!outage.answered_since(later));
        outage.record_success();
        assert!(outage.answered_since(Instant::now() - Duration::from_millis(100)));
    }
}
