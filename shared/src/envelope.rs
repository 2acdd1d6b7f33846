//! The envelope `{agent, seq, prev, body, sig}` and the per-agent hash chain.
//!
//! Signing bytes (pinned by the golden vectors below; changing them breaks every stored chain):
//!
//! ```text
//! "tongbu/v1/envelope\n" || u16be(len(agent)) || agent || u64be(seq) || prev[32]
//!                        || u32be(len(body)) || body
//! ```
//!
//! `sig` is Ed25519 over those bytes; the envelope's hash (the next envelope's `prev`) is
//! `SHA-256("tongbu/v1/chain\n" || signing bytes without the domain tag || sig)`. `seq` starts at
//! 1 with `prev` = 32 zero bytes and has no gaps. `body` is the record's exact JSON bytes: they
//! are carried on the wire as raw JSON and stored verbatim, never re-serialized.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::crypto::{CryptoError, Digest, Domain, KeyPair, PublicKey, Signature, Verifier};
use crate::ids::AgentId;

/// Largest record body, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// One signed record in an agent's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub agent: AgentId,
    pub seq: u64,
    pub prev: Digest,
    #[serde(serialize_with = "ser_body", deserialize_with = "de_body")]
    pub body: Vec<u8>,
    pub sig: Signature,
}

fn ser_body<S: Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
    let text = std::str::from_utf8(body).map_err(serde::ser::Error::custom)?;
    let raw = RawValue::from_string(text.to_owned()).map_err(serde::ser::Error::custom)?;
    raw.serialize(s)
}

fn de_body<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let raw = Box::<RawValue>::deserialize(d)?;
    Ok(raw.get().as_bytes().to_vec())
}

/// Why an envelope or a run of envelopes does not continue a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("seq {seq}: the signature does not verify")]
    BadSignature { seq: u64 },
    #[error("seq {seq}: sent by agent {found}, expected {expected}")]
    WrongAgent {
        seq: u64,
        expected: String,
        found: String,
    },
    #[error("expected seq {expected}, found {found}")]
    Gap { expected: u64, found: u64 },
    #[error("seq {seq}: prev {found} does not match the hash {expected} of seq {}", seq - 1)]
    PrevMismatch {
        seq: u64,
        expected: Digest,
        found: Digest,
    },
    #[error("seq {seq}: body is {len} bytes, more than {MAX_BODY_BYTES}")]
    BodyTooLarge { seq: u64, len: usize },
}

/// The bytes an envelope's signature covers, domain tag included.
pub fn signing_bytes(agent: &AgentId, seq: u64, prev: &Digest, body: &[u8]) -> Vec<u8> {
    let tag = Domain::Envelope.tag();
    let a = agent.as_str().as_bytes();
    let mut out = Vec::with_capacity(tag.len() + 2 + a.len() + 8 + 32 + 4 + body.len());
    out.extend_from_slice(tag);
    // Agent ids are 15 bytes and bodies at most MAX_BODY_BYTES, so these casts cannot truncate.
    out.extend_from_slice(&(a.len() as u16).to_be_bytes());
    out.extend_from_slice(a);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&prev.0);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

impl Envelope {
    /// Signs `body` as record `seq` of `agent`'s chain, following `prev`.
    pub fn sign(key: &KeyPair, agent: AgentId, seq: u64, prev: Digest, body: Vec<u8>) -> Envelope {
        let sig = key.sign_raw(&signing_bytes(&agent, seq, &prev, &body));
        Envelope {
            agent,
            seq,
            prev,
            body,
            sig,
        }
    }

    pub fn signing_bytes(&self) -> Vec<u8> {
        signing_bytes(&self.agent, self.seq, &self.prev, &self.body)
    }

    pub fn verify(&self, key: &impl Verifier) -> Result<(), CryptoError> {
        if self.body.len() > MAX_BODY_BYTES {
            return Err(CryptoError::BadSignature);
        }
        key.verify_raw(&self.signing_bytes(), &self.sig)
    }

    /// This envelope's chain hash: what the next envelope carries as `prev`.
    pub fn hash(&self) -> Digest {
        self.hash_of_signed(&self.signing_bytes())
    }

    /// [`Envelope::hash`] from this envelope's signing bytes, when the caller has them already.
    pub fn hash_of_signed(&self, signing_bytes: &[u8]) -> Digest {
        let without_tag = signing_bytes
            .get(Domain::Envelope.tag().len()..)
            .unwrap_or_default();
        Digest::of(&[Domain::Chain.tag(), without_tag, &self.sig.0])
    }
}

/// Checks that `envelopes` are signed by `key` for `agent` and continue a chain whose last
/// envelope was `after_seq` with hash `after_hash`. Returns the new head hash.
pub fn verify_run(
    key: &PublicKey,
    agent: &AgentId,
    after_seq: u64,
    after_hash: Digest,
    envelopes: &[Envelope],
) -> Result<Digest, ChainError> {
    let mut head = after_hash;
    for (expected_seq, e) in (after_seq + 1..).zip(envelopes) {
        if &e.agent != agent {
            return Err(ChainError::WrongAgent {
                seq: e.seq,
                expected: agent.to_string(),
                found: e.agent.to_string(),
            });
        }
        if e.seq != expected_seq {
            return Err(ChainError::Gap {
                expected: expected_seq,
                found: e.seq,
            });
        }
        if e.body.len() > MAX_BODY_BYTES {
            return Err(ChainError::BodyTooLarge {
                seq: e.seq,
                len: e.body.len(),
            });
        }
        e.verify(key)
            .map_err(|_| ChainError::BadSignature { seq: e.seq })?;
        if e.prev != head {
            return Err(ChainError::PrevMismatch {
                seq: e.seq,
                expected: head,
                found: e.prev,
            });
        }
        head = e.hash();
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn golden_key() -> KeyPair {
        KeyPair::from_seed(&[0x42; 32]).unwrap()
    }

    fn agent() -> AgentId {
        AgentId::parse("430112-3f9a0c1d").unwrap()
    }

    const BODY: &[u8] = br#"{"kind":"payment","id":"P-001","rev":1,"county":"430112","contract_id":"C-001","amount_fen":50000000,"paid_on":"2024-04-01","voucher_no":"GK2024-0001"}"#;

    /// Golden vectors: if any of these change, every chain already stored would stop
    /// verifying. Change the format only with a new domain tag (v2), never in place.
    #[test]
    fn golden_signing_bytes_signature_and_hash() {
        let key = golden_key();
        assert_eq!(
            key.public_key().to_base64(),
            "IVL40Zt5HSRFMkLhXy6rbLfP+ntqXtMAl5YOBpiB2xI="
        );
        let e1 = Envelope::sign(&key, agent(), 1, Digest::GENESIS, BODY.to_vec());
        let bytes = e1.signing_bytes();
        assert_eq!(
            hex::encode(&bytes[..76]),
            concat!(
                "746f6e6762752f76312f656e76656c6f70650a", // "tongbu/v1/envelope\n"
                "000f",                                   // agent id length
                "3433303131322d3366396130633164",         // "430112-3f9a0c1d"
                "0000000000000001",                       // seq
                "0000000000000000000000000000000000000000000000000000000000000000", // prev
            )
        );
        assert_eq!(
            &bytes[bytes.len() - BODY.len() - 4..bytes.len() - BODY.len()],
            &(BODY.len() as u32).to_be_bytes()
        );
        assert_eq!(e1.sig.to_base64(), GOLDEN_SIG_1);
        assert_eq!(e1.hash().to_hex(), GOLDEN_HASH_1);
        let e2 = Envelope::sign(&key, agent(), 2, e1.hash(), BODY.to_vec());
        assert_eq!(e2.hash().to_hex(), GOLDEN_HASH_2);
        let wire = serde_json::to_string(&e1).unwrap();
        assert_eq!(
            wire,
            format!(
                r#"{{"agent":"430112-3f9a0c1d","seq":1,"prev":"{}","body":{},"sig":"{}"}}"#,
                "0".repeat(64),
                std::str::from_utf8(BODY).unwrap(),
                GOLDEN_SIG_1
            )
        );
    }

    const GOLDEN_SIG_1: &str =
        "kpF5Lma1qcP5qCaz3lag61ZWTBi4Y/uaVp30zzuoAl3uOrHhF2c6wsWvenqODaGfulSsKMTJ1Me4UaGP560UAw==";
    const GOLDEN_HASH_1: &str = "46f8cf1a4c65e7b21a0f7d057c0f95535356671bbd1b54871ab59f6ced2fa611";
    const GOLDEN_HASH_2: &str = "6214fff2a1457e0d2d03ef1c4a6dde633ea4184a2a1ec951cecad6020175fb31";

    #[test]
    fn wire_form_keeps_body_bytes_exactly() {
        let body = b"{ \"kind\" :\"x\",\n  \"a\":\"\\u00e9\" }".to_vec();
        let e = Envelope::sign(&golden_key(), agent(), 1, Digest::GENESIS, body.clone());
        let wire = serde_json::to_vec(&e).unwrap();
        let back: Envelope = serde_json::from_slice(&wire).unwrap();
        assert_eq!(back.body, body);
        assert_eq!(back, e);
        assert!(back.verify(&golden_key().public_key()).is_ok());
    }

    fn chain(n: u64) -> Vec<Envelope> {
        let key = golden_key();
        let mut prev = Digest::GENESIS;
        (1..=n)
            .map(|seq| {
                let e = Envelope::sign(
                    &key,
                    agent(),
                    seq,
                    prev,
                    format!("{{\"n\":{seq}}}").into_bytes(),
                );
                prev = e.hash();
                e
            })
            .collect()
    }

    #[test]
    fn a_chain_verifies_and_tampering_is_caught() {
        let pk = golden_key().public_key();
        let c = chain(5);
        let head = verify_run(&pk, &agent(), 0, Digest::GENESIS, &c).unwrap();
        assert_eq!(head, c[4].hash());
        // Resuming part way along.
        assert_eq!(verify_run(&pk, &agent(), 2, c[1].hash(), &c[2..]), Ok(head));

        let mut altered = c.clone();
        altered[2].body = b"{\"n\":999}".to_vec();
        assert_eq!(
            verify_run(&pk, &agent(), 0, Digest::GENESIS, &altered),
            Err(ChainError::BadSignature { seq: 3 })
        );

        let mut dropped = c.clone();
        dropped.remove(1);
        assert_eq!(
            verify_run(&pk, &agent(), 0, Digest::GENESIS, &dropped),
            Err(ChainError::Gap {
                expected: 2,
                found: 3
            })
        );

        let mut reordered = c.clone();
        reordered.swap(1, 2);
        assert!(verify_run(&pk, &agent(), 0, Digest::GENESIS, &reordered).is_err());

        let other = KeyPair::from_seed(&[1; 32]).unwrap().public_key();
        assert_eq!(
            verify_run(&other, &agent(), 0, Digest::GENESIS, &c),
            Err(ChainError::BadSignature { seq: 1 })
        );
    }

    #[test]
    fn a_fork_is_caught_by_prev() {
        let key = golden_key();
        let pk = key.public_key();
        let c = chain(3);
        // A validly signed seq 3 that follows a different seq 2.
        let fork = Envelope::sign(&key, agent(), 3, Digest::of(&[b"other"]), b"{}".to_vec());
        assert!(matches!(
            verify_run(&pk, &agent(), 2, c[1].hash(), &[fork]),
            Err(ChainError::PrevMismatch { seq: 3, .. })
        ));
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_breaks_verification(n in 1u64..6, idx in 0usize..5, bit in 0usize..4096) {
            let pk = golden_key().public_key();
            let mut c = chain(n);
            let i = idx % c.len();
            let total = c[i].body.len() * 8 + 64 * 8 + 32 * 8;
            let b = bit % total;
            if b < c[i].body.len() * 8 {
                c[i].body[b / 8] ^= 1 << (b % 8);
            } else if b < c[i].body.len() * 8 + 512 {
                let b = b - c[i].body.len() * 8;
                c[i].sig.0[b / 8] ^= 1 << (b % 8);
            } else {
                let b = b - c[i].body.len() * 8 - 512;
                c[i].prev.0[b / 8] ^= 1 << (b % 8);
            }
            prop_assert!(verify_run(&pk, &agent(), 0, Digest::GENESIS, &c).is_err());
        }
    }
}
