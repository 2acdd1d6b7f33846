//! Re-checking the local chain from seq 1: every envelope's signature with the agent's key for
//! that seq (the key ring: keys retired by a rotation signed the seqs up to their last one),
//! the `prev` links, stored hash = recomputed hash, no gaps. Rows are read in chunks so memory
//! stays bounded however long the chain is. The first bad seq is reported. [`verify_tail`]
//! checks only the last envelopes (the start-up check); [`check_at_start`] adds SQLite's
//! `quick_check`, so a damaged outbox stops the agent with an error naming the file.

use tongbu_shared::crypto::Digest;
use tongbu_shared::envelope::{ChainError, verify_run};
use tongbu_shared::ids::AgentId;

use crate::outbox::{KeyRing, Outbox, OutboxError};

/// Rows read and checked at a time.
const CHUNK: usize = 1000;

/// The whole chain verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub head_seq: u64,
    pub head_hash: Digest,
}

/// The first envelope that does not verify, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seq {seq}: {problem}")]
pub struct BadSeq {
    pub seq: u64,
    pub problem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Bad(BadSeq),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

impl From<BadSeq> for VerifyError {
    fn from(b: BadSeq) -> Self {
        VerifyError::Bad(b)
    }
}

/// Verifies every stored envelope of `agent`'s chain against the key that signed its seq.
pub fn verify_chain(
    outbox: &Outbox,
    agent: &AgentId,
    keys: &KeyRing,
) -> Result<Verified, VerifyError> {
    verify_from(outbox, agent, keys, 0, Digest::GENESIS)
}

/// Verifies the last `n` stored envelopes (what the agent checks at start-up): the run after
/// seq `head - n`, starting from the hash stored there.
pub fn verify_tail(
    outbox: &Outbox,
    agent: &AgentId,
    keys: &KeyRing,
    n: u64,
) -> Result<Verified, VerifyError> {
    let head = outbox.head()?.seq;
    let start = head.saturating_sub(n);
    let hash = if start == 0 {
        Digest::GENESIS
    } else {
        outbox.hash_at(start)?.ok_or_else(|| BadSeq {
            seq: start,
            problem: "missing".to_owned(),
        })?
    };
    verify_from(outbox, agent, keys, start, hash)
}

fn verify_from(
    outbox: &Outbox,
    agent: &AgentId,
    keys: &KeyRing,
    start: u64,
    start_hash: Digest,
) -> Result<Verified, VerifyError> {
    let (mut seq, mut hash) = (start, start_hash);
    loop {
        let rows = outbox.rows_after(seq, CHUNK)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let bad = |problem: String| BadSeq {
                seq: row.seq,
                problem,
            };
            if row.seq != seq + 1 {
                return Err(BadSeq {
                    seq: seq + 1,
                    problem: format!("missing (the next stored record is seq {})", row.seq),
                }
                .into());
            }
            let (envelope, stored) = row.to_envelope(agent).map_err(bad)?;
            let key = keys.for_seq(row.seq);
            let recomputed = verify_run(key, agent, seq, hash, std::slice::from_ref(&envelope))
                .map_err(|e| bad(describe(&e)))?;
            if recomputed != stored {
                return Err(bad(format!(
                    "the stored hash {stored} does not match the recomputed hash {recomputed}"
                ))
                .into());
            }
            (seq, hash) = (row.seq, recomputed);
        }
    }
    Ok(Verified {
        records: seq - start,
        head_seq: seq,
        head_hash: hash,
    })
}

/// Envelopes re-verified at start-up.
pub const START_TAIL: u64 = 1000;

/// The start-up check: `PRAGMA quick_check`, then the last [`START_TAIL`] envelopes. Either
/// failing is [`OutboxError::Damaged`] naming the file.
pub fn check_at_start(
    outbox: &Outbox,
    path: &std::path::Path,
    agent: &AgentId,
    keys: &KeyRing,
) -> Result<(), OutboxError> {
    outbox.check_integrity(false)?;
    match verify_tail(outbox, agent, keys, START_TAIL) {
        Ok(_) => Ok(()),
        Err(VerifyError::Bad(bad)) => Err(OutboxError::Damaged {
            path: path.to_owned(),
            problem: format!("the chain does not verify at {bad}"),
        }),
        Err(VerifyError::Outbox(e)) => Err(e),
    }
}

/// A chain error without its seq (the caller names the seq).
fn describe(e: &ChainError) -> String {
    match e {
        ChainError::BadSignature { .. } => {
            "the signature does not verify (its body, prev or signature was altered)".to_owned()
        }
        ChainError::PrevMismatch { seq, expected, .. } => format!(
            "prev does not match the hash {expected} of seq {}",
            seq.saturating_sub(1)
        ),
        ChainError::BodyTooLarge { len, .. } => format!("the body is {len} bytes, too large"),
        ChainError::Gap { expected, found } => {
            format!("expected seq {expected}, found {found}")
        }
        ChainError::WrongAgent { found, .. } => format!("signed for agent {found}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::NewRecord;
    use crate::outbox::tests::{agent, body, key};
    use rusqlite::Connection;
    use tongbu_shared::ids::Code;
    use tongbu_shared::record::Kind;

    fn chain_of(n: u64) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let mut outbox = Outbox::open(&path).unwrap();
        let id = Code::parse("P-1").unwrap();
        let bodies: Vec<Vec<u8>> = (1..=n).map(body).collect();
        let records: Vec<NewRecord<'_>> = bodies
            .iter()
            .map(|b| NewRecord {
                body: b,
                kind: Kind::Payment,
                id: &id,
                rev: 1,
            })
            .collect();
        outbox.append(&key(), &agent(), &records, 0).unwrap();
        (dir, path)
    }

    fn verify_at(path: &std::path::Path) -> Result<Verified, VerifyError> {
        let outbox = Outbox::open(path).unwrap();
        verify_chain(&outbox, &agent(), &key().public_key().into())
    }

    fn tamper(path: &std::path::Path, sql: &str) {
        Connection::open(path).unwrap().execute_batch(sql).unwrap();
    }

    fn bad_seq(path: &std::path::Path) -> BadSeq {
        match verify_at(path) {
            Err(VerifyError::Bad(b)) => b,
            other => panic!("expected a bad seq, got {other:?}"),
        }
    }

    #[test]
    fn an_intact_chain_verifies_across_chunks() {
        let (_dir, path) = chain_of(2500);
        let v = verify_at(&path).unwrap();
        assert_eq!((v.records, v.head_seq), (2500, 2500));
        assert_eq!(
            v.head_hash,
            Outbox::open(&path).unwrap().head().unwrap().hash
        );
        let (_dir, path) = chain_of(0);
        assert_eq!(verify_at(&path).unwrap().head_hash, Digest::GENESIS);
    }

    #[test]
    fn an_altered_body_is_named_by_seq() {
        let (_dir, path) = chain_of(5);
        // replace() turns the blob into text, as a hand edit would.
        tamper(
            &path,
            "UPDATE envelopes SET body = replace(body, '\"amount_fen\":100', '\"amount_fen\":900') WHERE seq = 3",
        );
        let b = bad_seq(&path);
        assert_eq!(b.seq, 3);
        assert!(
            b.to_string()
                .starts_with("seq 3: the signature does not verify"),
            "{b}"
        );
    }

    #[test]
    fn an_altered_signature_or_prev_is_named_by_seq() {
        let (_dir, path) = chain_of(5);
        tamper(
            &path,
            "UPDATE envelopes SET sig = zeroblob(64) WHERE seq = 2",
        );
        assert_eq!(bad_seq(&path).seq, 2);

        let (_dir, path) = chain_of(5);
        tamper(
            &path,
            "UPDATE envelopes SET prev = zeroblob(32) WHERE seq = 4",
        );
        assert_eq!(bad_seq(&path).seq, 4);

        let (_dir, path) = chain_of(5);
        tamper(
            &path,
            "UPDATE envelopes SET hash = zeroblob(32) WHERE seq = 5",
        );
        let b = bad_seq(&path);
        assert_eq!(b.seq, 5);
        assert!(b.problem.contains("stored hash"), "{b}");
    }

    #[test]
    fn a_gap_is_named_by_the_missing_seq() {
        let (_dir, path) = chain_of(5);
        tamper(&path, "DELETE FROM envelopes WHERE seq = 2");
        let b = bad_seq(&path);
        assert_eq!(b.seq, 2);
        assert!(b.problem.starts_with("missing"), "{b}");
    }
}
