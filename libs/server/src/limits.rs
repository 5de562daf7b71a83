//! Refusals of requests over the configured size, in the code gRPC clients expect.
//!
//! tonic refuses a request message over `server.max_request_bytes` with OUT_OF_RANGE ("decoded
//! message length too large") before the handler runs, as a trailers-only response; gRPC uses
//! RESOURCE_EXHAUSTED for it. [`resource_exhausted`] rewrites that status in the response
//! headers (see [`kizuna_errors::request_too_large`]) and leaves every other response alone.

/// `response` with tonic's oversized-message refusal turned into RESOURCE_EXHAUSTED naming the
/// limit; `service` gives the error domain (`leads` → `leads.kizuna.dev`).
pub(crate) fn resource_exhausted<B>(
    mut response: http::Response<B>,
    service: &str,
) -> http::Response<B> {
    let Some(status) = tonic::Status::from_header_map(response.headers()) else {
        return response;
    };
    let Some(translated) =
        kizuna_errors::request_too_large(&status, &format!("{service}.kizuna.dev"))
    else {
        return response;
    };
    let headers = response.headers_mut();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    if translated.add_header(headers).is_err() {
        tracing::warn!("could not encode the RESOURCE_EXHAUSTED status of an oversized request");
    }
    response
}
