//! The deadline of the call being served, so database waits end in time to answer it.
//!
//! The server layer reads the caller's `grpc-timeout` and runs the call inside
//! [`with_answer_by`]; [`Database::acquire`](crate::Database::acquire) then waits for a
//! connection at most until [`answer_by`], leaving the service [`answer_margin`] to send
//! UNAVAILABLE before the caller gives up. Work a call spawns onto other tasks carries the
//! instant along with [`with_answer_by`] again.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static ANSWER_BY: Instant;
}

/// Shortest time kept before a caller's deadline to send the answer.
pub const MIN_ANSWER_MARGIN: Duration = Duration::from_millis(50);
/// Longest time kept before a caller's deadline to send the answer.
pub const MAX_ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// How long before a deadline `timeout` away the service should answer: a fifth of it, within
/// [`MIN_ANSWER_MARGIN`] and [`MAX_ANSWER_MARGIN`]. Only waits for a connection are cut by it
/// (and calls still waiting while the database is known down), so a generous margin costs a
/// healthy call nothing, and it leaves room for a busy machine to send the answer in time.
pub fn answer_margin(timeout: Duration) -> Duration {
    (timeout / 5).clamp(MIN_ANSWER_MARGIN, MAX_ANSWER_MARGIN)
}

/// The instant a call received now with `timeout` should be answered by.
pub fn answer_by_for(timeout: Duration) -> Instant {
    Instant::now() + timeout.saturating_sub(answer_margin(timeout))
}

/// Runs `future` (the handling of one call) with `answer_by` as the instant its database waits
/// end by; `None` runs it without a bound (a call without a deadline).
pub async fn with_answer_by<F: Future>(answer_by: Option<Instant>, future: F) -> F::Output {
    match answer_by {
        Some(instant) => ANSWER_BY.scope(instant, future).await,
        None => future.await,
    }
}

/// The instant the call being served should be answered by, if it has a deadline.
pub fn answer_by() -> Option<Instant> {
    ANSWER_BY.try_with(|instant| *instant).ok()
}

/// How long a database wait may last now: `limit`, or less when the call must be answered
/// sooner.
pub fn wait_bound(limit: Duration) -> Duration {
    match answer_by() {
        Some(instant) => limit.min(instant.saturating_duration_since(Instant::now())),
        None => limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_a_fifth_within_bounds() {
        assert_eq!(
            answer_margin(Duration::from_secs(2)),
            Duration::from_millis(400)
        );
        assert_eq!(answer_margin(Duration::from_millis(100)), MIN_ANSWER_MARGIN);
        assert_eq!(answer_margin(Duration::from_secs(60)), MAX_ANSWER_MARGIN);
    }

    #[tokio::test]
    async fn waits_are_bounded_inside_a_call_only() {
        let limit = Duration::from_secs(5);
        assert_eq!(wait_bound(limit), limit);
        let bound = with_answer_by(Some(answer_by_for(Duration::from_secs(2))), async {
            wait_bound(limit)
        })
        .await;
        assert!(bound <= Duration::from_millis(1_600), "{bound:?}");
        assert!(bound > Duration::from_millis(1_300), "{bound:?}");
        assert_eq!(wait_bound(limit), limit, "the scope ended");
    }
}
