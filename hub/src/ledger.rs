//! The provincial ledger: the shared rules engine ([`tongbu_shared::rules`]) run over the
//! hub's store. [`TxLedger`] is the engine's [`LedgerStore`] inside one write transaction:
//! entities, totals and the held set are tables, a held record is its envelope's exact body
//! (re-read and re-parsed when released), and every decision is written onto its envelope.
//!
//! A record new to the hub comes with its envelope not yet stored ([`TxLedger::ingest_new`]):
//! the envelope row is inserted at the record's first decision, with that verdict, so it is
//! written once instead of stored with a placeholder and rewritten; everything the decision
//! writes about the record (its violations, its held entry) follows the row, in the same order
//! as for a stored one.
//!
//! Within one transaction [`TxLedger`] keeps the entities and ledger rows it has read or
//! changed in memory and writes each changed one back once, in [`TxLedger::finish`]: a batch
//! touches the same budget line, contract and ledger row again and again, and each write would
//! otherwise be a JSON encoding and an upsert. Nothing else reads those tables inside the
//! transaction before `finish`, and a transaction without `finish` is one that fails.
//!
//! Invariants: a record's outcome, the ledger totals, the violations and the held set change
//! together in one transaction or not at all; a decision about a record that was already
//! decided in an earlier step (a held record accepted or rejected, whichever agent's record
//! released it) appends to the outcome-change feed that agents read back; only accepted
//! records count in amounts; totals never go below zero (the store refuses it).

use std::collections::HashMap;

use tongbu_shared::crypto::Digest;
use tongbu_shared::envelope::Envelope;
use tongbu_shared::ids::{AgentId, CountyCode};
use tongbu_shared::protocol::{MAX_OUTCOME_UPDATES, RecordOutcome};
use tongbu_shared::record::Record;
use tongbu_shared::rules::{
    self, Decision, EngineError, Entity, EntityKey, LedgerStore, Pending, Rule, Severity, Slot,
    Totals, TotalsDelta,
};

use crate::ingest::MALFORMED_RECORD;
use crate::policy::{PolicyCache, current_version};
use crate::store::{
    HeldEntry, HeldRecord, NewEnvelope, NewViolation, Reads, StoreError, Verdict, Writes,
    apply_delta,
};

/// Longest kind or id kept from a malformed body for its violation row, in characters.
const MAX_MALFORMED_LABEL_CHARS: usize = 64;

/// One decision the ledger recorded, as the receipts and the metrics need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub agent: AgentId,
    pub seq: u64,
    pub verdict: Verdict,
    /// Whether this changed an earlier decision (and so is in the outcome-change feed).
    pub changed: bool,
}

impl Judged {
    /// The codes recorded as violations (rejecting and warning codes, not waiting ones).
    pub fn violation_codes(&self) -> impl Iterator<Item = &str> {
        self.verdict
            .codes
            .iter()
            .map(String::as_str)
            .filter(|c| Rule::parse(c).is_none_or(|r| r.severity() != Severity::Hold))
    }
}

/// A new record's envelope, stored by [`TxLedger::ingest_new`] at the record's first decision.
#[derive(Debug, Clone, Copy)]
pub struct Arriving<'a> {
    pub envelope: &'a Envelope,
    pub hash: Digest,
    pub arrival: u64,
    pub record: Option<&'a Record>,
}

impl<'a> Arriving<'a> {
    fn with<'v>(&self, verdict: &'v Verdict) -> NewEnvelope<'v>
    where
        'a: 'v,
    {
        NewEnvelope {
            envelope: self.envelope,
            hash: self.hash,
            arrival: self.arrival,
            verdict,
            record: self.record,
        }
    }
}

/// The record being ingested: its first decision is not a change; `row`, if there is one, is
/// its envelope, to store with that decision.
struct Fresh<'t> {
    agent: AgentId,
    seq: u64,
    row: Option<Arriving<'t>>,
}

/// The engine's ledger store over one write transaction.
pub struct TxLedger<'t> {
    w: &'t mut dyn Writes,
    policies: &'t PolicyCache,
    now_ms: i64,
    /// The arrival being ingested.
    fresh: Option<Fresh<'t>>,
    judged: Vec<Judged>,
    /// Entities read or changed in this transaction (`None`: known not to exist).
    entities: HashMap<EntityKey, Cached<Option<Entity>>>,
    /// Ledger rows read or changed in this transaction.
    totals: HashMap<(CountyCode, Slot), Cached<Totals>>,
}

/// A row as this transaction sees it, and whether it differs from the stored one.
struct Cached<T> {
    value: T,
    dirty: bool,
}

impl std::fmt::Debug for TxLedger<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxLedger")
            .field("now_ms", &self.now_ms)
            .field("judged", &self.judged.len())
            .finish_non_exhaustive()
    }
}

fn engine_error(e: EngineError<StoreError>) -> StoreError {
    match e {
        EngineError::Store(e) => e,
        EngineError::Invariant(what) => StoreError::Corrupt(format!("ledger: {what}")),
    }
}

/// The verdict a decision writes onto its envelope.
pub fn verdict_of(d: &Decision) -> Verdict {
    let detail = if !d.findings.is_empty() {
        Some(d.detail())
    } else if d.duplicate {
        Some(format!(
            "an identical copy of {} {} rev {} was already decided",
            d.entity.kind, d.entity.id, d.rev
        ))
    } else {
        None
    };
    Verdict {
        outcome: d.outcome,
        codes: d.codes(),
        detail,
        policy_version: Some(d.policy_version),
    }
}

/// A verdict as a receipt reports it.
pub fn record_outcome(seq: u64, verdict: &Verdict, duplicate: bool) -> RecordOutcome {
    RecordOutcome {
        seq,
        outcome: verdict.outcome,
        codes: verdict.codes.clone(),
        duplicate,
        detail: verdict.detail.clone(),
        policy_version: verdict.policy_version,
    }
}

/// The verdict on a body that is not a well-formed record.
pub fn malformed_verdict(problem: &str) -> Verdict {
    Verdict {
        outcome: tongbu_shared::protocol::Outcome::Rejected,
        codes: vec![MALFORMED_RECORD.to_owned()],
        detail: Some(format!("{MALFORMED_RECORD}: {problem}")),
        policy_version: None,
    }
}

impl<'t> TxLedger<'t> {
    pub fn new(w: &'t mut dyn Writes, policies: &'t PolicyCache, now_ms: i64) -> TxLedger<'t> {
        TxLedger {
            w,
            policies,
            now_ms,
            fresh: None,
            judged: Vec::new(),
            entities: HashMap::new(),
            totals: HashMap::new(),
        }
    }

    /// The transaction, for what the engine does not do.
    pub fn writes(&mut self) -> &mut dyn Writes {
        &mut *self.w
    }

    /// Applies an arriving record (whose envelope is stored) and everything it releases.
    /// Returns the decisions, the arrival's first.
    pub fn ingest(&mut self, arrival: Pending) -> Result<Vec<Decision>, StoreError> {
        self.ingest_with(arrival, None)
    }

    /// Applies a record new to the hub and everything it releases, storing its envelope `row`
    /// with the verdict of its first decision. Returns the decisions, the arrival's first.
    pub fn ingest_new(
        &mut self,
        arrival: Pending,
        row: Arriving<'t>,
    ) -> Result<Vec<Decision>, StoreError> {
        self.ingest_with(arrival, Some(row))
    }

    fn ingest_with(
        &mut self,
        arrival: Pending,
        row: Option<Arriving<'t>>,
    ) -> Result<Vec<Decision>, StoreError> {
        let who = (arrival.agent.clone(), arrival.seq);
        self.fresh = Some(Fresh {
            agent: who.0.clone(),
            seq: who.1,
            row,
        });
        let decisions = rules::ingest(self, arrival).map_err(engine_error)?;
        let first = decisions.first().map(|d| (d.agent.clone(), d.seq));
        if self.fresh.take().is_some() || first.as_ref() != Some(&who) {
            return Err(StoreError::Corrupt(format!(
                "ledger: no first decision for {} seq {}",
                who.0, who.1
            )));
        }
        Ok(decisions)
    }

    /// Rejects the records held longer than the current policy's grace period, and what
    /// that releases.
    pub fn expire(&mut self) -> Result<Vec<Decision>, StoreError> {
        let version = current_version(&*self.w)?;
        let grace_ms = self.policies.get(&*self.w, version)?.grace_ms;
        let now_ms = self.now_ms;
        rules::expire(self, now_ms, grace_ms).map_err(engine_error)
    }

    /// Records the verdict on a stored body that is not a well-formed record: rejected, in no
    /// ledger row, one violation under the agent's county.
    pub fn reject_malformed(
        &mut self,
        agent: &AgentId,
        seq: u64,
        body: &[u8],
        problem: &str,
    ) -> Result<Verdict, StoreError> {
        let verdict = malformed_verdict(problem);
        self.w.set_verdict(agent, seq, &verdict)?;
        self.note_malformed(agent, seq, body, problem, verdict)
    }

    /// [`TxLedger::reject_malformed`] for a body new to the hub: stores its envelope `row`
    /// with that verdict.
    pub fn reject_new_malformed(
        &mut self,
        row: Arriving<'_>,
        problem: &str,
    ) -> Result<Verdict, StoreError> {
        let verdict = malformed_verdict(problem);
        self.w
            .insert_envelopes(self.now_ms, &[row.with(&verdict)])?;
        let e = row.envelope;
        self.note_malformed(&e.agent, e.seq, &e.body, problem, verdict)
    }

    fn note_malformed(
        &mut self,
        agent: &AgentId,
        seq: u64,
        body: &[u8],
        problem: &str,
        verdict: Verdict,
    ) -> Result<Verdict, StoreError> {
        let (kind, entity_id) = malformed_labels(body);
        self.w.insert_violation(&NewViolation {
            agent: agent.clone(),
            seq,
            county: agent.county(),
            fiscal_year: None,
            kind,
            entity_id,
            rule: MALFORMED_RECORD.to_owned(),
            detail: problem.to_owned(),
            at_ms: self.now_ms,
        })?;
        self.judged.push(Judged {
            agent: agent.clone(),
            seq,
            verdict: verdict.clone(),
            changed: false,
        });
        Ok(verdict)
    }

    /// Appends an outcome change for a record whose verdict was revised outside the engine.
    pub fn note_change(&mut self, agent: &AgentId, seq: u64) -> Result<(), StoreError> {
        self.w.insert_outcome_change(agent, seq, self.now_ms)?;
        if let Some(j) = self
            .judged
            .iter_mut()
            .rev()
            .find(|j| &j.agent == agent && j.seq == seq)
        {
            j.changed = true;
        }
        Ok(())
    }

    /// Writes back the entities and ledger rows changed in this transaction (in key order)
    /// and returns every decision recorded, in the order made.
    pub fn finish(self) -> Result<Vec<Judged>, StoreError> {
        let mut entities: Vec<_> = self.entities.into_iter().filter(|(_, c)| c.dirty).collect();
        entities.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, cached) in &entities {
            if let Some(entity) = &cached.value {
                self.w.put_entity(key, entity)?;
            }
        }
        let mut totals: Vec<_> = self.totals.into_iter().filter(|(_, c)| c.dirty).collect();
        totals.sort_by(|a, b| a.0.cmp(&b.0));
        for ((county, slot), cached) in &totals {
            self.w.put_totals(county, slot, &cached.value)?;
        }
        Ok(self.judged)
    }
}

/// A held record as the engine sees it: its body re-read and parsed as when it arrived.
fn pending_of(held: HeldRecord) -> Result<(Pending, EntityKey), StoreError> {
    let e = held.entry;
    let record = Record::parse_lenient(&held.body).map_err(|err| {
        StoreError::Corrupt(format!(
            "held record {} seq {} no longer parses: {err}",
            e.agent, e.seq
        ))
    })?;
    let pending = Pending {
        agent: e.agent,
        seq: e.seq,
        record,
        digest: Digest::of(&[&held.body]),
        order: e.arrival,
        received_ms: e.received_at_ms,
        policy_version: e.policy_version,
        held_at: Some(e.held_at),
    };
    Ok((pending, e.waits_on))
}

impl LedgerStore for TxLedger<'_> {
    type Error = StoreError;

    fn policy(
        &mut self,
        version: u64,
    ) -> Result<std::sync::Arc<tongbu_shared::policy::Policy>, StoreError> {
        self.policies.get(&*self.w, version)
    }

    fn entity(&mut self, key: &EntityKey) -> Result<Option<Entity>, StoreError> {
        if let Some(cached) = self.entities.get(key) {
            return Ok(cached.value.clone());
        }
        let value = self.w.entity(key)?;
        self.entities.insert(
            key.clone(),
            Cached {
                value: value.clone(),
                dirty: false,
            },
        );
        Ok(value)
    }

    fn put_entity(&mut self, key: &EntityKey, entity: &Entity) -> Result<(), StoreError> {
        self.entities.insert(
            key.clone(),
            Cached {
                value: Some(entity.clone()),
                dirty: true,
            },
        );
        Ok(())
    }

    fn add_totals(
        &mut self,
        county: &CountyCode,
        slot: &Slot,
        delta: &TotalsDelta,
    ) -> Result<(), StoreError> {
        let row = (county.clone(), slot.clone());
        let now = match self.totals.get(&row) {
            Some(cached) => cached.value,
            None => self.w.totals(county, slot)?.unwrap_or_default(),
        };
        let value = apply_delta(county, slot, now, delta)?;
        self.totals.insert(row, Cached { value, dirty: true });
        Ok(())
    }

    fn hold(&mut self, pending: &Pending, waits_on: &EntityKey) -> Result<(), StoreError> {
        let held_at = pending.held_at.clone().ok_or_else(|| {
            StoreError::Corrupt(format!(
                "ledger: {} seq {} held without a ledger row",
                pending.agent, pending.seq
            ))
        })?;
        self.w.insert_held(&HeldEntry {
            arrival: pending.order,
            agent: pending.agent.clone(),
            seq: pending.seq,
            waits_on: waits_on.clone(),
            received_at_ms: pending.received_ms,
            policy_version: pending.policy_version,
            held_at,
        })
    }

    fn release(&mut self, key: &EntityKey) -> Result<Vec<Pending>, StoreError> {
        self.w
            .take_held_waiting_on(key)?
            .into_iter()
            .map(|h| pending_of(h).map(|(p, _)| p))
            .collect()
    }

    fn take_expired(&mut self, cutoff_ms: i64) -> Result<Vec<(Pending, EntityKey)>, StoreError> {
        self.w
            .take_held_before(cutoff_ms)?
            .into_iter()
            .map(pending_of)
            .collect()
    }

    fn decide(&mut self, d: &Decision) -> Result<(), StoreError> {
        let verdict = verdict_of(d);
        let first = self
            .fresh
            .as_ref()
            .is_some_and(|f| f.agent == d.agent && f.seq == d.seq);
        let row = match &mut self.fresh {
            Some(fresh) if first => fresh.row.take(),
            _ => None,
        };
        match row {
            Some(row) => self
                .w
                .insert_envelopes(self.now_ms, &[row.with(&verdict)])?,
            None => self.w.set_verdict(&d.agent, d.seq, &verdict)?,
        }
        if d.outcome != tongbu_shared::protocol::Outcome::Held {
            for f in d
                .findings
                .iter()
                .filter(|f| f.rule.severity() != Severity::Hold)
            {
                self.w.insert_violation(&NewViolation {
                    agent: d.agent.clone(),
                    seq: d.seq,
                    county: d.county.clone(),
                    fiscal_year: Some(d.slot.year),
                    kind: d.entity.kind.as_str().to_owned(),
                    entity_id: d.entity.id.to_string(),
                    rule: f.rule.code().to_owned(),
                    detail: f.detail.clone(),
                    at_ms: self.now_ms,
                })?;
            }
        }
        if first {
            self.fresh = None;
        } else {
            self.w.insert_outcome_change(&d.agent, d.seq, self.now_ms)?;
        }
        self.judged.push(Judged {
            agent: d.agent.clone(),
            seq: d.seq,
            verdict,
            changed: !first,
        });
        Ok(())
    }
}

/// What a malformed body says its kind and id are, if anything (for its violation row).
fn malformed_labels(body: &[u8]) -> (String, String) {
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let label = |name: &str| {
        value
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(|s| crate::ingest::clip(s, MAX_MALFORMED_LABEL_CHARS))
            .unwrap_or_default()
    };
    (label("kind"), label("id"))
}

/// One expiry step inside the caller's write transaction: rejects the records held longer
/// than the current policy's grace period at `now_ms` (and what that releases).
pub fn expire_once(
    w: &mut dyn Writes,
    policies: &PolicyCache,
    now_ms: i64,
) -> Result<Vec<Judged>, StoreError> {
    let mut ledger = TxLedger::new(w, policies, now_ms);
    ledger.expire()?;
    ledger.finish()
}

/// The agent's outcome changes after `cursor`, oldest first, and the cursor to report: the
/// last change included, or `cursor` itself when there is none. A cursor past the hub's
/// last change (the hub was restored from an older backup) starts the agent over from 0.
pub fn updates<R: Reads + ?Sized>(
    r: &R,
    agent: &AgentId,
    cursor: u64,
) -> Result<(Vec<RecordOutcome>, u64), StoreError> {
    let after = if cursor > r.last_outcome_change()? {
        0
    } else {
        cursor
    };
    let rows = r.outcome_updates(agent, after, MAX_OUTCOME_UPDATES)?;
    let next = rows.last().map_or(after, |u| u.id);
    let updates = rows
        .iter()
        .map(|u| record_outcome(u.seq, &u.verdict, false))
        .collect();
    Ok((updates, next))
}

/// A county's totals for one fiscal year, summed over catalogue codes.
pub fn year_totals<R: Reads + ?Sized>(
    r: &R,
    county: &CountyCode,
    year: i32,
) -> Result<Totals, StoreError> {
    r.ledger_rows(county, Some(year))?
        .iter()
        .try_fold(Totals::default(), |acc, (_, t)| acc.plus(t))
        .ok_or_else(|| StoreError::Corrupt(format!("the {county} {year} totals overflow")))
}

/// How many envelopes one [`judge_unjudged`] step takes.
pub const JUDGE_CHUNK: usize = 500;

/// Judges up to `limit` envelopes stored before the ledger existed, oldest first, as if they
/// arrived in that order now (held ones keep their time of receipt for the grace period).
/// A record whose verdict at the end differs from the one its agent was told goes into the
/// outcome-change feed (as does any held record decided later). Returns how many it judged
/// (0 when none are left).
pub fn judge_unjudged(
    w: &mut dyn Writes,
    policies: &PolicyCache,
    now_ms: i64,
    limit: usize,
) -> Result<usize, StoreError> {
    let rows = w.unjudged(limit)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let version = current_version(&*w)?;
    let mut arrival = w.last_arrival()?;
    let mut ledger = TxLedger::new(w, policies, now_ms);
    for u in &rows {
        arrival += 1;
        ledger.writes().set_arrival(&u.agent, u.seq, arrival)?;
        match Record::parse_lenient(&u.body) {
            Err(e) => {
                ledger.reject_malformed(&u.agent, u.seq, &u.body, &e.to_string())?;
            }
            Ok(record) => {
                ledger.ingest(Pending {
                    agent: u.agent.clone(),
                    seq: u.seq,
                    record,
                    digest: Digest::of(&[&u.body]),
                    order: arrival,
                    received_ms: u.received_at_ms,
                    policy_version: version,
                    held_at: None,
                })?;
            }
        }
    }
    for u in &rows {
        let already = ledger
            .judged
            .iter()
            .any(|j| j.changed && j.agent == u.agent && j.seq == u.seq);
        let now = ledger
            .writes()
            .envelope(&u.agent, u.seq)?
            .ok_or_else(|| StoreError::Corrupt(format!("{} seq {} vanished", u.agent, u.seq)))?;
        if !already && (now.outcome != u.outcome || now.codes != u.codes) {
            ledger.note_change(&u.agent, u.seq)?;
        }
    }
    ledger.finish()?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests;
