//! The agent's local view of the in-step rules: the shared engine over an in-memory ledger
//! ([`MemLedger`]) holding what this agent knows, its cached policy and the records it has
//! stored itself, so it can tell the county at once which rules a record breaks.
//!
//! Invariants: the view is built by replaying the stored records in seq order through
//! `rules::ingest`, exactly as the hub would apply them if this agent were the county's only
//! one, and is then kept in step with the outbox (`through_seq`); records are judged in file
//! order, each against the ledger as the previous ones left it. A finding for the county is a
//! reject or warn finding, never a hold: the predecessor may well be with another agent of the
//! county. With no policy cached yet, the catalogue and negative list are not checked. The hub's
//! outcome is authoritative; this view only informs.

use std::sync::Arc;

use tongbu_shared::crypto::{Digest, PublicKey};
use tongbu_shared::ids::AgentId;
use tongbu_shared::input::InputRecord;
use tongbu_shared::policy::Policy;
use tongbu_shared::record::Record;
use tongbu_shared::rules::mem::MemLedger;
use tongbu_shared::rules::{Finding, Pending, Severity, ingest};
use tracing::warn;

use crate::outbox::{Outbox, OutboxError};
use crate::policy::{self, CacheError};

/// Stored records replayed at a time (bounds memory while building).
const REPLAY_CHUNK: usize = 1000;

/// The policy version the local view uses when none is cached.
const NO_POLICY: u64 = 0;

/// Whether a finding is one the county should hear about: rejections and warnings, not holds.
pub fn reportable(f: &Finding) -> bool {
    f.rule.severity() != Severity::Hold
}

/// Which policy the view judges by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyInUse {
    /// The cached bundle of this version (verified when loaded).
    Cached(u64),
    /// None is cached yet: the catalogue and negative list are not checked.
    NoneCached,
    /// The newest cached bundle does not verify: not used, as if none were cached.
    Damaged(String),
}

impl PolicyInUse {
    pub fn version(&self) -> Option<u64> {
        match self {
            PolicyInUse::Cached(v) => Some(*v),
            _ => None,
        }
    }

    /// A note for people when the catalogue and negative list could not be checked.
    pub fn note(&self) -> Option<String> {
        match self {
            PolicyInUse::Cached(_) => None,
            PolicyInUse::NoneCached => Some(
                "no policy cached yet: the catalogue and negative list were not checked".into(),
            ),
            PolicyInUse::Damaged(why) => Some(format!(
                "{why}: the catalogue and negative list were not checked"
            )),
        }
    }
}

/// What this agent knows, as a ledger.
#[derive(Debug, Clone)]
pub struct LocalView {
    /// This agent (`None` before enrollment: each record then counts as its own county's).
    agent: Option<AgentId>,
    ledger: MemLedger,
    policy: PolicyInUse,
    /// The newest cached policy row when the view was built (verified or not), to notice a new
    /// one.
    policy_row: Option<u64>,
    /// The last stored seq replayed into the ledger.
    through_seq: u64,
}

impl LocalView {
    /// A view of nothing: no records, no policy (for an agent not enrolled yet).
    pub fn empty(agent: Option<AgentId>) -> LocalView {
        LocalView::with_policy(agent, None, PolicyInUse::NoneCached, None)
    }

    fn with_policy(
        agent: Option<AgentId>,
        policy: Option<Policy>,
        in_use: PolicyInUse,
        policy_row: Option<u64>,
    ) -> LocalView {
        let policy = policy.unwrap_or_else(|| Policy {
            version: NO_POLICY,
            catalogue: Default::default(),
            negative_list: Default::default(),
            grace_ms: i64::MAX,
        });
        LocalView {
            agent,
            ledger: MemLedger::new(policy),
            policy: in_use,
            policy_row,
            through_seq: 0,
        }
    }

    /// Builds the view of `agent` from its outbox: the cached policy (verified with the pinned
    /// `hub_key`) and every stored record, replayed in seq order.
    pub fn load(
        outbox: &Outbox,
        agent: &AgentId,
        hub_key: &PublicKey,
    ) -> Result<LocalView, OutboxError> {
        let policy_row = outbox.latest_policy_version()?;
        let (policy, in_use) = match policy::load(outbox, hub_key) {
            Ok(Some(cached)) => {
                let version = cached.version();
                (Some(cached.bundle.policy()), PolicyInUse::Cached(version))
            }
            Ok(None) => (None, PolicyInUse::NoneCached),
            Err(CacheError::Damaged { version, problem }) => {
                let why = format!("the cached policy version {version} {problem}");
                warn!(problem = %why, "the cached policy is not used");
                (None, PolicyInUse::Damaged(why))
            }
            Err(CacheError::Outbox(e)) => return Err(e),
        };
        let mut view = LocalView::with_policy(Some(agent.clone()), policy, in_use, policy_row);
        view.catch_up(outbox)?;
        Ok(view)
    }

    pub fn policy(&self) -> &PolicyInUse {
        &self.policy
    }

    /// The last stored seq the view holds.
    pub fn through_seq(&self) -> u64 {
        self.through_seq
    }

    /// Whether the newest cached policy is still the one the view was built with (when not,
    /// the view must be built again: every record is judged by the policy in use).
    pub fn follows_policy_of(&self, outbox: &Outbox) -> Result<bool, OutboxError> {
        Ok(outbox.latest_policy_version()? == self.policy_row)
    }

    /// Replays the records stored after `through_seq` (another writer's, or after a restart).
    pub fn catch_up(&mut self, outbox: &Outbox) -> Result<(), OutboxError> {
        loop {
            let rows = outbox.bodies_after(self.through_seq, REPLAY_CHUNK)?;
            let Some(&(last, _)) = rows.last() else {
                return Ok(());
            };
            for (seq, body) in rows {
                match Record::parse(&body) {
                    Ok(record) => {
                        self.apply(seq, record, &body);
                    }
                    // Every stored record was parsed at intake; one that no longer parses was
                    // altered on disk (`verify` reports it) and says nothing about the rules.
                    Err(e) => {
                        warn!(seq, error = %e, "a stored record does not parse; left out of the local view")
                    }
                }
            }
            self.through_seq = last;
        }
    }

    /// Judges `records` as the next ones stored (seqs from `through_seq + 1`), in order, each
    /// against the ledger as the previous ones left it; returns each record's reportable
    /// findings. A record held waiting for its predecessor that a later record of the same
    /// submission releases gets the findings of that later decision. The view then holds the
    /// records as if stored: call [`LocalView::stored`] once they are, or drop the view.
    pub fn judge(&mut self, records: &[InputRecord]) -> Vec<Vec<Finding>> {
        let first = self.through_seq + 1;
        let mut findings = vec![Vec::new(); records.len()];
        for (seq, r) in (first..).zip(records) {
            for (s, f) in self.apply(seq, r.record.clone(), &r.bytes) {
                if let Some(slot) = s
                    .checked_sub(first)
                    .and_then(|i| usize::try_from(i).ok())
                    .and_then(|i| findings.get_mut(i))
                {
                    *slot = f;
                }
            }
        }
        findings
    }

    /// Marks the records last judged as stored through `seq`.
    pub fn stored(&mut self, seq: u64) {
        self.through_seq = seq;
    }

    /// Applies one record at `seq`; returns the seqs (of this agent) decided and their
    /// reportable findings.
    fn apply(&mut self, seq: u64, record: Record, body: &[u8]) -> Vec<(u64, Vec<Finding>)> {
        let agent = match &self.agent {
            Some(a) => a.clone(),
            None => AgentId::new(&record.header.county, [0; 4]),
        };
        let policy_version = self.open_catalogue(&record);
        let pending = Pending {
            agent: agent.clone(),
            seq,
            record,
            digest: Digest::of(&[body]),
            order: seq,
            received_ms: 0,
            policy_version,
            held_at: None,
        };
        let decided = match ingest(&mut self.ledger, pending) {
            Ok(decisions) => decisions
                .into_iter()
                .filter(|d| d.agent == agent)
                .map(|d| {
                    let reported = d.findings.into_iter().filter(reportable).collect();
                    (d.seq, reported)
                })
                .collect(),
            Err(e) => {
                // The model refused its own arithmetic: a bug, not the county's problem. The
                // record goes unjudged locally; the hub judges it anyway.
                warn!(seq, error = %e, "the local rules could not judge a record");
                Vec::new()
            }
        };
        // Decisions are returned above; the ledger need not keep them.
        self.ledger.decisions.clear();
        decided
    }

    /// With no policy cached, lets the record's catalogue code through (so neither
    /// `NOT_IN_CATALOGUE` nor `NEGATIVE_LIST` can apply); returns the policy version to judge by.
    fn open_catalogue(&mut self, record: &Record) -> u64 {
        if let PolicyInUse::Cached(v) = self.policy {
            return v;
        }
        if let (Some(code), Some(policy)) = (
            record.catalogue_code(),
            self.ledger.policies.get_mut(&NO_POLICY),
        ) && !policy.catalogue.contains_key(code)
        {
            Arc::make_mut(policy)
                .catalogue
                .insert(code.clone(), String::from("(no policy cached)"));
        }
        NO_POLICY
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tongbu_shared::input::parse_submission;
    use tongbu_shared::policy::{PolicyBundle, default_policy};

    fn agent() -> AgentId {
        AgentId::parse("430112-3f9a0c1d").unwrap()
    }

    fn line(id: &str, amount: i64, code: &str) -> String {
        format!(
            r#"{{"kind":"budget_line","id":"{id}","rev":1,"county":"430112","department":"101001","fiscal_year":2024,"catalogue_code":"{code}","amount_fen":{amount},"stage":"approved","approved_on":"2024-01-15"}}"#
        )
    }

    fn contract(id: &str, line: &str, amount: i64) -> String {
        format!(
            r#"{{"kind":"contract","id":"{id}","rev":1,"county":"430112","budget_line_id":"{line}","supplier_uscc":"91350100M000100Y43","supplier_name":"颐养居家养老服务中心","method":"public_tender","catalogue_code":"A0501","amount_fen":{amount},"signed_on":"2024-03-01"}}"#
        )
    }

    fn payment(id: &str, contract: &str, amount: i64) -> String {
        format!(
            r#"{{"kind":"payment","id":"{id}","rev":1,"county":"430112","contract_id":"{contract}","amount_fen":{amount},"paid_on":"2024-04-01","voucher_no":"GK-{id}"}}"#
        )
    }

    fn codes(findings: &[Vec<Finding>]) -> Vec<Vec<&'static str>> {
        findings
            .iter()
            .map(|fs| fs.iter().map(|f| f.rule.code()).collect())
            .collect()
    }

    fn judge(view: &mut LocalView, lines: &[String]) -> Vec<Vec<&'static str>> {
        let records = parse_submission(lines.join("\n").as_bytes()).unwrap();
        codes(&view.judge(&records))
    }

    fn with_default_policy() -> LocalView {
        let policy = PolicyBundle::new(3, 0, default_policy()).policy();
        LocalView::with_policy(Some(agent()), Some(policy), PolicyInUse::Cached(3), Some(3))
    }

    #[test]
    fn records_are_judged_in_order_against_the_previous_ones() {
        let mut view = with_default_policy();
        let found = judge(
            &mut view,
            &[
                line("BL-1", 100, "A0501"),
                contract("C-1", "BL-1", 200),
                contract("C-2", "BL-1", 60),
                payment("P-1", "C-2", 60),
                payment("P-9", "C-404", 5),
            ],
        );
        assert_eq!(
            found,
            [
                vec![],
                vec!["BUDGET_EXCEEDED"],
                vec![],
                vec!["PAID_WITHOUT_EVALUATION"],
                // Held for a contract another agent may hold: not a finding.
                vec![],
            ]
        );
        // A contract on the rejected contract's line is still judged; a payment on the
        // rejected contract inherits its rejection.
        view.stored(5);
        assert_eq!(
            judge(&mut view, &[payment("P-2", "C-1", 10)]),
            [vec!["PREDECESSOR_REJECTED"]]
        );
    }

    #[test]
    fn the_catalogue_is_checked_only_with_a_policy() {
        let records = [line("BL-1", 100, "N0201"), contract("C-1", "BL-1", 50)];
        let mut view = with_default_policy();
        assert_eq!(
            judge(&mut view, &records),
            [
                vec!["NOT_IN_CATALOGUE", "NEGATIVE_LIST"],
                vec!["PREDECESSOR_REJECTED"]
            ]
        );
        let mut view = LocalView::empty(Some(agent()));
        assert!(
            view.policy()
                .note()
                .unwrap()
                .contains("no policy cached yet")
        );
        assert_eq!(
            judge(&mut view, &records),
            [vec![], vec![]] as [Vec<&str>; 2]
        );
    }

    #[test]
    fn a_held_record_released_later_in_the_same_file_gets_its_findings() {
        let mut view = with_default_policy();
        let found = judge(
            &mut view,
            &[
                payment("P-1", "C-1", 900),
                line("BL-1", 1000, "A0501"),
                contract("C-1", "BL-1", 500),
            ],
        );
        assert_eq!(found, [vec!["CONTRACT_EXCEEDED"], vec![], vec![]]);
    }
}
