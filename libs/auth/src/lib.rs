//! Bearer tokens for Kizuna: HS256 JWTs carrying a subject and space-separated scopes.
//!
//! Scopes are per team and service: `leads:read`, `leads:write`, `deals:read`, ..., and `admin`
//! for everything. A `:write` scope also grants the matching `:read`. Which scope a call needs
//! follows from its gRPC path (see [`required_scope`]); health and reflection stay open.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

/// The claims Kizuna reads from a token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Who the caller is (a user, a team or a service).
    pub sub: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Token id.
    pub jti: String,
    /// Space-separated scopes.
    pub scope: String,
}

/// The verified caller of a request, put into the request's extensions by the auth layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's subject.
    pub subject: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
}

impl Principal {
    /// Whether the scopes grant `required` (`admin` grants all; `x:write` grants `x:read`).
    pub fn allows(&self, required: &str) -> bool {
        self.scopes.iter().any(|scope| {
            scope == "admin"
                || scope == required
                || required
                    .strip_suffix(":read")
                    .is_some_and(|service| scope.strip_suffix(":write") == Some(service))
        })
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `authorization: Bearer ...` metadata.
    #[error("missing bearer token")]
    Missing,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// Bad signature, issuer, audience or shape.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token is valid but lacks the scope.
    #[error("token lacks scope `{0}`")]
    MissingScope(String),
}

/// Issues and verifies tokens with one HS256 key.
#[derive(Clone)]
pub struct Authenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl Authenticator {
    /// An authenticator for `signing_key`, expecting `issuer` and `audience`.
    pub fn new(signing_key: &[u8], issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(signing_key),
            decoding: DecodingKey::from_secret(signing_key),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// Signs a token for `subject` with `scopes`, valid for `ttl`.
    pub fn issue(
        &self,
        subject: &str,
        scopes: &[&str],
        ttl: Duration,
    ) -> Result<String, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub: subject.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
            jti: uuid::Uuid::now_v7().to_string(),
            scope: scopes.join(" "),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// Verifies a raw token (without the `Bearer ` prefix).
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let data =
            decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                    other => AuthError::Invalid(format!("{other:?}")),
                }
            })?;
        Ok(Principal {
            subject: data.claims.sub,
            scopes: data
                .claims
                .scope
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        })
    }

    /// Verifies an `authorization` header value and checks the scope the call needs.
    pub fn authorize(
        &self,
        authorization: Option<&str>,
        required: &str,
    ) -> Result<Principal, AuthError> {
        let token = authorization
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(AuthError::Missing)?;
        let principal = self.verify(token)?;
        if principal.allows(required) {
            Ok(principal)
        } else {
            Err(AuthError::MissingScope(required.to_owned()))
        }
    }
}

/// The scope a gRPC path needs, or `None` for open paths (health, reflection).
///
/// `/kizuna.leads.v1.LeadsService/GetLead` needs `leads:read`; methods whose name starts with
/// `Get`, `List`, `Watch`, `Search`, `Lookup`, `Count`, `Explain` or `Batch Get` are reads, the
/// rest are writes. Paths outside `kizuna.*` other than health and reflection need `admin`.
pub fn required_scope(path: &str) -> Option<String> {
    let path = path.trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    if service.starts_with("grpc.health.") || service.starts_with("grpc.reflection.") {
        return None;
    }
    let Some(domain) = service
        .strip_prefix("kizuna.")
        .and_then(|rest| rest.split('.').next())
    else {
        return Some("admin".to_owned());
    };
    const READS: [&str; 8] = [
        "Get", "List", "Watch", "Search", "Lookup", "Count", "Explain", "BatchGet",
    ];
    let access = if READS.iter().any(|prefix| method.starts_with(prefix)) {
        "read"
    } else {
        "write"
    };
    Some(format!("{domain}:{access}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn issued_token_verifies_and_scopes_apply() {
        let auth = Authenticator::new(KEY, "kizuna", "kizuna");
        let token = auth
            .issue("marketing-ops", &["leads:write"], Duration::from_secs(60))
            .expect("issue");
        let header = format!("Bearer {token}");
        assert!(auth.authorize(Some(&header), "leads:read").is_ok());
        assert!(auth.authorize(Some(&header), "leads:write").is_ok());
        assert_eq!(
            auth.authorize(Some(&header), "deals:read"),
            Err(AuthError::MissingScope("deals:read".into()))
        );
        assert_eq!(auth.authorize(None, "leads:read"), Err(AuthError::Missing));
    }

    #[test]
    fn wrong_key_and_expired_tokens_are_refused() {
        let auth = Authenticator::new(KEY, "kizuna", "kizuna");
        let other = Authenticator::new(b"another-key-another-key-another-key", "kizuna", "kizuna");
        let token = other
            .issue("x", &["admin"], Duration::from_secs(60))
            .expect("issue");
        assert!(matches!(auth.verify(&token), Err(AuthError::Invalid(_))));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let claims = Claims {
            sub: "x".into(),
            iss: "kizuna".into(),
            aud: "kizuna".into(),
            exp: now - 3600,
            iat: now - 7200,
            jti: "1".into(),
            scope: "admin".into(),
        };
        let expired = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(KEY),
        )
        .expect("encode");
        assert_eq!(auth.verify(&expired), Err(AuthError::Expired));
    }

    #[test]
    fn scope_follows_the_path() {
        assert_eq!(
            required_scope("/kizuna.leads.v1.LeadsService/GetLead").as_deref(),
            Some("leads:read")
        );
        assert_eq!(
            required_scope("/kizuna.deals.v1.DealsService/CreateDeal").as_deref(),
            Some("deals:write")
        );
        assert_eq!(
            required_scope("/kizuna.leads.v1.LeadsService/WatchEvents").as_deref(),
            Some("leads:read")
        );
        assert_eq!(required_scope("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            required_scope("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            None
        );
        assert_eq!(
            required_scope("/other.Service/Do").as_deref(),
            Some("admin")
        );
    }
}
