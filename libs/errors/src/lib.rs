//! The error vocabulary the Kizuna services share, and its one mapping to `tonic::Status`.
//!
//! Every status carries exactly one `ErrorInfo` (an UPPER_SNAKE_CASE reason, the service's
//! domain, and the values named in the message) and, for bad input, one `BadRequest` listing
//! every offending field. A stale etag is ABORTED (AIP-154). Internal causes are logged once here
//! and never sent to the caller.
//!
//! Errors quote what the caller sent, and a hostile caller can send megabytes, so every status
//! is bounded where it is built ([`ApiError::into_status`]): a value quoted in backticks (and a
//! resource name) is cut to [`MAX_QUOTED_BYTES`], a field path (which may hold a map key) to
//! [`MAX_FIELD_BYTES`], a description to [`MAX_DESCRIPTION_BYTES`], an `ErrorInfo` metadata value
//! to [`MAX_METADATA_BYTES`], the message to [`MAX_MESSAGE_BYTES`], and `BadRequest` lists the
//! first [`MAX_LISTED_VIOLATIONS`] violations (the message counts the rest). Cuts fall on
//! character boundaries and end in `…`. The whole status stays under 8 KiB of trailers even when
//! every value is 4-byte UTF-8, well inside a default client's 16 KiB metadata limit.

mod validate;

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use validate::{FieldViolation, Validator};

/// Most bytes of a value quoted in backticks in a message or description (80 ASCII characters,
/// 26 Japanese ones).
pub const MAX_QUOTED_BYTES: usize = 80;
/// Most bytes of a field path in a `BadRequest` (a path such as `lead.custom_fields[key]` holds a
/// caller's key).
pub const MAX_FIELD_BYTES: usize = 96;
/// Most bytes of a violation's description.
pub const MAX_DESCRIPTION_BYTES: usize = 160;
/// Most bytes of an `ErrorInfo` metadata value.
pub const MAX_METADATA_BYTES: usize = 256;
/// Most bytes of a status message.
pub const MAX_MESSAGE_BYTES: usize = 512;
/// Most violations one `BadRequest` lists.
pub const MAX_LISTED_VIOLATIONS: usize = 8;

const ELLIPSIS: char = '…';

/// `text` cut to at most `max_bytes` bytes (ellipsis included) at a character boundary.
pub fn clip(text: &str, max_bytes: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max_bytes {
        return text.into();
    }
    let mut end = max_bytes.saturating_sub(ELLIPSIS.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &text[..end]).into()
}

/// `text` with every backtick-quoted value longer than [`MAX_QUOTED_BYTES`] cut, then clipped to
/// `max_bytes`.
pub fn clip_quoted(text: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_bytes));
    let mut parts = text.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    // Odd pieces are inside backticks (an unpaired last backtick quotes the rest).
    for (i, part) in parts.enumerate() {
        out.push('`');
        if i % 2 == 0 {
            out.push_str(&clip(part, MAX_QUOTED_BYTES));
        } else {
            out.push_str(part);
        }
        if out.len() > max_bytes {
            break;
        }
    }
    clip(&out, max_bytes).into_owned()
}

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

/// The violations in words, as many as fit the message (the rest counted).
fn summarize(violations: &[FieldViolation]) -> String {
    // Room for "invalid argument: " and "; and N more".
    let budget = MAX_MESSAGE_BYTES - 48;
    let mut listed = String::new();
    let mut count = 0;
    for violation in violations {
        let item = format!("{}: {}", violation.field, violation.description);
        let separator = if count == 0 { "" } else { "; " };
        if listed.len() + separator.len() + item.len() > budget {
            if count == 0 {
                listed = clip(&item, budget).into_owned();
                count = 1;
            }
            break;
        }
        listed.push_str(separator);
        listed.push_str(&item);
        count += 1;
    }
    if count < violations.len() {
        listed.push_str(&format!("; and {} more", violations.len() - count));
    }
    listed
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

    /// The same error with every caller-supplied value cut to the limits in the crate header.
    fn bounded(self) -> Self {
        let name = |name: String| clip(&name, MAX_QUOTED_BYTES).into_owned();
        match self {
            ApiError::InvalidArgument(violations) => ApiError::InvalidArgument(
                violations
                    .into_iter()
                    .map(|v| FieldViolation {
                        field: clip(&v.field, MAX_FIELD_BYTES).into_owned(),
                        description: clip_quoted(&v.description, MAX_DESCRIPTION_BYTES),
                    })
                    .collect(),
            ),
            ApiError::NotFound { kind, name: n } => ApiError::NotFound {
                kind,
                name: name(n),
            },
            ApiError::AlreadyExists { kind, name: n } => ApiError::AlreadyExists {
                kind,
                name: name(n),
            },
            ApiError::EtagMismatch { name: n, current } => ApiError::EtagMismatch {
                name: name(n),
                current: name(current),
            },
            ApiError::FailedPrecondition { reason, message } => ApiError::FailedPrecondition {
                reason,
                message: clip_quoted(&message, MAX_MESSAGE_BYTES),
            },
            ApiError::Unavailable {
                dependency,
                reason,
                retry_delay,
            } => ApiError::Unavailable {
                dependency: name(dependency),
                reason,
                retry_delay,
            },
            internal @ ApiError::Internal(_) => internal,
        }
    }

    /// Builds the status with its details; `domain` is the service's error domain, e.g.
    /// `leads.kizuna.dev`. Caller-supplied values are bounded (see the crate header).
    pub fn into_status(self, domain: &str) -> Status {
        let mut metadata = HashMap::new();
        let mut details = ErrorDetails::new();
        let this = self.bounded();
        match &this {
            ApiError::InvalidArgument(violations) => {
                let listed = &violations[..violations.len().min(MAX_LISTED_VIOLATIONS)];
                for violation in listed {
                    details.add_bad_request_violation(&violation.field, &violation.description);
                }
                let fields: Vec<&str> = listed.iter().map(|v| v.field.as_str()).collect();
                metadata.insert(
                    "fields".to_owned(),
                    clip(&fields.join(","), MAX_METADATA_BYTES).into_owned(),
                );
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
        details.set_error_info(this.reason(), domain, metadata);
        let message = clip(&this.to_string(), MAX_MESSAGE_BYTES).into_owned();
        Status::with_error_details(this.code(), message, details)
    }
}

/// The RESOURCE_EXHAUSTED status for a request message larger than the server accepts, when
/// `status` is tonic's own refusal of one (OUT_OF_RANGE "decoded message length too large");
/// `None` for any other status. gRPC clients and other implementations answer an oversized
/// message with RESOURCE_EXHAUSTED; the message names the limit and the setting.
pub fn request_too_large(status: &Status, domain: &str) -> Option<Status> {
    const TONIC: &str = "Error, decoded message length too large: found ";
    if status.code() != Code::OutOfRange {
        return None;
    }
    let rest = status.message().strip_prefix(TONIC)?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    let (found, limit): (u64, u64) = (found.parse().ok()?, limit.parse().ok()?);
    let mut details = ErrorDetails::new();
    details.set_error_info(
        "REQUEST_TOO_LARGE",
        domain,
        HashMap::from([
            ("size_bytes".to_owned(), found.to_string()),
            ("limit_bytes".to_owned(), limit.to_string()),
        ]),
    );
    Some(Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "the request message is {found} bytes, over the limit of {limit} bytes \
             (server.max_request_bytes)"
        ),
        details,
    ))
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

    /// Bytes the status takes as trailers: `grpc-message` percent-encoded as tonic sends it,
    /// and `grpc-status-details-bin` in base64.
    fn trailer_bytes(status: &Status) -> usize {
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).expect("headers");
        headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum()
    }

    #[test]
    fn hostile_values_are_cut_and_the_status_stays_small() {
        for unit in ["k", "é", "語", "𝄞"] {
            let key = unit.repeat(100_000);
            let violations = (0..50)
                .map(|i| {
                    FieldViolation::new(
                        format!("lead.custom_fields[{key}{i}]"),
                        format!("`{key}` is not a profile field a fit rule can read"),
                    )
                })
                .collect();
            let status = ApiError::InvalidArgument(violations).into_status("leads.kizuna.dev");
            let bytes = trailer_bytes(&status);
            assert!(bytes < 6 * 1024, "{unit}: {bytes} bytes of trailers");
            let message = status.message();
            assert!(message.len() <= MAX_MESSAGE_BYTES, "{message}");
            assert!(
                message.ends_with(" more") && message.contains("; and 4"),
                "{message}"
            );
            let details = status.get_error_details();
            let violations = &details.bad_request().expect("bad request").field_violations;
            assert_eq!(violations.len(), MAX_LISTED_VIOLATIONS);
            let first = &violations[0];
            assert!(first.field.starts_with("lead.custom_fields["));
            assert!(first.field.ends_with('…') && first.field.len() <= MAX_FIELD_BYTES);
            // The quoted value is cut, the words after it stay.
            assert!(
                first
                    .description
                    .ends_with("…` is not a profile field a fit rule can read"),
                "{}",
                first.description
            );
            let name = ApiError::NotFound {
                kind: "Lead",
                name: format!("leads/{key}"),
            }
            .into_status("leads.kizuna.dev");
            assert!(trailer_bytes(&name) < 4 * 1024, "{unit}");
            assert!(
                name.message().ends_with("…` not found"),
                "{}",
                name.message()
            );
        }
    }

    #[test]
    fn clipping_keeps_short_text_and_cuts_at_char_boundaries() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("日本語テキスト", 10), "日本…");
        assert_eq!(clip_quoted("`abc` is bad", 100), "`abc` is bad");
        let long = "x".repeat(MAX_QUOTED_BYTES + 1);
        assert_eq!(
            clip_quoted(&format!("a `{long}` b `c`"), 1_000),
            format!("a `{}…` b `c`", "x".repeat(MAX_QUOTED_BYTES - 3))
        );
    }

    #[test]
    fn an_oversized_request_is_resource_exhausted() {
        let tonic = Status::out_of_range(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        );
        let status = request_too_large(&tonic, "leads.kizuna.dev").expect("translated");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().contains("4194304 bytes"),
            "{}",
            status.message()
        );
        assert!(status.message().contains("server.max_request_bytes"));
        let info = status
            .get_error_details()
            .error_info()
            .expect("info")
            .clone();
        assert_eq!(info.reason, "REQUEST_TOO_LARGE");
        assert_eq!(info.metadata["limit_bytes"], "4194304");
        assert!(request_too_large(&Status::out_of_range("page 9 of 3"), "x").is_none());
        assert!(request_too_large(&Status::internal("x"), "x").is_none());
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
