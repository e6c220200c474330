//! Signature checks over the raw request bytes, before any parsing: the error every verifier
//! answers with, and `sha256=<hex HMAC-SHA256 of the body>` (GitHub's `X-Hub-Signature-256`,
//! and Slipway's own `X-Slipway-Signature` on Actions callbacks), compared in constant time by
//! `hmac`'s `verify_slice`. Stripe's scheme is in [`crate::stripe::webhook`].

use hmac::{Hmac, Mac};
use sha2::Sha256;

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
}
