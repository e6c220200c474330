//! Property tests over everything the starter parses before Temporal is involved: arbitrary
//! bytes and headers never panic, and nothing unsigned is ever accepted. (Accepted input is what
//! would start a workflow, so "never accepted" is "never starts a workflow".)

use proptest::prelude::*;
use serde_json::Value;
use slipway_providers::{github::webhook::Event as GitHubEvent, signature, stripe::webhook};
use slipway_starter::{
    auth,
    ingress::{
        github::{Intent, intent},
        stripe as stripe_ingress,
    },
};

const SECRET: &str = "whsec_fuzz";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn stripe_verification_never_accepts_unsigned_bytes(body in ".{0,512}", header in ".{0,200}", now in 0i64..4_000_000_000) {
        // Anything that is not a genuine signature of this body is refused, without panicking.
        let r = webhook::verify(&body, Some(&header), SECRET, now);
        prop_assert!(r.is_err());
    }

    #[test]
    fn stripe_verification_accepts_exactly_its_own_signatures(body in ".{0,512}", t in 1_700_000_000i64..1_900_000_000, skew in -300i64..=300) {
        let header = webhook::signature_header(&body, SECRET, t);
        prop_assert!(webhook::verify(&body, Some(&header), SECRET, t + skew).is_ok());
        prop_assert!(webhook::verify(&body, Some(&header), SECRET, t + 301 + skew.abs()).is_err());
        let tampered = format!("{} ", body);
        prop_assert!(webhook::verify(&tampered, Some(&header), SECRET, t).is_err());
    }

    #[test]
    fn hmac_verification_never_accepts_forgeries(body in proptest::collection::vec(any::<u8>(), 0..512), header in ".{0,100}") {
        prop_assert!(signature::hmac_sha256(&body, Some(&header), b"secret").is_err());
        let good = signature::sign_hmac_sha256(&body, b"secret");
        prop_assert!(signature::hmac_sha256(&body, Some(&good), b"secret").is_ok());
        prop_assert!(signature::hmac_sha256(&body, Some(&good), b"other").is_err());
    }

    #[test]
    fn github_event_reading_and_mapping_never_panic(event in "[a-z_]{0,20}", payload in arb_json()) {
        if let Ok(e) = GitHubEvent::parse(&event, payload.to_string().as_bytes()) {
            let _ = intent(&e, "slipway");
        }
    }

    #[test]
    fn stripe_event_reading_and_mapping_never_panic(kind in "(checkout\\.session|customer\\.subscription|invoice)\\.[a-z_]{0,12}", object in arb_json()) {
        let body = serde_json::json!({"id": "evt_1", "type": kind, "created": 1, "data": {"object": object}});
        if let Ok(e) = webhook::Event::parse(&body.to_string()) {
            let _ = stripe_ingress::intent(&e);
        }
    }

    #[test]
    fn only_labelled_issues_start_jobs(action in "[a-z]{0,10}", label in "[a-z]{0,8}") {
        let payload = serde_json::json!({"action": action, "installation": {"id": 1},
            "repository": {"full_name": "o/r", "owner": {"login": "o"}},
            "issue": {"number": 1, "labels": [{"name": label}]}, "label": {"name": label},
            "sender": {"login": "dev"}});
        let event = GitHubEvent::parse("issues", payload.to_string().as_bytes()).unwrap();
        let starts = matches!(intent(&event, "slipway"), Ok(Intent::StartJob(_)));
        prop_assert_eq!(starts, (action == "opened" || action == "labeled") && label == "slipway");
    }

    #[test]
    fn bearer_tokens_never_panic_and_garbage_is_refused(header in ".{0,300}") {
        prop_assert!(auth::verify_bearer(Some(&header), b"jwt-secret").is_err());
    }
}

/// Arbitrary JSON values, nested a few levels, biased towards the keys the mapping reads.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("action".to_owned()),
                    Just("issue".to_owned()),
                    Just("repository".to_owned()),
                    Just("pull_request".to_owned()),
                    Just("comment".to_owned()),
                    Just("labels".to_owned()),
                    Just("number".to_owned()),
                    "[a-z_]{1,10}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn jwt_edge_cases_are_refused() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({"sub": "u1", "exp": now + 600});
    let sign = |alg, key: &[u8]| encode(&Header::new(alg), &claims, &EncodingKey::from_secret(key)).unwrap();
    let secret = b"jwt-secret";
    let ok = sign(Algorithm::HS256, secret);
    assert!(auth::verify_bearer(Some(&format!("Bearer {ok}")), secret).is_ok());
    // Wrong secret; another HMAC algorithm.
    assert!(
        auth::verify_bearer(Some(&format!("Bearer {}", sign(Algorithm::HS256, b"other"))), secret).is_err()
    );
    assert!(
        auth::verify_bearer(Some(&format!("Bearer {}", sign(Algorithm::HS512, secret))), secret).is_err()
    );
    // `alg: none`: header rewritten, signature dropped.
    let payload = ok.split('.').nth(1).unwrap();
    let none_header = base64_url(r#"{"alg":"none","typ":"JWT"}"#);
    assert!(auth::verify_bearer(Some(&format!("Bearer {none_header}.{payload}.")), secret).is_err());
    // RS/HS confusion: an "RS256" header over an HMAC signature made with the secret.
    let rs_header = base64_url(r#"{"alg":"RS256","typ":"JWT"}"#);
    let signature = ok.split('.').nth(2).unwrap();
    assert!(auth::verify_bearer(Some(&format!("Bearer {rs_header}.{payload}.{signature}")), secret).is_err());
    // Expired.
    let old = encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": "u1", "exp": now - 3600}),
        &EncodingKey::from_secret(secret),
    )
    .unwrap();
    assert!(auth::verify_bearer(Some(&format!("Bearer {old}")), secret).is_err());
}

/// Unpadded base64url, for hand-made JWT headers.
fn base64_url(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}
