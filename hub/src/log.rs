//! The hub's transparency log: every envelope the hub stores is appended, in the same write
//! transaction, as one leaf of an append-only RFC 9162 Merkle tree whose leaf index is the
//! envelope's arrival - 1 ([`append`]). When the tree has grown, the writer signs a new
//! checkpoint (tree size, root, time) and stores it with its exact bytes ([`seal`]); receipts
//! carry the latest checkpoint with an inclusion proof of the agent's head and a consistency
//! proof from the tree the agent saw last ([`proof`]). The log never changes below a size once
//! signed, so proofs for a checkpoint can be built later from any reader.
//!
//! [`catch_up`] adds envelopes stored before the log existed, in arrival order, at start-up.
//!
//! Storage: leaf `i` is the envelope whose arrival is `i + 1`, so leaves are not stored again;
//! of the perfect subtrees only those of level [`STORED_FROM_LEVEL`] and up are kept (one row
//! per 16 leaves, about one per 8 envelopes in all, instead of two per envelope). A smaller
//! subtree is recomputed from its leaves when a root or a proof needs it ([`StoreSource`]): at
//! most 2^[`STORED_FROM_LEVEL`] - 1 leaves for a whole proof's worth, so roots and proofs stay
//! O(log n) reads.

use tongbu_shared::KeyPair;
use tongbu_shared::checkpoint::{self, Checkpoint, LogProof};
use tongbu_shared::crypto::Digest;
use tongbu_shared::ids::AgentId;
use tongbu_shared::merkle::{self, BuildError, Frontier, Hash, SubtreeSource};
use tongbu_shared::signed::Signed;

use crate::store::{Reads, StoreError, StoredCheckpoint, StoredEnvelope, Writes};

/// Envelopes added to the log per transaction by [`catch_up`].
const CATCH_UP_CHUNK: usize = 2_000;
/// The lowest level of perfect subtree the store keeps; lower ones are recomputed.
pub const STORED_FROM_LEVEL: u8 = 4;

/// The store's log as a source of perfect subtrees: stored nodes from
/// [`STORED_FROM_LEVEL`] up, smaller subtrees hashed from their leaves. A missing node or
/// leaf is damage.
pub struct StoreSource<'a>(pub &'a dyn Reads);

impl SubtreeSource for StoreSource<'_> {
    type Error = StoreError;

    fn subtree(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
        if level >= STORED_FROM_LEVEL {
            return self.0.log_node(level, index)?.map(|d| d.0).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "the log has no node at level {level}, index {index}"
                ))
            });
        }
        let width = 1u64 << level;
        let first = index.checked_mul(width).ok_or_else(|| {
            StoreError::Corrupt(format!("log subtree (level {level}, index {index})"))
        })?;
        let mut hashes: Vec<Hash> = self
            .0
            .log_leaves(first, width)?
            .iter()
            .map(|(agent, seq, hash)| checkpoint::leaf_hash(agent, *seq, hash).0)
            .collect();
        let missing = first + hashes.len() as u64;
        if missing != first + width {
            return Err(StoreError::Corrupt(format!(
                "the log has no leaf {missing} (no envelope arrived as {})",
                missing + 1
            )));
        }
        // `width` is a power of two: pair the hashes up level by level.
        while hashes.len() > 1 {
            hashes = hashes
                .chunks_exact(2)
                .map(|pair| merkle::node_hash(&pair[0], &pair[1]))
                .collect();
        }
        hashes.pop().ok_or_else(|| {
            StoreError::Corrupt(format!("log subtree (level {level}, index {index})"))
        })
    }
}

fn build_error(e: BuildError<StoreError>) -> StoreError {
    match e {
        BuildError::Source(e) => e,
        BuildError::Proof(e) => StoreError::Corrupt(format!("cannot prove from the log: {e}")),
    }
}

/// One envelope as a leaf: who, which seq, its chain hash, and where it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Leaf<'a> {
    pub agent: &'a AgentId,
    pub seq: u64,
    pub hash: Digest,
    pub arrival: u64,
}

/// Appends `leaves` (consecutive arrivals, continuing the log) inside the caller's write
/// transaction. Refuses, as damage, leaves whose arrival does not continue the log.
pub fn append(w: &mut dyn Writes, leaves: &[Leaf<'_>]) -> Result<u64, StoreError> {
    let size = w.log_size()?;
    let mut frontier = Frontier::load(&StoreSource(&*w), size)?;
    let mut nodes = Vec::with_capacity(leaves.len() * 2);
    for leaf in leaves {
        if leaf.arrival != frontier.size() + 1 {
            return Err(StoreError::Corrupt(format!(
                "envelope {} seq {} arrived as {} but the log holds {} entries",
                leaf.agent,
                leaf.seq,
                leaf.arrival,
                frontier.size()
            )));
        }
        let hash = checkpoint::leaf_hash(leaf.agent, leaf.seq, &leaf.hash);
        nodes.extend(
            frontier
                .push(hash.0)
                .into_iter()
                .filter(|(level, _, _)| *level >= STORED_FROM_LEVEL)
                .map(|(level, idx, h)| (level, idx, Digest(h))),
        );
    }
    w.insert_log_nodes(&nodes)?;
    if frontier.size() != size {
        w.set_log_size(frontier.size())?;
    }
    Ok(frontier.size())
}

/// Signs and stores a checkpoint of the whole log if it grew since the last one; returns the
/// latest checkpoint (none while the log is empty).
pub fn seal(
    w: &mut dyn Writes,
    key: &KeyPair,
    now_ms: i64,
) -> Result<Option<StoredCheckpoint>, StoreError> {
    let size = w.log_size()?;
    let latest = w.log_checkpoint(None)?;
    if size == 0
        || latest
            .as_ref()
            .is_some_and(|c| c.checkpoint.tree_size == size)
    {
        return Ok(latest);
    }
    if let Some(l) = &latest {
        if l.checkpoint.tree_size > size {
            return Err(StoreError::Corrupt(format!(
                "the log holds {size} entries but a checkpoint of {} was signed",
                l.checkpoint.tree_size
            )));
        }
    }
    let root = merkle::root(&StoreSource(&*w), size).map_err(build_error)?;
    let checkpoint = Checkpoint {
        tree_size: size,
        root: Digest(root),
        hub_time_ms: now_ms,
    };
    let signed = Signed::sign(key, &checkpoint)
        .map_err(|e| StoreError::Backend(format!("cannot sign a checkpoint: {e}")))?;
    let stored = StoredCheckpoint { checkpoint, signed };
    w.insert_log_checkpoint(&stored)?;
    Ok(Some(stored))
}

/// The log proof for a receipt to `agent`, whose acknowledged head is `acked_seq`, against
/// the checkpoint `at`: where the head is and that it is included, and (when `from` is a size
/// the log has reached) that the log extends the tree of `from` leaves.
pub fn proof(
    r: &dyn Reads,
    at: &StoredCheckpoint,
    agent: &AgentId,
    acked_seq: u64,
    from: u64,
) -> Result<LogProof, StoreError> {
    let size = at.checkpoint.tree_size;
    let source = StoreSource(r);
    let (head_index, inclusion) = match acked_seq {
        0 => (None, Vec::new()),
        seq => {
            let arrival = r
                .envelope(agent, seq)?
                .and_then(|e| e.arrival)
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("{agent} seq {seq} is acknowledged but not stored"))
                })?;
            let index = arrival - 1;
            if index >= size {
                // Stored after this checkpoint (a concurrent batch): no proof against it.
                (None, Vec::new())
            } else {
                let path = merkle::inclusion_proof(&source, index, size).map_err(build_error)?;
                (Some(index), path)
            }
        }
    };
    let (consistency_from, consistency) = if from > 0 && from <= size {
        let path = merkle::consistency_proof(&source, from, size).map_err(build_error)?;
        (from, path)
    } else {
        (0, Vec::new())
    };
    Ok(LogProof {
        checkpoint: at.signed.clone(),
        head_index,
        inclusion: inclusion.into_iter().map(Digest).collect(),
        consistency_from,
        consistency: consistency.into_iter().map(Digest).collect(),
    })
}

/// Adds to the log, in arrival order, every envelope stored before it existed (at most
/// [`CATCH_UP_CHUNK`] per call); returns how many it added.
pub fn catch_up(w: &mut dyn Writes) -> Result<usize, StoreError> {
    let size = w.log_size()?;
    let pending: Vec<StoredEnvelope> = w.envelopes_by_arrival(size, CATCH_UP_CHUNK)?;
    let leaves: Vec<Leaf<'_>> = pending
        .iter()
        .map(|e| Leaf {
            agent: &e.agent,
            seq: e.seq,
            hash: e.hash,
            arrival: e.arrival.unwrap_or(0),
        })
        .collect();
    append(w, &leaves)?;
    Ok(leaves.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::{County, NewAgent, NewEnvelope, SqliteStore, Verdict, read, write};
    use tongbu_shared::Envelope;
    use tongbu_shared::checkpoint::{Trusted, check};
    use tongbu_shared::protocol::Outcome;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: SqliteStore,
        hub: KeyPair,
        agent_key: KeyPair,
        agent: AgentId,
        chain: Vec<Envelope>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let agent_key = KeyPair::from_seed(&[1; 32]).unwrap();
        let agent = AgentId::parse("430112-00000001").unwrap();
        write(&mut store, |w| {
            w.insert_county(&County {
                code: tongbu_shared::CountyCode::parse("430112").unwrap(),
                name: "望城区".into(),
                created_at_ms: 1,
            })?;
            w.insert_agent(&NewAgent {
                id: agent.clone(),
                county: tongbu_shared::CountyCode::parse("430112").unwrap(),
                public_key: agent_key.public_key(),
                enrolled_at_ms: 1,
                agent_version: "t".into(),
                hostname: None,
            })
        })
        .unwrap();
        Fixture {
            _dir: dir,
            store,
            hub: KeyPair::from_seed(&[9; 32]).unwrap(),
            agent_key,
            agent,
            chain: Vec::new(),
        }
    }

    impl Fixture {
        /// Stores `n` more envelopes (one transaction), with or without the log append.
        fn store(&mut self, n: usize, log: bool) -> Option<StoredCheckpoint> {
            let mut new = Vec::new();
            for _ in 0..n {
                let seq = self.chain.len() as u64 + 1;
                let prev = self.chain.last().map_or(Digest::GENESIS, Envelope::hash);
                let e = Envelope::sign(
                    &self.agent_key,
                    self.agent.clone(),
                    seq,
                    prev,
                    format!("{{\"n\":{seq}}}").into_bytes(),
                );
                self.chain.push(e.clone());
                new.push(e);
            }
            let verdict = Verdict {
                outcome: Outcome::Accepted,
                codes: vec![],
                detail: None,
                policy_version: None,
            };
            let hub = &self.hub;
            write(&mut self.store, |w| {
                let first = w.last_arrival()? + 1;
                let rows: Vec<NewEnvelope<'_>> = new
                    .iter()
                    .zip(first..)
                    .map(|(e, arrival)| NewEnvelope {
                        envelope: e,
                        hash: e.hash(),
                        arrival,
                        verdict: &verdict,
                        record: None,
                    })
                    .collect();
                w.insert_envelopes(5, &rows)?;
                if !log {
                    return Ok(None);
                }
                let leaves: Vec<Leaf<'_>> = rows
                    .iter()
                    .map(|r| Leaf {
                        agent: &r.envelope.agent,
                        seq: r.envelope.seq,
                        hash: r.hash,
                        arrival: r.arrival,
                    })
                    .collect();
                append(w, &leaves)?;
                seal(w, hub, 1_000 + first as i64)
            })
            .unwrap()
        }

        fn proof(&mut self, at: &StoredCheckpoint, seq: u64, from: u64) -> LogProof {
            let agent = self.agent.clone();
            read(&mut self.store, |r| proof(r, at, &agent, seq, from)).unwrap()
        }
    }

    #[test]
    fn receipts_prove_inclusion_and_consistency_across_batches() {
        let mut f = fixture();
        let mut held: Option<Trusted> = None;
        for n in [1, 2, 5, 16, 3, 31] {
            let at = f.store(n, true).unwrap();
            let seq = f.chain.len() as u64;
            let from = held.map_or(0, |t| t.tree_size);
            let proof = f.proof(&at, seq, from);
            let head = f.chain[seq as usize - 1].hash();
            let checked = check(
                &f.hub.public_key(),
                &f.agent,
                seq,
                &head,
                &proof,
                held.as_ref(),
            )
            .unwrap();
            assert!(checked.findings.is_empty(), "{:?}", checked.findings);
            assert!(checked.consistency_checked);
            assert_eq!(checked.checkpoint.tree_size, seq);
            held = Some(checked.checkpoint.into());
            // Every earlier record is provably in this tree too.
            for s in [1, seq / 2 + 1, seq] {
                let p = f.proof(&at, s, 0);
                let h = f.chain[s as usize - 1].hash();
                let c = check(&f.hub.public_key(), &f.agent, s, &h, &p, None).unwrap();
                assert!(c.findings.is_empty());
            }
        }
        // Sealing again without growth signs nothing new.
        let latest = read(&mut f.store, |r| r.log_checkpoint(None))
            .unwrap()
            .unwrap();
        let hub = &f.hub;
        let again = write(&mut f.store, |w| seal(w, hub, 99)).unwrap().unwrap();
        assert_eq!(again, latest);
        let count = read(&mut f.store, |r| r.log_checkpoints_after(0, 100)).unwrap();
        assert_eq!(count.len(), 6);
    }

    #[test]
    fn catch_up_adds_older_envelopes_and_a_gap_is_damage() {
        let mut f = fixture();
        f.store(7, false);
        assert_eq!(read(&mut f.store, |r| r.log_size()).unwrap(), 0);
        assert_eq!(write(&mut f.store, catch_up).unwrap(), 7);
        assert_eq!(write(&mut f.store, catch_up).unwrap(), 0);
        let at = f.store(3, true).unwrap();
        assert_eq!(at.checkpoint.tree_size, 10);
        let root = read(&mut f.store, |r| {
            merkle::root(&StoreSource(r), 10).map_err(build_error)
        })
        .unwrap();
        assert_eq!(at.checkpoint.root.0, root);

        // Leaves must continue the log.
        let agent = f.agent.clone();
        let bad = write(&mut f.store, |w| {
            append(
                w,
                &[Leaf {
                    agent: &agent,
                    seq: 11,
                    hash: Digest([1; 32]),
                    arrival: 12,
                }],
            )
        });
        assert!(matches!(bad, Err(StoreError::Corrupt(_))), "{bad:?}");
    }
}
