//! Payload encryption: nothing a workflow carries reaches Temporal in plaintext.
//!
//! Slipway keeps secrets out of payloads, but the rest (emails, names, Stripe ids, issue text,
//! LLM plans and code, server addresses) is customer data, and whoever reads the Temporal
//! database, its backups or a cloud namespace would read it. [`EncryptionCodec`] is a Temporal
//! `PayloadCodec`: the SDK passes it every payload a client or worker sends (inputs, results,
//! signals, updates, queries and their answers, memos, failure details) and receives, and it
//! seals each whole payload (metadata and data) with ChaCha20-Poly1305 under the current key,
//! recording the key's id in the new payload's metadata.
//!
//! **Rotation.** [`Keys`] come from `SLIPWAY_PAYLOAD_KEYS` (`id:hex,id:hex`, current first):
//! payloads are written under the first and read under whichever their `encryption-key-id`
//! names, so a new key goes first and the old ones stay until no history that needs them is
//! retained. A payload without the encrypted encoding (histories from before encryption) passes
//! through unchanged; a payload under a key not configured fails loudly, never silently.
//!
//! **Off only on purpose.** Without keys a process refuses to start, unless
//! `SLIPWAY_PAYLOAD_ENCRYPTION=off` says encryption is off (local experiments only; `scripts/dev`
//! and the tests run with it on).
//!
//! [`wire`] is the JSON of Temporal's codec server protocol (`POST /codec/encode|decode`), which
//! the starter serves so the Web UI can show an operator the decoded payloads.

pub mod wire;

use std::{collections::BTreeMap, sync::Arc};

use chacha20poly1305::{
    ChaCha20Poly1305, Key, Nonce,
    aead::{Aead, AeadCore, KeyInit, OsRng},
};
use futures::{FutureExt, future::BoxFuture};
use prost::Message;
use secrecy::{ExposeSecret, SecretString};
use temporalio_common::{
    data_converters::{
        DataConverter, DefaultFailureConverter, PayloadCodec, PayloadConversionError, PayloadConverter,
        SerializationContextData,
    },
    protos::temporal::api::common::v1::Payload,
};

/// The `encoding` of an encrypted payload.
pub const ENCODING: &str = "binary/encrypted";
/// Metadata naming the key a payload is sealed under.
pub const KEY_ID: &str = "encryption-key-id";
/// Metadata naming the cipher.
pub const CIPHER: &str = "encryption-cipher";
/// The cipher.
pub const CHACHA20_POLY1305: &str = "chacha20-poly1305";
/// Nonce length of ChaCha20-Poly1305.
const NONCE: usize = 12;

/// What is wrong with the configuration or a payload.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// `SLIPWAY_PAYLOAD_KEYS` is missing or malformed.
    #[error("{0}")]
    Config(String),
    /// A payload names a key this process does not have.
    #[error("payload sealed under key {0:?}, which SLIPWAY_PAYLOAD_KEYS does not hold")]
    UnknownKey(String),
    /// The payload does not open under its key (tampered with, or another key of that id).
    #[error("payload under key {0:?} does not decrypt (tampered with, or a different key with that id)")]
    Corrupt(String),
}

/// The keys: the current one (first) seals, every one opens.
#[derive(Clone)]
pub struct Keys {
    current: String,
    ciphers: BTreeMap<String, ChaCha20Poly1305>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&String> = self.ciphers.keys().collect();
        write!(f, "Keys(current {:?}, known {ids:?})", self.current)
    }
}

impl Keys {
    /// Parses `id:hex64,id:hex64` (current first). Ids are 1-32 characters of `[A-Za-z0-9_.-]`.
    pub fn parse(spec: &SecretString) -> Result<Self, CodecError> {
        let bad = |m: String| CodecError::Config(format!("SLIPWAY_PAYLOAD_KEYS: {m}"));
        let mut current = None;
        let mut ciphers = BTreeMap::new();
        for entry in spec.expose_secret().split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, hex_key) =
                entry.split_once(':').ok_or_else(|| bad("each key is `id:<64 hex characters>`".into()))?;
            let id_ok = (1..=32).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !id_ok {
                return Err(bad(format!(
                    "key id {id:?} must be 1-32 characters of A-Z, a-z, 0-9, '_', '.', '-'"
                )));
            }
            let bytes = hex::decode(hex_key.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| bad(format!("key {id:?} must be 64 hex characters (32 bytes)")))?;
            if ciphers.insert(id.to_owned(), ChaCha20Poly1305::new(Key::from_slice(&bytes))).is_some() {
                return Err(bad(format!("key id {id:?} appears twice")));
            }
            current.get_or_insert_with(|| id.to_owned());
        }
        let current = current.ok_or_else(|| bad("no key given".into()))?;
        Ok(Self { current, ciphers })
    }

    /// The key new payloads are sealed under.
    pub fn current(&self) -> &str {
        &self.current
    }

    /// Seals one payload under the current key.
    pub fn seal(&self, payload: &Payload) -> Payload {
        let cipher = &self.ciphers[&self.current];
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut data = nonce.to_vec();
        // Encryption fails only for plaintexts of more than 256 GiB.
        data.extend(cipher.encrypt(&nonce, payload.encode_to_vec().as_slice()).unwrap_or_default());
        let metadata = [("encoding", ENCODING), (KEY_ID, self.current.as_str()), (CIPHER, CHACHA20_POLY1305)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
            .collect();
        Payload { metadata, data, ..Payload::default() }
    }

    /// Opens one payload; one not encrypted (written before encryption) comes back unchanged.
    pub fn open(&self, payload: Payload) -> Result<Payload, CodecError> {
        if !is_encrypted(&payload) {
            return Ok(payload);
        }
        let id =
            payload.metadata.get(KEY_ID).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
        let cipher = self.ciphers.get(&id).ok_or_else(|| CodecError::UnknownKey(id.clone()))?;
        if payload.data.len() < NONCE {
            return Err(CodecError::Corrupt(id));
        }
        let (nonce, sealed) = payload.data.split_at(NONCE);
        let plain =
            cipher.decrypt(Nonce::from_slice(nonce), sealed).map_err(|_| CodecError::Corrupt(id.clone()))?;
        Payload::decode(plain.as_slice()).map_err(|_| CodecError::Corrupt(id))
    }
}

/// True for a payload this codec sealed.
pub fn is_encrypted(payload: &Payload) -> bool {
    payload.metadata.get("encoding").is_some_and(|e| e == ENCODING.as_bytes())
}

/// Payload encryption as configured: on with keys, or off when explicitly disabled.
#[derive(Debug, Clone)]
pub enum Encryption {
    /// Every payload sealed.
    On(Arc<Keys>),
    /// `SLIPWAY_PAYLOAD_ENCRYPTION=off`: payloads in plaintext (local experiments only).
    Off,
}

impl Encryption {
    /// From the environment: `SLIPWAY_PAYLOAD_KEYS`, or `SLIPWAY_PAYLOAD_ENCRYPTION=off`.
    /// Anything else (no keys, malformed keys) is an error a process must not start with.
    pub fn from_env() -> Result<Self, CodecError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// From any lookup (tests, `scripts/dev.env` defaults).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, CodecError> {
        let off = get("SLIPWAY_PAYLOAD_ENCRYPTION").is_some_and(|v| v.eq_ignore_ascii_case("off"));
        match get("SLIPWAY_PAYLOAD_KEYS").filter(|k| !k.trim().is_empty()) {
            Some(spec) if !off => Ok(Self::On(Arc::new(Keys::parse(&SecretString::from(spec))?))),
            Some(_) => Err(CodecError::Config(
                "SLIPWAY_PAYLOAD_ENCRYPTION=off and SLIPWAY_PAYLOAD_KEYS are both set: choose one".into(),
            )),
            None if off => Ok(Self::Off),
            None => Err(CodecError::Config(
                "SLIPWAY_PAYLOAD_KEYS is required: payloads are encrypted before they reach Temporal \
                 (id:<64 hex characters>, current key first; SLIPWAY_PAYLOAD_ENCRYPTION=off disables \
                 encryption for local experiments)"
                    .into(),
            )),
        }
    }

    /// The data converter every Temporal client (and so every worker) of the process uses.
    pub fn data_converter(&self) -> DataConverter {
        match self {
            Self::On(keys) => DataConverter::new(
                PayloadConverter::default(),
                DefaultFailureConverter::default(),
                EncryptionCodec { keys: keys.clone() },
            ),
            Self::Off => DataConverter::default(),
        }
    }

    /// The keys, when on.
    pub fn keys(&self) -> Option<&Keys> {
        match self {
            Self::On(keys) => Some(keys),
            Self::Off => None,
        }
    }
}

/// The Temporal `PayloadCodec` over [`Keys`].
#[derive(Debug, Clone)]
pub struct EncryptionCodec {
    keys: Arc<Keys>,
}

impl PayloadCodec for EncryptionCodec {
    fn encode(
        &self,
        _context: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let sealed =
            payloads.iter().map(|p| if is_encrypted(p) { p.clone() } else { self.keys.seal(p) }).collect();
        futures::future::ready(Ok(sealed)).boxed()
    }

    fn decode(
        &self,
        _context: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let opened: Result<Vec<Payload>, _> = payloads.into_iter().map(|p| self.keys.open(p)).collect();
        futures::future::ready(opened.map_err(|e| PayloadConversionError::EncodingError(Box::new(e)))).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(spec: &str) -> Keys {
        Keys::parse(&SecretString::from(spec.to_owned())).unwrap()
    }

    fn json(text: &str) -> Payload {
        Payload {
            metadata: [("encoding".to_owned(), b"json/plain".to_vec())].into(),
            data: text.as_bytes().to_vec(),
            ..Payload::default()
        }
    }

    const K1: &str = "k1:0000000000000000000000000000000000000000000000000000000000000001";
    const K2: &str = "k2:0000000000000000000000000000000000000000000000000000000000000002";

    #[test]
    fn a_sealed_payload_hides_everything_and_opens_to_the_original() {
        let k = keys(K1);
        let original = json(r#"{"email":"ada@example.com"}"#);
        let sealed = k.seal(&original);
        assert!(is_encrypted(&sealed));
        assert!(!String::from_utf8_lossy(&sealed.data).contains("ada@"));
        assert!(!sealed.metadata.values().any(|v| v == b"json/plain"), "the inner encoding is sealed too");
        assert_eq!(sealed.metadata[KEY_ID], b"k1");
        assert_eq!(k.open(sealed).unwrap(), original);
    }

    #[test]
    fn rotation_reads_old_keys_and_writes_the_new_one() {
        let old = keys(K1).seal(&json("1"));
        let rotated = keys(&format!("{K2},{K1}"));
        assert_eq!(rotated.current(), "k2");
        assert_eq!(rotated.open(old.clone()).unwrap(), json("1"));
        assert_eq!(rotated.seal(&json("2")).metadata[KEY_ID], b"k2");
        assert_eq!(keys(K2).open(old), Err(CodecError::UnknownKey("k1".into())));
    }

    #[test]
    fn plaintext_from_before_encryption_passes_and_tampering_fails() {
        let k = keys(K1);
        assert_eq!(k.open(json("old")).unwrap(), json("old"));
        let mut sealed = k.seal(&json("x"));
        let last = sealed.data.len() - 1;
        sealed.data[last] ^= 1;
        assert_eq!(k.open(sealed), Err(CodecError::Corrupt("k1".into())));
        let other = keys("k1:00000000000000000000000000000000000000000000000000000000000000ff");
        assert_eq!(other.open(k.seal(&json("x"))), Err(CodecError::Corrupt("k1".into())));
    }

    #[test]
    fn configuration_is_on_with_keys_off_only_on_purpose_and_refused_otherwise() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
        };
        assert!(matches!(
            Encryption::from_lookup(env(&[("SLIPWAY_PAYLOAD_KEYS", K1)])),
            Ok(Encryption::On(_))
        ));
        assert!(matches!(
            Encryption::from_lookup(env(&[("SLIPWAY_PAYLOAD_ENCRYPTION", "off")])),
            Ok(Encryption::Off)
        ));
        let missing = Encryption::from_lookup(env(&[])).unwrap_err().to_string();
        assert!(missing.contains("SLIPWAY_PAYLOAD_KEYS is required"), "{missing}");
        for bad in
            ["k1", "k1:abcd", ":00", "k 1:0000000000000000000000000000000000000000000000000000000000000001"]
        {
            let spec: &'static str = Box::leak(bad.to_owned().into_boxed_str());
            let leaked: &'static [(&'static str, &'static str)] =
                Box::leak(Box::new([("SLIPWAY_PAYLOAD_KEYS", spec)]));
            assert!(Encryption::from_lookup(env(leaked)).is_err(), "{bad}");
        }
        let twice = format!("{K1},{K1}");
        assert!(Keys::parse(&SecretString::from(twice)).is_err());
        let both: &'static [(&'static str, &'static str)] =
            &[("SLIPWAY_PAYLOAD_KEYS", K1), ("SLIPWAY_PAYLOAD_ENCRYPTION", "off")];
        assert!(Encryption::from_lookup(env(both)).is_err());
    }
}
