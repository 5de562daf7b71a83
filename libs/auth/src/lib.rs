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

/// Why a token was refused, in words a caller can act on. The library's own error (which may
/// quote token internals) is logged at debug level, never returned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `authorization: Bearer ...` metadata.
    #[error("missing bearer token")]
    Missing,
    /// Not a JWT: not three base64url parts, or a header or claims that are not JSON of the
    /// expected shape.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The token names an algorithm other than HS256 (including `none`).
    #[error("unsupported token algorithm `{0}`: tokens are signed with HS256")]
    UnsupportedAlgorithm(String),
    /// The signature does not verify with the service's key.
    #[error("bad token signature: the token was not signed with this deployment's key")]
    BadSignature,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The token's `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// The token's audience is not this deployment's.
    #[error("wrong token audience: expected `{0}`")]
    WrongAudience(String),
    /// The token's issuer is not this deployment's.
    #[error("wrong token issuer: expected `{0}`")]
    WrongIssuer(String),
    /// A required claim is absent.
    #[error("token lacks the `{0}` claim")]
    MissingClaim(String),
    /// A token could not be signed (issuing side only).
    #[error("cannot sign token: {0}")]
    Signing(String),
    /// The token is valid but lacks the scope.
    #[error("token lacks scope `{0}`")]
    MissingScope(String),
}

/// The claim a token lacks, when that is why its claims did not decode (only Kizuna's own
/// claim names are returned, never text from the token).
fn missing_claim(error: &serde_json::Error) -> Option<&'static str> {
    const CLAIMS: [&str; 7] = ["sub", "iss", "aud", "exp", "iat", "jti", "scope"];
    let message = error.to_string();
    let name = message.strip_prefix("missing field `")?.split('`').next()?;
    CLAIMS.into_iter().find(|claim| *claim == name)
}

/// The algorithm a token's header names, read without trusting anything else in it.
fn header_algorithm(token: &str) -> Option<String> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    json.get("alg")?.as_str().map(str::to_owned)
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
            .map_err(|e| AuthError::Signing(e.to_string()))
    }

    /// Verifies a raw token (without the `Bearer ` prefix).
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.split('.').count() != 3 {
            return Err(AuthError::Malformed("a JWT has three dot-separated parts"));
        }
        if let Some(algorithm) = header_algorithm(token)
            && algorithm != "HS256"
        {
            tracing::debug!(algorithm = %algorithm.escape_debug(), "token refused: algorithm");
            let shown: String = algorithm.chars().take(16).collect();
            return Err(AuthError::UnsupportedAlgorithm(shown));
        }
        let data = decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            tracing::debug!(error = %e, "token refused");
            self.refusal(e.into_kind())
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

    /// A verification failure in the caller's terms.
    fn refusal(&self, kind: jsonwebtoken::errors::ErrorKind) -> AuthError {
        use jsonwebtoken::errors::ErrorKind;
        match kind {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAudience => AuthError::WrongAudience(self.audience.clone()),
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer(self.issuer.clone()),
            ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim),
            ErrorKind::InvalidAlgorithm
            | ErrorKind::MissingAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::UnsupportedAlgorithm => AuthError::UnsupportedAlgorithm("unknown".into()),
            ErrorKind::Base64(_) => AuthError::Malformed("a part is not base64url"),
            ErrorKind::Utf8(_) => AuthError::Malformed("a part is not UTF-8"),
            ErrorKind::Json(error) if missing_claim(&error).is_some() => {
                AuthError::MissingClaim(missing_claim(&error).unwrap_or_default().to_owned())
            }
            ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) | ErrorKind::InvalidSubject => {
                AuthError::Malformed(
                    "the header or claims are not the expected JSON (sub, iss, aud, exp, iat, \
                     jti, scope)",
                )
            }
            _ => AuthError::Malformed("not a token this service can verify"),
        }
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
        assert_eq!(auth.verify(&token), Err(AuthError::BadSignature));
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

    /// A token with `claims`: HS256-signed with the test key when `header` names HS256, else
    /// `header` as given with a signature that cannot matter.
    fn signed(claims: &serde_json::Value, header: &serde_json::Value) -> String {
        use base64::Engine as _;
        if header["alg"] == "HS256" {
            return encode(
                &Header::new(Algorithm::HS256),
                claims,
                &EncodingKey::from_secret(KEY),
            )
            .expect("encode");
        }
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!("{}.{}.c2ln", b64(header), b64(claims))
    }

    fn claims(offset_exp: i64, aud: &str) -> serde_json::Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        serde_json::json!({
            "sub": "x", "iss": "kizuna", "aud": aud, "exp": now + offset_exp,
            "iat": now, "jti": "1", "scope": "admin",
        })
    }

    #[test]
    fn refusals_say_what_is_wrong_without_internals() {
        let auth = Authenticator::new(KEY, "kizuna", "kizuna");
        let none = signed(
            &claims(60, "kizuna"),
            &serde_json::json!({"alg": "none", "typ": "JWT"}),
        );
        let unsigned = format!("{}.", none.rsplit_once('.').expect("parts").0);
        let rs256 = signed(
            &claims(60, "kizuna"),
            &serde_json::json!({"alg": "RS256", "typ": "JWT"}),
        );
        let hs256 = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        let future = {
            let mut c = claims(3600, "kizuna");
            c["nbf"] = c["exp"].clone();
            c
        };
        let mut validation_nbf = auth.clone();
        validation_nbf.validation.validate_nbf = true;
        let cases: [(&Authenticator, String, AuthError); 9] = [
            (
                &auth,
                unsigned,
                AuthError::UnsupportedAlgorithm("none".into()),
            ),
            (&auth, none, AuthError::UnsupportedAlgorithm("none".into())),
            (
                &auth,
                rs256,
                AuthError::UnsupportedAlgorithm("RS256".into()),
            ),
            (
                &auth,
                "eyJhbGciOiJIUzI1NiJ9.a$b.c".into(),
                AuthError::Malformed("a part is not base64url"),
            ),
            (
                &auth,
                "not-a-token".into(),
                AuthError::Malformed("a JWT has three dot-separated parts"),
            ),
            (
                &auth,
                signed(&claims(-3600, "kizuna"), &hs256),
                AuthError::Expired,
            ),
            (
                &auth,
                signed(&claims(60, "elsewhere"), &hs256),
                AuthError::WrongAudience("kizuna".into()),
            ),
            (
                &auth,
                signed(&serde_json::json!({"sub": "x"}), &hs256),
                AuthError::MissingClaim("iss".into()),
            ),
            (
                &validation_nbf,
                signed(&future, &hs256),
                AuthError::NotYetValid,
            ),
        ];
        for (auth, token, expected) in cases {
            let refused = auth.verify(&token).expect_err(&token);
            assert_eq!(refused, expected, "{token}");
            let words = refused.to_string();
            for internal in ["Json", "Base64", "Error(", "InvalidByte", "variant"] {
                assert!(!words.contains(internal), "{words}");
            }
        }
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
