//! The JSON of Temporal's codec server protocol: `{"payloads": [{"metadata": {name: base64},
//! "data": base64}]}` in and out of `POST /codec/encode` and `POST /codec/decode` (the proto3
//! JSON of `temporal.api.common.v1.Payloads`, as the Web UI and `temporal` CLI send it).

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};
use temporalio_common::protos::temporal::api::common::v1::Payload;

use crate::{CodecError, Keys};

/// A request or answer body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payloads {
    /// The payloads, in order.
    #[serde(default)]
    pub payloads: Vec<WirePayload>,
}

/// One payload: metadata values and data in base64.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePayload {
    /// Metadata, each value base64.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The data, base64.
    #[serde(default)]
    pub data: String,
}

impl From<&Payload> for WirePayload {
    fn from(p: &Payload) -> Self {
        Self {
            metadata: p.metadata.iter().map(|(k, v)| (k.clone(), STANDARD.encode(v))).collect(),
            data: STANDARD.encode(&p.data),
        }
    }
}

impl TryFrom<&WirePayload> for Payload {
    type Error = String;

    fn try_from(w: &WirePayload) -> Result<Self, String> {
        let b64 = |what: &str, v: &str| STANDARD.decode(v).map_err(|_| format!("{what} is not base64"));
        let mut metadata = std::collections::HashMap::new();
        for (k, v) in &w.metadata {
            metadata.insert(k.clone(), b64(&format!("metadata {k}"), v)?);
        }
        Ok(Payload { metadata, data: b64("data", &w.data)?, ..Payload::default() })
    }
}

/// What the codec server refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Not payloads.
    #[error("{0}")]
    Malformed(String),
    /// A payload does not open.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// `POST /codec/encode`: every payload sealed under the current key.
pub fn encode(keys: &Keys, body: &Payloads) -> Result<Payloads, WireError> {
    let payloads = body
        .payloads
        .iter()
        .map(|w| Payload::try_from(w).map(|p| WirePayload::from(&keys.seal(&p))))
        .collect::<Result<_, _>>()
        .map_err(WireError::Malformed)?;
    Ok(Payloads { payloads })
}

/// `POST /codec/decode`: every payload opened (one not encrypted comes back as it was).
pub fn decode(keys: &Keys, body: &Payloads) -> Result<Payloads, WireError> {
    let payloads = body
        .payloads
        .iter()
        .map(|w| {
            let sealed = Payload::try_from(w).map_err(WireError::Malformed)?;
            Ok(WirePayload::from(&keys.open(sealed)?))
        })
        .collect::<Result<_, WireError>>()?;
    Ok(Payloads { payloads })
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    #[test]
    fn encode_then_decode_is_the_identity_over_the_wire() {
        let keys = Keys::parse(&SecretString::from(
            "k1:0000000000000000000000000000000000000000000000000000000000000001".to_owned(),
        ))
        .unwrap();
        let plain = Payloads {
            payloads: vec![WirePayload {
                metadata: [("encoding".to_owned(), STANDARD.encode("json/plain"))].into(),
                data: STANDARD.encode(r#"{"name":"Ada"}"#),
            }],
        };
        let sealed = encode(&keys, &plain).unwrap();
        assert_eq!(sealed.payloads[0].metadata["encoding"], STANDARD.encode(crate::ENCODING));
        assert_eq!(decode(&keys, &sealed).unwrap(), plain);
        let bad = Payloads { payloads: vec![WirePayload { data: "%%%".into(), ..WirePayload::default() }] };
        assert!(matches!(decode(&keys, &bad), Err(WireError::Malformed(_))));
    }
}
