//! API authentication: `Authorization: Bearer <JWT>` signed HS256 with `SLIPWAY_JWT_SECRET`;
//! `sub` is the user id, `role: "admin"` marks operators.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::{Deserialize, Serialize};

/// Claims Slipway reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// `admin` for operators.
    #[serde(default)]
    pub role: Option<String>,
    /// Expiry (Unix seconds).
    pub exp: u64,
}

impl Claims {
    /// True for operators.
    pub fn is_admin(&self) -> bool {
        self.role.as_deref() == Some("admin")
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token.
    #[error("missing bearer token")]
    Missing,
    /// Bad signature, expired, malformed.
    #[error("invalid or expired token")]
    Invalid,
}

/// Verify a bearer header value (`Bearer <jwt>`).
pub fn verify_bearer(header: Option<&str>, secret: &[u8]) -> Result<Claims, AuthError> {
    let token = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).ok_or(AuthError::Missing)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation)
        .map(|d| d.claims)
        .map_err(|_| AuthError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn token(sub: &str, exp: u64, secret: &[u8]) -> String {
        let claims = Claims { sub: sub.into(), role: None, exp };
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn accepts_valid_and_rejects_forged_or_expired() {
        let far = 4_000_000_000;
        let ok = token("u1", far, b"s");
        assert_eq!(verify_bearer(Some(&format!("Bearer {ok}")), b"s").unwrap().sub, "u1");
        assert_eq!(verify_bearer(Some(&format!("Bearer {ok}")), b"other").unwrap_err(), AuthError::Invalid);
        let old = token("u1", 1_000, b"s");
        assert_eq!(verify_bearer(Some(&format!("Bearer {old}")), b"s").unwrap_err(), AuthError::Invalid);
        assert_eq!(verify_bearer(None, b"s").unwrap_err(), AuthError::Missing);
        assert_eq!(verify_bearer(Some("Basic abc"), b"s").unwrap_err(), AuthError::Missing);
    }
}
