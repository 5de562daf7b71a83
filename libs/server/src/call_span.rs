//! The end of an RPC's span: when the response body ends, not when its headers are sent.
//!
//! [`CallEnd`] holds the call's span, and [`TracedBody`] wraps the response body so that every
//! poll of it runs inside the span (a stream's database reads are children of the call) and the
//! call is finished once: with the `grpc-status` of the trailers when the body ends, with the
//! status of a trailers-only response, or, when the body is dropped before its end (the client
//! went away or its deadline passed), with CANCELLED or DEADLINE_EXCEEDED. Finishing records
//! `rpc.response.status_code`, the span status and the `rpc.server.call.duration` point; the
//! span ends when the body is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use tonic::Code;

use crate::layer::code_name;

/// What is needed to finish one call.
#[derive(Debug)]
pub(crate) struct CallEnd {
    span: tracing::Span,
    service: &'static str,
    method: String,
    started: Instant,
    deadline: Option<Duration>,
}

/// Whether a server span with `code` failed, per the RPC conventions (the client's own errors,
/// such as NOT_FOUND or INVALID_ARGUMENT, leave a server span unset).
fn server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// The deadline a client asked for in `grpc-timeout` (e.g. `1500m`), if any and well formed.
pub(crate) fn requested_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

impl CallEnd {
    /// A call of `method` on `service` traced by `span`, started at `started`.
    pub(crate) fn new(
        span: tracing::Span,
        service: &'static str,
        method: String,
        started: Instant,
        deadline: Option<Duration>,
    ) -> Self {
        Self {
            span,
            service,
            method,
            started,
            deadline,
        }
    }

    /// Records the call's status and duration; call it inside the span, once.
    pub(crate) fn finish(&self, code: Code) {
        let name = code_name(code);
        self.span.record("rpc.response.status_code", name);
        if code != Code::Ok {
            self.span.record("error.type", name);
        }
        if server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        kizuna_telemetry::metrics::record_server_call(
            self.service,
            &self.method,
            name,
            self.started.elapsed(),
        );
    }

    /// The status of a body dropped before its end: the deadline passed, or the client left.
    fn cut_short(&self) -> Code {
        match self.deadline {
            Some(deadline) if self.started.elapsed() >= deadline => Code::DeadlineExceeded,
            _ => Code::Cancelled,
        }
    }

    /// The span.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }
}

/// A response body that finishes its call when it ends or is dropped.
pub(crate) struct TracedBody {
    inner: tonic::body::Body,
    /// The call, until it is finished.
    call: Option<CallEnd>,
    /// The status a trailers-only response carried in its headers.
    header_code: Option<Code>,
}

impl TracedBody {
    /// Wraps the body of `response`, which answers the call `call`.
    pub(crate) fn wrap(
        response: http::Response<tonic::body::Body>,
        call: CallEnd,
    ) -> http::Response<tonic::body::Body> {
        let header_code = tonic::Status::from_header_map(response.headers()).map(|s| s.code());
        response.map(|inner| {
            tonic::body::Body::new(TracedBody {
                inner,
                call: Some(call),
                header_code,
            })
        })
    }

    fn finish(&mut self, code: Code) {
        if let Some(call) = self.call.take() {
            let _inside = call.span().enter();
            call.finish(code);
        }
    }
}

impl Body for TracedBody {
    type Data = <tonic::body::Body as Body>::Data;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = match &this.call {
            Some(call) => {
                let _inside = call.span().enter();
                Pin::new(&mut this.inner).poll_frame(cx)
            }
            None => Pin::new(&mut this.inner).poll_frame(cx),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code =
                        tonic::Status::from_header_map(trailers).map_or(Code::Ok, |s| s.code());
                    this.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => this.finish(status.code()),
            Poll::Ready(None) => {
                let code = this.header_code.unwrap_or(Code::Ok);
                this.finish(code);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TracedBody {
    fn drop(&mut self) {
        let Some(call) = &self.call else {
            return;
        };
        let code = match self.header_code {
            // A trailers-only response (an error, or a stream that ended at once) is complete.
            Some(code) => code,
            None if self.inner.is_end_stream() => Code::Ok,
            None => call.cut_short(),
        };
        self.finish(code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(requested_timeout(&headers), None);
        for (value, expected) in [
            ("1500m", Duration::from_millis(1500)),
            ("2S", Duration::from_secs(2)),
            ("1H", Duration::from_secs(3600)),
            ("10u", Duration::from_micros(10)),
        ] {
            headers.insert("grpc-timeout", value.parse().expect("header"));
            assert_eq!(requested_timeout(&headers), Some(expected), "{value}");
        }
        for bad in ["", "m", "12x", "-1S"] {
            headers.insert("grpc-timeout", bad.parse().expect("header"));
            assert_eq!(requested_timeout(&headers), None, "{bad}");
        }
    }
}
