//! The leads service's error type and its one mapping to `tonic::Status`.

use kizuna_errors::ApiError;

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
        }
    }
}

/// Result of a leads operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
