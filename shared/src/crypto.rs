//! Keys, signatures and digests (ring). Every signature covers a byte string that starts with
//! a domain tag (`tongbu/v1/<purpose>\n`), so a signature made for one purpose can never be
//! replayed as another. Digests are SHA-256, written in lowercase hex; keys and signatures are
//! written in standard base64. A private key never appears in `Debug` output.
//!
//! [`PreparedKey`] checks many signatures of one key with ring's exact acceptance rule, faster
//! than ring one by one (see its module); anything that checks signatures takes a
//! [`Verifier`], which both kinds of key are.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::SecureRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[path = "crypto_prepared.rs"]
mod prepared;

pub use prepared::PreparedKey;

/// Signature domains: the first bytes of every signed byte string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// An envelope (one record in an agent's chain).
    Envelope,
    /// The chain hash over a signed envelope (not a signature domain, a hash domain).
    Chain,
    /// An agent's HTTP request to the hub.
    Request,
    /// Proof of key possession at enrollment.
    Enroll,
    /// A receipt signed by the hub.
    Receipt,
    /// A watermark signed by the hub.
    Watermark,
    /// A policy bundle signed by the hub.
    Policy,
    /// Proof by an agent's new key that it takes over from the old one (key rotation).
    Rotate,
    /// The hub's confirmation of a key rotation.
    KeyRotated,
    /// A checkpoint of the hub's Merkle log (tree size and root) signed by the hub.
    Checkpoint,
}

impl Domain {
    pub fn tag(self) -> &'static [u8] {
        match self {
            Domain::Envelope => b"tongbu/v1/envelope\n",
            Domain::Chain => b"tongbu/v1/chain\n",
            Domain::Request => b"tongbu/v1/request\n",
            Domain::Enroll => b"tongbu/v1/enroll\n",
            Domain::Receipt => b"tongbu/v1/receipt\n",
            Domain::Watermark => b"tongbu/v1/watermark\n",
            Domain::Policy => b"tongbu/v1/policy\n",
            Domain::Rotate => b"tongbu/v1/rotate\n",
            Domain::KeyRotated => b"tongbu/v1/key-rotated\n",
            Domain::Checkpoint => b"tongbu/v1/checkpoint\n",
        }
    }
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The `prev` of an agent's first envelope.
    pub const GENESIS: Digest = Digest([0; 32]);

    /// SHA-256 over the concatenation of `parts`.
    pub fn of(parts: &[&[u8]]) -> Digest {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for p in parts {
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Digest(out)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Result<Digest, CryptoError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| CryptoError::Encoding("a 64-digit hex SHA-256 digest"))?;
        Ok(Digest(out))
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Digest> {
        <[u8; 32]>::try_from(bytes).ok().map(Digest)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Errors from decoding or checking cryptographic material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("expected {0}")]
    Encoding(&'static str),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the private key file is not a valid Ed25519 PKCS#8 key")]
    BadPrivateKey,
    #[error("the system random number generator failed")]
    Random,
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn verify(
        &self,
        domain: Domain,
        message: &[u8],
        sig: &Signature,
    ) -> Result<(), CryptoError> {
        let mut msg = Vec::with_capacity(domain.tag().len() + message.len());
        msg.extend_from_slice(domain.tag());
        msg.extend_from_slice(message);
        self.verify_raw(&msg, sig)
    }

    /// Verifies a signature over bytes that already start with their domain tag.
    pub fn verify_raw(&self, tagged_message: &[u8], sig: &Signature) -> Result<(), CryptoError> {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(tagged_message, &sig.0)
            .map_err(|_| CryptoError::BadSignature)
    }

    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    pub fn from_base64(s: &str) -> Result<PublicKey, CryptoError> {
        let bytes = B64
            .decode(s)
            .map_err(|_| CryptoError::Encoding("a base64 Ed25519 public key"))?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(PublicKey)
            .map_err(|_| CryptoError::Encoding("a 32-byte Ed25519 public key"))
    }

    /// A short fingerprint for people: the first 16 hex digits of the key's SHA-256.
    pub fn fingerprint(&self) -> String {
        Digest::of(&[&self.0]).to_hex()[..16].to_owned()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

/// Something that checks Ed25519 signatures of one key over domain-tagged bytes.
pub trait Verifier {
    fn verify_raw(&self, tagged_message: &[u8], sig: &Signature) -> Result<(), CryptoError>;
}

impl Verifier for PublicKey {
    fn verify_raw(&self, tagged_message: &[u8], sig: &Signature) -> Result<(), CryptoError> {
        PublicKey::verify_raw(self, tagged_message, sig)
    }
}

impl Verifier for PreparedKey {
    fn verify_raw(&self, tagged_message: &[u8], sig: &Signature) -> Result<(), CryptoError> {
        PreparedKey::verify_raw(self, tagged_message, sig)
    }
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    pub fn from_base64(s: &str) -> Result<Signature, CryptoError> {
        let bytes = B64
            .decode(s)
            .map_err(|_| CryptoError::Encoding("a base64 Ed25519 signature"))?;
        Signature::from_slice(&bytes).ok_or(CryptoError::Encoding("a 64-byte Ed25519 signature"))
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Signature> {
        <[u8; 64]>::try_from(bytes).ok().map(Signature)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_base64())
    }
}

/// An Ed25519 key pair. Its `Debug` output shows only the public key.
pub struct KeyPair {
    inner: Ed25519KeyPair,
    public: PublicKey,
}

impl KeyPair {
    /// Makes a new key pair; returns it with its PKCS#8 document, which the caller stores.
    pub fn generate(rng: &dyn SecureRandom) -> Result<(KeyPair, Vec<u8>), CryptoError> {
        let doc = Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| CryptoError::Random)?;
        let pair = KeyPair::from_pkcs8(doc.as_ref())?;
        Ok((pair, doc.as_ref().to_vec()))
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<KeyPair, CryptoError> {
        let inner = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| CryptoError::BadPrivateKey)?;
        Ok(KeyPair::wrap(inner))
    }

    /// A key pair from a fixed 32-byte seed: for golden test vectors and reproducible demos.
    pub fn from_seed(seed: &[u8; 32]) -> Result<KeyPair, CryptoError> {
        let inner =
            Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| CryptoError::BadPrivateKey)?;
        Ok(KeyPair::wrap(inner))
    }

    fn wrap(inner: Ed25519KeyPair) -> KeyPair {
        let mut public = [0u8; 32];
        public.copy_from_slice(inner.public_key().as_ref());
        KeyPair {
            inner,
            public: PublicKey(public),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    pub fn sign(&self, domain: Domain, message: &[u8]) -> Signature {
        let mut msg = Vec::with_capacity(domain.tag().len() + message.len());
        msg.extend_from_slice(domain.tag());
        msg.extend_from_slice(message);
        self.sign_raw(&msg)
    }

    /// Signs bytes that already start with their domain tag.
    pub fn sign_raw(&self, tagged_message: &[u8]) -> Signature {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.inner.sign(tagged_message).as_ref());
        Signature(out)
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyPair(public: {}, private: <redacted>)",
            self.public.to_base64()
        )
    }
}

macro_rules! text_serde {
    ($t:ty, $enc:ident, $dec:path) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.$enc())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $dec(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

text_serde!(Digest, to_hex, Digest::from_hex);
text_serde!(PublicKey, to_base64, PublicKey::from_base64);
text_serde!(Signature, to_base64, Signature::from_base64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_separate_signatures() {
        let key = KeyPair::from_seed(&[7; 32]).unwrap();
        let sig = key.sign(Domain::Receipt, b"hello");
        assert!(
            key.public_key()
                .verify(Domain::Receipt, b"hello", &sig)
                .is_ok()
        );
        assert_eq!(
            key.public_key().verify(Domain::Watermark, b"hello", &sig),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            key.public_key().verify(Domain::Receipt, b"hellp", &sig),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn encodings_round_trip() {
        let key = KeyPair::from_seed(&[1; 32]).unwrap();
        let pk = key.public_key();
        assert_eq!(PublicKey::from_base64(&pk.to_base64()), Ok(pk));
        let d = Digest::of(&[b"a", b"bc"]);
        assert_eq!(d, Digest::of(&[b"abc"]));
        assert_eq!(Digest::from_hex(&d.to_hex()), Ok(d));
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(Digest::from_hex("zz").is_err());
        assert!(PublicKey::from_base64("AAAA").is_err());
    }

    #[test]
    fn debug_hides_the_private_key() {
        let key = KeyPair::from_seed(&[9; 32]).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains(&hex::encode([9u8; 32])));
    }

    #[test]
    fn generated_keys_load_from_pkcs8() {
        let rng = ring::rand::SystemRandom::new();
        let (key, doc) = KeyPair::generate(&rng).unwrap();
        let again = KeyPair::from_pkcs8(&doc).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        assert!(KeyPair::from_pkcs8(b"not a key").is_err());
    }
}
