//! The deals service's error type and its one mapping to `tonic::Status`.

use kizuna_errors::ApiError;

/// The error domain in every `ErrorInfo` this service returns.
pub const DOMAIN: &str = "deals.kizuna.dev";

/// Everything a deals call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A failure shared with the other services (validation, not found, etag, database).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The contact's normalized e-mail or phone matches an existing contact.
    #[error("a contact with the same {key} already exists: {existing}")]
    DuplicateContact {
        /// `email` or `phone`.
        key: &'static str,
        /// Name of the existing contact.
        existing: String,
    },
    /// A deal was created without a pipeline while no pipeline is marked as the default.
    #[error(
        "no pipeline is marked as the default: set `deal.pipeline` or mark a pipeline `is_default`"
    )]
    NoDefaultPipeline,
    /// The pipeline cannot be deleted while open deals use it.
    #[error("{pipeline} is used by open deals (e.g. {deal}); close or move them first")]
    PipelineInUse {
        /// The pipeline.
        pipeline: String,
        /// One open deal in it.
        deal: String,
    },
    /// A pipeline change would remove or close a stage that open deals are in.
    #[error(
        "stage `{stage}` of {pipeline} holds open deals (e.g. {deal}); it must stay, with an open forecast category, until they move"
    )]
    StageInUse {
        /// The pipeline.
        pipeline: String,
        /// The stage id.
        stage: String,
        /// One open deal in it.
        deal: String,
    },
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let api = match error {
            Error::Api(api) => api,
            Error::DuplicateContact { existing, .. } => ApiError::AlreadyExists {
                kind: "Contact",
                name: existing,
            },
            Error::NoDefaultPipeline => ApiError::FailedPrecondition {
                reason: "NO_DEFAULT_PIPELINE",
                message: error.to_string(),
            },
            Error::PipelineInUse { .. } => ApiError::FailedPrecondition {
                reason: "PIPELINE_IN_USE",
                message: error.to_string(),
            },
            Error::StageInUse { .. } => ApiError::FailedPrecondition {
                reason: "STAGE_IN_USE",
                message: error.to_string(),
            },
        };
        api.into_status(DOMAIN)
    }
}

/// Result of a deals operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
