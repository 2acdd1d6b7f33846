//! Agent keys over time: key rotation and the key ring that says which key signed which seq.
//!
//! An agent replaces its key with a request signed by the old key (so only the key's holder
//! can ask) carrying the new key and a proof signed by the new key over
//! `rotate_proof_bytes(agent, old, new, last_old_seq)` (so the agent holds it). The hub moves
//! the old key to the `agent_keys` history with the seqs it signed (`..=last_old_seq`) and
//! makes the new key current, audited, in one transaction; from then on requests signed by
//! the old key are refused, while envelopes up to `last_old_seq` still verify with it.
//!
//! Invariants: each seq has exactly one key that may have signed it ([`AgentKeys::for_seq`]);
//! `last_old_seq` is never below what the hub already holds (`acked_seq`), so no stored
//! envelope changes key; a key is used by one agent only, ever; only active agents rotate.

use tongbu_shared::crypto::{Domain, PublicKey};
use tongbu_shared::ids::AgentId;
use tongbu_shared::protocol::{AgentState, RotateKeyRequest};
use tongbu_shared::signed::rotate_proof_bytes;

use crate::store::{AgentRecord, AuditEntry, Reads, RetiredKey, StoreError, Writes};

/// Every key an agent has used, with the seqs each one signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentKeys {
    /// The current key, which signs every seq after the retired keys' ranges.
    pub current: PublicKey,
    /// Retired keys, oldest first.
    pub retired: Vec<RetiredKey>,
}

impl From<PublicKey> for AgentKeys {
    fn from(current: PublicKey) -> AgentKeys {
        AgentKeys {
            current,
            retired: Vec::new(),
        }
    }
}

impl AgentKeys {
    /// The agent's keys as stored.
    pub fn of(r: &dyn Reads, agent: &AgentRecord) -> Result<AgentKeys, StoreError> {
        Ok(AgentKeys {
            current: agent.public_key,
            retired: r.retired_keys(&agent.id)?,
        })
    }

    /// The key that signed envelope `seq`.
    pub fn for_seq(&self, seq: u64) -> &PublicKey {
        self.retired
            .iter()
            .find(|k| (k.valid_from_seq..=k.valid_until_seq).contains(&seq))
            .map_or(&self.current, |k| &k.public_key)
    }

    /// The first seq the current key signs.
    pub fn current_from_seq(&self) -> u64 {
        self.retired
            .iter()
            .map(|k| k.valid_until_seq.saturating_add(1))
            .max()
            .unwrap_or(1)
    }
}

/// Why a key rotation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("the new key's proof does not verify (it must sign the rotation with Domain::Rotate)")]
    BadProof,
    #[error("the new key is the agent's current key")]
    SameKey,
    /// Another agent uses (or used) the key; the id stays in the hub's log.
    #[error("this public key is already used by an agent")]
    KeyInUse(AgentId),
    #[error(
        "the rotation says the old key signed up to seq {claimed}, but the hub already holds seq {acked} (or the current key starts later)"
    )]
    SeqTooLow { claimed: u64, acked: u64 },
    #[error("agent {0} is {1}; only an active agent may rotate its key")]
    NotActive(AgentId, AgentState),
    #[error("no agent {0} is enrolled")]
    UnknownAgent(AgentId),
    #[error("the key that signed this request is no longer the agent's key")]
    KeyReplaced,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks the new key's proof of possession (pure; run before the write).
pub fn check_proof(
    agent: &AgentId,
    old_key: &PublicKey,
    req: &RotateKeyRequest,
) -> Result<(), RotateError> {
    if req.new_public_key == *old_key {
        return Err(RotateError::SameKey);
    }
    let bytes = rotate_proof_bytes(agent, old_key, &req.new_public_key, req.last_old_seq);
    req.new_public_key
        .verify(Domain::Rotate, &bytes, &req.proof)
        .map_err(|_| RotateError::BadProof)
}

/// Inside one write transaction: re-reads the agent, checks the request still applies to the
/// key that signed it (`old_key`), retires that key and makes the new one current, audited as
/// `agent:<id>`.
pub fn apply(
    w: &mut dyn Writes,
    agent: &AgentId,
    old_key: &PublicKey,
    req: &RotateKeyRequest,
    now_ms: i64,
) -> Result<(), RotateError> {
    let a = w
        .agent(agent)?
        .ok_or_else(|| RotateError::UnknownAgent(agent.clone()))?;
    if a.state != AgentState::Active {
        return Err(RotateError::NotActive(agent.clone(), a.state));
    }
    if a.public_key != *old_key {
        // Another rotation won the race; this request was signed by a key now retired.
        return Err(RotateError::KeyReplaced);
    }
    check_proof(agent, old_key, req)?;
    if let Some(other) = w.agent_by_key(&req.new_public_key)? {
        return Err(RotateError::KeyInUse(other));
    }
    let keys = AgentKeys::of(&*w, &a)?;
    let from_seq = keys.current_from_seq();
    if req.last_old_seq < a.acked_seq || req.last_old_seq.saturating_add(1) < from_seq {
        return Err(RotateError::SeqTooLow {
            claimed: req.last_old_seq,
            acked: a.acked_seq,
        });
    }
    let from_ms = keys
        .retired
        .iter()
        .map(|k| k.valid_until_ms)
        .max()
        .unwrap_or(a.enrolled_at_ms)
        .min(now_ms);
    let retired = RetiredKey {
        public_key: *old_key,
        valid_from_seq: from_seq,
        valid_until_seq: req.last_old_seq,
        valid_from_ms: from_ms,
        valid_until_ms: now_ms,
    };
    w.rotate_agent_key(agent, &retired, &req.new_public_key)?;
    w.insert_audit(&AuditEntry {
        at_ms: now_ms,
        actor: format!("agent:{agent}"),
        action: "agent.key_rotated".into(),
        detail: format!(
            "agent {agent}: key {} retired after seq {}, key {} current",
            old_key.fingerprint(),
            req.last_old_seq,
            req.new_public_key.fingerprint()
        ),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tongbu_shared::KeyPair;

    fn retired(seed: u8, from: u64, until: u64) -> RetiredKey {
        RetiredKey {
            public_key: KeyPair::from_seed(&[seed; 32]).unwrap().public_key(),
            valid_from_seq: from,
            valid_until_seq: until,
            valid_from_ms: 0,
            valid_until_ms: 0,
        }
    }

    #[test]
    fn each_seq_has_one_key() {
        let current = KeyPair::from_seed(&[9; 32]).unwrap().public_key();
        let keys = AgentKeys {
            current,
            // Key 1 signed 1..=5, key 2 signed nothing, key 3 signed 6..=8.
            retired: vec![retired(1, 1, 5), retired(2, 6, 5), retired(3, 6, 8)],
        };
        assert_eq!(keys.for_seq(1), &retired(1, 1, 5).public_key);
        assert_eq!(keys.for_seq(5), &retired(1, 1, 5).public_key);
        assert_eq!(keys.for_seq(6), &retired(3, 6, 8).public_key);
        assert_eq!(keys.for_seq(9), &current);
        assert_eq!(keys.current_from_seq(), 9);
        assert_eq!(AgentKeys::from(current).current_from_seq(), 1);
    }

    #[test]
    fn the_proof_must_come_from_the_new_key_for_this_rotation() {
        let agent = AgentId::parse("430112-0000000a").unwrap();
        let old = KeyPair::from_seed(&[1; 32]).unwrap();
        let new = KeyPair::from_seed(&[2; 32]).unwrap();
        let proof = |by: &KeyPair, seq| {
            by.sign(
                Domain::Rotate,
                &rotate_proof_bytes(&agent, &old.public_key(), &new.public_key(), seq),
            )
        };
        let req = |sig, seq| RotateKeyRequest {
            new_public_key: new.public_key(),
            last_old_seq: seq,
            proof: sig,
        };
        assert!(check_proof(&agent, &old.public_key(), &req(proof(&new, 3), 3)).is_ok());
        // Signed by the old key, or for another seq: refused.
        assert!(matches!(
            check_proof(&agent, &old.public_key(), &req(proof(&old, 3), 3)),
            Err(RotateError::BadProof)
        ));
        assert!(matches!(
            check_proof(&agent, &old.public_key(), &req(proof(&new, 3), 4)),
            Err(RotateError::BadProof)
        ));
        let same = RotateKeyRequest {
            new_public_key: old.public_key(),
            last_old_seq: 3,
            proof: proof(&old, 3),
        };
        assert!(matches!(
            check_proof(&agent, &old.public_key(), &same),
            Err(RotateError::SameKey)
        ));
    }
}
