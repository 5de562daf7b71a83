//! The gateway's error type and its one mapping to `tonic::Status`.

use kizuna_errors::ApiError;

/// The error domain in every `ErrorInfo` this service returns.
pub const DOMAIN: &str = "gateway.kizuna.dev";

/// Everything a gateway call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A failure shared with the other services (validation, not found, etag, database).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Another subject already links the same lead or account.
    #[error("a subject for the same {key} already exists: {existing}")]
    DuplicateSubject {
        /// `lead` or `account`.
        key: &'static str,
        /// Name of the existing subject.
        existing: String,
    },
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Api(api) => api.into_status(DOMAIN),
            Error::DuplicateSubject { existing, .. } => ApiError::AlreadyExists {
                kind: "Subject",
                name: existing,
            }
            .into_status(DOMAIN),
        }
    }
}

/// Result of a gateway operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
