//! Prometheus metrics in the text exposition format. Counters live in atomics and count since
//! the process started (and only what committed); gauges are read from the store when scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tongbu_shared::protocol::{AgentState, Outcome};
use tongbu_shared::rules::{Rule, Severity};

use crate::ingest::MALFORMED_RECORD;
use crate::ledger::Judged;

const OUTCOMES: [Outcome; 3] = [Outcome::Accepted, Outcome::Held, Outcome::Rejected];

/// The codes counted as violations: every rejecting or warning rule, and malformed bodies.
fn violation_codes() -> Vec<&'static str> {
    Rule::ALL
        .iter()
        .filter(|r| r.severity() != Severity::Hold)
        .map(|r| r.code())
        .chain([MALFORMED_RECORD])
        .collect()
}

/// The hub's counters.
#[derive(Debug)]
pub struct Metrics {
    envelopes_received: AtomicU64,
    envelopes_stored: AtomicU64,
    batches: AtomicU64,
    batches_refused: AtomicU64,
    equivocations: AtomicU64,
    log_rollbacks_seen: AtomicU64,
    /// Decisions by outcome, in the order of [`OUTCOMES`].
    decisions: [AtomicU64; 3],
    /// Violations by code, in the order of `codes`.
    codes: Vec<&'static str>,
    violations: Vec<AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let codes = violation_codes();
        Metrics {
            envelopes_received: AtomicU64::new(0),
            envelopes_stored: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batches_refused: AtomicU64::new(0),
            equivocations: AtomicU64::new(0),
            log_rollbacks_seen: AtomicU64::new(0),
            decisions: Default::default(),
            violations: codes.iter().map(|_| AtomicU64::new(0)).collect(),
            codes,
        }
    }
}

/// What the store says when metrics are scraped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Agents by state (states with none may be left out).
    pub agents: Vec<(AgentState, u64)>,
    pub policy_version: u64,
    /// Records held now.
    pub held: u64,
}

impl Metrics {
    /// Decisions that committed: each counts under its outcome (a held record counts again
    /// when decided), each violation code under its rule.
    pub fn judged(&self, judged: &[Judged]) {
        for j in judged {
            if let Some(i) = OUTCOMES.iter().position(|o| *o == j.verdict.outcome) {
                self.decisions[i].fetch_add(1, Ordering::Relaxed);
            }
            for code in j.violation_codes() {
                if let Some(i) = self.codes.iter().position(|c| *c == code) {
                    self.violations[i].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// An authenticated batch request carrying `envelopes` envelopes.
    pub fn batch_received(&self, envelopes: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.envelopes_received
            .fetch_add(envelopes as u64, Ordering::Relaxed);
    }

    pub fn batch_refused(&self) {
        self.batches_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn envelopes_stored(&self, n: usize) {
        self.envelopes_stored.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn equivocation(&self) {
        self.equivocations.fetch_add(1, Ordering::Relaxed);
    }

    /// An agent showed a checkpoint larger than the hub's whole log.
    pub fn log_rollback_seen(&self) {
        self.log_rollbacks_seen.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text, with the gauges read from the store.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let counters = [
            (
                "tongbu_envelopes_received_total",
                "Envelopes received in authenticated batches, resends included.",
                &self.envelopes_received,
            ),
            (
                "tongbu_envelopes_stored_total",
                "New envelopes durably stored.",
                &self.envelopes_stored,
            ),
            (
                "tongbu_batches_total",
                "Authenticated batch requests.",
                &self.batches,
            ),
            (
                "tongbu_batches_refused_total",
                "Authenticated batch requests refused.",
                &self.batches_refused,
            ),
            (
                "tongbu_equivocations_total",
                "Equivocations detected (agents quarantined).",
                &self.equivocations,
            ),
            (
                "tongbu_log_rollbacks_seen_total",
                "Batches from agents holding a checkpoint larger than the hub's log (restored from an older copy).",
                &self.log_rollbacks_seen,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let _ = writeln!(out, "# HELP tongbu_agents Enrolled agents by state.");
        let _ = writeln!(out, "# TYPE tongbu_agents gauge");
        for state in [
            AgentState::Active,
            AgentState::Quarantined,
            AgentState::Revoked,
        ] {
            let n = gauges
                .agents
                .iter()
                .filter(|(s, _)| *s == state)
                .map(|(_, n)| n)
                .sum::<u64>();
            let _ = writeln!(out, "tongbu_agents{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP tongbu_records_total Record decisions by outcome (a held record counts \
             again when it is decided)."
        );
        let _ = writeln!(out, "# TYPE tongbu_records_total counter");
        for (outcome, n) in OUTCOMES.iter().zip(&self.decisions) {
            let _ = writeln!(
                out,
                "tongbu_records_total{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tongbu_violations_total Rule violations and warnings by rule code."
        );
        let _ = writeln!(out, "# TYPE tongbu_violations_total counter");
        for (code, n) in self.codes.iter().zip(&self.violations) {
            let _ = writeln!(
                out,
                "tongbu_violations_total{{rule=\"{code}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP tongbu_records_held Records held now.");
        let _ = writeln!(out, "# TYPE tongbu_records_held gauge");
        let _ = writeln!(out, "tongbu_records_held {}", gauges.held);
        let _ = writeln!(
            out,
            "# HELP tongbu_policy_version The current policy version."
        );
        let _ = writeln!(out, "# TYPE tongbu_policy_version gauge");
        let _ = writeln!(out, "tongbu_policy_version {}", gauges.policy_version);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_every_state() {
        let m = Metrics::default();
        m.batch_received(3);
        m.envelopes_stored(2);
        m.judged(&[Judged {
            agent: tongbu_shared::AgentId::parse("430112-0000000a").unwrap(),
            seq: 1,
            verdict: crate::store::Verdict {
                outcome: Outcome::Rejected,
                codes: vec!["BUDGET_EXCEEDED".into(), "DATE_ORDER".into()],
                detail: None,
                policy_version: Some(1),
            },
            changed: false,
        }]);
        let text = m.render(&Gauges {
            agents: vec![(AgentState::Active, 4)],
            policy_version: 3,
            held: 2,
        });
        assert!(text.contains("tongbu_envelopes_received_total 3\n"));
        assert!(text.contains("tongbu_records_total{outcome=\"rejected\"} 1\n"));
        assert!(text.contains("tongbu_records_total{outcome=\"accepted\"} 0\n"));
        assert!(text.contains("tongbu_violations_total{rule=\"BUDGET_EXCEEDED\"} 1\n"));
        assert!(text.contains("tongbu_violations_total{rule=\"MALFORMED_RECORD\"} 0\n"));
        assert!(!text.contains("AWAITING_CONTRACT"));
        assert!(text.contains("tongbu_policy_version 3\n"));
        assert!(text.contains("tongbu_records_held 2\n"));
        assert!(text.contains("tongbu_envelopes_stored_total 2\n"));
        assert!(text.contains("tongbu_batches_total 1\n"));
        assert!(text.contains("tongbu_agents{state=\"active\"} 4\n"));
        assert!(text.contains("tongbu_agents{state=\"revoked\"} 0\n"));
    }
}
