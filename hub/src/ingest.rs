//! Taking in a batch of envelopes from one agent: the hub's core decision, free of HTTP.
//!
//! Three steps, cheapest first: [`check_shape`] (size, agent field, consecutive seqs) needs
//! nothing; [`verify`] checks every signature (each with the key that signed its seq, see
//! [`crate::rotate::AgentKeys`]; a key that signed many of the batch is prepared first, which
//! accepts exactly what ring accepts, see [`PreparedKey`]), hashes every envelope and parses
//! every body (CPU heavy: run it off the async threads and outside the writer); [`apply`] runs
//! inside one write transaction, re-reads the agent's chain and either appends the new
//! envelopes and judges them by the rules ([`crate::ledger`]; each envelope's row is written
//! at its record's first decision, with that verdict), acknowledges a resend, refuses the batch,
//! or — when the agent has provably signed two histories — quarantines it.
//!
//! Invariants: a batch is stored whole or not at all, together with every ledger change its
//! records cause; an envelope at a seq the hub holds is never replaced; `acked_seq` only
//! grows, and envelopes `1..=acked_seq` form one chain from genesis to `head_hash`. New records
//! are judged in seq order, each by the policy version current in the transaction that stores
//! it; a body that is not a well-formed record is still kept — it is signed and part of the
//! chain — as `rejected` with [`MALFORMED_RECORD`], outside the ledger.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tongbu_shared::crypto::{Digest, PreparedKey, PublicKey, Signature};
use tongbu_shared::envelope::{Envelope, MAX_BODY_BYTES};
use tongbu_shared::ids::AgentId;
use tongbu_shared::protocol::{AgentState, Heartbeat, MAX_BATCH_ENVELOPES, RecordOutcome};
use tongbu_shared::record::Record;
use tongbu_shared::rules::Pending;

use crate::ledger::{self, Arriving, Judged, TxLedger};
use crate::log;
use crate::policy::{PolicyCache, current_version};
use crate::rotate::AgentKeys;
use crate::store::{
    AgentRecord, Alert, AlertKind, Equivocation, HeartbeatUpdate, StoreError, StoredEnvelope,
    StoredVerdict, Verdict, Writes,
};

/// The rule code of a body that is not a well-formed v1 record.
pub const MALFORMED_RECORD: &str = "MALFORMED_RECORD";
/// Longest agent version the hub keeps, in characters (longer ones are cut).
const MAX_VERSION_CHARS: usize = 64;
/// Longest `last_error` the hub keeps, in characters (longer ones are cut).
const MAX_LAST_ERROR_CHARS: usize = 1000;
/// Envelopes of one key in a batch from which its signatures are checked with a prepared
/// table of the key (building one costs about 20 ring verifications).
const PREPARE_FROM: usize = 32;

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the batch has {count} envelopes, more than {MAX_BATCH_ENVELOPES}")]
    BatchTooLarge { count: usize },
    #[error("seq {seq}: the envelope names agent {found}, not the agent sending it")]
    WrongAgent { seq: u64, found: String },
    #[error("seq {seq} is out of range: seqs run from 1 to 2^63-1")]
    SeqOutOfRange { seq: u64 },
    #[error("the envelopes are not consecutive: seq {found} follows seq {after}")]
    NotConsecutive { after: u64, found: u64 },
    #[error("seq {seq}: the record is {len} bytes, more than the limit of {MAX_BODY_BYTES}")]
    BodyTooLarge { seq: u64, len: usize },
    #[error("seq {seq}: the envelope's signature does not verify with the agent's key")]
    BadSignature { seq: u64 },
    #[error(
        "the batch starts at seq {first} but the hub holds seqs up to {acked_seq}: \
         resend from seq {}", acked_seq + 1
    )]
    ChainGap { acked_seq: u64, first: u64 },
    #[error(
        "seq {seq}: the agent signed an envelope that contradicts the chain the hub holds; \
         the agent is quarantined"
    )]
    Equivocation { seq: u64 },
    #[error("the agent is quarantined: an administrator must look into it")]
    AgentQuarantined,
    #[error("the agent's enrollment was revoked")]
    AgentRevoked,
    #[error("no such agent is enrolled")]
    UnknownAgent,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A failure inside the hub (a task died, a reply could not be signed).
    #[error("internal error: {0}")]
    Internal(String),
}

/// What an authenticated request tells the hub about the agent, to note in any case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub at_ms: i64,
    pub heartbeat: Option<HeartbeatUpdate>,
}

impl Contact {
    /// A contact carrying the agent's heartbeat; over-long text is cut, never refused, so a
    /// chatty error message can never keep records from syncing.
    pub fn with_heartbeat(at_ms: i64, hb: &Heartbeat) -> Contact {
        Contact {
            at_ms,
            heartbeat: Some(HeartbeatUpdate {
                reported_head_seq: hb.head_seq,
                queue_depth: hb.queue_depth,
                agent_version: clip(&hb.agent_version, MAX_VERSION_CHARS),
                last_error: hb
                    .last_error
                    .as_deref()
                    .map(|e| clip(e, MAX_LAST_ERROR_CHARS)),
            }),
        }
    }

    pub fn bare(at_ms: i64) -> Contact {
        Contact {
            at_ms,
            heartbeat: None,
        }
    }
}

/// At most `max` characters of `s`.
pub(crate) fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Refuses batches from agents that may not send any.
pub fn check_state(state: AgentState) -> Result<(), IngestError> {
    match state {
        AgentState::Active => Ok(()),
        AgentState::Quarantined => Err(IngestError::AgentQuarantined),
        AgentState::Revoked => Err(IngestError::AgentRevoked),
    }
}

/// Stateless checks: batch size, every envelope from `agent`, seqs in range and consecutive.
pub fn check_shape(agent: &AgentId, envelopes: &[Envelope]) -> Result<(), IngestError> {
    if envelopes.len() > MAX_BATCH_ENVELOPES {
        return Err(IngestError::BatchTooLarge {
            count: envelopes.len(),
        });
    }
    let mut after: Option<u64> = None;
    for e in envelopes {
        if &e.agent != agent {
            return Err(IngestError::WrongAgent {
                seq: e.seq,
                found: e.agent.to_string(),
            });
        }
        if e.seq == 0 || i64::try_from(e.seq).is_err() {
            return Err(IngestError::SeqOutOfRange { seq: e.seq });
        }
        if e.body.len() > MAX_BODY_BYTES {
            return Err(IngestError::BodyTooLarge {
                seq: e.seq,
                len: e.body.len(),
            });
        }
        if let Some(after) = after
            && after.checked_add(1) != Some(e.seq)
        {
            return Err(IngestError::NotConsecutive {
                after,
                found: e.seq,
            });
        }
        after = Some(e.seq);
    }
    Ok(())
}

/// An envelope whose signature verified, with its chain hash and its body parsed (leniently:
/// an invalid supplier code is kept for the rules to flag). Only [`verify`] makes these.
#[derive(Debug, Clone)]
pub struct Verified {
    envelope: Envelope,
    hash: Digest,
    /// SHA-256 of the body (how the rules recognise an identical copy of a revision).
    body_digest: Digest,
    /// The record, or why the body is not a well-formed record.
    record: Result<Record, String>,
}

impl Verified {
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    pub fn hash(&self) -> Digest {
        self.hash
    }
}

/// A batch that passed [`check_shape`] and [`verify`]: consecutive envelopes of one agent,
/// each validly signed by that agent's key.
#[derive(Debug, Clone)]
pub struct VerifiedBatch {
    agent: AgentId,
    envelopes: Vec<Verified>,
}

impl VerifiedBatch {
    pub fn agent(&self) -> &AgentId {
        &self.agent
    }

    pub fn envelopes(&self) -> &[Verified] {
        &self.envelopes
    }
}

/// Checks the batch's shape and every signature, hashes every envelope and parses every body.
/// CPU heavy: call it from `spawn_blocking`. A key that signed `PREPARE_FROM` (32) or more of the
/// envelopes is prepared first ([`PreparedKey`]: the same acceptance as ring, a quarter to a third
/// of the time per signature); the first envelope whose signature fails is named either way.
pub fn verify(
    keys: &AgentKeys,
    agent: &AgentId,
    envelopes: Vec<Envelope>,
    tables: &KeyTables,
) -> Result<VerifiedBatch, IngestError> {
    check_shape(agent, &envelopes)?;
    let signed: Vec<Vec<u8>> = envelopes.iter().map(Envelope::signing_bytes).collect();
    let good = check_signatures(keys, &envelopes, &signed, tables);
    let envelopes = envelopes
        .into_iter()
        .zip(signed)
        .zip(good)
        .map(|((envelope, signed), good)| {
            if !good {
                return Err(IngestError::BadSignature { seq: envelope.seq });
            }
            let hash = envelope.hash_of_signed(&signed);
            let record = Record::parse_lenient(&envelope.body).map_err(|e| e.to_string());
            Ok(Verified {
                body_digest: Digest::of(&[&envelope.body]),
                envelope,
                hash,
                record,
            })
        })
        .collect::<Result<Vec<_>, IngestError>>()?;
    Ok(VerifiedBatch {
        agent: agent.clone(),
        envelopes,
    })
}

/// Whether each envelope's signature verifies with the key of its seq (`signed`: their
/// signing bytes): the envelopes of a prepared key together, the others with ring.
fn check_signatures(
    keys: &AgentKeys,
    envelopes: &[Envelope],
    signed: &[Vec<u8>],
    tables: &KeyTables,
) -> Vec<bool> {
    let mut good: Vec<Option<bool>> = vec![None; envelopes.len()];
    for table in prepare(keys, envelopes, tables) {
        let mine: Vec<usize> = (0..envelopes.len())
            .filter(|&i| keys.for_seq(envelopes[i].seq) == table.public_key())
            .collect();
        let items: Vec<(&[u8], &Signature)> = mine
            .iter()
            .map(|&i| (signed[i].as_slice(), &envelopes[i].sig))
            .collect();
        for (i, ok) in mine.into_iter().zip(table.verify_each(&items)) {
            good[i] = Some(ok);
        }
    }
    good.into_iter()
        .zip(envelopes.iter().zip(signed))
        .map(|(known, (e, signed))| {
            known.unwrap_or_else(|| keys.for_seq(e.seq).verify_raw(signed, &e.sig).is_ok())
        })
        .collect()
}

/// Prepared keys kept for later batches (~0.7 MB each): an agent catching up sends batch after
/// batch signed by one key.
const KEPT_TABLES: usize = 8;

/// The most recently prepared keys, most recent first; shared by every batch's check.
#[derive(Default)]
pub struct KeyTables {
    recent: Mutex<VecDeque<Arc<PreparedKey>>>,
}

impl std::fmt::Debug for KeyTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTables").finish_non_exhaustive()
    }
}

impl KeyTables {
    /// `key` prepared: kept from an earlier batch, or built now (outside the lock) and kept.
    /// `None` for a key ring must judge on its own (not a canonical point encoding).
    fn get(&self, key: &PublicKey) -> Option<Arc<PreparedKey>> {
        let lock = || self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut recent = lock();
            if let Some(at) = recent.iter().position(|t| t.public_key() == key) {
                let table = recent.remove(at)?;
                recent.push_front(Arc::clone(&table));
                return Some(table);
            }
        }
        let table = Arc::new(PreparedKey::new(key)?);
        let mut recent = lock();
        recent.push_front(Arc::clone(&table));
        recent.truncate(KEPT_TABLES);
        Some(table)
    }
}

/// The keys that signed at least [`PREPARE_FROM`] of `envelopes`, prepared (a key ring must
/// judge on its own, not being a canonical point encoding, is left out).
fn prepare(keys: &AgentKeys, envelopes: &[Envelope], tables: &KeyTables) -> Vec<Arc<PreparedKey>> {
    let mut counts: Vec<(&PublicKey, usize)> = Vec::new();
    for e in envelopes {
        let key = keys.for_seq(e.seq);
        match counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => counts.push((key, 1)),
        }
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n >= PREPARE_FROM)
        .filter_map(|(key, _)| tables.get(key))
        .collect()
}

/// The agent's chain as the hub holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainState {
    pub state: AgentState,
    pub acked_seq: u64,
    pub head_hash: Digest,
}

impl ChainState {
    pub fn of(agent: &AgentRecord) -> ChainState {
        ChainState {
            state: agent.state,
            acked_seq: agent.acked_seq,
            head_hash: agent.head_hash,
        }
    }
}

/// How a batch contradicts the chain the hub holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// `batch[index]` differs from the envelope the hub holds at the same seq.
    DifferentEnvelope { index: usize },
    /// `batch[index]`'s `prev` is not the hash of the envelope before it.
    PrevMismatch { index: usize, expected: Digest },
}

/// What to do with a batch.
#[derive(Debug)]
pub enum Decision {
    /// Store nothing of it and answer with this error.
    Refuse(IngestError),
    /// The agent signed two histories: quarantine it and keep the evidence.
    Equivocate(Conflict),
    /// Acknowledge the resent envelopes (`resent`: their stored outcomes) and append
    /// `batch[new_from..]`.
    Append {
        resent: Vec<RecordOutcome>,
        new_from: usize,
        acked_seq: u64,
        head_hash: Digest,
    },
}

/// Decides what to do with `batch` given the agent's chain and `held`, the stored verdicts of
/// the batch's envelopes at seqs the hub already holds (in seq order).
pub fn decide(
    chain: &ChainState,
    held: &[StoredVerdict],
    batch: &[Verified],
) -> Result<Decision, StoreError> {
    if let Err(e) = check_state(chain.state) {
        return Ok(Decision::Refuse(e));
    }
    let new_from = batch
        .iter()
        .position(|v| v.envelope.seq > chain.acked_seq)
        .unwrap_or(batch.len());
    if held.len() != new_from {
        return Err(StoreError::Corrupt(format!(
            "the hub holds {} of the {} envelopes at or below its watermark",
            held.len(),
            new_from
        )));
    }

    let mut outcomes = Vec::with_capacity(batch.len());
    for (index, (v, h)) in batch.iter().zip(held).enumerate() {
        if h.seq != v.envelope.seq {
            return Err(StoreError::Corrupt(format!(
                "looked for seq {}, found seq {}",
                v.envelope.seq, h.seq
            )));
        }
        if h.hash != v.hash {
            return Ok(Decision::Equivocate(Conflict::DifferentEnvelope { index }));
        }
        outcomes.push(RecordOutcome {
            seq: h.seq,
            outcome: h.outcome,
            codes: h.codes.clone(),
            duplicate: true,
            detail: h.detail.clone(),
            policy_version: h.policy_version,
        });
    }

    let mut acked_seq = chain.acked_seq;
    let mut head_hash = chain.head_hash;
    if let Some(first) = batch.get(new_from)
        && first.envelope.seq != chain.acked_seq + 1
    {
        return Ok(Decision::Refuse(IngestError::ChainGap {
            acked_seq: chain.acked_seq,
            first: first.envelope.seq,
        }));
    }
    for (index, v) in batch.iter().enumerate().skip(new_from) {
        if v.envelope.prev != head_hash {
            return Ok(Decision::Equivocate(Conflict::PrevMismatch {
                index,
                expected: head_hash,
            }));
        }
        acked_seq = v.envelope.seq;
        head_hash = v.hash;
    }
    Ok(Decision::Append {
        resent: outcomes,
        new_from,
        acked_seq,
        head_hash,
    })
}

/// What the receipt for a stored batch says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub acked_seq: u64,
    pub head_hash: Digest,
    /// One per envelope of the batch, in seq order: resent ones with their stored outcome,
    /// new ones with their outcome at commit.
    pub outcomes: Vec<RecordOutcome>,
    /// How many envelopes were new.
    pub appended: usize,
    /// The agent's outcome changes after its cursor, oldest first.
    pub updates: Vec<RecordOutcome>,
    pub outcome_cursor: u64,
    /// The policy version current when the batch was stored.
    pub policy_version: u64,
    /// Every decision the batch caused (also about other agents' held records).
    pub judged: Vec<Judged>,
}

/// The result of applying a batch: what the receipt says, or why it was refused.
#[derive(Debug)]
pub enum Applied {
    Stored(Stored),
    Refused(IngestError),
}

/// Applies a verified batch inside the caller's write transaction. The contact (last seen,
/// heartbeat) is noted whatever the decision; a refusal is returned as `Ok(Refused)` so the
/// caller commits that note — and, for equivocation, the quarantine and its evidence.
/// `outcome_cursor` is the last outcome change the agent has recorded (its heartbeat's).
pub fn apply(
    w: &mut dyn Writes,
    policies: &PolicyCache,
    batch: &VerifiedBatch,
    contact: &Contact,
    outcome_cursor: u64,
) -> Result<Applied, StoreError> {
    let id = &batch.agent;
    let Some(agent) = w.agent(id)? else {
        return Ok(Applied::Refused(IngestError::UnknownAgent));
    };
    w.record_contact(id, contact.at_ms, contact.heartbeat.as_ref())?;
    let chain = ChainState::of(&agent);
    let held = match (batch.envelopes.first(), batch.envelopes.last(), chain.state) {
        (Some(first), Some(last), AgentState::Active) if first.envelope.seq <= chain.acked_seq => {
            let to = last.envelope.seq.min(chain.acked_seq);
            w.verdicts(id, first.envelope.seq, to)?
        }
        _ => Vec::new(),
    };
    match decide(&chain, &held, &batch.envelopes)? {
        Decision::Refuse(e) => Ok(Applied::Refused(e)),
        Decision::Equivocate(conflict) => {
            let seq = quarantine(w, batch, conflict, contact.at_ms)?;
            Ok(Applied::Refused(IngestError::Equivocation { seq }))
        }
        Decision::Append {
            resent,
            new_from,
            acked_seq,
            head_hash,
        } => {
            let new = &batch.envelopes[new_from..];
            let mut outcomes = resent;
            let mut judged = Vec::new();
            if !new.is_empty() {
                judged = judge_new(w, policies, id, new, contact.at_ms)?;
                w.set_chain_head(id, acked_seq, &head_hash)?;
                // The latest verdict on each new record: one released later in the same
                // batch reports its final outcome.
                let latest: HashMap<u64, &Verdict> = judged
                    .iter()
                    .filter(|j| &j.agent == id)
                    .map(|j| (j.seq, &j.verdict))
                    .collect();
                for v in new {
                    let seq = v.envelope.seq;
                    let verdict = latest.get(&seq).ok_or_else(|| {
                        StoreError::Corrupt(format!("no verdict on {id} seq {seq}"))
                    })?;
                    outcomes.push(ledger::record_outcome(seq, verdict, false));
                }
            }
            let (updates, outcome_cursor) = ledger::updates(&*w, id, outcome_cursor)?;
            Ok(Applied::Stored(Stored {
                acked_seq,
                head_hash,
                outcomes,
                appended: new.len(),
                updates,
                outcome_cursor,
                policy_version: current_version(&*w)?,
                judged,
            }))
        }
    }
}

/// Appends the new envelopes to the log and judges each record by the current policy, in seq
/// order, each envelope stored (numbered by arrival) with its first verdict; returns every
/// decision made.
fn judge_new(
    w: &mut dyn Writes,
    policies: &PolicyCache,
    agent: &AgentId,
    new: &[Verified],
    now_ms: i64,
) -> Result<Vec<Judged>, StoreError> {
    let policy_version = current_version(&*w)?;
    let first_arrival = w.last_arrival()? + 1;
    let leaves: Vec<log::Leaf<'_>> = new
        .iter()
        .zip(first_arrival..)
        .map(|(v, arrival)| log::Leaf {
            agent,
            seq: v.envelope.seq,
            hash: v.hash,
            arrival,
        })
        .collect();
    log::append(w, &leaves)?;
    let mut ledger = TxLedger::new(w, policies, now_ms);
    for (v, arrival) in new.iter().zip(first_arrival..) {
        let e = &v.envelope;
        let row = Arriving {
            envelope: e,
            hash: v.hash,
            arrival,
            record: v.record.as_ref().ok(),
        };
        match &v.record {
            Ok(record) => {
                ledger.ingest_new(
                    Pending {
                        agent: agent.clone(),
                        seq: e.seq,
                        record: record.clone(),
                        digest: v.body_digest,
                        order: arrival,
                        received_ms: now_ms,
                        policy_version,
                        held_at: None,
                    },
                    row,
                )?;
            }
            Err(problem) => {
                ledger.reject_new_malformed(row, problem)?;
            }
        }
    }
    ledger.finish()
}

/// Notes an authenticated request whose batch never reached [`apply`].
pub fn note_contact(
    w: &mut dyn Writes,
    agent: &AgentId,
    contact: &Contact,
) -> Result<(), StoreError> {
    w.record_contact(agent, contact.at_ms, contact.heartbeat.as_ref())
}

/// Quarantines the agent and keeps the proof; returns the seq at fault.
fn quarantine(
    w: &mut dyn Writes,
    batch: &VerifiedBatch,
    conflict: Conflict,
    at_ms: i64,
) -> Result<u64, StoreError> {
    let id = &batch.agent;
    let (seq, detail, evidence) = match conflict {
        Conflict::DifferentEnvelope { index } => {
            let received = &batch.envelopes[index].envelope;
            let held = w
                .envelope(id, received.seq)?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "seq {} is below the watermark but missing",
                        received.seq
                    ))
                })?
                .into_envelope();
            (
                received.seq,
                format!(
                    "agent {id} signed two different envelopes at seq {}",
                    received.seq
                ),
                evidence_json(&Evidence {
                    kind: "different_envelope",
                    seq: received.seq,
                    expected_prev: None,
                    held: Some(&held),
                    received,
                })?,
            )
        }
        Conflict::PrevMismatch { index, expected } => {
            let received = &batch.envelopes[index].envelope;
            let predecessor = match index.checked_sub(1) {
                Some(i) => Some(batch.envelopes[i].envelope.clone()),
                None if received.seq > 1 => w
                    .envelope(id, received.seq - 1)?
                    .map(StoredEnvelope::into_envelope),
                None => None,
            };
            (
                received.seq,
                format!(
                    "agent {id} signed seq {} after a seq {} other than the one the hub holds \
                     (prev {}, expected {expected})",
                    received.seq,
                    received.seq.saturating_sub(1),
                    received.prev
                ),
                evidence_json(&Evidence {
                    kind: "prev_mismatch",
                    seq: received.seq,
                    expected_prev: Some(expected),
                    held: predecessor.as_ref(),
                    received,
                })?,
            )
        }
    };
    w.set_agent_state(id, AgentState::Quarantined)?;
    w.insert_alert(&Alert {
        agent: id.clone(),
        kind: AlertKind::Equivocation,
        seq: Some(seq),
        detail,
        at_ms,
    })?;
    w.insert_equivocation(&Equivocation {
        agent: id.clone(),
        seq,
        evidence,
        at_ms,
    })?;
    tracing::warn!(agent = %id, seq, "equivocation: agent quarantined");
    Ok(seq)
}

/// Proof of equivocation as stored: both envelopes in their exact wire form (their bodies are
/// the signed bytes, so anyone can re-verify the signatures from this record alone).
#[derive(Serialize)]
struct Evidence<'a> {
    kind: &'static str,
    seq: u64,
    /// For `prev_mismatch`: the hash of the envelope the received one should have followed.
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_prev: Option<Digest>,
    /// The envelope the hub holds at `seq` (`different_envelope`) or at `seq - 1`
    /// (`prev_mismatch`; absent at seq 1).
    held: Option<&'a Envelope>,
    received: &'a Envelope,
}

fn evidence_json(evidence: &Evidence<'_>) -> Result<String, StoreError> {
    // Serialized directly, never through `serde_json::Value`, which would reorder the keys of
    // the bodies and so break their signatures.
    serde_json::to_string(evidence)
        .map_err(|e| StoreError::Backend(format!("cannot encode the evidence: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{County, NewAgent, SqliteStore, Store, read, write};
    use tongbu_shared::protocol::Outcome;
    use tongbu_shared::{CountyCode, KeyPair};

    const NOW: i64 = 1_795_762_113_000;

    /// The evidence as stored, read back with the bodies' exact bytes.
    #[derive(serde::Deserialize)]
    struct StoredEvidence {
        kind: String,
        expected_prev: Option<Digest>,
        held: Option<Envelope>,
        received: Envelope,
    }

    fn agent_id() -> AgentId {
        AgentId::parse("430112-0000000a").unwrap()
    }

    fn key() -> KeyPair {
        KeyPair::from_seed(&[7; 32]).unwrap()
    }

    /// A budget line: accepted on its own, whatever else the chain holds.
    fn body(n: u64) -> Vec<u8> {
        format!(
            r#"{{"kind":"budget_line","id":"BL-{n}","rev":1,"county":"430112","department":"101001","fiscal_year":2024,"catalogue_code":"A0501","amount_fen":{},"stage":"approved","approved_on":"2024-01-15"}}"#,
            100 + n
        )
        .into_bytes()
    }

    /// A chain of `n` envelopes signed by `key`, from genesis.
    fn chain(key: &KeyPair, n: u64) -> Vec<Envelope> {
        let mut prev = Digest::GENESIS;
        (1..=n)
            .map(|seq| {
                let e = Envelope::sign(key, agent_id(), seq, prev, body(seq));
                prev = e.hash();
                e
            })
            .collect()
    }

    fn heartbeat() -> Heartbeat {
        Heartbeat {
            head_seq: 9,
            queue_depth: 3,
            agent_version: "0.1.0".into(),
            last_error: Some("network down".into()),
            outcome_cursor: 0,
            log_size: 0,
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        store: SqliteStore,
        policies: PolicyCache,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let mut store = SqliteStore::open(dir.path()).unwrap();
            let code = CountyCode::parse("430112").unwrap();
            write(&mut store, |w| {
                w.insert_county(&County {
                    code: code.clone(),
                    name: "望城区".into(),
                    created_at_ms: 0,
                })?;
                w.insert_agent(&NewAgent {
                    id: agent_id(),
                    county: code.clone(),
                    public_key: key().public_key(),
                    enrolled_at_ms: 0,
                    agent_version: "0.1.0".into(),
                    hostname: None,
                })
            })
            .unwrap();
            write(&mut store, |w| {
                crate::policy::ensure_initial(w, &KeyPair::from_seed(&[1; 32]).unwrap(), 0, "t")
            })
            .unwrap();
            Fixture {
                _dir: dir,
                store,
                policies: PolicyCache::default(),
            }
        }

        fn send(&mut self, envelopes: Vec<Envelope>) -> Result<Applied, IngestError> {
            let agent = read(&mut self.store, |r| r.agent(&agent_id()))?
                .ok_or(IngestError::UnknownAgent)?;
            let batch = verify(
                &agent.public_key.into(),
                &agent_id(),
                envelopes,
                &KeyTables::default(),
            )?;
            let contact = Contact::with_heartbeat(NOW, &heartbeat());
            let policies = &self.policies;
            Ok(write(&mut self.store, |w| {
                apply(w, policies, &batch, &contact, 0)
            })?)
        }

        fn agent(&mut self) -> AgentRecord {
            read(&mut self.store, |r| r.agent(&agent_id()))
                .unwrap()
                .unwrap()
        }

        fn stored_seqs(&mut self) -> Vec<u64> {
            read(&mut self.store, |r| r.verdicts(&agent_id(), 1, u64::MAX))
                .unwrap()
                .into_iter()
                .map(|v| v.seq)
                .collect()
        }

        fn set_state(&mut self, state: AgentState) {
            let store: &mut dyn Store = &mut self.store;
            write(store, |w| w.set_agent_state(&agent_id(), state)).unwrap();
        }
    }

    fn stored(applied: Applied) -> (u64, Digest, Vec<RecordOutcome>) {
        match applied {
            Applied::Stored(s) => (s.acked_seq, s.head_hash, s.outcomes),
            Applied::Refused(e) => panic!("refused: {e}"),
        }
    }

    fn refused(applied: Applied) -> IngestError {
        match applied {
            Applied::Refused(e) => e,
            Applied::Stored(_) => panic!("stored"),
        }
    }

    #[test]
    fn a_fresh_chain_is_stored_and_acknowledged() {
        let mut f = Fixture::new();
        let c = chain(&key(), 3);
        let (acked, head, outcomes) = stored(f.send(c.clone()).unwrap());
        assert_eq!(acked, 3);
        assert_eq!(head, c[2].hash());
        assert_eq!(outcomes.len(), 3);
        assert!(
            outcomes
                .iter()
                .all(|o| o.outcome == Outcome::Accepted && !o.duplicate && o.codes.is_empty())
        );
        let agent = f.agent();
        assert_eq!((agent.acked_seq, agent.head_hash), (3, c[2].hash()));
        assert_eq!(agent.reported_head_seq, 9);
        assert_eq!(agent.queue_depth, 3);
        assert_eq!(agent.last_error.as_deref(), Some("network down"));
        assert_eq!(agent.last_seen_ms, Some(NOW));
        let e = read(&mut f.store, |r| r.envelope(&agent_id(), 2))
            .unwrap()
            .unwrap();
        assert_eq!(e.body, c[1].body);
        assert_eq!(e.sig, c[1].sig);
        assert_eq!(e.received_at_ms, NOW);
    }

    #[test]
    fn a_chain_continues_across_batches() {
        let mut f = Fixture::new();
        let c = chain(&key(), 5);
        stored(f.send(c[..2].to_vec()).unwrap());
        let (acked, head, outcomes) = stored(f.send(c[2..].to_vec()).unwrap());
        assert_eq!((acked, head), (5, c[4].hash()));
        assert_eq!(
            outcomes.iter().map(|o| o.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(f.stored_seqs(), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_resend_is_acknowledged_again_without_storing_twice() {
        let mut f = Fixture::new();
        let c = chain(&key(), 4);
        stored(f.send(c[..3].to_vec()).unwrap());
        // Overlapping resend: 2 and 3 are held, 4 is new.
        let (acked, head, outcomes) = stored(f.send(c[1..].to_vec()).unwrap());
        assert_eq!((acked, head), (4, c[3].hash()));
        assert_eq!(
            outcomes
                .iter()
                .map(|o| (o.seq, o.duplicate))
                .collect::<Vec<_>>(),
            [(2, true), (3, true), (4, false)]
        );
        // A pure resend changes nothing, whole or in part.
        let (acked, _, outcomes) = stored(f.send(c.clone()).unwrap());
        assert_eq!(acked, 4);
        assert!(outcomes.iter().all(|o| o.duplicate));
        let (acked, head, outcomes) = stored(f.send(c[..2].to_vec()).unwrap());
        assert_eq!((acked, head), (4, c[3].hash()));
        assert_eq!(
            outcomes
                .iter()
                .map(|o| (o.seq, o.duplicate))
                .collect::<Vec<_>>(),
            [(1, true), (2, true)]
        );
        assert_eq!(f.stored_seqs(), [1, 2, 3, 4]);
    }

    #[test]
    fn a_different_envelope_at_a_held_seq_quarantines_the_agent() {
        let mut f = Fixture::new();
        let k = key();
        let c = chain(&k, 3);
        stored(f.send(c.clone()).unwrap());
        let forged = Envelope::sign(&k, agent_id(), 2, c[0].hash(), body(99));
        let next = Envelope::sign(&k, agent_id(), 3, forged.hash(), body(100));
        let fourth = Envelope::sign(&k, agent_id(), 4, next.hash(), body(101));
        let err = refused(f.send(vec![forged, next, fourth]).unwrap());
        assert!(matches!(err, IngestError::Equivocation { seq: 2 }), "{err}");
        let agent = f.agent();
        assert_eq!(agent.state, AgentState::Quarantined);
        assert_eq!(agent.acked_seq, 3);
        assert_eq!(f.stored_seqs(), [1, 2, 3]);
        let alerts = read(&mut f.store, |r| r.alerts(&agent_id())).unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].seq, Some(2));
        let evidence = read(&mut f.store, |r| r.equivocations(&agent_id())).unwrap();
        assert_eq!(evidence.len(), 1);
        let v: StoredEvidence = serde_json::from_str(&evidence[0].evidence).unwrap();
        assert_eq!(v.kind, "different_envelope");
        assert_eq!(v.held, Some(c[1].clone()));
        assert!(v.received.verify(&k.public_key()).is_ok());
        assert_ne!(v.received, c[1]);
        // And from then on the agent is refused.
        let err = refused(f.send(vec![]).unwrap());
        assert!(matches!(err, IngestError::AgentQuarantined));
    }

    #[test]
    fn a_prev_that_forks_from_the_head_is_equivocation() {
        let mut f = Fixture::new();
        let k = key();
        let c = chain(&k, 2);
        stored(f.send(c.clone()).unwrap());
        let fork = Envelope::sign(&k, agent_id(), 3, Digest::of(&[b"elsewhere"]), body(3));
        let err = refused(f.send(vec![fork]).unwrap());
        assert!(matches!(err, IngestError::Equivocation { seq: 3 }), "{err}");
        assert_eq!(f.agent().state, AgentState::Quarantined);
        assert_eq!(f.stored_seqs(), [1, 2]);
        let evidence = read(&mut f.store, |r| r.equivocations(&agent_id())).unwrap();
        let v: StoredEvidence = serde_json::from_str(&evidence[0].evidence).unwrap();
        assert_eq!(v.kind, "prev_mismatch");
        assert_eq!(v.expected_prev, Some(c[1].hash()));
        assert_eq!(v.held, Some(c[1].clone()));
    }

    #[test]
    fn a_fork_inside_one_batch_is_equivocation_and_stores_nothing() {
        let mut f = Fixture::new();
        let k = key();
        let c = chain(&k, 2);
        let bad = Envelope::sign(&k, agent_id(), 3, Digest::of(&[b"x"]), body(3));
        let err = refused(f.send(vec![c[0].clone(), c[1].clone(), bad]).unwrap());
        assert!(matches!(err, IngestError::Equivocation { seq: 3 }));
        assert_eq!(f.stored_seqs(), Vec::<u64>::new());
        assert_eq!(f.agent().acked_seq, 0);
    }

    #[test]
    fn a_gap_is_refused_with_the_watermark() {
        let mut f = Fixture::new();
        let c = chain(&key(), 5);
        stored(f.send(c[..2].to_vec()).unwrap());
        let err = refused(f.send(c[3..].to_vec()).unwrap());
        assert!(
            matches!(
                err,
                IngestError::ChainGap {
                    acked_seq: 2,
                    first: 4
                }
            ),
            "{err}"
        );
        assert_eq!(f.stored_seqs(), [1, 2]);
        assert_eq!(f.agent().state, AgentState::Active);
    }

    #[test]
    fn a_bad_signature_stores_nothing() {
        let mut f = Fixture::new();
        let mut c = chain(&key(), 3);
        c[1].body = body(42);
        let err = f.send(c).unwrap_err();
        assert!(matches!(err, IngestError::BadSignature { seq: 2 }), "{err}");
        assert_eq!(f.stored_seqs(), Vec::<u64>::new());
        let other = KeyPair::from_seed(&[8; 32]).unwrap();
        let err = f.send(chain(&other, 1)).unwrap_err();
        assert!(matches!(err, IngestError::BadSignature { seq: 1 }));
        assert_eq!(f.agent().acked_seq, 0);
    }

    #[test]
    fn an_oversized_record_is_named_as_such_not_as_a_bad_signature() {
        let mut f = Fixture::new();
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_BODY_BYTES));
        let e = Envelope::sign(&key(), agent_id(), 1, Digest::GENESIS, big.into_bytes());
        let err = f.send(vec![e]).unwrap_err();
        assert!(
            matches!(err, IngestError::BodyTooLarge { seq: 1, .. }),
            "{err}"
        );
        assert_eq!(f.stored_seqs(), Vec::<u64>::new());
    }

    #[test]
    fn prepared_keys_are_kept_for_the_next_batches_and_a_bad_one_is_named() {
        let tables = KeyTables::default();
        let k = key();
        let first = tables.get(&k.public_key()).unwrap();
        assert!(Arc::ptr_eq(&first, &tables.get(&k.public_key()).unwrap()));
        for n in 0..KEPT_TABLES as u8 {
            tables.get(&KeyPair::from_seed(&[100 + n; 32]).unwrap().public_key());
        }
        assert!(!Arc::ptr_eq(&first, &tables.get(&k.public_key()).unwrap()));
        // A batch large enough to be checked with the prepared key names its first bad seq.
        let mut c = chain(&k, PREPARE_FROM as u64 + 8);
        c[20].sig.0[5] ^= 4;
        c[30].sig.0[40] ^= 4;
        let err = verify(&k.public_key().into(), &agent_id(), c, &tables).unwrap_err();
        assert!(
            matches!(err, IngestError::BadSignature { seq: 21 }),
            "{err}"
        );
    }

    #[test]
    fn shape_errors_are_caught_before_signatures() {
        let c = chain(&key(), 3);
        let mut skipping = c.clone();
        skipping.remove(1);
        assert!(matches!(
            check_shape(&agent_id(), &skipping),
            Err(IngestError::NotConsecutive { after: 1, found: 3 })
        ));
        let other = AgentId::parse("430112-0000000b").unwrap();
        assert!(matches!(
            check_shape(&other, &c),
            Err(IngestError::WrongAgent { seq: 1, .. })
        ));
        let too_many = vec![c[0].clone(); MAX_BATCH_ENVELOPES + 1];
        assert!(matches!(
            check_shape(&agent_id(), &too_many),
            Err(IngestError::BatchTooLarge { .. })
        ));
        let zero = Envelope::sign(&key(), agent_id(), 0, Digest::GENESIS, body(0));
        assert!(matches!(
            check_shape(&agent_id(), &[zero]),
            Err(IngestError::SeqOutOfRange { seq: 0 })
        ));
    }

    #[test]
    fn an_empty_batch_is_a_heartbeat() {
        let mut f = Fixture::new();
        let (acked, head, outcomes) = stored(f.send(vec![]).unwrap());
        assert_eq!((acked, head), (0, Digest::GENESIS));
        assert!(outcomes.is_empty());
        let agent = f.agent();
        assert_eq!(agent.reported_head_seq, 9);
        assert_eq!(agent.agent_version.as_deref(), Some("0.1.0"));
        assert_eq!(agent.last_seen_ms, Some(NOW));
    }

    #[test]
    fn quarantined_and_revoked_agents_are_refused_but_seen() {
        let mut f = Fixture::new();
        let c = chain(&key(), 1);
        f.set_state(AgentState::Revoked);
        assert!(matches!(
            refused(f.send(c.clone()).unwrap()),
            IngestError::AgentRevoked
        ));
        f.set_state(AgentState::Quarantined);
        assert!(matches!(
            refused(f.send(c).unwrap()),
            IngestError::AgentQuarantined
        ));
        assert_eq!(f.stored_seqs(), Vec::<u64>::new());
        assert_eq!(f.agent().last_seen_ms, Some(NOW));
    }

    #[test]
    fn a_malformed_body_is_kept_as_rejected() {
        let mut f = Fixture::new();
        let e = Envelope::sign(
            &key(),
            agent_id(),
            1,
            Digest::GENESIS,
            br#"{"kind":"gift"}"#.to_vec(),
        );
        let (_, _, outcomes) = stored(f.send(vec![e]).unwrap());
        assert_eq!(outcomes[0].outcome, Outcome::Rejected);
        assert_eq!(outcomes[0].codes, [MALFORMED_RECORD]);
        let held = read(&mut f.store, |r| r.envelope(&agent_id(), 1))
            .unwrap()
            .unwrap();
        assert_eq!(held.outcome, Outcome::Rejected);
        assert_eq!(held.codes, [MALFORMED_RECORD]);
        // A resend reports the stored verdict.
        let e = Envelope::sign(
            &key(),
            agent_id(),
            1,
            Digest::GENESIS,
            br#"{"kind":"gift"}"#.to_vec(),
        );
        let (_, _, outcomes) = stored(f.send(vec![e]).unwrap());
        assert!(outcomes[0].duplicate);
        assert_eq!(outcomes[0].outcome, Outcome::Rejected);
    }

    #[test]
    fn long_heartbeat_text_is_cut_not_refused() {
        let hb = Heartbeat {
            head_seq: 1,
            queue_depth: 0,
            agent_version: "v".repeat(500),
            last_error: Some("错".repeat(5000)),
            outcome_cursor: 0,
            log_size: 0,
        };
        let c = Contact::with_heartbeat(0, &hb);
        let hb = c.heartbeat.unwrap();
        assert_eq!(hb.agent_version.chars().count(), MAX_VERSION_CHARS);
        assert_eq!(hb.last_error.unwrap().chars().count(), MAX_LAST_ERROR_CHARS);
    }
}
