//! API authentication: `Authorization: Bearer <JWT>` signed HS256 with `SLIPWAY_JWT_SECRET`;
//! `sub` is the user id, `role: "admin"` marks operators. When `SLIPWAY_JWT_ISSUER` /
//! `SLIPWAY_JWT_AUDIENCE` are set, tokens must carry that `iss` / `aud` too, so a token minted
//! for another service sharing the secret is refused.

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

impl AuthError {
    /// The stable code every surface answers with (REST body, gRPC message prefix, codec server).
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "UNAUTHENTICATED",
            Self::Invalid => "INVALID_TOKEN",
        }
    }
}

/// Claims pinned by configuration (`SLIPWAY_JWT_ISSUER`, `SLIPWAY_JWT_AUDIENCE`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences).
    pub audience: Option<String>,
}

/// Verify a bearer header value (`Bearer <jwt>`), with no pinned claims.
pub fn verify_bearer(header: Option<&str>, secret: &[u8]) -> Result<Claims, AuthError> {
    verify_bearer_pinned(header, secret, &Pins::default())
}

/// Verify a bearer header value (`Bearer <jwt>`) whose `iss` / `aud` must match `pins`.
pub fn verify_bearer_pinned(header: Option<&str>, secret: &[u8], pins: &Pins) -> Result<Claims, AuthError> {
    let token = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).ok_or(AuthError::Missing)?;
    let mut validation = Validation::new(Algorithm::HS256);
    let mut required = vec!["exp", "sub"];
    if let Some(iss) = &pins.issuer {
        validation.set_issuer(&[iss]);
        required.push("iss");
    }
    match &pins.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
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

    #[test]
    fn pinned_issuer_and_audience_are_required() {
        let secret = b"s";
        let mint = |claims: serde_json::Value| {
            encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret)).unwrap()
        };
        let pins = Pins { issuer: Some("https://auth.example.com".into()), audience: Some("slipway".into()) };
        let good = mint(
            serde_json::json!({"sub": "u1", "exp": 4_000_000_000u64, "iss": "https://auth.example.com", "aud": "slipway"}),
        );
        assert_eq!(verify_bearer_pinned(Some(&format!("Bearer {good}")), secret, &pins).unwrap().sub, "u1");
        for claims in [
            serde_json::json!({"sub": "u1", "exp": 4_000_000_000u64}),
            serde_json::json!({"sub": "u1", "exp": 4_000_000_000u64, "iss": "https://other.example.com", "aud": "slipway"}),
            serde_json::json!({"sub": "u1", "exp": 4_000_000_000u64, "iss": "https://auth.example.com", "aud": "billing"}),
        ] {
            let token = mint(claims.clone());
            assert_eq!(
                verify_bearer_pinned(Some(&format!("Bearer {token}")), secret, &pins).unwrap_err(),
                AuthError::Invalid,
                "{claims}"
            );
        }
        // Without pins, a token carrying iss/aud is accepted as before.
        assert!(verify_bearer(Some(&format!("Bearer {good}")), secret).is_ok());
    }
}
