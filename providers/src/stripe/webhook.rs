//! Verifying Stripe's webhook deliveries with the ecosystem's own implementation
//! (`async-stripe-webhook`): HMAC-SHA256 of `"{t}.{body}"` under the endpoint's secret, any of
//! several `v1` values (secret rolling), 300 s tolerance, constant-time comparison.

use stripe_webhook::{Webhook, WebhookError};

use crate::signature::SignatureError;

/// The header Stripe signs deliveries with.
pub const SIGNATURE_HEADER: &str = "stripe-signature";

/// Verify a Stripe webhook. `now` is the current Unix time (a parameter so tests can pin it).
///
/// Slipway reads the fields it needs from the verified body itself rather than through the
/// crate's fully-typed event: that parse covers Stripe's whole object graph and may lag behind
/// the account's API version, which must never turn a genuine, signed event into a rejection.
pub fn verify(payload: &str, header: Option<&str>, secret: &str, now: i64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    match Webhook::construct_event_with_timestamp(payload, header, secret, now) {
        Ok(_) | Err(WebhookError::BadParse(_)) => Ok(()),
        Err(WebhookError::BadTimestamp(_)) => Err(SignatureError::Stale),
        Err(WebhookError::BadHeader(_)) => Err(SignatureError::Malformed),
        Err(WebhookError::BadSignature | WebhookError::BadKey) => Err(SignatureError::Mismatch),
    }
}

/// A `Stripe-Signature` header for `payload` signed at `timestamp` (what Stripe computes; for
/// tests and the sandbox).
pub fn signature_header(payload: &str, secret: &str, timestamp: i64) -> String {
    Webhook::generate_test_header(payload, secret, Some(timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";
    const BODY: &str = r#"{"id":"evt_1","object":"event","type":"checkout.session.completed"}"#;

    #[test]
    fn accepts_fresh_signatures() {
        let t = 1_790_000_000;
        assert_eq!(verify(BODY, Some(&signature_header(BODY, SECRET, t)), SECRET, t + 299), Ok(()));
    }

    #[test]
    fn accepts_any_of_several_v1_values() {
        let t = 1_790_000_000;
        let good = signature_header(BODY, SECRET, t);
        let v1 = good.split("v1=").nth(1).unwrap();
        let header = format!("t={t},v1={},v1={v1},v0=abc", "0".repeat(64));
        assert_eq!(verify(BODY, Some(&header), SECRET, t), Ok(()));
    }

    #[test]
    fn rejects_stale_wrong_and_missing() {
        let t = 1_790_000_000;
        let header = signature_header(BODY, SECRET, t);
        assert_eq!(verify(BODY, Some(&header), SECRET, t + 301), Err(SignatureError::Stale));
        assert_eq!(verify(BODY, Some(&header), "whsec_other", t), Err(SignatureError::Mismatch));
        assert_eq!(
            verify(&BODY.replace("evt_1", "evt_2"), Some(&header), SECRET, t),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(BODY, Some("t=abc,v1=00"), SECRET, t), Err(SignatureError::Malformed));
        assert_eq!(verify(BODY, None, SECRET, t), Err(SignatureError::Missing));
    }
}
