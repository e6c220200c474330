//! Webhook and callback signature checks, over the raw request bytes and before any parsing.
//!
//! - Stripe: verified by the ecosystem's own implementation (`async-stripe-webhook`):
//!   HMAC-SHA256 of `"{t}.{body}"`, any of several `v1` values (secret rolling), 300 s
//!   tolerance, constant-time comparison.
//! - `X-Slipway-Signature` / `X-Hub-Signature-256`: `sha256=<hex HMAC-SHA256 of the body>`,
//!   compared in constant time by `hmac`'s `verify_slice`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use stripe_webhook::{Webhook, WebhookError};

/// Why a signature was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature header.
    #[error("signature header missing")]
    Missing,
    /// Header present but not in the expected format.
    #[error("signature header malformed")]
    Malformed,
    /// No signature matches the body.
    #[error("signature does not match the payload")]
    Mismatch,
    /// Signed too long ago (or in the future): a replay, or a clock problem.
    #[error("signature timestamp outside the 300 s tolerance")]
    Stale,
}

impl SignatureError {
    /// Stable API code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "MISSING_SIGNATURE",
            Self::Malformed | Self::Mismatch => "INVALID_SIGNATURE",
            Self::Stale => "STALE_TIMESTAMP",
        }
    }
}

/// Verify a Stripe webhook. `now` is the current Unix time (a parameter so tests can pin it).
///
/// Slipway reads the fields it needs from the verified body itself rather than through the
/// crate's fully-typed event: that parse covers Stripe's whole object graph and may lag behind
/// the account's API version, which must never turn a genuine, signed event into a rejection.
pub fn stripe(payload: &str, header: Option<&str>, secret: &str, now: i64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    match Webhook::construct_event_with_timestamp(payload, header, secret, now) {
        Ok(_) | Err(WebhookError::BadParse(_)) => Ok(()),
        Err(WebhookError::BadTimestamp(_)) => Err(SignatureError::Stale),
        Err(WebhookError::BadHeader(_)) => Err(SignatureError::Malformed),
        Err(WebhookError::BadSignature | WebhookError::BadKey) => Err(SignatureError::Mismatch),
    }
}

/// Verify `sha256=<hex>` over `body`.
pub fn hmac_sha256(body: &[u8], header: Option<&str>, secret: &[u8]) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_sig = header.trim().strip_prefix("sha256=").ok_or(SignatureError::Malformed)?;
    let sig = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| SignatureError::Mismatch)
}

/// `sha256=<hex>` for `body` (what senders compute; used by tests and the sandbox contract).
pub fn sign_hmac_sha256(body: &[u8], secret: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";
    const BODY: &str = r#"{"id":"evt_1","object":"event","type":"checkout.session.completed"}"#;

    fn stripe_header(body: &str, secret: &str, t: i64) -> String {
        Webhook::generate_test_header(body, secret, Some(t))
    }

    #[test]
    fn github_documented_test_vector() {
        // From GitHub's "Validating webhook deliveries".
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(hmac_sha256(b"Hello, World!", Some(header), b"It's a Secret to Everybody"), Ok(()));
        assert_eq!(sign_hmac_sha256(b"Hello, World!", b"It's a Secret to Everybody"), header);
    }

    #[test]
    fn hmac_rejects_tampering_and_bad_formats() {
        let sig = sign_hmac_sha256(b"body", b"k");
        assert_eq!(hmac_sha256(b"body!", Some(&sig), b"k"), Err(SignatureError::Mismatch));
        assert_eq!(hmac_sha256(b"body", Some(&sig), b"other"), Err(SignatureError::Mismatch));
        assert_eq!(hmac_sha256(b"body", Some("sha1=00"), b"k"), Err(SignatureError::Malformed));
        assert_eq!(hmac_sha256(b"body", Some("sha256=zz"), b"k"), Err(SignatureError::Malformed));
        assert_eq!(hmac_sha256(b"body", None, b"k"), Err(SignatureError::Missing));
    }

    #[test]
    fn stripe_accepts_fresh_signatures() {
        let t = 1_790_000_000;
        assert_eq!(stripe(BODY, Some(&stripe_header(BODY, SECRET, t)), SECRET, t + 299), Ok(()));
    }

    #[test]
    fn stripe_accepts_any_of_several_v1_values() {
        let t = 1_790_000_000;
        let good = stripe_header(BODY, SECRET, t);
        let v1 = good.split("v1=").nth(1).unwrap();
        let header = format!("t={t},v1={},v1={v1},v0=abc", "0".repeat(64));
        assert_eq!(stripe(BODY, Some(&header), SECRET, t), Ok(()));
    }

    #[test]
    fn stripe_rejects_stale_wrong_and_missing() {
        let t = 1_790_000_000;
        let header = stripe_header(BODY, SECRET, t);
        assert_eq!(stripe(BODY, Some(&header), SECRET, t + 301), Err(SignatureError::Stale));
        assert_eq!(stripe(BODY, Some(&header), "whsec_other", t), Err(SignatureError::Mismatch));
        assert_eq!(
            stripe(&BODY.replace("evt_1", "evt_2"), Some(&header), SECRET, t),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(stripe(BODY, Some("t=abc,v1=00"), SECRET, t), Err(SignatureError::Malformed));
        assert_eq!(stripe(BODY, None, SECRET, t), Err(SignatureError::Missing));
    }
}
