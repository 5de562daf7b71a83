//! Shutdown: one signal shared by the listener, the event streams and the health probe.

use tokio::sync::watch;

/// A cloneable shutdown switch.
#[derive(Clone, Debug)]
pub struct Shutdown {
    sender: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A switch in the running position.
    pub fn new() -> Self {
        Self {
            sender: watch::channel(false).0,
        }
    }

    /// Starts the shutdown (idempotent).
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// A receiver that turns true when shutdown starts.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.sender.subscribe()
    }

    /// Completes when shutdown starts.
    pub async fn wait(&self) {
        let mut receiver = self.sender.subscribe();
        let _ = receiver.wait_for(|stopping| *stopping).await;
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!(signal = "SIGINT", "signal received"),
        () = terminate => tracing::info!(signal = "SIGTERM", "signal received"),
    }
}
