//! The tower layer in front of every Kizuna service: one span per RPC and the bearer-token check.
//!
//! The span follows the OpenTelemetry RPC conventions (`rpc.system.name = "grpc"`,
//! `rpc.method = "pkg.Service/Method"`, `rpc.response.status_code = "NOT_FOUND"`), continues the
//! caller's W3C trace context, belongs to the service (its resource, see
//! [`kizuna_telemetry::route`]) and records the trace id so log lines carry it. It lasts until
//! the response body ends, so a stream's span covers the whole stream ([`crate::call_span`]).
//! Health checks and
//! reflection are neither traced nor authorized. A refused call gets UNAUTHENTICATED or
//! PERMISSION_DENIED before it reaches the service; an accepted one carries the caller's
//! [`Principal`](kizuna_auth::Principal) in its extensions.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use kizuna_auth::{AuthError, Authenticator, required_scope};
use tonic::Code;
use tracing::Instrument;

use crate::call_span::{CallEnd, TracedBody, requested_timeout};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Adds [`Rpc`] to a service.
#[derive(Clone, Debug)]
pub struct RpcLayer {
    service: &'static str,
    authenticator: Arc<Authenticator>,
}

impl RpcLayer {
    /// A layer for `service`, verifying tokens with `authenticator`.
    pub fn new(service: &'static str, authenticator: Arc<Authenticator>) -> Self {
        Self {
            service,
            authenticator,
        }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rpc {
            inner,
            service: self.service,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// Traces and authorizes each call before passing it on.
#[derive(Clone, Debug)]
pub struct Rpc<S> {
    inner: S,
    service: &'static str,
    authenticator: Arc<Authenticator>,
}

/// The UPPER_SNAKE_CASE name of a gRPC code, as the RPC conventions record it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn refusal(error: AuthError) -> tonic::Status {
    match error {
        AuthError::MissingScope(scope) => {
            tonic::Status::permission_denied(format!("the token lacks the `{scope}` scope"))
        }
        other => tonic::Status::unauthenticated(other.to_string()),
    }
}

impl<S, B> tower::Service<http::Request<B>> for Rpc<S>
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

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The ready inner service is the one to call; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_owned();
        let Some(scope) = required_scope(&path) else {
            return Box::pin(inner.call(request));
        };
        let method = path.trim_start_matches('/').to_owned();
        let started = std::time::Instant::now();
        let span = tracing::info_span!(
            "rpc",
            otel.name = %method,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system.name = "grpc",
            rpc.method = %method,
            rpc.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            kizuna.service = self.service,
            enduser.id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        let _ = span.set_parent(kizuna_telemetry::in_service(
            kizuna_telemetry::propagation::extract_from_headers(request.headers()),
            self.service,
        ));
        let trace_id = kizuna_telemetry::propagation::trace_id_of(&span);
        span.record("trace_id", trace_id.as_str());
        let call = CallEnd::new(
            span.clone(),
            self.service,
            method.clone(),
            started,
            requested_timeout(request.headers()),
        );

        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match self.authenticator.authorize(authorization, &scope) {
            Ok(principal) => {
                span.record("enduser.id", principal.subject.as_str());
                request.extensions_mut().insert(principal);
            }
            Err(error) => {
                let status = refusal(error);
                span.in_scope(|| {
                    tracing::debug!(
                        name: "kizuna.rpc.refused",
                        code = code_name(status.code()),
                        reason = status.message(),
                        "call refused"
                    );
                    call.finish(status.code());
                });
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }

        let service = self.service;
        Box::pin(
            async move {
                let response =
                    crate::limits::resource_exhausted(inner.call(request).await?, service);
                Ok(TracedBody::wrap(response, call))
            }
            .instrument(span),
        )
    }
}
