//! Background workers: named futures a service runs beside its handlers, owned by a
//! [`Workers`] set that the start-up joins at shutdown within the grace period, so no work is
//! spawned and forgotten. A worker that must run once per deployment wraps its body with
//! [`Worker::leased`] (see [`crate::lease`]).

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::task::JoinSet;
use tracing::Instrument;

/// One named unit of background work. It must end by itself once its service's `stopping`
/// signal turns true.
pub struct Worker {
    name: &'static str,
    future: BoxFuture<'static, ()>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("name", &self.name).finish()
    }
}

impl Worker {
    /// A worker named `name` (for logs) that runs `future`.
    pub fn new(name: &'static str, future: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            name,
            future: Box::pin(future),
        }
    }

    /// The worker's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// The running workers of one service (or of its store).
#[derive(Debug, Default)]
pub struct Workers {
    set: Mutex<JoinSet<&'static str>>,
}

impl Workers {
    /// Starts `worker` on the runtime.
    pub fn spawn(&self, worker: Worker) {
        let Worker { name, future } = worker;
        let mut set = self
            .set
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        set.spawn(
            async move {
                future.await;
                name
            }
            .instrument(tracing::Span::none()),
        );
    }

    /// Starts every worker of `workers`.
    pub fn spawn_all(&self, workers: impl IntoIterator<Item = Worker>) {
        for worker in workers {
            self.spawn(worker);
        }
    }

    /// Waits for every worker to end (call it after the stop signal), at most `grace`; workers
    /// still running then are aborted and named in the log.
    pub async fn join(&self, grace: Duration) {
        let mut set = {
            let mut guard = self
                .set
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            std::mem::take(&mut *guard)
        };
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            match tokio::time::timeout_at(deadline, set.join_next()).await {
                Ok(None) => return,
                Ok(Some(Ok(name))) => tracing::debug!(worker = name, "worker stopped"),
                Ok(Some(Err(error))) if error.is_panic() => {
                    tracing::error!(%error, "a worker panicked");
                }
                Ok(Some(Err(_))) => {}
                Err(_) => {
                    tracing::warn!(
                        still_running = set.len(),
                        "workers did not stop within the grace period; aborting them"
                    );
                    set.abort_all();
                    while set.join_next().await.is_some() {}
                    return;
                }
            }
        }
    }
}
