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

/// The caller's `grpc-timeout`; `None` when absent or malformed.
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    parse_grpc_timeout(headers.get("grpc-timeout")?.to_str().ok()?)
}

/// Parses a `grpc-timeout` value (gRPC over HTTP/2: at most eight digits and a unit, one of
/// `H`, `M`, `S`, `m`, `u`, `n`). `None` when it is malformed.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(amount * 60 * 60),
        'M' => Duration::from_secs(amount * 60),
        'S' => Duration::from_secs(amount),
        'm' => Duration::from_millis(amount),
        'u' => Duration::from_micros(amount),
        'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The value grammar is tested with the gateway, which re-exports `parse_grpc_timeout`.
    #[test]
    fn the_header_is_read() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_timeout(&headers), None);
        headers.insert("grpc-timeout", http::HeaderValue::from_static("1999m"));
        assert_eq!(grpc_timeout(&headers), Some(Duration::from_millis(1999)));
        headers.insert("grpc-timeout", http::HeaderValue::from_static("2s"));
        assert_eq!(grpc_timeout(&headers), None);
    }
}
