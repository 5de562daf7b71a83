//! The error vocabulary the Kizuna services share, and its one mapping to `tonic::Status`.
//!
//! Every status carries exactly one `ErrorInfo` (an UPPER_SNAKE_CASE reason, the service's
//! domain, and the values named in the message) and, for bad input, one `BadRequest` listing
//! every offending field. A stale etag is ABORTED (AIP-154). Internal causes are logged once here
//! and never sent to the caller.

mod validate;

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use validate::{FieldViolation, Validator};

/// A failure a caller can act on, independent of transport.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// One or more request fields are wrong.
    #[error("invalid argument: {}", summarize(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The named resource does not exist.
    #[error("{kind} `{name}` not found")]
    NotFound {
        /// Resource kind, e.g. `Lead`.
        kind: &'static str,
        /// The resource name asked for.
        name: String,
    },
    /// A resource with this identity exists already.
    #[error("{kind} `{name}` already exists")]
    AlreadyExists {
        /// Resource kind.
        kind: &'static str,
        /// Name of the existing resource.
        name: String,
    },
    /// The caller's etag no longer matches (someone else changed the resource).
    #[error(
        "etag mismatch for `{name}`: the resource changed since it was read (current etag {current})"
    )]
    EtagMismatch {
        /// Resource name.
        name: String,
        /// The resource's current etag.
        current: String,
    },
    /// The request is valid but the resource's state does not allow it.
    #[error("{message}")]
    FailedPrecondition {
        /// UPPER_SNAKE_CASE reason.
        reason: &'static str,
        /// What is wrong, for a person.
        message: String,
    },
    /// A dependency (the database, another service) cannot serve the call now; the call can be
    /// retried after `retry_delay` (sent as `RetryInfo`).
    #[error("{dependency} is unavailable; retry later")]
    Unavailable {
        /// What cannot serve the call, e.g. `database`.
        dependency: String,
        /// UPPER_SNAKE_CASE reason, e.g. `DATABASE_UNAVAILABLE`.
        reason: &'static str,
        /// How long a client should wait before retrying.
        retry_delay: std::time::Duration,
    },
    /// A defect or an unexpected failure; the cause is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

fn summarize(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// One violation on one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        ApiError::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// UNAVAILABLE because `dependency` cannot serve the call now (reason `UNAVAILABLE`, retry
    /// after a second).
    pub fn unavailable(dependency: impl Into<String>) -> Self {
        ApiError::Unavailable {
            dependency: dependency.into(),
            reason: "UNAVAILABLE",
            retry_delay: std::time::Duration::from_secs(1),
        }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::NotFound { .. } => Code::NotFound,
            ApiError::AlreadyExists { .. } => Code::AlreadyExists,
            ApiError::EtagMismatch { .. } => Code::Aborted,
            ApiError::FailedPrecondition { .. } => Code::FailedPrecondition,
            ApiError::Unavailable { .. } => Code::Unavailable,
            ApiError::Internal(_) => Code::Internal,
        }
    }

    /// The `ErrorInfo` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument(_) => "INVALID_ARGUMENT",
            ApiError::NotFound { .. } => "RESOURCE_NOT_FOUND",
            ApiError::AlreadyExists { .. } => "RESOURCE_ALREADY_EXISTS",
            ApiError::EtagMismatch { .. } => "ETAG_MISMATCH",
            ApiError::FailedPrecondition { reason, .. } => reason,
            ApiError::Unavailable { reason, .. } => reason,
            ApiError::Internal(_) => "INTERNAL",
        }
    }

    /// Builds the status with its details; `domain` is the service's error domain, e.g.
    /// `leads.kizuna.dev`.
    pub fn into_status(self, domain: &str) -> Status {
        let mut metadata = HashMap::new();
        let mut details = ErrorDetails::new();
        match &self {
            ApiError::InvalidArgument(violations) => {
                for violation in violations {
                    details.add_bad_request_violation(&violation.field, &violation.description);
                }
                let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
                metadata.insert("fields".to_owned(), fields.join(","));
            }
            ApiError::NotFound { kind, name } | ApiError::AlreadyExists { kind, name } => {
                metadata.insert("kind".to_owned(), (*kind).to_owned());
                metadata.insert("name".to_owned(), name.clone());
            }
            ApiError::EtagMismatch { name, current } => {
                metadata.insert("name".to_owned(), name.clone());
                metadata.insert("current_etag".to_owned(), current.clone());
            }
            ApiError::FailedPrecondition { .. } => {}
            ApiError::Unavailable {
                dependency,
                retry_delay,
                ..
            } => {
                metadata.insert("dependency".to_owned(), dependency.clone());
                details.set_retry_info(Some(*retry_delay));
            }
            ApiError::Internal(cause) => {
                tracing::error!(error.message = %cause, "internal error");
            }
        }
        details.set_error_info(self.reason(), domain, metadata);
        Status::with_error_details(self.code(), self.to_string(), details)
    }
}

/// The value of a required request field: INVALID_ARGUMENT on `field` ("is required") when it is
/// absent, e.g. `required(request.lead, "lead")?`.
pub fn required<T>(value: Option<T>, field: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::invalid(field, "is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_field_is_named() {
        assert_eq!(required(Some(1), "lead").expect("present"), 1);
        let status = required::<i32>(None, "lead")
            .expect_err("absent")
            .into_status("leads.kizuna.dev");
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let violation = &details.bad_request().expect("bad request").field_violations[0];
        assert_eq!(
            (violation.field.as_str(), violation.description.as_str()),
            ("lead", "is required")
        );
    }

    #[test]
    fn invalid_argument_names_every_field_once() {
        let error = ApiError::InvalidArgument(vec![
            FieldViolation::new("lead.email", "is not an e-mail address"),
            FieldViolation::new("lead.given_name", "is longer than 200 characters"),
        ]);
        let status = error.into_status("leads.kizuna.dev");
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .expect("bad request")
            .field_violations
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert_eq!(fields, ["lead.email", "lead.given_name"]);
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.domain, "leads.kizuna.dev");
    }

    #[test]
    fn stale_etag_is_aborted() {
        let status = ApiError::EtagMismatch {
            name: "leads/1".into(),
            current: "3".into(),
        }
        .into_status("leads.kizuna.dev");
        assert_eq!(status.code(), Code::Aborted);
        assert_eq!(
            status
                .get_error_details()
                .error_info()
                .expect("info")
                .reason,
            "ETAG_MISMATCH"
        );
    }

    #[test]
    fn unavailable_says_when_to_retry() {
        let status = ApiError::Unavailable {
            dependency: "database".into(),
            reason: "DATABASE_UNAVAILABLE",
            retry_delay: std::time::Duration::from_secs(1),
        }
        .into_status("leads.kizuna.dev");
        assert_eq!(status.code(), Code::Unavailable);
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().expect("info").reason,
            "DATABASE_UNAVAILABLE"
        );
        assert_eq!(
            details.retry_info().expect("retry info").retry_delay,
            Some(std::time::Duration::from_secs(1))
        );
    }

    #[test]
    fn internal_cause_is_not_sent() {
        let status = ApiError::Internal("password=secret".into()).into_status("x");
        assert!(!status.message().contains("secret"));
    }
}
