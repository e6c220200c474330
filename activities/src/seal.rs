//! Sealing of the few secrets that must travel through a workflow.
//!
//! The Tailscale auth key is created by one activity and consumed by another (it goes into the
//! VM's cloud-init). Anything an activity returns is written to the workflow history, so the key
//! crosses sealed: ChaCha20-Poly1305 under `SLIPWAY_SEAL_KEY`, a key only workers hold. The
//! history (and the Web UI) shows ciphertext; every worker of the fleet can open it, so the
//! consuming activity may run on a different worker than the producing one.

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    ChaCha20Poly1305, Key, Nonce,
    aead::{Aead, AeadCore, KeyInit, OsRng},
};
use secrecy::{ExposeSecret, SecretString};
use slipway_proto::model::SealedSecret;

use slipway_providers::ClientError;

/// Seals and opens [`SealedSecret`]s with the worker's key.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// From 32 bytes given as 64 hex characters.
    pub fn from_hex(key_hex: &SecretString) -> Result<Self, String> {
        let bytes = hex::decode(key_hex.expose_secret().trim())
            .map_err(|_| "SLIPWAY_SEAL_KEY must be 64 hex characters (32 bytes)".to_owned())?;
        if bytes.len() != 32 {
            return Err("SLIPWAY_SEAL_KEY must be 64 hex characters (32 bytes)".to_owned());
        }
        Ok(Self { cipher: ChaCha20Poly1305::new(Key::from_slice(&bytes)) })
    }

    /// Seal a secret.
    pub fn seal(&self, secret: &SecretString) -> Result<SealedSecret, ClientError> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .cipher
            .encrypt(&nonce, secret.expose_secret().as_bytes())
            .map_err(|_| ClientError::Configuration("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(SealedSecret(STANDARD.encode(out)))
    }

    /// Open a sealed secret. Fails if it was sealed under another key or tampered with.
    pub fn open(&self, sealed: &SealedSecret) -> Result<SecretString, ClientError> {
        let bad = || {
            ClientError::Configuration(
                "cannot open a sealed secret: SLIPWAY_SEAL_KEY differs between workers".into(),
            )
        };
        let raw = STANDARD.decode(&sealed.0).map_err(|_| bad())?;
        if raw.len() < 12 {
            return Err(bad());
        }
        let (nonce, ct) = raw.split_at(12);
        let pt = self.cipher.decrypt(Nonce::from_slice(nonce), ct).map_err(|_| bad())?;
        String::from_utf8(pt).map(SecretString::from).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(k: &str) -> Sealer {
        Sealer::from_hex(&SecretString::from(k.repeat(64))).unwrap()
    }

    #[test]
    fn round_trip_and_ciphertext_hides_the_secret() {
        let s = sealer("a");
        let sealed = s.seal(&SecretString::from("tskey-auth-secret")).unwrap();
        assert!(!sealed.0.contains("tskey"));
        assert_eq!(s.open(&sealed).unwrap().expose_secret(), "tskey-auth-secret");
    }

    #[test]
    fn another_key_cannot_open() {
        let sealed = sealer("a").seal(&SecretString::from("x")).unwrap();
        assert!(sealer("b").open(&sealed).is_err());
    }

    #[test]
    fn rejects_short_keys() {
        assert!(Sealer::from_hex(&SecretString::from("abcd")).is_err());
    }
}
