//! Prometheus metrics in the text exposition format. Counters live in atomics and count since
//! the process started; gauges are read from the store when scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tongbu_shared::protocol::AgentState;

/// The hub's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    envelopes_received: AtomicU64,
    envelopes_stored: AtomicU64,
    batches: AtomicU64,
    batches_refused: AtomicU64,
    equivocations: AtomicU64,
}

impl Metrics {
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

    /// The exposition text, with `agent_counts` (from the store) as the `tongbu_agents` gauge.
    pub fn render(&self, agent_counts: &[(AgentState, u64)]) -> String {
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
            let n = agent_counts
                .iter()
                .filter(|(s, _)| *s == state)
                .map(|(_, n)| n)
                .sum::<u64>();
            let _ = writeln!(out, "tongbu_agents{{state=\"{state}\"}} {n}");
        }
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
        let text = m.render(&[(AgentState::Active, 4)]);
        assert!(text.contains("tongbu_envelopes_received_total 3\n"));
        assert!(text.contains("tongbu_envelopes_stored_total 2\n"));
        assert!(text.contains("tongbu_batches_total 1\n"));
        assert!(text.contains("tongbu_agents{state=\"active\"} 4\n"));
        assert!(text.contains("tongbu_agents{state=\"revoked\"} 0\n"));
    }
}
