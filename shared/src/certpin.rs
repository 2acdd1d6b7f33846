//! The hub's TLS certificate as agents pin it, and the enrollment token that carries the pin.
//!
//! A [`CertFingerprint`] is the SHA-256 of the hub's end-entity certificate (its DER bytes),
//! the same figure `openssl x509 -fingerprint -sha256` prints. A pinned enrollment token is
//! `<secret>.<base64url fingerprint>`: like kubeadm's discovery hash, the agent learns from the
//! token which certificate to trust, so its first https contact is already authenticated and a
//! man in the middle never sees the token. The whole printed string is the token (the hub stores
//! the hash of all of it), so the pin cannot be swapped without invalidating the secret.
//!
//! Invariant: a fingerprint is exactly 32 bytes; every text form parses back to the same bytes.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What separates a token's secret from its certificate pin. Not in the base64url alphabet, so
/// the last one in a token always starts the pin.
pub const PIN_SEPARATOR: char = '.';

/// The SHA-256 of a certificate's DER bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint([u8; 32]);

/// A certificate pin that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PinError(String);

impl CertFingerprint {
    /// The fingerprint of the certificate whose DER bytes are `der`.
    pub fn of_der(der: &[u8]) -> CertFingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        CertFingerprint(out)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits, in either case, optionally prefixed `sha256:` and optionally
    /// grouped by colons (`AB:CD:…`, as openssl prints it).
    pub fn parse_hex(text: &str) -> Result<CertFingerprint, PinError> {
        let trimmed = text.trim();
        let bare = trimmed
            .strip_prefix("sha256:")
            .or_else(|| trimmed.strip_prefix("SHA256:"))
            .unwrap_or(trimmed);
        let digits: String = bare.chars().filter(|c| *c != ':').collect();
        let mut out = [0u8; 32];
        hex::decode_to_slice(&digits, &mut out).map_err(|_| {
            PinError(format!(
                "{text:?} is not a SHA-256 certificate fingerprint (64 hex digits, e.g. from `tongbu-hub tls show`)"
            ))
        })?;
        Ok(CertFingerprint(out))
    }

    /// Unpadded base64url, 43 characters (the form carried in tokens).
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    pub fn from_base64url(text: &str) -> Result<CertFingerprint, PinError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| PinError(format!("{text:?} is not base64url")))?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(CertFingerprint)
            .map_err(|_| PinError(format!("{text:?} is not a 32-byte SHA-256 fingerprint")))
    }
}

impl fmt::Display for CertFingerprint {
    /// `sha256:<64 lowercase hex digits>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertFingerprint({})", self.to_hex())
    }
}

/// The token an admin hands out: `secret` with the hub certificate's pin appended.
pub fn pinned_token(secret: &str, pin: &CertFingerprint) -> String {
    format!("{secret}{PIN_SEPARATOR}{}", pin.to_base64url())
}

/// The certificate pin a token carries: `None` for a token without one, an error for a token
/// whose pin is damaged (a copy-and-paste accident, most likely).
pub fn token_pin(token: &str) -> Result<Option<CertFingerprint>, PinError> {
    match token.trim().rsplit_once(PIN_SEPARATOR) {
        None => Ok(None),
        Some((_, pin)) => CertFingerprint::from_base64url(pin)
            .map(Some)
            .map_err(|e| PinError(format!("the token's certificate pin is damaged: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_token_carries_its_pin_and_gives_it_back() {
        let pin = CertFingerprint::of_der(b"certificate bytes");
        let token = pinned_token("tbe_abcDEF-_123", &pin);
        assert!(token.starts_with("tbe_abcDEF-_123."), "{token}");
        assert_eq!(token.len(), "tbe_abcDEF-_123.".len() + 43);
        assert_eq!(token_pin(&token).unwrap(), Some(pin));
        assert_eq!(token_pin("tbe_abcDEF-_123").unwrap(), None);
        assert!(token_pin("tbe_abc.not-a-pin").is_err());
        assert!(token_pin("tbe_abc.").is_err());
    }

    #[test]
    fn fingerprints_parse_in_every_usual_spelling() {
        let pin = CertFingerprint::of_der(b"x");
        let hex = pin.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex, hex.to_lowercase());
        let colons = hex
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        for text in [
            hex.clone(),
            format!("sha256:{hex}"),
            format!("  {}  ", hex.to_uppercase()),
            colons,
            pin.to_string(),
        ] {
            assert_eq!(CertFingerprint::parse_hex(&text).unwrap(), pin, "{text}");
        }
        for bad in ["", "abc", &hex[..62], &format!("{hex}00"), "sha256:zz"] {
            assert!(CertFingerprint::parse_hex(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            CertFingerprint::from_base64url(&pin.to_base64url()).unwrap(),
            pin
        );
    }
}
