//! Verifying GitHub's webhook deliveries: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the
//! raw body>` under the webhook secret, compared in constant time (GitHub's "Validating webhook
//! deliveries").

use crate::signature::{SignatureError, hmac_sha256};

/// The header GitHub signs deliveries with.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Verify a delivery's signature over its raw body.
pub fn verify(body: &[u8], header: Option<&str>, secret: &[u8]) -> Result<(), SignatureError> {
    hmac_sha256(body, header, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_documented_test_vector() {
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(verify(b"Hello, World!", Some(header), b"It's a Secret to Everybody"), Ok(()));
        assert_eq!(verify(b"Hello, World!", Some(header), b"another secret"), Err(SignatureError::Mismatch));
    }
}
