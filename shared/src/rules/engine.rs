//! Applying records to a ledger. [`evaluate`] finds every rule that applies to one record;
//! [`ingest`] applies a record and everything it releases: a decided record releases the
//! records held waiting for its entity, which are re-checked in arrival order, and so on;
//! [`expire`] rejects held records whose grace period has ended (and releases their waiters).
//!
//! The engine is generic over [`LedgerStore`], so the hub's SQL ledger, the agent's local view
//! and the in-memory model run the same logic. A caller runs one `ingest` inside one
//! transaction: every change it asks of the store belongs to that transaction.

use std::collections::VecDeque;
use std::sync::Arc;

use super::checks::{self, Predecessor};
use super::{
    Entity, EntityKey, Facts, Finding, Pending, RevSeen, Rule, Slot, TotalsDelta, outcome_of,
};
use crate::date::Date;
use crate::ids::CountyCode;
use crate::money::Fen;
use crate::policy::Policy;
use crate::protocol::Outcome;
use crate::record::{Body, Kind, Stage};

/// What the engine needs from a ledger's storage.
pub trait LedgerStore {
    type Error;

    /// A policy version (the one current when a record arrived).
    fn policy(&mut self, version: u64) -> Result<Arc<Policy>, Self::Error>;
    fn entity(&mut self, key: &EntityKey) -> Result<Option<Entity>, Self::Error>;
    fn put_entity(&mut self, key: &EntityKey, entity: &Entity) -> Result<(), Self::Error>;
    /// Adds `delta` to the totals of (county, slot); the store refuses a total below zero.
    fn add_totals(
        &mut self,
        county: &CountyCode,
        slot: &Slot,
        delta: &TotalsDelta,
    ) -> Result<(), Self::Error>;
    /// Keeps a record waiting for `waits_on`.
    fn hold(&mut self, pending: &Pending, waits_on: &EntityKey) -> Result<(), Self::Error>;
    /// Removes and returns the records waiting for `key`, in arrival order.
    fn release(&mut self, key: &EntityKey) -> Result<Vec<Pending>, Self::Error>;
    /// Removes and returns the records held since before `cutoff_ms`, in arrival order, with
    /// what each waits for.
    fn take_expired(&mut self, cutoff_ms: i64) -> Result<Vec<(Pending, EntityKey)>, Self::Error>;
    /// Records a decision about one record (its outcome, codes and where it counts).
    fn decide(&mut self, decision: &Decision) -> Result<(), Self::Error>;
}

/// The ledger's decision about one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The county the decision counts under: the record's, or for a record naming another
    /// county (`COUNTY_MISMATCH`) the sending agent's.
    pub county: crate::ids::CountyCode,
    pub agent: crate::ids::AgentId,
    pub seq: u64,
    pub entity: EntityKey,
    pub rev: u32,
    pub outcome: Outcome,
    pub findings: Vec<Finding>,
    /// Where the record counts (accepted, held or rejected).
    pub slot: Slot,
    pub policy_version: u64,
    /// An identical resend of a revision already decided: not a new record, counted nowhere.
    pub duplicate: bool,
    /// What a held record waits for.
    pub waits_on: Option<EntityKey>,
}

impl Decision {
    pub fn codes(&self) -> Vec<String> {
        self.findings
            .iter()
            .map(|f| f.rule.code().to_owned())
            .collect()
    }

    /// The findings' sentences, joined (for people).
    pub fn detail(&self) -> String {
        self.findings
            .iter()
            .map(|f| format!("{}: {}", f.rule.code(), f.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Why the engine stopped: the store failed, or the ledger broke an invariant (corruption).
#[derive(Debug, thiserror::Error)]
pub enum EngineError<E> {
    #[error("ledger store: {0}")]
    Store(E),
    #[error("the ledger is inconsistent: {0}")]
    Invariant(String),
}

impl<E> From<E> for EngineError<E> {
    fn from(e: E) -> Self {
        EngineError::Store(e)
    }
}

/// Every finding for one record against what `store` knows now, without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub findings: Vec<Finding>,
    pub slot: Slot,
    pub waits_on: Option<EntityKey>,
    /// The facts the entity takes if the record is accepted.
    pub facts: Option<Facts>,
    /// Set for an identical resend: the earlier copy's acceptance.
    pub duplicate_of: Option<bool>,
    /// The record names another county than its agent's: it is judged and counted apart from
    /// that county's entities, which it must never touch.
    pub foreign: bool,
}

/// Judges one record. Reads only.
pub fn evaluate<S: LedgerStore>(
    store: &mut S,
    policy: &Policy,
    p: &Pending,
) -> Result<Verdict, S::Error> {
    let r = &p.record;
    let h = &r.header;
    let key = EntityKey::of(r);
    // A record for another county than its agent's is refused before anything about that
    // county is consulted: it must neither read as a resend of that county's records nor move
    // its revisions, held set or totals.
    if let Some(mismatch) = checks::county_mismatch(&h.county, &p.agent_county()) {
        let mut findings = vec![mismatch];
        let catalogue = r.catalogue_code();
        if let Some(code) = catalogue {
            findings.extend(checks::not_in_catalogue(code, policy));
            findings.extend(checks::negative_list(code, policy));
        }
        if let Some(Body::Contract(c)) = &r.body {
            findings.extend(checks::invalid_supplier_code(&c.supplier_uscc));
        }
        let year = record_date(r).map_or(0, Date::year);
        return Ok(Verdict {
            outcome: Outcome::Rejected,
            findings,
            slot: Slot::new(year, catalogue),
            waits_on: None,
            facts: None,
            duplicate_of: None,
            foreign: true,
        });
    }
    let own = store.entity(&key)?;
    if let Some(seen) = own.as_ref().and_then(|e| {
        e.revs
            .iter()
            .find(|s| s.rev == h.rev && s.digest == p.digest)
    }) {
        let outcome = if seen.accepted {
            Outcome::Accepted
        } else {
            Outcome::Rejected
        };
        let slot = own
            .as_ref()
            .and_then(|e| e.current.as_ref())
            .map_or(Slot::new(0, None), Facts::slot);
        return Ok(Verdict {
            outcome,
            findings: Vec::new(),
            slot,
            waits_on: None,
            facts: None,
            duplicate_of: Some(seen.accepted),
            foreign: false,
        });
    }

    let mut findings: Vec<Finding> = Vec::new();
    findings.extend(checks::stale_revision(h.rev, own.as_ref()));
    let current = own.as_ref().and_then(|e| e.current.as_ref());
    let committed = own.as_ref().map_or(Fen::ZERO, |e| e.committed);
    let mut waits_on = None;

    let (facts, slot) = match &r.body {
        None => {
            // A bare cancellation restates nothing: it cancels the entity as it stands.
            match (own.as_ref(), current) {
                (None, _) => {
                    let rule = if h.kind == Kind::BudgetLine {
                        Rule::AwaitingBudgetLine
                    } else {
                        Rule::AwaitingContract
                    };
                    findings.push(Finding::new(
                        rule,
                        format!("{} {} to cancel has not arrived yet", h.kind, h.id),
                    ));
                    waits_on = Some(key.clone());
                    (None, Slot::new(0, None))
                }
                (Some(_), None) => {
                    findings.push(Finding::new(
                        Rule::PredecessorRejected,
                        format!("{} {} to cancel was rejected", h.kind, h.id),
                    ));
                    (None, Slot::new(0, None))
                }
                (Some(_), Some(cur)) => {
                    if matches!(h.kind, Kind::BudgetLine | Kind::Contract) {
                        findings.extend(checks::amended_below_committed(
                            h.kind,
                            &h.id,
                            Fen::ZERO,
                            committed,
                        ));
                    }
                    let facts = Facts {
                        rev: h.rev,
                        cancelled: true,
                        ..cur.clone()
                    };
                    let slot = facts.slot();
                    (Some(facts), slot)
                }
            }
        }
        Some(Body::BudgetLine(b)) => {
            findings.extend(checks::not_in_catalogue(&b.catalogue_code, policy));
            findings.extend(checks::negative_list(&b.catalogue_code, policy));
            let approved = b.stage == Stage::Approved;
            if current.is_some() && committed > Fen::ZERO {
                let new_amount = if h.cancelled { Fen::ZERO } else { b.amount };
                findings.extend(checks::amended_below_committed(
                    Kind::BudgetLine,
                    &h.id,
                    new_amount,
                    committed,
                ));
                findings.extend(checks::budget_not_approved(&h.id, approved));
            }
            let facts = Facts {
                rev: h.rev,
                cancelled: h.cancelled,
                amount: Some(b.amount),
                approved,
                date: b.approved_on,
                fiscal_year: b.fiscal_year,
                catalogue: Some(b.catalogue_code.clone()),
                parent: None,
            };
            let slot = facts.slot();
            (Some(facts), slot)
        }
        Some(Body::Contract(c)) => {
            findings.extend(checks::invalid_supplier_code(&c.supplier_uscc));
            findings.extend(checks::not_in_catalogue(&c.catalogue_code, policy));
            findings.extend(checks::negative_list(&c.catalogue_code, policy));
            if current.is_some() && committed > Fen::ZERO {
                let new_amount = if h.cancelled { Fen::ZERO } else { c.amount };
                findings.extend(checks::amended_below_committed(
                    Kind::Contract,
                    &h.id,
                    new_amount,
                    committed,
                ));
            }
            let line_key = EntityKey::new(&h.county, Kind::BudgetLine, &c.budget_line_id);
            let line = store.entity(&line_key)?;
            let mut year = c.signed_on.year();
            match checks::predecessor(Kind::BudgetLine, &c.budget_line_id, line.as_ref()) {
                Predecessor::Missing(f) => {
                    findings.push(f);
                    waits_on = Some(line_key);
                }
                Predecessor::Refused(f) => findings.push(f),
                Predecessor::Live(lf) => {
                    year = lf.fiscal_year;
                    findings.extend(checks::budget_not_approved(&c.budget_line_id, lf.approved));
                    findings.extend(checks::year_mismatch(
                        c.signed_on,
                        &c.budget_line_id,
                        lf.fiscal_year,
                    ));
                    if let Some(approved_on) = lf.date {
                        findings.extend(checks::date_order(
                            ("approved_on", approved_on),
                            ("signed_on", c.signed_on),
                        ));
                    }
                    if !h.cancelled {
                        let others = committed_by_others(line.as_ref(), current, &c.budget_line_id);
                        findings.extend(checks::budget_exceeded(
                            &c.budget_line_id,
                            lf.live_amount(),
                            others,
                            c.amount,
                        ));
                    }
                }
            }
            let facts = Facts {
                rev: h.rev,
                cancelled: h.cancelled,
                amount: Some(c.amount),
                approved: true,
                date: Some(c.signed_on),
                fiscal_year: year,
                catalogue: Some(c.catalogue_code.clone()),
                parent: Some(c.budget_line_id.clone()),
            };
            let slot = facts.slot();
            (Some(facts), slot)
        }
        Some(Body::Payment(pay)) => {
            let contract = live_contract(
                store,
                &h.county,
                &pay.contract_id,
                &mut findings,
                &mut waits_on,
            )?;
            let mut place = (pay.paid_on.year(), None);
            if let Some((contract, cf)) = &contract {
                place = (cf.fiscal_year, cf.catalogue.clone());
                if let Some(signed_on) = cf.date {
                    findings.extend(checks::date_order(
                        ("signed_on", signed_on),
                        ("paid_on", pay.paid_on),
                    ));
                }
                if !h.cancelled {
                    let others = committed_by_others(Some(contract), current, &pay.contract_id);
                    let limit = cf.live_amount();
                    findings.extend(checks::contract_exceeded(
                        &pay.contract_id,
                        limit,
                        others,
                        pay.amount,
                    ));
                    if let Some(after) = others.checked_add(pay.amount) {
                        findings.extend(checks::paid_without_evaluation(
                            &pay.contract_id,
                            limit,
                            after,
                            contract.evaluated,
                        ));
                    }
                }
            }
            let facts = Facts {
                rev: h.rev,
                cancelled: h.cancelled,
                amount: Some(pay.amount),
                approved: true,
                date: Some(pay.paid_on),
                fiscal_year: place.0,
                catalogue: place.1,
                parent: Some(pay.contract_id.clone()),
            };
            let slot = facts.slot();
            (Some(facts), slot)
        }
        Some(Body::Evaluation(ev)) => {
            let contract = live_contract(
                store,
                &h.county,
                &ev.contract_id,
                &mut findings,
                &mut waits_on,
            )?;
            let mut place = (ev.evaluated_on.year(), None);
            if let Some((_, cf)) = &contract {
                place = (cf.fiscal_year, cf.catalogue.clone());
                if let Some(signed_on) = cf.date {
                    findings.extend(checks::date_order(
                        ("signed_on", signed_on),
                        ("evaluated_on", ev.evaluated_on),
                    ));
                }
            }
            let facts = Facts {
                rev: h.rev,
                cancelled: h.cancelled,
                amount: None,
                approved: true,
                date: Some(ev.evaluated_on),
                fiscal_year: place.0,
                catalogue: place.1,
                parent: Some(ev.contract_id.clone()),
            };
            let slot = facts.slot();
            (Some(facts), slot)
        }
    };

    let outcome = outcome_of(&findings, waits_on.is_some());
    if outcome == Outcome::Rejected {
        // Waiting is moot once a record is rejected anyway.
        findings.retain(|f| f.rule.severity() != super::Severity::Hold);
        waits_on = None;
    }
    Ok(Verdict {
        outcome,
        findings,
        slot,
        waits_on,
        facts,
        duplicate_of: None,
        foreign: false,
    })
}

/// The date a record carries for its own kind (approval, signing, payment, evaluation).
fn record_date(r: &crate::record::Record) -> Option<Date> {
    match &r.body {
        Some(Body::BudgetLine(b)) => b.approved_on,
        Some(Body::Contract(c)) => Some(c.signed_on),
        Some(Body::Payment(p)) => Some(p.paid_on),
        Some(Body::Evaluation(e)) => Some(e.evaluated_on),
        None => None,
    }
}

/// The contract a payment or evaluation belongs to, when it stands. When it has not arrived the
/// record waits for it (`AWAITING_CONTRACT`); when it was rejected or cancelled, so is the record.
fn live_contract<S: LedgerStore>(
    store: &mut S,
    county: &crate::ids::CountyCode,
    contract_id: &crate::ids::Code,
    findings: &mut Vec<Finding>,
    waits_on: &mut Option<EntityKey>,
) -> Result<Option<(Entity, Facts)>, S::Error> {
    let key = EntityKey::new(county, Kind::Contract, contract_id);
    let contract = store.entity(&key)?;
    Ok(
        match checks::predecessor(Kind::Contract, contract_id, contract.as_ref()) {
            Predecessor::Missing(f) => {
                findings.push(f);
                *waits_on = Some(key);
                None
            }
            Predecessor::Refused(f) => {
                findings.push(f);
                None
            }
            Predecessor::Live(cf) => {
                let cf = cf.clone();
                contract.map(|c| (c, cf))
            }
        },
    )
}

/// What other accepted children hold on `parent` (`parent_id`), leaving out this entity's own
/// current revision if it counts there (an amendment replaces it).
fn committed_by_others(
    parent: Option<&Entity>,
    own_current: Option<&Facts>,
    parent_id: &crate::ids::Code,
) -> Fen {
    let committed = parent.map_or(Fen::ZERO, |e| e.committed);
    match own_current {
        Some(f) if f.parent.as_ref() == Some(parent_id) => {
            committed.checked_sub(f.live_amount()).unwrap_or(Fen::ZERO)
        }
        _ => committed,
    }
}

/// Applies one arriving record and every held record its decision releases. Returns the
/// decisions in the order made: the arrival's first.
pub fn ingest<S: LedgerStore>(
    store: &mut S,
    arrival: Pending,
) -> Result<Vec<Decision>, EngineError<S::Error>> {
    let mut queue = VecDeque::from([arrival]);
    let mut decisions = Vec::new();
    process(store, &mut queue, &mut decisions)?;
    Ok(decisions)
}

/// Rejects every record held since before `now_ms - grace_ms` (`UNKNOWN_BUDGET_LINE` /
/// `UNKNOWN_CONTRACT`) and applies what that releases.
pub fn expire<S: LedgerStore>(
    store: &mut S,
    now_ms: i64,
    grace_ms: i64,
) -> Result<Vec<Decision>, EngineError<S::Error>> {
    let mut decisions = Vec::new();
    let mut queue = VecDeque::new();
    for (p, waits_on) in store.take_expired(now_ms.saturating_sub(grace_ms))? {
        let finding =
            checks::unknown_predecessor(waits_on.kind, &waits_on.id, grace_ms / 3_600_000);
        let key = EntityKey::of(&p.record);
        let slot = p.held_at.clone().unwrap_or_else(|| Slot::new(0, None));
        store.add_totals(
            &key.county,
            &slot,
            &TotalsDelta {
                held: -1,
                rejected: 1,
                ..TotalsDelta::default()
            },
        )?;
        mark_rejected(store, &key, &p)?;
        let d = Decision {
            county: key.county.clone(),
            agent: p.agent.clone(),
            seq: p.seq,
            entity: key.clone(),
            rev: p.record.header.rev,
            outcome: Outcome::Rejected,
            findings: vec![finding],
            slot,
            policy_version: p.policy_version,
            duplicate: false,
            waits_on: None,
        };
        store.decide(&d)?;
        decisions.push(d);
        queue.extend(store.release(&key)?);
        process(store, &mut queue, &mut decisions)?;
    }
    Ok(decisions)
}

fn mark_rejected<S: LedgerStore>(
    store: &mut S,
    key: &EntityKey,
    p: &Pending,
) -> Result<(), S::Error> {
    let mut entity = store.entity(key)?.unwrap_or_default();
    entity.revs.push(RevSeen {
        rev: p.record.header.rev,
        digest: p.digest,
        accepted: false,
    });
    store.put_entity(key, &entity)
}

fn process<S: LedgerStore>(
    store: &mut S,
    queue: &mut VecDeque<Pending>,
    decisions: &mut Vec<Decision>,
) -> Result<(), EngineError<S::Error>> {
    while let Some(p) = queue.pop_front() {
        let policy = store.policy(p.policy_version)?;
        let v = evaluate(store, &policy, &p)?;
        let key = EntityKey::of(&p.record);
        let county = if v.foreign {
            p.agent_county()
        } else {
            key.county.clone()
        };
        let decision = Decision {
            county: county.clone(),
            agent: p.agent.clone(),
            seq: p.seq,
            entity: key.clone(),
            rev: p.record.header.rev,
            outcome: v.outcome,
            findings: v.findings.clone(),
            slot: v.slot.clone(),
            policy_version: p.policy_version,
            duplicate: v.duplicate_of.is_some(),
            waits_on: v.waits_on.clone(),
        };
        if let Some(waits_on) = &v.waits_on {
            // Still waiting: count it as held once, where it would count.
            if p.held_at.is_none() {
                store.add_totals(
                    &key.county,
                    &v.slot,
                    &TotalsDelta {
                        held: 1,
                        ..TotalsDelta::default()
                    },
                )?;
                store.decide(&decision)?;
                decisions.push(decision);
            }
            let held = Pending {
                held_at: Some(p.held_at.clone().unwrap_or_else(|| v.slot.clone())),
                ..p
            };
            store.hold(&held, waits_on)?;
            continue;
        }
        if let Some(old) = &p.held_at {
            store.add_totals(
                &key.county,
                old,
                &TotalsDelta {
                    held: -1,
                    ..TotalsDelta::default()
                },
            )?;
        }
        if v.duplicate_of.is_none() {
            let counts = match v.outcome {
                Outcome::Accepted => TotalsDelta {
                    accepted: 1,
                    ..TotalsDelta::default()
                },
                _ => TotalsDelta {
                    rejected: 1,
                    ..TotalsDelta::default()
                },
            };
            store.add_totals(&county, &v.slot, &counts)?;
            match (v.outcome, v.facts) {
                _ if v.foreign => {}
                (Outcome::Accepted, Some(facts)) => accept(store, &key, &p, facts)?,
                (Outcome::Accepted, None) => {
                    return Err(EngineError::Invariant(format!(
                        "{key}: accepted without facts"
                    )));
                }
                _ => mark_rejected(store, &key, &p)?,
            }
        }
        store.decide(&decision)?;
        decisions.push(decision);
        if v.duplicate_of.is_none() && !v.foreign {
            queue.extend(store.release(&key)?);
        }
    }
    Ok(())
}

/// The column a kind's amount counts in.
fn contribution(kind: Kind, f: &Facts) -> TotalsDelta {
    let amount = if kind == Kind::BudgetLine && !f.approved {
        0
    } else {
        f.live_amount().get()
    };
    match kind {
        Kind::BudgetLine => TotalsDelta {
            budget_approved: amount,
            ..TotalsDelta::default()
        },
        Kind::Contract => TotalsDelta {
            contracted: amount,
            ..TotalsDelta::default()
        },
        Kind::Payment => TotalsDelta {
            paid: amount,
            ..TotalsDelta::default()
        },
        Kind::Evaluation => TotalsDelta::default(),
    }
}

fn negate(d: TotalsDelta) -> TotalsDelta {
    TotalsDelta {
        budget_approved: -d.budget_approved,
        contracted: -d.contracted,
        paid: -d.paid,
        accepted: -d.accepted,
        held: -d.held,
        rejected: -d.rejected,
    }
}

/// Makes `facts` the entity's current revision: moves its amount in the totals and on its
/// parent, and records the revision.
fn accept<S: LedgerStore>(
    store: &mut S,
    key: &EntityKey,
    p: &Pending,
    facts: Facts,
) -> Result<(), EngineError<S::Error>> {
    let mut entity = store.entity(key)?.unwrap_or_default();
    let old = entity.current.take();
    let county = &key.county;
    if let Some(old) = &old {
        let d = contribution(key.kind, old);
        if d != TotalsDelta::default() {
            store.add_totals(county, &old.slot(), &negate(d))?;
        }
    }
    let d = contribution(key.kind, &facts);
    if d != TotalsDelta::default() {
        store.add_totals(county, &facts.slot(), &d)?;
    }
    let parent_kind = match key.kind {
        Kind::Contract => Some(Kind::BudgetLine),
        Kind::Payment | Kind::Evaluation => Some(Kind::Contract),
        Kind::BudgetLine => None,
    };
    if let Some(parent_kind) = parent_kind {
        if let Some(old) = &old
            && let Some(parent) = &old.parent
        {
            adjust_parent(
                store,
                &EntityKey::new(county, parent_kind, parent),
                key.kind,
                old,
                false,
            )?;
        }
        if let Some(parent) = &facts.parent {
            adjust_parent(
                store,
                &EntityKey::new(county, parent_kind, parent),
                key.kind,
                &facts,
                true,
            )?;
        }
    }
    entity.revs.push(RevSeen {
        rev: p.record.header.rev,
        digest: p.digest,
        accepted: true,
    });
    entity.current = Some(facts);
    store.put_entity(key, &entity)?;
    Ok(())
}

fn adjust_parent<S: LedgerStore>(
    store: &mut S,
    parent_key: &EntityKey,
    child_kind: Kind,
    child: &Facts,
    add: bool,
) -> Result<(), EngineError<S::Error>> {
    let Some(mut parent) = store.entity(parent_key)? else {
        return Err(EngineError::Invariant(format!(
            "{parent_key} is missing under an accepted {child_kind}"
        )));
    };
    if child_kind == Kind::Evaluation {
        parent.evaluated = add && !child.cancelled;
    } else {
        let amount = child.live_amount();
        let committed = if add {
            parent.committed.checked_add(amount)
        } else {
            parent.committed.checked_sub(amount)
        };
        parent.committed = committed.ok_or_else(|| {
            EngineError::Invariant(format!("{parent_key}: committed amount out of range"))
        })?;
    }
    store.put_entity(parent_key, &parent)?;
    Ok(())
}
