//! Call deadlines: the caller's `grpc-timeout` bounds what the call waits for.
//!
//! [`DeadlineLayer`] runs each call that has a deadline inside
//! [`kizuna_db::deadline::with_answer_by`], so its database waits end a margin before the
//! caller gives up ([`kizuna_db::deadline::answer_margin`]) and it can still answer
//! UNAVAILABLE. When that instant comes and the call is still waiting while the database is
//! known to be down (e.g. a query on a connection that stopped answering), the layer answers
//! UNAVAILABLE itself; otherwise the call goes on until tonic cuts it at the deadline.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use kizuna_db::Outage;
use kizuna_db::deadline::{answer_by_for, with_answer_by};

/// Adds [`Deadline`] to a service.
#[derive(Clone, Debug)]
pub struct DeadlineLayer {
    domain: Arc<str>,
    outage: Option<Outage>,
}

impl DeadlineLayer {
    /// A layer for `service` (its error domain is `<service>.kizuna.dev`), answering for the
    /// database whose `outage` tracker is given.
    pub fn new(service: &str, outage: Option<Outage>) -> Self {
        Self {
            domain: format!("{service}.kizuna.dev").into(),
            outage,
        }
    }
}

impl<S> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            domain: self.domain.clone(),
            outage: self.outage.clone(),
        }
    }
}

/// Bounds a call's database waits by its deadline.
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    domain: Arc<str>,
    outage: Option<Outage>,
}

impl<S, B> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The ready inner service is the one to call; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(timeout) = grpc_timeout(request.headers()) else {
            return Box::pin(inner.call(request));
        };
        let answer_by = answer_by_for(timeout);
        let outage = self.outage.clone();
        let domain = self.domain.clone();
        Box::pin(async move {
            let call = with_answer_by(Some(answer_by), inner.call(request));
            tokio::pin!(call);
            tokio::select! {
                response = &mut call => return response,
                () = tokio::time::sleep_until(answer_by) => {}
            }
            if outage.as_ref().is_some_and(Outage::is_down) {
                let status = kizuna_store::database_unavailable().into_status(&domain);
                return Ok(status.into_http());
            }
            call.await
        })
    }
}

/// The caller's `grpc-timeout` (gRPC over HTTP/2: at most 8 digits and a unit of H, M, S, m, u
/// or n); `None` when absent or malformed.
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Option<Duration> {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "grpc-timeout",
            http::HeaderValue::from_str(value).expect("header"),
        );
        grpc_timeout(&headers)
    }

    #[test]
    fn grpc_timeouts_are_read() {
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1999m"), Some(Duration::from_millis(1999)));
        assert_eq!(parse("3H"), Some(Duration::from_secs(3 * 3600)));
        assert_eq!(parse("5M"), Some(Duration::from_secs(300)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "123456789S", "2s", "-2S", "2 S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }
}
