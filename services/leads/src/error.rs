//! The leads service's error type and its one mapping to `tonic::Status`.

use kizuna_errors::ApiError;
use kizuna_proto::leads::RowError;
use tonic_types::StatusExt;

/// The error domain in every `ErrorInfo` this service returns.
pub const DOMAIN: &str = "leads.kizuna.dev";

/// Everything a leads call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A failure shared with the other services (validation, not found, etag, database).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The new lead's normalized e-mail or phone matches an existing lead.
    #[error("a lead with the same {key} already exists: {existing}")]
    DuplicateLead {
        /// `email` or `phone`.
        key: &'static str,
        /// Name of the existing lead.
        existing: String,
    },
    /// The client's request stream failed (cancelled, malformed message).
    #[error("request stream: {}", .0.message())]
    Stream(tonic::Status),
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Api(api) => api.into_status(DOMAIN),
            Error::DuplicateLead { existing, .. } => ApiError::AlreadyExists {
                kind: "Lead",
                name: existing,
            }
            .into_status(DOMAIN),
            Error::Stream(status) => status,
        }
    }
}

/// How a failed row of a streamed request is reported: the status it would have failed with
/// alone, flattened (code, ErrorInfo reason, message, BadRequest fields).
pub fn row_error(index: i64, error: impl Into<Error>) -> RowError {
    let status = tonic::Status::from(error.into());
    let details = status.get_error_details();
    RowError {
        index,
        code: status.code() as i32,
        reason: details
            .error_info()
            .map(|info| info.reason.clone())
            .unwrap_or_default(),
        message: status.message().to_owned(),
        fields: details
            .bad_request()
            .map(|bad| {
                bad.field_violations
                    .iter()
                    .map(|v| v.field.clone())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Result of a leads operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
