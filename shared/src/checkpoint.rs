//! The hub's transparency log as both sides see it: every envelope the hub accepts becomes one
//! leaf of an append-only RFC 9162 Merkle tree ([`crate::merkle`]), in arrival order; the hub
//! signs checkpoints (tree size and root) and sends, with each receipt, a proof that the
//! agent's acknowledged head is in the tree and that the tree extends the one the agent saw
//! last. The agent keeps its last verified checkpoint and checks the next against it with
//! [`check`]: a hub whose log shrank (restored from an older copy) or that shows a history
//! which does not extend the one it showed before is caught here, and the finding kept as
//! evidence.
//!
//! Leaf bytes: `"tongbu/v1/log-leaf\n" || agent || "\n" || seq (u64 big-endian) || hash`,
//! where `hash` is the envelope's chain hash, which commits to the agent's whole chain up to
//! that seq. So the inclusion of an agent's head proves its whole chain is in the log.

use serde::{Deserialize, Serialize};

use crate::crypto::{Digest, Domain, PublicKey};
use crate::ids::AgentId;
use crate::merkle::{self, Hash};
use crate::signed::{Signed, SignedError, SignedPayload};

const LEAF_TAG: &[u8] = b"tongbu/v1/log-leaf\n";

/// The bytes of the log leaf for the envelope `seq` of `agent` whose chain hash is `hash`.
pub fn leaf_data(agent: &AgentId, seq: u64, hash: &Digest) -> Vec<u8> {
    let mut out = Vec::with_capacity(LEAF_TAG.len() + agent.as_str().len() + 1 + 8 + 32);
    out.extend_from_slice(LEAF_TAG);
    out.extend_from_slice(agent.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&hash.0);
    out
}

/// The leaf hash of that envelope in the hub's log.
pub fn leaf_hash(agent: &AgentId, seq: u64, hash: &Digest) -> Digest {
    Digest(merkle::leaf_hash(&leaf_data(agent, seq, hash)))
}

/// A signed statement of the log's state: its first `tree_size` leaves hash to `root`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub tree_size: u64,
    pub root: Digest,
    pub hub_time_ms: i64,
}

impl SignedPayload for Checkpoint {
    const DOMAIN: Domain = Domain::Checkpoint;
}

/// What a receipt carries about the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogProof {
    pub checkpoint: Signed<Checkpoint>,
    /// The leaf index of the agent's acknowledged head (absent when it has none yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_index: Option<u64>,
    /// The inclusion proof of that leaf in the checkpoint's tree.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inclusion: Vec<Digest>,
    /// The tree size the consistency proof starts from (the agent's `Heartbeat::log_size`),
    /// 0 when none was asked for or the hub's log is smaller than that.
    #[serde(default)]
    pub consistency_from: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consistency: Vec<Digest>,
}

/// The checkpoint an agent trusts: the last one it verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trusted {
    pub tree_size: u64,
    pub root: Digest,
    pub hub_time_ms: i64,
}

impl From<Checkpoint> for Trusted {
    fn from(c: Checkpoint) -> Trusted {
        Trusted {
            tree_size: c.tree_size,
            root: c.root,
            hub_time_ms: c.hub_time_ms,
        }
    }
}

/// Something wrong with the hub's log that an agent found: evidence, kept and reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Finding {
    /// The log is smaller than one the hub signed before: it was restored from an older copy,
    /// or replaced.
    #[error(
        "the hub's log shrank from {held} to {shown} entries: the hub was restored from an older copy or replaced"
    )]
    Rollback { held: u64, shown: u64 },
    /// The log does not extend the one the hub showed before: two histories.
    #[error(
        "the hub's log of {shown} entries does not extend the one of {held} entries it signed before: {problem}"
    )]
    Inconsistent {
        held: u64,
        shown: u64,
        problem: String,
    },
    /// The hub acknowledged the agent's head but its log does not prove it holds it.
    #[error("the hub's log does not prove it holds seq {seq}: {problem}")]
    NotIncluded { seq: u64, problem: String },
}

impl Finding {
    /// A short, stable name for reports and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::Rollback { .. } => "log_rollback",
            Finding::Inconsistent { .. } => "log_inconsistent",
            Finding::NotIncluded { .. } => "log_not_included",
        }
    }
}

/// The result of checking a receipt's log proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The newly verified checkpoint: the agent trusts it from now on (after a finding too,
    /// so that one incident is reported once).
    pub checkpoint: Checkpoint,
    /// `false` when the proof could not say whether the log extends the trusted one (the
    /// hub was not asked from that size); the agent then asks again.
    pub consistency_checked: bool,
    pub findings: Vec<Finding>,
}

/// Checks `proof` (from a receipt for `agent`, whose acknowledged head is `acked_seq` with
/// chain hash `head_hash`) against the hub's pinned key and the checkpoint the agent trusts.
/// A checkpoint that is not signed by the hub is an error (the receipt is forged); what the
/// signed checkpoint proves wrong is returned as findings.
pub fn check(
    hub_key: &PublicKey,
    agent: &AgentId,
    acked_seq: u64,
    head_hash: &Digest,
    proof: &LogProof,
    trusted: Option<&Trusted>,
) -> Result<Checked, SignedError> {
    let checkpoint = proof.checkpoint.verify(hub_key)?;
    let mut findings = Vec::new();
    if acked_seq > 0 {
        let included = match proof.head_index {
            None => Err("no leaf index was given".to_owned()),
            Some(index) => merkle::verify_inclusion(
                &leaf_hash(agent, acked_seq, head_hash).0,
                index,
                checkpoint.tree_size,
                &hashes(&proof.inclusion),
                &checkpoint.root.0,
            )
            .map_err(|e| e.to_string()),
        };
        if let Err(problem) = included {
            findings.push(Finding::NotIncluded {
                seq: acked_seq,
                problem,
            });
        }
    }
    let mut consistency_checked = true;
    if let Some(held) = trusted {
        if checkpoint.tree_size < held.tree_size {
            findings.push(Finding::Rollback {
                held: held.tree_size,
                shown: checkpoint.tree_size,
            });
        } else if held.tree_size == 0 {
            // Every tree extends the empty one.
        } else if proof.consistency_from != held.tree_size {
            consistency_checked = false;
        } else if let Err(e) = merkle::verify_consistency(
            held.tree_size,
            checkpoint.tree_size,
            &held.root.0,
            &checkpoint.root.0,
            &hashes(&proof.consistency),
        ) {
            findings.push(Finding::Inconsistent {
                held: held.tree_size,
                shown: checkpoint.tree_size,
                problem: e.to_string(),
            });
        }
    }
    Ok(Checked {
        checkpoint,
        consistency_checked,
        findings,
    })
}

fn hashes(digests: &[Digest]) -> Vec<Hash> {
    digests.iter().map(|d| d.0).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::crypto::KeyPair;
    use crate::merkle::MemoryLog;

    type Log = MemoryLog;

    /// A receipt's log proof from `log` (free function: `Log` is the shared type).
    trait Prove {
        fn proof(&self, key: &KeyPair, head: Option<u64>, from: u64, size: u64) -> LogProof;
    }

    impl Prove for Log {
        fn proof(&self, key: &KeyPair, head: Option<u64>, from: u64, size: u64) -> LogProof {
            let root = Digest(merkle::root(self, size).unwrap());
            let checkpoint = Signed::sign(
                key,
                &Checkpoint {
                    tree_size: size,
                    root,
                    hub_time_ms: 7,
                },
            )
            .unwrap();
            let inclusion = head
                .map(|i| {
                    merkle::inclusion_proof(self, i, size)
                        .map_err(|_| ())
                        .unwrap()
                })
                .unwrap_or_default();
            let consistency = if from > 0 && from <= size {
                merkle::consistency_proof(self, from, size)
                    .map_err(|_| ())
                    .unwrap()
            } else {
                Vec::new()
            };
            LogProof {
                checkpoint,
                head_index: head,
                inclusion: inclusion.into_iter().map(Digest).collect(),
                consistency_from: if from <= size { from } else { 0 },
                consistency: consistency.into_iter().map(Digest).collect(),
            }
        }
    }

    fn agent(n: u8) -> AgentId {
        format!("430112-0000000{n}").parse().unwrap()
    }

    fn hash(seq: u64) -> Digest {
        Digest::of(&[&seq.to_be_bytes()])
    }

    /// A log with `n` leaves from two agents, alternating; returns the index of agent 1's
    /// seq `k` for each k.
    fn log_of(n: u64) -> (Log, Vec<u64>) {
        let mut log = Log::default();
        let mut mine = Vec::new();
        for i in 0..n {
            if i % 2 == 0 {
                let seq = mine.len() as u64 + 1;
                mine.push(log.push(leaf_hash(&agent(1), seq, &hash(seq)).0));
            } else {
                log.push(leaf_hash(&agent(2), i, &hash(i)).0);
            }
        }
        (log, mine)
    }

    #[test]
    fn leaf_bytes_are_fixed() {
        let data = leaf_data(&agent(1), 258, &Digest([0xab; 32]));
        let mut want = b"tongbu/v1/log-leaf\n430112-00000001\n".to_vec();
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
        want.extend_from_slice(&[0xab; 32]);
        assert_eq!(data, want);
    }

    #[test]
    fn an_honest_log_passes_and_findings_name_each_lie() {
        let key = KeyPair::from_seed(&[3; 32]).unwrap();
        let (log, mine) = log_of(40);
        let me = agent(1);
        // Agent 1's head is seq 10, at index mine[9]; it trusted the tree of size 13.
        let held = Trusted {
            tree_size: 13,
            root: Digest(merkle::root(&log, 13).unwrap()),
            hub_time_ms: 1,
        };
        let proof = log.proof(&key, Some(mine[9]), 13, 30);
        let ok = check(&key.public_key(), &me, 10, &hash(10), &proof, Some(&held)).unwrap();
        assert!(ok.findings.is_empty(), "{:?}", ok.findings);
        assert!(ok.consistency_checked);
        assert_eq!(ok.checkpoint.tree_size, 30);

        // Another seq's hash, or another agent, is not included at that index.
        let lie = check(&key.public_key(), &me, 10, &hash(11), &proof, Some(&held)).unwrap();
        assert_eq!(lie.findings[0].kind(), "log_not_included");
        let lie = check(&key.public_key(), &agent(2), 10, &hash(10), &proof, None).unwrap();
        assert_eq!(lie.findings[0].kind(), "log_not_included");

        // A smaller tree than the trusted one is a rollback.
        let small = log.proof(&key, Some(mine[2]), 0, 9);
        let rb = check(&key.public_key(), &me, 3, &hash(3), &small, Some(&held)).unwrap();
        assert_eq!(rb.findings, vec![Finding::Rollback { held: 13, shown: 9 }]);

        // A different history of the same length or longer does not extend the trusted one.
        let (mut other, _) = log_of(12);
        other.push(leaf_hash(&agent(3), 1, &hash(99)).0);
        for i in 0..20 {
            other.push(leaf_hash(&agent(2), 100 + i, &hash(i)).0);
        }
        let fork = other.proof(&key, None, 13, 33);
        let f = check(
            &key.public_key(),
            &me,
            0,
            &Digest::GENESIS,
            &fork,
            Some(&held),
        )
        .unwrap();
        assert_eq!(f.findings.len(), 1);
        assert_eq!(f.findings[0].kind(), "log_inconsistent");

        // Without a proof from the trusted size, nothing can be said: asked again later.
        let unasked = log.proof(&key, Some(mine[9]), 0, 30);
        let u = check(&key.public_key(), &me, 10, &hash(10), &unasked, Some(&held)).unwrap();
        assert!(u.findings.is_empty());
        assert!(!u.consistency_checked);
    }

    #[test]
    fn a_checkpoint_not_signed_by_the_pinned_key_is_refused() {
        let key = KeyPair::from_seed(&[3; 32]).unwrap();
        let other = KeyPair::from_seed(&[4; 32]).unwrap();
        let (log, mine) = log_of(8);
        let proof = log.proof(&other, Some(mine[0]), 0, 8);
        assert!(check(&key.public_key(), &agent(1), 1, &hash(1), &proof, None).is_err());
    }

    #[test]
    fn a_log_proof_survives_the_wire() {
        let key = KeyPair::from_seed(&[3; 32]).unwrap();
        let (log, mine) = log_of(20);
        let proof = log.proof(&key, Some(mine[4]), 4, 20);
        let json = serde_json::to_string(&proof).unwrap();
        let back: LogProof = serde_json::from_str(&json).unwrap();
        let ok = check(&key.public_key(), &agent(1), 5, &hash(5), &back, None).unwrap();
        assert!(ok.findings.is_empty());
    }
}
