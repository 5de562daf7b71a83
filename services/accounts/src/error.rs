//! The accounts service's error type and its one mapping to `tonic::Status`.

use kizuna_errors::ApiError;

/// The error domain in every `ErrorInfo` this service returns.
pub const DOMAIN: &str = "accounts.kizuna.dev";

/// Everything an accounts call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A failure shared with the other services (validation, not found, etag, database).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// An account for the same won deal exists already (one account per deal).
    #[error("an account for {deal} already exists: {existing}")]
    DuplicateDeal {
        /// The deal, `deals/{deal}`.
        deal: String,
        /// Name of the existing account.
        existing: String,
    },
    /// The account still has child accounts, orders or cases (AIP-135: no silent cascade).
    #[error("{name} still has {what}; delete or move them first")]
    AccountHasChildren {
        /// The account asked to be deleted.
        name: String,
        /// What is left under it, e.g. `child accounts`.
        what: &'static str,
    },
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Api(api) => api.into_status(DOMAIN),
            Error::DuplicateDeal { existing, .. } => ApiError::AlreadyExists {
                kind: "Account",
                name: existing,
            }
            .into_status(DOMAIN),
            error @ Error::AccountHasChildren { .. } => ApiError::FailedPrecondition {
                reason: "ACCOUNT_HAS_CHILDREN",
                message: error.to_string(),
            }
            .into_status(DOMAIN),
        }
    }
}

/// Result of an accounts operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
