//! Documents signed by the hub (receipts, watermarks, policy bundles) and requests signed by
//! an agent. A signed document travels as `{"payload": <raw JSON>, "sig": "<base64>"}`: the
//! signature covers the domain tag and the payload's exact bytes, and the receiver verifies
//! those bytes *before* parsing them, so no re-serialization can make a signature drift.
//!
//! Key rotation: the new key proves possession by signing [`rotate_proof_bytes`] under
//! `Domain::Rotate`; the request carrying it is signed by the old key.
//!
//! Agent request signing bytes (headers `x-tongbu-agent`, `x-tongbu-timestamp`,
//! `x-tongbu-nonce`, `x-tongbu-signature`):
//!
//! ```text
//! "tongbu/v1/request\n" || agent "\n" || METHOD "\n" || path-and-query "\n"
//!                       || timestamp (unix seconds, decimal) "\n" || nonce "\n" || hex(SHA-256(body))
//! ```

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::crypto::{CryptoError, Digest, Domain, KeyPair, PublicKey, Signature};
use crate::ids::AgentId;

pub const HEADER_AGENT: &str = "x-tongbu-agent";
pub const HEADER_TIMESTAMP: &str = "x-tongbu-timestamp";
pub const HEADER_NONCE: &str = "x-tongbu-nonce";
pub const HEADER_SIGNATURE: &str = "x-tongbu-signature";

/// A payload type that the hub signs, with its signature domain.
pub trait SignedPayload: Serialize + DeserializeOwned {
    const DOMAIN: Domain;
}

/// A payload with the hub's signature over its exact bytes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound = "")]
pub struct Signed<T> {
    payload: Box<RawValue>,
    sig: Signature,
    #[serde(skip)]
    _payload: PhantomData<fn() -> T>,
}

impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Signed {
            payload: self.payload.clone(),
            sig: self.sig,
            _payload: PhantomData,
        }
    }
}

/// Two signed documents are equal when their exact payload bytes and signatures are.
impl<T> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.payload.get() == other.payload.get() && self.sig == other.sig
    }
}

impl<T> Eq for Signed<T> {}

/// Why a signed document was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignedError {
    #[error("the hub's signature does not verify")]
    BadSignature,
    #[error("the signed payload does not parse: {0}")]
    Payload(#[from] serde_json::Error),
}

impl<T: SignedPayload> Signed<T> {
    pub fn sign(key: &KeyPair, value: &T) -> Result<Signed<T>, serde_json::Error> {
        let payload = serde_json::value::to_raw_value(value)?;
        let sig = key.sign(T::DOMAIN, payload.get().as_bytes());
        Ok(Signed {
            payload,
            sig,
            _payload: PhantomData,
        })
    }

    /// Checks the signature over the exact payload bytes, then parses them.
    pub fn verify(&self, key: &PublicKey) -> Result<T, SignedError> {
        key.verify(T::DOMAIN, self.payload.get().as_bytes(), &self.sig)
            .map_err(|_| SignedError::BadSignature)?;
        Ok(serde_json::from_str(self.payload.get())?)
    }

    /// Reassembles a document from its exact payload text and signature (as stored); the
    /// signature is not checked here: [`Signed::verify`] does that.
    pub fn from_parts(payload: String, sig: Signature) -> Result<Signed<T>, serde_json::Error> {
        Ok(Signed {
            payload: RawValue::from_string(payload)?,
            sig,
            _payload: PhantomData,
        })
    }

    pub fn payload_bytes(&self) -> &[u8] {
        self.payload.get().as_bytes()
    }

    pub fn signature(&self) -> Signature {
        self.sig
    }
}

/// The byte string an agent signs for one HTTP request.
pub fn request_signing_bytes(
    agent: &AgentId,
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let digest = Digest::of(&[body]).to_hex();
    let mut out = Vec::with_capacity(128 + path_and_query.len());
    out.extend_from_slice(Domain::Request.tag());
    for part in [
        agent.as_str(),
        method,
        path_and_query,
        &timestamp.to_string(),
        nonce,
        &digest,
    ] {
        out.extend_from_slice(part.as_bytes());
        out.push(b'\n');
    }
    out.pop();
    out
}

/// The four authentication headers of one agent request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAuth {
    pub agent: AgentId,
    pub timestamp: i64,
    pub nonce: String,
    pub sig: Signature,
}

impl RequestAuth {
    /// Signs a request. `nonce` should be fresh random hex (the caller supplies randomness).
    pub fn sign(
        key: &KeyPair,
        agent: &AgentId,
        method: &str,
        path_and_query: &str,
        timestamp: i64,
        nonce: String,
        body: &[u8],
    ) -> RequestAuth {
        let bytes = request_signing_bytes(agent, method, path_and_query, timestamp, &nonce, body);
        RequestAuth {
            agent: agent.clone(),
            timestamp,
            sig: key.sign_raw(&bytes),
            nonce,
        }
    }

    pub fn verify(
        &self,
        key: &PublicKey,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<(), CryptoError> {
        let bytes = request_signing_bytes(
            &self.agent,
            method,
            path_and_query,
            self.timestamp,
            &self.nonce,
            body,
        );
        key.verify_raw(&bytes, &self.sig)
    }

    /// The headers as (name, value) pairs.
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (HEADER_AGENT, self.agent.to_string()),
            (HEADER_TIMESTAMP, self.timestamp.to_string()),
            (HEADER_NONCE, self.nonce.clone()),
            (HEADER_SIGNATURE, self.sig.to_base64()),
        ]
    }
}

/// The bytes an enrolling agent signs to prove it holds the key it enrolls.
pub fn enroll_proof_bytes(token: &str, key: &PublicKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(token.len() + 33);
    out.extend_from_slice(token.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&key.0);
    out
}

/// The bytes an agent's *new* key signs (under `Domain::Rotate`) to take over from its old
/// key: agent id, old key, new key and the last seq the old key signed, so the proof cannot
/// be replayed for another agent, another key or another point in the chain.
pub fn rotate_proof_bytes(
    agent: &AgentId,
    old_key: &PublicKey,
    new_key: &PublicKey,
    last_old_seq: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(agent.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&old_key.0);
    out.extend_from_slice(&new_key.0);
    out.extend_from_slice(&last_old_seq.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AgentState, Watermark};

    #[test]
    fn signed_documents_verify_exact_bytes() {
        let hub = KeyPair::from_seed(&[3; 32]).unwrap();
        let wm = Watermark {
            agent_id: AgentId::parse("430112-00000001").unwrap(),
            acked_seq: 7,
            head_hash: Digest::of(&[b"x"]),
            state: AgentState::Active,
            hub_time_ms: 1,
        };
        let signed = Signed::sign(&hub, &wm).unwrap();
        let wire = serde_json::to_string(&signed).unwrap();
        let back: Signed<Watermark> = serde_json::from_str(&wire).unwrap();
        assert_eq!(back.verify(&hub.public_key()).unwrap(), wm);

        let tampered = wire.replace("\"acked_seq\":7", "\"acked_seq\":8");
        let back: Signed<Watermark> = serde_json::from_str(&tampered).unwrap();
        assert!(matches!(
            back.verify(&hub.public_key()),
            Err(SignedError::BadSignature)
        ));
        let other = KeyPair::from_seed(&[4; 32]).unwrap();
        assert!(matches!(
            signed.verify(&other.public_key()),
            Err(SignedError::BadSignature)
        ));
    }

    #[test]
    fn request_signatures_cover_every_part() {
        let key = KeyPair::from_seed(&[5; 32]).unwrap();
        let agent = AgentId::parse("430112-00000001").unwrap();
        let auth = RequestAuth::sign(&key, &agent, "POST", "/api/v1/x", 100, "ab".into(), b"{}");
        let pk = key.public_key();
        assert!(auth.verify(&pk, "POST", "/api/v1/x", b"{}").is_ok());
        assert!(auth.verify(&pk, "GET", "/api/v1/x", b"{}").is_err());
        assert!(auth.verify(&pk, "POST", "/api/v1/y", b"{}").is_err());
        assert!(auth.verify(&pk, "POST", "/api/v1/x", b"{ }").is_err());
        let mut later = auth.clone();
        later.timestamp = 101;
        assert!(later.verify(&pk, "POST", "/api/v1/x", b"{}").is_err());
        let mut renonced = auth;
        renonced.nonce = "ac".into();
        assert!(renonced.verify(&pk, "POST", "/api/v1/x", b"{}").is_err());
    }
}
