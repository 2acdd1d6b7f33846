//! The in-step rules (DESIGN.md, "In step: the rules"): budget, purchasing and payment must stay
//! in step. Pure: no I/O, no clock. The hub and the agent both judge records with this module.
//!
//! - [`checks`]: one named function per rule code, each deciding one thing;
//! - [`evaluate`](engine::evaluate): every finding for one record against what the ledger knows;
//! - [`engine`]: applying records to a ledger ([`LedgerStore`]), holding records whose
//!   predecessor has not arrived, re-checking them in arrival order when it does, and rejecting
//!   them when the grace period runs out;
//! - [`mem`]: an in-memory ledger (the model for property tests, and the agent's local view).
//!
//! Invariants: a record gets every code that applies; any rejecting code rejects it; a record
//! is held only when nothing rejects it and its predecessor is missing; only accepted records
//! count in totals, so per entity `committed ≤ amount` holds for every accepted budget line and
//! contract, and totals never go negative.

pub mod checks;
pub mod engine;
pub mod mem;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::crypto::Digest;
use crate::date::Date;
use crate::ids::{AgentId, Code, CountyCode};
use crate::money::Fen;
use crate::protocol::Outcome;
use crate::record::{Kind, Record};

pub use engine::{Decision, EngineError, LedgerStore, evaluate, expire, ingest};

/// What a rule code does to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The record is rejected: kept in the log, excluded from totals, shown as a violation.
    Reject,
    /// The record waits for its predecessor.
    Hold,
    /// The record is accepted and flagged.
    Warn,
}

macro_rules! rules {
    ($($variant:ident = $code:literal, $severity:ident;)+) => {
        /// A rule code (DESIGN.md, "Interfaces").
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Rule { $($variant),+ }

        impl Rule {
            pub const ALL: &'static [Rule] = &[$(Rule::$variant),+];

            pub fn code(self) -> &'static str {
                match self { $(Rule::$variant => $code),+ }
            }

            pub fn severity(self) -> Severity {
                match self { $(Rule::$variant => Severity::$severity),+ }
            }

            pub fn parse(code: &str) -> Option<Rule> {
                match code { $($code => Some(Rule::$variant),)+ _ => None }
            }
        }
    };
}

rules! {
    BudgetNotApproved = "BUDGET_NOT_APPROVED", Reject;
    BudgetExceeded = "BUDGET_EXCEEDED", Reject;
    ContractExceeded = "CONTRACT_EXCEEDED", Reject;
    DateOrder = "DATE_ORDER", Reject;
    YearMismatch = "YEAR_MISMATCH", Reject;
    NotInCatalogue = "NOT_IN_CATALOGUE", Reject;
    NegativeList = "NEGATIVE_LIST", Reject;
    InvalidSupplierCode = "INVALID_SUPPLIER_CODE", Reject;
    CountyMismatch = "COUNTY_MISMATCH", Reject;
    StaleRevision = "STALE_REVISION", Reject;
    CancelledPredecessor = "CANCELLED_PREDECESSOR", Reject;
    PredecessorRejected = "PREDECESSOR_REJECTED", Reject;
    AwaitingBudgetLine = "AWAITING_BUDGET_LINE", Hold;
    AwaitingContract = "AWAITING_CONTRACT", Hold;
    UnknownBudgetLine = "UNKNOWN_BUDGET_LINE", Reject;
    UnknownContract = "UNKNOWN_CONTRACT", Reject;
    PaidWithoutEvaluation = "PAID_WITHOUT_EVALUATION", Warn;
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One rule that applies to a record, with a sentence saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: Rule,
    pub detail: String,
}

impl Finding {
    pub fn new(rule: Rule, detail: impl Into<String>) -> Finding {
        Finding {
            rule,
            detail: detail.into(),
        }
    }
}

/// An entity is keyed by county, kind and id, whichever agent of the county sent it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey {
    pub county: CountyCode,
    pub kind: Kind,
    pub id: Code,
}

impl EntityKey {
    pub fn new(county: &CountyCode, kind: Kind, id: &Code) -> EntityKey {
        EntityKey {
            county: county.clone(),
            kind,
            id: id.clone(),
        }
    }

    /// The entity a record belongs to.
    pub fn of(record: &Record) -> EntityKey {
        EntityKey::new(&record.header.county, record.header.kind, &record.header.id)
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.county, self.kind, self.id)
    }
}

/// The accepted current revision of an entity: what counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub rev: u32,
    pub cancelled: bool,
    /// Budget line, contract and payment amounts (none for evaluations).
    pub amount: Option<Fen>,
    /// Budget lines: whether the stage is `approved`.
    pub approved: bool,
    /// The date that orders it: approval, signing, payment or evaluation.
    pub date: Option<Date>,
    /// The fiscal year it counts under (a contract's and payment's is its budget line's).
    pub fiscal_year: i32,
    /// Its catalogue code (a payment's and evaluation's is its contract's).
    pub catalogue: Option<Code>,
    /// Budget line id of a contract; contract id of a payment or evaluation.
    pub parent: Option<Code>,
}

impl Facts {
    /// The amount that counts: zero once cancelled.
    pub fn live_amount(&self) -> Fen {
        if self.cancelled {
            Fen::ZERO
        } else {
            self.amount.unwrap_or(Fen::ZERO)
        }
    }

    pub fn slot(&self) -> Slot {
        Slot::new(self.fiscal_year, self.catalogue.as_ref())
    }
}

/// One revision of an entity the ledger has decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevSeen {
    pub rev: u32,
    /// SHA-256 of the record's exact bytes: an identical resend is not a new record.
    pub digest: Digest,
    pub accepted: bool,
}

/// What the ledger knows about one entity.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Entity {
    /// Every decided revision, in the order decided.
    pub revs: Vec<RevSeen>,
    /// The latest accepted revision, if any.
    pub current: Option<Facts>,
    /// Accepted contracts on a budget line, or accepted payments on a contract.
    pub committed: Fen,
    /// A contract with an accepted performance evaluation.
    pub evaluated: bool,
}

impl Entity {
    pub fn latest_rev(&self) -> u32 {
        self.revs.iter().map(|r| r.rev).max().unwrap_or(0)
    }
}

/// Where a record counts in the ledger: fiscal year and catalogue code ("" when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Slot {
    pub year: i32,
    pub catalogue: String,
}

impl Slot {
    pub fn new(year: i32, catalogue: Option<&Code>) -> Slot {
        Slot {
            year,
            catalogue: catalogue.map(|c| c.to_string()).unwrap_or_default(),
        }
    }
}

/// Changes to one ledger row (county × fiscal year × catalogue code). Amounts in fen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TotalsDelta {
    pub budget_approved: i64,
    pub contracted: i64,
    pub paid: i64,
    pub accepted: i64,
    pub held: i64,
    pub rejected: i64,
}

/// One ledger row's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Totals {
    pub budget_approved: i64,
    pub contracted: i64,
    pub paid: i64,
    pub accepted: i64,
    pub held: i64,
    pub rejected: i64,
}

impl Totals {
    /// Applies a delta with checked arithmetic; `None` if any figure would overflow or go
    /// below zero (which would mean the ledger is inconsistent).
    pub fn apply(self, d: &TotalsDelta) -> Option<Totals> {
        let f = |a: i64, b: i64| a.checked_add(b).filter(|v| *v >= 0);
        Some(Totals {
            budget_approved: f(self.budget_approved, d.budget_approved)?,
            contracted: f(self.contracted, d.contracted)?,
            paid: f(self.paid, d.paid)?,
            accepted: f(self.accepted, d.accepted)?,
            held: f(self.held, d.held)?,
            rejected: f(self.rejected, d.rejected)?,
        })
    }

    /// Adds another row (for a county × year sum over catalogue codes).
    pub fn plus(self, o: &Totals) -> Option<Totals> {
        self.apply(&TotalsDelta {
            budget_approved: o.budget_approved,
            contracted: o.contracted,
            paid: o.paid,
            accepted: o.accepted,
            held: o.held,
            rejected: o.rejected,
        })
    }
}

/// A record on its way into the ledger (fresh, or released from the held set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub agent: AgentId,
    pub seq: u64,
    pub record: Record,
    /// SHA-256 of the record's exact bytes.
    pub digest: Digest,
    /// Arrival order across all agents (held records are re-checked in this order).
    pub order: u64,
    pub received_ms: i64,
    /// The policy version current when it arrived: it is judged by that version.
    pub policy_version: u64,
    /// Where it is counted as held, while it is.
    pub held_at: Option<Slot>,
}

impl Pending {
    /// The county of the agent that sent it.
    pub fn agent_county(&self) -> CountyCode {
        self.agent.county()
    }
}

/// The outcome of a verdict, as the wire reports it.
pub fn outcome_of(findings: &[Finding], waits: bool) -> Outcome {
    if findings
        .iter()
        .any(|f| f.rule.severity() == Severity::Reject)
    {
        Outcome::Rejected
    } else if waits {
        Outcome::Held
    } else {
        Outcome::Accepted
    }
}

#[cfg(test)]
mod tests;
